"""Pieces shared by the kernels: step-size checks, Crank–Nicolson coefficients, the MH step.

Nothing here is specific to one algorithm. The accept/reject step treats a non-finite log
acceptance ratio, or a proposal whose log-density or gradient is NaN/inf, as a rejection, so a
chain never moves to a non-finite state whatever the user's log-density does there.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLikeTree, PRNGKey

from psijax._checks import check_real, concrete_value
from psijax._tree import accumulation_dtype, tree_all_finite

__all__ = [
    "AcceptStats",
    "check_step_size",
    "crank_nicolson_coefficients",
    "checked_initial_logdensity",
    "is_valid",
    "metropolis_step",
]


def check_step_size(step_size, name: str = "step_size", maximum: float | None = None) -> None:
    """Raise a clear error for a step size that is not a finite number in ``(0, maximum)``.

    One rule for every kernel (:func:`psijax._checks.check_real`): a value of the wrong kind is
    a ``TypeError``, one out of range a ``ValueError``. The check runs whenever the value is
    concrete (a Python number, a NumPy or a committed JAX array, also when closed over inside
    ``jit``). A traced step size, e.g. one that is an argument of a jitted function or adapted
    inside a loop, cannot be checked here; an invalid traced value makes every proposal
    non-finite, and those are rejected.
    """
    check_real(step_size, name, gt=0.0, lt=maximum, scalar=False)


def crank_nicolson_coefficients(step_size) -> tuple[Array, Array]:
    """``ρ = (1 − h/4)/(1 + h/4)`` and ``β = √(1 − ρ²) = 4√h/(4 + h)``.

    ``β`` is written in the second form, which has no cancellation for small or large ``h``.
    """
    h = jnp.asarray(step_size, accumulation_dtype(step_size))
    rho = (4.0 - h) / (4.0 + h)
    beta = 4.0 * jnp.sqrt(h) / (4.0 + h)
    return rho, beta


class AcceptStats(NamedTuple):
    acceptance_rate: Array
    is_accepted: Array


def metropolis_step(
    rng_key: PRNGKey,
    log_ratio: Array,
    state: ArrayLikeTree,
    proposal: ArrayLikeTree,
    proposal_is_valid: Array,
) -> tuple[ArrayLikeTree, AcceptStats]:
    """Accept ``proposal`` with probability ``min(1, exp(log_ratio))``.

    ``log_ratio`` is sanitised first: NaN, or an invalid proposal (non-finite log-density or
    gradient), count as ``−inf`` — a certain rejection, reported as acceptance rate 0.
    """
    log_ratio = jnp.where(proposal_is_valid & ~jnp.isnan(log_ratio), log_ratio, -jnp.inf)
    acceptance_rate = jnp.minimum(1.0, jnp.exp(log_ratio))
    is_accepted = jnp.log(jax.random.uniform(rng_key, dtype=log_ratio.dtype)) < log_ratio
    new_state = jax.tree.map(lambda old, new: jnp.where(is_accepted, new, old), state, proposal)
    return new_state, AcceptStats(acceptance_rate, is_accepted)


def is_valid(logdensity: Array, *trees: ArrayLikeTree) -> Array:
    """A proposal is valid when its log-density is finite and every given pytree is finite."""
    valid = jnp.isfinite(logdensity)
    for tree in trees:
        valid = valid & tree_all_finite(tree)
    return valid


def checked_initial_logdensity(
    position: ArrayLikeTree, logdensity: Array, *trees: ArrayLikeTree
) -> Array:
    """The initial log-density of a chain, after checking that the chain can start there.

    A chain started at a NaN/inf position, or where the log-density is NaN or ``+inf`` (or a
    given pytree, the gradient, is not finite), can never move: every proposal from it is
    non-finite and rejected. With concrete values that is a ``ValueError`` here; under
    ``jit``/``vmap`` nothing can be raised, and the returned log-density is NaN, so the state
    says so (``jnp.isnan(state.logdensity)``) instead of looking like a working chain.
    """
    valid = tree_all_finite(position) & ~jnp.isnan(logdensity) & (logdensity < jnp.inf)
    for tree in trees:
        valid = valid & tree_all_finite(tree)
    concrete = concrete_value(valid)
    if concrete is not None and not concrete.all():
        bad = int(np.flatnonzero(~concrete.reshape(-1))[0]) if concrete.ndim else None
        where = "" if bad is None else f" (first invalid chain: {bad})"
        raise ValueError(
            "the initial `position` must be finite, with a log-density that is not NaN or +inf "
            f"and a finite gradient there{where}: a chain started there can never move."
        )
    return jnp.where(valid, logdensity, jnp.nan)
