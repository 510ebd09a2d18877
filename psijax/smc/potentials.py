r"""Feynman–Kac potentials built from a sequence of log-twists: difference, max, sum, current.

A twisted SMC reweights by intermediate targets ``γ_i(x) ∝ p_i(x)·e^{s_i(x)}``, where ``s_i``
is a per-particle **log-twist** (for reward alignment ``s_i = λ_i·r(x̂0(x, t_i))/α``,
:mod:`psijax.align.denoising`; for a discrete model a twist over token sequences), and
``s_T`` at the last step is the exact log-tilt of the target (``r(x_T)/α``). FK steering
(Singhal et al. 2025) showed that other potentials over the same ``s`` give valid samplers.
With ``Ψ_i = Σ_{j ≤ i} log G_j`` the log-potentials applied along a particle's path:

- :class:`Difference`: ``log G_{i+1} = s_{i+1} − s_i`` (so ``Ψ_i = s_i``; TDS, DAS, Ψ-Sampler);
- :class:`Max`: ``log G_{i+1} = max_{j ≤ i+1} s_j``;
- :class:`Sum`: ``log G_{i+1} = Σ_{j ≤ i+1} s_j``;
- :class:`Current`: ``log G_{i+1} = s_{i+1}``;

and at the last step every potential is ``log G_T = s_T − Ψ_{T−1}``, so the product of all
potentials is ``e^{s_T}`` and the target is the tilted one whatever the choice. ``log G_0 = s_0``
for all four.

``Ẑ`` is unbiased for every choice, but the variance differs: :class:`Sum` stacks
``T(T+1)/2`` log-twists into ``Ψ`` and its final correction, so its weights grow heavy tails
as the twists sharpen (``benchmarks/results/potentials.md``).

Each potential is a small frozen object with two methods on ``(N,)`` arrays:
``init(s_0) -> (log G_0, PathState)`` and ``update(path, s_next, final) -> (log G, PathState)``;
the :class:`PathState` (``Ψ`` and the running statistic) travels with the particles and is
resampled with them. They know nothing of models, only of the log-twists. :func:`weigh` turns
one into the ``potential`` callable of :func:`psijax.smc.feynman_kac.step`, for particles laid
out as ``(state, path)``; a continuous or a discrete SMC differ only in the ``log_twist`` they
read off their state.
"""

import dataclasses
from typing import Callable, NamedTuple

import jax.numpy as jnp
from blackjax.types import Array

__all__ = [
    "PathState",
    "Potential",
    "Difference",
    "Max",
    "Sum",
    "Current",
    "POTENTIALS",
    "weigh",
]


class PathState(NamedTuple):
    """What a potential remembers of a particle's path, per particle.

    applied
        ``Ψ_i``: the log-potentials applied along the path so far.
    stat
        The running statistic of the potential (``s_i`` for :class:`Difference` and
        :class:`Current`, the running max or sum of the ``s_j`` for :class:`Max` and
        :class:`Sum`).

    """

    applied: Array
    stat: Array


class Potential:
    """Base of the potentials: ``log G_0 = s_0``, and the final correction ``s_T − Ψ_{T−1}``.

    A subclass defines :meth:`statistic`, the running statistic after ``s_next`` and the
    log-potential it applies (the statistic itself, or for :class:`Difference` the change).
    """

    def init(self, log_twist: Array) -> tuple[Array, PathState]:
        """``log G_0 = s_0`` and the path state ``Ψ_0 = stat_0 = s_0``."""
        return log_twist, PathState(log_twist, log_twist)

    def update(self, path: PathState, log_twist: Array, final: bool) -> tuple[Array, PathState]:
        """``(log G_{i+1}, path state)`` after the new log-twists ``s_{i+1}``.

        ``final`` (static) marks the last step, where ``log G_T = s_T − Ψ_{T−1}``.
        """
        if final:
            return log_twist - path.applied, PathState(log_twist, log_twist)
        log_g, stat = self.statistic(path, log_twist)
        return log_g, PathState(path.applied + log_g, stat)

    def statistic(self, path: PathState, log_twist: Array) -> tuple[Array, Array]:
        """``(log G_{i+1}, stat_{i+1})``; defined by each potential."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Difference(Potential):
    """``log G_{i+1} = s_{i+1} − s_i``: the twisted-SMC weights (TDS, DAS, Ψ-Sampler)."""

    def update(self, path: PathState, log_twist: Array, final: bool) -> tuple[Array, PathState]:
        """``s_{i+1} − s_i`` at every step (the final correction is the same formula)."""
        return log_twist - path.applied, PathState(log_twist, log_twist)


@dataclasses.dataclass(frozen=True)
class Max(Potential):
    """``log G_{i+1} = max_{j ≤ i+1} s_j`` (FK steering's max-over-time potential)."""

    def statistic(self, path: PathState, log_twist: Array) -> tuple[Array, Array]:
        """The running maximum, applied as the potential."""
        stat = jnp.maximum(path.stat, log_twist)
        return stat, stat


@dataclasses.dataclass(frozen=True)
class Sum(Potential):
    """``log G_{i+1} = Σ_{j ≤ i+1} s_j`` (FK steering's sum-over-time potential)."""

    def statistic(self, path: PathState, log_twist: Array) -> tuple[Array, Array]:
        """The running sum, applied as the potential."""
        stat = path.stat + log_twist
        return stat, stat


@dataclasses.dataclass(frozen=True)
class Current(Potential):
    """``log G_{i+1} = s_{i+1}`` (FK steering's current-reward potential)."""

    def statistic(self, path: PathState, log_twist: Array) -> tuple[Array, Array]:
        """The current log-twist, applied as the potential."""
        return log_twist, log_twist


POTENTIALS = {"difference": Difference, "max": Max, "sum": Sum, "current": Current}
"""The potentials by the names FK steering uses."""


def weigh(
    potential: Potential,
    log_twist: Callable,
    *,
    final: bool = False,
    invalid: Callable | None = None,
) -> Callable:
    """The Feynman–Kac ``potential(particles, moved, inputs) -> (moved, log G)`` of ``potential``.

    Parameters
    ----------
    potential
        A :class:`Potential` (or an object with its ``update``).
    log_twist
        ``log_twist(state, inputs) -> (N,)``: the log-twists ``s`` of the moved particles.
    final
        Whether this is the last step (``log G_T = s_T − Ψ_{T−1}``).
    invalid
        ``None``, or ``invalid(state, moved_state) -> (N,) bool``: particles given weight zero
        (``log G = −inf``), e.g. where a reward was not finite.

    Returns
    -------
    Callable
        The core's potential for particles ``(state, path)``: it updates ``path`` (a
        :class:`PathState`) and leaves ``state`` as the proposal moved it.
    """

    def fn(particles, moved, inputs):
        state, path = particles
        new_state, _ = moved
        log_g, new_path = potential.update(path, log_twist(new_state, inputs), final)
        if invalid is not None:
            log_g = jnp.where(invalid(state, new_state), -jnp.inf, log_g)
        return (new_state, new_path), log_g

    return fn
