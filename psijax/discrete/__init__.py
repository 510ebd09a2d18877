"""The masked-diffusion convention (mask id ``V``, ``t = 1`` all masked); knows no rewards.

- :mod:`~psijax.discrete.schedules`: ``α(t)`` (linear, cosine, MDLM log-linear) and time grids;
- :mod:`~psijax.discrete.masking`: one-hots, forward masking, the denoiser's carry-over;
- :mod:`~psijax.discrete.kernels`: factorised and joint reverse kernels under one interface
  (MDLM, ReMDM, one token per step);
- :mod:`~psijax.discrete.sampling`: the unguided sampler (``lax.scan``; ``vmap`` for batches);
- :mod:`~psijax.discrete.exact`: exact sampler marginals, soft values and tilted targets by
  enumeration (small models).

The alignment samplers built on it are in :mod:`psijax.align.discrete`.
"""

from psijax.discrete import exact, kernels, masking, sampling, schedules
from psijax.discrete.kernels import MDLM, OneToken, ReMDM
from psijax.discrete.sampling import sample

__all__ = [
    "schedules",
    "masking",
    "kernels",
    "sampling",
    "exact",
    "MDLM",
    "ReMDM",
    "OneToken",
    "sample",
]
