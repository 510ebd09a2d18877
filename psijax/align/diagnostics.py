r"""Health checks of an alignment run: say when a result cannot be trusted.

The weights of an SMC are exact for any proposal, but exact is not the same as useful. With a
sharp reward (``α`` small next to the reward's scale) a run can end with a final ESS of ``N``
and the top reward while every particle is a copy of one ancestor thrown out of the data's
range by the first twisted step: the ESS measures the spread of the final weights among the
particles there are, not how many independent draws they hold. :func:`diagnose` reads what
the run recorded (:class:`psijax.align.denoising.MoveInfo`, the ESS history, the collapse
flag) and returns one sentence per problem; an empty tuple means no check fired. The CLI
prints them as warnings (``psijax digits``, ``psijax toy``) and the study tables carry them.

Checks (thresholds in :data:`THRESHOLDS`):

- **collapsed**: every final weight is zero (``log Ẑ = −inf``); nothing can be estimated.
- **invalid**: particles whose position, reward or gradient became NaN/inf (zero weight).
- **shift**: the proposal put particles more than ``shift`` noise widths from the model's mean
  (:attr:`~psijax.align.denoising.MoveInfo.shift`): ``q`` and ``p`` barely overlap, the
  twisted mean is an unstable gradient step. Raise ``α``, add steps, or cap the shift with
  ``Twisted(max_shift=…)``.
- **degenerate**: the ESS entering the steps was below ``min_ess`` (one particle carried the
  weight) at more than a fraction ``degenerate_steps`` of them (once or twice in a run is
  common with few particles). A final ESS of ``N`` does not undo it: the copies of that
  particle diversify only by the model's noise afterwards. (That the final particles share
  few *initial* ancestors, :attr:`~psijax.align.denoising.MoveInfo.lineages`, is normal after
  many resamplings and is not checked.)
- **range** (with ``data_range``): final particles of positive weight outside the data's
  range, by more than ``range_margin`` of its width.

The valid range of ``α``: with the twisted proposal, step ``t → t'`` moves the mean by
``σ²λ∇r/α``; for a reward of curvature ``L`` along the prediction this is a gradient step of
size ``σ²λL/α``, unstable beyond 2. So ``α`` should stay above about ``max_t σ_t²·L_t/2``
(docs/algorithms.md §5.2 measures it on the toy and on digits).
"""

import math

import jax.numpy as jnp
import numpy as np

from psijax.align.denoising import MoveInfo
from psijax.align.result import AlignmentResult, SamplerInfo
from psijax.smc.feynman_kac import SMCInfo

__all__ = ["THRESHOLDS", "diagnose"]

THRESHOLDS = {"shift": 10.0, "min_ess": 1.5, "degenerate_steps": 0.25, "range_margin": 0.5}
"""Default thresholds of :func:`diagnose` (module docstring)."""


def diagnose(
    result: AlignmentResult,
    *,
    data_range: tuple[float, float] | None = None,
    **thresholds: float,
) -> tuple[str, ...]:
    """The problems of a run, one sentence each (module docstring); ``()`` when none.

    Parameters
    ----------
    result
        An :class:`AlignmentResult` of :func:`psijax.align.run_smc` or of a top-level sampler
        with an SMC stage (guidance methods and best-of-N record no SMC: only the final
        samples and weights are checked).
    data_range
        ``(low, high)`` of the data's values (e.g. ``(-1, 1)`` for images), or ``None``.
    **thresholds
        Overrides of :data:`THRESHOLDS`.

    Raises
    ------
    TypeError
        If ``result`` is not an :class:`AlignmentResult` or a threshold is unknown.

    """
    if not isinstance(result, AlignmentResult):
        raise TypeError(f"`result` must be an AlignmentResult, got {type(result).__name__}.")
    unknown = sorted(set(thresholds) - set(THRESHOLDS))
    if unknown:
        raise TypeError(f"unknown thresholds {unknown}; known: {sorted(THRESHOLDS)}.")
    limits = THRESHOLDS | thresholds
    info = result.info.smc if isinstance(result.info, SamplerInfo) else result.info
    log_w = np.asarray(result.log_weights, np.float64)
    n = log_w.shape[0]
    messages = []
    if not np.any(np.isfinite(log_w)):
        messages.append(f"collapsed: every weight of the {n} final particles is zero.")
    if isinstance(info, SMCInfo) and isinstance(info.proposal_info, MoveInfo):
        messages += _smc_checks(info, n, limits)
    if data_range is not None:
        messages += _range_check(result, log_w, data_range, limits["range_margin"])
    return tuple(messages)


def _smc_checks(info: SMCInfo, n: int, limits: dict) -> list[str]:
    move = info.proposal_info
    messages = []
    invalid = np.asarray(move.num_invalid)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        messages.append(
            f"invalid: {int(invalid.max())} particle(s) got a NaN/inf position, reward or "
            f"gradient (first at step {first}); they have weight zero."
        )
    shift = np.asarray(move.shift, np.float64)  # NaN at a deterministic step (σ = 0)
    if np.any(shift > limits["shift"]):
        step = int(np.nanargmax(shift))
        messages.append(
            f"shift: the proposal moved particles {shift[step]:.3g} noise widths from the "
            f"model's mean at step {step} (max_abs {float(np.asarray(move.max_abs)[step]):.3g}):"
            " the reward's gradient/α dwarfs the model's noise, so the weights degenerate and "
            "the particles leave the model. Raise α, add steps, or cap the shift "
            "(Twisted(max_shift=...))."
        )
    ess = np.asarray(info.ess, np.float64)
    alive = ess > 0  # after a collapse the ESS is 0 (reported above)
    low = alive & (ess < limits["min_ess"])
    if low.sum() > limits["degenerate_steps"] * ess.size:
        messages.append(
            f"degenerate: the ESS fell to {ess[alive].min():.3g} (one particle carried the "
            f"weight) at {int(low.sum())} of {ess.size} steps; the final ESS "
            f"({float(info.final_ess):.3g}) measures the spread of the final weights only, "
            "not how many independent draws the particles hold."
        )
    return messages


def _range_check(result, log_w, data_range, margin: float) -> list[str]:
    low, high = (float(v) for v in data_range)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"`data_range` must be finite (low, high) with low < high, got {data_range}."
        )
    width = high - low
    x = np.asarray(jnp.reshape(result.samples, (log_w.shape[0], -1)), np.float64)
    used = np.isfinite(log_w)
    outside = (x < low - margin * width) | (x > high + margin * width) | ~np.isfinite(x)
    far = used & outside.any(axis=1)
    if not far.any():
        return []
    extreme = float(np.nanmax(np.abs(np.where(np.isfinite(x[used]), x[used], np.nan))))
    return [
        f"range: {int(far.sum())} of {int(used.sum())} weighted final particles lie outside "
        f"the data's range [{low:g}, {high:g}] (|x| up to {extreme:.3g})."
    ]
