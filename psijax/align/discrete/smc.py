r"""SMC for masked discrete diffusion: the discrete configuration of the Feynman–Kac core.

One SMC (docs/algorithms.md §10) over the grid ``1 = t_0 > … > t_T = 0`` of a masked-diffusion
sampler, run by the same loop as the continuous samplers,
:func:`psijax.smc.feynman_kac.run`, with the same resampling part
(:class:`psijax.smc.weights.AdaptiveResampling`), the same potentials
(:mod:`psijax.smc.potentials`: ``Difference`` for twisted SMC, ``Max``/``Sum``/``Current`` for FK
steering) and the same sharding. What is particular to masked diffusion is in its parts: the
particles are ``((x, cache), path)`` with int32 tokens ``x`` and the cache of the particle's
one denoiser pass (:class:`Cache`: the carry-over log-probabilities ``log μ``, the stored twist
``ρ``, its gradient for the first-order proposal), and step ``i`` (level ``i → i + 1``) is

.. math::

    &x' \sim q_i(\cdot \mid x)\ \text{(the proposal, from the cached } \log μ,\ ∇ρ),\qquad
      \text{then one denoiser pass at } x':\ \log μ',\ ρ_{i+1}(x'),\ ∇ρ_{i+2}\\
    &\log G_i = \log p̃_i(x' \mid x) − \log q_i(x' \mid x) + ρ_{i+1}(x') − ρ_i(x)

(:mod:`psijax.align.discrete.targets` for ``p̃``, :mod:`psijax.align.discrete.twists` for ``ρ``,
:mod:`psijax.align.discrete.proposals` for ``q``). The initial log-weights are
``ℓ_0 = ρ_0(m^L)`` (the twist at the all-masked state is **included**: without it ``Ẑ`` would
estimate ``Z/ψ_0``), ``log Ẑ = log mean exp ℓ_0 + Σ_i log Σ_j W_j G_i^j`` is unbiased for
``Z = E_{P_θ}[e^{r/β}]`` (for ``P_θ`` the sampler's marginal), and at the data end
``ρ_T = r(x)/β`` exactly (no model call). The final weights are returned as they are.

**Cost** (:class:`MoveInfo`, every step): one denoiser forward per particle and level, one
backward more for the gradient proposals, one forward per extra model (a product target's
second denoiser, the amortised proposal); ``φ`` reward calls per twist estimate (and as many
backward passes for the gradient proposals). ``nfe`` counts denoiser forwards **and**
backwards; ``reward_calls`` likewise.

**Invalid values.** A particle whose logits (NaN, ``+∞``, or a row with no finite real logit),
twist or gradient is not finite gets weight zero and a harmless cache (uniform logits, zero
twist and gradient), so it never produces a NaN; resampling replaces it. If every weight is
zero the run is collapsed (``log Ẑ = −∞``, ``info.collapsed``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax.types import Array, PRNGKey
from jax.sharding import Mesh

from psijax._checks import check_int
from psijax.align.denoising import _checked_schedule, _part, _resampler
from psijax.align.discrete.problem import DiscreteProblem, check_discrete_problem
from psijax.align.discrete.proposals import Move, Reverse, check_proposal
from psijax.align.discrete.targets import RewardTilt, check_target
from psijax.align.discrete.twists import NoTwist, Soft, check_twist, evaluate
from psijax.align.result import AlignmentResult
from psijax.discrete.exact import enumerate_states
from psijax.discrete.kernels import check_kernel
from psijax.discrete.masking import denoiser_log_probs, one_hot
from psijax.discrete.sampling import check_one_token_steps, sampler_grid
from psijax.smc import feynman_kac
from psijax.smc.feynman_kac import normalized_log_weights
from psijax.smc.potentials import POTENTIALS, Difference, weigh
from psijax.smc.sharding import check_divisible, check_mesh, map_particles
from psijax.smc.weights import sanitize

__all__ = ["Cache", "MoveInfo", "run_discrete_smc"]


class Cache(NamedTuple):
    """Per-particle values carried (and resampled) with the tokens.

    log_mu
        ``(L, S)`` carry-over log-probabilities of the denoiser at ``x``.
    extra
        The same for the target's extra models (a product target's second denoiser).
    log_twist
        The stored ``ρ_i(x)``.
    grad
        What the gradient proposals keep of ``∇_E ρ_{i+1}`` at ``e(x)``
        (:meth:`~psijax.align.discrete.proposals.Proposal.compact`), else ``None``.
    bad
        The particle's logits, twist or gradient was not finite (weight zero).
    root
        The index of the initial particle it descends from (int32).
    """

    log_mu: Array
    extra: tuple
    log_twist: Array
    grad: object
    bad: Array
    root: Array


class MoveInfo(NamedTuple):
    """What one step did (``info.proposal_info``, stacked over the ``T`` steps).

    nfe
        Denoiser forward and backward passes of the step (int32).
    reward_calls
        Reward forward and backward passes of the step (int32).
    lineages
        Distinct initial particles the particles entering the move descend from.
    num_invalid
        Particles with weight zero after the move.
    num_masked
        Masked positions left, summed over the particles (int32).
    """

    nfe: Array
    reward_calls: Array
    lineages: Array
    num_invalid: Array
    num_masked: Array


def run_discrete_smc(
    rng_key: PRNGKey,
    problem: DiscreteProblem,
    *,
    num_particles: int,
    num_steps: int,
    kernel="mdlm",
    schedule="linear",
    grid=None,
    twist=None,
    proposal=None,
    target=None,
    potential=None,
    annealing=None,
    resampling="systematic",
    ess_threshold: float = 0.5,
    resample_every: int = 1,
    num_resampled: int | None = None,
    mesh: Mesh | None = None,
    particle_chunk: int | None = None,
) -> AlignmentResult:
    r"""Run one discrete SMC (module docstring).

    Parameters
    ----------
    rng_key
        PRNG key.
    problem
        The :class:`~psijax.align.discrete.problem.DiscreteProblem`.
    num_particles
        ``N >= 1`` (a multiple of the mesh's device count).
    num_steps
        ``T >= 1`` (the one-token kernel: the number of free positions).
    kernel
        A :class:`psijax.discrete.kernels.Kernel` (``MDLM()``, ``ReMDM(η)``, ``OneToken()``) or
        its name.
    schedule, grid
        The masking schedule (:mod:`psijax.discrete.schedules`) and optionally a concrete grid.
    twist
        A twist of :mod:`psijax.align.discrete.twists`; default ``Soft()`` with a reward,
        ``NoTwist()`` without.
    proposal
        A proposal of :mod:`psijax.align.discrete.proposals` (default ``Reverse()``).
    target
        A target of :mod:`psijax.align.discrete.targets` (default ``RewardTilt()``).
    potential
        A :class:`psijax.smc.potentials.Potential` over the stored twists (default
        ``Difference()``).
    annealing
        ``None`` (``λ ≡ 1``) or ``T + 1`` values in ``[0, 1]`` with ``λ_T = 1``
        (:func:`psijax.align.discrete.twists.annealing`); ``κ_i = λ_i/β``.
    resampling, ess_threshold, resample_every, num_resampled
        The resampling part, as for :func:`psijax.align.run_smc`.
    mesh
        A :class:`jax.sharding.Mesh` to shard the particles over, or ``None``.
    particle_chunk
        ``None``, or ``c >= 1``: the denoiser, twist and proposal passes run ``c`` particles
        at a time (per device; :func:`psijax.smc.sharding.map_particles`), which bounds their
        transient memory by ``c`` instead of ``N`` (docs/algorithms.md §10.8); same results.

    Returns
    -------
    :class:`~psijax.align.result.AlignmentResult`
        ``samples`` ``(N, L)`` int32 tokens, normalized ``log_weights``, the exact rewards,
        ``log_normalizer`` (``log Ẑ``), ``nfe`` (denoiser forwards and backwards) and ``info``
        an :class:`~psijax.smc.feynman_kac.SMCInfo` whose ``proposal_info`` is a
        :class:`MoveInfo`.

    Raises
    ------
    TypeError, ValueError
        Naming the invalid argument (before anything runs).

    """
    problem = check_discrete_problem(problem)
    n = check_int(num_particles, "num_particles")
    kernel = check_kernel(kernel)
    times, alpha = sampler_grid(num_steps, schedule, grid)
    num_steps = times.shape[0] - 1
    check_one_token_steps(kernel, num_steps, problem.num_free)
    twist = check_twist(
        (Soft() if problem.reward_fn is not None else NoTwist()) if twist is None else twist
    )
    proposal = check_proposal(Reverse() if proposal is None else proposal)
    target = check_target(RewardTilt() if target is None else target)
    potential = _part(potential, POTENTIALS, Difference, "potential")
    resampler = _resampler(resampling, ess_threshold, resample_every, num_resampled)
    lambdas = _checked_schedule(annealing, num_steps)
    check_divisible(check_mesh(mesh), n, "num_particles")
    chunk = None if particle_chunk is None else check_int(particle_chunk, "particle_chunk")
    if resampler.num_resampled is not None and resampler.num_resampled > n:
        raise ValueError(
            f"`num_resampled` must be an int in [2, {n}], got {resampler.num_resampled}."
        )
    enumerates = getattr(proposal, "enumerates", False)
    if enumerates and not twist.deterministic:
        raise ValueError(
            "LocallyOptimal needs a deterministic twist (NoTwist, Point, Soft, Exact): a random "
            f"twist has no single value at each state, got {twist!r}."
        )

    vocab_size, length = problem.vocab_size, problem.length
    frozen, beta = problem.frozen, problem.beta
    dtype = jnp.float32
    times, alpha = jnp.asarray(times, dtype), jnp.asarray(alpha, dtype)
    kappas = jnp.asarray(lambdas / beta, dtype)
    states = enumerate_states(length, vocab_size) if enumerates else None
    with_grad = proposal.needs_grad
    num_extra = len(target.extra_logits_fns)
    calls = twist.num_samples * (1 + with_grad)

    def eval_one(key, x, t, kappa, kappa_next, level):
        ev = evaluate(twist, problem, key, x, t, kappa, kappa_next, level, with_grad)
        log_mu = denoiser_log_probs(ev.logits, x, vocab_size)
        extra = tuple(
            denoiser_log_probs(f(one_hot(x, vocab_size), t), x, vocab_size)
            for f in target.extra_logits_fns
        )
        bad = _bad_logits(ev.logits) | ~jnp.isfinite(ev.log_twist)
        bad = bad | jnp.any(jnp.array([jnp.any(jnp.isnan(e)) for e in extra] + [False]))
        grad = ev.grad
        if grad is not None:
            bad = bad | ~jnp.all(jnp.isfinite(grad))
            grad = proposal.compact(jnp.where(bad, 0.0, grad).astype(dtype), x)
        safe = denoiser_log_probs(jnp.zeros_like(ev.logits, dtype), x, vocab_size)
        log_mu = jnp.where(bad, safe, log_mu)
        extra = tuple(jnp.where(bad, safe, e) for e in extra)
        rho = jnp.where(bad, 0.0, ev.log_twist).astype(dtype)
        return log_mu, extra, rho, grad, bad

    eval_all = map_particles(eval_one, mesh, (0, 0, None, None, None, None), chunk)

    def final_one(x):
        r = jnp.asarray(problem.reward(one_hot(x, vocab_size)), dtype) / beta
        return jnp.where(jnp.isfinite(r), r, 0.0), ~jnp.isfinite(r)

    final_all = map_particles(final_one, mesh, chunk=chunk)

    def move_one(key, x, log_mu, extra, grad, aux, t, a_t, a_s):
        tables = tuple(kernel.frozen_table(x, lm, a_t, a_s, frozen) for lm in (log_mu, *extra))
        step = Move(x, log_mu, target.proposal_table(kernel, tables), grad, t, a_t, a_s)

        def log_kernel(x_next):
            return target.log_kernel(kernel, tables, x, x_next, a_t, a_s, vocab_size, frozen)

        x_next, log_q = proposal(key, step, kernel, frozen, aux, log_kernel)
        return x_next.astype(jnp.int32), (log_kernel(x_next) - log_q).astype(dtype)

    move_all = map_particles(move_one, mesh, (0, 0, 0, 0, 0, None, None, None, None), chunk)

    def new_cache(key, x, t, kappa, kappa_next, level, root):
        log_mu, extra, rho, grad, bad = eval_all(
            jax.random.split(key, n), x, t, kappa, kappa_next, level
        )
        return Cache(log_mu, extra, rho, grad, bad, root)

    def propose(final: bool):
        def move(key, particles, inputs):
            (x, cache), path = particles
            t, t_next, a_t, a_s, k_next, k_next2, level_next = inputs
            key_move, key_eval = jax.random.split(key)
            aux, nfe, rewards = None, n * proposal.extra_nfe, 0
            if enumerates:
                if final:
                    twist_at = jax.vmap(lambda s: final_one(s)[0])
                    rewards += states.shape[0]
                else:
                    twist_at = jax.vmap(
                        lambda s: eval_one(key_eval, s, t_next, k_next, k_next2, level_next)[2]
                    )
                    nfe += states.shape[0]
                    rewards += states.shape[0] * twist.num_samples
                aux = (states, proposal.prepare(twist_at, states))
            x_next, log_p_minus_q = move_all(
                jax.random.split(key_move, n),
                x,
                cache.log_mu,
                cache.extra,
                cache.grad,
                aux,
                t,
                a_t,
                a_s,
            )
            if final:
                rho, bad = final_all(x_next)
                new = cache._replace(log_twist=rho, bad=bad)
                rewards += n
            else:
                new = new_cache(key_eval, x_next, t_next, k_next, k_next2, level_next, cache.root)
                nfe += n * (1 + with_grad + num_extra)
                rewards += n * calls
            info = _move_info(nfe, rewards, cache, new, x_next, vocab_size)
            return ((x_next, new), path), log_p_minus_q, info

        return move

    def reweight(final: bool):
        return weigh(
            potential,
            lambda state, inputs: state[1].log_twist,
            final=final,
            invalid=lambda state, new: state[1].bad | new[1].bad,
        )

    key_init, key_run = jax.random.split(rng_key)
    x0 = jnp.broadcast_to(problem.start, (n, length)).astype(jnp.int32)
    roots = jnp.arange(n, dtype=jnp.int32)
    cache0 = new_cache(key_init, x0, times[0], kappas[0], kappas[min(1, num_steps)], 0, roots)
    log_g0, path0 = potential.init(cache0.log_twist)
    log_w = sanitize(jnp.where(cache0.bad, -jnp.inf, log_g0))
    state = feynman_kac.init(((x0, cache0), path0), log_w, mesh)
    kappa_next2 = jnp.concatenate([kappas[2:], kappas[-1:]])
    levels = jnp.arange(1, num_steps + 1, dtype=jnp.int32)
    inputs = (times[:-1], times[1:], alpha[:-1], alpha[1:], kappas[1:], kappa_next2, levels)
    state, info = feynman_kac.run(
        key_run,
        state,
        inputs,
        propose(final=False),
        reweight(final=False),
        resampler,
        final_proposal=propose(final=True),
        final_potential=reweight(final=True),
        mesh=mesh,
    )
    (xs, cache), _ = state.particles
    if problem.reward_fn is None:
        rewards = jnp.where(cache.bad, jnp.nan, 0.0)
    else:
        rewards = jnp.where(cache.bad, jnp.nan, cache.log_twist * beta)
    nfe0 = n * (1 + with_grad + num_extra)
    nfe = (nfe0 + jnp.sum(info.proposal_info.nfe)).astype(jnp.int32)
    log_weights = normalized_log_weights(state.log_weights)
    return AlignmentResult(xs, log_weights, rewards, state.log_normalizer, nfe, info)


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
def _bad_logits(logits: Array) -> Array:
    """NaN or ``+∞`` among the real logits, or a row with no finite real logit (``−∞`` alone is
    a token the model rules out, which is allowed)."""
    real = logits[..., :-1]
    return (
        jnp.any(jnp.isnan(real))
        | jnp.any(real == jnp.inf)
        | jnp.any(jnp.all(real == -jnp.inf, axis=-1))
    )


def _move_info(nfe, rewards, cache: Cache, new: Cache, x_next, vocab_size) -> MoveInfo:
    num = cache.root.shape[0]
    lineages = jnp.sum(jnp.zeros((num,), jnp.int32).at[cache.root].set(1))
    return MoveInfo(
        jnp.asarray(nfe, jnp.int32),
        jnp.asarray(rewards, jnp.int32),
        lineages.astype(jnp.int32),
        jnp.sum(new.bad).astype(jnp.int32),
        jnp.sum(x_next == vocab_size).astype(jnp.int32),
    )
