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
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.types import Array, PRNGKey

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
    """``q = N(μ + σ²G, σ²I)``: the reward-gradient (twisted) proposal (module docstring)."""

    def __call__(self, rng_key: PRNGKey, step: ProposalInputs) -> tuple[Array, Array]:
        """Draw ``x' = μ + σ²G + σz`` and return it with ``log p − log q``."""
        sigma, g = step.std, step.twist_grad
        z = jax.random.normal(rng_key, step.x.shape, step.mean.dtype)
        shift = sigma * z + sigma**2 * g  # x' − μ
        axes = tuple(range(1, step.x.ndim))
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
