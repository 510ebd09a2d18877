r"""Single-particle guidance baselines: DPS, FreeDoM and best-of-N (docs/algorithms.md §6).

``N`` independent particles start from ``x_{t_0} ~ N(0, I)`` and follow the stochastic sampler
of docs/algorithms.md §2 along a grid ``1 = t_0 > t_1 > … > t_T = 0``. Step ``i`` goes from
``t = t_i`` to ``t' = t_{i+1}``, ``Δ = t − t'``. There is no resampling and no weighting: the
particles never interact.

**DPS** (the guided step, shared by DPS and FreeDoM):

.. math::

    r_t = r(\hat x_0(x, t)), \qquad G = ∇_x r_t \quad(\text{through the predictor and the model})

    μ = x + Δ\,[−v(x, t) + \tfrac12 g(t)^2 s(x, t)], \qquad σ = g(t)\sqrt{Δ}

    x' = μ + σ z + ζ\, Δ\, \hat G, \qquad z \sim N(0, I), \qquad
    \hat G = G \ \text{ or }\ \hat G = \frac{G}{|r_t| + ε}\ (\texttt{normalize=True})

with ``ζ = guidance_scale`` and ``ε =`` :data:`NORMALIZE_EPS`. The factor ``Δ`` makes ``ζ`` a
rate: the total push ``Σ_i ζ Δ_i Ĝ ≈ ∫ ζ Ĝ dt`` does not grow with the number of steps.
``ζ = 0`` is the unguided sampler :func:`psijax.flows.sde.sample`.

**FreeDoM** (time travel): at every step whose current time lies in the window,
``t_i ∈ [lo, hi]``, the guided step is followed ``K = num_repeats`` times by

.. math::

    x ← a\,x' + b\,ξ, \quad ξ \sim N(0, I), \quad a = \frac{1 − t}{1 − t'}, \quad
    b^2 = t^2 − a^2 t'^2 \qquad(\text{re-noise } t' → t,\ \text{docs/algorithms.md §1})

    x' ← \text{guided step from } x \text{ at } t

so such a step makes ``1 + K`` guided steps. ``K = 0`` (or a window holding no grid time) is
DPS, bit for bit.

**Best-of-N**: ``N`` unguided samples (``ζ = 0``, velocity only, no gradient) and the one with
the highest exact reward ``r(x_T)`` is kept (ties: the first; a non-finite reward never wins).

**Cost** (``nfe``, int32). With the Tweedie predictor each guided step is one model evaluation
with its backward pass: DPS ``N·T``, FreeDoM ``N·(T + K·W)`` with ``W`` the number of window
steps (a static count: window membership is read off the concrete grid). With another
predictor a guided step costs what :meth:`RewardProblem.potential_and_grad` reports (one
velocity call plus the predictor's evaluations, e.g. the exact count of the flow map's ODE
solve, per particle), so ``nfe`` may be data-dependent. Best-of-N costs ``N·T`` forward
evaluations without a backward pass. The final reward ``r(x_T)`` at ``t_T = 0`` is exact and
needs no model call.

**Randomness.** Particle ``i`` draws everything from ``fold_in(rng_key, i)``, split into
``(k_init, k_path)``: ``x_{t_0} = normal(k_init)``; step ``i`` uses ``split(k_path, T)[i]`` for
``z`` (the convention of :func:`psijax.flows.sde.sample`, so best-of-N and ``ζ = 0`` DPS
reproduce ``sample(k_path, velocity_fn, x_{t_0}, grid, diffusion)``); FreeDoM's repeat
``j = 1 … K`` of a step with key ``k`` uses ``split(fold_in(k, j)) = (k_ξ, k_z)``. A particle's
path therefore does not depend on ``N``.

**Invalid values.** Where the reward or the gradient at a particle is NaN/inf (or the scaled
push overflows), that particle's guidance term is zeroed for that step: the guidance never puts
a NaN into the state. A particle whose final reward (or sample) is not finite is reported with
reward NaN and log-weight ``−inf``.

**Outputs** (:class:`psijax.align.result.AlignmentResult`). DPS and FreeDoM: uniform
log-weights ``−log N_valid`` over the valid particles. Best-of-N returns all ``N`` samples with
one-hot log-weights (``0`` at the kept sample, ``−inf`` elsewhere; all ``−inf`` if no reward is
finite): the method keeps one sample. ``log_normalizer`` is NaN (no estimate of ``Z``).
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey
from jax.sharding import Mesh

from psijax._checks import check_int, check_real
from psijax._tree import tree_normal
from psijax.align.predictors import Tweedie
from psijax.align.problem import (
    RewardProblem,
    check_problem,
    sampler_transition,
    with_particle_chunk,
)
from psijax.align.result import AlignmentResult, SamplerInfo
from psijax.flows.interpolant import renoise
from psijax.flows.sde import (
    Diffusion,
    denoising_grid,
    step,
    transition_from_velocity,
)
from psijax.smc.sharding import check_divisible, check_mesh, constrain, map_particles

__all__ = ["dps", "freedom", "best_of_n", "NORMALIZE_EPS", "DEFAULT_NUM_PARTICLES"]

DEFAULT_NUM_PARTICLES = 20
"""Particles when neither ``num_particles`` nor ``nfe_budget`` is given (the paper's 20)."""

NORMALIZE_EPS = 1e-6
"""``ε`` of the normalized guidance ``G / (|r_t| + ε)``: keeps the division finite at ``r = 0``."""


# ----------------------------------------------------------------------------------------------
# Public samplers
# ----------------------------------------------------------------------------------------------
def dps(
    rng_key: PRNGKey,
    problem: RewardProblem,
    *,
    num_particles: int | None = None,
    num_steps: int | None = 25,
    guidance_scale: float = 1.0,
    normalize: bool = False,
    diffusion: Diffusion | None = None,
    grid: ArrayLike | None = None,
    nfe_budget: int | None = None,
    mesh: Mesh | None = None,
    particle_chunk: int | None = None,
) -> AlignmentResult:
    r"""Diffusion posterior sampling: the stochastic sampler plus ``ζΔ∇_x r(x̂0(x, t))``.

    Each step (module docstring, Chung et al. 2023, "Diffusion Posterior Sampling for General
    Noisy Inverse Problems"; with a reward in place of the likelihood):

    .. math::

        x' = μ(x) + σ z + ζ\, Δ\, \hat G(x, t), \qquad
        \hat G = ∇_x r(\hat x_0(x, t))\ \big/\ (|r(\hat x_0(x, t))| + ε)^{[\text{normalize}]}

    Parameters
    ----------
    rng_key
        PRNG key (see the module docstring for how it is used per particle).
    problem
        The :class:`RewardProblem`. Any x0-predictor: the gradient is taken through it
        (:meth:`RewardProblem.potential_and_grad`). ``α`` is not used (guidance has no target
        temperature).
    num_particles
        ``N ≥ 1`` independent particles; ``None``: from ``nfe_budget``, else 20.
    num_steps
        ``T ≥ 1``: the grid is :func:`psijax.flows.uniform_grid` ``(T)``. With ``grid`` given,
        ``None`` or ``len(grid) − 1``.
    guidance_scale
        ``ζ ≥ 0`` (finite; may be traced, then unchecked): the guidance rate per unit time.
    normalize
        Divide the gradient by ``|r_t| + ε`` (the reference lab's normalized DPS).
    diffusion
        The sampler's kernel (a :class:`psijax.flows.sde.Diffusion` or
        :class:`psijax.flows.distilled.Renoising`); default: the problem's ``transition``, else
        :func:`psijax.flows.sde.reference_diffusion` (``g(t) = t(2 − t)``, the stochastic
        sampler of the paper's baselines). :func:`psijax.flows.sde.ode_diffusion` gives DPS on
        the Euler ODE.
    grid
        Optional concrete times ``1 = t_0 > … > t_T = 0``.
    nfe_budget
        ``B``: instead of ``num_particles``, the most particles that ``B`` model evaluations
        pay for, ``N = ⌊B/T⌋`` (Tweedie predictor; FreeDoM ``⌊B/(T + K·W)⌋``).
    mesh
        A :class:`jax.sharding.Mesh` to shard the particles over (``N`` a multiple of its device
        count), or ``None``; particle ``i``'s randomness comes from ``fold_in(rng_key, i)``, so
        the result does not depend on it (:mod:`psijax.smc.sharding`).
    particle_chunk
        Evaluate the model and reward on at most this many particles at a time (per device),
        bounding the memory of a pass by the chunk; the same results
        (:attr:`RewardProblem.particle_chunk`). ``None``: the problem's setting.

    Returns
    -------
    :class:`AlignmentResult` with uniform log-weights over the valid particles,
    ``log_normalizer = NaN`` and ``nfe = N·T`` (Tweedie; each evaluation with its backward
    pass).

    Raises
    ------
    ValueError
        Naming the invalid argument.
    """
    return _guided_sampler(
        rng_key,
        problem,
        num_particles,
        num_steps,
        guidance_scale,
        normalize,
        diffusion,
        grid,
        nfe_budget,
        mesh,
        particle_chunk,
    )


def freedom(
    rng_key: PRNGKey,
    problem: RewardProblem,
    *,
    num_particles: int | None = None,
    num_steps: int | None = 25,
    guidance_scale: float = 1.0,
    normalize: bool = False,
    num_repeats: int = 3,
    window: tuple[float, float] = (0.3, 0.7),
    diffusion: Diffusion | None = None,
    grid: ArrayLike | None = None,
    nfe_budget: int | None = None,
    mesh: Mesh | None = None,
    particle_chunk: int | None = None,
) -> AlignmentResult:
    r"""FreeDoM: the DPS guided step plus time travel inside a window of the schedule.

    At a step ``t → t'`` with ``t ∈ [lo, hi]``, after the guided step (Yu et al. 2023,
    "FreeDoM: Training-Free Energy-Guided Conditional Diffusion Model"), ``K`` times:

    .. math::

        x ← a x' + b ξ\ (\text{re-noise } t' → t), \qquad x' ← μ(x) + σ z + ζ Δ \hat G(x, t)

    Parameters
    ----------
    rng_key, problem, num_particles, num_steps, guidance_scale, normalize, diffusion, grid
        As in :func:`dps`.
    nfe_budget, mesh, particle_chunk
        As in :func:`dps`.
    num_repeats
        ``K ≥ 0`` time-travel repeats per window step; ``K = 0`` is :func:`dps` exactly.
    window
        ``(lo, hi)`` with ``0 ≤ lo < hi ≤ 1``: steps whose current time ``t_i`` (``i < T``, the
        grid value as used, compared in float64) satisfies ``lo ≤ t_i ≤ hi`` time-travel.

    Returns
    -------
    :class:`AlignmentResult` as :func:`dps`, with ``nfe = N·(T + K·W)`` (Tweedie), ``W`` the
    number of window steps.

    Raises
    ------
    ValueError
        Naming the invalid argument.
    """
    num_repeats = check_int(num_repeats, "num_repeats", 0)
    window = _check_window(window)
    return _guided_sampler(
        rng_key,
        problem,
        num_particles,
        num_steps,
        guidance_scale,
        normalize,
        diffusion,
        grid,
        nfe_budget,
        mesh,
        particle_chunk,
        num_repeats=num_repeats,
        window=window,
    )


def best_of_n(
    rng_key: PRNGKey,
    problem: RewardProblem,
    *,
    num_particles: int | None = None,
    num_steps: int | None = 25,
    diffusion: Diffusion | None = None,
    grid: ArrayLike | None = None,
    nfe_budget: int | None = None,
    mesh: Mesh | None = None,
    particle_chunk: int | None = None,
) -> AlignmentResult:
    r"""Best-of-N: ``N`` unguided samples, keep the one with the highest exact reward.

    .. math::

        x^{(k)} \sim p_{\text{sampler}}, \qquad
        k^* = \arg\max_k r(x^{(k)})\ (\text{first on ties; non-finite rewards never win})

    Parameters
    ----------
    rng_key, problem, num_particles, num_steps, diffusion, grid, nfe_budget, mesh, particle_chunk
        As in :func:`dps` (``N = ⌊B/T⌋`` forward evaluations from a budget). Any x0-predictor is
        accepted (none is used).

    Returns
    -------
    :class:`AlignmentResult` holding all ``N`` samples and rewards, log-weights ``0`` at
    ``k*`` and ``−inf`` elsewhere (all ``−inf`` when no reward is finite),
    ``log_normalizer = NaN`` and ``nfe = N·T`` forward evaluations (no backward pass).

    Raises
    ------
    ValueError
        Naming the invalid argument.

    """
    problem = with_particle_chunk(check_problem(problem), particle_chunk)
    grid = denoising_grid(num_steps, grid)
    times = jnp.asarray(grid, jnp.float32)
    n = _particle_count(num_particles, nfe_budget, grid.shape[0] - 1, mesh)
    diffusion = sampler_transition(problem, diffusion)

    def one(key, y, t, t_next):
        return step(key, problem.velocity_fn, y, t, t_next, diffusion)[0]

    one = map_particles(one, mesh, (0, 0, None, None), problem.particle_chunk)

    def body(x, inputs):
        keys, t, t_next = inputs
        return one(keys, x, t, t_next), None

    num = times.shape[0] - 1
    x, keys = _initial_particles(rng_key, n, problem.event_shape, num, mesh)
    x, _ = jax.lax.scan(body, x, (keys, times[:-1], times[1:]))
    return _result(problem, x, jnp.asarray(n * num, jnp.int32), best_only=True, mesh=mesh)


# ----------------------------------------------------------------------------------------------
# The guided step and the loop
# ----------------------------------------------------------------------------------------------
def _guided_sampler(
    rng_key: PRNGKey,
    problem: RewardProblem,
    num_particles,
    num_steps,
    guidance_scale,
    normalize,
    diffusion,
    grid,
    nfe_budget,
    mesh,
    particle_chunk,
    num_repeats: int = 0,
    window: tuple[float, float] = (0.0, 1.0),
) -> AlignmentResult:
    """DPS (``num_repeats = 0``) and FreeDoM: validate, then scan the guided step."""
    problem = with_particle_chunk(check_problem(problem), particle_chunk)
    grid = denoising_grid(num_steps, grid)
    times = jnp.asarray(grid, jnp.float32)
    current = grid[:-1]
    in_window = (current >= window[0]) & (current <= window[1])
    repeats = np.where(in_window, num_repeats, 0).astype(np.int32)
    per_particle = int(repeats.size + repeats.sum())  # guided steps of one particle
    n = _particle_count(num_particles, nfe_budget, per_particle, mesh, problem=problem)
    diffusion = sampler_transition(problem, diffusion)
    check_real(guidance_scale, "guidance_scale", ge=0.0)  # a traced ζ is used unchecked
    scale = guidance_scale
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"`normalize` must be a bool, got {normalize!r}.")

    def guided(key, x, t, t_next):
        return _guided_step(key, problem, x, t, t_next, diffusion, scale, bool(normalize))

    x, keys = _initial_particles(rng_key, n, problem.event_shape, len(repeats), mesh)
    guided = map_particles(guided, mesh, (0, 0, None, None), problem.particle_chunk)
    x, nfe = _guided_scan(guided, x, keys, times, repeats)
    return _result(problem, x, jnp.sum(nfe, dtype=jnp.int32), best_only=False, mesh=mesh)


