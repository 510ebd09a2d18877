r"""The top-level samplers: Ψ-Sampler and every baseline of the paper, as configurations.

Every sampler is ``fn(rng_key, problem, *, num_particles, num_steps, ...) -> AlignmentResult``.
The SMC family is one function, :func:`smc`: an initial stage
(:func:`psijax.align.init.initial_particles`) followed by :func:`psijax.align.run_smc`. The
named samplers only change its defaults:

===============  =============  ==========  ===========  ===========  =====
sampler          initial stage  proposal    potential    tempering    ``κ``
===============  =============  ==========  ===========  ===========  =====
``smc``          prior          twisted     difference   none         0.5
``tds``          prior          twisted     difference   none         1
``das``          prior          twisted     difference   DAS          0.5
``fk_steering``  prior          bootstrap   max          none         1
``psi_sampler``  pCNL chains    twisted     difference   none         0.5
``top_k``        Top-K-of-N     twisted     difference   none         0.5
``ula``          ULA chains     twisted     difference   none         0.5
``mala``         MALA chains    twisted     difference   none         0.5
``pcn``          pCN chains     twisted     difference   none         0.5
===============  =============  ==========  ===========  ===========  =====

DAS tempering (ALGORITHMS.md §5): ``λ_i = min((1 + γ)^i − 1, 1)``, with ``γ = 2^{1/T} − 1`` by
default so that ``λ`` reaches 1 exactly at the last step. The single-particle baselines
:func:`dps`, :func:`freedom` and :func:`best_of_n` live in :mod:`psijax.align.guidance`.

**Equal cost.** ``nfe_budget = B`` fixes the total number of model evaluations (Tweedie
predictors): a prior start spends it all on the SMC, ``N = ⌊B/T⌋`` particles; an initial stage
gets ``⌊s·B⌋`` (``s = budget_split``, 0.5 as in the paper) — chains ``C·(B_burn + S + 1)``
with ``B_burn = ⌈m/2⌉``, ``S = ⌊m/2⌋``, ``m = ⌊sB/C⌋ − 1``; Top-K that many candidates — and
the SMC the rest, ``N = ⌊(1 − s)B/T⌋``. The paper's layout is ``B = 1000``: 5 chains × (50 + 50)
pCNL steps and 20 particles × 25 steps.

**Initial weights and ``log Ẑ``.** The initial stage says how its particles were drawn
relative to the prior; the SMC adds its own potential (ALGORITHMS.md §5). The initial stage may
use another x0-predictor than the SMC (``init_predictor``, e.g. the flow map for an exact model
and Tweedie for the SMC); the weights stay consistent. ``log_normalizer`` estimates ``log Z`` for
prior and tempered-SMC starts (``Ẑ_init·Ẑ_SMC``) and is NaN for MCMC and Top-K starts, whose SMC
estimates ``Z / Z_init`` (``info.log_normalizer_smc``) or nothing exact (Top-K).
"""

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import ArrayLike, PRNGKey
from jax.sharding import Mesh

from psijax._checks import check_int
from psijax.align.guidance import best_of_n, dps, freedom
from psijax.align.init import METHODS, initial_particles
from psijax.align.problem import RewardProblem
from psijax.align.result import AlignmentResult, SamplerInfo
from psijax.align.smc import run_smc
from psijax.flows.sde import Diffusion, denoising_grid, reference_diffusion
from psijax.smc.sharding import check_divisible, check_mesh

__all__ = [
    "smc",
    "psi_sampler",
    "tds",
    "das",
    "fk_steering",
    "top_k",
    "ula",
    "mala",
    "pcn",
    "dps",
    "freedom",
    "best_of_n",
    "das_schedule",
    "budget_layout",
    "DEFAULT_NUM_PARTICLES",
]

DEFAULT_NUM_PARTICLES = 20
"""Particles when neither ``num_particles`` nor ``nfe_budget`` is given (the paper's 20)."""

_CHAINS = ("pcnl", "pcn", "mala", "ula")


