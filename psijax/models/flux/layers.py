"""The layers of FLUX.1, as Flax NNX modules named after BFL's checkpoint keys.

Every module is a plain transcription of the math in ``docs/flux.md``; the attribute names
are the checkpoint names (``img_attn.qkv``, ``img_mlp.layers.0`` for BFL's ``img_mlp.0``,
``final_layer.adaLN_modulation.layers.1`` …), so the mapping to a state dict is mechanical
(:mod:`psijax.models.flux.weights`).

Dtypes. A layer computes in the dtype of its *input*: parameters are cast at use, so one set
of float32 (or bfloat16) parameters serves both the float32 reference path and the bfloat16
fast path. As in the reference implementation, the timestep embedding, RoPE, and the
reductions of RMSNorm and LayerNorm run in float32 whatever the compute dtype.

Blocks take their modulation as an argument rather than computing it from ``vec``: it depends
only on the time, guidance and pooled text, so the fast path computes it once per time for all
blocks and all particles (:meth:`DoubleStreamBlock.modulation`).
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from psijax.models._params import constant as _constant
from psijax.models._params import normal as _normal
from psijax.models.flux.config import FluxConfig

__all__ = [
    "TIME_EMBED_DIM",
    "Linear",
    "MLPEmbedder",
    "RMSNorm",
    "QKNorm",
    "SelfAttention",
    "Modulation",
    "DoubleStreamBlock",
    "SingleStreamBlock",
    "LastLayer",
    "timestep_embedding",
    "layer_norm",
    "rope",
    "apply_rope",
    "attention",
    "recompute_attention",
]

TIME_EMBED_DIM = 256
_EPS = 1e-6

Attention = Callable[[Array, Array, Array], Array]
Mod = tuple[Array, Array, Array]  # (shift, scale, gate)


class Linear(nnx.Module):
    """``y = x W + b`` with a ``kernel`` of shape ``(in, out)`` — torch's weight, transposed."""

    def __init__(
        self, in_features: int, out_features: int, *, rngs: nnx.Rngs, bias=True, param_dtype=None
    ):
        dtype = param_dtype or jnp.float32
        self.kernel = nnx.Param(
            _normal(rngs, (in_features, out_features), 1 / math.sqrt(in_features), dtype)
        )
        self.bias = nnx.Param(_constant(0.0, (out_features,), dtype)) if bias else None

    def __call__(self, x: Array) -> Array:
        y = jnp.dot(x, self.kernel[...].astype(x.dtype))
        return y if self.bias is None else y + self.bias[...].astype(x.dtype)


class MLPEmbedder(nnx.Module):
    """``out_layer(SiLU(in_layer(x)))``."""

    def __init__(self, in_dim: int, hidden_dim: int, *, rngs: nnx.Rngs, param_dtype=None):
        self.in_layer = Linear(in_dim, hidden_dim, rngs=rngs, param_dtype=param_dtype)
        self.out_layer = Linear(hidden_dim, hidden_dim, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        return self.out_layer(jax.nn.silu(self.in_layer(x)))


class RMSNorm(nnx.Module):
    """RMS normalisation over the last axis with a learned ``scale``, ε = 1e-6.

    BFL's order of rounding: the mean square in float32, the normalised value cast back to the
    input dtype, then the product with ``scale`` (promoted as in torch).
    """

    def __init__(self, dim: int, *, param_dtype=None):
        self.scale = nnx.Param(_constant(1.0, (dim,), param_dtype or jnp.float32))

    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.float32)
        rrms = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + _EPS)
        return (xf * rrms).astype(x.dtype) * self.scale[...]


class QKNorm(nnx.Module):
    """RMSNorm of queries and keys over the head dim; both cast to the values' dtype."""

    def __init__(self, dim: int, *, param_dtype=None):
        self.query_norm = RMSNorm(dim, param_dtype=param_dtype)
        self.key_norm = RMSNorm(dim, param_dtype=param_dtype)

    def __call__(self, q: Array, k: Array, v: Array) -> tuple[Array, Array]:
        return self.query_norm(q).astype(v.dtype), self.key_norm(k).astype(v.dtype)


