"""Convert FLUX transformer checkpoints between the BFL and the diffusers tensor layouts.

Two layouts of the same parameters are in circulation:

- **BFL** (Black Forest Labs' reference code, ``flux1-dev.safetensors``; 780 tensors for dev):
  ``img_in``, ``time_in.in_layer``, ``double_blocks.{i}.img_attn.qkv``,
  ``single_blocks.{i}.linear1``, ``final_layer.adaLN_modulation.1``, ... Attention
  projections are **fused**: ``qkv`` stacks the q, k and v rows, and a single block's
  ``linear1`` stacks q, k, v and the MLP input rows. The final modulation's rows are
  ``(shift; scale)``. The Flax port names its modules after these keys.
- **diffusers** (``FluxTransformer2DModel``, sharded under ``transformer/``; 1160 tensors for
  dev): ``x_embedder``, ``time_text_embed.timestep_embedder.linear_1``,
  ``transformer_blocks.{i}.attn.to_q`` / ``to_k`` / ``to_v``, ``single_transformer_blocks.{i}
  .proj_mlp``, ``norm_out.linear``, ... with separate q, k, v (and MLP) projections and the
  final modulation's rows in the order ``(scale; shift)``.

Both act on flat ``{name: array}`` dicts in **torch layout** (a Linear weight is ``(out, in)``).
The conversion is a table of renames plus three structural rules (fuse/split the attention
projections, fuse/split a single block's ``linear1``, swap the halves of the final modulation);
nothing depends on the hidden size, the number of heads or the number of blocks, so tiny test
models convert as well as the 12 B ones. Values are moved, never recomputed: the round trip is
bit-exact and keeps each array's dtype (bfloat16 included) and kind (numpy stays numpy, JAX
stays JAX). Every input tensor must be used; unexpected or incomplete inputs raise
``ValueError`` naming the keys.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BFL",
    "DIFFUSERS",
    "PREFIX",
    "strip_prefix",
    "detect_layout",
    "diffusers_to_bfl",
    "bfl_to_diffusers",
    "convert",
]

BFL = "bfl"
DIFFUSERS = "diffusers"

#: Prefix of every key in checkpoints saved from BFL/ComfyUI-style wrappers.
PREFIX = "model.diffusion_model."

# ----------------------------------------------------------------------------------------------
# The table: (BFL name, diffusers name(s), kind), names relative to the block. Kinds:
#   "linear"  a Linear renamed (``.weight`` and ``.bias``);    "param"   one tensor renamed;
#   "swap"    a Linear whose halves of rows are swapped: (shift; scale) <-> (scale; shift);
#   "qkv"     a BFL Linear whose rows stack the three diffusers Linears (q; k; v);
#   "linear1" a BFL Linear with rows (q; k; v; mlp), h rows each for q, k, v where h is the row
#             count of the block's ``linear2.weight``.
# ----------------------------------------------------------------------------------------------
_TOP = (
    ("img_in", "x_embedder", "linear"),
    ("txt_in", "context_embedder", "linear"),
    ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1", "linear"),
    ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2", "linear"),
    ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1", "linear"),
    ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2", "linear"),
    ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1", "linear"),
    ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2", "linear"),
    ("final_layer.adaLN_modulation.1", "norm_out.linear", "swap"),
    ("final_layer.linear", "proj_out", "linear"),
)
_DOUBLE = (
    ("img_mod.lin", "norm1.linear", "linear"),
    ("txt_mod.lin", "norm1_context.linear", "linear"),
    ("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v"), "qkv"),
    ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "qkv"),
    ("img_attn.norm.query_norm.scale", "attn.norm_q.weight", "param"),
    ("img_attn.norm.key_norm.scale", "attn.norm_k.weight", "param"),
    ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight", "param"),
    ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight", "param"),
    ("img_attn.proj", "attn.to_out.0", "linear"),
    ("txt_attn.proj", "attn.to_add_out", "linear"),
    ("img_mlp.0", "ff.net.0.proj", "linear"),
    ("img_mlp.2", "ff.net.2", "linear"),
    ("txt_mlp.0", "ff_context.net.0.proj", "linear"),
    ("txt_mlp.2", "ff_context.net.2", "linear"),
)
_SINGLE = (
    ("modulation.lin", "norm.linear", "linear"),
    ("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear1"),
    ("norm.query_norm.scale", "attn.norm_q.weight", "param"),
    ("norm.key_norm.scale", "attn.norm_k.weight", "param"),
    ("linear2", "proj_out", "linear"),
)
# Block prefixes (BFL, diffusers).
_DOUBLE_PREFIX = ("double_blocks", "transformer_blocks")
_SINGLE_PREFIX = ("single_blocks", "single_transformer_blocks")


class _Rule(NamedTuple):
    """One BFL tensor and the diffusers tensor(s) it corresponds to."""

    bfl: str
    diffusers: tuple[str, ...]
    kind: str  # "rename" | "swap" | "qkv" | "linear1"
    hidden_from: str = ""  # for "linear1": the BFL key whose row count is h


def _rules(num_double: int, num_single: int) -> list[_Rule]:
    """The table expanded to concrete tensor names for the given numbers of blocks."""
    scopes = [("", "", _TOP)]
    scopes += [
        (f"{_DOUBLE_PREFIX[0]}.{i}.", f"{_DOUBLE_PREFIX[1]}.{i}.", _DOUBLE)
        for i in range(num_double)
    ]
    scopes += [
        (f"{_SINGLE_PREFIX[0]}.{i}.", f"{_SINGLE_PREFIX[1]}.{i}.", _SINGLE)
        for i in range(num_single)
    ]
    rules = []
    for bfl_scope, diff_scope, table in scopes:
        for bfl, diff, kind in table:
            diff = (diff,) if isinstance(diff, str) else diff
            if kind == "param":
                rules.append(_Rule(bfl_scope + bfl, (diff_scope + diff[0],), "rename"))
                continue
            hidden_from = f"{bfl_scope}linear2.weight" if kind == "linear1" else ""
            kind = "rename" if kind == "linear" else kind
            for p in ("weight", "bias"):
                names = tuple(f"{diff_scope}{d}.{p}" for d in diff)
                rules.append(_Rule(f"{bfl_scope}{bfl}.{p}", names, kind, hidden_from))
    return rules


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def strip_prefix(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Remove :data:`PREFIX` (``"model.diffusion_model."``) from every key, if present.

    Parameters
    ----------
    tensors
        A flat ``{name: array}`` dict.

    Returns
    -------
    A new dict: keys stripped when every key carries the prefix, unchanged when none does.

    Raises
    ------
    ValueError
        When some keys carry the prefix and others do not.
    """
    tensors = _check_mapping(tensors)
    with_prefix = [k for k in tensors if k.startswith(PREFIX)]
    if not with_prefix:
        return dict(tensors)
    if len(with_prefix) < len(tensors):
        without = next(k for k in tensors if not k.startswith(PREFIX))
        raise ValueError(
            f"`tensors` mixes keys with and without the prefix {PREFIX!r}: e.g. "
            f"{with_prefix[0]!r} ({len(with_prefix)} keys) and {without!r} "
            f"({len(tensors) - len(with_prefix)} keys)."
        )
    return {k[len(PREFIX) :]: v for k, v in tensors.items()}


