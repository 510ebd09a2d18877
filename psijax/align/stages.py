r"""Initial stages: how the SMC's particles at ``t = 1`` are drawn, weighted and paid for.

An initial stage is a small frozen object with

``sample(rng_key, problem, num_particles, *, mesh=None) -> InitialParticles``
    the particles ``(K, *event_shape)``, their log-weights **relative to prior draws**
    (``log N(x; 0, I) − log q(x)`` up to a constant, ``q`` the law they were drawn from;
    docs/algorithms.md §5), the NFE spent and an :class:`InitInfo`;
``check(problem, num_particles, mesh)``
    the argument checks, run before anything is traced (``ValueError``/``TypeError`` naming
    the argument);
``budgeted(budget, num_particles) -> stage``
    the same stage sized to spend ``budget`` model evaluations (with a Tweedie predictor),
    for an equal-NFE comparison (:func:`psijax.align.samplers.budget_layout`).

The stages of psijax:

- :class:`Prior`: ``x ~ N(0, I)``, log-weights 0; it spends nothing.
- :class:`TopK`: the ``K`` highest-``r_init`` of ``M`` prior draws, log-weights 0 (a documented
  choice: the law of the kept draws has no tractable density; they are treated as prior draws).
- :class:`~psijax.align.chains.Chains`: MCMC chains on the reward-aware posterior
  ``π_init(x) ∝ N(x; 0, I)·exp(r_init(x)/α_init)``, ``r_init(x) = r(x̂0(x, 1))`` (Ψ-Sampler's
  pCNL, or any BlackJAX-shaped kernel), log-weights ``−r_init/α_init``.
- :class:`~psijax.align.tempered.Tempered`: adaptive tempered SMC from ``N(0, I)`` to
  ``π_init`` with pCNL moves, which also estimates ``Z_init``.

A stage with a ``predictor`` field evaluates ``r_init`` with that x0-predictor instead of the
problem's (e.g. the flow map for an exact model, whose Tweedie at ``t = 1`` is a constant);
the SMC's weights stay consistent (docs/algorithms.md §5).

**NFE.** An evaluation of ``r_init`` (with or without gradient) costs the predictor's NFE at
that point (:meth:`psijax.align.RewardProblem.predict_x0_and_nfe`): 1 for Tweedie, the exact
count of the ODE solve for the flow map. A data-dependent count is measured by one more,
uncounted, forward evaluation of the predictor's cost at every evaluated point.
"""

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.types import Array, PRNGKey
from jax.sharding import Mesh

from psijax._checks import check_int, check_real
from psijax.align.predictors import as_predictor
from psijax.align.problem import RewardProblem, check_problem
from psijax.smc.sharding import check_divisible, check_mesh, constrain, map_particles

__all__ = [
    "InitInfo",
    "InitialParticles",
    "InitialStage",
    "Prior",
    "TopK",
]


class InitInfo(NamedTuple):
    """Diagnostics of the initial stage.

    acceptance_rate
        ``(C,)`` mean acceptance of each chain over the kept steps; ``(1,)`` mean over all
        tempered-SMC mutation steps; NaN for prior, Top-K and kernels without an accept step.
    step_size
        ``()`` the step size used (after adaptation); NaN for prior and Top-K.
    num_tempering_steps
        int32 ``()``; 0 unless the stage is tempered SMC.
    log_normalizer
        ``log Ẑ_init`` for tempered SMC (NaN if its loop hit its step limit), 0 for the prior,
        NaN otherwise.

    """

    acceptance_rate: Array
    step_size: Array
    num_tempering_steps: Array
    log_normalizer: Array


class InitialParticles(NamedTuple):
    """What an initial stage returns.

    particles
        ``(K, *event_shape)`` particles at ``t = 1``.
    log_weights
        ``(K,)`` log-weights relative to prior draws (module docstring).
    nfe
        Model evaluations spent (int32).
    info
        :class:`InitInfo`.

    """

    particles: Array
    log_weights: Array
    nfe: Array
    info: InitInfo


