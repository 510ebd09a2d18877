"""Step-size adaptation for pCN and pCNL toward a target acceptance rate.

BlackJAX's ``window_adaptation`` does not fit these kernels: it adapts a mass matrix (the
reference covariance ``N(0, I)`` is part of the target here and must stay fixed), and its
log-step search assumes acceptance falls monotonically with the step, while pCN/pCNL acceptance
need not beyond the prior's scale (``h → 4`` proposes independent prior draws). This module runs
the chains (vmapped) and tunes ``h`` by Nesterov dual averaging (Hoffman & Gelman 2014) on
``u = logit(h/4)``, so every iterate stays inside ``(0, 4)``; the iterates are further held
inside ``step_size_bounds``. The acceptance statistic is the mean of ``min(1, exp(log A))``
over chains (one step size for all chains) or per chain (``per_chain=True``).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import AdaptationAlgorithm
from blackjax.optimizers.dual_averaging import dual_averaging
from blackjax.types import Array, ArrayLikeTree, PRNGKey

from psijax._checks import check_int, check_real
from psijax._tree import chunked_vmap
from psijax.mcmc.metropolis import check_step_size

__all__ = ["AdaptationResults", "AdaptationInfo", "step_size_adaptation"]


class AdaptationResults(NamedTuple):
    """Last chain states (leading chain axis) and the tuned ``{"step_size": h}``."""

    state: NamedTuple
    parameters: dict


class AdaptationInfo(NamedTuple):
    """Trace of the adaptation, one entry per iteration.

    step_size
        Step size used at each iteration (per chain if ``per_chain``).
    acceptance_rate
        Acceptance statistic fed to the dual averaging at each iteration.
    """

    step_size: Array
    acceptance_rate: Array


def _logit_quarter(h):
    return jnp.log(h) - jnp.log(4.0 - h)


def _from_logit_quarter(u, low, high):
    # The clip keeps float32 rounding of 4·sigmoid(u) from leaving [low, high] ⊂ (0, 4).
    return jnp.clip(4.0 * jax.nn.sigmoid(u), np.float32(low), np.float32(high))


def step_size_adaptation(
    algorithm,
    logdensity_fn: Callable,
    *,
    target_acceptance_rate: float = 0.5,
    initial_step_size: float = 0.5,
    per_chain: bool = False,
    step_size_bounds: tuple[float, float] = (1e-6, 3.99),
    t0: int = 10,
    gamma: float = 0.05,
    kappa: float = 0.75,
    chunk: int | None = None,
) -> AdaptationAlgorithm:
    """Tune the step size of ``psijax.pcn`` or ``psijax.pcnl`` (or any kernel taking ``h``).

    Dual averaging on ``u = logit(h/4)``:

    .. math::

        \\bar H_k = (1 − \\tfrac{1}{k + t_0}) \\bar H_{k−1} + \\tfrac{1}{k + t_0}(δ − a_k), \\quad
        u_k = μ − \\tfrac{\\sqrt k}{γ} \\bar H_k, \\quad
        \\bar u_k = k^{−κ} u_k + (1 − k^{−κ}) \\bar u_{k−1}

    with ``δ`` the target, ``a_k`` the acceptance statistic and ``μ = log(10·h₀/(4 − h₀))``; the
    returned step is ``4·sigmoid(ū)``, clipped to ``step_size_bounds``. The chains keep running
    with the current iterate, so the returned states are the chains' last states.

    Parameters
    ----------
    algorithm
        ``psijax.pcn``, ``psijax.pcnl`` (anything with ``init(position, logdensity_fn)`` and
        ``build_kernel()`` returning ``kernel(rng_key, state, logdensity_fn, step_size)``).
    logdensity_fn
        Full log-density of a single position.
    target_acceptance_rate
        In ``(0, 1)``; 0.5 by default (practitioners target 0.25–0.5 for these kernels).
    initial_step_size
        Starting ``h`` inside ``step_size_bounds``.
    per_chain
        One step size per chain instead of one shared by all chains.
    step_size_bounds
        ``(low, high)`` with ``0 < low < high < 4``.
    t0, gamma, kappa
        Dual-averaging constants (Hoffman & Gelman 2014 defaults).
    chunk
        Step at most this many chains at a time (a ``lax.map`` over chunks; the same
        results), bounding the memory of the log-density evaluations. ``None``: all at once.

    Returns
    -------
    An ``AdaptationAlgorithm`` whose ``run(rng_key, positions, num_steps=500, num_active=None)``
    takes positions with a leading chain axis and returns ``(AdaptationResults,
    AdaptationInfo)``; with ``num_active = A`` only the first ``A`` chains feed the shared
    acceptance statistic (the others pad the chains to a device count).

    """
    check_real(target_acceptance_rate, "target_acceptance_rate", gt=0.0, lt=1.0)
    low, high = (float(b) for b in step_size_bounds)
    if not 0.0 < np.float32(low) < np.float32(high) < np.float32(4.0):  # distinct in float32
        raise ValueError(
            f"`step_size_bounds` must satisfy 0 < low < high < 4 (in float32), "
            f"got {step_size_bounds!r}."
        )
    check_step_size(initial_step_size, "initial_step_size")
    if not low <= float(initial_step_size) <= high:
        raise ValueError(
            f"`initial_step_size` must lie in step_size_bounds={step_size_bounds!r}, "
            f"got {initial_step_size!r}."
        )
    if not 0.5 < kappa <= 1.0 or not t0 >= 0 or not gamma > 0:
        raise ValueError("dual averaging needs kappa in (0.5, 1], t0 >= 0 and gamma > 0.")

    if chunk is not None:
        check_int(chunk, "chunk")
    kernel = algorithm.build_kernel()
    da_init, da_update, _ = dual_averaging(t0, gamma, kappa)
    u_low, u_high = _logit_quarter(low), _logit_quarter(high)

    def chain_step(rng_key, state, step_size):
        return kernel(rng_key, state, logdensity_fn, step_size)

    def run(
        rng_key: PRNGKey,
        positions: ArrayLikeTree,
        num_steps: int = 500,
        num_active: int | None = None,
    ):
        if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
            raise ValueError(f"`num_steps` must be an integer >= 1, got {num_steps!r}.")
        leading = {
            jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(positions)
        }
        if len(leading) != 1 or None in leading:
            raise ValueError(
                "`positions` must have one leading chain axis shared by every leaf, "
                f"got leading sizes {sorted(leading, key=str)}."
            )
        (num_chains,) = leading
        active = num_chains if num_active is None else num_active
        if not isinstance(active, (int, np.integer)) or not 1 <= active <= num_chains:
            raise ValueError(
                f"`num_active` must be an int in [1, {num_chains}], got {num_active!r}."
            )
        states = chunked_vmap(algorithm.init, (0, None), chunk)(positions, logdensity_fn)

        # Dual averaging in log-odds: its "log x" is u = logit(h/4), its x the odds h/(4 − h).
        odds0 = jnp.asarray(initial_step_size / (4.0 - initial_step_size), jnp.float32)
        da_state = da_init(odds0)
        if per_chain:
            da_state = jax.tree.map(lambda v: jnp.full((num_chains,), v), da_state)

        def one_step(carry, rng_key):
            states, da_state = carry
            u = jnp.clip(da_state.log_x, u_low, u_high)
            step_size = _from_logit_quarter(u, low, high)
            keys = jax.random.split(rng_key, num_chains)
            step_in_axes = 0 if per_chain else None
            states, info = chunked_vmap(chain_step, (0, 0, step_in_axes), chunk)(
                keys, states, step_size
            )
            rates = info.acceptance_rate
            acceptance = rates if per_chain else jnp.mean(rates[:active])
            da_state = da_update(da_state, target_acceptance_rate - acceptance)
            da_state = da_state._replace(log_x=jnp.clip(da_state.log_x, u_low, u_high))
            return (states, da_state), AdaptationInfo(step_size, acceptance)

        keys = jax.random.split(rng_key, num_steps)
        (states, da_state), trace = jax.lax.scan(one_step, (states, da_state), keys)
        step_size = _from_logit_quarter(da_state.log_x_avg, low, high)
        return AdaptationResults(states, {"step_size": step_size}), trace

    return AdaptationAlgorithm(run)
