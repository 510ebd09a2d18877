r"""Every alignment sampler at equal NFE on 2D Gaussian-mixture toys with exact targets.

The study behind ``psijax demo`` and ``benchmarks/toy_gmm.py``. A *setting* is a toy preset of
:mod:`psijax.models.presets` (data mixture, reward, ``α``, exact tilted target) paired with a
model of the data:

- ``"exact"``: the mixture's exact velocity. Its one-step Tweedie prediction ``x̂0(x, 1) = E[x0]``
  is a constant, so Ψ-Sampler's ``π_init`` is the prior and its chains are pCN chains on
  ``N(0, I)`` (docs/algorithms.md §3); only the flow-map predictor makes the initial stage
  reward-aware, at the cost of an ODE solve per evaluation.
- ``"reflow"``: a shipped reflowed MLP (:func:`psijax.models.reflow.load_reflow`) whose one-step
  prediction at ``t = 1`` is sharp. It predicts the flow map only on its own coupling's
  marginals, so neither kernel keeps its distribution exactly; it runs with the stochastic
  sampler, as in the paper's code.
- ``"distilled"``: a shipped distilled MLP (:func:`psijax.models.distilled.load_distilled`),
  whose one-step prediction is the flow map at every ``t``: the toy analog of
  timestep-distilled FLUX-schnell, run with the re-noising kernel
  (:class:`psijax.flows.distilled.Renoising`, the problem's ``transition``).
- ``"oracle"``: the exact flow map used as a one-step model
  (:func:`psijax.flows.ode.distilled_velocity`, an ODE solve per evaluation counted as one),
  with the re-noising kernel: the ideal distilled model, for any preset.

A *method* is a name of :data:`psijax.align.SAMPLERS`, optionally suffixed ``"[flow_map]"``
for an initial stage that uses the flow-map predictor :data:`FLOW_MAP` (the SMC keeps Tweedie);
:mod:`psijax.experiments.methods` parses and sizes them, and this module re-exports its names.

**Equal NFE** (:func:`sampler_options`). For a budget ``B`` and ``T`` steps: prior starts and
best-of-N/DPS get ``N = ⌊B/T⌋`` particles, FreeDoM ``N = ⌊B/(T + K·W)⌋`` (``K`` repeats over the
``W`` grid times in its window), initial-stage methods split ``B`` 50/50 (``nfe_budget``, the
paper's layout at ``B = 1000``: 5 pCNL chains × (50 + 49 + 1) and 20 particles × 25 steps). The
flow-map and tempered variants cannot be sized by NFE in advance: they get the same particle
count and chain lengths, and the table reports the NFE they really spent.

**Metrics** (:func:`evaluate`, docs/algorithms.md §8), on the normalized weights ``w`` of the final
particles against the exact target: ``E_w[r]``; MMD² with an RBF kernel at the fixed bandwidth
:data:`FIXED_BANDWIDTH` and at the median heuristic; the energy distance; the total variation
between the weighted mode occupancy (nearest data mode) and the target's exact occupancy under
the same rule (:func:`exact_mode_occupancy`); the ESS ``1/Σw²``. MMD and energy distance are
V-statistics (``biased=True``): the RKHS/energy distance of the weighted empirical measure
itself, defined also for best-of-N's single kept sample; their floor at ``N`` exact i.i.d.
samples is the ``exact target (iid)`` row (:func:`reference_rows`), and the limit of every SMC
method as ``N → ∞`` is the ``SMC limit (IS)`` row (:func:`sampler_target_row`). Seeds are
aggregated as mean ± standard error (:func:`psijax.experiments.toy_report.aggregate`, which
also formats the tables and draws the figure).

Every method is compiled once per setting and budget (``jax.jit`` with :data:`FAST_COMPILE`)
and then looped over seeds: on CPU the compilation dominates, and a seed costs milliseconds.
"""

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from psijax import metrics
from psijax.align import SAMPLERS, FlowMap, RewardProblem, diagnose
from psijax.experiments.methods import (
    Method,
    default_methods,
    parse_method,
    sampler_options,
)
from psijax.flows import ode, sde
from psijax.flows.distilled import Renoising
from psijax.flows.sde import denoising_grid
from psijax.models import distilled, presets, reflow

__all__ = [
    "MODELS",
    "METRICS",
    "FIXED_BANDWIDTH",
    "FLOW_MAP_OPTIONS",
    "FLOW_MAP",
    "FAST_COMPILE",
    "ToySetting",
    "Method",
    "MethodRun",
    "parse_method",
    "default_methods",
    "sampler_options",
    "build_setting",
    "make_problem",
    "exact_problem",
    "exact_mode_occupancy",
    "evaluate",
    "run_method",
    "reference_rows",
    "sampler_target_row",
    "run_study",
]

