"""Public API for the preconditioned Crank–Nicolson Langevin (pCNL) kernel.

pCNL samples ``π(x) ∝ N(x; 0, I)·exp(Φ(x))``. Its proposal is a Crank–Nicolson discretisation
of the Langevin diffusion preconditioned by the reference Gaussian, so it is reversible with
respect to ``N(0, I)`` exactly and its acceptance rate does not decay with the dimension when
``Φ`` depends on a bounded number of directions (MALA's step must shrink like ``d^(-1/3)``).
It is the initial-particle sampler of Ψ-Sampler.

The kernel takes the **full** log-density ``log π`` on a single position (any pytree); the
reference Gaussian ``N(0, I)`` is implied, ``Φ(x) = log π(x) + ½‖x‖²``. It therefore drops into
BlackJAX's SMC (``mcmc_step_fn=psijax.pcnl.build_kernel()``, ``mcmc_init_fn=psijax.pcnl.init``)
and ``blackjax.util.run_inference_algorithm`` unchanged.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm, build_sampling_algorithm
from blackjax.types import ArrayLikeTree, ArrayTree, PRNGKey

from psijax._tree import (
    accumulation_dtype,
    tree_all_finite,
    tree_normal,
    tree_sq_norm,
    tree_vdot,
)
from psijax.mcmc.metropolis import (
    check_step_size,
    checked_initial_logdensity,
    crank_nicolson_coefficients,
    metropolis_step,
)

__all__ = [
    "MAX_STEP_SIZE",
    "PCNLState",
    "PCNLInfo",
    "init",
    "build_kernel",
    "as_top_level_api",
    "clip_drift",
]


MAX_STEP_SIZE = 4.0
"""Step sizes lie in ``(0, 4)``: ``ρ = (1 − h/4)/(1 + h/4)`` must stay positive."""


class PCNLState(NamedTuple):
    """State of the pCNL chain.

    position
        Current position (any pytree).
    logdensity
        ``log π(position)``, the full log-density.
    logdensity_grad
        ``∇ log π(position)``. The drift uses ``∇Φ = ∇ log π + position``.

    """

    position: ArrayTree
    logdensity: float
    logdensity_grad: ArrayTree


class PCNLInfo(NamedTuple):
    """Information on one pCNL transition.

    acceptance_rate
        ``min(1, exp(log A))``; 0 for a proposal with a non-finite log-density or gradient.
    is_accepted
        Whether the chain moved to the proposal.
    proposal
        The proposed state, accepted or not.

    """

    acceptance_rate: float
    is_accepted: bool
    proposal: PCNLState


def init(position: ArrayLikeTree, logdensity_fn: Callable) -> PCNLState:
    """Evaluate ``log π`` and its gradient at ``position`` (checked:
    :func:`psijax.mcmc.metropolis.checked_initial_logdensity`)."""
    logdensity, logdensity_grad = jax.value_and_grad(logdensity_fn)(position)
    logdensity = checked_initial_logdensity(position, logdensity, logdensity_grad)
    return PCNLState(position, logdensity, logdensity_grad)


def build_kernel(drift_fn: Callable | None = None) -> Callable:
    r"""Build a pCNL kernel.

    With ``h`` the step size, ``ρ = (1 − h/4)/(1 + h/4)``, ``β = √(1 − ρ²)`` and the drift
    ``G(x) = ∇Φ(x) = ∇ log π(x) + x``:

    .. math::

        x' = ρ x + β (ξ + \tfrac{\sqrt h}{2} G(x)), \qquad ξ \sim N(0, I)

        J(a, b) = Φ(a) − \tfrac{h}{8}‖G(a)‖² + \tfrac{\sqrt h}{2}⟨(b − ρ a)/β, G(a)⟩

        \log A(x → x') = J(x', x) − J(x, x')

    which is the exact Metropolis–Hastings ratio
    ``log π(x') + log q(x | x') − log π(x) − log q(x' | x)``: the Gaussian parts cancel because the
    autoregressive part of the proposal is reversible with respect to ``N(0, I)``. The ratio
    stays exact for any deterministic drift, so ``G`` may be replaced through ``drift_fn``
    (e.g. :func:`clip_drift`). Any ``h > 0`` gives a valid kernel; ``h < 4`` keeps ``ρ > 0``.
    Proposals with a non-finite log-density or gradient are rejected.

    References: Cotter, Roberts, Stuart & White (2013), "MCMC methods for functions: modifying
    old algorithms to make them faster", Statistical Science 28(3); Yoon et al. (2025),
    "Ψ-Sampler", NeurIPS.

    Parameters
    ----------
    drift_fn
        Optional ``drift_fn(position, phi_grad) -> drift`` replacing ``G = ∇Φ``; it must be a
        deterministic function of the position. ``None`` uses ``∇Φ`` itself.

    Returns
    -------
    ``kernel(rng_key, state, logdensity_fn, step_size) -> (PCNLState, PCNLInfo)``.

    """

    def drift(state: PCNLState) -> ArrayTree:
        phi_grad = jax.tree.map(jnp.add, state.logdensity_grad, state.position)
        return phi_grad if drift_fn is None else drift_fn(state.position, phi_grad)

    def kernel(
        rng_key: PRNGKey, state: PCNLState, logdensity_fn: Callable, step_size: float
    ) -> tuple[PCNLState, PCNLInfo]:
        """Generate a new state with the pCNL kernel."""
        check_step_size(step_size, maximum=MAX_STEP_SIZE)
        rho, beta = crank_nicolson_coefficients(step_size)
        h = jnp.asarray(step_size, rho.dtype)
        half_sqrt_h = 0.5 * jnp.sqrt(h)
        key_proposal, key_accept = jax.random.split(rng_key)

        x, g = state.position, drift(state)
        noise = tree_normal(key_proposal, x)
        forward = jax.tree.map(lambda xi, gi: xi + half_sqrt_h * gi, noise, g)  # (x' − ρx)/β
        new_position = jax.tree.map(
            lambda xi, fi: (rho * xi + beta * fi).astype(xi.dtype), x, forward
        )
        proposal = init(new_position, logdensity_fn)
        g_new = drift(proposal)

        # log A = J(x', x) − J(x, x'), expanded into inner products of the arrays themselves
        # (scalars outside the reductions, which XLA fuses best), with (x − ρx')/β·G' written
        # (⟨x, G'⟩ − ρ⟨x', G'⟩)/β and ½(‖x'‖² − ‖x‖²) as ½⟨x' − x, x' + x⟩ (no cancellation).
        # A NaN/inf coordinate of x' or G(x') makes ⟨x'−x, x'+x⟩ or ‖G'‖² non-finite, so the
        # finiteness of the sum screens the proposal at no extra cost.
        coordinate_sum = (
            0.5
            * tree_vdot(
                jax.tree.map(jnp.subtract, new_position, x), jax.tree.map(jnp.add, new_position, x)
            )
            - 0.125 * h * (tree_sq_norm(g_new) - tree_sq_norm(g))
            + half_sqrt_h
            * (
                (tree_vdot(x, g_new) - rho * tree_vdot(new_position, g_new)) / beta
                - tree_vdot(forward, g)
            )
        )
        dtype = accumulation_dtype(coordinate_sum, state.logdensity, proposal.logdensity)
        log_ratio = (
            proposal.logdensity.astype(dtype) - state.logdensity.astype(dtype) + coordinate_sum
        )
        valid = jnp.isfinite(proposal.logdensity) & jnp.isfinite(coordinate_sum)
        if drift_fn is not None:  # a custom drift may hide a non-finite ∇log π(x'): screen it
            valid = valid & tree_all_finite(proposal.logdensity_grad)
        new_state, stats = metropolis_step(key_accept, log_ratio, state, proposal, valid)
        return new_state, PCNLInfo(stats.acceptance_rate, stats.is_accepted, proposal)

    return kernel


def as_top_level_api(
    logdensity_fn: Callable, step_size: float, drift_fn: Callable | None = None
) -> SamplingAlgorithm:
    """The pCNL kernel with its log-density and step size fixed.

    Examples
    --------
    .. code::

        pcnl = psijax.pcnl(logdensity_fn, step_size=0.5)
        state = pcnl.init(position)
        new_state, info = jax.jit(pcnl.step)(rng_key, state)

    Parameters
    ----------
    logdensity_fn
        Full log-density ``log π`` of a single position; the reference measure is ``N(0, I)``.
    step_size
        ``h > 0`` (the Ψ-Sampler paper's step size; 0.5 in its released configurations).
    drift_fn
        Optional replacement of the drift, see :func:`build_kernel`.

    Returns
    -------
    A ``SamplingAlgorithm``.

    """
    check_step_size(step_size, maximum=MAX_STEP_SIZE)
    kernel = build_kernel(drift_fn)
    return build_sampling_algorithm(kernel, init, logdensity_fn, kernel_args=(step_size,))


def clip_drift(max_norm: float) -> Callable:
    """A ``drift_fn`` that rescales ``∇Φ`` to a norm of at most ``max_norm`` (over all leaves).

    The rescaling is a deterministic function of the position, so the kernel stays exact.
    """
    if not max_norm > 0:
        raise ValueError(f"`max_norm` must be > 0, got {max_norm!r}.")

    def drift_fn(position: ArrayTree, phi_grad: ArrayTree) -> ArrayTree:
        del position
        norm = jnp.sqrt(tree_sq_norm(phi_grad))
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))
        return jax.tree.map(lambda g: (scale * g).astype(g.dtype), phi_grad)

    return drift_fn
