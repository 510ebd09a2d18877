"""Reward-alignment algorithms assembled from :mod:`psijax.flows` and :mod:`psijax.smc`.

:class:`RewardProblem` holds the model, the reward, ``α`` and the x0-predictor;
:func:`run_smc` is the SMC over the denoising grid (twisted or bootstrap proposal, tempering,
adaptive resampling) returning an :class:`AlignmentResult`.
"""

from psijax.align.problem import RewardProblem
from psijax.align.smc import AlignmentResult, SMCInfo, run_smc

__all__ = ["RewardProblem", "run_smc", "AlignmentResult", "SMCInfo"]
