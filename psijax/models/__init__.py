"""Models with exact answers and score models. Models know nothing of sampling."""

from psijax.models import (
    conjugate,
    digits,
    digits_classifiers,
    flux,
    gmm,
    linear_gaussian,
    module_io,
    presets,
    reflow,
)
from psijax.models.gmm import GaussianMixture

__all__ = [
    "GaussianMixture",
    "conjugate",
    "digits",
    "digits_classifiers",
    "flux",
    "gmm",
    "linear_gaussian",
    "module_io",
    "presets",
    "reflow",
]
