"""Deprecated spellings: one warning, said the same way everywhere.

The old spellings listed in the README's "Deprecated names" table keep working for one release
(0.2) and warn once per call site with a ``DeprecationWarning`` naming the replacement.
"""

import warnings

__all__ = ["deprecated"]


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (removed after 0.2)."""
    warnings.warn(
        f"psijax: {old} is deprecated and will be removed after 0.2; use {new}.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