MODELS = ("exact", "reflow", "distilled", "oracle")
REFLOW_DATA = {
    "six_modes_quadratic": "six_modes",
    "six_modes_mixture": "six_modes",
    "unequal_rare_modes": "unequal_six_modes",
}
"""Preset → data of its shipped reflow and distilled models (:data:`psijax.models.reflow.SHIPPED`,
:data:`psijax.models.distilled.SHIPPED`)."""
ORACLE_OPTIONS = {"rtol": 1e-5, "atol": 1e-5}
"""ODE tolerances of the ``"oracle"`` model's flow map (Tsit5)."""
METRICS = ("nfe", "num_particles", "ess", "reward", "mmd_fixed", "mmd_median", "energy", "mode_tv")
FIXED_BANDWIDTH = 1.0
"""RBF bandwidth of the fixed-bandwidth MMD: twice the modes' std (0.5), a quarter of their
spacing (4), so it resolves mass within and between modes."""
FLOW_MAP_OPTIONS = {"rtol": 1e-3, "atol": 1e-3}
"""ODE tolerances of the flow-map predictor (Tsit5): looser than the library default, since
``1e-3`` is far below the modes' std and halves the NFE of every flow-map evaluation."""
FLOW_MAP = FlowMap(**FLOW_MAP_OPTIONS)
"""The flow-map predictor of the ``"[flow_map]"`` methods."""
FAST_COMPILE = {"xla_backend_optimization_level": 0}
"""XLA options for the runs: compilation dominates these tiny programs on CPU, and the lowest
backend optimization level compiles about 40 % faster for a similar run time."""


# -- settings: preset × model --------------------------------------------------------------------
class ToySetting(NamedTuple):
    """A preset with a model, and what the metrics compare against.

    ``modes``: the data means (nearest-mode rule); ``mode_weights``: the exact target's
    occupancy under that rule; ``reference``: exact target samples for MMD and energy
    distance; ``reference_reward``: ``E_{p*}[r]`` from ``occupancy_size`` exact draws;
    ``transition``: the model's kernel between steps (``None``: the samplers' stochastic one).
    """

    preset: str
    model: str
    toy: presets.ToyProblem
    velocity_fn: Callable
    modes: np.ndarray
    mode_weights: np.ndarray
    reference: jax.Array
    reference_reward: float
    transition: Renoising | None = None


def exact_mode_occupancy(target, modes, rng_key, num_samples: int = 200_000) -> np.ndarray:
    """Occupancy of ``modes`` under ``target`` by the nearest-mode rule of
    :func:`psijax.metrics.mode_occupancy`, from ``num_samples`` exact draws.

    It differs from the target's component weights only by the mass a component puts nearer
    another mode (negligible for the ring presets: modes 8 data stds apart); its Monte Carlo
    standard error is ``√(o(1 − o)/n)``.
    """
    x = target.sample(rng_key, num_samples)
    return np.asarray(metrics.mode_occupancy(x, modes), np.float64)


def build_setting(
    preset: str,
    model: str,
    rng_key,
    *,
    reference_size: int = 2000,
    occupancy_size: int = 200_000,
) -> ToySetting:
    """Load the preset, its model (one of :data:`MODELS`) and the exact references."""
    if model not in MODELS:
        raise ValueError(f"`model` must be one of {MODELS}, got {model!r}.")
    toy = presets.toy_problem(preset)
    transition = Renoising() if model in ("distilled", "oracle") else None
    if model == "exact":
        velocity = toy.data.velocity
    elif model == "oracle":
        velocity = ode.distilled_velocity(toy.data.velocity, **ORACLE_OPTIONS)
    elif preset in REFLOW_DATA:
        load = reflow.load_reflow if model == "reflow" else distilled.load_distilled
        velocity = load(REFLOW_DATA[preset])[0]
    else:
        raise ValueError(f"no shipped {model} model for {preset!r}; presets: {tuple(REFLOW_DATA)}")
    key_occ, key_reward, key_ref = jax.random.split(rng_key, 3)
    modes = np.asarray(toy.data.means)
    occupancy = exact_mode_occupancy(toy.exact_target, modes, key_occ, occupancy_size)
    draws = toy.exact_target.sample(key_reward, occupancy_size)
    reward = float(jnp.mean(jax.jit(jax.vmap(toy.reward_fn))(draws)))
    reference = toy.exact_target.sample(key_ref, reference_size)
    return ToySetting(preset, model, toy, velocity, modes, occupancy, reference, reward, transition)


