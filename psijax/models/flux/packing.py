"""FLUX inputs: 2×2 patch packing of VAE latents, position ids, VAE normalisation, time grids.

The FLUX transformer does not see the VAE latent ``(C, H, W)`` (``C = 16``, ``H, W`` = image
size / 8) directly. The latent is cut into non-overlapping 2×2 patches and each patch becomes
one **token** of ``4C = 64`` numbers:

.. math::

    \\text{latent}[c,\\; 2i + p_h,\\; 2j + p_w]
    \\;=\\; \\text{tokens}[i\\,w + j,\\; 4c + 2p_h + p_w],
    \\qquad 0 ≤ i < h = H/2,\\; 0 ≤ j < w = W/2,\\; p_h, p_w ∈ \\{0, 1\\}.

So tokens are in row-major order over the ``h × w`` patch grid, and inside a token the feature
axis is ordered ``(c, p_h, p_w)`` with the channel slowest. :func:`pack` and :func:`unpack` are
exact inverses (pure reshapes and transposes; ``jit``/``vmap`` friendly). Token ``i·w + j``
carries the position id ``[0, i, j]`` (:func:`image_ids`); text tokens carry ``[0, 0, 0]``
(:func:`text_ids`).

The psijax velocity functions of a FLUX model act on a **single packed latent** of shape
``(L, 64)`` with ``L = h·w`` tokens (the library vmaps over particles), so a sampler's state is
``pack(normalize_latent(z))`` of a VAE latent ``z`` and the result is decoded through
``denormalize_latent(unpack(x, H, W))``.

Sizes: the VAE downsamples by 8 and packing halves again, so an image of ``H_img × W_img``
pixels needs both sides to be multiples of 16; it gives the latent :func:`latent_shape`
``(16, H_img/8, W_img/8)`` and :func:`num_tokens` ``= (H_img/16)(W_img/16)`` tokens.

The denoising grid (t = 1 noise → t = 0 data) is :func:`time_grid`: FLUX-dev's resolution
shifted grid or FLUX-schnell's uniform one, both from :mod:`psijax.flows.interpolant`.
"""

import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike

from psijax._checks import check_int
from psijax.flows.interpolant import flux_grid, uniform_grid

__all__ = [
    "VAE_SHIFT",
    "VAE_SCALE",
    "pack",
    "unpack",
    "image_ids",
    "text_ids",
    "latent_shape",
    "num_tokens",
    "normalize_latent",
    "denormalize_latent",
    "time_grid",
]

VAE_SHIFT = 0.1159
"""Shift of the FLUX VAE latent: the model's latent is ``(z − VAE_SHIFT)·VAE_SCALE``."""

VAE_SCALE = 0.3611
"""Scale of the FLUX VAE latent: the model's latent is ``(z − VAE_SHIFT)·VAE_SCALE``."""

_PATCH = 2  # side of a packed patch, in latent pixels
_VAE_FACTOR = 8  # spatial downsampling of the VAE


# ----------------------------------------------------------------------------------------------
# Packing
# ----------------------------------------------------------------------------------------------
def _check_even(value, name: str) -> int:
    value = check_int(value, name)
    if value % _PATCH:
        raise ValueError(f"`{name}` must be even (2×2 patches), got {value}.")
    return value