class InitialStage:
    """Base of the initial stages (module docstring).

    Class attributes: ``spends_budget`` (``False`` for the prior: an NFE budget goes to the SMC
    whole) and ``adaptive_cost`` (``True`` when the cost cannot be fixed in advance, as for
    tempered SMC: an NFE budget cannot be split with it).
    """

    spends_budget: bool = True
    adaptive_cost: bool = False

    def sample(
        self, rng_key: PRNGKey, problem: RewardProblem, num_particles: int, *, mesh=None
    ) -> InitialParticles:
        """Draw ``num_particles`` initial particles (module docstring)."""
        raise NotImplementedError

    def check(self, problem: RewardProblem, num_particles: int, mesh: Mesh | None) -> None:
        """Raise ``ValueError``/``TypeError`` for arguments the stage cannot run with."""
        check_problem(problem)
        check_int(num_particles, "num_particles")
        check_mesh(mesh)

    def budgeted(self, budget: int, num_particles: int) -> "InitialStage":
        """The stage sized to spend ``budget`` evaluations of ``r_init`` for ``num_particles``.

        A stage that spends evaluations must say how (a stage that spends none sets
        ``spends_budget = False``, one of adaptive cost ``adaptive_cost = True``).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not say how to spend an NFE budget: define "
            "budgeted(budget, num_particles), or give num_particles instead of nfe_budget."
        )


@dataclasses.dataclass(frozen=True)
class Prior(InitialStage):
    """``x ~ N(0, I)``: ``jax.random.normal(rng_key, (K, *event_shape))``, log-weights 0."""

    spends_budget = False

    def check(self, problem, num_particles, mesh) -> None:
        """The particles are sharded: ``K`` must divide over the mesh."""
        super().check(problem, num_particles, mesh)
        check_divisible(mesh, num_particles, "num_particles")

    def sample(self, rng_key, problem, num_particles, *, mesh=None) -> InitialParticles:
        """Prior draws, 0 NFE, ``log Ẑ_init = 0``."""
        self.check(problem, num_particles, mesh)
        x = jax.random.normal(rng_key, (num_particles, *problem.event_shape), jnp.float32)
        info = no_mcmc_info(log_normalizer=0.0)
        return InitialParticles(constrain(x, mesh), jnp.zeros(num_particles), jnp.int32(0), info)


@dataclasses.dataclass(frozen=True)
class TopK(InitialStage):
    """The ``K`` best of ``M`` prior draws by ``r_init(x) = r(x̂0(x, 1))``, log-weights 0.

    Parameters
    ----------
    num_candidates
        ``M >= K``; ``None`` means ``4·K`` (or, with an NFE budget, the initial share).
        ``jax.random.normal(rng_key, (M, *event_shape))`` are the candidates; they are sharded
        over a mesh, so ``M`` must divide over it. A non-finite ``r_init`` ranks last.
    predictor
        The x0-predictor of ``r_init``; ``None``: the problem's.

    """

    num_candidates: int | None = None
    predictor: object = None

    def __post_init__(self):
        if self.num_candidates is not None:
            check_int(self.num_candidates, "num_candidates")
        check_predictor(self.predictor)

    def candidates(self, num_particles: int) -> int:
        """``M``: ``num_candidates``, or ``4·K``."""
        return 4 * num_particles if self.num_candidates is None else self.num_candidates

    def check(self, problem, num_particles, mesh) -> None:
        """``M >= K``, and ``M`` divides over the mesh."""
        super().check(problem, num_particles, mesh)
        m = self.candidates(num_particles)
        if m < num_particles:
            raise ValueError(f"`num_candidates` must be >= num_particles={num_particles}, got {m}.")
        check_divisible(mesh, m, "num_candidates")

    def budgeted(self, budget: int, num_particles: int) -> "TopK":
        """``M = max(budget, K)`` candidates, one evaluation each."""
        not_with_budget(self.num_candidates, "num_candidates")
        return dataclasses.replace(self, num_candidates=max(budget, num_particles))

    def sample(self, rng_key, problem, num_particles, *, mesh=None) -> InitialParticles:
        """Rank ``M`` prior draws by ``r_init`` and keep the ``K`` best (ties: the first)."""
        self.check(problem, num_particles, mesh)
        reward_and_nfe, _ = reward_with_nfe(with_predictor(problem, self.predictor))
        n = self.candidates(num_particles)
        x = constrain(jax.random.normal(rng_key, (n, *problem.event_shape), jnp.float32), mesh)
        reward, nfe = map_particles(reward_and_nfe, mesh, chunk=problem.particle_chunk)(x)
        _, best = jax.lax.top_k(jnp.where(jnp.isfinite(reward), reward, -jnp.inf), num_particles)
        info = no_mcmc_info(log_normalizer=jnp.nan)
        return InitialParticles(x[best], jnp.zeros(num_particles), jnp.sum(nfe), info)


# ----------------------------------------------------------------------------------------------
# Shared by the stages
# ----------------------------------------------------------------------------------------------
def no_mcmc_info(log_normalizer: float) -> InitInfo:
    """The :class:`InitInfo` of a stage without MCMC moves."""
    nan = jnp.float32(jnp.nan)
    return InitInfo(jnp.full((1,), nan), nan, jnp.int32(0), jnp.float32(log_normalizer))


def with_predictor(problem: RewardProblem, predictor) -> RewardProblem:
    """``problem`` with the stage's x0-predictor (``None``: the problem's own)."""
    if predictor is None:
        return problem
    if isinstance(predictor, str):  # deprecated names, with the problem's deprecated options
        return dataclasses.replace(problem, x0_predictor=predictor)
    predictor = as_predictor(predictor, "predictor")
    return dataclasses.replace(problem, x0_predictor=predictor, flow_map_options=None)


def check_predictor(predictor) -> None:
    """A stage's ``predictor``: ``None``, a predictor or a callable (``TypeError`` otherwise)."""
    if predictor is not None and not isinstance(predictor, str):
        as_predictor(predictor, "predictor")


