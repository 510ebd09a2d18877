"""Generic, model-agnostic particle machinery: resampling schemes and log-weight bookkeeping.

:mod:`psijax.smc.resampling` holds the schemes (multinomial, stratified, systematic, residual,
SSP), all with BlackJAX's signature ``scheme(rng_key, weights, num_samples) -> ancestors``;
:mod:`psijax.smc.weights` holds normalization, ESS, adaptive resampling (which accumulates the
log-weights when it does not resample) and the log-normalizer increments (ALGORITHMS.md §5);
:mod:`psijax.smc.sharding` splits the particle axis over a device mesh (every sampler's
``mesh=`` argument).
"""

from psijax.smc import resampling, sharding, weights
from psijax.smc.resampling import (
    SCHEMES,
    get_scheme,
    multinomial,
    offspring_counts,
    residual,
    ssp,
    stratified,
    systematic,
)
from psijax.smc.sharding import particle_mesh
from psijax.smc.weights import (
    ResampleResult,
    ess,
    log_mean_exp,
    log_normalizer_increment,
    normalize,
    resample_if_needed,
)

__all__ = [
    "resampling",
    "weights",
    "sharding",
    "particle_mesh",
    "SCHEMES",
    "get_scheme",
    "multinomial",
    "offspring_counts",
    "residual",
    "ssp",
    "stratified",
    "systematic",
    "ResampleResult",
    "ess",
    "log_mean_exp",
    "log_normalizer_increment",
    "normalize",
    "resample_if_needed",
]
