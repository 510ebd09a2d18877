"""Models with exact answers and score models. Models know nothing of sampling."""

from psijax.models import conjugate

__all__ = ["conjugate"]
