r"""Initial particles at ``t = 1``: prior, Top-K, MCMC chains, or tempered SMC to ``π_init``.

The reward-aware initial posterior of Ψ-Sampler (ALGORITHMS.md §3) is

.. math::

    π_{init}(x) ∝ N(x; 0, I)\, e^{r_{init}(x)/α_{init}}, \qquad
    r_{init}(x) = r(\hat x_0(x, 1)),

with the problem's x0-predictor (Tweedie, flow map or a callable). The methods:

- ``"prior"``: ``x ~ N(0, I)``. ``"top_k"``: the ``K`` highest-``r_init`` of ``N`` prior draws.
- ``"pcnl"``, ``"pcn"``, ``"mala"``, ``"ula"``: ``C`` chains (vmapped) from ``N(0, I)``, ``B``
  burn-in steps, then ``S`` kept steps. ``K`` particles are spread over the chains as evenly as
  possible (the first ``K mod C`` chains give one more): chain ``c`` gives ``k_c`` states at
  stride ``s_c = max(1, S // k_c)``, the last ones, i.e. kept-step indices
  ``S − 1, S − 1 − s_c, …, S − 1 − (k_c − 1)·s_c`` (:func:`thinning_layout`). Only those states
  are stored.
- ``"tempered"``: BlackJAX's ``adaptive_tempered_smc`` from ``N(0, I)`` (``λ = 0``) to ``π_init``
  (``λ = 1``) with pCNL mutations and systematic resampling; it also estimates
  ``Z_init = E_{N(0, I)}[exp(r_init/α_init)]``, unbiased in ``Ẑ_init`` (not ``log Ẑ_init``).

**Log-weights relative to prior draws** (ALGORITHMS.md §5, "Initial weights"):
``log N(x; 0, I) − log q(x)`` up to a constant, ``q`` the law the particle was drawn from, so the
SMC starts from ``log_weights + λ_0·r(x̂0(x, 1))/α``. Prior: 0. Chains: ``−r_init/α_init``.
Tempered: ``log(K·W) − r_init/α_init``, since BlackJAX resamples at the *start* of a step and
leaves normalized weights ``W`` after the last one (folded in rather than resampled again).
Top-K: 0, a documented choice (its law has no tractable density; treated as prior draws).

**NFE.** An evaluation of ``r_init`` (with or without gradient) costs the predictor's NFE at
that point (``RewardProblem.predict_x0_and_nfe``): 1 for Tweedie, the exact count of the ODE
solve for ``"flow_map"``, for a callable the count it returns with ``x0`` (else 1). The kernels
do not report it, so for non-Tweedie predictors it is measured by one more, uncounted, forward
evaluation at every evaluated point (the starts and each proposal, accepted or not: from the
kernel's info, or for MALA rebuilt from its key).
"""

import math
import types
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc.diffusions import overdamped_langevin
from blackjax.types import Array, PRNGKey
from jax.sharding import Mesh

from psijax._checks import check_int, concrete_value
from psijax.align.problem import RewardProblem
from psijax.mcmc import pcn, pcnl, ula
from psijax.mcmc.adaptation import step_size_adaptation
from psijax.smc.sharding import check_divisible, check_mesh, constrain, map_particles

__all__ = [
    "METHODS",
    "MAX_TEMPERING_STEPS",
    "InitInfo",
    "InitialParticles",
    "initial_particles",
    "thinning_layout",
]

METHODS = ("prior", "top_k", "pcnl", "pcn", "mala", "ula", "tempered")
MAX_TEMPERING_STEPS = 200
"""Guard on the tempering loop; a run that hits it reports ``log_normalizer = NaN``."""