def _guidance(reward: Array, grad: Array, step_scale: Array, normalize: bool) -> Array:
    """The push ``ζΔ·Ĝ``, zero wherever the reward, the gradient or the push is not finite."""
    direction = grad / (jnp.abs(reward) + NORMALIZE_EPS) if normalize else grad
    push = step_scale * direction
    finite = jnp.isfinite(reward) & jnp.all(jnp.isfinite(push))
    return jnp.where(finite, push, jnp.zeros_like(push))


def _guided_step(
    rng_key: PRNGKey,
    problem: RewardProblem,
    x: Array,
    t: Array,
    t_next: Array,
    diffusion: Diffusion,
    scale: ArrayLike,
    normalize: bool,
) -> tuple[Array, Array]:
    """One guided step ``x' = μ + σz + ζΔĜ`` of a single sample; returns ``(x', nfe)``."""
    reward, grad, velocity, nfe = problem.potential_and_grad(x, t)
    trans = transition_from_velocity(x, velocity, t, t_next, diffusion)
    z = tree_normal(rng_key, trans.mean)
    push = _guidance(reward, grad, scale * (t - t_next), normalize).astype(trans.mean.dtype)
    return (trans.mean + trans.std * z + push).astype(x.dtype), nfe


def _guided_scan(
    guided: Callable, x: Array, keys: Array, times: Array, repeats: np.ndarray
) -> tuple[Array, Array]:
    """``lax.scan`` of the batched guided step over the grid, with ``repeats[i]`` time travels.

    ``guided(keys, x, t, t_next) -> (x', nfe)`` acts on all particles. Returns the final
    particles and the per-particle NFE.
    """

    def travel(j, state, keys, t, t_next):
        x, nfe = state
        sub = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, j + 1)))(keys)
        x = jax.vmap(renoise, in_axes=(0, 0, None, None))(sub[:, 0], x, t_next, t)
        x, cost = guided(sub[:, 1], x, t, t_next)
        return x, nfe + cost

    def body(state, inputs):
        keys, t, t_next, count = inputs
        x, nfe = state
        x, cost = guided(keys, x, t, t_next)
        state = (x, nfe + cost)
        if repeats.any():  # static: DPS never builds the loop
            state = jax.lax.fori_loop(0, count, lambda j, s: travel(j, s, keys, t, t_next), state)
        return state, None

    nfe = jnp.zeros(x.shape[0], jnp.int32)
    inputs = (keys, times[:-1], times[1:], jnp.asarray(repeats, jnp.int32))
    (x, nfe), _ = jax.lax.scan(body, (x, nfe), inputs)
    return x, nfe


