"""Deprecated spellings: one warning, said the same way everywhere.

The old spellings listed in the README's "Deprecated names" table keep working for one release
(0.2) and warn once per call site with a ``DeprecationWarning`` naming the replacement,
attributed to the first frame outside psijax (and outside JAX's tracing machinery), so that
Python's default filters show it to the user whose code needs the change.
"""

import sys
import warnings

__all__ = ["deprecated"]

_INTERNAL = ("psijax", "jax", "jaxlib", "blackjax", "equinox", "contextlib", "functools")


def deprecated(old: str, new: str) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (removed after 0.2)."""
    warnings.warn(
        f"psijax: {old} is deprecated and will be removed after 0.2; use {new}.",
        DeprecationWarning,
        stacklevel=_user_stacklevel(),
    )


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside psijax and JAX (2 = our caller)."""
    frame, level = sys._getframe(2), 2
    while frame is not None:
        package = frame.f_globals.get("__name__", "").split(".")[0]
        if package not in _INTERNAL:
            return level
        frame, level = frame.f_back, level + 1
    return 2
