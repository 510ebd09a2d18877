"""The FLUX.1 transformer (:class:`Flux`) with a reference and a fast execution path.

Parameters. The ``depth`` double blocks (and the single blocks) are stored **stacked**: one
:class:`~psijax.models.flux.layers.DoubleStreamBlock` whose every parameter has a leading
block axis. BFL's ``double_blocks.{i}.<name>`` is entry ``i`` of ``double_blocks.<name>``.

Two paths over the same parameters, chosen by :class:`FluxOptions`:

- ``path="reference"``: BFL's forward transcribed literally — a Python loop over the blocks,
  each computing its modulation from ``vec``, float32, softmax attention in XLA ops
  (:func:`~psijax.models.flux.layers.attention`). The oracle the fast path is tested against.
- ``path="fast"``: :meth:`Flux.prepare` computes everything that depends only on the time,
  guidance and text — ``vec``, the modulation of every block (one batched matmul per block
  kind), the projected text and the RoPE table — and :meth:`Flux.apply` scans over the stacked
  blocks (compile time flat in depth), optionally rematerializing each block in the backward
  pass, in ``dtype`` (bfloat16 for speed; the embedding, RoPE and norm reductions stay
  float32), with an attention whose backward recomputes the probabilities from the saved
  log-sum-exp, or ``jax.nn.dot_product_attention`` (``attention="xla"``, or ``"cudnn"``: flash
  attention on NVIDIA GPUs, bfloat16/float16 only); the default ``"auto"`` takes cuDNN where
  it applies and the recomputing attention elsewhere.

Under ``vmap`` over particles at a shared time (how the samplers call a velocity field), the
prepared quantities are not batched, so they are computed once per time for all particles.
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from psijax._checks import concrete_value
from psijax.models.flux.config import FluxConfig
from psijax.models.flux.layers import (
    TIME_EMBED_DIM,
    DoubleStreamBlock,
    LastLayer,
    Linear,
    MLPEmbedder,
    SingleStreamBlock,
    attention,
    recompute_attention,
    rope,
    timestep_embedding,
)

__all__ = ["Flux", "FluxOptions", "Prepared", "scale_time"]

_PATHS = ("fast", "reference")
_ATTENTION = ("auto", "xla", "recompute", "cudnn")
TIME_FACTOR = 1000.0


@dataclasses.dataclass(frozen=True)
class FluxOptions:
    """How to execute a :class:`Flux` forward pass (hashable: a static argument).

    Attributes
    ----------
    path
        ``"fast"`` (prepared conditioning, scanned blocks) or ``"reference"`` (unrolled,
        float32, plain XLA attention; for checking).
    dtype
        Compute dtype of the activations and matmuls on the fast path (``jnp.float32``
        or ``jnp.bfloat16``). The output is always float32.
    remat
        Rematerialize each block in the backward pass (fast path): memory of one block's
        activations instead of all of them, for one extra forward.
    attention
        Fast path only. ``"xla"`` and ``"cudnn"``: ``jax.nn.dot_product_attention``
        with that implementation (cuDNN: flash attention, NVIDIA GPU, 16-bit ``dtype``);
        ``"recompute"``: :func:`~psijax.models.flux.layers.recompute_attention`, XLA ops
        whose backward recomputes the ``L × L`` probabilities from the saved log-sum-exp
        instead of storing them. ``"auto"`` (default): ``"cudnn"`` for a 16-bit ``dtype`` on
        an NVIDIA GPU, else ``"recompute"``; decided when the call is traced. The choice rests
        on ``benchmarks/results/flux_forward.md`` (CPU) and ``benchmarks/results/flux_gpu.md``
        (H100), which measure each option against diffusers.
    bf16_timesteps
        Reproduce the official bf16 pipelines, which round ``t`` and then
        ``1000·t`` (and the guidance likewise) to bfloat16 before embedding them.
    """

    path: str = "fast"
    dtype: Any = jnp.float32
    remat: bool = False
    attention: str = "auto"
    bf16_timesteps: bool = False

    def __post_init__(self):
        if self.path not in _PATHS:
            raise ValueError(f"`path` must be one of {_PATHS}, got {self.path!r}.")
        if self.attention not in _ATTENTION:
            raise ValueError(f"`attention` must be one of {_ATTENTION}, got {self.attention!r}.")
        dtype = jnp.dtype(self.dtype)
        if dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
            raise ValueError(f"`dtype` must be float32, bfloat16 or float16, got {dtype}.")
        object.__setattr__(self, "dtype", dtype)
        if self.path == "reference" and (dtype != jnp.float32 or self.remat):
            raise ValueError(
                "The reference path is float32 without remat: use `path='fast'` for "
                f"`dtype={dtype}`, `remat={self.remat}`."
            )
        if self.attention == "cudnn" and (self.path == "reference" or dtype == jnp.float32):
            raise ValueError(
                "`attention='cudnn'` needs `path='fast'` and a 16-bit `dtype` (bfloat16/float16)."
            )


class Prepared(NamedTuple):
    """Everything a forward pass needs that does not depend on the image tokens.

    ``vec`` ``(B, hidden)``; ``txt`` the projected text ``(B, Lt, hidden)``; ``pe`` the RoPE
    tables ``(cos, sin)`` for ``[txt; img]``; ``double_mods``/``single_mods`` the modulations of
    the stacked blocks (leading block axis); ``final_mod`` the last layer's ``(shift, scale)``.
    """

    vec: Array
    txt: Array
    pe: tuple[Array, Array]
    double_mods: Any
    single_mods: Any
    final_mod: tuple[Array, Array]


def scale_time(t: Array, bf16: bool = False) -> Array:
    """``1000·t`` in float32; with ``bf16=True`` the official pipelines' bfloat16 rounding."""
    t = jnp.asarray(t, jnp.float32)
    if bf16:
        b = t.astype(jnp.bfloat16)
        return (b * jnp.asarray(TIME_FACTOR, jnp.bfloat16)).astype(jnp.float32)
    return t * TIME_FACTOR


