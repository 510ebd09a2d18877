"""Public API for the preconditioned Crank–Nicolson (pCN) kernel.

pCN samples ``π(x) ∝ N(x; 0, I)·exp(Φ(x))`` without gradients. Its autoregressive proposal
leaves the reference ``N(0, I)`` invariant, so the acceptance ratio involves ``Φ`` alone and does
not degenerate with the dimension. The kernel takes the **full** log-density ``log π``;
``Φ(x) = log π(x) + ½‖x‖²``. Drop-in with BlackJAX's SMC and utilities, like
:mod:`psijax.mcmc.pcnl`.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm, build_sampling_algorithm
from blackjax.types import ArrayLikeTree, ArrayTree, PRNGKey

from psijax._tree import accumulation_dtype, tree_normal, tree_vdot
from psijax.mcmc.metropolis import (
    check_step_size,
    checked_initial_logdensity,
    crank_nicolson_coefficients,
    is_valid,
    metropolis_step,
)

__all__ = ["MAX_STEP_SIZE", "PCNState", "PCNInfo", "init", "build_kernel", "as_top_level_api"]


MAX_STEP_SIZE = 4.0
"""Step sizes lie in ``(0, 4)``: ``ρ = (1 − h/4)/(1 + h/4)`` must stay positive."""


class PCNState(NamedTuple):
    """State of the pCN chain: the position and ``log π(position)``."""

    position: ArrayTree
    logdensity: float


class PCNInfo(NamedTuple):
    """Information on one pCN transition.

    acceptance_rate
        ``min(1, exp(Φ(x') − Φ(x)))``; 0 for a proposal with a non-finite log-density.
    is_accepted
        Whether the chain moved to the proposal.
    proposal
        The proposed state, accepted or not.

    """

    acceptance_rate: float
    is_accepted: bool
    proposal: PCNState


def init(position: ArrayLikeTree, logdensity_fn: Callable) -> PCNState:
    """Evaluate ``log π`` at ``position`` (checked:
    :func:`psijax.mcmc.metropolis.checked_initial_logdensity`)."""
    return PCNState(position, checked_initial_logdensity(position, logdensity_fn(position)))


def build_kernel() -> Callable:
    r"""Build a pCN kernel.

    With ``h`` the step size, ``ρ = (1 − h/4)/(1 + h/4)`` and ``β = √(1 − ρ²)``:

    .. math::

        x' = ρ x + β ξ, \quad ξ \sim N(0, I), \qquad \log A(x → x') = Φ(x') − Φ(x)

    The proposal is reversible with respect to ``N(0, I)``, so the Metropolis–Hastings ratio of
    ``π ∝ N(0, I)·exp(Φ)`` reduces to the change of ``Φ``. Proposals with a non-finite
    log-density are rejected.

    Reference: Cotter, Roberts, Stuart & White (2013), "MCMC methods for functions: modifying
    old algorithms to make them faster", Statistical Science 28(3).

    Returns
    -------
    ``kernel(rng_key, state, logdensity_fn, step_size) -> (PCNState, PCNInfo)``.

    """

    def kernel(
        rng_key: PRNGKey, state: PCNState, logdensity_fn: Callable, step_size: float
    ) -> tuple[PCNState, PCNInfo]:
        """Generate a new state with the pCN kernel."""
        check_step_size(step_size, maximum=MAX_STEP_SIZE)
        rho, beta = crank_nicolson_coefficients(step_size)
        key_proposal, key_accept = jax.random.split(rng_key)

        x = state.position
        noise = tree_normal(key_proposal, x)
        new_position = jax.tree.map(
            lambda xi, ni: (rho * xi + beta * ni).astype(xi.dtype), x, noise
        )
        proposal = init(new_position, logdensity_fn)

        dtype = accumulation_dtype(state.logdensity, proposal.logdensity, rho)
        log_ratio = (
            proposal.logdensity.astype(dtype)
            - state.logdensity.astype(dtype)
            + 0.5
            * tree_vdot(
                jax.tree.map(jnp.subtract, new_position, x),
                jax.tree.map(jnp.add, new_position, x),
            )
        )

        valid = is_valid(proposal.logdensity)
        new_state, stats = metropolis_step(key_accept, log_ratio, state, proposal, valid)
        return new_state, PCNInfo(stats.acceptance_rate, stats.is_accepted, proposal)

    return kernel


def as_top_level_api(logdensity_fn: Callable, step_size: float) -> SamplingAlgorithm:
    """The pCN kernel with its log-density and step size fixed.

    Examples
    --------
    .. code::

        pcn = psijax.pcn(logdensity_fn, step_size=0.5)
        state = pcn.init(position)
        new_state, info = jax.jit(pcn.step)(rng_key, state)

    Parameters
    ----------
    logdensity_fn
        Full log-density ``log π`` of a single position; the reference measure is ``N(0, I)``.
    step_size
        ``h > 0``; ``ρ = (1 − h/4)/(1 + h/4)``.

    Returns
    -------
    A ``SamplingAlgorithm``.

    """
    check_step_size(step_size, maximum=MAX_STEP_SIZE)
    return build_sampling_algorithm(build_kernel(), init, logdensity_fn, kernel_args=(step_size,))
