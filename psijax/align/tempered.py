r"""Adaptive tempered SMC from the prior to the reward-aware initial posterior, with pCNL moves.

A sturdier initial stage than chains (docs/algorithms.md §4): independent particles, no
burn-in guesswork, and an estimate of the initial normalizer. BlackJAX's
``adaptive_tempered_smc`` runs from ``N(0, I)`` (``λ = 0``) to
``π_init ∝ N(0, I)·e^{r_init/α_init}`` (``λ = 1``), choosing each next ``λ`` so that the ESS
fraction of the reweighted particles is ``target_ess``; it resamples (psijax's systematic
scheme, :func:`psijax.smc.resampling.systematic`) and mutates every particle with
``num_mcmc_steps`` pCNL steps per temperature. It estimates

.. math::

    Z_{init} = \mathbb E_{N(0, I)}\big[e^{r_{init}(x)/α_{init}}\big],

unbiased in ``Ẑ_init`` (not ``log Ẑ_init``). The log-weights relative to prior draws are
``log(K·W) − r_init/α_init``: BlackJAX resamples at the *start* of a step and leaves normalized
weights ``W`` after the last one (folded in rather than resampled again).

**NFE** with ``T`` temperatures and ``M = num_mcmc_steps``: per temperature and particle
BlackJAX (1.7) evaluates the log-likelihood once for the ESS bisection (reused by its
iterations), once with gradient in the mutation's ``init``, ``M`` times in the pCNL steps and
once for the new weights; ``K`` more give ``r_init`` for the log-weights: ``(T·K·(M + 3) + K)``
evaluations of ``r_init``, each costing the predictor's NFE at its point.
"""

import dataclasses
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.types import Array, PRNGKey

from psijax._checks import check_int, check_real
from psijax.align.stages import (
    InitialParticles,
    InitialStage,
    InitInfo,
    check_alpha,
    check_predictor,
    log_likelihood_fn,
    log_prior,
    with_predictor,
)
from psijax.mcmc import pcnl as pcnl_module
from psijax.smc.resampling import systematic
from psijax.smc.sharding import check_divisible, constrain

__all__ = ["Tempered", "MAX_TEMPERING_STEPS"]

MAX_TEMPERING_STEPS = 200
"""Default guard on the tempering loop; a run that hits it reports ``log_normalizer = NaN``."""