def reward_with_nfe(problem: RewardProblem) -> tuple[Callable, Callable]:
    """``x -> (r_init(x), nfe)`` and ``x -> nfe`` (int32) for one evaluation at ``x``."""
    cost = problem.x0_predictor.nfe_per_call
    if cost is not None:  # a constant cost: nothing to evaluate for the count
        constant = jnp.asarray(cost, jnp.int32)
        return (lambda x: (problem.reward(problem.predict_x0(x, 1.0)), constant)), (
            lambda x: constant
        )

    def reward_and_nfe(x):
        x0, nfe = problem.predict_x0_and_nfe(x, 1.0)
        return problem.reward(x0), nfe

    return reward_and_nfe, lambda x: reward_and_nfe(jax.lax.stop_gradient(x))[1]


def log_likelihood_fn(problem: RewardProblem, alpha: float | None) -> tuple[Callable, Callable]:
    """``x -> r_init(x)/α_init`` (``−inf`` where not finite) and ``x -> nfe`` of one evaluation.

    ``alpha=None`` uses ``problem.alpha``.
    """
    alpha_init = problem.alpha if alpha is None else alpha
    reward_and_nfe, nfe_fn = reward_with_nfe(problem)

    def log_likelihood(x):
        value = reward_and_nfe(x)[0] / alpha_init
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    return log_likelihood, nfe_fn


def log_prior(x, axis: bool = False):
    """``−½‖x‖²`` of one sample, or of each sample of a batch when ``axis``."""
    axes = tuple(range(1, jnp.ndim(x))) if axis else None
    return -0.5 * jnp.sum(jnp.square(x), axis=axes)


def check_alpha(alpha) -> None:
    """``α_init``: ``None`` or a finite real ``> 0``."""
    if alpha is not None:
        check_real(alpha, "alpha", gt=0.0)


def not_with_budget(value, name: str) -> None:
    """``ValueError`` when a size the NFE budget sets was also given."""
    if value is not None:
        raise ValueError(f"Give `{name}` or `nfe_budget`, not both.")
