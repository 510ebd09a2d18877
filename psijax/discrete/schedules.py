r"""Masking schedules ``α(t)`` and time grids of masked diffusion (docs/algorithms.md §10.1).

Time runs as for the flows: ``t = 1`` is noise (every position masked), ``t = 0`` is data. A
schedule ``α(t)`` is the probability that a position is still unmasked at time ``t``:
decreasing, ``α(0) = 1`` and ``α(1) ≈ 0``.

=================  ========================================  ================================
name               ``α(t)``                                  remark
=================  ========================================  ================================
``linear``         ``1 − t``                                 the default
``cosine``         ``1 − cos(π(1 − t)/2)``                   unmasks slowly at first
``log_linear``     ``1 − (1 − ε) t``                         MDLM's, ``ε = 1e-3``: ``α(1) = ε``
=================  ========================================  ================================

A sampler uses only the values ``α_i = α(t_i)`` on its grid ``1 = t_0 > … > t_T = 0``
(:func:`alphas`), so any callable with these properties is a schedule too.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike

from psijax._checks import check_int, check_real, concrete_value

__all__ = ["linear", "cosine", "log_linear", "SCHEDULES", "get_schedule", "time_grid", "alphas"]


def linear(t: ArrayLike) -> Array:
    """``α(t) = 1 − t``."""
    return 1.0 - jnp.asarray(t)


def cosine(t: ArrayLike) -> Array:
    """``α(t) = 1 − cos(π(1 − t)/2)``."""
    return 1.0 - jnp.cos(0.5 * jnp.pi * (1.0 - jnp.asarray(t)))


def log_linear(eps: float = 1e-3) -> Callable[[ArrayLike], Array]:
    """MDLM's schedule ``α(t) = 1 − (1 − ε)t`` (its ``σ(t) = −log(1 − (1 − ε)t)`` is linear in
    ``t`` on the log scale of the masking rate); ``ε ∈ [0, 1)``."""
    eps = check_real(eps, "eps", ge=0.0, lt=1.0)

    def schedule(t: ArrayLike) -> Array:
        return 1.0 - (1.0 - eps) * jnp.asarray(t)

    schedule.__name__ = f"log_linear(eps={eps:g})"
    return schedule


SCHEDULES = {"linear": linear, "cosine": cosine, "log_linear": log_linear()}


def get_schedule(schedule) -> Callable[[ArrayLike], Array]:
    """A schedule by name (``SCHEDULES``) or the callable itself; ``ValueError`` otherwise."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(
                f"`schedule` must be one of {tuple(SCHEDULES)} or a callable, got {schedule!r}."
            )
        return SCHEDULES[schedule]
    if not callable(schedule):
        raise TypeError(
            f"`schedule` must be one of {tuple(SCHEDULES)} or a callable α(t), got {schedule!r}."
        )
    return schedule


def time_grid(num_steps: int) -> np.ndarray:
    """The uniform grid ``1 = t_0 > t_1 > … > t_T = 0`` of ``T = num_steps`` steps (float64)."""
    num_steps = check_int(num_steps, "num_steps")
    return np.linspace(1.0, 0.0, num_steps + 1)


def alphas(schedule, grid: ArrayLike) -> np.ndarray:
    r"""``α_i = α(t_i)`` on a concrete grid, checked.

    Parameters
    ----------
    schedule
        A name of ``SCHEDULES`` or a callable ``α(t)``.
    grid
        Concrete times ``1 = t_0 > … > t_T = 0`` (strictly decreasing, ``T ≥ 1``).

    Returns
    -------
    np.ndarray
        ``(T + 1,)`` float64 values, non-decreasing along the grid, in ``[0, 1]``, with
        ``α_T = 1`` (so the last step fills every mask).

    Raises
    ------
    ValueError
        If the grid is not strictly decreasing from 1 to 0, or the schedule is not a
        decreasing function of ``t`` into ``[0, 1]`` with ``α(0) = 1``.

    """
    schedule = get_schedule(schedule)
    times = concrete_value(grid, np.float64)
    if times is None:
        raise ValueError("`grid` must be concrete (not traced).")
    if times.ndim != 1 or times.shape[0] < 2:
        raise ValueError(
            f"`grid` must be a 1-D array of T + 1 >= 2 times, got shape {times.shape}."
        )
    if not (
        np.all(np.isfinite(times))
        and times[0] == 1.0
        and times[-1] == 0.0
        and np.all(np.diff(times) < 0)
    ):
        raise ValueError("`grid` must decrease strictly from t_0 = 1 to t_T = 0.")
    with jax.ensure_compile_time_eval():  # concrete even when called inside jit
        values = concrete_value(schedule(jnp.asarray(times)), np.float64)
    values = None if values is None else np.array(values)
    if values is None or values.shape != times.shape:
        raise ValueError("`schedule` must map an array of times to an array of the same shape.")
    if not np.all(np.isfinite(values)) or np.any(values < 0.0) or np.any(values > 1.0):
        raise ValueError(f"`schedule` must take values in [0, 1], got {values}.")
    if np.any(np.diff(values) < 0.0):
        raise ValueError(
            "`schedule` must be decreasing in t (α rises along the grid from t = 1 to t = 0), "
            f"got α on the grid {values}."
        )
    if not np.isclose(values[-1], 1.0, rtol=0.0, atol=1e-6):
        raise ValueError(
            f"`schedule` must have α(0) = 1 (no mask left at t = 0), got {values[-1]}."
        )
    values[-1] = 1.0
    return values
