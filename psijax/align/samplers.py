r"""The SMC driver, equal-NFE budgets, and the named samplers of the paper as data.

Every sampler is ``fn(rng_key, problem, *, num_particles | nfe_budget, num_steps, ...) ->
AlignmentResult``. The SMC family is one function, :func:`smc`: an initial stage
(:mod:`psijax.align.stages`) followed by :func:`psijax.align.run_smc`. A named sampler is a
:class:`NamedSampler`, an entry of data — a name, a docstring and the keyword arguments it
passes to :func:`smc` — and :data:`SAMPLERS` is the one registry every list of methods (the
studies of :mod:`psijax.experiments`, the command line) is derived from:

==================  ==================================  ==========  ===========  =========  =====
sampler             initial stage                       proposal    potential    tempering  ``κ``
==================  ==================================  ==========  ===========  =========  =====
``smc``             ``Prior()``                         twisted     difference   none       0.5
``tds``             ``Prior()``                         twisted     difference   none       1
``das``             ``Prior()``                         twisted     difference   DAS        0.5
``fk_steering``     ``Prior()``                         bootstrap   max          none       1
``psi_sampler``     ``Chains(psijax.pcnl, h=0.5)``      twisted     difference   none       0.5
``top_k_smc``       ``TopK()``                          twisted     difference   none       0.5
``ula_smc``         ``Chains(psijax.ula, ε=0.25)``      twisted     difference   none       0.5
``mala_smc``        ``Chains(blackjax.mala, ε=0.25)``   twisted     difference   none       0.5
``pcn_smc``         ``Chains(psijax.pcn, h=0.5)``       twisted     difference   none       0.5
``tempered_smc``    ``Tempered()``                      twisted     difference   none       0.5
==================  ==================================  ==========  ===========  =========  =====

and the single-particle baselines :func:`~psijax.align.guidance.dps`,
:func:`~psijax.align.guidance.freedom` and :func:`~psijax.align.guidance.best_of_n`. MALA and
ULA run at ``ε = 0.25``, the Langevin time of one pCNL step ``h = 0.5``. DAS tempering
(docs/algorithms.md §5): ``λ_i = min((1 + γ)^i − 1, 1)``, with ``γ = 2^{1/T} − 1`` by default
so that ``λ`` reaches 1 exactly at the last step.

**Equal cost** (:func:`budget_layout`). ``nfe_budget = B`` fixes the total number of model
evaluations (Tweedie predictors): a prior start spends it all on the SMC, ``N = ⌊B/T⌋``
particles; another initial stage gets ``⌊s·B⌋`` (``s = budget_split``, 0.5 as in the paper) —
chains ``C·(B_burn + S + 1)`` with ``B_burn = ⌈m/2⌉``, ``S = ⌊m/2⌋``, ``m = ⌊sB/C⌋ − 1``;
Top-K that many candidates — and the SMC the rest, ``N = ⌊(1 − s)B/T⌋``. The paper's layout is
``B = 1000``: 5 chains × (50 burn-in + 49 kept + 1 initial) pCNL evaluations and 20 particles
× 25 steps.

**Initial weights and ``log Ẑ``.** The initial stage says how its particles were drawn
relative to the prior; the SMC adds its own potential (docs/algorithms.md §5). A stage may use
another x0-predictor than the SMC (its ``predictor``, e.g. the flow map for an exact model and
Tweedie for the SMC); the weights stay consistent. ``log_normalizer`` estimates ``log Z`` for
prior and tempered-SMC starts (``Ẑ_init·Ẑ_SMC``) and is NaN for MCMC and Top-K starts, whose SMC
estimates ``Z / Z_init`` (``info.log_normalizer_smc``) or nothing exact (Top-K).

**Adding a sampler** (docs/design.md): a configuration of existing parts is one
:class:`NamedSampler` passed to :func:`register`; a new initial stage is a subclass of
:class:`~psijax.align.stages.InitialStage`.
"""

import dataclasses
import difflib
import inspect
import math
import textwrap
from typing import Callable, Mapping

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import ArrayLike, PRNGKey
from jax.sharding import Mesh

