"""What every alignment sampler returns: weighted particles, rewards, ``log Ẑ``, NFE, info."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.types import Array

__all__ = ["AlignmentResult", "SamplerInfo", "best_sample"]


class AlignmentResult(NamedTuple):
    """Output of the alignment samplers (and of :func:`psijax.align.run_smc`).

    samples
        ``(N, *event_shape)`` final particles at ``t = 0``.
    log_weights
        ``(N,)`` normalized log-weights (``logsumexp = 0``; ``−inf`` for zero weight).
    rewards
        ``(N,)`` exact rewards ``r(x)`` of the samples (NaN where the reward was not finite).
    log_normalizer
        The estimate of ``log Z``, ``Z = E_p[exp(r(x_0)/α)]`` under the discretized chain, when
        the method gives one (prior or tempered-SMC starts; ``Ẑ`` is unbiased for ``Z``);
        NaN otherwise (MCMC-initialized SMC, whose SMC estimates only ``Z / Z_init``: see
        ``info``; guidance and best-of-N).
    nfe
        Model (velocity) evaluations spent, int32: those inside ODE solves of a flow-map
        predictor included. Evaluations made with a backward pass count once.
    info
        :class:`SamplerInfo` for the top-level samplers, :class:`psijax.align.SMCInfo` for
        :func:`psijax.align.run_smc`.

    """

    samples: Array
    log_weights: Array
    rewards: Array
    log_normalizer: Array
    nfe: Array
    info: Any


class SamplerInfo(NamedTuple):
    """Diagnostics of a top-level sampler.

    init
        :class:`psijax.align.stages.InitInfo` of the initial-particle stage (acceptance rates,
        step sizes, tempering steps), or ``None`` for prior starts and guidance methods.
    smc
        :class:`psijax.align.SMCInfo` (ESS per step, resampling events, ``log Ẑ`` increments),
        or ``None`` for guidance methods and best-of-N.
    nfe_init
        Model evaluations of the initial stage (int32).
    nfe_sampling
        Model evaluations of the denoising stage (SMC, guided or unguided sampling; int32).
    log_normalizer_init
        ``log Ẑ_init`` of the initial stage (tempered SMC), ``0`` for prior starts, NaN when
        the stage gives no estimate (MCMC chains, Top-K).
    log_normalizer_smc
        What the SMC itself estimates: ``log Z`` for prior starts, ``log(Z / Z_init)`` for
        starts drawn from ``π_init``; NaN for methods without SMC.

    """

    init: Any
    smc: Any
    nfe_init: Array
    nfe_sampling: Array
    log_normalizer_init: Array
    log_normalizer_smc: Array


def best_sample(result: AlignmentResult, rule: str = "reward", rng_key=None) -> Array:
    """One sample chosen from a result (docs/algorithms.md §5 "Output").

    ``rule="reward"``: the highest finite reward among particles of nonzero weight (the paper's
    choice; ties: the first); ``"weights"`` (or ``"multinomial"``): a draw from the normalized
    weights (needs ``rng_key``); ``"best_weight"``: the particle of largest weight. Raises
    ``ValueError`` for another rule or a missing key.
    """
    if rule == "reward":
        usable = jnp.isfinite(result.rewards) & (result.log_weights > -jnp.inf)
        return result.samples[jnp.argmax(jnp.where(usable, result.rewards, -jnp.inf))]
    if rule == "best_weight":
        return result.samples[jnp.argmax(result.log_weights)]
    if rule in ("weights", "multinomial"):
        if rng_key is None:
            raise ValueError("`rng_key` is needed for rule='weights'.")
        return result.samples[jax.random.categorical(rng_key, result.log_weights)]
    raise ValueError(
        f"`rule` must be 'reward', 'weights', 'multinomial' or 'best_weight', got {rule!r}."
    )
