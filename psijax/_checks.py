"""Argument checks shared by the modules: the value of an input when it is known at trace time.

Bad input is reported when a function is built or called with concrete values, not as a NaN
later. Inside ``jit`` an argument may be traced; its value then cannot be checked, and every
check in the library skips it through :func:`concrete_value`.
"""

import jax
import numpy as np

__all__ = ["concrete_value"]


def concrete_value(value, dtype=None) -> np.ndarray | None:
    """``np.asarray(value, dtype)``, or ``None`` when ``value`` is traced (no value to check)."""
    try:
        return np.asarray(value, dtype)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
