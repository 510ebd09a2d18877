"""The CLIP vision tower with its projection (transformers' ``CLIPVisionModelWithProjection``).

An image reward such as the LAION aesthetic predictor (:mod:`psijax.rewards.aesthetic`) or a
CLIP score reads a generated image through CLIP's vision transformer. This module is that tower in
Flax NNX, differentiable in the pixels, loading the public checkpoints (transformers' key names,
a full ``CLIPModel`` or the vision model alone) without torch. The math (``docs/rewards.md``):

- patches: a ``patch_size`` convolution without bias, a learned class token first, learned
  position embeddings; a LayerNorm (transformers' ``pre_layrnorm``, sic);
- ``num_hidden_layers`` pre-LayerNorm blocks: ``x += out_proj(attention(LN₁(x)))`` (scale
  ``1/√head_dim``, no mask), ``x += fc2(act(fc1(LN₂(x))))`` with OpenAI's ``quick_gelu``
  ``x·σ(1.702x)`` (or ``gelu``);
- the class token's output through ``post_layernorm`` and the bias-free ``visual_projection``: the
  image embedding.

:func:`preprocess` is the differentiable counterpart of ``CLIPImageProcessor``: images in
``[−1, 1]`` are resized so the short side is ``image_size`` (bicubic, antialiased, as PIL does),
centre-cropped, and normalised with CLIP's mean and standard deviation.

Dtypes: ``dtype`` is the compute dtype (parameters cast at use); LayerNorm statistics, attention
scores and softmax are float32; the embedding is returned in float32.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from psijax._checks import check_int
from psijax.models import _params
from psijax.models.flux import checkpoint
from psijax.models.flux.layers import Linear, attention

__all__ = [
    "CLIPVisionConfig",
    "CLIP_PRESETS",
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIPVision",
    "preprocess",
    "tensor_keys",
    "to_tensors",
    "from_tensors",
    "load_clip_vision",
    "config_from_transformers",
]

#: CLIP's per-channel normalisation of pixels in [0, 1] (OpenAI's, used by every CLIP release).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """The hyper-parameters of a CLIP vision tower (transformers' field names; hashable).

    Attributes
    ----------
    hidden_size, intermediate_size
        Width of the transformer and of its MLP.
    projection_dim
        Width of the image embedding (``visual_projection``).
    num_hidden_layers, num_attention_heads
        Depth and heads.
    image_size, patch_size
        Input side in pixels and patch side; ``(image_size / patch_size)² + 1`` tokens.
    num_channels
        Image channels (3).
    hidden_act
        ``"quick_gelu"`` (OpenAI's releases), ``"gelu"`` or ``"gelu_new"``.
    layer_norm_eps
        ε of every LayerNorm.
    """

    hidden_size: int = 1024
    intermediate_size: int = 4096
    projection_dim: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        for name in (
            "hidden_size",
            "intermediate_size",
            "projection_dim",
            "num_hidden_layers",
            "num_attention_heads",
            "image_size",
            "patch_size",
            "num_channels",
        ):
            check_int(getattr(self, name), name)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be a multiple of `patch_size` "
                f"({self.patch_size})."
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"`hidden_act` must be one of {sorted(_ACTIVATIONS)}, got {self.hidden_act!r}."
            )
        if not (isinstance(self.layer_norm_eps, float) and 0 < self.layer_norm_eps < 1):
            raise ValueError(
                f"`layer_norm_eps` must be a float in (0, 1), got {self.layer_norm_eps!r}."
            )

    @property
    def num_patches(self) -> int:
        """Patches per image, ``(image_size / patch_size)²``."""
        return (self.image_size // self.patch_size) ** 2


CLIP_PRESETS = {
    # OpenAI's ViT-L/14 at 224 px, the tower of the LAION aesthetic predictor.
    "vit_l14": CLIPVisionConfig(),
    # OpenAI's ViT-B/32.
    "vit_b32": CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        projection_dim=512,
        num_hidden_layers=12,
        num_attention_heads=12,
        patch_size=32,
    ),
    # For tests and CPU runs.
    "tiny": CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=30,
        patch_size=6,
    ),
}


# ----------------------------------------------------------------------------------------------
# Layers; a parameter named `kernel` is torch's `weight` transposed, any other name is torch's.
# ----------------------------------------------------------------------------------------------
class _LayerNorm(nnx.Module):
    def __init__(self, width: int, eps: float):
        self.weight = nnx.Param(_params.constant(1.0, (width,), jnp.float32))
        self.bias = nnx.Param(_params.constant(0.0, (width,), jnp.float32))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.weight[...].astype(jnp.float32) + self.bias[...]).astype(x.dtype)


class _Holder(nnx.Module):
    """Parameters under torch's module name (a convolution's ``kernel``, an embedding table)."""

    def __init__(self, **params):
        for name, value in params.items():
            setattr(self, name, nnx.Param(value))


class _Embeddings(nnx.Module):
    def __init__(self, c: CLIPVisionConfig, *, rngs: nnx.Rngs):
        p, h = c.patch_size, c.hidden_size
        fan_in = c.num_channels * p * p
        self.class_embedding = nnx.Param(_params.normal(rngs, (h,), 1 / math.sqrt(h), jnp.float32))
        self.patch_embedding = _Holder(
            kernel=_params.normal(
                rngs, (p, p, c.num_channels, h), 1 / math.sqrt(fan_in), jnp.float32
            )
        )
        self.position_embedding = _Holder(
            weight=_params.normal(rngs, (c.num_patches + 1, h), 0.02, jnp.float32)
        )
        self.patch_size = p

    def __call__(self, pixels: Array) -> Array:  # (B, H, W, C) → (B, 1 + P, hidden)
        p = self.patch_size
        x = jax.lax.conv_general_dilated(
            pixels,
            self.patch_embedding.kernel[...].astype(pixels.dtype),
            (p, p),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        b = x.shape[0]
        x = x.reshape(b, -1, x.shape[-1])
        cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (b, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1)
        return x + self.position_embedding.weight[...].astype(x.dtype)


class _Attention(nnx.Module):
    def __init__(self, c: CLIPVisionConfig, *, rngs: nnx.Rngs):
        h = c.hidden_size
        self.heads = c.num_attention_heads
        self.q_proj = Linear(h, h, rngs=rngs)
        self.k_proj = Linear(h, h, rngs=rngs)
        self.v_proj = Linear(h, h, rngs=rngs)
        self.out_proj = Linear(h, h, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        b, length, h = x.shape
        split = lambda y: y.reshape(b, length, self.heads, h // self.heads)  # noqa: E731
        out = attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(out.reshape(b, length, h))


class _MLP(nnx.Module):
    def __init__(self, c: CLIPVisionConfig, *, rngs: nnx.Rngs):
        self.fc1 = Linear(c.hidden_size, c.intermediate_size, rngs=rngs)
        self.fc2 = Linear(c.intermediate_size, c.hidden_size, rngs=rngs)
        self.act = c.hidden_act

    def __call__(self, x: Array) -> Array:
        return self.fc2(_ACTIVATIONS[self.act](self.fc1(x)))


class _Layer(nnx.Module):
    def __init__(self, c: CLIPVisionConfig, *, rngs: nnx.Rngs):
        self.layer_norm1 = _LayerNorm(c.hidden_size, c.layer_norm_eps)
        self.self_attn = _Attention(c, rngs=rngs)
        self.layer_norm2 = _LayerNorm(c.hidden_size, c.layer_norm_eps)
        self.mlp = _MLP(c, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nnx.Module):
    def __init__(self, c: CLIPVisionConfig, *, rngs: nnx.Rngs):
        self.layers = nnx.List([_Layer(c, rngs=rngs) for _ in range(c.num_hidden_layers)])


class _VisionTransformer(nnx.Module):
    def __init__(self, c: CLIPVisionConfig, *, rngs: nnx.Rngs):
        self.embeddings = _Embeddings(c, rngs=rngs)
        self.pre_layrnorm = _LayerNorm(c.hidden_size, c.layer_norm_eps)
        self.encoder = _Encoder(c, rngs=rngs)
        self.post_layernorm = _LayerNorm(c.hidden_size, c.layer_norm_eps)


class CLIPVision(nnx.Module):
    """CLIP's vision tower and projection: normalised pixels to image embeddings.

    Parameters
    ----------
    config
        Its :class:`CLIPVisionConfig` (default: ViT-L/14).
    rngs
        Random initialisation (the loaders build the module abstractly instead).
    """

    def __init__(self, config: CLIPVisionConfig | None = None, *, rngs: nnx.Rngs):
        config = CLIPVisionConfig() if config is None else config
        if not isinstance(config, CLIPVisionConfig):
            raise TypeError(f"`config` must be a CLIPVisionConfig, got {type(config).__name__}.")
        self.config = config
        self.vision_model = _VisionTransformer(config, rngs=rngs)
        self.visual_projection = Linear(
            config.hidden_size, config.projection_dim, rngs=rngs, bias=False
        )

    def __call__(
        self, pixel_values: Array, *, dtype: Any = jnp.float32, remat: bool = False
    ) -> Array:
        """Image embeddings ``(..., projection_dim)`` (float32, not normalised) of
        ``pixel_values`` ``(..., C, image_size, image_size)``, already :func:`preprocess`-ed.

        ``remat=True`` rematerialises each transformer layer in the backward pass.
        """
        c = self.config
        x = jnp.asarray(pixel_values)
        want = (c.num_channels, c.image_size, c.image_size)
        if x.ndim < 3 or x.shape[-3:] != want:
            raise ValueError(
                f"`pixel_values` must have shape (..., {', '.join(map(str, want))}), got "
                f"{x.shape}; resize with psijax.models.clip.preprocess."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"`pixel_values` must be a floating array, got {x.dtype}.")
        dtype = jnp.dtype(dtype)
        if dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
            raise ValueError(f"`dtype` must be float32, bfloat16 or float16, got {dtype}.")
        lead = x.shape[:-3]
        x = jnp.transpose(x.reshape(-1, *want), (0, 2, 3, 1)).astype(dtype)
        vm = self.vision_model
        h = vm.pre_layrnorm(vm.embeddings(x))
        for layer in vm.encoder.layers:
            if remat:
                graphdef, state = nnx.split(layer)
                h = jax.checkpoint(lambda s, y, g=graphdef: nnx.merge(g, s)(y))(state, h)
            else:
                h = layer(h)
        pooled = vm.post_layernorm(h[:, 0])
        out = self.visual_projection(pooled).astype(jnp.float32)
        return out.reshape(*lead, c.projection_dim)


# ----------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------
def preprocess(images: Array, image_size: int = 224) -> Array:
    """CLIP's pixel values of ``images`` ``(..., 3, H, W)`` in ``[−1, 1]``, differentiably.

    The short side is resized to ``image_size`` (bicubic with antialiasing, Keys' ``a = −0.5``
    kernel as PIL's, which ``CLIPImageProcessor`` uses), the long side keeps the aspect ratio
    (rounded down as the processor does), the centre ``image_size²`` is cropped, and the pixels
    ``(x + 1)/2`` are normalised by :data:`CLIP_MEAN` and :data:`CLIP_STD`. An image already at
    ``image_size²`` is only normalised.
    """
    image_size = check_int(image_size, "image_size")
    x = jnp.asarray(images)
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"`images` must have shape (..., 3, H, W), got {x.shape}.")
    height, width = x.shape[-2:]
    x = x.astype(jnp.float32)
    if (height, width) != (image_size, image_size):
        short = min(height, width)
        new_h = image_size if height == short else int(image_size * height / width)
        new_w = image_size if width == short else int(image_size * width / height)
        x = jax.image.resize(x, (*x.shape[:-2], new_h, new_w), "bicubic", antialias=True)
        top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
        x = x[..., top : top + image_size, left : left + image_size]
    mean = jnp.asarray(CLIP_MEAN, jnp.float32)[:, None, None]
    std = jnp.asarray(CLIP_STD, jnp.float32)[:, None, None]
    return ((x + 1) / 2 - mean) / std


# ----------------------------------------------------------------------------------------------
# Checkpoints (transformers' names)
# ----------------------------------------------------------------------------------------------
# Tensors of a full CLIPModel that the vision tower does not use.
_OTHER_TOWER = ("text_model.", "text_projection.", "logit_scale")
_PREFIXES = ("clip.", "model.")


def _torch_name(path) -> str:
    parts = [str(p) for p in path]
    if parts[-1] == "kernel":
        parts[-1] = "weight"
    return ".".join(parts)


def _torch_value(value, leaf: str):
    if leaf != "kernel":
        return value
    return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T


def _from_torch(value, leaf: str):
    if leaf != "kernel":
        return value
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T


def _abstract(config: CLIPVisionConfig):
    return nnx.split(nnx.eval_shape(lambda: CLIPVision(config, rngs=nnx.Rngs(0))))


def tensor_keys(config: CLIPVisionConfig) -> dict[str, tuple[int, ...]]:
    """transformers' state-dict keys of a vision tower with ``config`` and their torch shapes."""
    _, state = _abstract(config)
    out = {}
    for path, var in nnx.to_flat_state(state):
        shape = _params.value(var).shape
        if path[-1] == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
        out[_torch_name(path)] = tuple(shape)
    return out


def to_tensors(model: CLIPVision) -> dict[str, np.ndarray]:
    """The parameters as a transformers-layout state dict (numpy, torch layout)."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {
        _torch_name(path): np.ascontiguousarray(
            _torch_value(np.asarray(_params.value(var)), path[-1])
        )
        for path, var in flat
    }


def _vision_tensors(tensors: Mapping[str, Any]) -> dict[str, Any]:
    for prefix in _PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return {k: v for k, v in tensors.items() if not k.startswith(_OTHER_TOWER)}


def config_from_transformers(config: Mapping[str, Any]) -> CLIPVisionConfig:
    """The :class:`CLIPVisionConfig` of a transformers ``config.json`` dict: a ``CLIPConfig``
    (its ``vision_config``) or a ``CLIPVisionConfig``. Missing fields take transformers'
    defaults (ViT-B/32)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"`config` must be a mapping (config.json), got {type(config).__name__}.")
    vision = config.get("vision_config", config)
    defaults = dict(
        hidden_size=768,
        intermediate_size=3072,
        projection_dim=config.get("projection_dim", 512),
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
        num_channels=3,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    values = {k: vision.get(k, v) for k, v in defaults.items()}
    if "vision_config" in config and "projection_dim" in config:
        values["projection_dim"] = config["projection_dim"]
    values["layer_norm_eps"] = float(values["layer_norm_eps"])
    return CLIPVisionConfig(**values)


def from_tensors(
    tensors: Mapping[str, Any],
    config: CLIPVisionConfig,
    *,
    dtype: Any = None,
    check_finite: bool = True,
) -> CLIPVision:
    """A :class:`CLIPVision` holding ``tensors`` (transformers' names; text-tower keys ignored).

    A missing, unexpected, mis-shaped, non-floating or (with ``check_finite``) non-finite tensor
    is a ``ValueError`` naming its key.
    """
    if not isinstance(config, CLIPVisionConfig):
        raise TypeError(f"`config` must be a CLIPVisionConfig, got {type(config).__name__}.")
    tensors = _vision_tensors(tensors)
    expected = tensor_keys(config)
    _params.check_keys(tensors, expected, f"the CLIP vision tower {config}")
    if check_finite:
        _params.check_finite(tensors, expected)
    graphdef, state = _abstract(config)
    leaves = []
    for path, var in nnx.to_flat_state(state):
        value = tensors[_torch_name(path)]
        xp = np if isinstance(value, np.ndarray) else jnp
        value = _from_torch(xp.asarray(value), path[-1])
        leaves.append((path, var.replace(value=jnp.asarray(value, dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def load_clip_vision(
    path: str | os.PathLike,
    config: CLIPVisionConfig | None = None,
    *,
    dtype: Any = None,
    check_finite: bool = True,
) -> CLIPVision:
    """Load a CLIP vision tower from a transformers folder or a ``.safetensors`` file.

    ``path`` is a folder with ``config.json`` and ``model.safetensors`` (or shards with their
    index) as ``save_pretrained`` writes them, of a ``CLIPModel`` or a
    ``CLIPVisionModelWithProjection``; or one ``.safetensors`` file, with ``config`` given (or a
    ``config.json`` beside it). ``config`` overrides the folder's.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such CLIP file or folder: {path!r}.")
    if config is None:
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        config_path = os.path.join(folder, "config.json")
        if not os.path.isfile(config_path):
            raise ValueError(
                f"No config.json beside {path!r}: pass `config` (a CLIPVisionConfig, e.g. "
                "psijax.models.clip.CLIP_PRESETS['vit_l14'])."
            )
        with open(config_path) as f:
            config = config_from_transformers(json.load(f))
    tensors = checkpoint.read_tensors(path, host=True)
    return from_tensors(tensors, config, dtype=dtype, check_finite=check_finite)