class InitInfo(NamedTuple):
    """Diagnostics of the initial stage.

    acceptance_rate
        ``(C,)`` mean acceptance of each chain over the kept steps; ``(1,)`` mean over all
        tempered-SMC mutation steps; NaN for prior, Top-K and ULA (no accept step).
    step_size
        ``()`` the step size ``h`` used (after adaptation; MALA/ULA ran at ``ε = h/2``); NaN for
        prior and Top-K.
    num_tempering_steps
        int32 ``()``; 0 unless ``"tempered"``.
    log_normalizer
        ``log Ẑ_init`` for ``"tempered"`` (NaN if the loop hit :data:`MAX_TEMPERING_STEPS`),
        0 for the prior, NaN otherwise.
    """

    acceptance_rate: Array
    step_size: Array
    num_tempering_steps: Array
    log_normalizer: Array


class InitialParticles(NamedTuple):
    """Particles ``(K, *event_shape)`` at ``t = 1``, their log-weights relative to prior draws
    ``(K,)`` (see the module docstring), the NFE spent (int32) and :class:`InitInfo`."""

    particles: Array
    log_weights: Array
    nfe: Array
    info: InitInfo


def initial_particles(
    rng_key: PRNGKey,
    problem: RewardProblem,
    num_particles: int,
    *,
    method: str = "pcnl",
    alpha: float | None = None,
    step_size: float = 0.5,
    num_chains: int = 5,
    burn_in: int = 50,
    num_kept: int = 50,
    adapt_step_size: bool = False,
    target_acceptance_rate: float = 0.5,
    num_candidates: int | None = None,
    num_mcmc_steps: int = 5,
    target_ess: float = 0.5,
    on_too_few_states: str = "error",
    mesh: Mesh | None = None,
) -> InitialParticles:
    r"""``K = num_particles`` initial particles at ``t = 1`` (for every method but the prior
    and Top-K, from ``π_init(x) ∝ N(x; 0, I)·exp(r(x̂0(x, 1))/α_init)``).

    Parameters
    ----------
    rng_key
        PRNG key. ``"prior"`` and ``"top_k"`` draw ``jax.random.normal(rng_key, (n, *event_shape))``
        with ``n = K`` and ``n = num_candidates``.
    problem
        The :class:`~psijax.align.RewardProblem`; its predictor defines ``r_init``.
    num_particles
        ``K >= 1``.
    method
        One of :data:`METHODS`.
    alpha
        ``α_init > 0``; ``None`` uses ``problem.alpha``.
    step_size
        ``h``: pCNL/pCN (chains and the tempered mutations) in ``(0, 4)``; MALA and ULA ``> 0``,
        run at ``ε = h/2`` in BlackJAX MALA's convention ``x' = x + ε∇log π + √(2ε)ξ`` (the
        Langevin time of one pCNL step ``h``, since ``ρ ≈ 1 − h/2``, ``β ≈ √h``).
    num_chains, burn_in, num_kept
        ``C >= 1``, ``B >= 0``, ``S >= 1`` of the chains.
    adapt_step_size
        pCN/pCNL only: tune ``h`` toward ``target_acceptance_rate`` during the ``B >= 1`` burn-in
        steps (:func:`psijax.mcmc.adaptation.step_size_adaptation`, one ``h`` for all chains),
        then run the ``S`` kept steps at the tuned ``h``.
    target_acceptance_rate
        In ``(0, 1)``.
    num_candidates
        Top-K's ``N >= K``; ``None`` means ``4·K`` (pass ``N`` to match an NFE budget).
    num_mcmc_steps, target_ess
        Tempered SMC: pCNL steps per temperature (``>= 1``) and the ESS fraction in ``(0, 1)``
        that sets the next temperature.
    on_too_few_states
        ``K > C·S`` would repeat states: ``"error"`` raises, ``"more_chains"`` raises ``C`` to
        ``⌈K/S⌉``.
    mesh
        A :class:`jax.sharding.Mesh`, or ``None``: shard the chains (``C``), Top-K's candidates
        (``N``) or the tempered particles (``K``) over its devices; that count must be a
        multiple of the device count (:mod:`psijax.smc.sharding`). The chains and candidates
        evaluate ``r_init`` under ``shard_map``; the tempered stage (BlackJAX's loop) and the
        step-size adaptation are partitioned by ``jit`` from their sharded inputs.

    Returns
    -------
    :class:`InitialParticles`. NFE, ``e`` the cost of one ``r_init``: prior 0; Top-K ``N·e``;
    chains ``C·(B + S + 1)·e`` (the start, then one evaluation per step); tempered
    ``(T·K·(M + 3) + K)·e`` for ``T`` temperatures, ``M = num_mcmc_steps``: per temperature and
    particle BlackJAX (1.7) evaluates the log-likelihood once for the ESS bisection (reused by
    its iterations), once with gradient in the mutation's ``init``, ``M`` times in the pCNL steps
    and once for the new weights; ``K`` more give ``r_init`` for the log-weights.

    Non-finite ``r_init`` counts as ``−inf`` (zero density): proposals there are rejected,
    tempered particles get zero weight, Top-K ranks them last; a kept state there (a chain stuck
    at a non-finite start: starts are not redrawn) gets log-weight ``−inf``.

    Raises
    ------
    ValueError
        Naming the invalid argument and its allowed range, before anything runs.

    """
    num_chains = _check_arguments(types.SimpleNamespace(**locals()))
    alpha_init = problem.alpha if alpha is None else alpha
    reward_and_nfe, nfe_fn = _reward_with_nfe(problem)

    def log_likelihood(x):
        value = reward_and_nfe(x)[0] / alpha_init
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    if method == "prior":
        x = jax.random.normal(rng_key, (num_particles, *problem.event_shape), jnp.float32)
        x = constrain(x, mesh)
        info = _no_mcmc_info(log_normalizer=0.0)
        return InitialParticles(x, jnp.zeros(num_particles), jnp.int32(0), info)
    if method == "top_k":
        n = _num_candidates(num_candidates, num_particles)
        x = constrain(jax.random.normal(rng_key, (n, *problem.event_shape), jnp.float32), mesh)
        reward, nfe = map_particles(reward_and_nfe, mesh)(x)
        _, best = jax.lax.top_k(jnp.where(jnp.isfinite(reward), reward, -jnp.inf), num_particles)
        info = _no_mcmc_info(log_normalizer=jnp.nan)
        return InitialParticles(x[best], jnp.zeros(num_particles), jnp.sum(nfe), info)
    if method == "tempered":
        key_init, key_smc = jax.random.split(rng_key)
        x = jax.random.normal(key_init, (num_particles, *problem.event_shape), jnp.float32)
        x = constrain(x, mesh)
        return _tempered(key_smc, x, log_likelihood, nfe_fn, step_size, num_mcmc_steps, target_ess)

    module, proposal_fn, eps_per_h = _CHAINS[method]
    algorithm = _counting(module, nfe_fn, proposal_fn)
    logdensity_fn = lambda x: _log_prior(x) + log_likelihood(x)
    chain, step = thinning_layout(num_particles, num_chains, num_kept)
    table, slot, k_max = _storage_plan(chain, step, num_chains, num_kept)
    key_init, key_burn, key_kept = jax.random.split(rng_key, 3)
    positions = jax.random.normal(key_init, (num_chains, *problem.event_shape), jnp.float32)
    positions = constrain(positions, mesh)

    h = jnp.asarray(step_size, jnp.float32)
    if adapt_step_size:
        adaptation = step_size_adaptation(
            algorithm,
            logdensity_fn,
            target_acceptance_rate=target_acceptance_rate,
            initial_step_size=step_size,
        )
        (states, params), _ = adaptation.run(key_burn, positions, burn_in)
        h = params["step_size"]
    else:
        states = map_particles(lambda x: algorithm.init(x, logdensity_fn), mesh)(positions)
    step_fn = _vmapped_step(algorithm.build_kernel(), logdensity_fn, eps_per_h * h, mesh)
    if burn_in > 0 and not adapt_step_size:
        states, _ = jax.lax.scan(step_fn, states, jax.random.split(key_burn, burn_in))

    buffers = (
        jnp.zeros((num_chains, k_max, *problem.event_shape), jnp.float32),
        jnp.zeros((num_chains, k_max), jnp.float32),
    )

    def keep(carry, xs):
        states, (buf_x, buf_ld), acc = carry
        key, slots = xs
        states, acceptance = step_fn(states, key)
        rows = jnp.arange(num_chains)  # slot k_max is out of bounds: dropped (state not kept)
        buf_x = buf_x.at[rows, slots].set(states.state.position, mode="drop")
        buf_ld = buf_ld.at[rows, slots].set(states.state.logdensity, mode="drop")
        return (states, (buf_x, buf_ld), acc + acceptance), None

    init = (states, buffers, jnp.zeros(num_chains, jnp.float32))
    xs = (jax.random.split(key_kept, num_kept), jnp.asarray(table))
    (states, (buf_x, buf_ld), acc), _ = jax.lax.scan(keep, init, xs)
    particles, logdensity = buf_x[chain, slot], buf_ld[chain, slot]
    r_over_alpha = logdensity - _log_prior(particles, axis=True)
    log_weights = jnp.where(jnp.isfinite(r_over_alpha), -r_over_alpha, -jnp.inf)
    acceptance = jnp.full_like(acc, jnp.nan) if method == "ula" else acc / num_kept
    info = InitInfo(acceptance, h, jnp.int32(0), jnp.float32(jnp.nan))
    return InitialParticles(particles, log_weights, jnp.sum(states.nfe), info)


