"""Argument checks shared by the modules: the value of an input when it is known at trace time.

Bad input is reported when a function is built or called with concrete values, not as a NaN
later. Inside ``jit`` an argument may be traced; its value then cannot be checked, and every
check in the library skips it through :func:`concrete_value`.
"""

import numbers

import jax
import numpy as np

__all__ = ["concrete_value", "check_int"]


def concrete_value(value, dtype=None) -> np.ndarray | None:
    """``np.asarray(value, dtype)``, or ``None`` when ``value`` is traced (no value to check)."""
    if isinstance(value, jax.core.Tracer):  # cheap: no error message built over the jaxpr
        return None
    try:
        return np.asarray(value, dtype)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as a Python int ``>= minimum``; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return int(value)
