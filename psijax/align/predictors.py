r"""x0-predictors: how a noisy point ``x`` at time ``t`` is mapped to a clean sample ``x̂0(x, t)``.

The samplers evaluate the reward at a prediction of the clean sample,
``r_t(x) = r(x̂0(x, t))`` (docs/algorithms.md §3). A predictor is a callable
``predictor(velocity_fn, x, t) -> (x0, nfe)`` on a single sample, with ``nfe`` the int32 number
of model (velocity) evaluations it made, and an attribute ``nfe_per_call``: that number when it
is a constant known in advance (needed to split an NFE budget), else ``None``.

- :class:`Tweedie`: ``x̂0 = x − t·v(x, t)``, one evaluation (exact ``E[x0 | x_t = x]`` for an
  exact model; for a distilled model, its one-step sample).
- :class:`FlowMap`: ``Φ_t(x)``, the flow ODE solved from ``t`` to 0 with diffrax
  (:func:`psijax.flows.ode.flow_map`), exact for an exact model; costs every velocity
  evaluation of the adaptive solve, counted exactly.
- :class:`Custom`: wraps a user function ``fn(velocity_fn, x, t) -> x0`` or ``-> (x0, nfe)``
  (one evaluation is assumed when it returns ``x0`` alone: return its true cost with it).

A plain callable passed as ``RewardProblem(x0_predictor=fn)`` is wrapped in :class:`Custom`.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike

from psijax._checks import check_int, check_real
from psijax.flows.interpolant import tweedie_from_velocity

__all__ = ["Predictor", "Tweedie", "FlowMap", "Custom", "as_predictor"]


class Predictor:
    """Base of the x0-predictors (module docstring)."""

    nfe_per_call: int | None = None

    def __call__(self, velocity_fn: Callable, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
        """``(x̂0(x, t), nfe)`` on a single sample."""
        raise NotImplementedError

    def reward_and_grad(
        self, velocity_fn: Callable, reward_fn: Callable, x: ArrayLike, t: ArrayLike
    ) -> tuple[Array, Array, Array, Array]:
        r"""``(r(x̂0(x, t)), ∇_x r(x̂0(x, t)), v(x, t), nfe)`` on a single sample.

        The gradient is taken through the predictor and the model; the velocity at ``x`` (for
        the sampler's move) is one more evaluation, counted in ``nfe``.
        """

        def objective(y):
            x0, nfe = self(velocity_fn, y, t)
            return reward_fn(x0), nfe

        (reward, nfe), grad = jax.value_and_grad(objective, has_aux=True)(x)
        return reward, grad, velocity_fn(x, t), nfe + 1


@dataclasses.dataclass(frozen=True)
class Tweedie(Predictor):
    """``x̂0(x, t) = x − t·v(x, t)``: one model evaluation."""

    nfe_per_call = 1

    def __call__(self, velocity_fn: Callable, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
        """``(x − t·v(x, t), 1)``."""
        return tweedie_from_velocity(x, velocity_fn(x, t), t), jnp.asarray(1, jnp.int32)

    def reward_and_grad(
        self, velocity_fn: Callable, reward_fn: Callable, x: ArrayLike, t: ArrayLike
    ) -> tuple[Array, Array, Array, Array]:
        """One model evaluation with its backward pass: the velocity is the auxiliary output of
        ``jax.value_and_grad`` of ``x ↦ r(x − t·v(x, t))``."""

        def objective(y):
            v = velocity_fn(y, t)
            return reward_fn(tweedie_from_velocity(y, v, t)), v

        (reward, v), grad = jax.value_and_grad(objective, has_aux=True)(x)
        return reward, grad, v, jnp.asarray(1, jnp.int32)


@dataclasses.dataclass(frozen=True)
class FlowMap(Predictor):
    """``x̂0(x, t) = Φ_t(x)``: an adaptive ODE solve from ``t`` to 0 (diffrax).

    The fields are those of :func:`psijax.flows.ode.solve` (its defaults: Tsit5,
    ``rtol = atol = 1e-5``, first step 0.01, 4096 steps at most, reverse mode through the
    checkpointed solve). The NFE of every solve is counted exactly.
    """

    solver: object = None
    rtol: float = 1e-5
    atol: float = 1e-5
    dt0: float | None = None
    max_steps: int = 4096
    adjoint: object = None

    def __post_init__(self):
        for name in ("rtol", "atol") + (("dt0",) if self.dt0 is not None else ()):
            check_real(getattr(self, name), name, gt=0.0)
        check_int(self.max_steps, "max_steps")

    def __call__(self, velocity_fn: Callable, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
        """``(Φ_t(x), nfe)`` (:func:`psijax.flows.ode.flow_map`)."""
        from psijax.flows.ode import flow_map  # diffrax on first use

        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return flow_map(velocity_fn, x, t, **options)


@dataclasses.dataclass(frozen=True)
class Custom(Predictor):
    """A user predictor ``fn(velocity_fn, x, t) -> x0`` or ``-> (x0, nfe)``.

    ``nfe_per_call`` may be given when the cost is a known constant (then an NFE budget can be
    split with it); otherwise it is read from what ``fn`` returns, 1 when it returns ``x0`` alone.
    """

    fn: Callable
    nfe_per_call: int | None = None

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"`fn` must be a callable (velocity_fn, x, t) -> x0, got {self.fn!r}.")
        if self.nfe_per_call is not None:
            check_int(self.nfe_per_call, "nfe_per_call")

    def __call__(self, velocity_fn: Callable, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
        """``fn``'s ``(x0, nfe)``, or ``(x0, 1)`` when it returns ``x0`` alone."""
        out = self.fn(velocity_fn, x, t)
        x0, nfe = out if isinstance(out, tuple) else (out, 1)
        return x0, jnp.asarray(nfe, jnp.int32)


def as_predictor(value, name: str = "x0_predictor") -> Predictor:
    """``value`` as a :class:`Predictor`: a predictor as it is, a callable in :class:`Custom`;
    ``TypeError`` naming ``name`` otherwise."""
    if isinstance(value, Predictor):
        return value
    if callable(value):
        return Custom(value)
    raise TypeError(
        f"`{name}` must be Tweedie(), FlowMap(...) or a callable (velocity_fn, x, t) -> x0, "
        f"got {value!r}."
    )
