r"""The reward-alignment problem: a flow model, a reward, a strength and an x0-predictor.

The target (docs/algorithms.md §3) is

.. math::

    p^*_0(x_0) ∝ p_0(x_0)\, e^{r(x_0)/α}, \qquad
    γ_t(x) ∝ p_t(x)\, e^{λ_t\, r(\hat x_0(x, t))/α},

with ``x̂0(x, t)`` an x0-predictor (:mod:`psijax.align.predictors`): Tweedie ``x − t·v(x, t)``
(one model evaluation), the flow map ``Φ_t(x)`` (an ODE solve, exact for an exact model; every
velocity evaluation of the solve is counted as an NFE) or a user callable. Every method acts on
a **single** sample of shape ``event_shape``; the samplers vmap over particles.
"""

import dataclasses
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike

from psijax._checks import check_int, check_real
from psijax._deprecation import deprecated
from psijax.align.predictors import FlowMap, Predictor, Tweedie, as_predictor
from psijax.flows.sde import check_diffusion, reference_diffusion

__all__ = ["RewardProblem", "check_problem", "with_particle_chunk", "sampler_transition"]

_PREDICTOR_NAMES = {"tweedie": Tweedie, "flow_map": FlowMap}


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
        A :class:`~psijax.align.predictors.Predictor`: :class:`~psijax.align.predictors.Tweedie`
        (default, one model evaluation), :class:`~psijax.align.predictors.FlowMap` (an adaptive
        ODE solve from ``t`` to 0) or a callable ``(velocity_fn, x, t) -> x0`` or
        ``-> (x0, nfe)`` (wrapped in :class:`~psijax.align.predictors.Custom`; one evaluation
        is assumed when it returns ``x0`` alone). The strings ``"tweedie"`` and ``"flow_map"``
        are deprecated aliases of ``Tweedie()`` and ``FlowMap()``.
    flow_map_options
        Deprecated: keyword arguments of ``FlowMap`` for ``x0_predictor="flow_map"`` (also when
        an initial stage switches to it by that name); pass ``FlowMap(rtol=…)`` instead.
    particle_chunk
        Evaluate the model and the reward on at most this many particles at a time (per
        device), in a ``lax.map`` over chunks (:func:`psijax.smc.sharding.map_particles`), so
        the memory of a pass (activations, gradients) is bounded by the chunk, not by the
        particle count; the results are the same as unchunked. ``None`` (default): all at once.
        Every sampler and initial stage honours it except :class:`~psijax.align.Tempered`, which
        refuses it (BlackJAX's tempered SMC maps over all particles itself).
    transition
        The model's kernel between denoising steps, used by every sampler on this problem:
        ``None`` (default: the sampler's ``diffusion=``, whose default is
        :func:`~psijax.flows.sde.reference_diffusion`), a
        :class:`~psijax.flows.sde.Diffusion`, or
        :class:`~psijax.flows.distilled.Renoising` for a distilled (few-step) model such as
        FLUX-schnell or a reflowed model, whose stochastic sampler would not keep the model's
        distribution (psijax/flows/distilled.py). Which kernel is exact depends on how the
        model was trained, so it is part of the problem; a sampler then refuses a different
        ``diffusion=``.

    Raises
    ------
    TypeError, ValueError
        Naming the invalid argument.

    """

    velocity_fn: Callable
    reward_fn: Callable
    event_shape: tuple
    alpha: float
    x0_predictor: Predictor | Callable = Tweedie()
    flow_map_options: Mapping | None = None
    particle_chunk: int | None = None
    transition: object = None

    def __post_init__(self):
        if not callable(self.velocity_fn):
            raise TypeError("`velocity_fn` must be a callable (x, t) -> v.")
        if not callable(self.reward_fn):
            raise TypeError("`reward_fn` must be a callable x0 -> r.")
        shape = self.event_shape
        if not isinstance(shape, tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in shape
        ):
            raise TypeError(f"`event_shape` must be a tuple of positive ints, got {shape!r}.")
        if not all(s > 0 for s in shape):
            raise ValueError(f"`event_shape` must be a tuple of positive ints, got {shape!r}.")
        if self.particle_chunk is not None:
            check_int(self.particle_chunk, "particle_chunk")
        if self.transition is not None:
            check_diffusion(self.transition, "transition")
        alpha = check_real(self.alpha, "alpha", gt=0.0)
        if alpha is None:
            raise ValueError("`alpha` must be concrete (not traced).")
        object.__setattr__(self, "alpha", alpha)
        options = self.flow_map_options
        if options is not None:
            deprecated("flow_map_options=", "x0_predictor=FlowMap(**options)")
            if not isinstance(options, Mapping):
                raise TypeError(f"`flow_map_options` must be a dict or None, got {options!r}.")
            allowed = [f.name for f in dataclasses.fields(FlowMap)]
            unknown = sorted(set(options) - set(allowed))
            if unknown:
                raise ValueError(f"`flow_map_options` accepts {allowed}, got {unknown}.")
            options = dict(options)
            object.__setattr__(self, "flow_map_options", options)
        predictor = self.x0_predictor
        if isinstance(predictor, str):
            if predictor not in _PREDICTOR_NAMES:
                raise ValueError(
                    f"`x0_predictor` must be Tweedie(), FlowMap(...) or a callable, got "
                    f"{predictor!r}."
                )
            deprecated(f"x0_predictor={predictor!r}", f"{_PREDICTOR_NAMES[predictor].__name__}()")
            # The deprecated options apply to the flow map named by string (also when a stage
            # switches a Tweedie problem to it by name).
            if predictor == "flow_map":  # the options now live in the FlowMap: drop the copy
                predictor = FlowMap(**(options or {}))
                object.__setattr__(self, "flow_map_options", None)
            else:
                predictor = Tweedie()
        elif isinstance(predictor, FlowMap) and options:
            raise ValueError("Give the flow map's options in FlowMap(...), not flow_map_options.")
        predictor = as_predictor(predictor)
        object.__setattr__(self, "x0_predictor", predictor)
        self._check_shapes()

    def _check_shapes(self) -> None:
        """The user's functions, traced once with :func:`jax.eval_shape` on one abstract float32
        sample (nothing is computed): ``v(x, t)`` must have ``event_shape``, ``r(x0)`` one value,
        a custom predictor's ``x̂0`` ``event_shape``. A ``ValueError`` naming the function and
        the shapes otherwise, instead of a JAX error deep inside a sampler."""
        shape = self.event_shape
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        t = jax.ShapeDtypeStruct((), jnp.float32)
        on_x_t = f"x of shape `event_shape` = {shape} and a scalar t"
        v = _abstract(self.velocity_fn, "velocity_fn", on_x_t, x, t)
        _expect(v, shape, "velocity_fn", "v(x, t)", on_x_t)
        r = _abstract(self.reward_fn, "reward_fn", f"x0 of shape `event_shape` = {shape}", x)
        if not (hasattr(r, "shape") and math.prod(r.shape) == 1):
            raise ValueError(
                f"`reward_fn` must return one scalar per sample (shape ()), got "
                f"{_describe(r)} for x0 of shape `event_shape` = {shape}; the samplers vmap "
                "over particles themselves, so r acts on a single sample."
            )
        if not isinstance(self.x0_predictor, (Tweedie, FlowMap)):
            x0 = _abstract(self.predict_x0, "x0_predictor", on_x_t, x, t)
            _expect(x0, shape, "x0_predictor", "x̂0(x, t)", on_x_t)

    @property
    def is_tweedie(self) -> bool:
        """Deprecated (0.1): ``isinstance(problem.x0_predictor, Tweedie)``."""
        deprecated("RewardProblem.is_tweedie", "isinstance(problem.x0_predictor, Tweedie)")
        return isinstance(self.x0_predictor, Tweedie)

    def predict_x0(self, x: ArrayLike, t: ArrayLike) -> Array:
        r"""``x̂0(x, t)`` on a single sample (see :meth:`predict_x0_and_nfe` for its cost)."""
        return self.predict_x0_and_nfe(x, t)[0]

    def predict_x0_and_nfe(self, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
        r"""``(x̂0(x, t), nfe)`` on a single sample; ``nfe`` is an int32 count of model calls."""
        return self.x0_predictor(self.velocity_fn, x, t)

    def potential_and_grad(self, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array, Array, Array]:
        r"""Reward of the prediction, its gradient w.r.t. ``x``, the velocity and the NFE.

        .. math::

            r_t(x) = r(\hat x_0(x, t)), \qquad ∇_x r_t(x), \qquad v(x, t)

        The gradient is taken through the predictor and the model. For Tweedie this is **one**
        model evaluation (with its backward pass); for the flow map or a callable predictor it
        is the predictor's own evaluations plus one velocity call
        (:meth:`psijax.align.predictors.Predictor.reward_and_grad`).

        Non-finite values are passed through unchanged (NaN/inf reward or gradient): the SMC
        turns such a particle into a zero-weight particle.

        Returns
        -------
        ``(reward, grad, velocity, nfe)``
            A float32 (or wider) scalar, two arrays shaped like ``x`` (the gradient in the
            accumulation dtype, the velocity in the model's dtype) and the int32 number of model
            evaluations made (each with its backward pass).

        """
        return self.x0_predictor.reward_and_grad(self.velocity_fn, self.reward, jnp.asarray(x), t)

    def reward(self, x0):
        """``r(x0)`` on one sample as a float32 (or wider) scalar."""
        r = jnp.asarray(self.reward_fn(x0))
        return r.astype(jnp.result_type(jnp.float32, r.dtype)).reshape(())


def _abstract(fn, name: str, called_on: str, *args):
    """``jax.eval_shape(fn, *args)``; a ``ValueError`` naming ``name`` if tracing fails."""
    try:
        return jax.eval_shape(fn, *args)
    except Exception as err:  # the user's function failed on the documented input
        raise ValueError(
            f"`{name}` failed when traced on {called_on} (float32): {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err


def _describe(out) -> str:
    if hasattr(out, "shape"):
        return f"shape {tuple(out.shape)}"
    return f"{type(out).__name__} {jax.tree.map(lambda a: getattr(a, 'shape', a), out)}"


def _expect(out, shape: tuple, name: str, what: str, called_on: str) -> None:
    if not (hasattr(out, "shape") and tuple(out.shape) == shape):
        raise ValueError(
            f"`{name}` must return {what} of shape {shape} on {called_on}, got {_describe(out)}."
        )


def check_problem(problem) -> RewardProblem:
    """``problem`` when it is a :class:`RewardProblem`, else a ``TypeError`` saying so."""
    if not isinstance(problem, RewardProblem):
        raise TypeError(f"`problem` must be a RewardProblem, got {type(problem).__name__}.")
    return problem


def sampler_transition(problem: RewardProblem, diffusion=None):
    """The kernel a sampler's steps use: the problem's ``transition`` when it has one (then a
    different ``diffusion`` is a ``ValueError``), else ``diffusion``, by default
    :func:`~psijax.flows.sde.reference_diffusion`."""
    if problem.transition is not None:
        if diffusion is not None and diffusion != problem.transition:
            raise ValueError(
                f"The problem fixes its transition ({problem.transition!r}); do not pass a "
                f"different `diffusion` ({diffusion!r}) to the sampler."
            )
        return problem.transition
    return reference_diffusion() if diffusion is None else check_diffusion(diffusion)


def with_particle_chunk(problem: RewardProblem, particle_chunk: int | None) -> RewardProblem:
    """``problem`` evaluated ``particle_chunk`` particles at a time (a sampler's
    ``particle_chunk=`` argument); ``problem`` itself when ``particle_chunk`` is ``None``."""
    if particle_chunk is None or particle_chunk == problem.particle_chunk:
        return problem
    return dataclasses.replace(problem, particle_chunk=particle_chunk)
