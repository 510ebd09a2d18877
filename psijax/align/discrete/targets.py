r"""Targets of the discrete SMC: the path measure ``p̃`` of the weights (docs/algorithms.md §10.4).

The incremental log-weight of a move ``x → x'`` drawn from a proposal ``q`` is

.. math::

    \log G_i = \log p̃_i(x' \mid x) − \log q_i(x' \mid x) + ρ_{i+1}(x') − ρ_i(x),

and a target says what ``p̃`` is, from the kernels' log-tables (:mod:`psijax.discrete.kernels`):

* :class:`RewardTilt` (the default): ``p̃ = p_θ``, the model's own kernel; with the twists'
  final ``ρ_T = r/β`` the weighted particles target ``P_θ(x)·e^{r(x)/β}``.
* :class:`Product` (classifier-free guidance and model products): ``π ∝ p_a^γ p_b^{1−γ}``,
  ``log p̃ = γ log p_a + (1 − γ) log p_b`` with ``p_a`` the problem's denoiser and ``p_b`` a
  second one; no twist is needed. Its locally optimal proposal is the per-position
  normalisation of ``p_a^γ p_b^{1−γ}`` (:meth:`Product.proposal_table`,
  :class:`~psijax.align.discrete.proposals.Reverse` on it); then ``G_i = Π_l Z_l(x)`` is known
  before drawing ``x'``. Exact for the one-token kernel with exact denoisers (the path
  marginal is ``∝ p_a^γ p_b^{1−γ}``); approximate when several positions unmask per step.
* :class:`Temperature` ``π ∝ P^γ``: ``log p̃ = γ log p_θ(x' | x) + (1 − γ) log q(x | x')``
  with the kernel's forward (noising) kernel ``q``; exact for the one-token kernel with an
  exact denoiser.

``γ`` may be any real number (``γ > 1`` extrapolates, as guidance scales do).
"""

import dataclasses
from typing import Callable

import jax.numpy as jnp
from blackjax.types import Array

from psijax._checks import check_real

__all__ = ["Target", "RewardTilt", "Product", "Temperature", "check_target"]


class Target:
    """Base of the targets: the model's own kernel (:class:`RewardTilt`)."""

    extra_logits_fns: tuple = ()

    def proposal_table(self, kernel, tables: tuple) -> Array:
        """The log-table the reverse proposal draws from (the first model's)."""
        return tables[0]

    def log_kernel(self, kernel, tables, x, x_next, alpha_t, alpha_s, vocab_size, frozen) -> Array:
        """``log p̃(x' | x)`` from the models' log-tables at ``x``."""
        return kernel.log_prob(tables[0], x, x_next)


@dataclasses.dataclass(frozen=True)
class RewardTilt(Target):
    """``p̃ = p_θ`` (module docstring)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Product(Target):
    """``π ∝ p_a^γ p_b^{1−γ}`` with ``p_b`` from ``logits_fn(E, t)`` (module docstring)."""

    logits_fn: Callable
    gamma: float

    def __post_init__(self):
        if not callable(self.logits_fn):
            raise TypeError("`logits_fn` of Product must be a callable (E, t) -> logits.")
        check_real(self.gamma, "gamma")

    @property
    def extra_logits_fns(self) -> tuple:
        """The second model."""
        return (self.logits_fn,)

    def _geometric(self, tables):
        a, b = tables
        # 0·(−∞) would be NaN: a class outside one kernel's support stays outside.
        both = jnp.isfinite(a) & jnp.isfinite(b)
        mixed = self.gamma * jnp.where(both, a, 0.0) + (1.0 - self.gamma) * jnp.where(both, b, 0.0)
        return jnp.where(both, mixed, -jnp.inf)

    def proposal_table(self, kernel, tables):
        """The locally optimal proposal: ``p_a^γ p_b^{1−γ}`` normalised by the kernel."""
        return kernel.tilt(self._geometric(tables), 0.0)

    def log_kernel(self, kernel, tables, x, x_next, alpha_t, alpha_s, vocab_size, frozen):
        """``γ log p_a(x' | x) + (1 − γ) log p_b(x' | x)``."""
        return kernel.log_prob(self._geometric(tables), x, x_next)


@dataclasses.dataclass(frozen=True)
class Temperature(Target):
    """``π ∝ P^γ`` (module docstring)."""

    gamma: float

    def __post_init__(self):
        check_real(self.gamma, "gamma", gt=0.0)

    def log_kernel(self, kernel, tables, x, x_next, alpha_t, alpha_s, vocab_size, frozen):
        """``γ log p_θ(x' | x) + (1 − γ) log q(x | x')``."""
        log_p = kernel.log_prob(tables[0], x, x_next)
        log_q = kernel.forward_log_prob(x, x_next, alpha_t, alpha_s, vocab_size, frozen)
        if self.gamma == 1.0:
            return log_p
        mixed = self.gamma * log_p + (1.0 - self.gamma) * jnp.where(jnp.isfinite(log_q), log_q, 0.0)
        return jnp.where(jnp.isfinite(log_q), mixed, -jnp.inf)  # a move the forward cannot undo


def check_target(target) -> Target:
    """``target`` when it is a :class:`Target`; ``TypeError`` otherwise."""
    if not isinstance(target, Target):
        raise TypeError(
            "`target` must be RewardTilt(), Product(logits_fn, gamma) or Temperature(gamma), "
            f"got {target!r}."
        )
    return target
