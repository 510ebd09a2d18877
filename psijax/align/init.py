r"""Deprecated (0.1): the initial stage chosen by name, ``initial_particles(..., method=...)``.

The initial stages are objects now (:mod:`psijax.align.stages`,
:class:`~psijax.align.chains.Chains`, :class:`~psijax.align.tempered.Tempered`), each owning
its sampling, its initial weights and its share of an NFE budget:
``Chains(kernel=psijax.pcnl, ...).sample(key, problem, K)`` replaces
``initial_particles(key, problem, K, method="pcnl", ...)``. This module keeps the old
spellings working for one release; they warn.

The old ``step_size`` was ``h`` for every method, MALA and ULA running at ``ε = h/2``; a
:class:`~psijax.align.chains.Chains` stage takes the kernel's own step size, so the method
names ``"mala"`` and ``"ula"`` translate ``step_size=h`` to ``ε = h/2``.
"""

import blackjax

from psijax._checks import check_real
from psijax._deprecation import deprecated
from psijax.align.chains import Chains, thinning_layout
from psijax.align.stages import InitialParticles, InitialStage, InitInfo, Prior, TopK
from psijax.align.tempered import MAX_TEMPERING_STEPS, Tempered
from psijax.mcmc.api import pcn, pcnl, ula

__all__ = [
    "METHODS",
    "MAX_TEMPERING_STEPS",
    "InitInfo",
    "InitialParticles",
    "initial_particles",
    "stage_from_method",
    "thinning_layout",
]

METHODS = ("prior", "top_k", "pcnl", "pcn", "mala", "ula", "tempered")
"""The 0.1 method names."""

_KERNELS = {"pcnl": pcnl, "pcn": pcn, "mala": blackjax.mala, "ula": ula}
STEP_SCALE = {"mala": 0.5, "ula": 0.5}
"""0.1 took ``step_size = h`` for every method and ran MALA and ULA at ``ε = h/2``."""
RENAMED_OPTIONS = {"adapt_step_size": "adapt"}
"""0.1 option names of the initial stage and their field names now."""
_CHAIN_OPTIONS = {
    **{name: name for name in ("step_size", "num_chains", "burn_in", "num_kept", "alpha")},
    **{name: name for name in ("target_acceptance_rate", "on_too_few_states")},
    **RENAMED_OPTIONS,
}
_TEMPERED_OPTIONS = ("num_mcmc_steps", "target_ess", "step_size", "alpha")
_ALL_OPTIONS = {*_CHAIN_OPTIONS, *_TEMPERED_OPTIONS, "num_candidates"}


def stage_from_method(method: str, options: dict) -> InitialStage:
    """The stage that ``method`` with the 0.1 keyword ``options`` named (options that do not
    apply to the method are ignored, as they were)."""
    if not isinstance(method, str):
        raise TypeError(f"`init` must be an initial stage or one of {METHODS}, got {method!r}.")
    if method not in METHODS:
        raise ValueError(f"`init` must be one of {METHODS} or an initial stage, got {method!r}.")
    unknown = sorted(set(options) - _ALL_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected initial-stage options {unknown} for method {method!r}.")
    if method == "prior":
        return Prior()
    if method == "top_k":
        return TopK(options.get("num_candidates"))
    if method == "tempered":
        return Tempered(**{k: options[k] for k in _TEMPERED_OPTIONS if k in options})
    fields = {new: options[old] for old, new in _CHAIN_OPTIONS.items() if old in options}
    if fields.get("adapt") and method not in ("pcn", "pcnl"):
        raise ValueError(f"`adapt_step_size` needs method 'pcn' or 'pcnl', got {method!r}.")
    if method in STEP_SCALE:  # 0.1's h, run at ε = h/2 (also when traced)
        step_size = fields.get("step_size", 0.5)
        check_real(step_size, "step_size", gt=0.0)
        fields["step_size"] = step_size * STEP_SCALE[method]
    return Chains(kernel=_KERNELS[method], **fields)


def initial_particles(
    rng_key, problem, num_particles: int, *, method: str = "pcnl", mesh=None, **options
) -> InitialParticles:
    """Deprecated: ``stage_from_method(method, options).sample(rng_key, problem, K, mesh=mesh)``.

    The options are the 0.1 ones (``alpha``, ``step_size``, ``num_chains``, ``burn_in``,
    ``num_kept``, ``adapt_step_size``, ``target_acceptance_rate``, ``num_candidates``,
    ``num_mcmc_steps``, ``target_ess``, ``on_too_few_states``).
    """
    deprecated("psijax.align.initial_particles(method=...)", "a stage's .sample(...)")
    stage = stage_from_method(method, options)
    return stage.sample(rng_key, problem, num_particles, mesh=mesh)
