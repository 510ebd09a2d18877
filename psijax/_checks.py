"""Argument checks shared by the modules: one rule for real and integer arguments.

Bad input is reported when a function is built or called with concrete values, not as a NaN
later: a value of the wrong kind (a string, a bool, a complex or object array where a number is
expected) is a ``TypeError``, a number outside its allowed range (or NaN/inf) a ``ValueError``,
and both name the argument and say what is allowed. Inside ``jit`` an argument may be traced;
its value then cannot be checked, and every check here returns ``None`` for it (the same rule
for every argument, through :func:`concrete_value`).
"""

import numbers

import jax
import numpy as np

__all__ = ["concrete_value", "check_int", "check_real", "check_choice"]


def concrete_value(value, dtype=None) -> np.ndarray | None:
    """``np.asarray(value, dtype)``, or ``None`` when ``value`` is traced (no value to check)."""
    if isinstance(value, jax.core.Tracer):  # cheap: no error message built over the jaxpr
        return None
    try:
        return np.asarray(value, dtype)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as a Python int in ``[minimum, maximum]``.

    Integers are structural (shapes, counts), so they must be concrete: a traced value, a bool,
    a float (even ``2.0``) or a string is a ``TypeError``; an int out of range a ``ValueError``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        array = None if isinstance(value, (bool, np.bool_)) else concrete_value(value)
        if array is None and isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"`{name}` must be a static (concrete) int{_int_range(minimum, maximum)}: it "
                "fixes an array shape, so it cannot be traced; pass it as a Python int (e.g. "
                "mark it static with jax.jit(..., static_argnames=...) or close over it)."
            )
        if array is None or array.shape != () or not np.issubdtype(array.dtype, np.integer):
            allowed = _int_range(minimum, maximum)
            raise TypeError(f"`{name}` must be an int{allowed}, got {value!r}.")
        value = array.item()
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"`{name}` must be an int{_int_range(minimum, maximum)}, got {value!r}.")
    return int(value)


def check_real(
    value,
    name: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    scalar: bool = True,
    concrete: bool = False,
) -> float | np.ndarray | None:
    """A finite real number (``scalar``) or array of them, within the given bounds.

    ``gt``/``ge`` bound it from below (strictly / not), ``lt``/``le`` from above. Returns the
    value as a float (an array when ``scalar=False``), or ``None`` when it is traced and cannot
    be checked (with ``concrete=True`` a traced value is a ``ValueError`` instead: the value
    is needed at build time). A wrong kind of value is a ``TypeError``; a non-finite value, one
    out of range or (``scalar``) one that is not a scalar, a ``ValueError``; both name the
    argument and the allowed range, e.g. "`step_size` must be a finite real number in
    (0.0, 4.0), got 4.0."
    """
    allowed = (
        "a finite real number" + ("" if scalar else " (or array of them)") + _range(gt, ge, lt, le)
    )
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"`{name}` must be {allowed}, got {value!r}.")
    try:
        array = concrete_value(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be {allowed}, got {value!r}.") from None
    if array is None:
        if concrete:
            raise ValueError(f"`{name}` must be concrete (not traced): {allowed}.")
        return None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"`{name}` must be {allowed}, got {value!r}.")
    if scalar and array.shape != ():
        raise ValueError(f"`{name}` must be {allowed} (a scalar), got shape {array.shape}.")
    a = array.astype(np.float64)
    ok = np.isfinite(a)
    if gt is not None:
        ok &= a > gt
    if ge is not None:
        ok &= a >= ge
    if lt is not None:
        ok &= a < lt
    if le is not None:
        ok &= a <= le
    if not np.all(ok):
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")
    return float(a) if scalar else a


def check_choice(value, name: str, choices) -> str:
    """``value`` when it is one of the strings ``choices``; ``TypeError`` for a non-string and
    ``ValueError`` for another string, both listing the choices."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {choices}, got {value!r}.")
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
    return value


def _int_range(minimum: int, maximum: int | None) -> str:
    return f" >= {minimum}" if maximum is None else f" in [{minimum}, {maximum}]"


def _range(gt, ge, lt, le) -> str:
    low = (f"({gt}" if gt is not None else f"[{ge}") if (gt, ge) != (None, None) else None
    high = (f"{lt})" if lt is not None else f"{le}]") if (lt, le) != (None, None) else None
    if low and high:
        return f" in {low}, {high}"
    if low:
        return f" > {gt}" if gt is not None else f" >= {ge}"
    if high:
        return f" < {lt}" if lt is not None else f" <= {le}"
    return ""