def make_problem(setting: ToySetting) -> RewardProblem:
    """The (Tweedie) :class:`RewardProblem` of a setting, with the model's kernel."""
    toy = setting.toy
    return RewardProblem(
        setting.velocity_fn,
        toy.reward_fn,
        (toy.data.dim,),
        toy.alpha,
        transition=setting.transition,
    )


def exact_problem(preset: str) -> RewardProblem:
    """The (Tweedie) :class:`RewardProblem` of a preset with its exact data velocity, built
    without the references :func:`build_setting` computes (for timing and sharding runs)."""
    toy = presets.toy_problem(preset)
    return RewardProblem(toy.data.velocity, toy.reward_fn, (toy.data.dim,), toy.alpha)


# -- metrics -------------------------------------------------------------------------------------
def evaluate(setting: ToySetting, samples, log_weights, rewards) -> dict:
    """Metrics of one weighted particle set against the setting's exact target (module doc)."""
    values = _metrics(
        samples,
        log_weights,
        rewards,
        setting.reference,
        jnp.asarray(setting.modes, jnp.float32),
        jnp.asarray(setting.mode_weights, jnp.float32),
    )
    return {k: float(v) for k, v in values.items()}


@jax.jit
def _metrics(samples, log_weights, rewards, reference, modes, mode_weights):
    w = jnp.exp(log_weights - jax.scipy.special.logsumexp(log_weights))
    used = w > 0  # zero-weight particles may carry NaN: keep them out of every sum
    x = jnp.where(used[:, None], samples, 0.0)
    common = {"x_weights": w, "biased": True}
    return {
        "ess": 1.0 / jnp.sum(w**2),
        "reward": jnp.sum(w * jnp.where(used, rewards, 0.0)),
        "mmd_fixed": metrics.mmd(x, reference, bandwidth=FIXED_BANDWIDTH, **common),
        "mmd_median": metrics.mmd(x, reference, bandwidth="median", **common),
        "energy": metrics.energy_distance(x, reference, **common),
        "mode_tv": metrics.mode_tv(x, modes, mode_weights, weights=w),
    }


# -- running -------------------------------------------------------------------------------------
class MethodRun(NamedTuple):
    """Per-seed metric rows of one method in one setting, the first seed's particles and
    weights (for the figure), and timings: first call (compilation included) and the median
    per-seed run after it, in seconds."""

    rows: list
    samples: np.ndarray
    weights: np.ndarray
    compile_s: float
    run_s: float


def run_method(
    setting: ToySetting,
    method: str | Method,
    *,
    budget: int,
    num_steps: int = 25,
    seeds: int = 10,
    guidance_scale: float = 1.0,
    compiler_options: dict | None = FAST_COMPILE,
) -> MethodRun:
    """Run ``method`` once per seed (one ``jit`` compilation, then a loop over seeds)."""
    method = parse_method(method) if isinstance(method, str) else method
    options = sampler_options(method, budget, num_steps, flow_map=FLOW_MAP)
    if method.sampler in ("dps", "freedom"):
        options["guidance_scale"] = guidance_scale
    sampler, problem = SAMPLERS[method.sampler], make_problem(setting)
    run = jax.jit(
        lambda key: sampler(key, problem, num_steps=num_steps, **options),
        compiler_options=compiler_options,
    )
    rows, times, first = [], [], None
    data_range = (float(np.min(setting.reference)), float(np.max(setting.reference)))
    for seed in range(seeds):
        start = time.perf_counter()
        result = jax.block_until_ready(run(jax.random.key(seed)))
        times.append(time.perf_counter() - start)
        first = result if first is None else first
        row = {"preset": setting.preset, "model": setting.model, "budget": budget}
        row |= {"method": method.name, "seed": seed, "nfe": int(result.nfe)}
        row |= {"num_particles": int(result.samples.shape[0])}
        row |= evaluate(setting, result.samples, result.log_weights, result.rewards)
        rows.append(row | {"warnings": " | ".join(diagnose(result, data_range=data_range))})
    weights = np.exp(np.asarray(first.log_weights, np.float64))
    run_s = float(np.median(times[1:])) if seeds > 1 else math.nan
    return MethodRun(rows, np.asarray(first.samples), weights, times[0], run_s)