class SelfAttention(nnx.Module):
    """The ``qkv`` projection, its QK-norm and the output ``proj`` of one stream."""

    def __init__(self, config: FluxConfig, *, rngs: nnx.Rngs, param_dtype=None):
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.qkv = Linear(h, 3 * h, rngs=rngs, bias=config.qkv_bias, param_dtype=param_dtype)
        self.norm = QKNorm(config.head_dim, param_dtype=param_dtype)
        self.proj = Linear(h, h, rngs=rngs, param_dtype=param_dtype)

    def qkv_heads(self, x: Array) -> tuple[Array, Array, Array]:
        """Normalised ``(q, k, v)``, each ``(B, L, heads, head_dim)``."""
        q, k, v = _split_heads(self.qkv(x), self.num_heads)
        q, k = self.norm(q, k, v)
        return q, k, v


def _split_heads(qkv: Array, num_heads: int) -> tuple[Array, Array, Array]:
    # BFL: "B L (K H D) -> K B H L D" with K = 3 outermost; here kept as (B, L, H, D).
    *lead, width = qkv.shape
    qkv = qkv.reshape(*lead, 3, num_heads, width // (3 * num_heads))
    return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]


class Modulation(nnx.Module):
    """``lin(SiLU(vec))`` split into ``(shift, scale, gate)`` — twice for a double block."""

    def __init__(self, dim: int, double: bool, *, rngs: nnx.Rngs, param_dtype=None):
        self.multiplier = 6 if double else 3
        self.lin = Linear(dim, self.multiplier * dim, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, vec: Array) -> tuple[Mod, ...]:
        out = self.lin(jax.nn.silu(vec))[..., None, :]  # broadcast over tokens
        chunks = jnp.split(out, self.multiplier, axis=-1)
        return tuple(tuple(chunks[i : i + 3]) for i in range(0, self.multiplier, 3))


