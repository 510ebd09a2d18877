"""Models with exact answers and score models. Models know nothing of sampling."""

from psijax.models import conjugate, flux, gmm, linear_gaussian, presets, reflow
from psijax.models.gmm import GaussianMixture

__all__ = ["GaussianMixture", "conjugate", "flux", "gmm", "linear_gaussian", "presets", "reflow"]