def reference_rows(setting: ToySetting, num_particles: int, *, budget: int, seeds: int) -> list:
    """The metrics' floor: ``num_particles`` i.i.d. exact target draws per seed, uniform weights
    (method ``"exact target (iid)"``, NFE 0)."""
    target, rows = setting.toy.exact_target, []
    reward_fn = jax.jit(jax.vmap(setting.toy.reward_fn))
    for seed in range(seeds):
        x = target.sample(jax.random.fold_in(jax.random.key(seed), 7), num_particles)
        uniform = jnp.full((num_particles,), -math.log(num_particles))
        row = {"preset": setting.preset, "model": setting.model, "budget": budget}
        row |= {"method": "exact target (iid)", "seed": seed, "nfe": 0}
        row |= {"num_particles": num_particles}
        rows.append(row | evaluate(setting, x, uniform, reward_fn(x)))
    return rows


def sampler_target_row(
    setting: ToySetting, *, budget: int, num_steps: int = 25, num_samples: int = 10_000
) -> dict:
    """The limit of every SMC method as ``N → ∞``: the tilted law of the discretized sampler,
    ``p_T·e^{r/α}``, by self-normalized importance sampling of ``num_samples`` draws of the
    ``T``-step sampler of the model (its kernel on the SMC's grid: the stochastic sampler with the
    reference diffusion, or the re-noising kernel of a distilled model) with weights
    ``∝ e^{r/α}``; scored like a method (method ``"SMC limit (IS)"``, NFE NaN, one seed).

    Its distance to the exact target is the share of every SMC method's error that more
    particles cannot remove: discretization (small for the exact model, none for the oracle),
    the model's own error, and, for the reflow model, that the stochastic sampler of
    docs/algorithms.md §2 reads a score off the velocity as if the model were trained on
    independent (noise, data) pairs, which a reflowed model is not.
    """
    x = _model_samples(setting, jax.random.key(11), num_samples, num_steps)
    rewards = jax.jit(jax.vmap(setting.toy.reward_fn))(x)
    log_w = rewards / setting.toy.alpha
    row = {"preset": setting.preset, "model": setting.model, "budget": budget}
    row |= {"method": "SMC limit (IS)", "seed": 0, "nfe": math.nan}
    row |= {"num_particles": num_samples}
    return row | evaluate(setting, x, log_w - jax.scipy.special.logsumexp(log_w), rewards)


def _model_samples(setting: ToySetting, rng_key, n: int, num_steps: int) -> jax.Array:
    """``n`` draws of the ``num_steps``-step sampler of the setting's model and kernel."""
    grid = denoising_grid(num_steps, None)
    key_x, key_path = jax.random.split(rng_key)
    x1 = jax.random.normal(key_x, (n, setting.toy.data.dim))
    kernel = sde.reference_diffusion() if setting.transition is None else setting.transition

    def one(key, x):
        return sde.sample(key, setting.velocity_fn, x, grid, kernel)

    return jax.jit(jax.vmap(one))(jax.random.split(key_path, n), x1)


def run_study(
    settings: list[ToySetting],
    methods: tuple[str, ...],
    *,
    budget: int = 1000,
    num_steps: int = 25,
    seeds: int = 10,
    guidance_scale: float = 1.0,
    progress: bool = False,
    sampler_target: bool = True,
) -> tuple[list, dict, list]:
    """Every method in every setting at one budget, plus the reference rows: ``B/T`` exact
    i.i.d. draws (:func:`reference_rows`) and, if ``sampler_target``, the SMC methods' limit
    (:func:`sampler_target_row`).

    Returns ``(rows, particles, timings)``: per-seed metric rows, ``{(preset, model, budget,
    method): (samples, weights)}`` of seed 0, and ``{preset, model, budget, method, compile_s,
    run_s}`` rows. ``progress`` shows a tqdm bar over (setting, method).
    """
    parsed = [parse_method(m) for m in methods]
    jobs = [(s, m) for s in settings for m in parsed]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"toy study, B={budget}", unit="run")
    rows, particles, timings = [], {}, []
    for setting in settings:
        n_ref = budget // num_steps
        rows += reference_rows(setting, n_ref, budget=budget, seeds=seeds)
        if sampler_target:
            rows.append(sampler_target_row(setting, budget=budget, num_steps=num_steps))
        for method in parsed:
            if bar is not None:
                bar.set_postfix_str(f"{setting.preset}/{setting.model}/{method.name}")
            out = run_method(
                setting,
                method,
                budget=budget,
                num_steps=num_steps,
                seeds=seeds,
                guidance_scale=guidance_scale,
            )
            key = (setting.preset, setting.model, budget, method.name)
            rows += out.rows
            particles[key] = (out.samples, out.weights)
            timings.append(dict(zip(("preset", "model", "budget", "method"), key, strict=True)))
            timings[-1] |= {"compile_s": out.compile_s, "run_s": out.run_s}
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return rows, particles, timings


# -- aggregation and reports ---------------------------------------------------------------------
