r"""Where Ψ-Sampler's initial stage pays off: dimension × reward sharpness, exact targets.

The paper's setting differs from the 2-D toys in three ways: a distilled model whose one-step
prediction is a sharp sample, high dimension, and rewards whose high region has little prior
mass. This study builds problems with exact answers along the last two axes and runs every
sampler at equal NFE on the ideal distilled model (the exact flow map as a one-step model, with
the re-noising kernel) or a learned one.

**Data** (:func:`regime_data`): six isotropic modes (std 0.5) with the unequal weights of the
rare-mode preset (0.30 … 0.05). In ``d = 2`` they lie on the ring of radius 4
(:func:`psijax.models.presets.unequal_six_modes`); in ``d ≥ 6`` at ``4·q_k`` along seeded
orthonormal directions ``q_k`` (a simplex: every pair ``4√2`` apart).

**Reward** (:func:`regime_problem`): a Gaussian likelihood on one feature,

.. math::

    r(x) = −\tfrac12 \big((eᵀx − b)/w\big)^2, \qquad α = 0.1,\ w = 0.5

with ``e`` the unit vector along ``μ_0 + μ_5``: the most common mode (0.30) and the rarest one
(0.05) have the same, largest feature, so the tilted target is bimodal with weights 6 : 1
whatever the threshold. The **sharpness** is the prior mass ``q`` of the reward's high region
``{eᵀx ≥ b}``, ``Σ_k w_k Φ̄((b − eᵀμ_k)/s)``; ``b`` is solved for each ``q`` in
``1e-1 … 1e-6``. The tilt is quadratic, so the target and ``log Z`` are exact
(:meth:`psijax.models.gmm.GaussianMixture.tilt_quadratic`).

**Models** (:func:`regime_model`): ``"oracle"``, :func:`psijax.flows.ode.distilled_velocity` of
the exact velocity (an ODE solve per evaluation, counted as one evaluation), and ``"learned"``,
an MLP distilled from that flow map (:mod:`psijax.models.distilled`), both with
:class:`psijax.flows.distilled.Renoising` as the problem's transition.

**Metrics** (:func:`evaluate`) of the weighted final particles: the weighted mean reward and
the best particle's (the paper's output), the weighted mass in the high region, the mode TV
(nearest mode) and MMD² (median bandwidth) to exact target draws, the ESS, and the error of
``log Ẑ`` against the exact ``log Z`` (NaN for chain starts, whose ``Ẑ`` estimates
``Z/Z_init``), and the initial stage's acceptance rate.
"""

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from psijax import metrics
from psijax.align import SAMPLERS, Prior, RewardProblem, Tempered, initial_stage
from psijax.experiments.methods import parse_method, sampler_options
from psijax.flows import ode
from psijax.flows.distilled import Renoising
from psijax.models import presets
from psijax.models.gmm import GaussianMixture
from psijax.models.isotropic import IsotropicMixture

__all__ = [
    "DIMS",
    "MASSES",
    "ALPHA",
    "WIDTH",
    "STD",
    "ORACLE_OPTIONS",
    "RegimeProblem",
    "regime_data",
    "regime_problem",
    "high_region_mass",
    "reward_fn",
    "regime_model",
    "evaluate",
    "reference_rows",
    "run_method",
]

DIMS = (2, 8, 32, 128, 512)
MASSES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
ALPHA = 0.1
WIDTH = 0.5
STD = 0.5
REFERENCE = "exact target (iid)"
REFERENCE_SIZE = 1000
RARE, COMMON = 5, 0
"""The two modes the reward favours equally: the rarest (0.05) and the most common (0.30)."""
ORACLE_OPTIONS = {"rtol": 1e-4, "atol": 1e-4, "max_steps": 256}
"""ODE tolerances of the oracle's flow map (Tsit5), far below the modes' std; a solve from a
particle thrown far off that needs more than ``max_steps`` steps (a typical one takes 40–60)
gives a NaN velocity and a zero-weight particle."""


class RegimeProblem(NamedTuple):
    """One cell of the study: data, reward and the exact target.

    ``direction`` ``e`` and ``threshold`` ``b`` of the reward, ``mass`` the prior mass of
    ``{eᵀx ≥ b}``; ``target`` ``∝ p·e^{r/α}`` with ``log_z``; ``occupancy`` the target's mass
    nearest each data mode (from exact draws).
    """

    dim: int
    mass: float
    data: IsotropicMixture
    direction: np.ndarray
    threshold: float
    target: GaussianMixture
    log_z: float
    occupancy: np.ndarray