def _initial_particles(
    rng_key: PRNGKey, num_particles: int, event_shape: tuple, num_steps: int, mesh
) -> tuple[Array, Array]:
    """``x_{t_0} ~ N(0, I)`` per particle and the step keys, shaped ``(T, N)`` for the scan."""

    def one(i):
        k_init, k_path = jax.random.split(jax.random.fold_in(rng_key, i))
        x = jax.random.normal(k_init, event_shape, jnp.float32)
        return x, jax.random.split(k_path, num_steps)

    x, keys = constrain(jax.vmap(one)(jnp.arange(num_particles)), mesh)
    return x, jnp.swapaxes(keys, 0, 1)


def _result(problem: RewardProblem, x: Array, nfe: Array, best_only: bool, mesh) -> AlignmentResult:
    """Exact rewards at ``t = 0`` (no model call), log-weights, and the guidance-method info."""
    reward = map_particles(problem.reward, mesh, chunk=problem.particle_chunk)(x)
    valid = jnp.isfinite(reward) & jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
    rewards = jnp.where(valid, reward, jnp.nan)
    if best_only:
        best = jnp.argmax(jnp.where(valid, reward, -jnp.inf))
        keep = (jnp.arange(x.shape[0]) == best) & jnp.any(valid)
        log_weights = jnp.where(keep, 0.0, -jnp.inf).astype(reward.dtype)
    else:
        log_count = jnp.log(jnp.sum(valid).astype(reward.dtype))
        log_weights = jnp.where(valid, -log_count, -jnp.inf)
    nan = jnp.asarray(jnp.nan, reward.dtype)
    info = SamplerInfo(None, None, jnp.asarray(0, jnp.int32), nfe, nan, nan)
    return AlignmentResult(x, log_weights, rewards, nan, nfe, info)