def layer_norm(x: Array) -> Array:
    """LayerNorm over the last axis without affine parameters, ε = 1e-6, reduced in float32."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + _EPS)).astype(x.dtype)


def _modulate(x: Array, shift: Array, scale: Array) -> Array:
    return (1 + scale) * layer_norm(x) + shift


def _mlp(in_dim: int, hidden_dim: int, *, rngs: nnx.Rngs, param_dtype) -> nnx.Sequential:
    # BFL's nn.Sequential(Linear, GELU(tanh), Linear): keys `.0` and `.2` are `.layers.0/.2`.
    return nnx.Sequential(
        Linear(in_dim, hidden_dim, rngs=rngs, param_dtype=param_dtype),
        _gelu_tanh,
        Linear(hidden_dim, in_dim, rngs=rngs, param_dtype=param_dtype),
    )


def _gelu_tanh(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=True)


class DoubleStreamBlock(nnx.Module):
    """Separate weights for image and text tokens, one joint attention over ``[txt; img]``."""

    def __init__(self, config: FluxConfig, *, rngs: nnx.Rngs, param_dtype=None):
        h, mlp = config.hidden_size, config.mlp_hidden_dim
        kw = dict(rngs=rngs, param_dtype=param_dtype)
        self.img_mod = Modulation(h, double=True, **kw)
        self.img_attn = SelfAttention(config, **kw)
        self.img_mlp = _mlp(h, mlp, **kw)
        self.txt_mod = Modulation(h, double=True, **kw)
        self.txt_attn = SelfAttention(config, **kw)
        self.txt_mlp = _mlp(h, mlp, **kw)

    def modulation(self, vec: Array):
        """``((img_mod1, img_mod2), (txt_mod1, txt_mod2))`` from ``vec``."""
        return self.img_mod(vec), self.txt_mod(vec)

    def __call__(self, img, txt, mods, pe, attend: Attention) -> tuple[Array, Array]:
        (img_mod1, img_mod2), (txt_mod1, txt_mod2) = mods
        img_q, img_k, img_v = self.img_attn.qkv_heads(_modulate(img, *img_mod1[:2]))
        txt_q, txt_k, txt_v = self.txt_attn.qkv_heads(_modulate(txt, *txt_mod1[:2]))
        q = apply_rope(jnp.concatenate([txt_q, img_q], axis=-3), pe)  # text first
        k = apply_rope(jnp.concatenate([txt_k, img_k], axis=-3), pe)
        v = jnp.concatenate([txt_v, img_v], axis=-3)
        out = attend(q, k, v)
        out = out.reshape(*out.shape[:-2], -1)
        n_txt = txt.shape[-2]
        txt_out, img_out = out[..., :n_txt, :], out[..., n_txt:, :]

        img = img + img_mod1[2] * self.img_attn.proj(img_out)
        img = img + img_mod2[2] * self.img_mlp(_modulate(img, *img_mod2[:2]))
        txt = txt + txt_mod1[2] * self.txt_attn.proj(txt_out)
        txt = txt + txt_mod2[2] * self.txt_mlp(_modulate(txt, *txt_mod2[:2]))
        return img, txt


class SingleStreamBlock(nnx.Module):
    """Parallel attention and MLP on ``x = [txt; img]`` with fused in/out projections."""

    def __init__(self, config: FluxConfig, *, rngs: nnx.Rngs, param_dtype=None):
        h, mlp = config.hidden_size, config.mlp_hidden_dim
        self.hidden_size = h
        self.num_heads = config.num_heads
        self.linear1 = Linear(h, 3 * h + mlp, rngs=rngs, param_dtype=param_dtype)
        self.linear2 = Linear(h + mlp, h, rngs=rngs, param_dtype=param_dtype)
        self.norm = QKNorm(config.head_dim, param_dtype=param_dtype)
        self.modulation = Modulation(h, double=False, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x: Array, mod: tuple[Mod], pe, attend: Attention) -> Array:
        ((shift, scale, gate),) = mod
        qkv_mlp = self.linear1(_modulate(x, shift, scale))
        qkv, mlp = qkv_mlp[..., : 3 * self.hidden_size], qkv_mlp[..., 3 * self.hidden_size :]
        q, k, v = _split_heads(qkv, self.num_heads)
        q, k = self.norm(q, k, v)
        out = attend(apply_rope(q, pe), apply_rope(k, pe), v)
        out = out.reshape(*out.shape[:-2], -1)
        return x + gate * self.linear2(jnp.concatenate([out, _gelu_tanh(mlp)], axis=-1))


class LastLayer(nnx.Module):
    """``linear((1 + scale)·LN(x) + shift)`` with ``(shift, scale)`` from ``vec`` (BFL order)."""

    def __init__(self, hidden_size: int, out_channels: int, *, rngs: nnx.Rngs, param_dtype=None):
        kw = dict(rngs=rngs, param_dtype=param_dtype)
        self.adaLN_modulation = nnx.Sequential(
            jax.nn.silu, Linear(hidden_size, 2 * hidden_size, **kw)
        )
        self.linear = Linear(hidden_size, out_channels, **kw)

    def modulation(self, vec: Array) -> tuple[Array, Array]:
        """``(shift, scale)`` of the final adaptive LayerNorm from the conditioning vector
        ``vec`` (BFL's order: shift first), each broadcast over the tokens."""
        shift, scale = jnp.split(self.adaLN_modulation(vec)[..., None, :], 2, axis=-1)
        return shift, scale

    def __call__(self, x: Array, mod: tuple[Array, Array]) -> Array:
        return self.linear(_modulate(x, *mod))


def timestep_embedding(t: Array, dim: int = TIME_EMBED_DIM, max_period: float = 10_000.0) -> Array:
    """Sinusoidal embedding of (already ×1000) times ``t``: ``[cos, sin]``, **cos first**.

    ``dim/2`` frequencies ``exp(−ln(max_period)·j/(dim/2))``; float32 throughout.
    """
    half = dim // 2
    freqs = np.exp((-math.log(max_period) * np.arange(half, dtype=np.float32)) / half)
    args = jnp.asarray(t, jnp.float32)[..., None] * jnp.asarray(freqs, jnp.float32)
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def rope(ids: Array, axes_dim: tuple[int, ...], theta: int) -> tuple[Array, Array]:
    """RoPE tables ``(cos, sin)``, each ``(..., L, head_dim/2)``, float32, from ``(..., L, 3)`` ids.

    Axis ``a`` contributes ``axes_dim[a]/2`` angles ``pos_a · θ^(−2j/axes_dim[a])``; the axes are
    concatenated in order 0, 1, 2. The frequencies are computed in float64 as in BFL.
    """
    omegas = np.concatenate(
        [1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d) for d in axes_dim]
    )
    axis_of = np.repeat(np.arange(len(axes_dim)), [d // 2 for d in axes_dim])
    pos = jnp.asarray(ids, jnp.float32)[..., axis_of]  # (..., L, head_dim/2)
    angles = pos * jnp.asarray(omegas, jnp.float32)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, pe: tuple[Array, Array]) -> Array:
    """Rotate the **interleaved** pairs ``(x_{2i}, x_{2i+1})`` of ``x: (..., L, H, D)``, in f32."""
    cos, sin = (p[..., None, :] for p in pe)  # broadcast over heads
    xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = jnp.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)