def regime_data(dim: int, seed: int = 0) -> IsotropicMixture:
    """The six-mode data in ``dim`` dimensions (module docstring); ``dim`` is 2 or ≥ 6."""
    if dim == 2:
        ring = presets.unequal_six_modes()
        return IsotropicMixture(np.asarray(ring.weights), np.asarray(ring.means), STD)
    if not isinstance(dim, int) or dim < 6:
        raise ValueError(f"`dim` must be 2 or an int >= 6, got {dim!r}.")
    directions, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, 6)))
    weights = np.asarray(presets.unequal_six_modes().weights)
    return IsotropicMixture(weights, 4.0 * directions.T, STD)


def high_region_mass(data: IsotropicMixture, direction, threshold: float) -> float:
    """``P(eᵀx ≥ b) = Σ_k w_k Φ̄((b − eᵀμ_k)/s)`` under the data, in float64."""
    features = np.asarray(data.means, np.float64) @ np.asarray(direction, np.float64)
    tails = [0.5 * math.erfc((threshold - f) / (data.std * math.sqrt(2.0))) for f in features]
    return float(np.dot(np.asarray(data.weights, np.float64), tails))


def regime_problem(dim: int, mass: float, rng_key, *, num_draws: int = 20_000) -> RegimeProblem:
    """The cell ``(dim, mass)``: the threshold ``b`` with ``P(eᵀx ≥ b) = mass`` (bisection),
    the exact target and its mode occupancy from ``num_draws`` exact draws."""
    if not 0.0 < mass < 0.5:
        raise ValueError(f"`mass` must lie in (0, 0.5), got {mass!r}.")
    data = regime_data(dim)
    means = np.asarray(data.means, np.float64)
    direction = means[COMMON] + means[RARE]
    direction /= np.linalg.norm(direction)
    lo, hi = float(np.max(means @ direction)) - 10.0, float(np.max(means @ direction)) + 10.0
    for _ in range(200):  # P(eᵀx ≥ b) decreases in b
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if high_region_mass(data, direction, mid) > mass else (lo, mid)
    threshold = 0.5 * (lo + hi)
    center = threshold * direction
    precision = np.outer(direction, direction) / WIDTH**2
    target, log_z = jax.jit(GaussianMixture.tilt_quadratic)(data.mixture, center, precision, ALPHA)
    draws = target.sample(rng_key, num_draws)
    occupancy = np.asarray(metrics.mode_occupancy(draws, jnp.asarray(data.means)), np.float64)
    return RegimeProblem(dim, mass, data, direction, threshold, target, float(log_z), occupancy)


def reward_fn(direction) -> Callable:
    """``(x, b) -> r(x) = −½((eᵀx − b)/w)²``: the threshold is an argument, so one compiled
    program serves every sharpness of a dimension."""
    e = jnp.asarray(direction, jnp.float32)

    def reward(x, threshold):
        return -0.5 * ((x @ e - threshold) / WIDTH) ** 2

    return reward


def regime_model(data: IsotropicMixture, model: str = "oracle", params=None) -> Callable:
    """The velocity of the ``"oracle"`` distilled model (the exact flow map, an ODE solve per
    call) or of a ``"learned"`` one (``params`` of :func:`psijax.models.distilled.train_distilled`
    with their config, as ``(params, config)``)."""
    if model == "oracle":
        return ode.distilled_velocity(data.velocity, **ORACLE_OPTIONS)
    if model == "learned":
        from psijax.models import reflow

        if params is None:
            raise ValueError("the learned model needs `params=(params, config)`.")
        return reflow.velocity_fn(*params)
    raise ValueError(f"`model` must be 'oracle' or 'learned', got {model!r}.")


@jax.jit
def _metrics(samples, log_weights, rewards, features, threshold, reference, modes, occupancy):
    w = jnp.exp(log_weights - jax.scipy.special.logsumexp(log_weights))
    used = w > 0
    x = jnp.where(used[:, None], samples, 0.0)
    return {
        "ess": 1.0 / jnp.sum(w**2),
        "reward": jnp.sum(w * jnp.where(used, rewards, 0.0)),
        "high_mass": jnp.sum(w * (features >= threshold)),
        "mode_tv": metrics.mode_tv(x, modes, occupancy, weights=w),
        "mmd": metrics.mmd(x, reference, bandwidth="median", x_weights=w, biased=True),
    }


