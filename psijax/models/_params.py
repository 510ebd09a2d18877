"""Parameter helpers shared by the NNX models: initialisation without a compile per shape,
and the checks a loaded checkpoint must pass (every key present, no extra key, each tensor of
its shape, floating and finite), with errors that name the keys."""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from psijax._checks import concrete_value

__all__ = ["normal", "constant", "value", "check_keys", "check_finite", "some"]


def normal(rngs: nnx.Rngs, shape, scale: float, dtype) -> Array:
    """``scale·N(0, 1)`` draws, from numpy when the key is concrete (no compile per shape)."""
    key = rngs.params()
    seed = concrete_value(jax.random.key_data(key))
    if seed is None:  # abstract construction (nnx.eval_shape) or inside a trace
        return (scale * jax.random.normal(key, shape, jnp.float32)).astype(dtype)
    draws = np.random.default_rng(seed.astype(np.uint64).ravel().tolist()).standard_normal(shape)
    return jnp.asarray((scale * draws).astype(np.float32), dtype)


def constant(value: float, shape, dtype) -> Array:
    """An array of ``shape`` filled with ``value``, built on the host."""
    return jnp.asarray(np.full(shape, value, np.float32), dtype)


def value(var):
    """The array held by an NNX variable (either Flax API)."""
    return var.get_value() if hasattr(var, "get_value") else var.value


def check_keys(tensors: Mapping[str, object], expected: Mapping[str, tuple], what: str) -> None:
    """A ``ValueError`` naming every missing, unexpected, mis-shaped or non-floating tensor."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {some(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {some(unexpected)}")
    for key in sorted(set(expected) & set(tensors)):
        found = tuple(np.shape(tensors[key]))
        if found != expected[key]:
            problems.append(f"`{key}` has shape {found}, expected {expected[key]}")
        dtype = getattr(tensors[key], "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            problems.append(f"`{key}` is {dtype} (a parameter must be a floating tensor)")
    if problems:
        raise ValueError(f"The checkpoint does not match {what}: " + "; ".join(problems) + ".")


def check_finite(tensors: Mapping[str, object], keys) -> None:
    """A ``ValueError`` naming every tensor of ``keys`` that holds NaN or inf."""
    bad = []
    for key in sorted(keys):
        value = tensors[key]
        xp = np if isinstance(value, np.ndarray) else jnp
        count = int(xp.size(value) - xp.sum(xp.isfinite(value)))
        if count:
            bad.append(f"`{key}` ({count} of {xp.size(value)} values)")
    if bad:
        raise ValueError(
            f"The checkpoint holds non-finite values (NaN or inf) in {len(bad)} tensor(s): "
            f"{some(bad)}; pass check_finite=False to load it anyway."
        )


def some(keys, n: int = 5) -> str:
    """The first ``n`` of ``keys`` in backquotes, and how many more there are."""
    shown = ", ".join(f"`{k}`" for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")
