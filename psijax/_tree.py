"""Small pytree arithmetic shared by the kernels.

Positions of every sampler in psijax are arbitrary pytrees of arrays. The few reductions the
kernels need (inner products, squared norms, finiteness) are collected here so that each kernel
reads as its equations. Reductions accumulate in at least float32, whatever the leaf dtype.
"""

import functools
import operator

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "accumulation_dtype",
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
