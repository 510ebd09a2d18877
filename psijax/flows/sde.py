"""Stochastic sampler with the flow's marginals, and the log-density of its transition.

For any diffusion coefficient ``g(t) ≥ 0`` and a step from ``t`` to ``t' < t`` (``Δ = t − t'``):

.. math::

    μ(x) = x + Δ\\,[−v(x, t) + \\tfrac12 g(t)^2 s(x, t)], \\qquad σ = g(t)\\sqrt{Δ}

    x' = μ(x) + σ z, \\quad z \\sim N(0, I), \\qquad
    \\log p(x' | x) = \\log N(x'; μ(x), σ^2 I)

with the score ``s = −(x + (1 − t) v)/t`` of :mod:`psijax.flows.interpolant`. This is
Euler–Maruyama for the reverse-time SDE whose marginals are the flow's: the Fokker–Planck terms
of the added noise and of the score correction cancel. ``g ≡ 0`` is the Euler ODE step.

The product ``½ g² s`` is computed as ``−½ (g²/t)(x + (1 − t) v)`` with ``g²/t`` supplied by
the :class:`Diffusion` in closed form, so it is finite for every ``t > 0`` and stays bounded as
``t → 0`` when ``g(t)²/t`` does (true of every diffusion built here). The current time of a
step is always ``> 0``, so the last step to ``t' = 0`` is finite.

Every function acts on a single sample (array or pytree) and vectorizes with ``jax.vmap``.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, ArrayLikeTree, ArrayTree, PRNGKey

from psijax._checks import check_int, check_real, concrete_value
from psijax._tree import accumulation_dtype, tree_normal, tree_sq_norm
from psijax.flows.interpolant import _uniform_grid_f64

__all__ = [
    "Diffusion",
    "Transition",
    "linear_diffusion",
    "reference_diffusion",
    "ode_diffusion",
    "custom_diffusion",
    "transition_from_velocity",
    "transition",
    "step",
    "transition_logpdf",
    "sample",
    "check_grid",
    "check_diffusion",
    "denoising_grid",
]


class Diffusion(NamedTuple):
    """A diffusion coefficient ``g(t)`` of the stochastic sampler.

    coefficient
        ``g(t) ≥ 0``, a function of the scalar time.
    squared_over_time
        ``g(t)²/t`` in a form that is finite for every ``t > 0`` (and at ``t = 0`` where the
        limit exists); the sampler uses it for the score term ``½ g² s``.
    deterministic
        True when ``g ≡ 0`` is known statically (the ODE): the transition has no density.

    """

    coefficient: Callable[[Array], Array]
    squared_over_time: Callable[[Array], Array]
    deterministic: bool = False

    def transition(
        self, x: ArrayLikeTree, v: ArrayLikeTree, t: ArrayLike, t_next: ArrayLike
    ) -> "Transition":
        """The step's transition given ``v = v(x, t)`` (:func:`transition_from_velocity`)."""
        return _sde_transition(x, v, t, t_next, self)


class Transition(NamedTuple):
    """The Gaussian transition ``N(mean, std² I)`` of one step.

    mean
        ``μ(x)``, same structure as the sample, in the accumulation dtype (at least float32).
    std
        The scalar ``σ = g(t)·√Δ`` shared by every element.

    """

    mean: ArrayTree
    std: Array


# ----------------------------------------------------------------------------------------------
# Diffusion coefficients
# ----------------------------------------------------------------------------------------------
def linear_diffusion(eta: float) -> Diffusion:
    """``g(t) = η·t``, so ``g(t)²/t = η²·t`` (bounded, → 0 at the data end).

    ``η = 0`` is the ODE. The noise added per step is largest at the noise end.
    """
    value = check_real(eta, "eta", ge=0.0)

    def coefficient(t):
        return eta * t

    def squared_over_time(t):
        return eta * eta * t

    return Diffusion(coefficient, squared_over_time, value is not None and bool(value == 0))


def reference_diffusion() -> Diffusion:
    """``g(t) = t·(2 − t)``: 1 at the noise end, vanishing linearly at the data end.

    This is the coefficient of the Ψ-Sampler reference code, which applies it in the time
    variable of a variance-preserving reparametrization of the flow; here it is applied directly
    in the flow time ``t``. ``g(t)²/t = t·(2 − t)²`` is bounded on ``[0, 1]`` (it vanishes at
    ``t = 0``), so the score term stays finite and the last step to ``t = 0`` is well defined.
    """

    def coefficient(t):
        return t * (2.0 - t)

    def squared_over_time(t):
        return t * (2.0 - t) ** 2

    return Diffusion(coefficient, squared_over_time)


def ode_diffusion() -> Diffusion:
    """``g ≡ 0``: the step is the Euler ODE step ``x' = x + (t' − t)·v(x, t)``."""

    def zero(t):
        return jnp.zeros_like(t)

    return Diffusion(zero, zero, True)