from psijax._checks import check_int, check_real
from psijax._deprecation import deprecated
from psijax.align.chains import Chains
from psijax.align.denoising import run_smc
from psijax.align.guidance import (
    DEFAULT_NUM_PARTICLES,
    best_of_n,
    count_or_budget,
    dps,
    freedom,
)
from psijax.align.predictors import as_predictor
from psijax.align.problem import (
    RewardProblem,
    check_problem,
    sampler_transition,
    with_particle_chunk,
)
from psijax.align.proposals import Bootstrap, Twisted
from psijax.align.result import AlignmentResult, SamplerInfo
from psijax.align.stages import InitialStage, Prior, TopK
from psijax.align.tempered import Tempered
from psijax.flows.sde import Diffusion, denoising_grid
from psijax.mcmc.api import pcn, ula
from psijax.smc.potentials import Difference, Max, Potential
from psijax.smc.sharding import check_divisible, check_mesh

__all__ = [
    "smc",
    "NamedSampler",
    "SAMPLERS",
    "register",
    "unregister",
    "initial_stage",
    "budget_layout",
    "das_schedule",
    "DEFAULT_NUM_PARTICLES",
    "DEPRECATED_NAMES",
]


def das_schedule(num_steps: int, gamma: float | None = None) -> np.ndarray:
    r"""DAS's tempering ``λ_i = min((1 + γ)^i − 1, 1)``, ``i = 0 … T`` (``λ_0 = 0``, ``λ_T = 1``).

    Parameters
    ----------
    num_steps
        ``T >= 1``.
    gamma
        ``γ > 0``; ``None`` gives ``γ = 2^{1/T} − 1``, the smallest ``γ`` with ``λ_T = 1``; a
        larger ``γ`` reaches 1 earlier.

    Returns
    -------
    numpy.ndarray
        The ``T + 1`` values ``λ_i``.

    Raises
    ------
    ValueError
        When ``(1 + γ)^T < 2`` (``λ_T < 1``).

    """
    num_steps = check_int(num_steps, "num_steps")
    if gamma is None:
        gamma = 2.0 ** (1.0 / num_steps) - 1.0
    gamma = check_real(gamma, "gamma", gt=0.0, concrete=True)
    lambdas = np.minimum((1.0 + gamma) ** np.arange(num_steps + 1) - 1.0, 1.0)
    if lambdas[-1] < 1.0 - 1e-12:
        raise ValueError(
            f"`gamma` must satisfy (1 + γ)^T >= 2 so that λ reaches 1 by step T={num_steps}, "
            f"got γ={gamma}."
        )
    lambdas[-1] = 1.0
    return lambdas