def attention(q: Array, k: Array, v: Array) -> Array:
    """Plain softmax attention, scale ``1/√D``, no mask; ``(B, L, H, D)`` in and out.

    The reference path's attention: scores and softmax in float32, written out in XLA ops.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(scores * scale, axis=-1).astype(v.dtype)
    return jnp.einsum("...hqk,...khd->...qhd", weights, v)


def _attention_forward(q: Array, k: Array, v: Array) -> tuple[Array, Array]:
    """Softmax attention and its row log-sum-exp ``(B, H, Lq)``; heads moved next to batch."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    qt, kt, vt = (jnp.swapaxes(a, -2, -3) for a in (q, k, v))  # (..., H, L, D)
    s = jnp.einsum("...qd,...kd->...qk", qt, kt, preferred_element_type=jnp.float32) * scale
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.exp(s - m)
    total = jnp.sum(p, axis=-1, keepdims=True)
    out = jnp.einsum(
        "...qk,...kd->...qd", p.astype(v.dtype), vt, preferred_element_type=jnp.float32
    )
    out = jnp.swapaxes((out / total).astype(v.dtype), -2, -3)
    return out, (m + jnp.log(total))[..., 0]


@jax.custom_vjp
def recompute_attention(q: Array, k: Array, v: Array) -> Array:
    """:func:`attention` whose backward pass recomputes the probabilities (flash-style).

    The forward keeps only ``q, k, v``, the output and the rows' log-sum-exp for the backward,
    never the ``L × L`` probabilities: under ``scan`` over blocks this saves writing and reading
    ``B·H·L²`` floats per block, for one more ``QKᵀ`` and ``exp`` in the backward. The same
    values as :func:`attention` (float32 scores and softmax).
    """
    return _attention_forward(q, k, v)[0]


def _recompute_fwd(q, k, v):
    out, lse = _attention_forward(q, k, v)
    return out, (q, k, v, out, lse)


def _recompute_bwd(residuals, d_out):
    q, k, v, out, lse = residuals
    scale = 1.0 / math.sqrt(q.shape[-1])
    qt, kt, vt, ot, dot = (
        jnp.swapaxes(a, -2, -3).astype(jnp.float32) for a in (q, k, v, out, d_out)
    )
    p = jnp.exp(jnp.einsum("...qd,...kd->...qk", qt, kt) * scale - lse[..., None])
    dv = jnp.einsum("...qk,...qd->...kd", p, dot)
    dp = jnp.einsum("...qd,...kd->...qk", dot, vt)
    ds = p * (dp - jnp.sum(dot * ot, axis=-1, keepdims=True)) * scale
    dq = jnp.einsum("...qk,...kd->...qd", ds, kt)
    dk = jnp.einsum("...qk,...qd->...kd", ds, qt)
    return tuple(jnp.swapaxes(g, -2, -3).astype(x.dtype) for g, x in ((dq, q), (dk, k), (dv, v)))


recompute_attention.defvjp(_recompute_fwd, _recompute_bwd)