def pack(latent: ArrayLike) -> Array:
    """Pack a latent ``(..., C, 2h, 2w)`` into tokens ``(..., h·w, 4C)`` (2×2 patches).

    Token ``i·w + j`` (row-major over the patch grid) holds the patch
    ``latent[..., :, 2i:2i+2, 2j:2j+2]`` flattened in ``(c, p_h, p_w)`` order, channel slowest:
    ``tokens[..., i·w + j, 4c + 2p_h + p_w] = latent[..., c, 2i + p_h, 2j + p_w]``.

    Parameters
    ----------
    latent
        Array of shape ``(..., C, H, W)`` with ``H`` and ``W`` even; any leading dimensions
        (none for one sample ``(C, H, W)``, ``(B,)`` for a batch) are kept.

    Returns
    -------
    The tokens, shape ``(..., (H/2)(W/2), 4C)``, same dtype. For FLUX, ``C = 16`` so one sample
    packs to ``(L, 64)``, the input of the psijax velocity functions.
    """
    latent = jnp.asarray(latent)
    if latent.ndim < 3:
        raise ValueError(f"`latent` must have shape (..., C, H, W), got shape {latent.shape}.")
    *lead, channels, height, width = latent.shape
    if height % _PATCH or width % _PATCH:
        raise ValueError(
            f"`latent` must have even height and width (2×2 patches), got shape {latent.shape}."
        )
    h, w = height // _PATCH, width // _PATCH
    n = len(lead)
    x = latent.reshape(*lead, channels, h, _PATCH, w, _PATCH)
    # (..., c, i, ph, j, pw) → (..., i, j, c, ph, pw)
    x = x.transpose(*range(n), n + 1, n + 3, n, n + 2, n + 4)
    return x.reshape(*lead, h * w, channels * _PATCH * _PATCH)


def unpack(tokens: ArrayLike, height: int, width: int) -> Array:
    """Unpack tokens ``(..., h·w, 4C)`` into the latent ``(..., C, height, width)``.

    The exact inverse of :func:`pack`. ``height`` and ``width`` are the **latent** sizes
    ``(2h, 2w)`` (image size / 8), not pixel sizes: the token count alone does not determine a
    non-square grid.

    Parameters
    ----------
    tokens
        Array of shape ``(..., L, D)`` with ``L = (height/2)(width/2)`` and ``D`` a multiple of 4.
    height, width
        Even ints, the latent's spatial size.

    Returns
    -------
    The latent, shape ``(..., D/4, height, width)``, same dtype.
    """
    height = _check_even(height, "height")
    width = _check_even(width, "width")
    tokens = jnp.asarray(tokens)
    if tokens.ndim < 2:
        raise ValueError(f"`tokens` must have shape (..., L, D), got shape {tokens.shape}.")
    *lead, length, features = tokens.shape
    h, w = height // _PATCH, width // _PATCH
    if length != h * w:
        raise ValueError(
            f"`tokens` of shape {tokens.shape} has {length} tokens, but a {height}×{width} latent "
            f"packs to {h}·{w} = {h * w}."
        )
    if features % (_PATCH * _PATCH):
        raise ValueError(
            f"`tokens` must have a feature size divisible by 4, got shape {tokens.shape}."
        )
    channels = features // (_PATCH * _PATCH)
    n = len(lead)
    x = tokens.reshape(*lead, h, w, channels, _PATCH, _PATCH)
    # (..., i, j, c, ph, pw) → (..., c, i, ph, j, pw)
    x = x.transpose(*range(n), n + 2, n, n + 3, n + 1, n + 4)
    return x.reshape(*lead, channels, height, width)


def image_ids(height: int, width: int) -> Array:
    """Position ids ``(h·w, 3)`` of the packed image tokens: row ``i·w + j`` is ``[0, i, j]``.

    ``height`` and ``width`` are the even **latent** sizes; ``h = height/2``, ``w = width/2`` is
    the patch grid, enumerated row-major as in :func:`pack`. The first column (0 for the image)
    is the axis that distinguishes reference images in FLUX variants. Float32; shared by all
    samples of a batch.
    """
    h = _check_even(height, "height") // _PATCH
    w = _check_even(width, "width") // _PATCH
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ids = np.stack([np.zeros_like(rows), rows, cols], axis=-1).reshape(h * w, 3)
    return jnp.asarray(ids, jnp.float32)


def text_ids(num_text_tokens: int) -> Array:
    """Position ids ``(num_text_tokens, 3)`` of the text tokens: all zeros, float32."""
    num_text_tokens = check_int(num_text_tokens, "num_text_tokens")
    return jnp.zeros((num_text_tokens, 3), jnp.float32)


