r"""The reward-alignment problem: a flow model, a reward, a strength and an x0-predictor.

The target (ALGORITHMS.md §3) is

.. math::

    p^*_0(x_0) ∝ p_0(x_0)\, e^{r(x_0)/α}, \qquad
    γ_t(x) ∝ p_t(x)\, e^{λ_t\, r(\hat x_0(x, t))/α},

with ``x̂0(x, t)`` an x0-predictor: Tweedie ``x − t·v(x, t)`` (one model evaluation), the flow
map ``Φ_t(x)`` (an ODE solve, exact for an exact model) or a user callable. Every method acts
on a **single** sample of shape ``event_shape``; the samplers vmap over particles.
"""

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike

from psijax.flows.interpolant import tweedie_from_velocity
from psijax.flows.ode import flow_map_predictor

__all__ = ["RewardProblem"]

_PREDICTORS = ("tweedie", "flow_map")


@dataclasses.dataclass(frozen=True, eq=False)
class RewardProblem:
    r"""A reward-alignment problem ``p*(x0) ∝ p(x0)·exp(r(x0)/α)``.

    Parameters
    ----------
    velocity_fn
        ``v(x, t)`` of the rectified flow on a single sample ``x`` (shape ``event_shape``) and a
        scalar time ``t``; ``t = 1`` is noise, ``t = 0`` data.
    reward_fn
        ``r(x0)``, a differentiable scalar reward on a single clean sample.
    event_shape
        Shape of one sample: a tuple of positive ints.
    alpha
        Strength ``α > 0`` (finite); smaller is a sharper tilt.
    x0_predictor
        ``"tweedie"`` (``x̂0 = x − t·v(x, t)``, one model evaluation), ``"flow_map"``
        (:func:`psijax.flows.ode.flow_map_predictor`, an adaptive ODE solve) or a callable
        ``(velocity_fn, x, t) -> x0``.

    Raises
    ------
    ValueError
        Naming the invalid argument.

    """

    velocity_fn: Callable
    reward_fn: Callable
    event_shape: tuple
    alpha: float
    x0_predictor: str | Callable = "tweedie"

    def __post_init__(self):
        if not callable(self.velocity_fn):
            raise ValueError("`velocity_fn` must be a callable (x, t) -> v.")
        if not callable(self.reward_fn):
            raise ValueError("`reward_fn` must be a callable x0 -> r.")
        shape = self.event_shape
        if not isinstance(shape, tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
        ):
            raise ValueError(f"`event_shape` must be a tuple of positive ints, got {shape!r}.")
        try:
            alpha = float(self.alpha)
        except (TypeError, ValueError):
            raise ValueError(f"`alpha` must be a finite number > 0, got {self.alpha!r}.") from None
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"`alpha` must be a finite number > 0, got {self.alpha!r}.")
        object.__setattr__(self, "alpha", alpha)
        pred = self.x0_predictor
        if not (callable(pred) or (isinstance(pred, str) and pred in _PREDICTORS)):
            raise ValueError(
                f"`x0_predictor` must be 'tweedie', 'flow_map' or a callable "
                f"(velocity_fn, x, t) -> x0, got {pred!r}."
            )

    @property
    def is_tweedie(self) -> bool:
        """True for the Tweedie predictor (one model evaluation per potential)."""
        return isinstance(self.x0_predictor, str) and self.x0_predictor == "tweedie"

    def predict_x0(self, x: ArrayLike, t: ArrayLike) -> Array:
        r"""``x̂0(x, t)`` on a single sample.

        Tweedie: ``x − t·v(x, t)`` (one model evaluation); flow map: ``Φ_t(x)``; a callable:
        ``x0_predictor(velocity_fn, x, t)``.
        """
        if self.is_tweedie:
            return tweedie_from_velocity(x, self.velocity_fn(x, t), t)
        if isinstance(self.x0_predictor, str):  # "flow_map"
            return flow_map_predictor(self.velocity_fn)(x, t)
        return self.x0_predictor(self.velocity_fn, x, t)

    def potential_and_grad(self, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array, Array]:
        r"""Reward of the prediction, its gradient w.r.t. ``x``, and the velocity, at one sample.

        .. math::

            r_t(x) = r(\hat x_0(x, t)), \qquad ∇_x r_t(x), \qquad v(x, t)

        The gradient is taken through the predictor and the model. For Tweedie this is **one**
        model evaluation (with its backward pass): ``jax.value_and_grad`` of
        ``x ↦ r(x − t·v(x, t))`` with ``v`` returned as auxiliary output. For the flow map or a
        callable predictor it is one velocity call plus the predictor's own cost.

        Non-finite values are passed through unchanged (NaN/inf reward or gradient): the SMC
        turns such a particle into a zero-weight particle.

        Returns
        -------
        ``(reward, grad, velocity)``: a float32 (or wider) scalar, and two arrays shaped like
        ``x`` (the gradient in the accumulation dtype, the velocity in the model's dtype).

        """
        x = jnp.asarray(x)

        if self.is_tweedie:

            def objective(y):
                v = self.velocity_fn(y, t)
                return self.reward(tweedie_from_velocity(y, v, t)), v

            (reward, v), grad = jax.value_and_grad(objective, has_aux=True)(x)
            return reward, grad, v

        reward, grad = jax.value_and_grad(lambda y: self.reward(self.predict_x0(y, t)))(x)
        return reward, grad, self.velocity_fn(x, t)

    def reward(self, x0):
        """``r(x0)`` on one sample as a float32 (or wider) scalar."""
        r = jnp.asarray(self.reward_fn(x0))
        return r.astype(jnp.result_type(jnp.float32, r.dtype)).reshape(())
