"""The flow convention (t = 1 noise, t = 0 data) and the samplers built on it.

- :mod:`~psijax.flows.interpolant`: interpolant, Tweedie / noise / score from the velocity,
  time grids (uniform, FLUX shift), the forward re-noising kernel.
- :mod:`~psijax.flows.sde`: the stochastic step with the flow's marginals, its Gaussian
  transition and log-density, diffusion coefficients, the stochastic sampler.
- :mod:`~psijax.flows.ode`: Euler sampling, adaptive ODE solves and the flow map (diffrax),
  with exact NFE counts.

Every function acts on a single sample and a user ``velocity_fn(x, t)``; vectorize with
``jax.vmap``.
"""

from psijax.flows import interpolant, ode, sde
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
from psijax.flows.ode import euler_sample, flow_map, flow_map_predictor, solve
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
    "euler_sample",
    "solve",
    "flow_map",
    "flow_map_predictor",
]