def detect_layout(keys: Iterable[str]) -> str:
    """Which layout a set of (prefix-free) tensor names is in: :data:`BFL` or :data:`DIFFUSERS`.

    BFL is recognised by ``double_blocks.0.img_attn.qkv.weight`` or, for a model without
    double blocks, ``img_in.weight``; diffusers by ``transformer_blocks.0.attn.to_q.weight`` or
    ``x_embedder.weight``.

    Parameters
    ----------
    keys
        Tensor names (a dict of tensors works too).

    Raises
    ------
    ValueError
        When neither layout's keys (or both layouts' keys) are present.
    """
    keys = set(keys)
    markers = {
        BFL: ("double_blocks.0.img_attn.qkv.weight", "img_in.weight"),
        DIFFUSERS: ("transformer_blocks.0.attn.to_q.weight", "x_embedder.weight"),
    }
    found = [layout for layout, names in markers.items() if any(k in keys for k in names)]
    if len(found) == 1:
        return found[0]
    looked_for = ", ".join(repr(k) for names in markers.values() for k in names)
    if found:
        raise ValueError(f"`keys` contain both BFL and diffusers FLUX tensors ({looked_for}).")
    hint = ""
    if any(str(k).startswith(PREFIX) for k in keys):
        hint = f" The keys carry the prefix {PREFIX!r}: call `strip_prefix` first."
    raise ValueError(
        f"Cannot tell the FLUX checkpoint layout: none of {looked_for} is present among the "
        f"{len(keys)} keys (e.g. {_preview(sorted(map(str, keys)))}).{hint}"
    )


