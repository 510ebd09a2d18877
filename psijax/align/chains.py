r"""MCMC chains on the reward-aware initial posterior: Ψ-Sampler's initial stage and its baselines.

The target (docs/algorithms.md §3, §4) is

.. math::

    π_{init}(x) ∝ N(x; 0, I)\, e^{r_{init}(x)/α_{init}}, \qquad r_{init}(x) = r(\hat x_0(x, 1)).

``C`` chains (vmapped) start from ``N(0, I)``, run ``B`` burn-in steps, then ``S`` kept steps of
a BlackJAX-shaped kernel whose one parameter is its step size: an object with
``init(position, logdensity_fn)`` and ``build_kernel()`` returning
``kernel(rng_key, state, logdensity_fn, step_size) -> (state, info)`` — ``psijax.pcnl``
(Ψ-Sampler), ``psijax.pcn``, ``psijax.ula``, ``blackjax.mala`` as they are (a kernel with more
parameters, such as HMC's mass matrix and path length, needs a wrapper whose ``build_kernel``
fixes them). ``K`` particles are spread over the chains as evenly as possible (the first
``K mod C`` chains give one more): chain ``c`` gives ``k_c`` states at stride
``s_c = max(1, S // k_c)``, the last ones, i.e. kept-step indices
``S − 1, S − 1 − s_c, …, S − 1 − (k_c − 1)·s_c`` (:func:`thinning_layout`). Only those states
are stored. Their log-weights relative to prior draws are ``−r_init/α_init``.

**NFE.** Each kernel step evaluates the log-density ``evaluations_per_step`` times (1 for pCN,
pCNL, ULA, MALA and random-walk Metropolis, at the proposal): ``C·(1 + (B + S)·e)``
evaluations of ``r_init`` in all. With a predictor whose cost varies with ``x`` (the flow map),
each step's cost is measured at the point the kernel evaluated: the ``proposal`` of the
kernel's info when it reports one (psijax's kernels), else the position the kernel step moves
to when every proposal is accepted — the same kernel, same key, on a flat log-density far above
any real one (MALA, whose info omits the proposal). That is exact for kernels whose proposal
depends on the key and the state only (MALA, random-walk Metropolis), and needs one evaluation
per step; a kernel that evaluates the density along its proposal (HMC) must use a predictor of
constant cost.

**Devices.** With a ``mesh`` the chains are sharded; ``C`` need not divide over the devices:
the chains are padded to the next multiple with chains that run but are discarded (their
states, acceptance and NFE are not reported, and they do not feed the step-size adaptation).
Chain ``c``'s randomness is a function of ``c`` — JAX's partitionable Threefry
(``jax_threefry_partitionable``, the default since jax 0.5) makes ``split(key, C')[:C]`` and
the first ``C`` rows of ``normal(key, (C', …))`` those of ``C`` chains — so the result equals
the 1-device run (:mod:`psijax.smc.sharding`).
"""

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array

from psijax._checks import check_choice, check_int, check_real
from psijax.align.stages import (
    InitialParticles,
    InitialStage,
    InitInfo,
    check_alpha,
    check_predictor,
    log_likelihood_fn,
    log_prior,
    not_with_budget,
    with_predictor,
)
from psijax.mcmc.adaptation import step_size_adaptation
from psijax.mcmc.api import pcnl
from psijax.smc.sharding import constrain, map_particles

__all__ = ["Chains", "thinning_layout"]

DEFAULT_STEPS = 50
"""``B`` and ``S`` when neither they nor an NFE budget are given (the paper's 50 + 50)."""

_PROBE_LOGDENSITY = 1e30
"""A flat log-density far above any real one: a kernel step on it accepts its proposal."""


