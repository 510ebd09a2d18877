r"""Sequential Monte Carlo over the denoising grid: the continuous configuration of the FK core.

One SMC (docs/algorithms.md §5) over ``1 = t_0 > t_1 > … > t_T = 0``, run by the generic
Feynman–Kac loop :func:`psijax.smc.feynman_kac.run` with three parts passed in: a
**proposal** (:mod:`psijax.align.proposals`: :class:`~psijax.align.proposals.Twisted` for TDS /
DAS / Ψ-Sampler, :class:`~psijax.align.proposals.Bootstrap` for FK steering, or a user's), a
**potential** (:mod:`psijax.smc.potentials`: ``Difference`` — the twisted-SMC weights —, or FK
steering's ``Max``, ``Sum``, ``Current``) and the resampling
(:class:`psijax.smc.weights.AdaptiveResampling`: scheme, ESS threshold ``κ``, every ``F``
steps, partial). This module adds what is particular to a flow model: the particles are
``((x, cache), path)``, ``x`` with the cached ``r_t = r(x̂0(x, t))``, ``∇r_t`` and
``v = v(x, t)`` and the potential's path statistics, and step ``i`` from
``t = t_i`` to ``t' = t_{i+1}`` is

.. math::

    &μ = x + Δ[−v + \tfrac12 g(t)^2 s],\quad σ = g(t)\sqrt{Δ},\quad
     G = λ_{t'} ∇r_t / α\\
    &x' \sim q(\cdot \mid x)\ (\text{the proposal, with } \log p − \log q),\quad
     \text{then } r_{t'},\ ∇r_{t'},\ v(x', t') \text{ at } x'\\
    &Δℓ = \log p − \log q + \log G_{i+1}, \quad
     \log G_{i+1} \text{ from the log-twists } s_j = λ_j r_{t_j}(x_j)/α

with the tempering schedule ``λ`` (``λ ≡ 1`` unless given; the proposal of step ``i`` uses
``λ_{i+1}``). At ``t' = 0`` the reward is the exact ``r(x')`` (``x̂0(x', 0) = x'``; no model
call) and every potential is ``log G_T = r(x_T)/α − Ψ_{T−1}``, so the target is ``p*_0``.
The initial log-weights are ``ℓ_0 = ℓ_init + s_0``, where ``ℓ_init`` (``initial_log_weights``)
says how the particles were drawn relative to the prior (0 for prior draws, ``−r_init/α_init``
for draws from ``π_init``). ``log Ẑ`` starts at ``log_mean_exp(ℓ_0)``. The final weights are
returned as they are (no resampling after the last step), so no information is lost.

**Cost.** ``N`` potential evaluations (model forward and backward) at ``t_0`` and ``N`` after
every step except the last: ``nfe = N·T`` model evaluations in all with the Tweedie predictor,
each with its gradient; a flow-map predictor adds the exact count of its ODE solves. The
per-step counts are in ``info.proposal_info.nfe`` (a :class:`MoveInfo`, which also records
each step's lineages, the proposal's shift relative to the model's noise, the invalid
particles and the particles' range: what :func:`psijax.align.diagnose` checks).

**Invalid values.** A particle whose reward or gradient is NaN/inf gets log-weight ``−inf``
(weight zero) and a zero proposal gradient, so it never affects the others; resampling then
replaces it. If every weight is zero the run is collapsed: ``log Ẑ = −inf`` (reported in
``info.collapsed``), never NaN.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey
from jax.sharding import Mesh

from psijax._checks import check_int, check_real, concrete_value
from psijax._deprecation import deprecated
from psijax.align.problem import RewardProblem, check_problem, sampler_transition
from psijax.align.proposals import PROPOSALS, ProposalInputs, Twisted, check_proposal
from psijax.align.result import AlignmentResult
from psijax.flows.sde import Transition, denoising_grid, transition_from_velocity
from psijax.smc import feynman_kac
from psijax.smc.feynman_kac import SMCInfo, normalized_log_weights
from psijax.smc.potentials import POTENTIALS, Difference, weigh
from psijax.smc.sharding import check_divisible, check_mesh, constrain, map_particles
from psijax.smc.weights import AdaptiveResampling, sanitize

__all__ = ["SMCInfo", "Cache", "MoveInfo", "run_smc"]


class Cache(NamedTuple):
    """Per-particle values carried (and resampled) with the particles.

    reward, grad, velocity
        ``r(x̂0(x, t))``, its gradient w.r.t. ``x`` and ``v(x, t)`` at the current time.
    bad
        The reward or its gradient was not finite (the particle has weight zero).
    root
        The index of the initial particle this one descends from (int32; the genealogy's
        root, resampled with it).

    """

    reward: Array
    grad: Array
    velocity: Array
    bad: Array
    root: Array


class MoveInfo(NamedTuple):
    r"""What step ``i`` of :func:`run_smc` did to the particles (``info.proposal_info``; every
    field stacked over the ``T`` steps). The health checks of
    :func:`psijax.align.diagnostics.diagnose` read it.

    nfe
        Model evaluations of the step (int32).
    lineages
        How many distinct initial particles the particles entering the move descend from
        (after the step's resampling): ``N`` at first, ``1`` once every particle is a copy of
        one ancestor. Usually small after many resamplings (path degeneracy), which is
        normal for what the SMC estimates at ``t = 0``; it is recorded, not checked.
    shift
        ``max_n ‖x'_n − μ_n‖ / (σ √d)`` over the particles with a finite move: how far the
        proposal put the particles from the model's mean, in units of the model's noise
        (about 1 for the model's own transition; the twisted proposal adds
        ``σ‖G‖/√d``). Far above 1, ``q`` and ``p`` barely overlap: the weights degenerate and
        the particles follow the reward's gradient, not the model (α too small for the
        reward at this step size; docs/algorithms.md §5.2). NaN at a deterministic step
        (``σ = 0``), where there is no noise to measure it against.
    num_invalid
        Particles whose new position, reward or gradient is not finite (weight zero).
    max_abs
        ``max |x'|`` over the finite new positions of valid particles (particles far outside
        the data's range show here).

    """

    nfe: Array
    lineages: Array
    shift: Array
    num_invalid: Array
    max_abs: Array


def run_smc(
    rng_key: PRNGKey,
    problem: RewardProblem,
    initial_particles: ArrayLike,
    initial_log_weights: ArrayLike | None = None,
    *,
    grid: ArrayLike,
    diffusion=None,
    proposal=None,
    potential=None,
    schedule: ArrayLike | None = None,
    resampling="systematic",
    ess_threshold: float = 0.5,
    resample_every: int = 1,
    num_resampled: int | None = None,
    mesh: Mesh | None = None,
) -> AlignmentResult:
    r"""Run one SMC over ``grid`` from weighted particles at ``t_0 = 1`` (module docstring).

    Parameters
    ----------
    rng_key
        PRNG key.
    problem
        The :class:`RewardProblem`; its x0-predictor gives the potentials ``r(x̂0(x, t))``.
    initial_particles
        ``(N, *event_shape)`` particles at ``t = 1``.
    initial_log_weights
        ``(N,)`` log-weights of the particles **relative to prior draws**,
        ``log N(x; 0, I) − log q(x)`` up to a constant for particles drawn from ``q``
        (docs/algorithms.md §5): ``None`` or zeros for prior draws, ``−r_init(x)/α_init`` for
        draws from ``π_init`` (the initial stages of :mod:`psijax.align.stages` return them).
        The SMC adds its own initial potential ``λ_0·r(x̂0(x, 1))/α``.
    grid
        Concrete times ``1 = t_0 > … > t_T = 0``, ``T ≥ 1``.
    diffusion
        The untwisted kernel ``p``: a :class:`psijax.flows.sde.Diffusion` or
        :class:`psijax.flows.distilled.Renoising`; ``None``: the problem's ``transition``,
        else :func:`~psijax.flows.sde.reference_diffusion`
        (:func:`psijax.align.problem.sampler_transition`).
    proposal
        A proposal of :mod:`psijax.align.proposals` (default ``Twisted()``) or any callable
        ``(rng_key, ProposalInputs) -> (x', log_p_minus_q)``.
    potential
        A :class:`psijax.smc.potentials.Potential` (default ``Difference()``; ``Max()``,
        ``Sum()``, ``Current()``, or a user's subclass).
    schedule
        ``None`` (``λ ≡ 1``) or a concrete array of ``T + 1`` values in ``[0, 1]`` with
        ``λ_T = 1`` (tempering; the proposal of step ``i`` uses ``λ_{i+1}``).
    resampling
        A scheme name of :func:`psijax.smc.resampling.get_scheme`, a scheme callable
        ``(rng_key, weights, num_samples) -> ancestors``, or the whole resampling part, a
        :class:`psijax.smc.weights.AdaptiveResampling` (then the next three arguments stay at
        their defaults).
    ess_threshold
        ``κ ∈ [0, 1]``: resample when ``ESS ≤ κN``.
    resample_every
        ``F >= 1``: resample only at steps ``0, F, 2F, …``.
    num_resampled
        ``None`` or ``M`` in ``[2, N]``: partial resampling of the ``M`` lightest and heaviest
        particles (:func:`psijax.smc.weights.resample_if_needed`).
    mesh
        A :class:`jax.sharding.Mesh` to shard the particles over (``N`` a multiple of its
        device count), or ``None`` (:mod:`psijax.smc.sharding`).

    Returns
    -------
    :class:`AlignmentResult`
        With ``info`` an :class:`~psijax.smc.feynman_kac.SMCInfo` whose ``proposal_info`` is
        a :class:`MoveInfo` of ``(T,)`` arrays (each step's model evaluations, lineages, shift
        relative to the noise, invalid particles and range; checked by
        :func:`psijax.align.diagnose`); ``log_normalizer`` estimates ``log Z`` for
        prior draws and ``log(Z/Z_init)`` for draws from ``π_init``.

    Raises
    ------
    TypeError, ValueError
        Naming the invalid argument (checked before anything runs).

    """
    check_problem(problem)
    diffusion = sampler_transition(problem, diffusion)
    proposal = check_proposal(_part(proposal, PROPOSALS, Twisted, "proposal"))
    potential = _part(potential, POTENTIALS, Difference, "potential")
    if not (
        callable(getattr(potential, "init", None)) and callable(getattr(potential, "update", None))
    ):
        raise TypeError(
            "`potential` must have init(log_twist) and update(path, log_twist, final), as the "
            "potentials of psijax.smc.potentials (Difference(), Max(), Sum(), Current() or a "
            f"subclass), got {potential!r}."
        )
    resampler = _resampler(resampling, ess_threshold, resample_every, num_resampled)
    times = denoising_grid(None, grid)
    num_steps = times.shape[0] - 1
    lambdas = _checked_schedule(schedule, num_steps)

    x = jnp.asarray(initial_particles)
    event_shape = tuple(problem.event_shape)
    if x.ndim != 1 + len(event_shape) or x.shape[1:] != event_shape or x.shape[0] < 1:
        raise ValueError(
            f"`initial_particles` must have shape (N, *{event_shape}) with N >= 1, got {x.shape}."
        )
    n = x.shape[0]
    check_divisible(check_mesh(mesh), n, "num_particles")
    if resampler.num_resampled is not None and resampler.num_resampled > n:
        raise ValueError(
            f"`num_resampled` must be an int in [2, {n}], got {resampler.num_resampled}."
        )
    dtype = jnp.result_type(jnp.float32, x.dtype)
    if initial_log_weights is None:
        initial_log_weights = jnp.zeros((n,), dtype)
    log_w0 = jnp.asarray(initial_log_weights)
    if log_w0.shape != (n,):
        raise ValueError(f"`initial_log_weights` must have shape ({n},), got {log_w0.shape}.")

    x = x.astype(dtype)
    times = jnp.asarray(times, dtype)
    lambdas = jnp.asarray(lambdas, dtype)
    alpha = jnp.asarray(problem.alpha, dtype)
    chunk = problem.particle_chunk
    potential_and_grad = map_particles(problem.potential_and_grad, mesh, (0, None), chunk)
    reward = map_particles(problem.reward, mesh, chunk=chunk)

    def evaluate(xs, t, root):
        """The :class:`Cache` of the particles at time ``t`` and the NFE it cost."""
        r, g, v, nfe = potential_and_grad(xs, t)
        r, g, bad = _sanitize_potential(r.astype(dtype), g.astype(dtype))
        return Cache(r, g, v.astype(dtype), bad, root), jnp.sum(nfe)

    def propose(final: bool):
        """The FK proposal: move ``x`` with ``proposal``, then evaluate at ``x'``."""

        def move(key, particles, inputs):
            (xs, cache), path = particles
            t, t_next, _, lam_next = inputs
            trans = jax.vmap(
                transition_from_velocity,
                in_axes=(0, 0, None, None, None),
                out_axes=Transition(0, None),  # σ depends on the times only
            )(xs, cache.velocity, t, t_next, diffusion)
            step = ProposalInputs(
                xs,
                trans.mean.astype(dtype),
                trans.std.astype(dtype),
                lam_next * cache.grad / alpha,
                cache.reward,
                t,
                t_next,
            )
            x_next, log_p_minus_q = proposal(key, step)
            if final:  # t' = 0: the exact reward, no model call
                r_next = reward(x_next).astype(dtype)
                bad_next = ~jnp.isfinite(r_next)
                new = cache._replace(reward=jnp.where(bad_next, 0.0, r_next), bad=bad_next)
                nfe = jnp.zeros((), jnp.int32)
            else:
                new, nfe = evaluate(x_next, t_next, cache.root)
            info = _move_info(nfe, cache, step, x_next, new.bad)
            return ((x_next, new), path), log_p_minus_q, info

        return move

    def reweight(final: bool):
        """The FK potential on the log-twists ``s = λ_{t'} r_{t'}/α``; weight zero where the
        reward or its gradient was not finite at either end."""
        return weigh(
            potential,
            lambda state, inputs: inputs[3] * state[1].reward / alpha,
            final=final,
            invalid=lambda state, new: state[1].bad | new[1].bad,
        )

    cache0, nfe0 = evaluate(constrain(x, mesh), times[0], jnp.arange(n, dtype=jnp.int32))
    log_g0, path0 = potential.init(lambdas[0] * cache0.reward / alpha)
    log_w = sanitize(jnp.where(cache0.bad, -jnp.inf, log_w0.astype(dtype) + log_g0))
    state = feynman_kac.init(((x, cache0), path0), log_w, mesh)
    inputs = (times[:-1], times[1:], lambdas[:-1], lambdas[1:])
    state, info = feynman_kac.run(
        rng_key,
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
    rewards = jnp.where(cache.bad, jnp.nan, cache.reward)
    nfe = (nfe0 + jnp.sum(info.proposal_info.nfe)).astype(jnp.int32)
    log_weights = normalized_log_weights(state.log_weights)
    return AlignmentResult(xs, log_weights, rewards, state.log_normalizer, nfe, info)


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
def _part(value, table: dict, default, name: str):
    """The part ``value``: ``None`` is ``default()``; a name of ``table`` is a deprecated alias."""
    if value is None:
        return default()
    if isinstance(value, str):
        if value not in table:
            raise ValueError(f"`{name}` must be one of {tuple(table)} or a part, got {value!r}.")
        deprecated(f"{name}={value!r}", f"{name}={table[value].__name__}()")
        return table[value]()
    return value


def _resampler(resampling, ess_threshold, resample_every, num_resampled) -> AdaptiveResampling:
    """The resampling part from ``run_smc``'s arguments (named as the user wrote them)."""
    if isinstance(resampling, AdaptiveResampling):
        if (ess_threshold, resample_every, num_resampled) != (0.5, 1, None):
            raise ValueError(
                "Give `ess_threshold`, `resample_every` and `num_resampled` in the "
                "AdaptiveResampling part or as arguments, not both."
            )
        return resampling
    check_real(ess_threshold, "ess_threshold", ge=0.0, le=1.0, concrete=True)
    check_int(resample_every, "resample_every")
    if num_resampled is not None:
        check_int(num_resampled, "num_resampled", 2)
    return AdaptiveResampling(resampling, ess_threshold, resample_every, num_resampled)


def _move_info(nfe, cache: Cache, step: ProposalInputs, x_next, bad_next) -> MoveInfo:
    """The :class:`MoveInfo` of one move (reductions over the particles only)."""
    n = cache.root.shape[0]
    lineages = jnp.sum(jnp.zeros((n,), jnp.int32).at[cache.root].set(1))
    axes = tuple(range(1, x_next.ndim))
    finite = jnp.all(jnp.isfinite(x_next), axis=axes)
    dim = math.prod(x_next.shape[1:])
    noise = step.std * math.sqrt(dim)
    distance = jnp.sqrt(jnp.sum(jnp.square(x_next - step.mean), axis=axes))
    moved = finite & ~cache.bad  # a particle that entered with zero weight says nothing
    shift = jnp.max(jnp.where(moved, distance / jnp.where(noise > 0, noise, 1.0), 0.0))
    shift = jnp.where(noise > 0, shift, jnp.nan)  # no noise (σ = 0): no unit to measure in
    valid = finite & ~bad_next
    expand = valid.reshape(valid.shape + (1,) * len(axes))
    max_abs = jnp.max(jnp.where(expand, jnp.abs(x_next), 0.0))
    num_invalid = jnp.sum(~valid).astype(jnp.int32)
    return MoveInfo(nfe, lineages.astype(jnp.int32), shift, num_invalid, max_abs)


def _sanitize_potential(r, grad):
    """Zero the reward and gradient of a particle whose reward or gradient is non-finite and
    flag it (its log-weight becomes ``−inf``): ``(r, grad, bad)``."""
    axes = tuple(range(1, grad.ndim))
    bad = ~jnp.isfinite(r) | ~jnp.all(jnp.isfinite(grad), axis=axes)
    expand = bad.reshape(bad.shape + (1,) * len(axes))
    return jnp.where(bad, 0.0, r), jnp.where(expand, 0.0, grad), bad


def _checked_schedule(schedule, num_steps: int) -> np.ndarray:
    if schedule is None:
        return np.ones(num_steps + 1)
    try:
        lambdas = concrete_value(schedule, np.float64)
    except (TypeError, ValueError):
        raise TypeError("`schedule` must be an array of numbers.") from None
    if lambdas is None:
        raise ValueError("`schedule` must be concrete (not traced).")
    if lambdas.shape != (num_steps + 1,):
        raise ValueError(
            f"`schedule` must have shape ({num_steps + 1},) (one λ per grid time), "
            f"got {lambdas.shape}."
        )
    if not (np.all(lambdas >= 0.0) and np.all(lambdas <= 1.0)):
        raise ValueError("`schedule` values must lie in [0, 1].")
    if lambdas[-1] != 1.0:
        raise ValueError(f"`schedule` must end at λ_T = 1 (the target p*), got {lambdas[-1]}.")
    return lambdas
