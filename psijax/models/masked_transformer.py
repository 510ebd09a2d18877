r"""A bidirectional masked-diffusion transformer in Flax NNX (docs/algorithms.md §10.6).

The learned counterpart of :mod:`psijax.models.masked_toys`: a denoiser ``ℓ(E, t)`` that reads a
**relaxed one-hot** ``E ∈ ℝ^{L×(V+1)}`` (mask id ``V`` in the last column), so that the
gradient proposals can differentiate it w.r.t. ``E``:

.. math::

    h_0 = E\,W_{\mathrm{emb}} + P\ (+\ \mathrm{time}(t)),\qquad
    h_{k+1} = h_k' + \mathrm{MLP}(\mathrm{LN}(h_k')),\quad
    h_k' = h_k + \mathrm{Attn}(\mathrm{LN}(h_k)),\qquad
    ℓ = [\mathrm{LN}(h_K)\,W_{\mathrm{out}},\ −∞]

The embedding is a matrix product ``E·W`` (not a table lookup), attention is bidirectional (no
causal mask), and the mask logit is ``−∞`` (the denoiser never predicts a mask). The samplers
apply the carry-over (:func:`psijax.discrete.masking.denoiser_log_probs`). Time conditioning is
optional: an exact masked denoiser does not depend on ``t``. The model knows nothing of
sampling; :func:`logits_fn` turns it into the pure ``logits_fn(E, t)`` of a
:class:`psijax.align.discrete.DiscreteProblem`.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike
from flax import nnx

from psijax._checks import check_int

__all__ = ["MaskedTransformerConfig", "MaskedTransformer", "logits_fn", "SMALL"]


@dataclasses.dataclass(frozen=True)
class MaskedTransformerConfig:
    """Shapes of a :class:`MaskedTransformer`.

    length, vocab_size
        ``L`` and ``V`` (the mask id is ``V``; ``S = V + 1`` input classes).
    width, depth, num_heads
        Model width (a multiple of ``num_heads``), number of blocks, attention heads.
    mlp_ratio
        Hidden width of the MLP over ``width``.
    time_conditioning
        Add a sinusoidal embedding of ``t`` (through a linear map) to every position.
    dtype
        The compute dtype (``jnp.bfloat16`` for mixed precision); parameters and logits are
        float32.
    """

    length: int
    vocab_size: int
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    time_conditioning: bool = False
    dtype: object = jnp.float32

    def __post_init__(self):
        for name in ("length", "vocab_size", "width", "depth", "num_heads", "mlp_ratio"):
            check_int(getattr(self, name), name)
        if self.width % self.num_heads:
            raise ValueError(
                f"`width` must be a multiple of `num_heads` ({self.num_heads}), got {self.width}."
            )


#: ``L = 64``, ``V = 17`` (8×8 images in 17 grey levels), width 128, 4 blocks of 4 heads.
SMALL = MaskedTransformerConfig(length=64, vocab_size=17)


class _Block(nnx.Module):
    def __init__(self, config: MaskedTransformerConfig, rngs: nnx.Rngs):
        w, dtype = config.width, config.dtype
        self.norm1 = nnx.LayerNorm(w, dtype=dtype, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            config.num_heads, w, decode=False, dtype=dtype, rngs=rngs
        )
        self.norm2 = nnx.LayerNorm(w, dtype=dtype, rngs=rngs)
        self.up = nnx.Linear(w, config.mlp_ratio * w, dtype=dtype, rngs=rngs)
        self.down = nnx.Linear(config.mlp_ratio * w, w, dtype=dtype, rngs=rngs)

    def __call__(self, h: Array) -> Array:
        h = h + self.attn(self.norm1(h))
        return h + self.down(jax.nn.gelu(self.up(self.norm2(h))))


class MaskedTransformer(nnx.Module):
    """The masked-diffusion denoiser (module docstring).

    ``model(E, t)`` takes ``E`` of shape ``(..., L, V + 1)`` and ``t`` broadcastable to the
    leading axes, and returns float32 logits of the same shape as ``E`` with the mask logit
    ``−∞``.
    """

    def __init__(self, config: MaskedTransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        s, w = config.vocab_size + 1, config.width
        init = jax.nn.initializers.normal(0.02)
        self.embed = nnx.Param(init(rngs.params(), (s, w)))
        self.position = nnx.Param(init(rngs.params(), (config.length, w)))
        self.time = nnx.Linear(w, w, rngs=rngs) if config.time_conditioning else None
        self.blocks = nnx.List([_Block(config, rngs) for _ in range(config.depth)])
        self.norm = nnx.LayerNorm(w, dtype=config.dtype, rngs=rngs)
        self.head = nnx.Linear(w, config.vocab_size, dtype=config.dtype, rngs=rngs)

    def __call__(self, soft_one_hot: ArrayLike, t: ArrayLike = 0.0) -> Array:
        config = self.config
        e = jnp.asarray(soft_one_hot)
        expected = (config.length, config.vocab_size + 1)
        if e.shape[-2:] != expected:
            raise ValueError(
                f"`E` must have shape (..., {expected[0]}, {expected[1]}), got {e.shape}."
            )
        h = e.astype(jnp.float32) @ self.embed[...] + self.position[...]
        if self.time is not None:
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), e.shape[:-2])
            h = h + self.time(_sinusoid(t, config.width))[..., None, :]
        h = h.astype(config.dtype)
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.norm(h)).astype(jnp.float32)
        pad = jnp.full(logits.shape[:-1] + (1,), -jnp.inf, jnp.float32)
        return jnp.concatenate([logits, pad], axis=-1)


def logits_fn(model: MaskedTransformer):
    """The pure ``logits_fn(E, t)`` of ``model`` (its parameters captured as arrays), for
    :class:`psijax.align.discrete.DiscreteProblem`."""
    graphdef, state = nnx.split(model)

    def fn(soft_one_hot, t):
        return nnx.merge(graphdef, state)(soft_one_hot, t)

    return fn


def _sinusoid(t: Array, width: int) -> Array:
    half = width // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = 1_000.0 * t[..., None] * freqs
    out = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(out, [(0, 0)] * t.ndim + [(0, width - 2 * half)])