def thinning_layout(
    num_particles: int, num_chains: int, num_kept: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chain and kept-step indices ``(K,)`` of the particles taken from ``C`` chains of ``S``.

    Chain ``c`` gives ``k_c = K // C + (c < K mod C)`` states at stride ``max(1, S // k_c)``,
    the last first: steps ``S − 1, S − 1 − stride, …``. Particles are ordered chain by chain.

    Raises
    ------
    ValueError
        If ``K > C·S`` (a state would be repeated).
    """
    if num_particles > num_chains * num_kept:
        raise ValueError(
            f"num_particles={num_particles} > num_chains*num_kept={num_chains * num_kept}: raise "
            "num_chains or num_kept (or pass on_too_few_states='more_chains')."
        )
    base, extra = divmod(num_particles, num_chains)
    chain, step = [], []
    for c in range(num_chains):
        k_c = base + (c < extra)
        stride = max(1, num_kept // max(k_c, 1))
        chain += [c] * k_c
        step += [num_kept - 1 - j * stride for j in range(k_c)]
    return np.asarray(chain, np.int32), np.asarray(step, np.int32)


# -- chains -------------------------------------------------------------------------------------
class _CountedState(NamedTuple):
    state: NamedTuple
    nfe: Array


def _counting(module, nfe_fn: Callable, proposal_fn: Callable):
    """``module``'s kernel with the NFE of every log-density evaluation added to the state.

    ``init``/``build_kernel`` as the adaptation and the chains expect them; the kernel evaluates
    the log-density at the initial position and at one proposal per step.
    """
    kernel = module.build_kernel()

    def init(position, logdensity_fn):
        return _CountedState(module.init(position, logdensity_fn), nfe_fn(position))

    def step(rng_key, state, logdensity_fn, step_size):
        new_state, info = kernel(rng_key, state.state, logdensity_fn, step_size)
        proposal = proposal_fn(rng_key, state.state, info, step_size)
        return _CountedState(new_state, state.nfe + nfe_fn(proposal)), info

    return types.SimpleNamespace(init=init, build_kernel=lambda: step)


def _info_proposal(rng_key, state, info, step_size):
    return info.proposal.position


def _mala_proposal(rng_key, state, info, step_size):
    """BlackJAX MALA's proposal, which its info omits: the same key split and integrator."""
    key_integrator, _ = jax.random.split(rng_key)
    no_evaluation = lambda x: (jnp.zeros(()), x)  # the proposal's own density is not needed
    return overdamped_langevin(no_evaluation)(key_integrator, state, step_size).position


# method -> (kernel module, proposal at which it evaluates, kernel step size per unit of h)
_CHAINS = {
    "pcnl": (pcnl, _info_proposal, 1.0),
    "pcn": (pcn, _info_proposal, 1.0),
    "mala": (blackjax.mala, _mala_proposal, 0.5),
    "ula": (ula, _info_proposal, 0.5),
}


def _vmapped_step(kernel: Callable, logdensity_fn: Callable, step_size, mesh) -> Callable:
    """``(states, key) -> (states, acceptance (C,))``: one step of every chain (each device
    steps its own chains; the chain keys are split globally, so they do not depend on ``mesh``)."""

    def one(key, state, step_size):
        state, info = kernel(key, state, logdensity_fn, step_size)
        return state, info.acceptance_rate

    every_chain = map_particles(one, mesh, in_axes=(0, 0, None))

    def step(states, key):
        keys = jax.random.split(key, states.nfe.shape[0])
        return every_chain(keys, states, step_size)

    return step


def _storage_plan(chain, step, num_chains, num_kept) -> tuple[np.ndarray, np.ndarray, int]:
    """Each particle's slot in its chain's buffer, ``table[s, c]`` the slot of chain ``c`` at
    kept step ``s`` (``k_max = max_c k_c``, out of bounds, where it is not kept), and ``k_max``."""
    counts = np.bincount(chain, minlength=num_chains)
    slot = (np.arange(chain.size) - (np.cumsum(counts) - counts)[chain]).astype(np.int32)
    table = np.full((num_kept, num_chains), counts.max(), np.int32)
    table[step, chain] = slot
    return table, slot, int(counts.max())


# -- tempered SMC -------------------------------------------------------------------------------
class _TemperCarry(NamedTuple):
    state: NamedTuple  # blackjax TemperedSMCState
    nfe_at: Array  # (K,) NFE of one r_init evaluation at each current particle
    nfe: Array
    log_z: Array
    acceptance: Array  # running sum of the mutation acceptance rates
    steps: Array
    rng_key: PRNGKey


def _tempered(rng_key, x, log_likelihood, nfe_fn, step_size, num_mcmc_steps, target_ess):
    """Adaptive tempered SMC from the prior draws ``x`` to ``π_init`` (pCNL mutations)."""
    algorithm = blackjax.adaptive_tempered_smc(
        logprior_fn=_log_prior,
        loglikelihood_fn=log_likelihood,
        mcmc_step_fn=pcnl.build_kernel(),
        mcmc_init_fn=pcnl.init,
        mcmc_parameters=blackjax.smc.extend_params(
            {"step_size": jnp.asarray(step_size, jnp.float32)}
        ),
        resampling_fn=blackjax.smc.resampling.systematic,
        target_ess=target_ess,
        num_mcmc_steps=num_mcmc_steps,
    )
    state = algorithm.init(x)._replace(tempering_param=jnp.zeros((), jnp.float32))
    zero, num_particles = jnp.zeros((), jnp.float32), x.shape[0]
    carry = _TemperCarry(
        state, jax.vmap(nfe_fn)(x), jnp.int32(0), zero, zero, jnp.int32(0), rng_key
    )

    def cond(c):
        return (c.state.tempering_param < 1.0) & (c.steps < MAX_TEMPERING_STEPS)

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
        jnp.asarray(step_size, jnp.float32),
        c.steps,
        jnp.where(lam >= 1.0, c.log_z, jnp.nan),
    )
    nfe = c.nfe + jnp.sum(c.nfe_at)  # the final r_init evaluation
    return InitialParticles(c.state.particles, log_weights, nfe, info)


