r"""Proposals of the SMC over the denoising grid: twisted (reward gradient) and bootstrap.

At step ``t → t'`` the model's transition is Gaussian, ``p(x' | x) = N(x'; μ(x), σ² I)``
(:mod:`psijax.flows.sde`), and the twist's gradient is ``G(x) = λ_{t'}·∇_x r(x̂0(x, t))/α``.
A proposal draws ``x'`` for every particle at once and returns it with ``log p(x'|x) −
log q(x'|x)``; the SMC (:func:`psijax.align.run_smc`) adds the potential. The signature:

``proposal(rng_key, step: ProposalInputs) -> (x', log_p_minus_q)``

with ``x'`` of shape ``(N, *event_shape)`` and ``log_p_minus_q`` of shape ``(N,)``, in the
sampler's float dtype. Any callable of that shape is a proposal: a user's own runs without
touching the library (the README's "Your own proposal" example).

- :class:`Twisted` (TDS, DAS, Ψ-Sampler; docs/algorithms.md §5):

  .. math::

      q = N(μ + σ^2 G,\ σ^2 I), \qquad
      \log p − \log q = −⟨x' − μ, G⟩ + \tfrac{σ^2}{2}‖G‖^2

  (the same covariance with a shifted mean: the Gaussian parts cancel but for these terms).
- :class:`Bootstrap` (FK steering): ``q = p``, ``log p − log q = 0``; no gradient is used.
"""

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.types import Array, PRNGKey

from psijax._checks import check_real

__all__ = ["ProposalInputs", "Twisted", "Bootstrap", "PROPOSALS", "check_proposal"]


class ProposalInputs(NamedTuple):
    """What a proposal sees of one step ``t → t'``, for all ``N`` particles.

    x
        ``(N, *event_shape)`` the particles at ``t``.
    mean
        ``(N, *event_shape)`` ``μ(x)``, the mean of the model's transition ``p(x' | x)``.
    std
        ``σ`` (a scalar): ``p(x' | x) = N(x'; μ(x), σ² I)``.
    twist_grad
        ``(N, *event_shape)`` ``G = λ_{t'}·∇_x r(x̂0(x, t))/α``.
    reward
        ``(N,)`` ``r(x̂0(x, t))`` (0 where it was not finite; those particles have weight zero).
    t, t_next
        The step's times.

    """

    x: Array
    mean: Array
    std: Array
    twist_grad: Array
    reward: Array
    t: Array
    t_next: Array


@dataclasses.dataclass(frozen=True)
class Twisted:
    r"""``q = N(μ + σ²G, σ²I)``: the reward-gradient (twisted) proposal (module docstring).

    Parameters
    ----------
    max_shift
        ``None`` (default: the papers' proposal) or ``c > 0``: cap the gradient's shift at
        ``c`` times the model's noise, per dimension, ``σ‖G̃‖/√d ≤ c`` with
        ``G̃ = G·min(1, c√d/(σ‖G‖))``. The cap is a deterministic function of the particle and
        ``log p − log q`` is computed with ``G̃``, so the SMC stays exact (the twist itself is
        unchanged). Without it a sharp reward (``σ²·λ‖∇²r‖/α ≳ 2``) makes the mean
        ``μ + σ²G`` an unstable gradient step that throws the particles out of the data's
        range (docs/algorithms.md §5); with it they move at most ``c`` noise widths further
        than the model would.

    """

    max_shift: float | None = None

    def __post_init__(self):
        if self.max_shift is not None:
            check_real(self.max_shift, "max_shift", gt=0.0, concrete=True)

    def __call__(self, rng_key: PRNGKey, step: ProposalInputs) -> tuple[Array, Array]:
        """Draw ``x' = μ + σ²G + σz`` and return it with ``log p − log q``."""
        sigma, g = step.std, step.twist_grad
        axes = tuple(range(1, step.x.ndim))
        if self.max_shift is not None:
            norm = jnp.sqrt(jnp.sum(g * g, axis=axes, keepdims=True))
            limit = self.max_shift * math.sqrt(math.prod(step.x.shape[1:])) / sigma
            g = g * jnp.minimum(1.0, limit / jnp.where(norm > 0, norm, 1.0)).astype(g.dtype)
        z = jax.random.normal(rng_key, step.x.shape, step.mean.dtype)
        shift = sigma * z + sigma**2 * g  # x' − μ
        log_p_minus_q = -jnp.sum(shift * g, axis=axes) + 0.5 * sigma**2 * jnp.sum(g * g, axis=axes)
        return step.mean + shift, log_p_minus_q


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """``q = p``: the model's own transition (no gradient), ``log p − log q = 0``."""

    def __call__(self, rng_key: PRNGKey, step: ProposalInputs) -> tuple[Array, Array]:
        """Draw ``x' = μ + σz``."""
        z = jax.random.normal(rng_key, step.x.shape, step.mean.dtype)
        return step.mean + step.std * z, jnp.zeros(step.x.shape[:1], step.mean.dtype)


PROPOSALS = {"twisted": Twisted, "bootstrap": Bootstrap}
"""The proposals by name."""


def check_proposal(proposal) -> Callable:
    """``proposal`` when it is callable, else a ``TypeError``."""
    if not callable(proposal):
        raise TypeError(
            "`proposal` must be a callable (rng_key, ProposalInputs) -> (x', log_p_minus_q), "
            f"e.g. Twisted() or Bootstrap(), got {proposal!r}."
        )
    return proposal