def evaluate(problem: RegimeProblem, result, reference, unbiased_normalizer: bool) -> dict:
    """The metrics of one run (module docstring) against ``reference`` exact target draws;
    ``unbiased_normalizer``: the run's ``log Ẑ`` estimates ``log Z`` (a prior or tempered
    start), else its error is NaN."""
    features = jnp.asarray(result.samples) @ jnp.asarray(problem.direction, jnp.float32)
    values = _metrics(
        result.samples,
        result.log_weights,
        result.rewards,
        features,
        problem.threshold,
        reference,
        jnp.asarray(problem.data.means),
        jnp.asarray(problem.occupancy, jnp.float32),
    )
    row = {k: float(v) for k, v in values.items()}
    rewards = np.asarray(result.rewards, np.float64)
    usable = np.isfinite(rewards) & (np.asarray(result.log_weights) > -np.inf)
    row["best_reward"] = float(rewards[usable].max()) if usable.any() else math.nan
    row["log_z_error"] = (
        float(result.log_normalizer) - problem.log_z if unbiased_normalizer else math.nan
    )
    info = getattr(result.info, "init", None)
    rate = getattr(info, "acceptance_rate", None)
    row["acceptance"] = float(jnp.mean(rate)) if rate is not None else math.nan
    return row


def _reference(problem: RegimeProblem) -> jax.Array:
    """The exact target draws every run of a cell is scored against (MMD²)."""
    return problem.target.sample(jax.random.key(99), REFERENCE_SIZE)


class _Draws(NamedTuple):
    """i.i.d. draws scored like a run (uniform weights; no normalizer, no chains)."""

    samples: jax.Array
    log_weights: jax.Array
    rewards: jax.Array
    log_normalizer: float = math.nan
    info: object = None


def reference_rows(
    problems: list[RegimeProblem], num_particles: int, *, budget: int, model: str, seeds: int
) -> list:
    """The metrics' floor: ``num_particles`` i.i.d. exact target draws per seed, uniformly
    weighted (method ``"exact target (iid)"``, NFE 0)."""
    rows = []
    for problem in problems:
        reward = jax.jit(jax.vmap(reward_fn(problem.direction), in_axes=(0, None)))
        reference = _reference(problem)
        for seed in range(seeds):
            x = problem.target.sample(jax.random.fold_in(jax.random.key(seed), 7), num_particles)
            uniform = jnp.full((num_particles,), -math.log(num_particles))
            draws = _Draws(x, uniform, reward(x, problem.threshold))
            row = {"dim": problem.dim, "mass": problem.mass, "model": model, "budget": budget}
            row |= {"method": REFERENCE, "seed": seed, "nfe": 0, "num_particles": num_particles}
            rows.append(row | evaluate(problem, draws, reference, unbiased_normalizer=False))
    return rows


class MethodRun(NamedTuple):
    """Per-(mass, seed) metric rows of one method in one dimension, and its timings (the
    first call, compilation included, and the median run after it, in seconds)."""

    rows: list
    compile_s: float
    run_s: float


def run_method(
    problems: list[RegimeProblem],
    velocity_fn: Callable,
    model: str,
    method: str,
    *,
    budget: int,
    num_steps: int = 25,
    seeds: int = 10,
    options: dict | None = None,
    budget_split: float = 0.5,
) -> MethodRun:
    """Run ``method`` on every problem of ``problems`` (one dimension, several masses) for
    ``seeds`` seeds at the NFE budget ``budget`` over ``num_steps`` steps, the initial stage
    taking ``budget_split`` of it; one compilation (the threshold is an argument). ``options``
    are extra sampler arguments (e.g. ``{"num_chains": 20}``)."""
    dims = {p.dim for p in problems}
    if len(dims) != 1:
        raise ValueError(f"`problems` must share one dimension, got {sorted(dims)}.")
    dim = dims.pop()
    parsed = parse_method(method)
    kwargs = sampler_options(parsed, budget, num_steps, budget_split=budget_split)
    kwargs |= dict(options or {})
    sampler = SAMPLERS[parsed.sampler]
    stage = kwargs.get("init", initial_stage(sampler))
    unbiased = stage is None or isinstance(stage, (Prior, Tempered))
    reward = reward_fn(problems[0].direction)

    def one(key, threshold):
        problem = RewardProblem(
            velocity_fn,
            lambda x: reward(x, threshold),
            (dim,),
            ALPHA,
            transition=Renoising(),
        )
        return sampler(key, problem, num_steps=num_steps, **kwargs)

    run = jax.jit(one)
    rows, times = [], []
    for problem in problems:
        reference = _reference(problem)
        for seed in range(seeds):
            start = time.perf_counter()
            result = jax.block_until_ready(run(jax.random.key(seed), problem.threshold))
            times.append(time.perf_counter() - start)
            row = {"dim": dim, "mass": problem.mass, "model": model, "budget": budget}
            row |= {"method": method, "seed": seed, "steps": num_steps, "nfe": int(result.nfe)}
            row |= {"num_particles": int(result.samples.shape[0])}
            rows.append(row | evaluate(problem, result, reference, unbiased))
    run_s = float(np.median(times[1:])) if len(times) > 1 else math.nan
    return MethodRun(rows, times[0], run_s)
