"""Generic, model-agnostic particle machinery: the Feynman–Kac SMC and its parts.

:mod:`psijax.smc.feynman_kac` is the one SMC loop of psijax (``init``, ``step``, ``run`` over
any pytree of particles, the proposal and the potential passed in); the continuous samplers of
:mod:`psijax.align` are configurations of it. Its parts: :mod:`psijax.smc.potentials` (FK
potentials over log-twists: difference, max, sum, current), :mod:`psijax.smc.weights`
(normalization, ESS, adaptive/partial resampling, the log-normalizer increments;
docs/algorithms.md §5) and :mod:`psijax.smc.resampling` (multinomial, stratified, systematic,
residual, SSP, all with BlackJAX's signature ``scheme(rng_key, weights, num_samples) ->
ancestors``). :mod:`psijax.smc.sharding` splits the particle axis over a device mesh (every
sampler's ``mesh=`` argument).
"""

from psijax.smc import feynman_kac, potentials, resampling, sharding, weights
from psijax.smc.feynman_kac import SMCInfo, SMCState, StepInfo
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
    AdaptiveResampling,
    ResampleResult,
    ess,
    log_mean_exp,
    log_normalizer_increment,
    normalize,
    resample_if_needed,
)

__all__ = [
    "feynman_kac",
    "potentials",
    "resampling",
    "weights",
    "sharding",
    "SMCState",
    "StepInfo",
    "SMCInfo",
    "particle_mesh",
    "SCHEMES",
    "get_scheme",
    "multinomial",
    "offspring_counts",
    "residual",
    "ssp",
    "stratified",
    "systematic",
    "AdaptiveResampling",
    "ResampleResult",
    "ess",
    "log_mean_exp",
    "log_normalizer_increment",
    "normalize",
    "resample_if_needed",
]
