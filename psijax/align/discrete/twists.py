r"""Twists of the discrete SMC: reward estimates at partial states (docs/algorithms.md §10.3).

A twist gives every particle a log-value ``ρ_i(x)`` at level ``i``, computed **once** when the
particle is created, stored with it and resampled with it: it is the numerator of one step's
weight and the denominator of the next (recomputing it with fresh noise would break the
telescoping). At the data end ``ρ_T(x) = r(x)/β`` exactly. The reward-estimate twists are
``ρ_i = κ_i·r̂(x)``, ``κ_i = λ_i/β`` (``λ`` the annealing schedule), with ``r̂`` one of

==================  ===========================================================  ===========
twist               ``r̂(x)`` (``y`` with the continuous carry-over)              reward calls
==================  ===========================================================  ===========
:class:`NoTwist`    none: ``ρ_i = 0`` for ``i < T``                               0
:class:`Point`      ``r(y)``, ``y = e(argmax μ)`` (straight-through)              1
:class:`Soft`       ``r(μ(E))`` (exact for rewards linear in the one-hot)        1
:class:`Mean`       ``(1/φ) Σ_j r(y_j)``, ``y_j ~ Π_l Cat(μ_l)``                  ``φ``
:class:`LogMeanExp` ``ρ = log (1/φ) Σ_j exp(κ r(y_j))`` (with ``λ ≡ 1``: a       ``φ``
                    Monte Carlo estimate of the optimal twist)
:class:`Exact`      ``ρ_i = log V*_i(x)``, the soft value (toys, by enumeration)  0
==================  ===========================================================  ===========

Completions ``y_j`` are straight-through Gumbel-softmax draws: forward
``one_hot(argmax(ℓ + G))``, backward the Jacobian of ``softmax(ℓ + G)`` (``τ = 1``), the noise
``G`` drawn outside the differentiated function; then ``y ← c(E)⊙y + (1 − e_m)⊙E``
(:func:`psijax.discrete.masking.carry_over`), so the gradient w.r.t. an unmasked position is
the first-order change of the reward when that token changes.

:func:`evaluate` makes the one denoiser pass of a particle: the logits (cached for the kernel
of the next move), ``ρ`` at ``κ`` and, for the gradient proposals, ``∇_E ρ`` at the next
level's ``κ'`` (one backward pass through the reward calls and the denoiser).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey

from psijax._checks import check_int, check_real
from psijax.discrete.exact import state_index
from psijax.discrete.masking import carry_over, one_hot, real_logits

__all__ = [
    "Twist",
    "NoTwist",
    "Point",
    "Soft",
    "Mean",
    "LogMeanExp",
    "Exact",
    "Evaluation",
    "evaluate",
    "annealing",
    "check_twist",
]


class Twist:
    """Base of the twists (module docstring)."""

    num_samples: int = 0
    deterministic: bool = True

    def completions(self, rng_key: PRNGKey, logits: Array) -> Array:
        """``(φ, L, S)`` completions ``y`` before the carry-over (no mass on the mask)."""
        return jnp.zeros((0,) + logits.shape, logits.dtype)

    def log_twist(self, rewards: Array, kappa: Array, x: Array, level: Array) -> Array:
        """``ρ`` from the ``(φ,)`` reward values at ``κ``."""
        return kappa * jnp.mean(rewards) if rewards.shape[0] else jnp.zeros((), kappa.dtype)


@dataclasses.dataclass(frozen=True)
class NoTwist(Twist):
    """``ρ_i = 0`` before the data end (the reward enters only at ``t = 0``)."""


@dataclasses.dataclass(frozen=True)
class Point(Twist):
    """``r(e(argmax μ))``, straight-through (module docstring)."""

    num_samples = 1

    def completions(self, rng_key, logits):
        """The argmax completion."""
        soft = jax.nn.softmax(real_logits(logits), axis=-1)
        hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
        return (hard + soft - jax.lax.stop_gradient(soft))[None]


@dataclasses.dataclass(frozen=True)
class Soft(Twist):
    """``r(μ(E))`` (module docstring)."""

    num_samples = 1

    def completions(self, rng_key, logits):
        """The denoiser's probabilities."""
        return jax.nn.softmax(real_logits(logits), axis=-1)[None]