@dataclasses.dataclass(frozen=True)
class Tempered(InitialStage):
    r"""Adaptive tempered SMC from ``N(0, I)`` to ``π_init`` with pCNL moves (module docstring).

    Parameters
    ----------
    num_mcmc_steps
        ``M >= 1`` pCNL steps per temperature.
    target_ess
        The ESS fraction in ``(0, 1)`` that sets the next temperature.
    step_size
        pCNL's ``h ∈ (0, 4)``.
    alpha
        ``α_init > 0``; ``None`` uses the problem's ``α``.
    predictor
        The x0-predictor of ``r_init``; ``None``: the problem's.
    max_steps
        Guard on the number of temperatures; a run that reaches it reports
        ``info.log_normalizer = NaN`` (its weights are still right for the last ``π_λ``).

    Its cost is adaptive (the number of temperatures), so an NFE budget cannot be split with
    it: give ``num_particles`` and read ``result.nfe``.
    """

    num_mcmc_steps: int = 5
    target_ess: float = 0.5
    step_size: float = 0.5
    alpha: float | None = None
    predictor: object = None
    max_steps: int = MAX_TEMPERING_STEPS

    adaptive_cost = True

    def __post_init__(self):
        check_int(self.num_mcmc_steps, "num_mcmc_steps")
        check_real(self.target_ess, "target_ess", gt=0.0, lt=1.0)
        check_real(self.step_size, "step_size", gt=0.0, lt=pcnl_module.MAX_STEP_SIZE)
        check_alpha(self.alpha)
        check_predictor(self.predictor)
        check_int(self.max_steps, "max_steps")

    def check(self, problem, num_particles, mesh) -> None:
        """The particles are sharded: ``K`` must divide over the mesh; no ``particle_chunk``."""
        super().check(problem, num_particles, mesh)
        check_divisible(mesh, num_particles, "num_particles")
        if problem.particle_chunk is not None:
            raise ValueError(
                "Tempered() cannot evaluate particles in chunks: BlackJAX's tempered SMC maps "
                "over every particle itself. Use `particle_chunk=None`, or Chains(...) (the "
                "Ψ-Sampler's pCNL stage), which honours it."
            )

    def sample(self, rng_key, problem, num_particles, *, mesh=None) -> InitialParticles:
        """Temper from prior draws to ``π_init`` (module docstring)."""
        self.check(problem, num_particles, mesh)
        problem = with_predictor(problem, self.predictor)
        log_likelihood, nfe_fn = log_likelihood_fn(problem, self.alpha)
        key_init, key_smc = jax.random.split(rng_key)
        x = jax.random.normal(key_init, (num_particles, *problem.event_shape), jnp.float32)
        return self._temper(key_smc, constrain(x, mesh), log_likelihood, nfe_fn)

    def _temper(self, rng_key, x, log_likelihood, nfe_fn) -> InitialParticles:
        num_mcmc_steps = self.num_mcmc_steps
        algorithm = blackjax.adaptive_tempered_smc(
            logprior_fn=log_prior,
            loglikelihood_fn=log_likelihood,
            mcmc_step_fn=pcnl_module.build_kernel(),
            mcmc_init_fn=pcnl_module.init,
            mcmc_parameters=blackjax.smc.extend_params(
                {"step_size": jnp.asarray(self.step_size, jnp.float32)}
            ),
            resampling_fn=systematic,
            target_ess=self.target_ess,
            num_mcmc_steps=num_mcmc_steps,
        )
        state = algorithm.init(x)._replace(tempering_param=jnp.zeros((), jnp.float32))
        zero, num_particles = jnp.zeros((), jnp.float32), x.shape[0]
        carry = _TemperCarry(
            state, jax.vmap(nfe_fn)(x), jnp.int32(0), zero, zero, jnp.int32(0), rng_key
        )

        def cond(c):
            return (c.state.tempering_param < 1.0) & (c.steps < self.max_steps)

        def body(c):
            key, key_step = jax.random.split(c.rng_key)
            state, info = algorithm.step(key_step, c.state)
            moves = info.update_info  # PCNLInfo, fields (K, M)
            start = c.nfe_at[info.ancestors]  # mutation init at the resampled particles
            proposed = jax.vmap(jax.vmap(nfe_fn))(moves.proposal.position)
            # A particle ends at its last accepted proposal, or where its mutation started.
            last = num_mcmc_steps - 1 - jnp.argmax(moves.is_accepted[:, ::-1], axis=1)
            at_last = jnp.take_along_axis(proposed, last[:, None], axis=1)[:, 0]
            end = jnp.where(moves.is_accepted.any(axis=1), at_last, start)
            # ESS bisection at the old particles + init + M proposals + new weights (docstring).
            nfe = c.nfe + jnp.sum(c.nfe_at) + jnp.sum(start) + jnp.sum(proposed) + jnp.sum(end)
            log_z = c.log_z + info.log_likelihood_increment
            acceptance = c.acceptance + jnp.mean(moves.acceptance_rate)
            return _TemperCarry(state, end, nfe, log_z, acceptance, c.steps + 1, key)

        c = jax.lax.while_loop(cond, body, carry)
        lam, weights = c.state.tempering_param, c.state.weights
        ll = jax.vmap(log_likelihood)(c.state.particles)
        ok = jnp.isfinite(ll) & (weights > 0)  # λ < 1 only at the cap: weights stay right for π_λ
        log_weights = jnp.where(ok, jnp.log(num_particles * weights) - lam * ll, -jnp.inf)
        info = InitInfo(
            (c.acceptance / jnp.maximum(c.steps, 1))[None],
            jnp.asarray(self.step_size, jnp.float32),
            c.steps,
            jnp.where(lam >= 1.0, c.log_z, jnp.nan),
        )
        nfe = c.nfe + jnp.sum(c.nfe_at)  # the final r_init evaluation
        return InitialParticles(c.state.particles, log_weights, nfe, info)


class _TemperCarry(NamedTuple):
    state: NamedTuple  # blackjax TemperedSMCState
    nfe_at: Array  # (K,) NFE of one r_init evaluation at each current particle
    nfe: Array
    log_z: Array
    acceptance: Array  # running sum of the mutation acceptance rates
    steps: Array
    rng_key: PRNGKey