def das_schedule(num_steps: int, gamma: float | None = None) -> np.ndarray:
    r"""DAS's tempering ``λ_i = min((1 + γ)^i − 1, 1)``, ``i = 0 … T`` (``λ_0 = 0``, ``λ_T = 1``).

    ``gamma=None`` gives ``γ = 2^{1/T} − 1``, the smallest ``γ`` with ``λ_T = 1``; a larger
    ``γ`` reaches 1 earlier. Raises ``ValueError`` when ``(1 + γ)^T < 2`` (``λ_T < 1``).
    """
    num_steps = check_int(num_steps, "num_steps")
    if gamma is None:
        gamma = 2.0 ** (1.0 / num_steps) - 1.0
    gamma = float(gamma)
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"`gamma` must be a finite number > 0, got {gamma!r}.")
    lambdas = np.minimum((1.0 + gamma) ** np.arange(num_steps + 1) - 1.0, 1.0)
    if lambdas[-1] < 1.0 - 1e-12:
        raise ValueError(
            f"`gamma` must satisfy (1 + γ)^T >= 2 so that λ reaches 1 by step T={num_steps}, "
            f"got γ={gamma}."
        )
    lambdas[-1] = 1.0
    return lambdas


def smc(
    rng_key: PRNGKey,
    problem: RewardProblem,
    *,
    num_particles: int | None = None,
    num_steps: int | None = 25,
    grid: ArrayLike | None = None,
    diffusion: Diffusion | None = None,
    init: str = "prior",
    init_predictor: str | Callable | None = None,
    proposal: str = "twisted",
    potential: str = "difference",
    tempering: str | ArrayLike | None = None,
    das_gamma: float | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    nfe_budget: int | None = None,
    budget_split: float = 0.5,
    mesh: Mesh | None = None,
    **init_options,
) -> AlignmentResult:
    r"""SMC over the denoising grid from an initial stage: the one driver of the SMC family.

    Parameters
    ----------
    rng_key
        PRNG key.
    problem
        The :class:`~psijax.align.RewardProblem`.
    num_particles
        SMC particles ``N >= 1``; ``None``: from ``nfe_budget``, else
        :data:`DEFAULT_NUM_PARTICLES`.
    num_steps, grid
        ``T`` uniform steps from 1 to 0 (default 25), or a concrete ``grid`` (then ``num_steps``
        must be ``None`` or ``len(grid) − 1``).
    diffusion
        The SMC's :class:`~psijax.flows.sde.Diffusion`; default
        :func:`~psijax.flows.sde.reference_diffusion` (``g = t(2 − t)``).
    init
        The initial stage, one of :data:`psijax.align.init.METHODS`.
    init_predictor
        The x0-predictor of the initial stage (``"tweedie"``, ``"flow_map"`` or a callable);
        ``None``: the problem's.
    proposal, potential, resampling, ess_threshold
        Passed to :func:`~psijax.align.run_smc`.
    tempering
        ``None`` (``λ ≡ 1``), ``"das"`` (:func:`das_schedule` with ``das_gamma``) or a concrete
        array of ``T + 1`` values.
    nfe_budget, budget_split
        Fix the total NFE and the initial stage's share ``s ∈ (0, 1)`` (module docstring).
    mesh
        A :class:`jax.sharding.Mesh` to shard the particles and chains over, or ``None`` (one
        device). The SMC's ``N`` and the initial stage's sharded count (chains, Top-K's
        candidates) must be multiples of its device count; the result equals the single-device
        one to float tolerance (:mod:`psijax.smc.sharding`).
    **init_options
        Keyword arguments of :func:`psijax.align.init.initial_particles` (``alpha``,
        ``step_size``, ``num_chains``, ``burn_in``, ``num_kept``, ``adapt_step_size``,
        ``num_candidates``, ``num_mcmc_steps``, ``target_ess``, ...).

    Returns
    -------
    :class:`~psijax.align.AlignmentResult` with ``info`` a :class:`~psijax.align.SamplerInfo`.

    """
    if not isinstance(problem, RewardProblem):
        raise ValueError(f"`problem` must be a RewardProblem, got {type(problem).__name__}.")
    if init not in METHODS:
        raise ValueError(f"`init` must be one of {METHODS}, got {init!r}.")
    times = denoising_grid(num_steps, grid)
    num_steps = times.shape[0] - 1
    diffusion = reference_diffusion() if diffusion is None else diffusion
    init_problem = problem
    if init_predictor is not None:
        init_problem = dataclasses.replace(problem, x0_predictor=init_predictor)
    num_particles, init_options = _budget(
        init,
        init_problem,
        problem,
        num_particles,
        num_steps,
        nfe_budget,
        budget_split,
        dict(init_options),
    )
    origin = "" if nfe_budget is None else f" (from nfe_budget={nfe_budget})"
    check_divisible(check_mesh(mesh), num_particles, "num_particles", origin)  # before any stage
    if tempering is None:
        schedule = None
    elif isinstance(tempering, str):
        if tempering != "das":
            raise ValueError(f"`tempering` must be None, 'das' or an array, got {tempering!r}.")
        schedule = das_schedule(num_steps, das_gamma)
    else:
        schedule = tempering

    key_init, key_smc = jax.random.split(rng_key)
    start = initial_particles(
        key_init, init_problem, num_particles, method=init, mesh=mesh, **init_options
    )
    result = run_smc(
        key_smc,
        problem,
        start.particles,
        start.log_weights,
        grid=times,
        diffusion=diffusion,
        proposal=proposal,
        potential=potential,
        schedule=schedule,
        resampling=resampling,
        ess_threshold=ess_threshold,
        mesh=mesh,
    )
    log_z_init = start.info.log_normalizer  # 0 (prior), log Ẑ_init (tempered), NaN otherwise
    info = SamplerInfo(
        init=None if init == "prior" else start.info,
        smc=result.info,
        nfe_init=start.nfe,
        nfe_sampling=result.nfe,
        log_normalizer_init=log_z_init,
        log_normalizer_smc=result.log_normalizer,
    )
    return result._replace(
        log_normalizer=log_z_init + result.log_normalizer,
        nfe=(start.nfe + result.nfe).astype(jnp.int32),
        info=info,
    )