@dataclasses.dataclass(frozen=True)
class Mean(Twist):
    """``(1/φ) Σ_j r(y_j)`` over ``φ`` straight-through Gumbel-softmax completions."""

    num_samples: int = 4
    deterministic = False

    def __post_init__(self):
        check_int(self.num_samples, "num_samples")

    def completions(self, rng_key, logits):
        """``φ`` straight-through Gumbel-softmax draws."""
        logits = real_logits(logits)
        gumbel = jax.random.gumbel(rng_key, (self.num_samples,) + logits.shape, logits.dtype)
        perturbed = logits[None] + jax.lax.stop_gradient(gumbel)
        soft = jax.nn.softmax(perturbed, axis=-1)
        hard = jax.nn.one_hot(jnp.argmax(perturbed, axis=-1), logits.shape[-1], dtype=soft.dtype)
        return hard + soft - jax.lax.stop_gradient(soft)


@dataclasses.dataclass(frozen=True)
class LogMeanExp(Mean):
    """``ρ = log (1/φ) Σ_j exp(κ r(y_j))`` (module docstring)."""

    def log_twist(self, rewards, kappa, x, level):
        """The log-mean-exp of ``κ r``."""
        return jax.nn.logsumexp(kappa * rewards) - jnp.log(rewards.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class Exact(Twist):
    """``ρ_i(x) = log V*_i(x)`` read from a ``(T + 1, K)`` table over the states of
    :func:`psijax.discrete.exact.enumerate_states` (:func:`psijax.discrete.exact.backward`);
    with the locally optimal proposal every weight is 1 and ``Ẑ = Z`` (a test oracle)."""

    log_values: ArrayLike
    vocab_size: int

    def log_twist(self, rewards, kappa, x, level):
        """The table's entry at ``(level, x)``."""
        return jnp.asarray(self.log_values)[level, state_index(x, self.vocab_size)]


class Evaluation(NamedTuple):
    """One denoiser pass at a particle (:func:`evaluate`).

    logits
        ``ℓ(e(x), t)``, ``(L, S)``.
    log_twist
        ``ρ`` at ``κ``.
    grad
        ``∇_E ρ`` at ``κ'`` (``(L, S)``), or ``None`` when not asked for.
    """

    logits: Array
    log_twist: Array
    grad: Array | None


def evaluate(
    twist: Twist,
    problem,
    rng_key: PRNGKey,
    x: ArrayLike,
    t: ArrayLike,
    kappa: ArrayLike,
    kappa_next: ArrayLike,
    level: ArrayLike,
    with_grad: bool,
) -> Evaluation:
    """The denoiser pass at state ``x`` (module docstring); a single particle."""
    e = one_hot(x, problem.vocab_size)

    def rewards(e):
        logits = problem.logits_fn(e, t)
        ys = carry_over(twist.completions(rng_key, logits), e)
        values = jax.vmap(problem.reward)(ys) if ys.shape[0] else jnp.zeros((0,), jnp.float32)
        return jnp.asarray(values, jnp.float32), logits

    if with_grad:
        values, pullback, logits = jax.vjp(rewards, e, has_aux=True)
        weights = jax.grad(twist.log_twist)(values, kappa_next, x, level)
        grad = pullback(weights)[0]
    else:
        values, logits = rewards(e)
        grad = None
    return Evaluation(logits, twist.log_twist(values, kappa, x, level), grad)


def annealing(num_steps: int, fraction: float = 0.5, floor: float = 1e-3) -> np.ndarray:
    """``λ`` on the ``T + 1`` levels: linear from ``floor`` at ``t = 1`` to 1 at level
    ``round(fraction·T)``, then 1 (the paper's annealed twist); ``fraction = 0`` is ``λ ≡ 1``."""
    num_steps = check_int(num_steps, "num_steps")
    fraction = check_real(fraction, "fraction", ge=0.0, le=1.0)
    floor = check_real(floor, "floor", gt=0.0, le=1.0)
    ramp = max(int(round(fraction * num_steps)), 0)
    levels = np.arange(num_steps + 1, dtype=np.float64)
    if ramp == 0:
        return np.ones(num_steps + 1)
    return np.minimum(1.0, floor + (1.0 - floor) * levels / ramp)


def check_twist(twist) -> Twist:
    """``twist`` when it is a :class:`Twist`; ``TypeError`` otherwise."""
    if not isinstance(twist, Twist):
        raise TypeError(
            "`twist` must be a psijax.align.discrete twist (NoTwist(), Point(), Soft(), "
            f"Mean(φ), LogMeanExp(φ), Exact(...)), got {twist!r}."
        )
    return twist
