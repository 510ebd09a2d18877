"""A FLUX model as the single-sample velocity field of :class:`psijax.align.RewardProblem`.

The samplers of :mod:`psijax.align` act on one particle at a time and ``vmap`` over particles
with a shared time. :func:`to_velocity_fn` closes a :class:`~psijax.models.flux.model.Flux` over
its conditioning — precomputed text states, pooled vector, guidance and the ids of the token
grid — and returns ``velocity_fn(x, t)`` on a packed latent ``x: (L, out_channels)``. On the fast
path the time-only work (embedding, all modulations, RoPE, the text projection) is unbatched
under that ``vmap`` and so runs once per time for all particles.

The returned function is a ``jax.tree_util.Partial`` whose leaves are the parameters and the
conditioning, so it can be passed through ``jit`` as an argument rather than baked in as
constants.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from psijax._tree import static_partial
from psijax.models.flux.model import Flux, FluxOptions

__all__ = ["FluxConditioning", "conditioning", "to_velocity_fn"]


class FluxConditioning(NamedTuple):
    """What a FLUX velocity is conditioned on, for one sample (no batch axis).

    Attributes
    ----------
    txt
        Text hidden states ``(Lt, context_in_dim)`` (T5-XXL for FLUX).
    txt_ids
        Text position ids ``(Lt, 3)`` (zeros for FLUX).
    y
        Pooled text vector ``(vec_in_dim,)`` (CLIP-L for FLUX).
    img_ids
        Ids of the packed token grid ``(L, 3)`` (:func:`~.packing.image_ids`).
    guidance
        The distilled guidance scale (scalar) of a ``guidance_embed`` model, else
        ``None``.
    img_cond
        Extra per-token input channels ``(L, in_channels − out_channels)``
        concatenated after ``x`` (FLUX fill/depth/canny), else ``None``.
    """

    txt: Array
    txt_ids: Array
    y: Array
    img_ids: Array
    guidance: Array | None = None
    img_cond: Array | None = None


def conditioning(txt, y, img_ids, *, guidance=None, txt_ids=None, img_cond=None):
    """A :class:`FluxConditioning` with float32 arrays; ``txt_ids`` default to zeros."""
    txt = jnp.asarray(txt, jnp.float32)
    if txt.ndim != 2:
        raise ValueError(f"`txt` must be (Lt, context_in_dim) for one sample, got {txt.shape}.")
    txt_ids = jnp.zeros((txt.shape[0], 3), jnp.float32) if txt_ids is None else txt_ids
    return FluxConditioning(
        txt=txt,
        txt_ids=jnp.asarray(txt_ids, jnp.float32),
        y=jnp.asarray(y, jnp.float32),
        img_ids=jnp.asarray(img_ids, jnp.float32),
        guidance=None if guidance is None else jnp.asarray(guidance, jnp.float32),
        img_cond=None if img_cond is None else jnp.asarray(img_cond, jnp.float32),
    )


def _check(model: Flux, cond: FluxConditioning) -> None:
    c = model.config
    shapes = {
        "txt": (cond.txt, (None, c.context_in_dim)),
        "txt_ids": (cond.txt_ids, (cond.txt.shape[0], 3)),
        "y": (cond.y, (c.vec_in_dim,)),
        "img_ids": (cond.img_ids, (None, 3)),
    }
    extra = c.in_channels - c.out_channels
    if extra:
        if cond.img_cond is None:
            raise ValueError(
                f"This model takes {c.in_channels} input channels for {c.out_channels} output "
                f"channels: pass `img_cond` with the {extra} conditioning channels."
            )
        shapes["img_cond"] = (cond.img_cond, (cond.img_ids.shape[0], extra))
    elif cond.img_cond is not None:
        raise ValueError("`img_cond` is only for models with in_channels > out_channels.")
    for name, (value, expected) in shapes.items():
        shape = jnp.shape(value)
        if len(shape) != len(expected) or any(
            e not in (None, s) for e, s in zip(expected, shape, strict=True)
        ):
            want = tuple("*" if e is None else e for e in expected)
            raise ValueError(f"`{name}` must have shape {want}, got {shape}.")
    if c.guidance_embed and cond.guidance is None:
        raise ValueError("This model embeds guidance (guidance_embed=True): pass `guidance`.")
    if not c.guidance_embed and cond.guidance is not None:
        raise ValueError("This model has no guidance embedding: pass `guidance=None`.")
    if cond.guidance is not None and jnp.ndim(cond.guidance) != 0:
        raise ValueError(f"`guidance` must be a scalar, got shape {jnp.shape(cond.guidance)}.")


def _velocity(graphdef, options, state, cond: FluxConditioning, x, t) -> Array:
    model = nnx.merge(graphdef, state)
    if cond.img_cond is not None:
        x = jnp.concatenate([x, cond.img_cond.astype(x.dtype)], axis=-1)
    guidance = None if cond.guidance is None else jnp.reshape(cond.guidance, (1,))
    out = model(
        x[None],
        cond.img_ids,
        cond.txt[None],
        cond.txt_ids,
        jnp.reshape(t, (1,)),
        cond.y[None],
        guidance,
        options=options,
    )
    return out[0]


def to_velocity_fn(model: Flux, cond: FluxConditioning, options: FluxOptions | None = None):
    """``velocity_fn(x, t)`` of ``model`` under ``cond``: ``(L, out_channels)`` in and out, float32.

    Parameters
    ----------
    model
        A :class:`Flux`.
    cond
        Its conditioning (:func:`conditioning`); checked against the model's config.
    options
        Execution options (:class:`FluxOptions`): fast path by default; bfloat16,
        remat and cuDNN attention for large models.
    """
    if not isinstance(model, Flux):
        raise TypeError(f"`model` must be a Flux, got {type(model).__name__}.")
    if not isinstance(cond, FluxConditioning):
        raise TypeError(f"`cond` must be a FluxConditioning, got {type(cond).__name__}.")
    options = FluxOptions() if options is None else options
    if not isinstance(options, FluxOptions):
        raise TypeError(f"`options` must be a FluxOptions, got {type(options).__name__}.")
    _check(model, cond)
    graphdef, state = nnx.split(model)
    return jax.tree_util.Partial(static_partial(_velocity, graphdef, options), state, cond)
