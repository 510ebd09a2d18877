r"""The reward-alignment problem: a flow model, a reward, a strength and an x0-predictor.

The target (ALGORITHMS.md §3) is

.. math::

    p^*_0(x_0) ∝ p_0(x_0)\, e^{r(x_0)/α}, \qquad
    γ_t(x) ∝ p_t(x)\, e^{λ_t\, r(\hat x_0(x, t))/α},

with ``x̂0(x, t)`` an x0-predictor: Tweedie ``x − t·v(x, t)`` (one model evaluation), the flow
map ``Φ_t(x)`` (an ODE solve, exact for an exact model; every velocity evaluation of the solve
is counted as an NFE) or a user callable. Every method acts on a **single** sample of shape
``event_shape``; the samplers vmap over particles.
"""

import dataclasses
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike

from psijax.flows.interpolant import tweedie_from_velocity
from psijax.flows.ode import flow_map

__all__ = ["RewardProblem"]

_PREDICTORS = ("tweedie", "flow_map")
_FLOW_MAP_OPTIONS = {"solver", "rtol", "atol", "dt0", "max_steps", "adjoint"}


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
        (:func:`psijax.flows.ode.flow_map`, an adaptive ODE solve from ``t`` to 0) or a
        callable ``(velocity_fn, x, t) -> x0`` or ``-> (x0, nfe)``; a callable that returns
        ``x0`` alone is counted as one model evaluation, so return its true cost with it.
    flow_map_options
        Keyword arguments of :func:`psijax.flows.ode.solve` for the flow-map predictor
        (``solver``, ``rtol``, ``atol``, ``dt0``, ``max_steps``); ``None`` for its defaults.

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
    flow_map_options: Mapping | None = None

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
        options = self.flow_map_options
        if options is not None:
            if not isinstance(options, Mapping):
                raise ValueError(f"`flow_map_options` must be a dict or None, got {options!r}.")
            unknown = set(options) - _FLOW_MAP_OPTIONS
            if unknown:
                allowed = sorted(_FLOW_MAP_OPTIONS)
                raise ValueError(f"`flow_map_options` accepts {allowed}, got {sorted(unknown)}.")
            object.__setattr__(self, "flow_map_options", dict(options))

    @property
    def is_tweedie(self) -> bool:
        """True for the Tweedie predictor (one model evaluation per potential)."""
        return isinstance(self.x0_predictor, str) and self.x0_predictor == "tweedie"

    def predict_x0(self, x: ArrayLike, t: ArrayLike) -> Array:
        r"""``x̂0(x, t)`` on a single sample (see :meth:`predict_x0_and_nfe` for its cost)."""
        return self.predict_x0_and_nfe(x, t)[0]

    def predict_x0_and_nfe(self, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
        r"""``(x̂0(x, t), nfe)`` on a single sample; ``nfe`` is an int32 count of model calls.

        Tweedie: ``x − t·v(x, t)``, 1; flow map: ``Φ_t(x)`` and the exact count of its ODE
        solve; a callable: its ``(x0, nfe)``, or ``(x0, 1)`` when it returns ``x0`` alone.
        """
        if self.is_tweedie:
            x0, nfe = tweedie_from_velocity(x, self.velocity_fn(x, t), t), 1
        elif isinstance(self.x0_predictor, str):  # "flow_map"
            x0, nfe = flow_map(self.velocity_fn, x, t, **(self.flow_map_options or {}))
        else:
            out = self.x0_predictor(self.velocity_fn, x, t)
            x0, nfe = out if isinstance(out, tuple) else (out, 1)
        return x0, jnp.asarray(nfe, jnp.int32)

    def potential_and_grad(self, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array, Array, Array]:
        r"""Reward of the prediction, its gradient w.r.t. ``x``, the velocity and the NFE.

        .. math::

            r_t(x) = r(\hat x_0(x, t)), \qquad ∇_x r_t(x), \qquad v(x, t)

        The gradient is taken through the predictor and the model. For Tweedie this is **one**
        model evaluation (with its backward pass): ``jax.value_and_grad`` of
        ``x ↦ r(x − t·v(x, t))`` with ``v`` returned as auxiliary output. For the flow map or a
        callable predictor it is the predictor's own evaluations plus one velocity call.

        Non-finite values are passed through unchanged (NaN/inf reward or gradient): the SMC
        turns such a particle into a zero-weight particle.

        Returns
        -------
        ``(reward, grad, velocity, nfe)``: a float32 (or wider) scalar, two arrays shaped like
        ``x`` (the gradient in the accumulation dtype, the velocity in the model's dtype) and
        the int32 number of model evaluations made (each with its backward pass).

        """
        x = jnp.asarray(x)

        if self.is_tweedie:

            def objective(y):
                v = self.velocity_fn(y, t)
                return self.reward(tweedie_from_velocity(y, v, t)), v

            (reward, v), grad = jax.value_and_grad(objective, has_aux=True)(x)
            return reward, grad, v, jnp.asarray(1, jnp.int32)

        def objective(y):
            x0, nfe = self.predict_x0_and_nfe(y, t)
            return self.reward(x0), nfe

        (reward, nfe), grad = jax.value_and_grad(objective, has_aux=True)(x)
        return reward, grad, self.velocity_fn(x, t), nfe + 1

    def reward(self, x0):
        """``r(x0)`` on one sample as a float32 (or wider) scalar."""
        r = jnp.asarray(self.reward_fn(x0))
        return r.astype(jnp.result_type(jnp.float32, r.dtype)).reshape(())