@dataclasses.dataclass(frozen=True)
class Chains(InitialStage):
    r"""``C`` MCMC chains on ``π_init``, thinned to ``K`` particles (module docstring).

    Parameters
    ----------
    kernel
        A BlackJAX-shaped kernel (module docstring); default ``psijax.pcnl``.
    step_size
        The kernel's own step size: ``h ∈ (0, 4)`` for pCN/pCNL, ``ε > 0`` in BlackJAX MALA's
        convention ``x' = x + ε∇log π + √(2ε)ξ`` for MALA and ULA (``ε = h/2`` is the Langevin
        time of one pCNL step ``h``: the default 0.5 is pCNL's, and ``mala_smc``/``ula_smc``
        use 0.25). A kernel module may declare ``MAX_STEP_SIZE``.
    num_chains
        ``C >= 1``.
    burn_in, num_kept
        ``B >= 0`` and ``S >= 1``; ``None`` means 50 each (or, with an NFE budget, the layout
        that spends the initial share).
    adapt
        Tune the step size toward ``target_acceptance_rate`` during the ``B >= 1`` burn-in steps
        (:func:`psijax.mcmc.adaptation.step_size_adaptation`, one step for all chains), then
        run the kept steps at the tuned size; kernels with step sizes in ``(0, 4)`` only.
    target_acceptance_rate
        In ``(0, 1)``.
    alpha
        ``α_init > 0``; ``None`` uses the problem's ``α`` (then ``π_init`` is the optimal
        initial distribution ``p_1·e^{r(x̂0(x, 1))/α}``; the paper's released configs use 0.1).
    predictor
        The x0-predictor of ``r_init``; ``None``: the problem's.
    on_too_few_states
        ``K > C·S`` would repeat states: ``"error"`` raises, ``"more_chains"`` raises ``C`` to
        ``⌈K/S⌉``.
    evaluations_per_step
        ``e >= 1``: log-density evaluations per kernel step (module docstring).

    """

    kernel: object = pcnl
    step_size: float = 0.5
    num_chains: int = 5
    burn_in: int | None = None
    num_kept: int | None = None
    adapt: bool = False
    target_acceptance_rate: float = 0.5
    alpha: float | None = None
    predictor: object = None
    on_too_few_states: str = "error"
    evaluations_per_step: int = 1

    def __post_init__(self):
        if not (
            callable(getattr(self.kernel, "init", None))
            and callable(getattr(self.kernel, "build_kernel", None))
        ):
            raise TypeError(
                "`kernel` must have init(position, logdensity_fn) and build_kernel() (e.g. "
                f"psijax.pcnl, blackjax.mala), got {self.kernel!r}."
            )
        maximum = getattr(self.kernel, "MAX_STEP_SIZE", math.inf)
        check_real(self.step_size, "step_size", gt=0.0, lt=None if maximum == math.inf else maximum)
        check_int(self.num_chains, "num_chains")
        if self.burn_in is not None:
            check_int(self.burn_in, "burn_in", 0)
        if self.num_kept is not None:
            check_int(self.num_kept, "num_kept")
        if not isinstance(self.adapt, (bool, np.bool_)):
            raise TypeError(f"`adapt` must be a bool, got {self.adapt!r}.")
        check_real(self.target_acceptance_rate, "target_acceptance_rate", gt=0.0, lt=1.0)
        check_alpha(self.alpha)
        check_predictor(self.predictor)
        check_choice(self.on_too_few_states, "on_too_few_states", ("error", "more_chains"))
        check_int(self.evaluations_per_step, "evaluations_per_step")
        if self.adapt:
            if maximum != 4.0:
                raise ValueError(
                    "`adapt` needs a kernel whose step size lies in (0, 4) (psijax.pcn, "
                    f"psijax.pcnl), got {self.kernel!r}."
                )
            if self.steps()[0] < 1:
                raise ValueError("`burn_in` must be >= 1 with adapt=True (it adapts there).")

    def steps(self) -> tuple[int, int]:
        """``(B, S)`` with the defaults filled in."""
        burn_in = DEFAULT_STEPS if self.burn_in is None else self.burn_in
        return burn_in, DEFAULT_STEPS if self.num_kept is None else self.num_kept

    def chain_count(self, num_particles: int) -> int:
        """``C``, raised to ``⌈K/S⌉`` when ``K > C·S`` and ``on_too_few_states="more_chains"``;
        ``ValueError`` when ``K > C·S`` otherwise."""
        num_kept = self.steps()[1]
        if num_particles <= self.num_chains * num_kept:
            return self.num_chains
        if self.on_too_few_states != "more_chains":
            thinning_layout(num_particles, self.num_chains, num_kept)  # raises, naming all three
        return -(-num_particles // num_kept)

    def check(self, problem, num_particles, mesh) -> None:
        """The stage can lay out ``K`` particles (the chains need not divide over the mesh)."""
        super().check(problem, num_particles, mesh)
        self.chain_count(num_particles)

    def budgeted(self, budget: int, num_particles: int) -> "Chains":
        """``m = ⌊(⌊budget/C⌋ − 1)/e⌋`` steps per chain: ``B = ⌈m/2⌉``, ``S = ⌊m/2⌋``."""
        not_with_budget(self.burn_in, "burn_in")
        not_with_budget(self.num_kept, "num_kept")
        steps = (budget // self.num_chains - 1) // self.evaluations_per_step
        if steps < 2:
            raise ValueError(
                f"`nfe_budget` is too small: it leaves {budget} evaluations for "
                f"{self.num_chains} chains, fewer than the initial state, one burn-in and one "
                "kept step of each."
            )
        sized = dataclasses.replace(self, burn_in=steps - steps // 2, num_kept=steps // 2)
        sized.chain_count(num_particles)  # the kept states must cover the particles
        return sized

    def sample(self, rng_key, problem, num_particles, *, mesh=None) -> InitialParticles:
        """Run the chains and keep the thinned states (module docstring)."""
        self.check(problem, num_particles, mesh)
        burn_in, num_kept = self.steps()
        num_chains = self.chain_count(num_particles)
        padded = num_chains if mesh is None else -(-num_chains // mesh.size) * mesh.size
        problem = with_predictor(problem, self.predictor)
        log_likelihood, nfe_fn = log_likelihood_fn(problem, self.alpha)
        algorithm = _counting(self.kernel, problem.x0_predictor.nfe_per_call, nfe_fn, self)
        logdensity_fn = lambda x: log_prior(x) + log_likelihood(x)  # noqa: E731
        chain, step = thinning_layout(num_particles, num_chains, num_kept)
        table, slot, k_max = _storage_plan(chain, step, padded, num_kept)
        key_init, key_burn, key_kept = jax.random.split(rng_key, 3)
        positions = jax.random.normal(key_init, (padded, *problem.event_shape), jnp.float32)
        positions = constrain(positions, mesh)
        chunk = problem.particle_chunk

        h = jnp.asarray(self.step_size, jnp.float32)
        if self.adapt:
            adaptation = step_size_adaptation(
                algorithm,
                logdensity_fn,
                target_acceptance_rate=self.target_acceptance_rate,
                initial_step_size=self.step_size,
                chunk=chunk,
            )
            (states, params), _ = adaptation.run(
                key_burn, positions, burn_in, num_active=num_chains
            )
            h = params["step_size"]
        else:
            init = map_particles(lambda x: algorithm.init(x, logdensity_fn), mesh, chunk=chunk)
            states = init(positions)
        step_fn = _vmapped_step(algorithm.build_kernel(), logdensity_fn, h, mesh, chunk)
        if burn_in > 0 and not self.adapt:
            states, _ = jax.lax.scan(step_fn, states, jax.random.split(key_burn, burn_in))

        buffers = (
            jnp.zeros((padded, k_max, *problem.event_shape), jnp.float32),
            jnp.zeros((padded, k_max), jnp.float32),
        )

        def keep(carry, xs):
            states, (buf_x, buf_ld), acc = carry
            key, slots = xs
            states, acceptance = step_fn(states, key)
            rows = jnp.arange(padded)  # slot k_max is out of bounds: dropped (state not kept)
            buf_x = buf_x.at[rows, slots].set(states.state.position, mode="drop")
            buf_ld = buf_ld.at[rows, slots].set(states.state.logdensity, mode="drop")
            return (states, (buf_x, buf_ld), acc + acceptance), None

        init = (states, buffers, jnp.zeros(padded, jnp.float32))
        xs = (jax.random.split(key_kept, num_kept), jnp.asarray(table))
        (states, (buf_x, buf_ld), acc), _ = jax.lax.scan(keep, init, xs)
        particles, logdensity = buf_x[chain, slot], buf_ld[chain, slot]
        r_over_alpha = logdensity - log_prior(particles, axis=True)
        log_weights = jnp.where(jnp.isfinite(r_over_alpha), -r_over_alpha, -jnp.inf)
        acc = acc[:num_chains]
        acceptance = acc / num_kept if algorithm.accepts else jnp.full_like(acc, jnp.nan)
        info = InitInfo(acceptance, h, jnp.int32(0), jnp.float32(jnp.nan))
        return InitialParticles(particles, log_weights, jnp.sum(states.nfe[:num_chains]), info)


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


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
class _CountedState(NamedTuple):
    state: NamedTuple
    nfe: Array


class _Counting(NamedTuple):
    """``kernel`` with the NFE of its log-density evaluations added to the state; ``init`` and
    ``build_kernel`` as the adaptation and the chains expect them."""

    init: Callable
    build_kernel: Callable
    accepts: bool


def _counting(kernel, constant_cost: int | None, nfe_fn: Callable, stage: Chains) -> _Counting:
    step_kernel = kernel.build_kernel()
    per_step = stage.evaluations_per_step
    if constant_cost is None and per_step != 1:
        raise ValueError(
            "`evaluations_per_step` > 1 needs a predictor of constant cost (Tweedie): where a "
            "kernel evaluates within a step is not known, so a varying cost cannot be measured."
        )

    def init(position, logdensity_fn):
        return _CountedState(kernel.init(position, logdensity_fn), nfe_fn(position))

    def step(rng_key, state, logdensity_fn, step_size):
        new_state, info = step_kernel(rng_key, state.state, logdensity_fn, step_size)
        if constant_cost is not None:
            cost = jnp.asarray(per_step * constant_cost, jnp.int32)
        elif hasattr(info, "proposal"):
            cost = nfe_fn(info.proposal.position)
        else:  # the kernel's own proposal: the same step on a flat, very high log-density
            probe = lambda x: jnp.asarray(_PROBE_LOGDENSITY, jnp.float32)  # noqa: E731
            cost = nfe_fn(step_kernel(rng_key, state.state, probe, step_size)[0].position)
        return _CountedState(new_state, state.nfe + cost), info

    # An unadjusted kernel (ULA) reports acceptance 1 for every finite proposal: not a rate.
    return _Counting(init, lambda: step, getattr(kernel, "HAS_ACCEPT_STEP", True))


def _vmapped_step(kernel: Callable, logdensity_fn: Callable, step_size, mesh, chunk) -> Callable:
    """``(states, key) -> (states, acceptance (C,))``: one step of every chain (each device
    steps its own chains; the chain keys are split globally, so they do not depend on ``mesh``)."""

    def one(key, state, step_size):
        state, info = kernel(key, state, logdensity_fn, step_size)
        return state, info.acceptance_rate

    every_chain = map_particles(one, mesh, (0, 0, None), chunk)

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
