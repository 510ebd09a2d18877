"""The flow convention (t = 1 noise, t = 0 data) and the samplers built on it.

- :mod:`~psijax.flows.interpolant`: interpolant, Tweedie / noise / score from the velocity,
  time grids (uniform, FLUX shift), the forward re-noising kernel.
- :mod:`~psijax.flows.sde`: the stochastic step with the flow's marginals, its Gaussian
  transition and log-density, diffusion coefficients, the stochastic sampler.
- :mod:`~psijax.flows.distilled`: the re-noising kernel of a distilled (few-step) model,
  ``N((1 − t')·x̂0(x, t), t'² I)``, exact for an exact flow map.
- :mod:`~psijax.flows.ode`: Euler sampling, adaptive ODE solves and the flow map (diffrax),
  with exact NFE counts; the oracle distilled model of a velocity field.

Every function acts on a single sample and a user ``velocity_fn(x, t)``; vectorize with
``jax.vmap``. :mod:`~psijax.flows.ode` (and diffrax) is imported on first use of one of its
names.
"""

import importlib

from psijax.flows import distilled, interpolant, sde
from psijax.flows.distilled import Renoising
from psijax.flows.interpolant import (
    flux_grid,
    flux_mu,
    flux_shift,
    interpolate,
    noise_from_velocity,
    renoise,
    renoise_coefficients,
    score_from_velocity,
    tweedie_from_velocity,
    uniform_grid,
    velocity_from_tweedie,
)
from psijax.flows.sde import (
    Diffusion,
    Transition,
    custom_diffusion,
    linear_diffusion,
    ode_diffusion,
    reference_diffusion,
    sample,
    step,
    transition,
    transition_from_velocity,
    transition_logpdf,
)

__all__ = [
    "interpolant",
    "ode",
    "sde",
    "distilled",
    "interpolate",
    "tweedie_from_velocity",
    "noise_from_velocity",
    "score_from_velocity",
    "velocity_from_tweedie",
    "uniform_grid",
    "flux_mu",
    "flux_shift",
    "flux_grid",
    "renoise_coefficients",
    "renoise",
    "Diffusion",
    "Transition",
    "linear_diffusion",
    "reference_diffusion",
    "ode_diffusion",
    "custom_diffusion",
    "transition_from_velocity",
    "transition",
    "step",
    "transition_logpdf",
    "sample",
    "Renoising",
    "euler_sample",
    "solve",
    "flow_map",
    "flow_map_predictor",
    "distilled_velocity",
]

_ODE_NAMES = ("euler_sample", "solve", "flow_map", "flow_map_predictor", "distilled_velocity")


def __getattr__(name: str):
    if name == "ode":
        return importlib.import_module("psijax.flows.ode")
    if name in _ODE_NAMES:
        return getattr(importlib.import_module("psijax.flows.ode"), name)
    raise AttributeError(f"module 'psijax.flows' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