def _configured(name: str, doc: str, **defaults) -> Callable:
    """A named sampler: :func:`smc` with other defaults (any of them can still be passed)."""

    def sampler(rng_key: PRNGKey, problem: RewardProblem, **kwargs) -> AlignmentResult:
        return smc(rng_key, problem, **{**defaults, **kwargs})

    settings = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
    sampler.__name__ = sampler.__qualname__ = name
    sampler.__doc__ = (
        f"{doc}\n\n    :func:`smc` with ``{settings}``; every keyword of :func:`smc` is accepted "
        "and overrides these.\n"
    )
    return sampler


psi_sampler = _configured(
    "psi_sampler",
    "Ψ-Sampler: pCNL chains on ``π_init ∝ N(0, I)·exp(r(x̂0(x, 1))/α_init)`` (5 chains, 50 "
    "burn-in + 50 kept steps, ``h = 0.5``), then twisted SMC.\n\n    ``α_init`` (``alpha=``) "
    "defaults to ``problem.alpha``, which makes ``π_init`` the optimal initial distribution "
    "``p_1·exp(r(x̂0(x, 1))/α)``; the paper's released configs use ``α_init = 0.1`` for "
    "their rewards (pass ``alpha=0.1`` to reproduce them).",
    init="pcnl",
)
tds = _configured(
    "tds",
    "Twisted Diffusion Sampler (Wu et al. 2023): prior start, twisted proposal, resampling at "
    "every step.",
    ess_threshold=1.0,
)
das = _configured(
    "das",
    "Diffusion Alignment as Sampling (Kim et al. 2025): prior start, twisted proposal, DAS "
    "tempering, adaptive resampling.",
    tempering="das",
)
fk_steering = _configured(
    "fk_steering",
    "Feynman–Kac steering (Singhal et al. 2025): prior start, bootstrap proposal (no reward "
    "gradient), max-over-time potential, resampling at every step.",
    proposal="bootstrap",
    potential="max",
    ess_threshold=1.0,
)
top_k = _configured(
    "top_k",
    "Top-K-of-N initial particles (ranked by ``r(x̂0(x, 1))``, weighted as prior draws), then "
    "twisted SMC.",
    init="top_k",
)
ula = _configured(
    "ula", "ULA chains on ``π_init`` (unadjusted: biased), then twisted SMC.", init="ula"
)
mala = _configured("mala", "MALA chains (BlackJAX) on ``π_init``, then twisted SMC.", init="mala")
pcn = _configured("pcn", "pCN chains (gradient-free) on ``π_init``, then twisted SMC.", init="pcn")


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
def budget_layout(
    init: str, nfe_budget: int, num_steps: int, *, budget_split: float = 0.5, num_chains: int = 5
) -> dict:
    r"""The sizes that spend ``nfe_budget = B`` model evaluations with Tweedie predictors.

    ``{"num_particles": N}`` with ``N = ⌊B/T⌋`` for a prior start and ``N = ⌊(B − ⌊sB⌋)/T⌋``
    otherwise (``s = budget_split``); Top-K adds ``num_candidates = max(⌊sB⌋, N)``; chains add
    ``burn_in = ⌈m/2⌉`` and ``num_kept = ⌊m/2⌋`` with ``m = ⌊⌊sB⌋/C⌋ − 1`` (each chain spends
    ``m + 1`` evaluations with its initial state). The tempered stage gets ``N`` only (its cost
    is adaptive). ``ValueError`` when the budget cannot pay for one particle or three
    evaluations per chain.
    """
    budget = check_int(nfe_budget, "nfe_budget")
    if init == "prior":
        return {"num_particles": _at_least_one(budget // num_steps, budget)}
    split = float(budget_split)
    if not 0.0 < split < 1.0:
        raise ValueError(f"`budget_split` must lie in (0, 1), got {budget_split!r}.")
    init_budget = int(math.floor(split * budget))
    layout = {"num_particles": _at_least_one((budget - init_budget) // num_steps, budget)}
    if init == "top_k":
        layout["num_candidates"] = max(init_budget, layout["num_particles"])
    elif init in _CHAINS:
        steps = init_budget // check_int(num_chains, "num_chains") - 1
        if steps < 2:
            raise ValueError(
                f"`nfe_budget`={budget} leaves {init_budget} evaluations for {num_chains} chains: "
                "fewer than 3 per chain (initial state, one burn-in and one kept step)."
            )
        layout.update(num_kept=steps // 2, burn_in=steps - steps // 2)
    return layout


def _budget(init, init_problem, problem, num_particles, num_steps, nfe_budget, split, options):
    """Resolve ``num_particles`` and the initial stage's sizes from ``nfe_budget``."""
    if nfe_budget is None:
        if num_particles is None:
            num_particles = DEFAULT_NUM_PARTICLES
        return check_int(num_particles, "num_particles"), options
    if num_particles is not None:
        raise ValueError("Give `num_particles` or `nfe_budget`, not both.")
    if not (problem.is_tweedie and init_problem.is_tweedie):
        raise ValueError(
            "`nfe_budget` needs Tweedie predictors (a flow-map or custom predictor's cost per "
            "evaluation is not known in advance); give `num_particles` and read `result.nfe`."
        )
    if init == "tempered":
        raise ValueError(
            "`nfe_budget` cannot be split with init='tempered' (its number of temperatures is "
            "adaptive); give `num_particles` and read `result.nfe`."
        )
    layout = budget_layout(
        init, nfe_budget, num_steps, budget_split=split, num_chains=options.get("num_chains", 5)
    )
    num_particles = layout.pop("num_particles")
    for name in layout:
        if name in options:
            raise ValueError(f"Give `{name}` or `nfe_budget`, not both.")
    return num_particles, {**options, **layout}


def _at_least_one(value: int, budget: int) -> int:
    if value < 1:
        raise ValueError(f"`nfe_budget`={budget} is too small for one particle over the grid.")
    return int(value)
