"""Reward-alignment algorithms assembled from :mod:`psijax.flows`, :mod:`psijax.mcmc` and
:mod:`psijax.smc`.

:class:`RewardProblem` holds the model, the reward, ``α`` and the x0-predictor. The samplers
(:mod:`psijax.align.samplers`) all return an :class:`AlignmentResult`: :func:`psi_sampler`
(pCNL initial particles + SMC), the SMC baselines :func:`smc`, :func:`tds`, :func:`das`,
:func:`fk_steering`, the posterior-initialized variants :func:`top_k`, :func:`ula`,
:func:`mala`, :func:`pcn`, and the single-particle baselines :func:`dps`, :func:`freedom`,
:func:`best_of_n`. The pieces: :func:`initial_particles` (the initial stage) and
:func:`run_smc` (the SMC over the denoising grid). Every sampler takes ``mesh=`` to split its
particles over devices (:mod:`psijax.smc.sharding`).
"""

from psijax.align.guidance import best_of_n, dps, freedom
from psijax.align.init import InitialParticles, InitInfo, initial_particles
from psijax.align.problem import RewardProblem
from psijax.align.result import AlignmentResult, SamplerInfo, best_sample
from psijax.align.samplers import (
    das,
    das_schedule,
    fk_steering,
    mala,
    pcn,
    psi_sampler,
    smc,
    tds,
    top_k,
    ula,
)
from psijax.align.smc import SMCInfo, run_smc

SAMPLERS = {
    "psi_sampler": psi_sampler,
    "smc": smc,
    "tds": tds,
    "das": das,
    "fk_steering": fk_steering,
    "top_k": top_k,
    "ula": ula,
    "mala": mala,
    "pcn": pcn,
    "dps": dps,
    "freedom": freedom,
    "best_of_n": best_of_n,
}
"""Every top-level sampler by name (same call shape)."""

__all__ = [
    "RewardProblem",
    "AlignmentResult",
    "SamplerInfo",
    "SMCInfo",
    "InitialParticles",
    "InitInfo",
    "SAMPLERS",
    "best_sample",
    "initial_particles",
    "run_smc",
    "das_schedule",
    *SAMPLERS,
]