def diffusers_to_bfl(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Rename and fuse a diffusers-layout FLUX state dict into the BFL layout.

    Parameters
    ----------
    tensors
        ``{name: array}`` in diffusers names and torch layout (numpy or JAX arrays).

    Returns
    -------
    ``{name: array}`` in BFL names, in the order of the conversion table. Fused tensors are
    row concatenations (``qkv = [q; k; v]``, ``linear1 = [q; k; v; mlp]``) and the final
    modulation's halves are swapped to ``(shift; scale)``; everything else is passed
    through untouched.

    Raises
    ------
    ValueError
        On tensors the table does not know, a fused group with a member missing,
        or members whose shapes or dtypes do not stack.
    """
    tensors = _check_mapping(tensors)
    rules = _rules(_depth(tensors, _DOUBLE_PREFIX[1]), _depth(tensors, _SINGLE_PREFIX[1]))
    _check_leftover(tensors, {k for rule in rules for k in rule.diffusers}, DIFFUSERS)
    out = {}
    for rule in rules:
        present = [k for k in rule.diffusers if k in tensors]
        if not present:
            continue
        missing = [k for k in rule.diffusers if k not in tensors]
        if missing:
            raise ValueError(
                f"Missing diffusers tensor {missing[0]!r}: it is needed with {present[0]!r} to "
                f"build the BFL tensor {rule.bfl!r}."
            )
        parts = [tensors[k] for k in rule.diffusers]
        if rule.kind == "rename":
            out[rule.bfl] = parts[0]
        elif rule.kind == "swap":
            out[rule.bfl] = _swap_halves(parts[0], rule.diffusers[0])
        else:
            out[rule.bfl] = _concat(parts, rule.diffusers)
    return out


def bfl_to_diffusers(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Rename and split a BFL-layout FLUX state dict into the diffusers layout.

    The exact inverse of :func:`diffusers_to_bfl`. A fused ``qkv`` splits into three equal row
    blocks; a single block's ``linear1`` splits into ``h, h, h`` rows and the rest, where ``h``
    is the row count of that block's ``linear2.weight``.

    Parameters
    ----------
    tensors
        ``{name: array}`` in BFL names and torch layout (numpy or JAX arrays).

    Returns
    -------
    ``{name: array}`` in diffusers names, in the order of the conversion table.

    Raises
    ------
    ValueError
        On tensors the table does not know, a missing ``linear2.weight`` needed to
        split ``linear1``, or row counts that do not split.
    """
    tensors = _check_mapping(tensors)
    rules = _rules(_depth(tensors, _DOUBLE_PREFIX[0]), _depth(tensors, _SINGLE_PREFIX[0]))
    _check_leftover(tensors, {rule.bfl for rule in rules}, BFL)
    out = {}
    for rule in rules:
        if rule.bfl not in tensors:
            continue
        x = tensors[rule.bfl]
        if rule.kind == "rename":
            out[rule.diffusers[0]] = x
            continue
        if rule.kind == "swap":
            out[rule.diffusers[0]] = _swap_halves(x, rule.bfl)
            continue
        rows = _rows(x, rule.bfl)
        if rule.kind == "qkv":
            if rows % 3:
                raise ValueError(f"{rule.bfl!r} has {rows} rows, not a multiple of 3 (q; k; v).")
            sizes = [rows // 3] * 3
        else:
            sizes = _linear1_sizes(tensors, rule, rows)
        offsets = np.cumsum([0, *sizes])
        for name, start, stop in zip(rule.diffusers, offsets[:-1], offsets[1:], strict=True):
            out[name] = x[int(start) : int(stop)]
    return out


def convert(tensors: Mapping[str, Any], layout: str = BFL) -> dict[str, Any]:
    """Bring a FLUX state dict in either layout (prefix or not) into ``layout``.

    Strips :data:`PREFIX`, detects the input layout and converts when it differs.

    Parameters
    ----------
    tensors
        ``{name: array}`` in torch layout.
    layout
        The target layout, :data:`BFL` (default) or :data:`DIFFUSERS`.
    """
    if layout not in (BFL, DIFFUSERS):
        raise ValueError(f"`layout` must be {BFL!r} or {DIFFUSERS!r}, got {layout!r}.")
    tensors = strip_prefix(tensors)
    source = detect_layout(tensors)
    if source == layout:
        return tensors
    return diffusers_to_bfl(tensors) if layout == BFL else bfl_to_diffusers(tensors)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def _check_mapping(tensors) -> Mapping[str, Any]:
    if not isinstance(tensors, Mapping):
        raise TypeError(f"`tensors` must be a mapping {{name: array}}, got {type(tensors)}.")
    bad = [k for k in tensors if not isinstance(k, str)]
    if bad:
        raise TypeError(f"`tensors` keys must be str, got {bad[0]!r} ({type(bad[0]).__name__}).")
    return tensors


def _preview(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _depth(tensors: Mapping[str, Any], prefix: str) -> int:
    """Number of blocks ``prefix.{i}.*``; the indices must be exactly 0..n-1."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = {int(m.group(1)) for k in tensors if (m := pattern.match(k))}
    if not indices:
        return 0
    n = max(indices) + 1
    gaps = sorted(set(range(n)) - indices)
    if gaps:
        raise ValueError(
            f"Blocks {prefix}.0..{n - 1} are not contiguous: no tensors for "
            f"{', '.join(f'{prefix}.{i}' for i in gaps[:5])}"
            f"{f' ({len(gaps)} missing)' if len(gaps) > 5 else ''}."
        )
    return n


def _check_leftover(tensors: Mapping[str, Any], known: set[str], layout: str) -> None:
    leftover = sorted(k for k in tensors if k not in known)
    if not leftover:
        return
    hint = ""
    if any(k.startswith(PREFIX) for k in leftover):
        hint = f" Keys carry the prefix {PREFIX!r}: call `strip_prefix` first."
    raise ValueError(
        f"{len(leftover)} unexpected tensor(s) for a {layout}-layout FLUX transformer: "
        f"{_preview(leftover)}.{hint}"
    )


def _rows(x, name: str) -> int:
    if np.ndim(x) < 1:
        raise ValueError(f"{name!r} is a scalar; expected a weight or bias with rows.")
    return int(np.shape(x)[0])


def _concat(parts: list, names: tuple[str, ...]):
    """Row concatenation with matching shapes and dtypes, in the arrays' own library."""
    for x, name in zip(parts, names, strict=True):
        _rows(x, name)
    shapes = [tuple(np.shape(x)) for x in parts]
    same = all(s == shapes[0] for s in shapes[:3])  # q, k, v (or the two halves) alike
    if not same or any(s[1:] != shapes[0][1:] for s in shapes):
        listing = ", ".join(f"{n!r} {s}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(f"Cannot stack tensors of mismatched shapes: {listing}.")
    dtypes = [np.dtype(x.dtype) for x in parts]
    if len(set(dtypes)) > 1:
        listing = ", ".join(f"{n!r} {d}" for n, d in zip(names, dtypes, strict=True))
        raise ValueError(f"Cannot stack tensors of different dtypes: {listing}.")
    if any(isinstance(x, jax.Array) for x in parts):
        return jnp.concatenate(parts, axis=0)
    return np.concatenate(parts, axis=0)


def _swap_halves(x, name: str):
    """``[a; b] -> [b; a]`` along the rows (shift/scale order of the final modulation)."""
    rows = _rows(x, name)
    if rows % 2:
        raise ValueError(f"{name!r} has {rows} rows, expected an even number (shift; scale).")
    half = rows // 2
    return _concat([x[half:], x[:half]], (f"{name}[{half}:]", f"{name}[:{half}]"))


def _linear1_sizes(tensors: Mapping[str, Any], rule: _Rule, rows: int) -> list[int]:
    """Row sizes ``[h, h, h, mlp]`` of a single block's ``linear1``."""
    if rule.hidden_from not in tensors:
        raise ValueError(
            f"Missing BFL tensor {rule.hidden_from!r}: its row count (the hidden size) is "
            f"needed to split {rule.bfl!r} into q, k, v and mlp."
        )
    ref = tensors[rule.hidden_from]
    if np.ndim(ref) != 2:
        raise ValueError(f"{rule.hidden_from!r} must be 2-D (h, h + mlp), got {np.shape(ref)}.")
    hidden, width = (int(s) for s in np.shape(ref))
    mlp = width - hidden
    if mlp <= 0 or rows != 3 * hidden + mlp:
        raise ValueError(
            f"{rule.bfl!r} has {rows} rows but {rule.hidden_from!r} has shape {np.shape(ref)}: "
            f"expected 3·{hidden} + {mlp} rows (q; k; v; mlp)."
        )
    return [hidden, hidden, hidden, mlp]
