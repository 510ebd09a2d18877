"""Loading and saving :class:`~psijax.models.flux.model.Flux` weights, without torch.

A checkpoint is a flat dict of torch-layout tensors in either layout: BFL's single file
(``flux1-dev.safetensors``, optionally with a ``model.diffusion_model.`` prefix) or diffusers'
sharded ``transformer/`` folder. :func:`load_weights` reads it (:mod:`.checkpoint`), strips the
prefix, detects the layout and converts diffusers names to BFL's (:mod:`.convert`), infers the
:class:`FluxConfig` from the shapes unless one is given, checks that the tensors are exactly the
model's — a missing, unexpected or mis-shaped tensor is a ``ValueError`` naming the key, never a
silent random init — and places them in a model built abstractly (no random init of 12 B
parameters). bfloat16 checkpoints load as bfloat16.

The model's parameter ``double_blocks.img_attn.qkv.kernel`` (stacked, ``(depth, in, out)``) is
BFL's ``double_blocks.{i}.img_attn.qkv.weight`` (``(out, in)``) transposed, for each ``i``;
``layers.k`` of an ``nnx.Sequential`` is BFL's ``.k``.
"""

import functools
import os
import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from psijax.models._params import check_finite as _check_finite
from psijax.models._params import check_keys as _check_keys
from psijax.models._params import value as _value
from psijax.models.flux import checkpoint, convert
from psijax.models.flux.config import FluxConfig
from psijax.models.flux.model import Flux

__all__ = [
    "bfl_keys",
    "to_bfl",
    "from_tensors",
    "infer_config",
    "load_weights",
    "save_weights",
]

_STACKED = ("double_blocks", "single_blocks")
_LEAF = {"kernel": "weight", "bias": "bias", "scale": "scale"}


def _bfl_name(path) -> tuple[str, str, bool]:
    """``(prefix, suffix, stacked)``: BFL key = ``prefix + {i}. + suffix`` for stacked blocks."""
    parts = [str(p) for p in path if p != "layers"]
    parts[-1] = _LEAF[parts[-1]]
    if parts[0] in _STACKED:
        return parts[0] + ".", ".".join(parts[1:]), True
    return "", ".".join(parts), False


def _torch_shape(shape, path) -> tuple[int, ...]:
    # A kernel (…, in, out) is torch's weight (out, in).
    return tuple(shape[:-2]) + (shape[-1], shape[-2]) if path[-1] == "kernel" else tuple(shape)


def _flat_params(model_or_state):
    state = (
        model_or_state
        if isinstance(model_or_state, nnx.State)
        else nnx.state(model_or_state, nnx.Param)
    )
    return nnx.to_flat_state(state)


