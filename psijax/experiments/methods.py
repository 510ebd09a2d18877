r"""The alignment methods of the studies and their sizes at equal NFE, from the registry.

A *method* is a name of :data:`psijax.align.SAMPLERS`, optionally suffixed ``"[flow_map]"``
for a sampler with an initial stage whose ``r_init`` then uses a flow-map predictor (the SMC
keeps Tweedie). The methods are those of the registry: a sampler registered with
:func:`psijax.align.register` is a method of every study and of the command line.
:func:`sampler_options` gives every method the same budget of model evaluations; the toy study
(:mod:`psijax.experiments.toy`) and the digits study (:mod:`psijax.experiments.digits`) both
size their runs with it.
"""

import dataclasses
from typing import NamedTuple

from psijax._deprecation import deprecated
from psijax.align import DEPRECATED_NAMES, SAMPLERS, budget_layout, initial_stage
from psijax.align.predictors import as_predictor

__all__ = [
    "FLOW_MAP",
    "Method",
    "parse_method",
    "default_methods",
    "flow_map_variants",
    "sampler_options",
]

FLOW_MAP = "[flow_map]"
"""The suffix of a method whose initial stage uses a flow-map predictor."""


class Method(NamedTuple):
    """A row of a study: ``name`` as shown, the ``sampler`` of :data:`SAMPLERS` it calls, and
    ``flow_map``: whether its initial stage uses the study's flow-map predictor."""

    name: str
    sampler: str
    flow_map: bool = False


def parse_method(name: str) -> Method:
    """``"psi_sampler"``, ``"tempered_smc[flow_map]"``, … → :class:`Method`.

    Raises
    ------
    ValueError
        For an unknown sampler, or a flow-map suffix on a sampler without an initial stage that
        takes a predictor.

    """
    base, flow_map = name, name.endswith(FLOW_MAP)
    if flow_map:
        base = name[: -len(FLOW_MAP)]
    if base in DEPRECATED_NAMES:
        deprecated(f"method {base!r}", repr(DEPRECATED_NAMES[base]))
        base = DEPRECATED_NAMES[base]
        name = base + (FLOW_MAP if flow_map else "")
    if base not in SAMPLERS:
        raise ValueError(f"method must be one of {tuple(SAMPLERS)} (+ {FLOW_MAP!r}): {name!r}")
    if flow_map and base not in flow_map_variants(suffix=False):
        raise ValueError(
            f"{FLOW_MAP!r} needs a sampler whose initial stage takes a predictor "
            f"{flow_map_variants(suffix=False)}: {name!r}"
        )
    return Method(name, base, flow_map)


def flow_map_variants(suffix: bool = True) -> tuple[str, ...]:
    """The samplers of :data:`SAMPLERS` whose initial stage has a ``predictor`` (with the
    ``"[flow_map]"`` suffix when ``suffix``)."""
    names = [name for name, sampler in SAMPLERS.items() if _has_predictor(initial_stage(sampler))]
    return tuple(n + FLOW_MAP if suffix else n for n in names)


def default_methods(flow_map: bool = True) -> tuple[str, ...]:
    """Every sampler of :data:`SAMPLERS` and (``flow_map``) the two flow-map variants the
    studies run by default, Ψ-Sampler's and the tempered stage's (every other one,
    :func:`flow_map_variants`, can be asked for by name)."""
    extra = ("psi_sampler" + FLOW_MAP, "tempered_smc" + FLOW_MAP) if flow_map else ()
    return (*SAMPLERS, *(m for m in extra if m[: -len(FLOW_MAP)] in SAMPLERS))


def sampler_options(
    method: Method, budget: int, num_steps: int, flow_map=None, budget_split: float = 0.5
) -> dict:
    """Keyword arguments that give ``method`` the NFE budget ``B`` over ``T`` steps.

    Every sampler takes ``nfe_budget=B`` itself (:func:`psijax.align.budget_layout`; guidance:
    ``N = ⌊B/T⌋``, FreeDoM ``⌊B/(T + K·W)⌋``). Two exceptions get the layout that
    ``nfe_budget=B`` gives their Tweedie version (particle count, chains or candidates) and
    report their true NFE: a stage of adaptive cost (tempered SMC), and a flow-map variant
    whose predictor (``flow_map``, a :class:`~psijax.align.predictors.Predictor`) has no
    constant cost. A flow-map predictor of constant cost (``nfe_per_call``) is budgeted
    exactly: its stage gets ``⌊B/2⌋ / nfe_per_call`` evaluations. ``budget_split`` is the
    initial stage's share of ``B`` (the paper's 0.5 by default; passed on when it differs).
    """
    stage = initial_stage(SAMPLERS[method.sampler])
    predictor = None
    if method.flow_map:
        if flow_map is None:
            raise ValueError(f"{method.name!r} needs the study's flow-map predictor (`flow_map`).")
        predictor = as_predictor(flow_map, "flow_map")
    exact = stage is None or not stage.adaptive_cost
    exact &= predictor is None or predictor.nfe_per_call is not None
    split = {} if budget_split == 0.5 else {"budget_split": budget_split}
    if exact:
        options = {"nfe_budget": budget, **split}
        if stage is not None:  # fail early, with the sampler's own message, if B is too small
            budget_layout(_with(stage, predictor), budget, num_steps, **split)
    else:
        num_particles, sized = budget_layout(stage, budget, num_steps, **split)
        changed = {
            f.name: getattr(sized, f.name)
            for f in dataclasses.fields(sized)
            if getattr(sized, f.name) != getattr(stage, f.name)
        }
        options = {"num_particles": num_particles, **changed}
    if predictor is not None:
        options["predictor"] = predictor
    return options


def _has_predictor(stage) -> bool:
    return stage is not None and any(f.name == "predictor" for f in dataclasses.fields(stage))


def _with(stage, predictor):
    return stage if predictor is None else dataclasses.replace(stage, predictor=predictor)
