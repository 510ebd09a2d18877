r"""Sequential Monte Carlo over the denoising grid, with a twisted or a bootstrap proposal.

One SMC (ALGORITHMS.md §5) over ``1 = t_0 > t_1 > … > t_T = 0`` whose parts are swapped by
configuration: the proposal (``"twisted"``: TDS / DAS / Ψ-Sampler; ``"bootstrap"``: FK
steering), the potential (``"difference"`` — the twisted-SMC weights —, or FK steering's
``"max"``, ``"sum"``, ``"current"``), the tempering schedule ``λ``, the resampling scheme and
the ESS threshold ``κ`` (``κ = 1``: every step, as TDS). ``lax.scan`` over the steps, ``vmap``
over the particles, float32 (or wider) sampler math.

Step ``i`` from ``t = t_i`` to ``t' = t_{i+1}``, with the cached ``r_t = r(x̂0(x, t))``,
``∇r_t`` and ``v = v(x, t)`` of every particle:

.. math::

    &\text{if } \mathrm{ESS}(ℓ) ≤ κN:\ \text{resample (particles and caches)},\ ℓ ← 0
     \quad(\text{otherwise keep and accumulate } ℓ)\\
    &μ = x + Δ[−v + \tfrac12 g(t)^2 s],\quad σ = g(t)\sqrt{Δ},\quad
     G = λ_{t'} ∇r_t / α\ (\text{twisted}),\ G = 0\ (\text{bootstrap})\\
    &x' = μ + σ^2 G + σ z\\
    &Δℓ = −⟨x' − μ, G⟩ + \tfrac{σ^2}{2}‖G‖^2 + \log G_{i+1}\\
    &\log\hat Z ← \log\hat Z + \log \textstyle\sum_i W_i e^{Δℓ_i},\quad ℓ ← ℓ + Δℓ

where the first two terms of ``Δℓ`` are ``log p(x'|x) − log q(x'|x)`` and ``log G_{i+1}`` is
the potential. With ``s_j = λ_j r_{t_j}(x_j)/α`` along a particle's path and
``Ψ_i = Σ_{j ≤ i} log G_j`` the potentials applied so far:

- ``"difference"``: ``log G_{i+1} = s_{i+1} − s_i`` (so ``Ψ_i = s_i``; TDS, DAS, Ψ-Sampler),
- ``"max"``: ``log G_{i+1} = max_{j ≤ i+1} s_j``; ``"sum"``: ``Σ_{j ≤ i+1} s_j``;
  ``"current"``: ``s_{i+1}`` (FK steering),
- at the last step every potential is ``log G_T = r(x_T)/α − Ψ_{T−1}``, so the product of all
  potentials is ``e^{r(x_T)/α}`` and the target is ``p*_0`` whatever the choice.

``Ẑ`` is unbiased for every choice, but the variance differs: ``"sum"`` stacks ``T(T+1)/2``
rewards into ``Ψ`` and its final correction, so its weights grow heavy tails as ``α`` shrinks
(measured on the linear-Gaussian test model, 10 steps: ``sd(log Ẑ)`` 0.2 at ``α = 1``, 0.8 at
0.3, and at 0.05 a sample mean of ``Ẑ`` hundreds of standard errors below ``Z``).

At ``t' = 0`` the reward is the exact ``r(x')`` (``x̂0(x', 0) = x'``; no model call).
The initial log-weights are ``ℓ_0 = ℓ_init + log G_0``, ``log G_0 = s_0``, where ``ℓ_init``
(``initial_log_weights``) says how the particles were drawn relative to the prior (0 for prior
draws, ``−r_init/α_init`` for draws from ``π_init``). ``log Ẑ`` starts at ``log_mean_exp(ℓ_0)``.
The final weights are returned as they are (no resampling after the last step), so no
information is lost.

**Cost.** ``N`` potential evaluations (model forward and backward) at ``t_0`` and ``N`` after
every step except the last: ``nfe = N·T`` model evaluations in all with the Tweedie predictor,
each with its gradient; a flow-map predictor adds the exact count of its ODE solves.

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
from jax.sharding import Mesh

from psijax._checks import concrete_value
from psijax.align.problem import RewardProblem
from psijax.align.result import AlignmentResult
from psijax.flows.sde import Diffusion, Transition, denoising_grid, transition_from_velocity
from psijax.smc.resampling import get_scheme
from psijax.smc.sharding import check_divisible, check_mesh, constrain, map_particles
from psijax.smc.weights import (
    check_threshold,
    ess,
    log_mean_exp,
    log_normalizer_increment,
    normalize,
    resample_if_needed,
    sanitize,
)

__all__ = ["SMCInfo", "AlignmentResult", "run_smc", "PROPOSALS", "POTENTIALS"]

PROPOSALS = ("twisted", "bootstrap")
POTENTIALS = ("difference", "max", "sum", "current")


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


def run_smc(
    rng_key: PRNGKey,
    problem: RewardProblem,
    initial_particles: ArrayLike,
    initial_log_weights: ArrayLike | None = None,
    *,
    grid: ArrayLike,
    diffusion: Diffusion,
    proposal: str = "twisted",
    potential: str = "difference",
    schedule: ArrayLike | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    mesh: Mesh | None = None,
) -> AlignmentResult:
    r"""Run one SMC over ``grid`` from weighted particles at ``t_0 = 1`` (module docstring).

    Parameters
    ----------
    rng_key
        PRNG key.
    problem
        The :class:`RewardProblem`; its x0-predictor gives the potentials ``r(x̂0(x, t))``.
    initial_particles
        ``(N, *event_shape)`` particles at ``t = 1``.
    initial_log_weights
        ``(N,)`` log-weights of the particles **relative to prior draws**,
        ``log N(x; 0, I) − log q(x)`` up to a constant for particles drawn from ``q``
        (ALGORITHMS.md §5): ``None`` or zeros for prior draws, ``−r_init(x)/α_init`` for draws
        from ``π_init`` (:func:`psijax.align.init.initial_particles` returns them). The SMC adds
        its own initial potential ``λ_0·r(x̂0(x, 1))/α``.
    grid
        Concrete times ``1 = t_0 > … > t_T = 0``, ``T ≥ 1``.
    diffusion
        The sampler's :class:`psijax.flows.sde.Diffusion` (the untwisted kernel ``p``).
    proposal
        ``"twisted"`` (``q = N(μ + σ²G, σ²I)``) or ``"bootstrap"`` (``q = p``).
    potential
        ``"difference"``, ``"max"``, ``"sum"`` or ``"current"`` (module docstring).
    schedule
        ``None`` (``λ ≡ 1``) or a concrete array of ``T + 1`` values in ``[0, 1]`` with
        ``λ_T = 1`` (tempering; the proposal of step ``i`` uses ``λ_{i+1}``).
    resampling
        A scheme name of :func:`psijax.smc.resampling.get_scheme`.
    ess_threshold
        ``κ ∈ [0, 1]``: resample when ``ESS ≤ κN``.
    mesh
        A :class:`jax.sharding.Mesh` to shard the particles over (``N`` a multiple of its
        device count), or ``None`` (:mod:`psijax.smc.sharding`).

    Returns
    -------
    :class:`AlignmentResult` with ``info`` an :class:`SMCInfo`; ``log_normalizer`` estimates
    ``log Z`` for prior draws and ``log(Z/Z_init)`` for draws from ``π_init``.

    Raises
    ------
    ValueError
        Naming the invalid argument (checked before anything runs).

    """
    if not isinstance(problem, RewardProblem):
        raise ValueError(f"`problem` must be a RewardProblem, got {type(problem).__name__}.")
    if not isinstance(diffusion, Diffusion):
        raise ValueError(f"`diffusion` must be a Diffusion, got {type(diffusion).__name__}.")
    if proposal not in PROPOSALS:
        raise ValueError(f"`proposal` must be one of {PROPOSALS}, got {proposal!r}.")
    if potential not in POTENTIALS:
        raise ValueError(f"`potential` must be one of {POTENTIALS}, got {potential!r}.")
    scheme = get_scheme(resampling)
    times = denoising_grid(None, grid)
    num_steps = times.shape[0] - 1
    lambdas = _checked_schedule(schedule, num_steps)
    threshold = check_threshold(ess_threshold, "ess_threshold")
    if threshold is None:
        raise ValueError("`ess_threshold` must be concrete (not traced).")

    x = jnp.asarray(initial_particles)
    event_shape = tuple(problem.event_shape)
    if x.ndim != 1 + len(event_shape) or x.shape[1:] != event_shape or x.shape[0] < 1:
        raise ValueError(
            f"`initial_particles` must have shape (N, *{event_shape}) with N >= 1, got {x.shape}."
        )
    n = x.shape[0]
    check_divisible(check_mesh(mesh), n, "num_particles")
    dtype = jnp.result_type(jnp.float32, x.dtype)
    if initial_log_weights is None:
        initial_log_weights = jnp.zeros((n,), dtype)
    log_w0 = jnp.asarray(initial_log_weights)
    if log_w0.shape != (n,):
        raise ValueError(f"`initial_log_weights` must have shape ({n},), got {log_w0.shape}.")

    x = constrain(x.astype(dtype), mesh)
    times = jnp.asarray(times, dtype)
    lambdas = jnp.asarray(lambdas, dtype)
    alpha = jnp.asarray(problem.alpha, dtype)
    twisted = proposal == "twisted"
    potential_and_grad = map_particles(problem.potential_and_grad, mesh, in_axes=(0, None))
    reward = map_particles(problem.reward, mesh)

    def evaluate(xs, t, lam):
        """The cache ``Cache`` of the particles at time ``t`` and the NFE it cost."""
        r, g, v, nfe = potential_and_grad(xs, t)
        r, g, bad = _sanitize_potential(r.astype(dtype), g.astype(dtype))
        return Cache(r, g, v.astype(dtype), bad, lam * r / alpha, lam * r / alpha), jnp.sum(nfe)

    def move(key, xs, cache, t, t_next, lam_next):
        """Propose ``x'`` and return it with ``log p − log q`` per particle."""
        trans = jax.vmap(
            transition_from_velocity,
            in_axes=(0, 0, None, None, None),
            out_axes=Transition(0, None),  # σ depends on the times only
        )(xs, cache.velocity, t, t_next, diffusion)
        sigma = trans.std.astype(dtype)
        mean = trans.mean.astype(dtype)
        z = jax.random.normal(key, xs.shape, dtype)
        if not twisted:
            return mean + sigma * z, jnp.zeros((n,), dtype)
        g = lam_next * cache.grad / alpha
        shift = sigma * z + sigma**2 * g  # x' − μ
        axes = tuple(range(1, xs.ndim))
        log_p_minus_q = -jnp.sum(shift * g, axis=axes) + 0.5 * sigma**2 * jnp.sum(g * g, axis=axes)
        return mean + shift, log_p_minus_q

    def log_potential(cache, new):
        """``log G`` of the step and the new path statistics ``(Ψ, stat)`` (module docstring)."""
        s = new.path_potential  # s_{i+1}, set by `evaluate`
        if potential == "difference":
            return s - cache.path_potential, s, s
        if potential == "max":
            stat = jnp.maximum(cache.stat, s)
        elif potential == "sum":
            stat = cache.stat + s
        else:  # "current"
            stat = s
        return stat, cache.path_potential + stat, stat

    def step(carry, inputs, last: bool):
        xs, cache, log_w, log_z, nfe = carry
        key, t, t_next, lam, lam_next = inputs
        key_resample, key_move = jax.random.split(key)
        (xs, cache), log_w, _, resampled, ess_before = resample_if_needed(
            key_resample, log_w, (xs, cache), threshold, scheme
        )
        xs, cache = constrain((xs, cache), mesh)  # the moved particles, back on their devices
        x_next, log_p_minus_q = move(key_move, xs, cache, t, t_next, lam_next)
        if last:  # t' = 0: the exact reward, no model call; log G_T = r/α − Ψ_{T−1}
            r_next = reward(x_next).astype(dtype)
            bad_next = ~jnp.isfinite(r_next)
            r_next = jnp.where(bad_next, 0.0, r_next)
            s_next = lam_next * r_next / alpha
            log_g = s_next - cache.path_potential
            new = cache._replace(reward=r_next, bad=bad_next, path_potential=s_next, stat=s_next)
        else:
            new, step_nfe = evaluate(x_next, t_next, lam_next)
            log_g, path_potential, stat = log_potential(cache, new)
            new = new._replace(path_potential=path_potential, stat=stat)
            nfe = nfe + step_nfe
        increment = jnp.where(new.bad | cache.bad, -jnp.inf, log_p_minus_q + log_g)
        d_log_z = log_normalizer_increment(log_w, increment)
        log_w = sanitize(log_w + increment)
        return (x_next, new, log_w, log_z + d_log_z, nfe), (ess_before, resampled, d_log_z)

    cache0, nfe0 = evaluate(x, times[0], lambdas[0])
    log_w = sanitize(jnp.where(cache0.bad, -jnp.inf, log_w0.astype(dtype) + cache0.path_potential))
    carry = (x, cache0, log_w, log_mean_exp(log_w), nfe0)
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
    xs, cache, log_w, log_z, nfe = carry
    weights, log_sum = normalize(log_w)
    collapsed = ~jnp.isfinite(log_sum)
    normalized = jnp.where(collapsed, -jnp.inf, log_w - jnp.where(collapsed, 0.0, log_sum))
    rewards = jnp.where(cache.bad, jnp.nan, cache.reward)
    info = SMCInfo(ess_hist, resampled_hist, d_log_z_hist, ess(log_w), collapsed)
    return AlignmentResult(xs, normalized, rewards, log_z, nfe.astype(jnp.int32), info)


