"""Models with exact answers and score models. Models know nothing of sampling.

The submodules are imported on first use (``psijax.models.flux`` loads Flax and the FLUX
port only when asked for): ``conjugate``, ``digits``, ``digits_classifiers``, ``flux``, ``gmm``
(:class:`GaussianMixture`), ``linear_gaussian``, ``masked_toys``, ``module_io``, ``presets``,
``reflow``.
"""

import importlib

_SUBMODULES = (
    "conjugate",
    "digits",
    "digits_classifiers",
    "flux",
    "gmm",
    "linear_gaussian",
    "masked_toys",
    "module_io",
    "presets",
    "reflow",
)

__all__ = ["GaussianMixture", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"psijax.models.{name}")
    if name == "GaussianMixture":
        return importlib.import_module("psijax.models.gmm").GaussianMixture
    raise AttributeError(f"module 'psijax.models' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
