"""Public API for the unadjusted Langevin algorithm (ULA).

ULA is the Euler–Maruyama discretisation of the Langevin diffusion of ``π``, with no
Metropolis correction: it is biased at any finite step and serves as a baseline (the Ψ-Sampler
paper's "ULA initialisation"). It uses BlackJAX MALA's step convention, so the two compare at
equal ``step_size``: ``x' = x + ε ∇log π(x) + √(2ε) ξ``.
"""

from typing import Callable, NamedTuple

import jax
from blackjax.base import SamplingAlgorithm, build_sampling_algorithm
from blackjax.types import ArrayLikeTree, ArrayTree, PRNGKey

from psijax._tree import tree_normal
from psijax.mcmc.metropolis import check_step_size, checked_initial_logdensity, is_valid

__all__ = ["HAS_ACCEPT_STEP", "ULAState", "ULAInfo", "init", "build_kernel", "as_top_level_api"]

HAS_ACCEPT_STEP = False
"""ULA accepts every finite proposal: its ``acceptance_rate`` is not an acceptance rate."""


class ULAState(NamedTuple):
    """State of the ULA chain: the position, ``log π`` and ``∇log π`` there."""

    position: ArrayTree
    logdensity: float
    logdensity_grad: ArrayTree


class ULAInfo(NamedTuple):
    """Information on one ULA transition.

    acceptance_rate
        1 for a finite proposal, 0 for a non-finite one (the only proposals ULA rejects).
    is_accepted
        Whether the chain moved to the proposal.
    proposal
        The proposed state.

    """

    acceptance_rate: float
    is_accepted: bool
    proposal: ULAState


def init(position: ArrayLikeTree, logdensity_fn: Callable) -> ULAState:
    """Evaluate ``log π`` and its gradient at ``position`` (checked:
    :func:`psijax.mcmc.metropolis.checked_initial_logdensity`)."""
    logdensity, logdensity_grad = jax.value_and_grad(logdensity_fn)(position)
    logdensity = checked_initial_logdensity(position, logdensity, logdensity_grad)
    return ULAState(position, logdensity, logdensity_grad)


def build_kernel() -> Callable:
    r"""Build a ULA kernel.

    .. math::

        x' = x + ε ∇\log π(x) + \sqrt{2ε}\, ξ, \qquad ξ \sim N(0, I)

    always accepted, except that a proposal with a non-finite position, log-density or gradient
    is refused (the chain stays put), so a chain never holds NaN.

    Reference: Roberts & Tweedie (1996), "Exponential convergence of Langevin distributions and
    their discrete approximations", Bernoulli 2(4).

    Returns
    -------
    ``kernel(rng_key, state, logdensity_fn, step_size) -> (ULAState, ULAInfo)``.

    """

    def kernel(
        rng_key: PRNGKey, state: ULAState, logdensity_fn: Callable, step_size: float
    ) -> tuple[ULAState, ULAInfo]:
        """Generate a new state with the ULA kernel."""
        check_step_size(step_size)
        noise = tree_normal(rng_key, state.position)
        scale = jax.numpy.sqrt(2.0 * step_size)
        new_position = jax.tree.map(
            lambda x, g, n: (x + step_size * g + scale * n).astype(x.dtype),
            state.position,
            state.logdensity_grad,
            noise,
        )
        proposal = init(new_position, logdensity_fn)
        valid = is_valid(proposal.logdensity, new_position, proposal.logdensity_grad)
        new_state = jax.tree.map(lambda old, new: jax.numpy.where(valid, new, old), state, proposal)
        return new_state, ULAInfo(valid.astype(proposal.logdensity.dtype), valid, proposal)

    return kernel


def as_top_level_api(logdensity_fn: Callable, step_size: float) -> SamplingAlgorithm:
    """The ULA kernel with its log-density and step size fixed.

    Parameters
    ----------
    logdensity_fn
        Log-density ``log π`` of a single position (any pytree).
    step_size
        ``ε > 0`` in BlackJAX MALA's convention.

    Returns
    -------
    A ``SamplingAlgorithm``.

    """
    check_step_size(step_size)
    return build_sampling_algorithm(build_kernel(), init, logdensity_fn, kernel_args=(step_size,))