def custom_diffusion(
    coefficient_fn: Callable[[Array], Array],
    squared_over_time_fn: Callable[[Array], Array] | None = None,
) -> Diffusion:
    """A user diffusion ``g(t) = coefficient_fn(t)``.

    ``squared_over_time_fn(t) = g(t)²/t`` should be given in closed form when ``g(t) → 0`` as
    ``t → 0``; by default it is ``g(t)²/t`` evaluated directly, finite for ``t > 0`` (every
    step's current time) but possibly large near the data end unless ``g(t)²/t`` is bounded.
    """
    if not callable(coefficient_fn):
        raise TypeError("`coefficient_fn` must be a callable t -> g(t).")
    if squared_over_time_fn is None:

        def squared_over_time_fn(t):
            return coefficient_fn(t) ** 2 / t

    elif not callable(squared_over_time_fn):
        raise TypeError("`squared_over_time_fn` must be a callable t -> g(t)²/t or None.")
    return Diffusion(coefficient_fn, squared_over_time_fn)


# ----------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------
def check_step_times(t, t_next) -> None:
    a, b = concrete_value(t, np.float64), concrete_value(t_next, np.float64)
    if a is None or b is None:
        return
    if not (np.all(a > 0.0) and np.all(a <= 1.0)):
        raise ValueError(f"`t` must lie in (0, 1], got {t!r}.")
    if not (np.all(b >= 0.0) and np.all(b < a)):
        raise ValueError(f"`t_next` must lie in [0, t), got t_next={t_next!r}, t={t!r}.")


def check_diffusion(diffusion, name: str = "diffusion"):
    """``diffusion`` when it is a kernel of the denoising steps, else a ``TypeError`` naming
    the argument ``name``.

    A kernel is a :class:`Diffusion` or any object with a method
    ``transition(x, v, t, t_next) -> Transition`` (:class:`psijax.flows.distilled.Renoising`,
    or a user's).
    """
    if not callable(getattr(diffusion, "transition", None)):
        raise TypeError(
            f"`{name}` must be a Diffusion (reference_diffusion(), linear_diffusion(eta), "
            "ode_diffusion(), custom_diffusion(...)) or a kernel with a method "
            "transition(x, v, t, t_next) -> Transition such as flows.distilled.Renoising(), "
            f"got {type(diffusion).__name__}."
        )
    return diffusion


def check_grid(grid: ArrayLike) -> None:
    """Raise unless ``grid`` is a 1-D array of at least 2 times, strictly decreasing in [0, 1].

    The shape is always checked; the values only when they are concrete (not traced).
    """
    if jnp.ndim(grid) != 1 or jnp.shape(grid)[0] < 2:
        raise ValueError(
            f"`grid` must be a 1-D array of at least 2 times, got shape {jnp.shape(grid)}."
        )
    values = concrete_value(grid, np.float64)
    if values is None:
        return
    if not (np.all(values >= 0.0) and np.all(values <= 1.0) and np.all(np.diff(values) < 0)):
        raise ValueError("`grid` must be strictly decreasing with values in [0, 1].")


def denoising_grid(num_steps: int | None, grid: ArrayLike | None = None) -> np.ndarray:
    """The concrete float64 times ``1 = t_0 > … > t_T = 0`` a sampler runs on.

    ``grid=None``: the uniform grid of ``num_steps`` steps (:func:`psijax.flows.uniform_grid`);
    otherwise ``grid`` itself, which must be concrete, strictly decreasing from 1 to 0, and
    ``num_steps`` must be ``None`` or its number of steps. ``ValueError`` naming the argument.
    """
    if grid is None:
        if num_steps is None:
            raise ValueError("`num_steps` must be an int >= 1 when no `grid` is given.")
        return _uniform_grid_f64(check_int(num_steps, "num_steps"))
    try:
        times = concrete_value(grid, np.float64)
    except (TypeError, ValueError):
        raise ValueError("`grid` must be a 1-D array of times.") from None
    if times is None:
        raise ValueError("`grid` must be concrete (not traced).")
    check_grid(times)
    if times[0] != 1.0 or times[-1] != 0.0:
        raise ValueError(f"`grid` must run from 1 to 0, got {times[0]} ... {times[-1]}.")
    if num_steps is not None and check_int(num_steps, "num_steps") != times.shape[0] - 1:
        raise ValueError(
            f"`num_steps`={num_steps} does not match the {times.shape[0] - 1} steps of `grid`; "
            "pass num_steps=None (or the grid's number of steps)."
        )
    return times


def transition_from_velocity(
    x: ArrayLikeTree, v: ArrayLikeTree, t: ArrayLike, t_next: ArrayLike, diffusion
) -> Transition:
    """The transition ``N(μ, σ² I)`` of one step, given the velocity ``v = v(x, t)``.

    For a :class:`Diffusion` (the stochastic sampler of this module):

    .. math::

        μ = x + Δ\\,[−v − \\tfrac12 \\tfrac{g(t)^2}{t}(x + (1 − t) v)], \\qquad
        σ = g(t)\\sqrt{Δ}, \\qquad Δ = t − t' > 0

    which is ``x + Δ[−v + ½ g² s]`` with ``s = −(x + (1 − t)v)/t``, written with ``g²/t`` so
    that it is finite for every ``t > 0`` and bounded as ``t → 0`` for the diffusions here.
    Any other kernel accepted by :func:`check_diffusion` (such as
    :class:`psijax.flows.distilled.Renoising`) gives its own ``transition(x, v, t, t_next)``.
    Requires ``0 ≤ t' < t ≤ 1`` (checked when concrete).
    """
    return check_diffusion(diffusion).transition(x, v, t, t_next)


