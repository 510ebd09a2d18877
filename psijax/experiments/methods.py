r"""The alignment methods of the studies and their sizes at equal NFE.

A *method* is a name of :data:`psijax.align.SAMPLERS`, ``"tempered"`` (SMC from a tempered-SMC
initial stage with pCNL moves), optionally suffixed ``"[flow_map]"`` for an initial stage that
uses the flow-map predictor (the SMC keeps Tweedie). :func:`sampler_options` gives every method
the same budget of model evaluations; the toy study (:mod:`psijax.experiments.toy`) and the
digits study (:mod:`psijax.experiments.digits`) both size their runs with it.
"""

from typing import NamedTuple

import numpy as np

from psijax.align import SAMPLERS
from psijax.align.samplers import budget_layout
from psijax.flows.sde import denoising_grid

__all__ = [
    "GUIDANCE",
    "INITIAL_STAGE",
    "Method",
    "parse_method",
    "default_methods",
    "sampler_options",
]

GUIDANCE = ("dps", "freedom", "best_of_n")
INITIAL_STAGE = ("psi_sampler", "top_k", "ula", "mala", "pcn", "tempered")


class Method(NamedTuple):
    """A row of the study: ``name`` as shown, the ``sampler`` of :data:`SAMPLERS` it calls, the
    initial stage's ``init`` override (``"tempered"`` or None) and ``init_predictor``."""

    name: str
    sampler: str
    init: str | None = None
    init_predictor: str | None = None


def parse_method(name: str) -> Method:
    """``"psi_sampler"``, ``"tempered"``, ``"psi_sampler[flow_map]"``, … → :class:`Method`.

    Raises ``ValueError`` for an unknown sampler or a flow-map suffix on a method without an
    initial stage.
    """
    base, predictor = name, None
    if name.endswith("[flow_map]"):
        base, predictor = name[: -len("[flow_map]")], "flow_map"
        if base not in INITIAL_STAGE:
            raise ValueError(
                f"'[flow_map]' needs an initial-stage method {INITIAL_STAGE}: {name!r}"
            )
    if base == "tempered":
        return Method(name, "smc", "tempered", predictor)
    if base not in SAMPLERS:
        raise ValueError(
            f"method must be one of {(*SAMPLERS, 'tempered')} (+ '[flow_map]'): {name!r}"
        )
    return Method(name, base, None, predictor)


def default_methods(flow_map: bool = True) -> tuple[str, ...]:
    """Every sampler of :data:`SAMPLERS`, ``"tempered"`` and (``flow_map``) the flow-map
    variants of Ψ-Sampler and of the tempered initial stage."""
    extra = ("psi_sampler[flow_map]", "tempered[flow_map]") if flow_map else ()
    return (*SAMPLERS, "tempered", *extra)


def sampler_options(
    method: Method,
    budget: int,
    num_steps: int,
    *,
    num_chains: int = 5,
    num_repeats: int = 3,
    window: tuple[float, float] = (0.3, 0.7),
) -> dict:
    """Keyword arguments that give ``method`` the NFE budget ``B`` over ``T`` steps.

    Prior starts and the Tweedie initial stages pass ``nfe_budget=B`` to the sampler. Guidance:
    ``N = ⌊B/T⌋`` (DPS, best-of-N), ``N = ⌊B/(T + K·W)⌋`` (FreeDoM, ``W`` = grid times
    ``t_i``, ``i < T``, in ``window``). Flow-map and tempered initial stages: the particle count
    ``⌊(B − ⌊B/2⌋)/T⌋`` and chain layout that ``nfe_budget=B`` gives the Tweedie version
    (chains ``m = ⌊⌊B/2⌋/C⌋ − 1`` steps, ``⌈m/2⌉`` burn-in, ``⌊m/2⌋`` kept; Top-K
    ``max(⌊B/2⌋, N)`` candidates); their true NFE is read off the result.
    """
    if method.sampler in GUIDANCE:
        per_particle = num_steps
        if method.sampler == "freedom":
            current = denoising_grid(num_steps, None)[:-1]
            width = int(np.sum((current >= window[0]) & (current <= window[1])))
            per_particle += num_repeats * width
        return {"num_particles": _positive(budget // per_particle, method.name, budget)}
    if method.init is None and method.init_predictor is None:
        # The sampler splits the budget itself; the layout call only checks it is large enough.
        budget_layout(_INIT.get(method.sampler, "prior"), budget, num_steps, num_chains=num_chains)
        return {"nfe_budget": budget}
    init = method.init or _INIT[method.sampler]
    options = budget_layout(init, budget, num_steps, num_chains=num_chains)
    if init in ("pcnl", "pcn", "mala", "ula"):
        options["num_chains"] = num_chains
    if method.init is not None:
        options["init"] = method.init
    if method.init_predictor is not None:
        options["init_predictor"] = method.init_predictor
    return options


_INIT = {"psi_sampler": "pcnl", "top_k": "top_k", "ula": "ula", "mala": "mala", "pcn": "pcn"}
"""The initial stage of each initial-stage sampler of :data:`SAMPLERS`."""


def _positive(n: int, name: str, budget: int) -> int:
    if n < 1:
        raise ValueError(f"budget {budget} is too small for one particle of {name!r}.")
    return int(n)