# ----------------------------------------------------------------------------------------------
# Argument checks (at build time, before anything runs)
# ----------------------------------------------------------------------------------------------
def count_or_budget(num_particles, nfe_budget, problem) -> int | None:
    """The checked ``num_particles`` (default :data:`DEFAULT_NUM_PARTICLES`) when no
    ``nfe_budget`` is given, else ``None`` after checking that the budget can be used: not both,
    and the problem's predictor is Tweedie (one evaluation per potential)."""
    if nfe_budget is None:
        default = DEFAULT_NUM_PARTICLES if num_particles is None else num_particles
        return check_int(default, "num_particles")
    if num_particles is not None:
        raise ValueError("Give `num_particles` or `nfe_budget`, not both.")
    if problem is not None and not isinstance(problem.x0_predictor, Tweedie):
        raise ValueError(
            "`nfe_budget` needs the Tweedie predictor (a flow-map or custom predictor's cost "
            "per evaluation is not known in advance); give `num_particles` and read "
            "`result.nfe`."
        )
    check_int(nfe_budget, "nfe_budget")
    return None


def _particle_count(num_particles, nfe_budget, per_particle: int, mesh, *, problem=None) -> int:
    """``N``: ``num_particles`` (default 20), or ``⌊B/per_particle⌋`` from ``nfe_budget = B``
    (evaluations of one particle along the grid; with a ``problem``, its predictor must be
    Tweedie, one evaluation per guided step). Checked against the mesh."""
    n, origin = count_or_budget(num_particles, nfe_budget, problem), ""
    if n is None:
        n = nfe_budget // per_particle
        if n < 1:
            raise ValueError(
                f"`nfe_budget`={nfe_budget} is too small for one particle over the grid."
            )
        origin = f" (from nfe_budget={nfe_budget})"
    check_divisible(check_mesh(mesh), n, "num_particles", origin)
    return n


def _check_window(window) -> tuple[float, float]:
    try:
        lo, hi = (float(w) for w in window)
    except (TypeError, ValueError):
        raise TypeError(f"`window` must be a pair (lo, hi) of numbers, got {window!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi <= 1.0):
        raise ValueError(f"`window` must satisfy 0 <= lo < hi <= 1, got {window!r}.")
    return lo, hi