def _sde_transition(
    x: ArrayLikeTree, v: ArrayLikeTree, t: ArrayLike, t_next: ArrayLike, diffusion: Diffusion
) -> Transition:
    """:func:`transition_from_velocity` for a :class:`Diffusion`."""
    check_step_times(t, t_next)
    dtype = accumulation_dtype(t, t_next, *jax.tree.leaves(x), *jax.tree.leaves(v))
    t, t_next = jnp.asarray(t, dtype), jnp.asarray(t_next, dtype)
    delta = t - t_next
    g = jnp.asarray(diffusion.coefficient(t), dtype)
    half_g2_over_t = 0.5 * jnp.asarray(diffusion.squared_over_time(t), dtype)

    def mean_leaf(x, v):
        x, v = jnp.asarray(x, dtype), jnp.asarray(v, dtype)
        return x + delta * (-v - half_g2_over_t * (x + (1.0 - t) * v))

    return Transition(jax.tree.map(mean_leaf, x, v), g * jnp.sqrt(delta))


def transition(
    velocity_fn: Callable,
    x: ArrayLikeTree,
    t: ArrayLike,
    t_next: ArrayLike,
    diffusion: Diffusion,
) -> Transition:
    """:func:`transition_from_velocity` with ``v = velocity_fn(x, t)`` (1 model evaluation)."""
    return transition_from_velocity(x, velocity_fn(x, t), t, t_next, diffusion)


def step(
    rng_key: PRNGKey,
    velocity_fn: Callable,
    x: ArrayLikeTree,
    t: ArrayLike,
    t_next: ArrayLike,
    diffusion: Diffusion,
) -> tuple[ArrayTree, Transition]:
    """One stochastic step ``x' = μ(x) + σ z`` from ``t`` to ``t_next < t``.

    Returns ``(x', transition)``; ``x'`` has the dtypes of ``x``. One model evaluation.
    """
    trans = transition(velocity_fn, x, t, t_next, diffusion)
    z = tree_normal(rng_key, trans.mean)
    x_next = jax.tree.map(
        lambda m, zi, xi: (m + trans.std * zi).astype(jnp.result_type(xi)), trans.mean, z, x
    )
    return x_next, trans


def transition_logpdf(x_next: ArrayLikeTree, transition: Transition) -> Array:
    """``log N(x'; μ, σ² I)`` summed over every element of every leaf, in float32 (or wider).

    .. math::

        \\log p(x' | x) = −\\frac{‖x' − μ‖^2}{2σ^2} − n \\log σ − \\frac n2 \\log 2π

    with ``n`` the total number of elements. A deterministic transition (``σ = 0``, e.g. from
    :func:`ode_diffusion`) has no density: the result is ``+inf`` when ``x' = μ`` exactly and
    ``−inf`` otherwise (a point mass), never NaN for finite inputs.
    """
    diff = jax.tree.map(
        lambda a, m: jnp.asarray(a, accumulation_dtype(a, m)) - m, x_next, transition.mean
    )
    sq = tree_sq_norm(diff)
    n = sum(int(np.prod(jnp.shape(leaf))) for leaf in jax.tree.leaves(diff))
    dtype = accumulation_dtype(sq, transition.std)
    std = jnp.asarray(transition.std, dtype)
    positive = std > 0
    safe_std = jnp.where(positive, std, 1.0)
    logpdf = -0.5 * sq / safe_std**2 - n * (jnp.log(safe_std) + 0.5 * np.log(2.0 * np.pi))
    point_mass = jnp.where(sq == 0, jnp.inf, -jnp.inf).astype(dtype)
    return jnp.where(positive, logpdf, point_mass)


# ----------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------
def sample(
    rng_key: PRNGKey,
    velocity_fn: Callable,
    x1: ArrayLikeTree,
    grid: ArrayLike,
    diffusion: Diffusion,
) -> ArrayTree:
    """Run :func:`step` along ``grid`` (``t_0 = 1 > t_1 > … > t_T``, usually ``t_T = 0``).

    ``lax.scan`` over the ``T = len(grid) − 1`` steps, one model evaluation each (NFE = T).
    Returns the sample at ``t_T``, with the dtypes of ``x1``. With :func:`ode_diffusion` this is
    :func:`psijax.flows.ode.euler_sample`.
    """
    check_grid(grid)
    grid = jnp.asarray(grid, accumulation_dtype(grid))
    keys = jax.random.split(rng_key, grid.shape[0] - 1)

    def body(x, inputs):
        key, t, t_next = inputs
        x_next, _ = step(key, velocity_fn, x, t, t_next, diffusion)
        return x_next, None

    x0, _ = jax.lax.scan(body, x1, (keys, grid[:-1], grid[1:]))
    return x0
