"""Flax NNX modules to and from one safetensors file, with an integrity check on load.

The shipped models of :mod:`psijax.models.digits` are small NNX modules stored as flat
safetensors files: every ``nnx.Param`` under its dotted path (``flux.double_blocks.img_mlp
.0.kernel``, ``class_y``, …). Loading builds the module abstractly (no random initialisation),
checks the file's sha256 when one is given, and requires the file's tensors to match the
module's parameters exactly — a missing, unexpected or mis-shaped tensor is a ``ValueError``
naming it.
"""

import hashlib
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from psijax.models.flux.checkpoint import read_tensors, write_tensors

__all__ = ["module_tensors", "save_module", "load_module", "sha256"]


def _flat(state) -> dict:
    pure = nnx.to_pure_dict(state)
    return {".".join(map(str, k)): v for k, v in traverse_util.flatten_dict(pure).items()}


def module_tensors(module: nnx.Module) -> dict[str, np.ndarray]:
    """Every ``nnx.Param`` of ``module`` as ``{dotted path: numpy array}``."""
    return {k: np.asarray(v) for k, v in _flat(nnx.state(module, nnx.Param)).items()}


def save_module(module: nnx.Module, path: str | os.PathLike, metadata=None) -> str:
    """Write ``module``'s parameters to one safetensors file; returns its sha256."""
    write_tensors(module_tensors(module), path, metadata=metadata)
    return sha256(path)


def sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 digest of the file at ``path`` (the shipped weights' integrity check)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_module(
    make: Callable[[], nnx.Module], path: str | os.PathLike, expected_sha256: str | None = None
) -> nnx.Module:
    """The module ``make()`` builds, holding the parameters stored at ``path``.

    ``make`` is traced abstractly (``nnx.eval_shape``), so no random initialisation runs.
    ``expected_sha256``: the file's digest; a different one is a ``ValueError`` (a corrupted or
    replaced file).
    """
    if expected_sha256 is not None:
        found = sha256(path)
        if found != expected_sha256:
            raise ValueError(
                f"{os.fspath(path)!r} has sha256 {found}, expected {expected_sha256}: the file "
                "is corrupted or not the shipped one."
            )
    tensors = read_tensors(path, host=True)
    abstract = nnx.eval_shape(make)
    graphdef, params, *rest = nnx.split(abstract, nnx.Param, ...)
    if any(jax.tree_util.tree_leaves(r) for r in rest):
        raise ValueError("`make` builds a module with state other than nnx.Param; not storable.")
    expected = _flat(params)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{os.fspath(path)!r} does not match the module: missing {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' …' if len(unexpected) > 5 else ''}."
        )
    values = {}
    for name, leaf in expected.items():
        value = tensors[name]
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(
                f"{os.fspath(path)!r}: tensor {name!r} has shape {tuple(value.shape)}, the "
                f"module expects {tuple(leaf.shape)}."
            )
        values[tuple(name.split("."))] = jnp.asarray(value, leaf.dtype)
    pure = traverse_util.unflatten_dict(values)
    nnx.replace_by_pure_dict(params, _int_keys(pure))
    return nnx.merge(graphdef, params, *rest)


def _int_keys(tree):
    """Dotted names hold list indices as digits; the state's dicts use ints there."""
    if not isinstance(tree, dict):
        return tree
    return {int(k) if k.isdigit() else k: _int_keys(v) for k, v in tree.items()}
