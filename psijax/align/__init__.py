"""Reward-alignment algorithms assembled from :mod:`psijax.flows`, :mod:`psijax.mcmc` and
:mod:`psijax.smc`.

:class:`RewardProblem` holds the model, the reward, ``α`` and the x0-predictor
(:mod:`psijax.align.predictors`). The samplers all return an :class:`AlignmentResult`; every
one is in :data:`SAMPLERS`: :func:`smc` (an initial stage then SMC over the denoising grid) and
its named configurations (:mod:`psijax.align.samplers`: ``psi_sampler``, ``tds``, ``das``,
``fk_steering``, ``top_k_smc``, ``ula_smc``, ``mala_smc``, ``pcn_smc``, ``tempered_smc``), and
the single-particle baselines :func:`dps`, :func:`freedom`, :func:`best_of_n`. The parts:
initial stages (:class:`Prior`, :class:`TopK`, :class:`Chains`, :class:`Tempered`), proposals
(:class:`Twisted`, :class:`Bootstrap`), the potentials of :mod:`psijax.smc.potentials`, and
:func:`run_smc` (the SMC over the denoising grid on the generic core
:mod:`psijax.smc.feynman_kac`). Every sampler takes ``mesh=`` to split its particles over
devices (:mod:`psijax.smc.sharding`). The samplers for masked discrete diffusion are
:mod:`psijax.align.discrete` (loaded on first use).

Deprecated names (0.1, removed after 0.2; they warn): ``top_k``, ``ula``, ``mala``, ``pcn``
(now ``top_k_smc``, ``ula_smc``, ``mala_smc``, ``pcn_smc``; the old ``step_size`` of ``ula`` and
``mala`` was ``h``, run at ``ε = h/2``) and ``initial_particles`` (:mod:`psijax.align.init`).
"""

from psijax._deprecation import deprecated as _deprecated
from psijax.align.chains import Chains
from psijax.align.denoising import MoveInfo, run_smc
from psijax.align.diagnostics import diagnose
from psijax.align.predictors import Custom, FlowMap, Predictor, Tweedie
from psijax.align.problem import RewardProblem, check_problem
from psijax.align.proposals import Bootstrap, ProposalInputs, Twisted
from psijax.align.result import AlignmentResult, SamplerInfo, best_sample
from psijax.align.samplers import (
    DEPRECATED_NAMES,
    SAMPLERS,
    NamedSampler,
    budget_layout,
    das_schedule,
    initial_stage,
    register,
    unregister,
)
from psijax.align.stages import InitialParticles, InitialStage, InitInfo, Prior, TopK
from psijax.align.tempered import Tempered
from psijax.smc.feynman_kac import SMCInfo
from psijax.smc.potentials import Current, Difference, Max, Sum

__all__ = [
    "RewardProblem",
    "check_problem",
    "AlignmentResult",
    "SamplerInfo",
    "SMCInfo",
    "InitialParticles",
    "InitInfo",
    "InitialStage",
    "Prior",
    "TopK",
    "Chains",
    "Tempered",
    "Predictor",
    "Tweedie",
    "FlowMap",
    "Custom",
    "MoveInfo",
    "diagnose",
    "ProposalInputs",
    "Twisted",
    "Bootstrap",
    "Difference",
    "Max",
    "Sum",
    "Current",
    "SAMPLERS",
    "NamedSampler",
    "register",
    "unregister",
    "initial_stage",
    "budget_layout",
    "best_sample",
    "run_smc",
    "das_schedule",
    *SAMPLERS,  # the registry's samplers, each importable from here
]

globals().update(SAMPLERS)  # every sampler of the registry, by name (psijax.align.tds, ...)

_RENAMED = {old: new for old, new in DEPRECATED_NAMES.items() if old != "tempered"}


def __getattr__(name: str):
    if name in _RENAMED:
        _deprecated(f"psijax.align.{name}", f"psijax.align.{_RENAMED[name]}")
        return _legacy_sampler(name)
    if name == "initial_particles":
        from psijax.align.init import initial_particles

        return initial_particles
    if name == "discrete":  # the masked-diffusion samplers, loaded on first use
        import importlib

        return importlib.import_module("psijax.align.discrete")
    raise AttributeError(f"module 'psijax.align' has no attribute {name!r}")


def _legacy_sampler(name: str):
    from psijax.align.init import STEP_SCALE

    sampler = SAMPLERS[_RENAMED[name]]

    def legacy(rng_key, problem, **kwargs):
        if name in STEP_SCALE and "step_size" in kwargs:
            kwargs["step_size"] = kwargs["step_size"] * STEP_SCALE[name]
        return sampler(rng_key, problem, **kwargs)

    legacy.__name__ = legacy.__qualname__ = name
    legacy.__doc__ = f"Deprecated: :func:`{_RENAMED[name]}` (0.1's ``step_size`` semantics)."
    return legacy