# -- helpers ------------------------------------------------------------------------------------
def _no_mcmc_info(log_normalizer: float) -> InitInfo:
    nan = jnp.float32(jnp.nan)
    return InitInfo(jnp.full((1,), nan), nan, jnp.int32(0), jnp.float32(log_normalizer))


def _log_prior(x, axis: bool = False):
    """``−½‖x‖²`` of one sample, or of each sample of a batch when ``axis``."""
    axes = tuple(range(1, jnp.ndim(x))) if axis else None
    return -0.5 * jnp.sum(jnp.square(x), axis=axes)


def _reward_with_nfe(problem: RewardProblem) -> tuple[Callable, Callable]:
    """``x -> (r_init(x), nfe)`` and ``x -> nfe`` (int32) for one evaluation at ``x``."""
    if problem.is_tweedie:  # a constant cost: nothing to evaluate for the count
        one = jnp.ones((), jnp.int32)
        return (lambda x: (problem.reward(problem.predict_x0(x, 1.0)), one)), (lambda x: one)

    def reward_and_nfe(x):
        x0, nfe = problem.predict_x0_and_nfe(x, 1.0)
        return problem.reward(x0), nfe

    return reward_and_nfe, lambda x: reward_and_nfe(jax.lax.stop_gradient(x))[1]


