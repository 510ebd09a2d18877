"""The rectified-flow convention: interpolant, Tweedie, score, time grids, re-noising.

Time runs over ``t ∈ [0, 1]`` with **t = 1 noise and t = 0 data** (FLUX). Data ``x0``, noise
``x1 ~ N(0, I)`` and the linear interpolant

.. math::

    x_t = (1 − t)\\, x_0 + t\\, x_1 .

A model predicts the velocity ``v(x, t) ≈ E[x_1 − x_0 | x_t = x]``, from which every other
prediction follows in closed form:

.. math::

    \\hat x_0 = x − t v, \\qquad \\hat ε = x + (1 − t) v, \\qquad
    s(x, t) = ∇ \\log p_t(x) = −\\hat ε / t .

Every function acts on a **single** sample (an array of any shape, or a pytree of arrays with a
scalar time) and vectorizes with ``jax.vmap``. Arithmetic is done in at least float32 and each
result is cast back to the dtype of the sample's leaves. Time grids are float32 arrays that
decrease from 1 to 0 with exact endpoints.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, ArrayLikeTree, ArrayTree, PRNGKey

from psijax._checks import check_int, concrete_value
from psijax._tree import accumulation_dtype, tree_normal

__all__ = [
    "interpolate",
    "tweedie_from_velocity",
    "noise_from_velocity",
    "score_from_velocity",
    "velocity_from_tweedie",
    "uniform_grid",
    "flux_mu",
    "flux_shift",
    "flux_grid",
    "renoise_coefficients",
    "renoise",
]


# ----------------------------------------------------------------------------------------------
# Interpolant and the predictions derived from the velocity
# ----------------------------------------------------------------------------------------------
def _combine(fn, t: ArrayLike, *trees: ArrayLikeTree) -> ArrayTree:
    """``fn(t, *leaves)`` leaf by leaf, in the accumulation dtype, cast back to the first tree."""

    def leaf(first, *others):
        dtype = accumulation_dtype(first, t, *others)
        out = fn(jnp.asarray(t, dtype), *(jnp.asarray(a, dtype) for a in (first, *others)))
        return out.astype(jnp.result_type(first))

    return jax.tree.map(leaf, *trees)


def interpolate(x0: ArrayLikeTree, x1: ArrayLikeTree, t: ArrayLike) -> ArrayTree:
    """The linear interpolant ``x_t = (1 − t)·x0 + t·x1``."""
    return _combine(lambda t, a, b: (1.0 - t) * a + t * b, t, x0, x1)


def tweedie_from_velocity(x: ArrayLikeTree, v: ArrayLikeTree, t: ArrayLike) -> ArrayTree:
    """The x0-prediction (Tweedie's formula) ``x̂0(x, t) = E[x0 | x_t = x] = x − t·v(x, t)``."""
    return _combine(lambda t, x, v: x - t * v, t, x, v)


def noise_from_velocity(x: ArrayLikeTree, v: ArrayLikeTree, t: ArrayLike) -> ArrayTree:
    """The noise prediction ``ε̂(x, t) = E[x1 | x_t = x] = x + (1 − t)·v(x, t)``."""
    return _combine(lambda t, x, v: x + (1.0 - t) * v, t, x, v)


def score_from_velocity(x: ArrayLikeTree, v: ArrayLikeTree, t: ArrayLike) -> ArrayTree:
    """The score ``s(x, t) = ∇ log p_t(x) = −ε̂/t = −(x + (1 − t)·v)/t``.

    Finite for ``t > 0`` only: at ``t = 0`` the marginal is the data distribution and the
    formula divides by zero (it returns ±inf/NaN there). Samplers never need it at ``t = 0``;
    see :mod:`psijax.flows.sde` for the products ``g(t)²·s`` that stay finite.
    """
    return _combine(lambda t, x, v: -(x + (1.0 - t) * v) / t, t, x, v)


def velocity_from_tweedie(x: ArrayLikeTree, x0_hat: ArrayLikeTree, t: ArrayLike) -> ArrayTree:
    """The velocity of an x0-prediction, ``v = (x − x̂0)/t`` (inverse of Tweedie; ``t > 0``)."""
    return _combine(lambda t, x, x0: (x - x0) / t, t, x, x0_hat)


# ----------------------------------------------------------------------------------------------
# Time grids
# ----------------------------------------------------------------------------------------------
def _check_num_steps(num_steps) -> int:
    return check_int(num_steps, "num_steps")


def _uniform_grid_f64(num_steps: int) -> np.ndarray:
    # 1 − i/n: exactly 1 at i = 0 and exactly 0 at i = n.
    return 1.0 - np.arange(num_steps + 1, dtype=np.float64) / num_steps


def uniform_grid(num_steps: int) -> Array:
    """``num_steps + 1`` equally spaced times ``t_i = 1 − i/num_steps`` from 1 down to 0.

    The grid of FLUX-schnell. Returns a float32 array; ``t_0 = 1`` and ``t_T = 0`` exactly.
    """
    num_steps = _check_num_steps(num_steps)
    return jnp.asarray(_uniform_grid_f64(num_steps), jnp.float32)


def flux_mu(
    num_tokens: ArrayLike,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
) -> Array:
    """The FLUX-dev shift parameter ``μ``, linear in the number of image tokens.

    .. math::

        μ(n) = μ_{base} + (n − n_{base}) \\frac{μ_{max} − μ_{base}}{n_{max} − n_{base}}

    through ``(base_seq_len, base_shift) = (256, 0.5)`` and ``(max_seq_len, max_shift) =
    (4096, 1.15)`` (diffusers' ``calculate_shift``); extrapolated linearly outside.
    """
    if not base_seq_len != max_seq_len:
        raise ValueError("`base_seq_len` and `max_seq_len` must differ.")
    n = concrete_value(num_tokens)
    if n is not None and not np.all(n > 0):
        raise ValueError(f"`num_tokens` must be > 0, got {num_tokens!r}.")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    intercept = base_shift - slope * base_seq_len
    return jnp.asarray(num_tokens, jnp.float32) * jnp.float32(slope) + jnp.float32(intercept)


def flux_shift(t: ArrayLike, mu: ArrayLike) -> Array:
    """The FLUX time shift ``shift(t) = e^μ / (e^μ + 1/t − 1)``.

    Evaluated as ``e^μ t / (e^μ t + 1 − t)``, which is the same function for ``t ∈ (0, 1]``
    and has no division by zero: ``shift(0) = 0`` and ``shift(1) = 1`` exactly, with finite
    derivatives. Increasing in ``t``; ``μ > 0`` moves times towards the noise end.
    """
    dtype = accumulation_dtype(t, mu)
    t = jnp.asarray(t, dtype)
    scaled = jnp.exp(jnp.asarray(mu, dtype)) * t
    return scaled / (scaled + (1.0 - t))


def flux_grid(
    num_steps: int,
    num_tokens: int,
    *,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
) -> Array:
    """The shifted grid of FLUX-dev: ``t_i = shift(1 − i/num_steps; μ(num_tokens))``.

    This is diffusers' ``FluxPipeline`` schedule (``FlowMatchEulerDiscreteScheduler`` with
    dynamic, exponential shifting: sigmas ``linspace(1, 1/T, T)`` shifted, then a terminal 0),
    written as one shifted uniform grid since ``shift(0) = 0``. Computed in float64 and returned
    as float32 with ``t_0 = 1`` and ``t_T = 0`` exactly.
    """
    num_steps = _check_num_steps(num_steps)
    num_tokens = check_int(num_tokens, "num_tokens")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    mu = base_shift + slope * (num_tokens - base_seq_len)
    t = _uniform_grid_f64(num_steps)
    scaled = math.exp(mu) * t
    return jnp.asarray(scaled / (scaled + (1.0 - t)), jnp.float32)


# ----------------------------------------------------------------------------------------------
# Forward (re-noising) kernel
# ----------------------------------------------------------------------------------------------
def _check_renoise_times(t_from, t_to) -> None:
    a, b = concrete_value(t_from, np.float64), concrete_value(t_to, np.float64)
    if a is None or b is None:
        return
    if not (np.all(a >= 0.0) and np.all(a < 1.0)):
        raise ValueError(f"`t_from` must lie in [0, 1), got {t_from!r}.")
    if not (np.all(b > a) and np.all(b <= 1.0)):
        raise ValueError(f"`t_to` must lie in (t_from, 1], got t_to={t_to!r}, t_from={t_from!r}.")


def renoise_coefficients(t_from: ArrayLike, t_to: ArrayLike) -> tuple[Array, Array]:
    """Coefficients ``(a, b)`` of the forward kernel ``x_t = a·x_{t'} + b·z`` from t' to t > t'.

    .. math::

        a = \\frac{1 − t}{1 − t'}, \\qquad b^2 = t^2 − a^2 t'^2
          = \\frac{(t − t')(t + a t')}{1 − t'}

    The second form of ``b²`` has no cancellation. If ``x_{t'} = (1 − t')x_0 + t' x_1`` then
    ``a x_{t'} + b z`` has the marginal of ``x_t`` given ``x_0``, for any data distribution.
    Needs ``0 ≤ t' < t ≤ 1`` (checked when the times are concrete).
    """
    _check_renoise_times(t_from, t_to)
    dtype = accumulation_dtype(t_from, t_to)
    s, t = jnp.asarray(t_from, dtype), jnp.asarray(t_to, dtype)
    a = (1.0 - t) / (1.0 - s)
    b = jnp.sqrt(jnp.maximum((t - s) * (t + a * s) / (1.0 - s), 0.0))
    return a, b


def renoise(rng_key: PRNGKey, x: ArrayLikeTree, t_from: ArrayLike, t_to: ArrayLike) -> ArrayTree:
    """Draw ``x_t = a·x_{t'} + b·z``, ``z ~ N(0, I)``: re-noise a sample from t' up to t > t'.

    See :func:`renoise_coefficients` for ``a`` and ``b``. Used by FreeDoM's time travel.
    """
    a, b = renoise_coefficients(t_from, t_to)
    z = tree_normal(rng_key, x)
    return _combine(lambda _, x, z: a * x + b * z, a, x, z)