def budget_layout(
    init: InitialStage, nfe_budget: int, num_steps: int, *, budget_split: float = 0.5, **legacy
) -> tuple[int, InitialStage]:
    r"""The particle count and the sized initial stage that spend ``nfe_budget = B`` evaluations.

    With Tweedie predictors: ``N = ⌊B/T⌋`` for a stage that spends nothing (the prior);
    otherwise the stage gets ``⌊sB⌋`` model evaluations (``s = budget_split``;
    :meth:`~psijax.align.stages.InitialStage.budgeted`), i.e. ``⌊⌊sB⌋/c⌋`` evaluations of
    ``r_init`` when its predictor costs a constant ``c`` (``nfe_per_call``), and the SMC
    ``N = ⌊(B − ⌊sB⌋)/T⌋``. A stage of adaptive cost (tempered SMC) is returned as it is, with
    that ``N``.

    Parameters
    ----------
    init
        The initial stage.
    nfe_budget
        ``B >= 1``.
    num_steps
        ``T >= 1``, the SMC's steps.
    budget_split
        ``s ∈ (0, 1)``.

    **legacy
        ``num_chains`` with a 0.1 method name for ``init`` (deprecated: that spelling returns
        the 0.1 dict ``{"num_particles": N, ...sizes}``).

    Returns
    -------
    ``(num_particles, stage)``

    Raises
    ------
    ValueError
        When the budget cannot pay for one particle, for the stage's minimum (three evaluations
        per chain), or when the stage already has the sizes the budget sets.

    """
    if isinstance(init, str):  # 0.1: budget_layout(method, B, T, num_chains=C) -> dict
        return _legacy_layout(init, nfe_budget, num_steps, budget_split, **legacy)
    if legacy:
        raise TypeError(f"budget_layout() got unexpected keyword arguments {sorted(legacy)}.")
    budget = check_int(nfe_budget, "nfe_budget")
    num_steps = check_int(num_steps, "num_steps")
    if not init.spends_budget:
        return _at_least_one(budget // num_steps, budget), init
    split = check_real(budget_split, "budget_split", gt=0.0, lt=1.0, concrete=True)
    init_budget = int(math.floor(split * budget))
    num_particles = _at_least_one((budget - init_budget) // num_steps, budget)
    if init.adaptive_cost:
        return num_particles, init
    cost = _evaluation_cost(init)
    if cost is None:
        raise ValueError(
            "`nfe_budget` needs Tweedie predictors, or an initial-stage predictor of constant cost "
            "(Custom(fn, nfe_per_call=n)): a flow-map or custom predictor's cost per evaluation "
            "is not known in advance; give `num_particles` and read `result.nfe`."
        )
    return num_particles, init.budgeted(init_budget // cost, num_particles)


def smc(
    rng_key: PRNGKey,
    problem: RewardProblem,
    *,
    num_particles: int | None = None,
    num_steps: int | None = 25,
    grid: ArrayLike | None = None,
    diffusion: Diffusion | None = None,
    init: InitialStage = Prior(),
    proposal: Callable = Twisted(),
    potential: Potential = Difference(),
    tempering: str | ArrayLike | None = None,
    das_gamma: float | None = None,
    resampling: str | Callable = "systematic",
    ess_threshold: float = 0.5,
    resample_every: int = 1,
    num_resampled: int | None = None,
    nfe_budget: int | None = None,
    budget_split: float = 0.5,
    mesh: Mesh | None = None,
    particle_chunk: int | None = None,
    **deprecated_options,
) -> AlignmentResult:
    r"""SMC over the denoising grid from an initial stage: the one driver of the SMC family.

    Parameters
    ----------
    rng_key
        PRNG key (split into the initial stage's and the SMC's).
    problem
        The :class:`~psijax.align.RewardProblem`.
    num_particles
        SMC particles ``N >= 1``; ``None``: from ``nfe_budget``, else
        :data:`DEFAULT_NUM_PARTICLES`.
    num_steps, grid
        ``T`` uniform steps from 1 to 0 (default 25), or a concrete ``grid`` (then ``num_steps``
        must be ``None`` or ``len(grid) − 1``).
    diffusion
        The SMC's kernel, a :class:`~psijax.flows.sde.Diffusion` or
        :class:`~psijax.flows.distilled.Renoising`; default: the problem's ``transition``,
        else :func:`~psijax.flows.sde.reference_diffusion` (``g = t(2 − t)``).
    init
        The initial stage (:mod:`psijax.align.stages`): ``Prior()``, ``TopK(...)``,
        ``Chains(kernel, ...)``, ``Tempered(...)`` or a user's.
    proposal, potential
        The SMC's parts (:func:`~psijax.align.run_smc`): ``Twisted()`` / ``Bootstrap()`` or a
        callable; ``Difference()``, ``Max()``, ``Sum()``, ``Current()``.
    tempering
        ``None`` (``λ ≡ 1``), ``"das"`` (:func:`das_schedule` with ``das_gamma``) or a concrete
        array of ``T + 1`` values.
    resampling, ess_threshold, resample_every, num_resampled
        The resampling: scheme, ``κ``, every ``F`` steps, partial (:func:`~psijax.align.run_smc`).
    nfe_budget, budget_split
        Fix the total NFE and the initial stage's share ``s ∈ (0, 1)`` (:func:`budget_layout`).
    mesh
        A :class:`jax.sharding.Mesh` to shard the particles and chains over, or ``None`` (one
        device). The SMC's ``N`` and Top-K's candidates must be multiples of its device count
        (chains are padded); the result equals the single-device one to float tolerance
        (:mod:`psijax.smc.sharding`).
    particle_chunk
        Evaluate the model and reward on at most this many particles at a time (per device),
        bounding the memory of a pass by the chunk; the same results
        (:attr:`RewardProblem.particle_chunk`). ``None``: the problem's setting.
    **deprecated_options
        The 0.1 spellings: ``init`` as a method name with the stage's options
        (``init="pcnl", burn_in=10``) and ``init_predictor``; they warn.

    Returns
    -------
    AlignmentResult
        With ``info`` a :class:`~psijax.align.SamplerInfo`.

    Raises
    ------
    TypeError, ValueError
        Naming the invalid argument, before anything runs.

    """
    problem = with_particle_chunk(check_problem(problem), particle_chunk)
    init = _stage(init, deprecated_options)
    if not isinstance(init, InitialStage):
        raise TypeError(
            "`init` must be an initial stage (Prior(), TopK(...), Chains(...), Tempered(...)), "
            f"got {init!r}."
        )
    times = denoising_grid(num_steps, grid)
    num_steps = times.shape[0] - 1
    diffusion = sampler_transition(problem, diffusion)
    num_particles = count_or_budget(num_particles, nfe_budget, problem)
    if num_particles is None:  # from the budget
        if init.adaptive_cost:
            raise ValueError(
                f"`nfe_budget` cannot be split with init={type(init).__name__}(...) "
                "(init='tempered' in 0.1): its cost is adaptive (the number of temperatures); "
                "give `num_particles` and read `result.nfe`."
            )
        num_particles, init = budget_layout(init, nfe_budget, num_steps, budget_split=budget_split)
    origin = "" if nfe_budget is None else f" (from nfe_budget={nfe_budget})"
    check_divisible(check_mesh(mesh), num_particles, "num_particles", origin)  # before any stage
    init.check(problem, num_particles, mesh)
    schedule = tempering
    if isinstance(tempering, str):
        if tempering != "das":
            raise ValueError(f"`tempering` must be None, 'das' or an array, got {tempering!r}.")
        schedule = das_schedule(num_steps, das_gamma)

    key_init, key_smc = jax.random.split(rng_key)
    start = init.sample(key_init, problem, num_particles, mesh=mesh)
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
        resample_every=resample_every,
        num_resampled=num_resampled,
        mesh=mesh,
    )
    log_z_init = start.info.log_normalizer  # 0 (prior), log Ẑ_init (tempered), NaN otherwise
    info = SamplerInfo(
        init=None if isinstance(init, Prior) else start.info,
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


# ----------------------------------------------------------------------------------------------
# Named samplers as data
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class NamedSampler:
    r"""A named configuration of :func:`smc`: its name, its docstring and the arguments it sets.

    Called as ``sampler(rng_key, problem, **kwargs)``: the keyword arguments of :func:`smc`
    override the configuration, and the fields of its initial stage (``step_size``,
    ``num_chains``, … for :class:`~psijax.align.chains.Chains`) can be passed directly. Its
    ``inspect.signature`` lists all of them with the configuration's defaults.

    Parameters
    ----------
    name
        The registry name (an identifier).
    summary
        The docstring's first paragraphs: what the sampler is and where it comes from.
    config
        Keyword arguments of :func:`smc` (``init``, ``proposal``, ``potential``,
        ``tempering``, ``ess_threshold``, …).

    """

    name: str
    summary: str
    config: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"`name` must be an identifier, got {self.name!r}.")
        unknown = set(self.config) - set(_SMC_PARAMETERS)
        if unknown:
            raise TypeError(f"`config` names no argument of smc: {sorted(unknown)}.")
        stage = self.config.get("init", Prior())
        if not isinstance(stage, InitialStage):
            raise TypeError(f"`config['init']` must be an initial stage, got {stage!r}.")
        arguments = {"rng_key", "problem", *_SMC_PARAMETERS}
        clash = {f.name for f in dataclasses.fields(stage)} & arguments
        if clash:
            raise ValueError(
                f"the fields {sorted(clash)} of {type(stage).__name__} are also arguments of smc: "
                "rename them (a named sampler passes both as keywords)."
            )
        object.__setattr__(self, "config", dict(self.config))
        object.__setattr__(self, "__doc__", self._docstring())
        object.__setattr__(self, "__name__", self.name)
        object.__setattr__(self, "__qualname__", self.name)

    @property
    def init(self) -> InitialStage:
        """The initial stage this sampler runs (``Prior()`` unless configured)."""
        return self.config.get("init", Prior())

    def __call__(self, rng_key: PRNGKey, problem: RewardProblem, **kwargs) -> AlignmentResult:
        """Run :func:`smc` with this configuration (class docstring)."""
        if "init" in kwargs:
            if not isinstance(kwargs["init"], str):
                raise TypeError(
                    f"{self.name} fixes its initial stage; pass its fields "
                    f"({', '.join(self._stage_names())}) or call psijax.align.smc(init=...)."
                )
            deprecated(f"{self.name}(init={kwargs['init']!r})", "psijax.align.smc(init=Stage(...))")
            return smc(rng_key, problem, **{**self.config, **kwargs})
        self._check_keywords(kwargs)
        stage_fields = set(self._stage_names())
        stage_options = {k: kwargs.pop(k) for k in list(kwargs) if k in stage_fields}
        config = dict(self.config)
        if stage_options:
            config["init"] = dataclasses.replace(self.init, **stage_options)
        return smc(rng_key, problem, **{**config, **kwargs})

    def _check_keywords(self, kwargs: dict) -> None:
        """A ``TypeError`` naming this sampler (not the internals it calls) for a keyword it
        does not take, with the closest names it does take."""
        from psijax.align.init import RENAMED_OPTIONS  # the 0.1 spellings still accepted

        accepted = [p for p in self.__signature__.parameters if p not in ("rng_key", "problem")]
        unknown = sorted(set(kwargs) - {*accepted, *RENAMED_OPTIONS, "init_predictor"})
        if unknown:
            hints = [
                f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k)
                for k in unknown
                for close in [difflib.get_close_matches(k, accepted, n=1)]
            ]
            raise TypeError(
                f"{self.name}() got unexpected keyword arguments: {', '.join(hints)}; it takes "
                f"{', '.join(accepted)}."
            )

    @property
    def __signature__(self) -> inspect.Signature:
        """``(rng_key, problem, *, <smc's arguments>, <the stage's fields>)`` with defaults."""
        params = []
        for p in inspect.signature(smc).parameters.values():
            if p.name == "init" or p.kind is p.VAR_KEYWORD:
                continue
            params.append(p.replace(default=self.config.get(p.name, p.default)))
        for f in dataclasses.fields(self.init):
            params.append(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=getattr(self.init, f.name),
                    annotation=f.type,
                )
            )
        return inspect.Signature(params, return_annotation=AlignmentResult)

    def _stage_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.init))

    def _docstring(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.config.items()) or "its defaults"
        stage = f"{type(self.init).__module__}.{type(self.init).__name__}"
        summary = "\n\n".join(  # one-line paragraphs are wrapped; formatted ones kept
            p.strip() if "\n" in p.strip() else textwrap.fill(p.strip(), 92)
            for p in self.summary.split("\n\n")
        )
        lines = [
            summary,
            "",
            textwrap.fill(f"This is :func:`psijax.align.smc` with ``{settings}``.", 92),
            "",
            "Parameters",
            "----------",
            "rng_key, problem",
            "    As in :func:`psijax.align.smc`.",
        ]
        if self._stage_names():
            lines += [
                ", ".join(self._stage_names()),
                f"    The fields of its initial stage, :class:`{stage}`, passed directly.",
            ]
        lines += [
            "**kwargs",
            "    Any other keyword argument of :func:`psijax.align.smc` (``num_particles``,",
            "    ``nfe_budget``, ``num_steps``, ``resampling``, ``mesh``, …); they override",
            "    the configuration.",
            "",
            "Returns",
            "-------",
            "AlignmentResult",
            "    With ``info`` a :class:`~psijax.align.SamplerInfo`.",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<sampler {self.name}>"


_SMC_PARAMETERS = tuple(
    name for name in inspect.signature(smc).parameters if name not in ("rng_key", "problem")
)

psi_sampler = NamedSampler(
    "psi_sampler",
    "Ψ-Sampler (Yoon et al., NeurIPS 2025): pCNL chains on the reward-aware initial posterior "
    "``π_init ∝ N(0, I)·exp(r(x̂0(x, 1))/α_init)`` (5 chains, 50 burn-in + 50 kept steps, "
    "``h = 0.5``), then twisted SMC.\n\n``α_init`` (``alpha=``) defaults to ``problem.alpha``, "
    "which makes ``π_init`` the optimal initial distribution ``p_1·exp(r(x̂0(x, 1))/α)``; the "
    "paper's released configs use ``α_init = 0.1`` for their rewards (pass ``alpha=0.1`` to "
    "reproduce them).",
    {"init": Chains()},
)
tds = NamedSampler(
    "tds",
    "Twisted Diffusion Sampler (Wu et al. 2023): prior start, twisted proposal, resampling at "
    "every step.",
    {"ess_threshold": 1.0},
)
das = NamedSampler(
    "das",
    "Diffusion Alignment as Sampling (Kim et al. 2025): prior start, twisted proposal, DAS "
    "tempering (:func:`das_schedule`), adaptive resampling.",
    {"tempering": "das"},
)
fk_steering = NamedSampler(
    "fk_steering",
    "Feynman–Kac steering (Singhal et al. 2025): prior start, bootstrap proposal (no reward "
    "gradient), max-over-time potential, resampling at every step.",
    {"proposal": Bootstrap(), "potential": Max(), "ess_threshold": 1.0},
)
top_k_smc = NamedSampler(
    "top_k_smc",
    "Top-K-of-N initial particles (ranked by ``r(x̂0(x, 1))``, weighted as prior draws), then "
    "twisted SMC.",
    {"init": TopK()},
)
ula_smc = NamedSampler(
    "ula_smc",
    "ULA chains on ``π_init`` (unadjusted: biased), then twisted SMC.",
    {"init": Chains(kernel=ula, step_size=0.25)},
)
mala_smc = NamedSampler(
    "mala_smc",
    "MALA chains (BlackJAX's ``blackjax.mala`` as it is) on ``π_init``, then twisted SMC.",
    {"init": Chains(kernel=blackjax.mala, step_size=0.25)},
)
pcn_smc = NamedSampler(
    "pcn_smc",
    "pCN chains (gradient-free) on ``π_init``, then twisted SMC.",
    {"init": Chains(kernel=pcn)},
)
tempered_smc = NamedSampler(
    "tempered_smc",
    "Adaptive tempered SMC from the prior to ``π_init`` with pCNL moves (independent particles "
    "and an estimate of ``Z_init``), then twisted SMC: ``log_normalizer`` estimates ``log Z``.",
    {"init": Tempered()},
)

SAMPLERS: dict[str, Callable] = {
    sampler.__name__: sampler
    for sampler in (
        psi_sampler,
        smc,
        tds,
        das,
        fk_steering,
        top_k_smc,
        ula_smc,
        mala_smc,
        pcn_smc,
        tempered_smc,
        dps,
        freedom,
        best_of_n,
    )
}
"""Every sampler by name (same call shape). The studies and the command line list these."""


def register(sampler: NamedSampler, *, replace: bool = False) -> NamedSampler:
    """Add ``sampler`` to :data:`SAMPLERS` under its name (``ValueError`` if taken, unless
    ``replace``, or if it is a deprecated 0.1 name); returns it.

    The registry is what the studies and the command line list; registering does not add an
    attribute to :mod:`psijax.align` (the built-in samplers are its attributes).
    """
    if not isinstance(sampler, NamedSampler):
        raise TypeError(f"`sampler` must be a NamedSampler, got {sampler!r}.")
    if sampler.name in DEPRECATED_NAMES:
        raise ValueError(f"{sampler.name!r} is a deprecated 0.1 name; choose another.")
    if sampler.name in SAMPLERS and not replace:
        raise ValueError(f"a sampler named {sampler.name!r} is registered already.")
    SAMPLERS[sampler.name] = sampler
    return sampler


def unregister(name: str) -> None:
    """Remove the sampler ``name`` from :data:`SAMPLERS` (``KeyError`` if absent)."""
    del SAMPLERS[name]


def initial_stage(sampler: Callable) -> InitialStage | None:
    """The initial stage of an SMC sampler (``Prior()`` for :func:`smc`), ``None`` for the
    guidance samplers and best-of-N."""
    if isinstance(sampler, NamedSampler):
        return sampler.init
    if sampler is smc:
        return Prior()
    return None


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
def _legacy_layout(method, nfe_budget, num_steps, budget_split, num_chains=5) -> dict:
    from psijax.align.init import stage_from_method

    deprecated("budget_layout(<method name>, ...) -> dict", "budget_layout(<stage>, ...)")
    stage = stage_from_method(method, {"num_chains": num_chains} if method in _CHAIN_NAMES else {})
    num_particles, sized = budget_layout(stage, nfe_budget, num_steps, budget_split=budget_split)
    changed = {
        f.name: getattr(sized, f.name)
        for f in dataclasses.fields(sized)
        if f.name in ("num_candidates", "burn_in", "num_kept")
        and getattr(sized, f.name) != getattr(stage, f.name)
    }
    return {"num_particles": num_particles, **changed}


_CHAIN_NAMES = ("pcnl", "pcn", "mala", "ula")


def _evaluation_cost(stage: InitialStage) -> int | None:
    """NFE of one ``r_init`` evaluation of ``stage`` (the problem's predictor is Tweedie)."""
    predictor = getattr(stage, "predictor", None)
    if predictor is None:
        return 1
    if isinstance(predictor, str):  # deprecated names
        return 1 if predictor == "tweedie" else None
    return as_predictor(predictor, "predictor").nfe_per_call


def _at_least_one(value: int, budget: int) -> int:
    if value < 1:
        raise ValueError(f"`nfe_budget`={budget} is too small for one particle over the grid.")
    return int(value)


DEPRECATED_NAMES = {
    "top_k": "top_k_smc",
    "ula": "ula_smc",
    "mala": "mala_smc",
    "pcn": "pcn_smc",
    "tempered": "tempered_smc",
}
"""0.1 sampler and method names (removed after 0.2) and their registry names."""


def _stage(init, options: dict) -> InitialStage:
    """``init``, or the stage that the deprecated ``init="<method>", **options`` name."""
    from psijax.align.init import RENAMED_OPTIONS, stage_from_method  # the 0.1 spellings

    predictor = options.pop("init_predictor", None)
    if isinstance(init, str):
        deprecated(f"smc(init={init!r}, ...)", "smc(init=Chains(...)/TopK(...)/...)")
        init = stage_from_method(init, options)
    elif options:
        is_dataclass = dataclasses.is_dataclass(init)
        fields = [f.name for f in dataclasses.fields(init)] if is_dataclass else []
        renamed = {RENAMED_OPTIONS.get(k, k): v for k, v in options.items()}
        unknown = sorted(k for k in renamed if k not in fields)
        if unknown:
            raise TypeError(f"smc() got unexpected keyword arguments {unknown}.")
        deprecated(f"smc({', '.join(options)}=...)", "the stage's fields, init=Stage(...)")
        init = dataclasses.replace(init, **renamed)
    if predictor is not None:
        deprecated("init_predictor=", "the stage's predictor= field")
        if not hasattr(init, "predictor"):
            return init  # a prior start evaluates no predictor (0.1 ignored it too)
        init = dataclasses.replace(init, predictor=predictor)
    return init