@functools.lru_cache(maxsize=8)
def _abstract(config: FluxConfig):
    """``(graphdef, flat parameter state)`` of a model with ``config``, shapes only (cached)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Flux(config, rngs=nnx.Rngs(0))))
    return graphdef, tuple(nnx.to_flat_state(state))


def bfl_keys(config: FluxConfig) -> dict[str, tuple[int, ...]]:
    """The BFL state-dict keys of a model with ``config`` and their torch shapes."""
    out = {}
    for path, var in _abstract(config)[1]:
        prefix, suffix, stacked = _bfl_name(path)
        shape = _torch_shape(_value(var).shape, path)
        if stacked:
            for i in range(shape[0]):
                out[f"{prefix}{i}.{suffix}"] = shape[1:]
        else:
            out[suffix] = shape
    return out


def to_bfl(model: Flux) -> dict[str, np.ndarray]:
    """The parameters as a BFL-layout state dict: numpy arrays, torch layout, same dtypes."""
    out = {}
    for path, var in _flat_params(model):
        prefix, suffix, stacked = _bfl_name(path)
        value = np.asarray(_value(var))  # rearranged on the host: no compilation per shape
        if path[-1] == "kernel":
            value = np.swapaxes(value, -1, -2)
        if stacked:
            for i in range(value.shape[0]):
                out[f"{prefix}{i}.{suffix}"] = np.ascontiguousarray(value[i])
        else:
            out[suffix] = np.ascontiguousarray(value)
    return out


def _count_blocks(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def infer_config(tensors: Mapping[str, object], axes_dim=None) -> FluxConfig:
    """The :class:`FluxConfig` of a BFL-layout state dict, read off its shapes.

    RoPE's ``axes_dim`` is not stored in a checkpoint: it is ``axes_dim`` when given, FLUX's
    ``(16, 56, 56)`` for head dim 128, and otherwise a ``ValueError`` asking for it.
    """

    def shape(key):
        if key not in tensors:
            raise ValueError(f"Cannot infer the FLUX config: the checkpoint has no `{key}`.")
        return tuple(np.shape(tensors[key]))

    hidden, in_channels = shape("img_in.weight")
    depth = _count_blocks(tensors, "double_blocks")
    depth_single = _count_blocks(tensors, "single_blocks")
    if depth:
        head_dim = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
        mlp_hidden = shape("double_blocks.0.img_mlp.0.weight")[0]
    elif depth_single:
        head_dim = shape("single_blocks.0.norm.query_norm.scale")[0]
        mlp_hidden = shape("single_blocks.0.linear1.weight")[0] - 3 * hidden
    else:
        raise ValueError("Cannot infer the FLUX config of a checkpoint without blocks.")
    if axes_dim is None:
        if head_dim != 128:
            raise ValueError(
                f"Cannot infer RoPE `axes_dim` for head dim {head_dim}: pass `axes_dim` "
                "(or a `config`)."
            )
        axes_dim = (16, 56, 56)
    return FluxConfig(
        in_channels=in_channels,
        out_channels=shape("final_layer.linear.weight")[0],
        vec_in_dim=shape("vector_in.in_layer.weight")[1],
        context_in_dim=shape("txt_in.weight")[1],
        hidden_size=hidden,
        mlp_ratio=mlp_hidden / hidden,
        num_heads=hidden // head_dim,
        depth=depth,
        depth_single_blocks=depth_single,
        axes_dim=tuple(axes_dim),
        qkv_bias=(not depth) or "double_blocks.0.img_attn.qkv.bias" in tensors,
        guidance_embed="guidance_in.in_layer.weight" in tensors,
    )


def _check_tensors(tensors: Mapping[str, object], config: FluxConfig) -> None:
    _check_keys(tensors, bfl_keys(config), str(config))


def from_tensors(
    tensors: Mapping[str, object],
    config: FluxConfig | None = None,
    *,
    axes_dim=None,
    dtype=None,
    check_finite: bool = True,
) -> Flux:
    """A :class:`Flux` holding ``tensors`` (either layout, optionally prefixed), checked exactly.

    ``config`` defaults to :func:`infer_config`; ``dtype`` casts the parameters (default: keep
    the checkpoint's dtypes). Every tensor must have its key's shape and a floating dtype (an
    integer tensor would run the model on truncated weights), and, unless ``check_finite`` is
    false, hold no NaN or inf; a ``ValueError`` names the offending keys.
    """
    tensors = convert.convert(tensors, convert.BFL)
    if config is None:
        config = infer_config(tensors, axes_dim)
    elif not isinstance(config, FluxConfig):
        raise TypeError(f"`config` must be a FluxConfig or None, got {type(config).__name__}.")
    elif axes_dim is not None and tuple(axes_dim) != config.axes_dim:
        raise ValueError(f"`axes_dim` {axes_dim!r} contradicts `config.axes_dim` {config.axes_dim}")
    _check_tensors(tensors, config)
    if check_finite:
        _check_finite(tensors, bfl_keys(config))

    graphdef, flat = _abstract(config)
    leaves = []
    for path, var in flat:
        prefix, suffix, stacked = _bfl_name(path)
        if stacked:
            parts = [tensors[f"{prefix}{i}.{suffix}"] for i in range(_value(var).shape[0])]
        else:
            parts = [tensors[suffix]]
        # numpy stays on the host until the end (no per-shape dispatch); jax stays on device.
        xp = np if all(isinstance(p, np.ndarray) for p in parts) else jnp
        value = xp.stack(parts) if stacked else xp.asarray(parts[0])
        if path[-1] == "kernel":
            value = xp.swapaxes(value, -1, -2)
        value = jnp.asarray(value, dtype)
        leaves.append((path, var.replace(value=value)))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def load_weights(
    path: str | os.PathLike,
    config: FluxConfig | None = None,
    *,
    axes_dim=None,
    dtype=None,
    check_finite: bool = True,
) -> Flux:
    """Load a FLUX checkpoint: a BFL ``.safetensors`` file or a diffusers (sharded) folder.

    Parameters
    ----------
    path
        A ``.safetensors`` file; a folder with one, or with shards and their
        ``*.safetensors.index.json``; or a diffusers pipeline folder (``transformer/``).
    config
        The architecture; inferred from the shapes when ``None`` (see
        :func:`infer_config`).
    axes_dim
        RoPE widths when inferring a config whose head dim is not 128.
    dtype
        Cast the parameters (e.g. ``jnp.bfloat16``); default keeps the file's dtypes.
    check_finite
        Reject a tensor holding NaN or inf (default; one pass over the weights).

    Raises
    ------
    FileNotFoundError
        No such file, or a shard named in the index is missing.
    ValueError
        A corrupted file, an unknown layout, or tensors that do not match the
        model (each missing, unexpected, mis-shaped or non-floating key is named), or
        non-finite values (with ``check_finite``).
    """
    tensors = checkpoint.read_tensors(path, host=True)  # stacked on the host, moved once
    return from_tensors(tensors, config, axes_dim=axes_dim, dtype=dtype, check_finite=check_finite)


def save_weights(
    model: Flux,
    path: str | os.PathLike,
    *,
    layout: str = convert.BFL,
    max_shard_bytes: int | None = None,
) -> None:
    """Save ``model``'s parameters as safetensors in BFL's or diffusers' layout (no torch).

    ``path`` ending in ``.safetensors`` is one file; otherwise a folder of shards of at most
    ``max_shard_bytes`` with an index json. :func:`load_weights` reads either back.
    """
    tensors = convert.convert(to_bfl(model), layout)  # checks `layout`
    checkpoint.write_tensors(tensors, path, max_shard_bytes=max_shard_bytes)