# ----------------------------------------------------------------------------------------------
# Pixel sizes, VAE normalisation
# ----------------------------------------------------------------------------------------------
def _check_image_size(image_height, image_width) -> tuple[int, int]:
    multiple = _VAE_FACTOR * _PATCH
    image_height = check_int(image_height, "image_height")
    image_width = check_int(image_width, "image_width")
    if image_height % multiple or image_width % multiple:
        raise ValueError(
            f"FLUX image sizes must be multiples of {multiple} (VAE ×{_VAE_FACTOR}, then 2×2 "
            f"patches), got {image_height}×{image_width}."
        )
    return image_height, image_width


def latent_shape(image_height: int, image_width: int, channels: int = 16) -> tuple[int, int, int]:
    """The VAE latent shape ``(channels, H/8, W/8)`` of an ``H × W`` image.

    ``H`` and ``W`` must be multiples of 16 so that the latent sizes are even (packable).
    """
    image_height, image_width = _check_image_size(image_height, image_width)
    channels = check_int(channels, "channels")
    return channels, image_height // _VAE_FACTOR, image_width // _VAE_FACTOR


def num_tokens(image_height: int, image_width: int) -> int:
    """The number of packed image tokens ``L = (H/16)(W/16)`` of an ``H × W`` image.

    E.g. 1024×1024 → 4096 tokens, 512×512 → 1024, 256×256 → 256. ``H`` and ``W`` must be
    multiples of 16.
    """
    image_height, image_width = _check_image_size(image_height, image_width)
    multiple = _VAE_FACTOR * _PATCH
    return (image_height // multiple) * (image_width // multiple)


def normalize_latent(z: ArrayLike) -> Array:
    """The model's latent ``x = (z − VAE_SHIFT)·VAE_SCALE`` of a VAE encoder output ``z``."""
    return (jnp.asarray(z) - VAE_SHIFT) * VAE_SCALE


def denormalize_latent(x: ArrayLike) -> Array:
    """The VAE decoder's input ``z = x/VAE_SCALE + VAE_SHIFT`` (inverse of normalize_latent)."""
    return jnp.asarray(x) / VAE_SCALE + VAE_SHIFT


# ----------------------------------------------------------------------------------------------
# Time grid
# ----------------------------------------------------------------------------------------------
def time_grid(
    num_steps: int,
    num_tokens: int | None = None,
    *,
    shift: bool = True,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
) -> Array:
    """The FLUX denoising grid ``1 = t_0 > t_1 > … > t_T = 0``, float32, ``num_steps + 1`` times.

    A dispatcher over :mod:`psijax.flows.interpolant`:

    - ``shift=True`` (FLUX-dev): :func:`~psijax.flows.interpolant.flux_grid`, the uniform grid
      pushed towards the noise end by ``shift(t) = e^μ t / (e^μ t + 1 − t)`` with ``μ`` linear in
      ``num_tokens`` (``base_shift`` at ``base_seq_len`` tokens, ``max_shift`` at
      ``max_seq_len``). ``num_tokens`` is required: see :func:`num_tokens`.
    - ``shift=False`` (FLUX-schnell): :func:`~psijax.flows.interpolant.uniform_grid`,
      ``t_i = 1 − i/T``; ``num_tokens`` and the shift parameters are ignored.

    Both equal the ``sigmas`` (terminal 0 included) that diffusers' ``FluxPipeline`` sets on its
    ``FlowMatchEulerDiscreteScheduler`` for the respective model configuration.
    """
    if not shift:
        return uniform_grid(num_steps)
    if num_tokens is None:
        raise TypeError("`num_tokens` is required for the shifted (FLUX-dev) grid, `shift=True`.")
    return flux_grid(
        num_steps,
        num_tokens,
        base_shift=base_shift,
        max_shift=max_shift,
        base_seq_len=base_seq_len,
        max_seq_len=max_seq_len,
    )