def _stacked(make, n: int):
    """``n`` modules built by ``make()``, as one module whose parameters have a leading axis."""
    if n == 0:
        return None
    graphdef, *_ = nnx.split(make())  # the structure; its values are discarded
    states = [nnx.split(make())[1] for _ in range(n)]
    return nnx.merge(graphdef, jax.tree.map(_stack, *states))


def _stack(*arrays) -> Array:
    # On the host when concrete: no compilation per shape when building a model eagerly.
    values = [concrete_value(a) for a in arrays]
    if any(v is None for v in values):
        return jnp.stack(arrays)
    return jnp.asarray(np.stack(values), arrays[0].dtype)


def _block(stacked, i: int):
    graphdef, state = nnx.split(stacked)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))


def _per_block(stacked, fn):
    """``fn(block)`` for every block of a stacked module, vmapped over the block axis."""
    graphdef, state = nnx.split(stacked)
    return jax.vmap(lambda s: fn(nnx.merge(graphdef, s)))(state)


class Flux(nnx.Module):
    """The FLUX.1 MMDiT. Call it like BFL's ``Flux.forward``; see the module docstring.

    Parameters
    ----------
    config
        The architecture.
    rngs
        Initialisation randomness (weights ~ N(0, 1/fan_in), zero biases, unit norms);
        a model meant for loading is best built abstractly, as :func:`load_weights` does.
    param_dtype
        Storage dtype of the parameters (float32 or bfloat16).
    """

    def __init__(self, config: FluxConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        if not isinstance(config, FluxConfig):
            raise TypeError(f"`config` must be a FluxConfig, got {type(config).__name__}.")
        self.config = config
        h = config.hidden_size
        kw = dict(rngs=rngs, param_dtype=param_dtype)
        self.img_in = Linear(config.in_channels, h, **kw)
        self.time_in = MLPEmbedder(TIME_EMBED_DIM, h, **kw)
        self.vector_in = MLPEmbedder(config.vec_in_dim, h, **kw)
        self.guidance_in = MLPEmbedder(TIME_EMBED_DIM, h, **kw) if config.guidance_embed else None
        self.txt_in = Linear(config.context_in_dim, h, **kw)
        self.double_blocks = _stacked(lambda: DoubleStreamBlock(config, **kw), config.depth)
        self.single_blocks = _stacked(
            lambda: SingleStreamBlock(config, **kw), config.depth_single_blocks
        )
        self.final_layer = LastLayer(h, config.out_channels, **kw)

    # ----------------------------------------------------------------------------- checks
    def _check_inputs(self, img, img_ids, txt, txt_ids, y):
        c = self.config
        expect = {
            "img": (img, c.in_channels, "in_channels"),
            "txt": (txt, c.context_in_dim, "context_in_dim"),
            "y": (y, c.vec_in_dim, "vec_in_dim"),
        }
        for name, (value, width, field) in expect.items():
            if value is not None and (jnp.ndim(value) < 1 or jnp.shape(value)[-1] != width):
                raise ValueError(
                    f"`{name}` must have last axis {field} = {width}, got shape {jnp.shape(value)}."
                )
        for name, ids, tokens in (("img_ids", img_ids, img), ("txt_ids", txt_ids, txt)):
            if ids is None:
                continue
            shape = jnp.shape(ids)
            if len(shape) not in (2, 3) or shape[-1] != 3:
                raise ValueError(f"`{name}` must have shape (L, 3) or (B, L, 3), got {shape}.")
            if tokens is not None and jnp.ndim(tokens) >= 2 and shape[-2] != tokens.shape[-2]:
                raise ValueError(
                    f"`{name}` has {shape[-2]} rows but there are {tokens.shape[-2]} tokens."
                )

    # ----------------------------------------------------------------------------- pieces
    def _vec(self, timesteps, y, guidance, options: FluxOptions) -> Array:
        dtype = options.dtype
        t = scale_time(timesteps, options.bf16_timesteps)
        vec = self.time_in(timestep_embedding(t).astype(dtype))
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError(
                    "This model embeds guidance (guidance_embed=True): pass `guidance`."
                )
            g = scale_time(guidance, options.bf16_timesteps)
            vec = vec + self.guidance_in(timestep_embedding(g).astype(dtype))
        elif guidance is not None:
            raise ValueError("This model has no guidance embedding: pass `guidance=None`.")
        return vec + self.vector_in(jnp.asarray(y).astype(dtype))

    def prepare(
        self, txt, txt_ids, img_ids, timesteps, y, guidance=None, *, options=FluxOptions()
    ) -> Prepared:
        """The image-independent part of a forward pass (see :class:`Prepared`).

        Shapes as in :meth:`__call__`; ``timesteps``, ``y``, ``guidance`` and ``txt`` may have
        batch 1 (or be unbatched for the times) and are broadcast against the image batch.
        """
        self._check_inputs(None, img_ids, txt, txt_ids, y)
        vec = self._vec(timesteps, y, guidance, options)
        ids = jnp.concatenate(_batch_ids(txt_ids, img_ids), axis=-2)
        pe = rope(ids, self.config.axes_dim, self.config.theta)
        return Prepared(
            vec=vec,
            txt=self.txt_in(jnp.asarray(txt).astype(options.dtype)),
            pe=pe,
            double_mods=_maybe(
                self.double_blocks, lambda b: _per_block(b, lambda m: m.modulation(vec))
            ),
            single_mods=_maybe(
                self.single_blocks, lambda b: _per_block(b, lambda m: m.modulation(vec))
            ),
            final_mod=self.final_layer.modulation(vec),
        )

    def apply(self, img: Array, prepared: Prepared, *, options=FluxOptions()) -> Array:
        """The image-dependent part (fast path): blocks scanned, float32 velocity out."""
        if options.path != "fast":
            raise ValueError("`apply` is the fast path; call the model for the reference path.")
        self._check_inputs(img, None, None, None, None)
        img = self.img_in(jnp.asarray(img).astype(options.dtype))
        txt = jnp.broadcast_to(prepared.txt, img.shape[:-2] + prepared.txt.shape[-2:])
        pe = prepared.pe
        attend = _fast_attention(options.attention, options.dtype)

        def scan(stacked, body, carry, mods):
            graphdef, state = nnx.split(stacked)

            def step(carry, xs):
                block_state, mod = xs
                return body(nnx.merge(graphdef, block_state), carry, mod), None

            if options.remat:
                step = jax.checkpoint(step)
            return jax.lax.scan(step, carry, (state, mods))[0]

        if self.double_blocks is not None:
            img, txt = scan(
                self.double_blocks,
                lambda block, c, mod: block(*c, mod, pe, attend),
                (img, txt),
                prepared.double_mods,
            )
        x = jnp.concatenate([txt, img], axis=-2)
        if self.single_blocks is not None:
            x = scan(
                self.single_blocks,
                lambda block, c, mod: block(c, mod, pe, attend),
                x,
                prepared.single_mods,
            )
        out = self.final_layer(x[..., txt.shape[-2] :, :], prepared.final_mod)
        return out.astype(jnp.float32)

    def __call__(
        self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None, *, options=FluxOptions()
    ) -> Array:
        """The velocity ``v = ε − x0`` of packed image tokens.

        Parameters
        ----------
        img
            Packed latents ``(B, L, in_channels)``.
        img_ids
            ``(L, 3)`` or ``(B, L, 3)`` positions ``[0, row, col]``.
        txt
            Text hidden states ``(B, Lt, context_in_dim)``.
        txt_ids
            ``(Lt, 3)`` or ``(B, Lt, 3)`` (zeros for FLUX).
        timesteps
            ``(B,)`` times in ``[0, 1]`` (not ×1000).
        y
            Pooled text vectors ``(B, vec_in_dim)``.
        guidance
            ``(B,)`` guidance values for a ``guidance_embed`` model, else ``None``.
        options
            :class:`FluxOptions`.

        Returns
        -------
        ``(B, L, out_channels)`` float32.
        """
        self._check_inputs(img, img_ids, txt, txt_ids, y)
        if options.path == "fast":
            prepared = self.prepare(txt, txt_ids, img_ids, timesteps, y, guidance, options=options)
            return self.apply(img, prepared, options=options)
        return self._reference(img, img_ids, txt, txt_ids, timesteps, y, guidance, options)

    def _reference(self, img, img_ids, txt, txt_ids, timesteps, y, guidance, options):
        f32 = jnp.float32
        vec = self._vec(timesteps, y, guidance, options)
        img = self.img_in(jnp.asarray(img, f32))
        txt = self.txt_in(jnp.asarray(txt, f32))
        txt_ids, img_ids = _batch_ids(txt_ids, img_ids)
        pe = rope(
            jnp.concatenate([txt_ids, img_ids], axis=-2), self.config.axes_dim, self.config.theta
        )
        for i in range(self.config.depth):
            block = _block(self.double_blocks, i)
            img, txt = block(img, txt, block.modulation(vec), pe, attention)
        x = jnp.concatenate([txt, img], axis=-2)
        for i in range(self.config.depth_single_blocks):
            block = _block(self.single_blocks, i)
            x = block(x, block.modulation(vec), pe, attention)
        x = x[..., txt.shape[-2] :, :]
        return self.final_layer(x, self.final_layer.modulation(vec)).astype(f32)


def _maybe(stacked, fn):
    return None if stacked is None else fn(stacked)


def _batch_ids(txt_ids, img_ids):
    """Ids as ``(B or 1, L, 3)`` float32 so that text and image ids concatenate."""
    out = []
    for ids in (txt_ids, img_ids):
        ids = jnp.asarray(ids, jnp.float32)
        out.append(ids[None] if ids.ndim == 2 else ids)
    batch = max(out[0].shape[0], out[1].shape[0])
    return [jnp.broadcast_to(a, (batch,) + a.shape[1:]) for a in out]


def _fast_attention(implementation: str, dtype):
    if implementation == "auto":
        device = jax.devices()[0]
        nvidia = device.platform == "gpu" and "nvidia" in device.device_kind.lower()
        implementation = "cudnn" if nvidia and jnp.dtype(dtype).itemsize == 2 else "recompute"
    if implementation == "recompute":
        return recompute_attention

    def attend(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, implementation=implementation)

    return attend
