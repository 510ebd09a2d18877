"""The FLUX autoencoder (a KL autoencoder, diffusers' ``AutoencoderKL``) in Flax NNX.

FLUX generates a 16-channel latent ``z`` of shape ``(16, H/8, W/8)``; this module turns it into
an RGB image in ``[-1, 1]`` (:meth:`AutoencoderKL.decode`) and back
(:meth:`AutoencoderKL.encode`). The math is in ``docs/flux.md`` (section "The autoencoder"):

- **Encoder**: ``conv_in``; one level per entry of ``block_out_channels``, each
  ``layers_per_block`` residual blocks and (except the last) a stride-2 convolution after
  zero-padding the bottom and right edges by one pixel; a middle of residual block, single-head
  self-attention over all pixels, residual block; GroupNorm, SiLU, ``conv_out`` to the mean and
  log-variance (``2 · latent_channels``).
- **Decoder**: ``conv_in``; the same middle; the levels in reverse order, each
  ``layers_per_block + 1`` residual blocks and (except the last) a nearest-neighbour ×2
  upsampling followed by a 3×3 convolution; GroupNorm, SiLU, ``conv_out``.
- A residual block is ``x + conv2(SiLU(GN(conv1(SiLU(GN(x))))))``, with a 1×1 convolution on
  ``x`` when the width changes. Every GroupNorm has ``norm_num_groups`` groups and ε = 1e-6.

Modules are named after BFL's checkpoint keys (``encoder.down.0.block.1.conv2``,
``decoder.up.3.upsample.conv``, ``decoder.mid.attn_1.q``); BFL numbers the decoder's levels
by resolution, so ``decoder.up.0`` is the *last* level applied (full resolution). The loaders
in :mod:`psijax.models.flux.autoencoder_weights` read BFL's single file and diffusers'
``vae/`` folder into these modules.

Conventions. Images and latents are channel-first, ``(..., C, H, W)``, like the latents of
:mod:`psijax.models.flux.packing` and like the reference; the convolutions run channel-last
inside. The FLUX transformer sees the *normalised* latent ``(z − shift_factor) · scaling_factor``
(:meth:`AutoencoderKL.normalize`); :meth:`AutoencoderKL.decode_tokens` takes the sampler's packed
normalised tokens straight to images.

Dtypes. Every method takes a compute ``dtype`` (float32 or bfloat16); parameters are cast at
use, so one float32 (or bfloat16) parameter set serves both. GroupNorm statistics, the attention
scores and softmax are float32 whatever the compute dtype, as in the reference; outputs are
float32. ``remat=True`` rematerialises each residual block, attention and resampling layer in
the backward pass, so a gradient through the decoder keeps one layer's activations at a time.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from psijax._checks import check_int
from psijax.models import _params
from psijax.models.flux import packing
from psijax.models.flux.layers import Linear, attention, recompute_attention

__all__ = [
    "AutoencoderConfig",
    "AUTOENCODER_PRESETS",
    "autoencoder_preset",
    "AutoencoderKL",
    "Conv",
    "GroupNorm",
    "ResnetBlock",
    "AttnBlock",
    "Encoder",
    "Decoder",
]

_EPS = 1e-6
_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """The hyper-parameters of a KL autoencoder (hashable; the fields are diffusers' names).

    Attributes
    ----------
    in_channels, out_channels
        Image channels (3).
    latent_channels
        Latent channels (16 for FLUX, 4 for Stable Diffusion).
    block_out_channels
        Width of each level, from full resolution down; there are
        ``len(block_out_channels) − 1`` factors of 2 between image and latent.
    layers_per_block
        Residual blocks per encoder level (the decoder has one more per level).
    norm_num_groups
        Groups of every GroupNorm (each width must be divisible by it).
    mid_block_add_attention
        Whether the middle has its self-attention layer.
    use_quant_conv, use_post_quant_conv
        The 1×1 convolutions after the encoder and before the decoder (Stable
        Diffusion's autoencoders have them; FLUX's does not).
    scaling_factor, shift_factor
        The normalisation of the latent the generative model sees:
        ``(z − shift_factor) · scaling_factor``.
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    use_quant_conv: bool = False
    use_post_quant_conv: bool = False
    scaling_factor: float = packing.VAE_SCALE
    shift_factor: float = packing.VAE_SHIFT

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "latent_channels", "norm_num_groups"):
            check_int(getattr(self, name), name)
        check_int(self.layers_per_block, "layers_per_block")
        widths = tuple(self.block_out_channels)
        if not widths:
            raise ValueError("`block_out_channels` must hold at least one width.")
        for w in widths:
            check_int(w, "block_out_channels")
            if w % self.norm_num_groups:
                raise ValueError(
                    f"Every `block_out_channels` entry must be divisible by `norm_num_groups` "
                    f"({self.norm_num_groups}), got {widths}."
                )
        object.__setattr__(self, "block_out_channels", widths)
        for name in ("scaling_factor", "shift_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"`{name}` must be a float, got {value!r}.")
            if not math.isfinite(value) or (name == "scaling_factor" and value <= 0):
                raise ValueError(f"`{name}` must be finite (and the scale > 0), got {value}.")
            object.__setattr__(self, name, float(value))

    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent pixel along each side (8 for FLUX)."""
        return 2 ** (len(self.block_out_channels) - 1)


AUTOENCODER_PRESETS = {
    # FLUX.1's autoencoder (ae.safetensors; diffusers' vae/config.json of FLUX.1-dev/schnell).
    "flux": AutoencoderConfig(),
    # Stable Diffusion 1.x / 2.x: 4 latent channels, the quant convolutions, no shift.
    "sd": AutoencoderConfig(
        latent_channels=4,
        use_quant_conv=True,
        use_post_quant_conv=True,
        scaling_factor=0.18215,
        shift_factor=0.0,
    ),
    # Small enough for tests and CPU runs: 2 levels (factor 2), widths 32 and 64.
    "tiny": AutoencoderConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8),
}


def autoencoder_preset(name: str) -> AutoencoderConfig:
    """The :class:`AutoencoderConfig` called ``name`` (one of :data:`AUTOENCODER_PRESETS`)."""
    if name not in AUTOENCODER_PRESETS:
        raise ValueError(f"`name` must be one of {sorted(AUTOENCODER_PRESETS)}, got {name!r}.")
    return AUTOENCODER_PRESETS[name]


# ----------------------------------------------------------------------------------------------
# Layers (channel-last inside: x is (B, H, W, C))
# ----------------------------------------------------------------------------------------------
class Conv(nnx.Module):
    """A 2-D convolution, ``kernel`` ``(k, k, in, out)`` (torch's weight ``(out, in, k, k)``).

    ``padding`` is ``((top, bottom), (left, right))``; the default keeps the size for stride 1.
    """

    def __init__(self, cin: int, cout: int, size: int, *, rngs: nnx.Rngs, stride=1, padding=None):
        scale = 1 / math.sqrt(cin * size * size)
        self.kernel = nnx.Param(_params.normal(rngs, (size, size, cin, cout), scale, jnp.float32))
        self.bias = nnx.Param(_params.constant(0.0, (cout,), jnp.float32))
        self.stride = stride
        half = size // 2
        self.padding = ((half, half), (half, half)) if padding is None else padding

    def __call__(self, x: Array) -> Array:
        y = jax.lax.conv_general_dilated(
            x,
            self.kernel[...].astype(x.dtype),
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.bias[...].astype(x.dtype)


class GroupNorm(nnx.Module):
    """GroupNorm with affine ``scale`` and ``bias``, ε = 1e-6, statistics in float32."""

    def __init__(self, groups: int, channels: int):
        self.groups = groups
        self.scale = nnx.Param(_params.constant(1.0, (channels,), jnp.float32))
        self.bias = nnx.Param(_params.constant(0.0, (channels,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        *lead, c = x.shape
        xf = x.astype(jnp.float32).reshape(*lead, self.groups, c // self.groups)
        axes = (-4, -3, -1)  # H, W and the channels of a group
        mean = jnp.mean(xf, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=True)
        y = ((xf - mean) * jax.lax.rsqrt(var + _EPS)).reshape(x.shape)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...]).astype(x.dtype)


class ResnetBlock(nnx.Module):
    """``x + conv2(SiLU(norm2(conv1(SiLU(norm1(x))))))``; ``nin_shortcut`` (1×1) on ``x`` when
    the width changes."""

    def __init__(self, cin: int, cout: int, groups: int, *, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(groups, cin)
        self.conv1 = Conv(cin, cout, 3, rngs=rngs)
        self.norm2 = GroupNorm(groups, cout)
        self.conv2 = Conv(cout, cout, 3, rngs=rngs)
        self.nin_shortcut = Conv(cin, cout, 1, rngs=rngs) if cin != cout else None

    def __call__(self, x: Array) -> Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nnx.Module):
    """Single-head self-attention over all pixels, with a residual: ``x + proj_out(attn)``.

    ``recompute=True`` uses :func:`~psijax.models.flux.layers.recompute_attention`, whose
    backward pass recomputes the ``(HW)²`` probabilities instead of storing them.
    """

    def __init__(self, channels: int, groups: int, *, rngs: nnx.Rngs):
        self.norm = GroupNorm(groups, channels)
        self.q = Linear(channels, channels, rngs=rngs)
        self.k = Linear(channels, channels, rngs=rngs)
        self.v = Linear(channels, channels, rngs=rngs)
        self.proj_out = Linear(channels, channels, rngs=rngs)

    def __call__(self, x: Array, recompute: bool = False) -> Array:
        b, height, width, c = x.shape
        h = self.norm(x).reshape(b, height * width, 1, c)  # one head of width c
        attend = recompute_attention if recompute else attention
        out = attend(self.q(h), self.k(h), self.v(h))
        return x + self.proj_out(out.reshape(b, height, width, c))


class Downsample(nnx.Module):
    """Stride-2 3×3 convolution after padding the bottom and right edges by one zero pixel."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = Conv(channels, channels, 3, rngs=rngs, stride=2, padding=((0, 1), (0, 1)))

    def __call__(self, x: Array) -> Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour ×2 upsampling, then a 3×3 convolution."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = Conv(channels, channels, 3, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class _Level(nnx.Module):
    """One resolution level: ``block`` (residual blocks) and an optional resampling layer."""

    def __init__(self, blocks, resample_name: str | None = None, resample=None):
        self.block = nnx.List(blocks)
        if resample_name is not None:
            setattr(self, resample_name, resample)


class _Mid(nnx.Module):
    def __init__(self, channels: int, groups: int, attn: bool, *, rngs: nnx.Rngs):
        self.block_1 = ResnetBlock(channels, channels, groups, rngs=rngs)
        self.attn_1 = AttnBlock(channels, groups, rngs=rngs) if attn else None
        self.block_2 = ResnetBlock(channels, channels, groups, rngs=rngs)


def _apply(layer, x: Array, remat: bool, *args) -> Array:
    """``layer(x, *args)``, rematerialised in the backward pass when ``remat``.

    A plain ``jax.checkpoint`` of the layer rebuilt from its state: no NNX lifted transform,
    so it also works on a module closed over by ``jax.jit`` / ``jax.grad``.
    """
    if not remat:
        return layer(x, *args)
    graphdef, state = nnx.split(layer)
    return jax.checkpoint(lambda s, h: nnx.merge(graphdef, s)(h, *args))(state, x)


def _mid(mid: _Mid, x: Array, remat: bool) -> Array:
    x = _apply(mid.block_1, x, remat)
    if mid.attn_1 is not None:
        x = _apply(mid.attn_1, x, remat, remat)
    return _apply(mid.block_2, x, remat)


class Encoder(nnx.Module):
    """Image ``(B, H, W, in_channels)`` → moments ``(B, H/f, W/f, 2·latent_channels)``."""

    def __init__(self, config: AutoencoderConfig, *, rngs: nnx.Rngs):
        widths, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = Conv(config.in_channels, widths[0], 3, rngs=rngs)
        levels, cin = [], widths[0]
        for i, cout in enumerate(widths):
            blocks = []
            for _ in range(config.layers_per_block):
                blocks.append(ResnetBlock(cin, cout, groups, rngs=rngs))
                cin = cout
            last = i == len(widths) - 1
            down = None if last else Downsample(cout, rngs=rngs)
            levels.append(_Level(blocks, None if last else "downsample", down))
        self.down = nnx.List(levels)
        self.mid = _Mid(widths[-1], groups, config.mid_block_add_attention, rngs=rngs)
        self.norm_out = GroupNorm(groups, widths[-1])
        self.conv_out = Conv(widths[-1], 2 * config.latent_channels, 3, rngs=rngs)

    def __call__(self, x: Array, remat: bool = False) -> Array:
        x = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                x = _apply(block, x, remat)
            if hasattr(level, "downsample"):
                x = _apply(level.downsample, x, remat)
        x = _mid(self.mid, x, remat)
        return self.conv_out(jax.nn.silu(self.norm_out(x)))


class Decoder(nnx.Module):
    """Latent ``(B, h, w, latent_channels)`` → image ``(B, f·h, f·w, out_channels)``."""

    def __init__(self, config: AutoencoderConfig, *, rngs: nnx.Rngs):
        widths, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = Conv(config.latent_channels, widths[-1], 3, rngs=rngs)
        self.mid = _Mid(widths[-1], groups, config.mid_block_add_attention, rngs=rngs)
        levels, cin = [None] * len(widths), widths[-1]
        for i in reversed(range(len(widths))):  # built in the order applied; stored as BFL's
            blocks = []
            for _ in range(config.layers_per_block + 1):
                blocks.append(ResnetBlock(cin, widths[i], groups, rngs=rngs))
                cin = widths[i]
            up = Upsample(widths[i], rngs=rngs) if i else None
            levels[i] = _Level(blocks, "upsample" if i else None, up)
        self.up = nnx.List(levels)
        self.norm_out = GroupNorm(groups, widths[0])
        self.conv_out = Conv(widths[0], config.out_channels, 3, rngs=rngs)

    def __call__(self, z: Array, remat: bool = False) -> Array:
        x = _mid(self.mid, self.conv_in(z), remat)
        for level in reversed(self.up):
            for block in level.block:
                x = _apply(block, x, remat)
            if hasattr(level, "upsample"):
                x = _apply(level.upsample, x, remat)
        return self.conv_out(jax.nn.silu(self.norm_out(x)))


# ----------------------------------------------------------------------------------------------
# The autoencoder
# ----------------------------------------------------------------------------------------------
class AutoencoderKL(nnx.Module):
    """The KL autoencoder: :meth:`encode` images to latent moments, :meth:`decode` latents.

    Parameters
    ----------
    config
        Its :class:`AutoencoderConfig` (default: FLUX's).
    rngs
        Random initialisation (loaders build the module abstractly instead).
    """

    def __init__(self, config: AutoencoderConfig | None = None, *, rngs: nnx.Rngs):
        config = AutoencoderConfig() if config is None else config
        if not isinstance(config, AutoencoderConfig):
            raise TypeError(f"`config` must be an AutoencoderConfig, got {type(config).__name__}.")
        self.config = config
        self.encoder = Encoder(config, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)
        moments = 2 * config.latent_channels
        lat = config.latent_channels
        self.quant_conv = Conv(moments, moments, 1, rngs=rngs) if config.use_quant_conv else None
        self.post_quant_conv = Conv(lat, lat, 1, rngs=rngs) if config.use_post_quant_conv else None

    # -- the two halves ------------------------------------------------------------------------
    def encode(self, images: Array, *, dtype: Any = jnp.float32, remat: bool = False):
        """The latent distribution's ``(mean, logvar)`` of ``images`` ``(..., C, H, W)`` in [−1, 1].

        ``H`` and ``W`` must be multiples of :attr:`AutoencoderConfig.downsample_factor`. Both
        outputs are float32 ``(..., latent_channels, H/f, W/f)``; ``logvar`` is clipped to
        ``[−30, 20]`` as in the reference. The latent is ``mean`` (the mode) or
        ``mean + exp(logvar / 2)·ε``; :meth:`normalize` it for the generative model.
        """
        c = self.config
        x, lead = _to_channels_last(images, c.in_channels, "images", c.downsample_factor)
        x = x.astype(_check_dtype(dtype))
        moments = self.encoder(x, remat)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        moments = _to_channels_first(moments.astype(jnp.float32), lead)
        mean, logvar = jnp.split(moments, 2, axis=-3)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, latent: Array, *, dtype: Any = jnp.float32, remat: bool = False) -> Array:
        """Images ``(..., out_channels, f·h, f·w)`` (float32, about [−1, 1]) of raw latents
        ``(..., latent_channels, h, w)`` (not normalised: see :meth:`denormalize`)."""
        c = self.config
        z, lead = _to_channels_last(latent, c.latent_channels, "latent", 1)
        z = z.astype(_check_dtype(dtype))
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return _to_channels_first(self.decoder(z, remat).astype(jnp.float32), lead)

    # -- the generative model's latent ---------------------------------------------------------
    def normalize(self, z: Array) -> Array:
        """The generative model's latent ``(z − shift_factor) · scaling_factor``."""
        return (jnp.asarray(z) - self.config.shift_factor) * self.config.scaling_factor

    def denormalize(self, x: Array) -> Array:
        """The raw latent ``x / scaling_factor + shift_factor`` (inverse of :meth:`normalize`)."""
        return jnp.asarray(x) / self.config.scaling_factor + self.config.shift_factor

    def decode_tokens(
        self,
        tokens: Array,
        image_height: int,
        image_width: int,
        *,
        dtype: Any = jnp.float32,
        remat: bool = False,
    ) -> Array:
        """Images ``(..., 3, image_height, image_width)`` of FLUX's packed normalised tokens.

        ``tokens`` ``(..., L, 4·latent_channels)`` is a sampler's state (the FLUX transformer's
        input): unpacked (:func:`~psijax.models.flux.packing.unpack`), denormalised and decoded.
        """
        f = self.config.downsample_factor
        for name, size in (("image_height", image_height), ("image_width", image_width)):
            check_int(size, name)
            if size % (2 * f):
                raise ValueError(
                    f"`{name}` must be a multiple of {2 * f} (the autoencoder's factor {f} "
                    f"times the 2×2 packing), got {size}."
                )
        latent = packing.unpack(tokens, image_height // f, image_width // f)
        return self.decode(self.denormalize(latent), dtype=dtype, remat=remat)


def _check_dtype(dtype) -> jnp.dtype:
    try:
        dtype = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"`dtype` must be float32, bfloat16 or float16, got {dtype!r}.") from e
    if dtype not in _DTYPES:
        raise ValueError(f"`dtype` must be float32, bfloat16 or float16, got {dtype}.")
    return dtype


def _to_channels_last(x, channels: int, name: str, multiple: int) -> tuple[Array, tuple]:
    x = jnp.asarray(x)
    if x.ndim < 3 or x.shape[-3] != channels:
        raise ValueError(f"`{name}` must have shape (..., {channels}, H, W), got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating array, got dtype {x.dtype}.")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"`{name}`'s height and width must be multiples of {multiple} (the autoencoder "
            f"downsamples {multiple}×), got {height}×{width}."
        )
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    return jnp.transpose(x, (0, 2, 3, 1)), lead


def _to_channels_first(x: Array, lead: tuple) -> Array:
    x = jnp.transpose(x, (0, 3, 1, 2))
    return x.reshape(*lead, *x.shape[1:])
