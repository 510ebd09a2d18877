"""Small pytree arithmetic shared by the kernels, and the chunked ``vmap`` of the samplers.

Positions of every sampler in psijax are arbitrary pytrees of arrays. The few reductions the
kernels need (inner products, squared norms, finiteness) are collected here so that each kernel
reads as its equations. Reductions accumulate in at least float32, whatever the leaf dtype.
"""

import functools
import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "accumulation_dtype",
    "chunked_vmap",
    "static_partial",
    "tree_all_finite",
    "tree_normal",
    "tree_sq_norm",
    "tree_sum",
    "tree_vdot",
]


def accumulation_dtype(*values) -> jnp.dtype:
    """The dtype used for sampler arithmetic: float32, or float64 if an input already is."""
    return jnp.result_type(jnp.float32, *[jnp.asarray(v).dtype for v in values])


def _leaf_vdot(x: Array, y: Array) -> Array:
    dtype = accumulation_dtype(x, y)
    return jnp.vdot(jnp.asarray(x, dtype), jnp.asarray(y, dtype))


def tree_sum(tree: ArrayLikeTree) -> Array:
    """Sum of every element of every leaf, accumulated in at least float32."""
    sums = [jnp.sum(leaf, dtype=accumulation_dtype(leaf)) for leaf in jax.tree.leaves(tree)]
    return functools.reduce(operator.add, sums)


def tree_vdot(a: ArrayLikeTree, b: ArrayLikeTree) -> Array:
    """``⟨a, b⟩`` summed over every leaf, accumulated in at least float32."""
    return jax.tree.reduce(operator.add, jax.tree.map(_leaf_vdot, a, b))


def tree_sq_norm(a: ArrayLikeTree) -> Array:
    """``‖a‖²`` summed over every leaf, accumulated in at least float32."""
    return tree_vdot(a, a)


def tree_all_finite(tree: ArrayLikeTree) -> Array:
    """True when no leaf holds NaN or ±inf."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def tree_normal(rng_key: PRNGKey, like: ArrayLikeTree) -> ArrayTree:
    """Standard normal noise with the structure, shapes and dtypes of ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(rng_key, len(leaves)) if len(leaves) > 1 else [rng_key]
    noise = [
        jax.random.normal(key, jnp.shape(leaf), jnp.asarray(leaf).dtype)
        for key, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, noise)


def chunked_vmap(fn: Callable, in_axes=0, chunk: int | None = None) -> Callable:
    """``jax.vmap(fn, in_axes)``, or a :func:`jax.lax.map` over chunks of at most ``chunk``
    elements of the mapped axis (same results, memory of one chunk's evaluation).

    ``in_axes`` is ``0`` or a tuple of ``0`` / ``None`` per positional argument.
    """
    mapped = jax.vmap(fn, in_axes=in_axes)
    if chunk is None:
        return mapped

    def chunked(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        batched = [a for a, axis in zip(args, axes, strict=True) if axis is not None]
        size = jax.tree.leaves(batched)[0].shape[0]
        if size <= chunk:
            return mapped(*args)

        def one(values):
            it = iter(values)
            return fn(
                *(a if axis is None else next(it) for a, axis in zip(args, axes, strict=True))
            )

        return jax.lax.map(one, batched, batch_size=chunk)

    return chunked


@functools.lru_cache(maxsize=256)
def static_partial(fn: Callable, *static) -> functools.partial:
    """``functools.partial(fn, *static)``, the same object for equal (hashable) ``static``.

    A ``jax.tree_util.Partial`` compares its function by identity, and its function is part of
    its tree structure; built on this, two Partials made from equal static parts (graph
    definitions, options) have equal structures, so ``jit`` reuses the program compiled for the
    first instead of tracing and compiling again (one compilation for every prompt of a FLUX
    run, not one each).
    """
    return functools.partial(fn, *static)
