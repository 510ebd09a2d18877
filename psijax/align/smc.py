r"""Sequential Monte Carlo over the denoising grid, with a twisted or a bootstrap proposal.

One SMC (ALGORITHMS.md §5) over ``1 = t_0 > t_1 > … > t_T = 0`` whose parts are swapped by
configuration: the proposal (``"twisted"``: TDS / DAS / Ψ-Sampler; ``"bootstrap"``: FK
steering's difference potential), the tempering schedule ``λ``, the resampling scheme and the
ESS threshold ``κ`` (``κ = 1``: every step, as TDS). ``lax.scan`` over the steps, ``vmap`` over
the particles, float32 (or wider) sampler math.

Step ``i`` from ``t = t_i`` to ``t' = t_{i+1}``, with the cached ``r_t = r(x̂0(x, t))``,
``∇r_t`` and ``v = v(x, t)`` of every particle:

.. math::

    &\text{if } \mathrm{ESS}(ℓ) ≤ κN:\ \text{resample (particles and caches)},\ ℓ ← 0
     \quad(\text{otherwise keep and accumulate } ℓ)\\
    &μ = x + Δ[−v + \tfrac12 g(t)^2 s],\quad σ = g(t)\sqrt{Δ},\quad
     G = λ_{t'} ∇r_t / α\ (\text{twisted}),\ G = 0\ (\text{bootstrap})\\
    &x' = μ + σ^2 G + σ z\\
    &Δℓ = −⟨x' − μ, G⟩ + \tfrac{σ^2}{2}‖G‖^2 + λ_{t'} r_{t'}(x')/α − λ_t r_t(x)/α\\
    &\log\hat Z ← \log\hat Z + \log \textstyle\sum_i W_i e^{Δℓ_i},\quad ℓ ← ℓ + Δℓ

where the first two terms of ``Δℓ`` are ``log p(x'|x) − log q(x'|x)``. At ``t' = 0`` the
reward is the exact ``r(x')`` (``x̂0(x', 0) = x'``; no model call). ``log Ẑ`` starts at
``log_mean_exp(ℓ_0)``. The final weights are returned as they are (no resampling after the
last step), so no information is lost.

**Cost.** ``N`` potential evaluations (model forward and backward) at ``t_0`` and ``N`` after
every step except the last: ``nfe = N·T`` model evaluations in all, each with its gradient.

**Invalid values.** A particle whose reward or gradient is NaN/inf gets log-weight ``−inf``
(weight zero) and a zero proposal gradient, so it never affects the others; resampling then
replaces it. If every weight is zero the run is collapsed: ``log Ẑ = −inf`` (reported in
``info.collapsed``), never NaN.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey

from psijax._checks import concrete_value
from psijax.align.problem import RewardProblem
from psijax.flows.sde import Diffusion, Transition, check_grid, transition_from_velocity
from psijax.smc.resampling import get_scheme
from psijax.smc.weights import (
    ess,
    log_mean_exp,
    log_normalizer_increment,
    normalize,
    resample_if_needed,
    sanitize,
)

__all__ = ["SMCInfo", "AlignmentResult", "run_smc"]

PROPOSALS = ("twisted", "bootstrap")


class SMCInfo(NamedTuple):
    """Diagnostics of :func:`run_smc`.

    ess
        ``(T,)`` ESS of the weights entering each step (before its resampling decision).
    resampled
        ``(T,)`` booleans: whether step ``i`` resampled before moving.
    log_normalizer_increments
        ``(T,)`` the increments ``log Σ_i W_i e^{Δℓ_i}`` of ``log Ẑ``.
    final_ess
        ESS of the returned weights.
    collapsed
        True when every weight is zero (``log Ẑ = −inf``).

    """

    ess: Array
    resampled: Array
    log_normalizer_increments: Array
    final_ess: Array
    collapsed: Array


class AlignmentResult(NamedTuple):
    """Output of the alignment samplers.

    samples
        ``(N, *event_shape)`` final particles at ``t = 0``.
    log_weights
        ``(N,)`` normalized log-weights (``logsumexp = 0``; ``−inf`` for zero weight).
    rewards
        ``(N,)`` exact rewards ``r(x)`` of the samples.
    log_normalizer
        ``log Ẑ`` (``Ẑ`` unbiased for ``Z = E_p[exp(r(x_T)/α)]`` under the discretized chain
        when the initial particles and weights are consistent, e.g. prior draws with
        ``ℓ_0 = λ_0 r(x̂0(x, 1))/α``).
    nfe
        Model evaluations (each with a backward pass): ``N·T``.
    info
        :class:`SMCInfo`.

    """

    samples: Array
    log_weights: Array
    rewards: Array
    log_normalizer: Array
    nfe: Array
    info: SMCInfo


def run_smc(
    rng_key: PRNGKey,
    problem: RewardProblem,
    initial_particles: ArrayLike,
    initial_log_weights: ArrayLike,
    *,
    grid: ArrayLike,
    diffusion: Diffusion,
    proposal: str = "twisted",
    schedule: ArrayLike | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
) -> AlignmentResult:
    r"""Run one SMC over ``grid`` from weighted particles at ``t_0 = 1`` (module docstring).

    Parameters
    ----------
    rng_key
        PRNG key.
    problem
        The :class:`RewardProblem`; its x0-predictor must be ``"tweedie"`` here.
    initial_particles
        ``(N, *event_shape)`` particles at ``t = 1``.
    initial_log_weights
        ``(N,)`` log-weights consistent with how the particles were drawn (ALGORITHMS.md §5):
        prior draws → ``λ_0·r(x̂0(x, 1))/α``.
    grid
        Concrete times ``1 = t_0 > … > t_T = 0``, ``T ≥ 1``.
    diffusion
        The sampler's :class:`psijax.flows.sde.Diffusion` (the untwisted kernel ``p``).
    proposal
        ``"twisted"`` (``q = N(μ + σ²G, σ²I)``) or ``"bootstrap"`` (``q = p``).
    schedule
        ``None`` (``λ ≡ 1``) or a concrete array of ``T + 1`` values in ``[0, 1]`` with
        ``λ_T = 1`` (tempering; the proposal of step ``i`` uses ``λ_{i+1}``).
    resampling
        A scheme name of :func:`psijax.smc.resampling.get_scheme`.
    ess_threshold
        ``κ ∈ [0, 1]``: resample when ``ESS ≤ κN``.

    Returns
    -------
    :class:`AlignmentResult`.

    Raises
    ------
    ValueError
        Naming the invalid argument (checked before anything runs).
    NotImplementedError
        For a non-Tweedie predictor: the per-step potential would cost an ODE solve per
        particle and the NFE accounting of that path is not implemented yet.

    """
    if not isinstance(problem, RewardProblem):
        raise ValueError(f"`problem` must be a RewardProblem, got {type(problem).__name__}.")
    if not problem.is_tweedie:
        raise NotImplementedError(
            "run_smc supports only x0_predictor='tweedie': SMC potentials through a flow-map or "
            "custom predictor (and their NFE accounting) are not implemented yet."
        )
    if not isinstance(diffusion, Diffusion):
        raise ValueError(f"`diffusion` must be a Diffusion, got {type(diffusion).__name__}.")
    if proposal not in PROPOSALS:
        raise ValueError(f"`proposal` must be one of {PROPOSALS}, got {proposal!r}.")
    scheme = get_scheme(resampling)
    times = _checked_grid(grid)
    num_steps = times.shape[0] - 1
    lambdas = _checked_schedule(schedule, num_steps)
    threshold = _checked_threshold(ess_threshold)

    x = jnp.asarray(initial_particles)
    event_shape = tuple(problem.event_shape)
    if x.ndim != 1 + len(event_shape) or x.shape[1:] != event_shape or x.shape[0] < 1:
        raise ValueError(
            f"`initial_particles` must have shape (N, *{event_shape}) with N >= 1, got {x.shape}."
        )
    n = x.shape[0]
    log_w0 = jnp.asarray(initial_log_weights)
    if log_w0.shape != (n,):
        raise ValueError(f"`initial_log_weights` must have shape ({n},), got {log_w0.shape}.")

    dtype = jnp.result_type(jnp.float32, x.dtype)
    x = x.astype(dtype)
    times = jnp.asarray(times, dtype)
    lambdas = jnp.asarray(lambdas, dtype)
    alpha = jnp.asarray(problem.alpha, dtype)
    twisted = proposal == "twisted"

    def potential(xs, t):
        r, g, v = jax.vmap(problem.potential_and_grad, in_axes=(0, None))(xs, t)
        return _sanitize_potential(r.astype(dtype), g.astype(dtype), v.astype(dtype))

    def move(key, xs, cache, t, t_next, lam_next):
        """Propose ``x'`` and return it with ``log p − log q`` per particle."""
        _, grad, v, _ = cache
        trans = jax.vmap(
            transition_from_velocity,
            in_axes=(0, 0, None, None, None),
            out_axes=Transition(0, None),  # σ depends on the times only
        )(xs, v, t, t_next, diffusion)
        sigma = trans.std.astype(dtype)
        mean = trans.mean.astype(dtype)
        z = jax.random.normal(key, xs.shape, dtype)
        if not twisted:
            return mean + sigma * z, jnp.zeros((n,), dtype)
        g = lam_next * grad / alpha
        shift = sigma * z + sigma**2 * g  # x' − μ
        axes = tuple(range(1, xs.ndim))
        log_p_minus_q = -jnp.sum(shift * g, axis=axes) + 0.5 * sigma**2 * jnp.sum(g * g, axis=axes)
        return mean + shift, log_p_minus_q

    def step(carry, inputs, last: bool):
        xs, cache, log_w, log_z = carry
        key, t, t_next, lam, lam_next = inputs
        key_resample, key_move = jax.random.split(key)
        (xs, cache), log_w, _, resampled, ess_before = resample_if_needed(
            key_resample, log_w, (xs, cache), threshold, scheme
        )
        x_next, log_p_minus_q = move(key_move, xs, cache, t, t_next, lam_next)
        if last:  # t' = 0: the exact reward, no model call
            r_next = jax.vmap(problem.reward)(x_next).astype(dtype)
            bad_next = ~jnp.isfinite(r_next)
            r_next = jnp.where(bad_next, 0.0, r_next)
            cache_next = (r_next, cache[1], cache[2], bad_next)
        else:
            cache_next = potential(x_next, t_next)
            r_next, bad_next = cache_next[0], cache_next[3]
        increment = log_p_minus_q + (lam_next * r_next - lam * cache[0]) / alpha
        increment = jnp.where(bad_next | cache[3], -jnp.inf, increment)
        d_log_z = log_normalizer_increment(log_w, increment)
        log_w = sanitize(log_w + increment)
        return (x_next, cache_next, log_w, log_z + d_log_z), (ess_before, resampled, d_log_z)

    cache0 = potential(x, times[0])
    log_w = sanitize(jnp.where(cache0[3], -jnp.inf, log_w0.astype(dtype)))
    carry = (x, cache0, log_w, log_mean_exp(log_w))
    keys = jax.random.split(rng_key, num_steps)
    inputs = (keys, times[:-1], times[1:], lambdas[:-1], lambdas[1:])
    head = jax.tree.map(lambda a: a[:-1], inputs)
    tail = jax.tree.map(lambda a: a[-1], inputs)
    carry, (ess_hist, resampled_hist, d_log_z_hist) = jax.lax.scan(
        lambda c, i: step(c, i, last=False), carry, head
    )
    carry, last_info = step(carry, tail, last=True)
    ess_hist, resampled_hist, d_log_z_hist = (
        jnp.concatenate([h, jnp.asarray(e)[None]])
        for h, e in zip((ess_hist, resampled_hist, d_log_z_hist), last_info, strict=True)
    )
    xs, cache, log_w, log_z = carry
    weights, log_sum = normalize(log_w)
    collapsed = ~jnp.isfinite(log_sum)
    normalized = jnp.where(collapsed, -jnp.inf, log_w - jnp.where(collapsed, 0.0, log_sum))
    rewards = jnp.where(cache[3], jnp.nan, cache[0])
    info = SMCInfo(ess_hist, resampled_hist, d_log_z_hist, ess(log_w), collapsed)
    nfe = jnp.asarray(n * num_steps, jnp.int32)
    return AlignmentResult(xs, normalized, rewards, log_z, nfe, info)


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
def _sanitize_potential(r, grad, v):
    """Zero the reward and gradient of a particle whose reward or gradient is non-finite and
    flag it (its log-weight becomes ``−inf``); the cache is ``(r, grad, v, bad)``."""
    axes = tuple(range(1, grad.ndim))
    bad = ~jnp.isfinite(r) | ~jnp.all(jnp.isfinite(grad), axis=axes)
    expand = bad.reshape(bad.shape + (1,) * len(axes))
    return jnp.where(bad, 0.0, r), jnp.where(expand, 0.0, grad), v, bad