class Cache(NamedTuple):
    """Per-particle values carried (and resampled) with the particles.

    reward, grad, velocity
        ``r(x̂0(x, t))``, its gradient w.r.t. ``x`` and ``v(x, t)`` at the current time.
    bad
        The reward or its gradient was not finite (the particle has weight zero).
    path_potential
        ``Ψ_i``: the log-potentials applied along the particle's path so far.
    stat
        The running statistic of FK steering's potential (max or sum of ``s_j``).

    """

    reward: Array
    grad: Array
    velocity: Array
    bad: Array
    path_potential: Array
    stat: Array


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
def _sanitize_potential(r, grad):
    """Zero the reward and gradient of a particle whose reward or gradient is non-finite and
    flag it (its log-weight becomes ``−inf``): ``(r, grad, bad)``."""
    axes = tuple(range(1, grad.ndim))
    bad = ~jnp.isfinite(r) | ~jnp.all(jnp.isfinite(grad), axis=axes)
    expand = bad.reshape(bad.shape + (1,) * len(axes))
    return jnp.where(bad, 0.0, r), jnp.where(expand, 0.0, grad), bad


def _concrete(value, name: str) -> np.ndarray:
    try:
        array = concrete_value(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be an array of numbers.") from None
    if array is None:
        raise ValueError(f"`{name}` must be concrete (not traced).")
    return array


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
