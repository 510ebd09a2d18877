r"""Reward alignment of masked discrete diffusion models (docs/algorithms.md §10).

A sibling of the continuous samplers, sharing their result type
(:class:`~psijax.align.result.AlignmentResult`), their potentials and their SMC loop
(:mod:`psijax.smc.feynman_kac`). The parts:

- :class:`DiscreteProblem` (:mod:`~psijax.align.discrete.problem`): denoiser logits on soft
  one-hots, a reward, ``β``, a prompt;
- twists (:mod:`~psijax.align.discrete.twists`): :class:`NoTwist`, :class:`Point`,
  :class:`Soft`, :class:`Mean`, :class:`LogMeanExp`, :class:`Exact`, and :func:`annealing`;
- proposals (:mod:`~psijax.align.discrete.proposals`): :class:`Reverse`, :class:`FirstOrder`,
  :class:`Amortised`, :class:`LocallyOptimal`;
- targets (:mod:`~psijax.align.discrete.targets`): :class:`RewardTilt`, :class:`Product`,
  :class:`Temperature`;
- :func:`run_discrete_smc` (:mod:`~psijax.align.discrete.smc`) and the named samplers of
  :data:`DISCRETE_SAMPLERS` (:mod:`~psijax.align.discrete.samplers`): ``best_of_n``,
  ``fk_steering``, ``smc_reverse``, ``smc_first_order``, ``smc_amortised``, ``smc_product``,
  each importable from here.

The masked-diffusion convention itself (schedules, masking, kernels, the unguided sampler,
exact answers by enumeration) is :mod:`psijax.discrete`; toy models with exact denoisers are in
:mod:`psijax.models.masked_toys`.
"""

from psijax.align.discrete.problem import DiscreteProblem
from psijax.align.discrete.proposals import Amortised, FirstOrder, LocallyOptimal, Reverse
from psijax.align.discrete.samplers import DISCRETE_SAMPLERS, DiscreteSampler, cost_per_particle
from psijax.align.discrete.smc import Cache, MoveInfo, run_discrete_smc
from psijax.align.discrete.targets import Product, RewardTilt, Temperature
from psijax.align.discrete.twists import (
    Exact,
    LogMeanExp,
    Mean,
    NoTwist,
    Point,
    Soft,
    annealing,
)

globals().update(DISCRETE_SAMPLERS)

__all__ = [
    "DiscreteProblem",
    "run_discrete_smc",
    "Cache",
    "MoveInfo",
    "DiscreteSampler",
    "DISCRETE_SAMPLERS",
    "cost_per_particle",
    "NoTwist",
    "Point",
    "Soft",
    "Mean",
    "LogMeanExp",
    "Exact",
    "annealing",
    "Reverse",
    "FirstOrder",
    "Amortised",
    "LocallyOptimal",
    "RewardTilt",
    "Product",
    "Temperature",
    *DISCRETE_SAMPLERS,
]