def _concrete(value, name: str) -> np.ndarray:
    try:
        array = concrete_value(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be an array of numbers.") from None
    if array is None:
        raise ValueError(f"`{name}` must be concrete (not traced).")
    return array


def _checked_grid(grid) -> np.ndarray:
    times = _concrete(grid, "grid")
    check_grid(times)  # 1-D, >= 2 times, strictly decreasing in [0, 1]; message names `grid`
    if times[0] != 1.0 or times[-1] != 0.0:
        raise ValueError(f"`grid` must run from 1 to 0, got {times[0]} ... {times[-1]}.")
    return times


def _checked_schedule(schedule, num_steps: int) -> np.ndarray:
    if schedule is None:
        return np.ones(num_steps + 1)
    lambdas = _concrete(schedule, "schedule")
    if lambdas.shape != (num_steps + 1,):
        raise ValueError(
            f"`schedule` must have shape ({num_steps + 1},) (one λ per grid time), "
            f"got {lambdas.shape}."
        )
    if not (np.all(lambdas >= 0.0) and np.all(lambdas <= 1.0)):
        raise ValueError("`schedule` values must lie in [0, 1].")
    if lambdas[-1] != 1.0:
        raise ValueError(f"`schedule` must end at λ_T = 1 (the target p*), got {lambdas[-1]}.")
    return lambdas


def _checked_threshold(threshold) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        raise ValueError(
            f"`ess_threshold` must be a number in [0, 1], got {threshold!r}."
        ) from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`ess_threshold` must be in [0, 1], got {threshold!r}.")
    return value
