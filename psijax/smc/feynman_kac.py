r"""A Feynman–Kac SMC over any pytree of particles: one step, one run, parts passed in.

A Feynman–Kac model is a sequence of Markov kernels ``p_i`` and potentials ``G_i``; its
normalized marginals are the SMC's targets. The particle system here moves particles with a
**proposal** ``q_i`` (which may differ from ``p_i``) and corrects by importance weights. Step
``i`` (the same for every SMC in psijax, continuous or discrete):

.. math::

    &\text{resample if the weights call for it (the resampling part):}\quad
      x ← x_a,\ ℓ ← ℓ_a\ (\text{e.g. } 0)\\
    &x' \sim q_i(\cdot \mid x), \qquad
      Δℓ = \underbrace{\log p_i(x' \mid x) − \log q_i(x' \mid x)}_{\text{proposal}}
      + \underbrace{\log G_i(x, x')}_{\text{potential}}\\
    &\log \hat Z ← \log \hat Z + \log \textstyle\sum_j W_j\, e^{Δℓ_j}, \qquad ℓ ← ℓ + Δℓ

with ``W = softmax(ℓ)`` after the resampling. The parts are plain callables:

``proposal(rng_key, particles, inputs) -> (moved, log_p_minus_q, info)``
    moves every particle (the leading axis of every leaf of ``particles``) and returns the
    moved particles, the ``(N,)`` log-ratio ``log p − log q`` (zeros for ``q = p``) and any
    pytree ``info`` (e.g. the model evaluations it made), stacked over the steps by :func:`run`;
``potential(particles, moved, inputs) -> (moved, log_G)``
    the ``(N,)`` log-potential of the step; it returns the moved particles too, into which it
    may write what later potentials need (the path statistics of
    :mod:`psijax.smc.potentials`, made a potential of this shape by
    :func:`psijax.smc.potentials.weigh`), or returns them unchanged; the pytree structure and
    dtypes of the particles must stay those of the state (they are a scan carry);
``resampling(rng_key, log_weights, particles, index) -> ResampleResult``
    the resampling decision and scheme (:class:`psijax.smc.weights.AdaptiveResampling`).

``inputs`` is whatever the step needs from the schedule (times, temperatures), one slice of
the ``inputs`` pytree that :func:`run` scans over. Particles are never cast: integer tokens
stay integers, caches keep their dtypes. The shape is BlackJAX's ``smc.base.step``
(resample, update, weight) with the proposal's density ratio made explicit.

**Invalid values.** A non-finite ``Δℓ`` (NaN or ``±inf`` from a user's model or reward) gives
weight zero (``−inf``); the particle is dropped at the next resampling. When every weight is
zero the run has collapsed: ``log Ẑ = −inf``, reported in :attr:`SMCInfo.collapsed`, never
NaN (:mod:`psijax.smc.weights`).

**Devices.** With a ``mesh``, the particles are pinned to the particle sharding at the start
and after every resampling (:func:`psijax.smc.sharding.constrain`); the proposal and the
potential run on the sharded particles (model evaluations inside them should use
:func:`psijax.smc.sharding.map_particles`).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike, ArrayLikeTree, ArrayTree, PRNGKey
from jax.sharding import Mesh

from psijax.smc.sharding import check_divisible, check_mesh, constrain
from psijax.smc.weights import (
    AdaptiveResampling,
    ess,
    log_mean_exp,
    log_normalizer_increment,
    normalize,
    sanitize,
)

__all__ = ["SMCState", "StepInfo", "SMCInfo", "init", "step", "run", "normalized_log_weights"]


class SMCState(NamedTuple):
    """The state of the particle system.

    particles
        Any pytree whose leaves have the leading particle axis ``N``.
    log_weights
        ``(N,)`` unnormalized log-weights ``ℓ`` (at least float32; ``−inf`` is weight zero).
    log_normalizer
        ``log Ẑ`` so far.

    """

    particles: ArrayTree
    log_weights: Array
    log_normalizer: Array


class StepInfo(NamedTuple):
    """What one :func:`step` did.

    ess
        The ESS of the weights entering the step (before its resampling decision).
    resampled
        Whether the step resampled before moving.
    ancestors
        ``(N,)`` int32 ancestor indices (``arange(N)`` when it did not resample).
    log_normalizer_increment
        ``log Σ_j W_j e^{Δℓ_j}``.
    proposal_info
        The proposal's ``info``.

    """

    ess: Array
    resampled: Array
    ancestors: Array
    log_normalizer_increment: Array
    proposal_info: Any


class SMCInfo(NamedTuple):
    """The history of a :func:`run` of ``T`` steps.

    ess
        ``(T,)`` ESS of the weights entering each step (before its resampling decision).
    resampled
        ``(T,)`` booleans: whether step ``i`` resampled before moving.
    log_normalizer_increments
        ``(T,)`` the increments ``log Σ_j W_j e^{Δℓ_j}`` of ``log Ẑ``.
    final_ess
        ESS of the final weights.
    collapsed
        True when every final weight is zero (``log Ẑ = −inf``).
    proposal_info
        The proposal's ``info`` of every step, stacked along a leading axis ``T``.
    ancestors
        ``(T, N)`` int32 ancestor indices of every step (the genealogy) when :func:`run` was
        asked to keep them, else ``None``.

    """

    ess: Array
    resampled: Array
    log_normalizer_increments: Array
    final_ess: Array
    collapsed: Array
    proposal_info: Any
    ancestors: Array | None = None


def init(
    particles: ArrayLikeTree, log_weights: ArrayLike | None = None, mesh: Mesh | None = None
) -> SMCState:
    """The initial state: ``log Ẑ_0 = log mean exp(ℓ_0)``.

    Parameters
    ----------
    particles
        Any pytree with a leading particle axis ``N`` (the same on every leaf).
    log_weights
        ``(N,)`` initial log-weights (``None``: zeros); NaN and ``+inf`` count as ``−inf``.
    mesh
        A :class:`jax.sharding.Mesh` to pin the particles to, or ``None``.

    Raises
    ------
    ValueError
        If the leaves disagree on ``N``, ``log_weights`` has another shape, or ``N`` is not a
        multiple of the mesh's device count.

    """
    particles = jax.tree.map(jnp.asarray, particles)
    n = num_particles(particles)
    check_divisible(check_mesh(mesh), n, "num_particles")
    if log_weights is None:
        log_weights = jnp.zeros((n,), jnp.result_type(float))  # float64 under jax_enable_x64
    log_weights = sanitize(log_weights)
    if log_weights.shape != (n,):
        raise ValueError(f"`log_weights` must have shape ({n},), got {log_weights.shape}.")
    return SMCState(constrain(particles, mesh), log_weights, log_mean_exp(log_weights))


def step(
    rng_key: PRNGKey,
    state: SMCState,
    inputs: ArrayTree,
    proposal: Callable,
    potential: Callable,
    resampling: Callable,
    *,
    index: ArrayLike = 0,
    mesh: Mesh | None = None,
) -> tuple[SMCState, StepInfo]:
    r"""One Feynman–Kac step: resample, propose, reweight (module docstring).

    Parameters
    ----------
    rng_key
        PRNG key, split into the resampling key and the proposal key.
    state
        The :class:`SMCState` entering the step.
    inputs
        The step's inputs, passed to ``proposal`` and ``potential`` as they are.
    proposal, potential, resampling
        The parts (module docstring).
    index
        The step's index (may be traced), passed to ``resampling``: a loop of its own over
        ``step`` must pass it for ``AdaptiveResampling(every=F)`` to resample every ``F``
        steps (:func:`run` does).
    mesh
        The particles' mesh, or ``None``.

    Returns
    -------
    ``(state, info)``
        The new :class:`SMCState` and a :class:`StepInfo`.

    """
    key_resample, key_move = jax.random.split(rng_key)
    resampled = resampling(key_resample, state.log_weights, state.particles, index)
    particles = constrain(resampled.particles, mesh)  # the copies, back on their devices
    moved, log_p_minus_q, proposal_info = proposal(key_move, particles, inputs)
    moved, log_g = potential(particles, moved, inputs)
    increment = log_p_minus_q + log_g
    dtype = state.log_weights.dtype  # the state keeps its dtype (a fixed scan carry)
    d_log_z = log_normalizer_increment(resampled.log_weights, increment).astype(dtype)
    log_weights = sanitize(resampled.log_weights + increment).astype(dtype)
    new_state = SMCState(moved, log_weights, (state.log_normalizer + d_log_z).astype(dtype))
    info = StepInfo(resampled.ess, resampled.resampled, resampled.ancestors, d_log_z, proposal_info)
    return new_state, info


def run(
    rng_key: PRNGKey,
    state: SMCState,
    inputs: ArrayTree,
    proposal: Callable,
    potential: Callable,
    resampling: Callable | None = None,
    *,
    final_proposal: Callable | None = None,
    final_potential: Callable | None = None,
    keep_ancestors: bool = False,
    mesh: Mesh | None = None,
) -> tuple[SMCState, SMCInfo]:
    r"""``T`` steps of :func:`step` over a schedule, with ``lax.scan``.

    Step ``i`` gets ``inputs[i]`` (the ``i``-th slice of every leaf) and the ``i``-th of
    ``jax.random.split(rng_key, T)``. The last step is taken outside the scan, so that it may
    use other parts (``final_proposal``, ``final_potential``: e.g. the exact reward at the
    data end, with no model call); without them it uses the same ones.

    Parameters
    ----------
    rng_key
        PRNG key.
    state
        The initial :class:`SMCState` (:func:`init`).
    inputs
        A pytree whose leaves have a leading axis ``T >= 1``, the schedule.
    proposal, potential
        The parts of every step (module docstring).
    resampling
        The resampling part; ``None``: :class:`~psijax.smc.weights.AdaptiveResampling` with its
        defaults (systematic, ``κ = 0.5``).
    final_proposal, final_potential
        The parts of the last step, or ``None`` for the same as the others.
    keep_ancestors
        Return every step's ancestor indices (``T × N`` int32) in :attr:`SMCInfo.ancestors`.
    mesh
        The particles' mesh, or ``None``.

    Returns
    -------
    ``(state, info)``
        The final :class:`SMCState` (no resampling after the last step: the weights are
        returned as they are) and the :class:`SMCInfo` history.

    """
    resampling = AdaptiveResampling() if resampling is None else resampling
    leaves = jax.tree.leaves(inputs)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("`inputs` must be a pytree of arrays with a leading step axis T >= 1.")
    num_steps = jnp.shape(leaves[0])[0]
    if num_steps < 1 or any(jnp.shape(leaf)[0] != num_steps for leaf in leaves):
        raise ValueError("every leaf of `inputs` must have the same leading step axis T >= 1.")
    keys = jax.random.split(rng_key, num_steps)
    indices = jnp.arange(num_steps, dtype=jnp.int32)
    head = jax.tree.map(lambda a: a[:-1], (keys, indices, inputs))
    key, index, last = jax.tree.map(lambda a: a[-1], (keys, indices, inputs))

    def body(s, xs):
        k, i, step_inputs = xs
        s, info = step(k, s, step_inputs, proposal, potential, resampling, index=i, mesh=mesh)
        return s, info if keep_ancestors else info._replace(ancestors=None)  # (T, N) ints

    state, history = jax.lax.scan(body, state, head)
    state, tail = step(
        key,
        state,
        last,
        proposal if final_proposal is None else final_proposal,
        potential if final_potential is None else final_potential,
        resampling,
        index=index,
        mesh=mesh,
    )
    if not keep_ancestors:
        tail = tail._replace(ancestors=None)
    history = jax.tree.map(lambda h, e: jnp.concatenate([h, jnp.asarray(e)[None]]), history, tail)
    _, log_sum = normalize(state.log_weights)
    info = SMCInfo(
        history.ess,
        history.resampled,
        history.log_normalizer_increment,
        ess(state.log_weights),
        ~jnp.isfinite(log_sum),
        history.proposal_info,
        history.ancestors,
    )
    return state, info


def normalized_log_weights(log_weights: ArrayLike) -> Array:
    """``ℓ − logsumexp(ℓ)`` (so ``logsumexp = 0``), and all ``−inf`` when every weight is zero."""
    log_weights = sanitize(log_weights)
    _, log_sum = normalize(log_weights)
    collapsed = ~jnp.isfinite(log_sum)
    return jnp.where(collapsed, -jnp.inf, log_weights - jnp.where(collapsed, 0.0, log_sum))


def num_particles(particles: ArrayLikeTree) -> int:
    """The leading axis ``N`` shared by every leaf; ``ValueError`` if they disagree."""
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(particles)}
    if len(sizes) != 1 or None in sizes or 0 in sizes:
        raise ValueError(
            "`particles` must be a pytree whose leaves share a leading particle axis N >= 1, "
            f"got leading sizes {sorted(s for s in sizes if s is not None)}"
            + (" and scalars" if None in sizes else "")
            + "."
        )
    return sizes.pop()