def _check_open(value, name: str, low: float, high: float) -> None:
    v = concrete_value(value, np.float64)  # a traced value cannot be checked here
    if v is not None and not (v.shape == () and low < v < high):
        raise ValueError(f"`{name}` must be a scalar in ({low}, {high}), got {value!r}.")


def _check_arguments(a: types.SimpleNamespace) -> int:
    """Validate the arguments ``a`` before any computation; return the (raised) chain count."""
    if a.method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {a.method!r}.")
    if not isinstance(a.problem, RewardProblem):
        raise ValueError(f"`problem` must be a RewardProblem, got {type(a.problem).__name__}.")
    k, c, _, s, _ = (
        check_int(getattr(a, name), name, low)
        for name, low in [
            ("num_particles", 1),
            ("num_chains", 1),
            ("burn_in", 0),
            ("num_kept", 1),
            ("num_mcmc_steps", 1),
        ]
    )
    if a.alpha is not None:
        _check_open(a.alpha, "alpha", 0.0, math.inf)
    _check_open(a.target_ess, "target_ess", 0.0, 1.0)
    if a.method in ("mala", "ula"):
        _check_open(a.step_size, "step_size", 0.0, math.inf)
    elif a.method not in ("prior", "top_k"):
        _check_open(a.step_size, "step_size", 0.0, 4.0)
    if a.num_candidates is not None and check_int(a.num_candidates, "num_candidates", 1) < k:
        raise ValueError(f"`num_candidates` must be >= num_particles={k}, got {a.num_candidates}.")
    if a.on_too_few_states not in ("error", "more_chains"):
        raise ValueError(
            f"`on_too_few_states` must be 'error' or 'more_chains', got {a.on_too_few_states!r}."
        )
    if a.adapt_step_size:
        if a.method not in ("pcn", "pcnl"):
            raise ValueError(f"`adapt_step_size` needs method 'pcn' or 'pcnl', got {a.method!r}.")
        if a.burn_in < 1:
            raise ValueError("`burn_in` must be >= 1 with adapt_step_size (it adapts there).")
        _check_open(a.target_acceptance_rate, "target_acceptance_rate", 0.0, 1.0)
    if a.method in _CHAINS and k > c * s:
        if a.on_too_few_states != "more_chains":
            thinning_layout(k, c, s)  # raises, naming num_particles, num_chains and num_kept
        c = -(-k // s)
    mesh = check_mesh(a.mesh)
    if a.method in _CHAINS:
        check_divisible(mesh, c, "num_chains")
    elif a.method == "top_k":
        check_divisible(mesh, _num_candidates(a.num_candidates, k), "num_candidates")
    else:  # prior, tempered: the particles themselves
        check_divisible(mesh, k, "num_particles")
    return c


def _num_candidates(num_candidates: int | None, num_particles: int) -> int:
    return 4 * num_particles if num_candidates is None else num_candidates
