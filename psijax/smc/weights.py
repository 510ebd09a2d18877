r"""Log-weight arithmetic of SMC: normalization, ESS, adaptive resampling, log-normalizer.

Pure functions on a vector of log-weights ``ℓ`` of shape ``(N,)``, computed in (at least)
float32. An invalid log-weight — NaN or ``+inf``, e.g. a reward that overflowed — is treated as
``−inf``, i.e. as a particle of weight zero, everywhere in this module (the same convention as
the MCMC kernels, which reject non-finite proposals).

The bookkeeping of one SMC step (docs/algorithms.md §5), with ``Δℓ`` the incremental log-weights:

.. math::

    \log \hat Z_{t'} = \log \hat Z_t + \log \sum_i W_i\, e^{Δℓ_i}, \qquad
    W = \mathrm{softmax}(ℓ), \qquad ℓ ← ℓ + Δℓ,

then :func:`resample_if_needed`: if ``ESS(ℓ) ≤ κ N``, draw ancestors, copy the particles and
set ``ℓ = 0``; **otherwise keep the particles and the accumulated ``ℓ``**. The running sum
starts at ``log Ẑ_0 = log_mean_exp(ℓ_0)`` (the initial weights). ``Ẑ = exp(log Ẑ)`` is an
unbiased estimate of the normalizing constant when the resampling scheme is unbiased
(``E[count_i] = N W_i``, true of every scheme in :mod:`psijax.smc.resampling`) and the
particles start from the proposal the initial weights refer to; ``log Ẑ`` itself is biased low
(Jensen).

Degenerate weights. If every weight is zero (all ``ℓ`` are ``−inf`` or invalid),
:func:`normalize` returns zero weights and ``log_sum = −inf`` instead of NaN, :func:`ess`
returns 0, :func:`log_normalizer_increment` returns ``−inf`` and :func:`resample_if_needed`
does not resample. ``log Ẑ = −inf`` (``Ẑ = 0``) is then the correct value of the estimator for
that run; a driver should carry it (not NaN), report the run as collapsed (e.g. a flag in its
info), and may stop spending model evaluations on it — nothing it does afterwards can change
``Ẑ`` or give the particles a valid weighting.
"""

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike, ArrayLikeTree, ArrayTree, PRNGKey
from jax import lax

from psijax._checks import check_int, check_real
from psijax.smc.resampling import get_scheme

__all__ = [
    "ResampleResult",
    "sanitize",
    "normalize",
    "ess",
    "log_mean_exp",
    "resample_if_needed",
    "AdaptiveResampling",
    "log_normalizer_increment",
    "check_threshold",
]


class ResampleResult(NamedTuple):
    """Output of :func:`resample_if_needed` (a tuple: it unpacks as five values).

    particles
        The particles after the step: copies ``x[ancestors]`` if resampled, else the input.
    log_weights
        ``0`` if resampled, else the input log-weights (invalid entries set to ``−inf``).
    ancestors
        int32 ``(N,)`` ancestor indices; ``arange(N)`` when not resampled.
    resampled
        Boolean scalar.
    ess
        The ESS of the input weights, on which the decision was taken.

    """

    particles: ArrayTree
    log_weights: Array
    ancestors: Array
    resampled: Array
    ess: Array


def sanitize(log_weights: ArrayLike) -> Array:
    """``ℓ`` in (at least) float32 with NaN and ``+inf`` replaced by ``−inf`` (weight zero)."""
    log_weights = jnp.asarray(log_weights)
    log_weights = log_weights.astype(jnp.result_type(jnp.float32, log_weights.dtype))
    valid = jnp.isfinite(log_weights) | (log_weights == -jnp.inf)
    return jnp.where(valid, log_weights, -jnp.inf)


def normalize(log_weights: ArrayLike) -> tuple[Array, Array]:
    r"""Normalized weights and the log of the unnormalized sum.

    .. math::

        W_i = \frac{e^{ℓ_i}}{\sum_j e^{ℓ_j}}, \qquad
        \text{log\_sum} = \log \sum_j e^{ℓ_j} = m + \log \sum_j e^{ℓ_j − m},\ m = \max_j ℓ_j.

    Parameters
    ----------
    log_weights
        ``ℓ``, shape ``(N,)``; NaN and ``+inf`` count as ``−inf``.

    Returns
    -------
    ``(weights, log_sum)``. If every weight is zero: ``weights = 0`` and ``log_sum = −inf``
    (no NaN); test ``log_sum == −inf`` (or ``~jnp.isfinite``) to detect the collapse.

    """
    log_weights = sanitize(log_weights)
    shift = jnp.max(log_weights)
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    unnormalized = jnp.exp(log_weights - shift)
    total = jnp.sum(unnormalized)
    weights = unnormalized / jnp.where(total > 0, total, 1.0)
    return weights, jnp.log(total) + shift


def ess(log_weights: ArrayLike) -> Array:
    r"""Effective sample size ``ESS = 1 / Σ_i W_i²`` of the normalized weights.

    ``N`` for uniform weights, 1 for a single nonzero weight, 0 when every weight is zero
    (instead of ``inf``). The value is clipped to ``N`` so that float rounding never puts a
    uniform weighting above ``κN`` for ``κ = 1``.
    """
    weights, _ = normalize(log_weights)
    return _ess_from_weights(weights)


def log_mean_exp(x: ArrayLike, axis: int | None = None) -> Array:
    r"""``log( (1/n) Σ_i e^{x_i} )`` along ``axis`` (all elements if ``None``), stably.

    NaN and ``+inf`` count as ``−inf``; all ``−inf`` gives ``−inf``. With the initial log-weights
    this is the first term ``log Ẑ_0`` of the log-normalizer.
    """
    x = sanitize(x)
    n = x.size if axis is None else x.shape[axis]
    shift = jnp.max(x, axis=axis, keepdims=True)
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    total = jnp.sum(jnp.exp(x - shift), axis=axis, keepdims=True)
    result = jnp.log(total) + shift - jnp.log(jnp.asarray(n, x.dtype))
    return jnp.squeeze(result, axis=axis) if axis is not None else result.reshape(())


def log_normalizer_increment(
    log_weights_before: ArrayLike, incremental_log_weights: ArrayLike
) -> Array:
    r"""The increment of ``log Ẑ`` over one reweighting.

    .. math::

        \log \sum_i W_i^{\text{prev}} e^{Δℓ_i}
        = \operatorname{logsumexp}(ℓ + Δℓ) − \operatorname{logsumexp}(ℓ),
        \qquad W^{\text{prev}} = \mathrm{softmax}(ℓ),

    with ``ℓ`` the log-weights before the increment (after any resampling: zeros if the
    previous step resampled, the accumulated log-weights otherwise). Summing these increments
    over the steps and adding ``log_mean_exp(ℓ_0)`` gives ``log Ẑ``; ``Ẑ`` is unbiased for
    unbiased resampling (see the module docstring).

    Parameters
    ----------
    log_weights_before
        ``ℓ``, shape ``(N,)``.
    incremental_log_weights
        ``Δℓ``, shape ``(N,)``; NaN or ``+inf`` means weight zero.

    Returns
    -------
    A scalar; ``−inf`` if every updated weight is zero, including when ``ℓ`` already was.

    """
    before = sanitize(log_weights_before)
    after = sanitize(before + sanitize(incremental_log_weights))
    _, log_sum_before = normalize(before)
    _, log_sum_after = normalize(after)
    alive = jnp.isfinite(log_sum_before) & jnp.isfinite(log_sum_after)
    return jnp.where(alive, log_sum_after - jnp.where(alive, log_sum_before, 0.0), -jnp.inf)


def resample_if_needed(
    rng_key: PRNGKey,
    log_weights: ArrayLike,
    particles: ArrayLikeTree,
    threshold: float,
    scheme: Callable | str,
    *,
    num_resampled: int | None = None,
    allowed: ArrayLike = True,
) -> ResampleResult:
    r"""Adaptive resampling: resample when ``ESS ≤ κ N``, otherwise keep and accumulate.

    .. math::

        \text{if } \mathrm{ESS}(ℓ) ≤ κ N:\quad a \sim \text{scheme}(W),\ x ← x_a,\ ℓ ← 0;
        \qquad\text{else}\quad a = (0, …, N − 1),\ x,\ ℓ \text{ unchanged}.

    ``κ = 1`` resamples at every step (TDS); ``κ = 0`` never does (the ESS of a weighting with a
    positive weight is at least 1). A weighting whose weights are all zero (log-sum ``−inf``)
    is never resampled, whatever ``κ``: there is nothing to draw from, the log-weights stay
    ``−inf`` and the driver should treat the run as collapsed (module docstring). Uses
    ``lax.cond`` (under ``vmap`` both branches run and are selected).

    **Partial resampling** (``num_resampled = M < N``): only a subset ``S`` of ``M`` particles
    is resampled, the ``⌊M/2⌋`` of lowest and the ``⌈M/2⌉`` of highest weight (ties by index).
    ``M`` ancestors are drawn from ``S`` with the weights ``W_S / Σ_S W`` and each copy gets the
    log-weight ``log(Σ_{j∈S} e^{ℓ_j} / M)``; the particles outside ``S`` keep theirs. Given
    ``S``, the expected weighted measure ``Σ_i e^{ℓ_i} δ_{x_i}`` is unchanged (the scheme is
    unbiased within ``S``), so ``Ẑ`` stays unbiased, and the total ``Σ e^{ℓ}`` is preserved
    exactly. Light particles are replaced by copies of heavy ones while the rest of the
    population keeps its diversity.

    Parameters
    ----------
    rng_key
        PRNG key for the scheme.
    log_weights
        Accumulated log-weights ``ℓ``, shape ``(N,)``.
    particles
        Any pytree whose leaves have leading axis ``N`` (positions together with cached
        rewards, gradients, velocities: everything that must travel with a particle). Leaves
        keep their dtypes (integer tokens stay integers).
    threshold
        ``κ ∈ [0, 1]``.
    scheme
        A resampling function ``scheme(rng_key, weights, num_samples)`` or its name
        (:func:`psijax.smc.resampling.get_scheme`).
    num_resampled
        ``None`` (every particle) or ``M`` in ``[2, N]``: partial resampling.
    allowed
        A boolean (may be traced): when false the step does not resample, whatever the ESS
        (resampling only every ``F`` steps).

    Returns
    -------
    :class:`ResampleResult`
        ``(particles, log_weights, ancestors, resampled, ess)``.

    Raises
    ------
    ValueError
        If a concrete ``threshold`` is outside ``[0, 1]``, ``num_resampled`` outside
        ``[2, N]``, ``scheme`` is an unknown name, ``log_weights`` is empty or not ``(N,)``, or
        a leaf of ``particles`` has another leading axis.

    """
    check_threshold(threshold)
    if isinstance(scheme, str):
        scheme = get_scheme(scheme)
    log_weights = sanitize(log_weights)
    if log_weights.ndim != 1 or log_weights.shape[0] == 0:
        raise ValueError(
            f"`log_weights` must have shape (N,) with N >= 1, got {log_weights.shape}."
        )
    n = log_weights.shape[0]
    lengths = {jnp.shape(leaf)[:1] for leaf in jax.tree.leaves(particles)}
    if lengths - {(n,)}:
        raise ValueError(
            f"every leaf of `particles` must have the leading axis N = {n} of `log_weights`, got "
            f"leading shapes {sorted(lengths)}."
        )
    if num_resampled is not None:
        num_resampled = check_int(num_resampled, "num_resampled", 2, n)
    weights, log_sum = normalize(log_weights)
    ess_value = _ess_from_weights(weights)
    resampled = (ess_value <= threshold * n) & jnp.isfinite(log_sum) & jnp.asarray(allowed)

    # the weights are operands, not closed over: the branch not taken never sees them concrete
    # (a scheme checks concrete weights, and all-zero ones are kept, not resampled)
    def do_resample(operands):
        key, weights, log_weights, particles = operands
        if num_resampled is None or num_resampled == n:
            ancestors = scheme(key, weights, n).astype(jnp.int32)
            new_log_weights = jnp.zeros_like(log_weights)
        else:
            ancestors, new_log_weights = _resample_subset(key, log_weights, scheme, num_resampled)
        new_particles = jax.tree.map(lambda leaf: jnp.take(leaf, ancestors, axis=0), particles)
        return new_particles, new_log_weights, ancestors

    def keep(operands):
        _, _, log_weights, particles = operands
        return particles, log_weights, jnp.arange(n, dtype=jnp.int32)

    operands = (rng_key, weights, log_weights, jax.tree.map(jnp.asarray, particles))
    new_particles, new_log_weights, ancestors = lax.cond(resampled, do_resample, keep, operands)
    return ResampleResult(new_particles, new_log_weights, ancestors, resampled, ess_value)


@dataclasses.dataclass(frozen=True)
class AdaptiveResampling:
    r"""The resampling part of an SMC step: when, what and how to resample.

    Called as ``resampling(rng_key, log_weights, particles, index) -> ResampleResult`` by
    :func:`psijax.smc.feynman_kac.step`: at step ``index`` it resamples when
    ``ESS ≤ κN`` and ``index`` is a multiple of ``every`` (:func:`resample_if_needed`).

    Parameters
    ----------
    scheme
        A scheme name of :data:`psijax.smc.resampling.SCHEMES` or a BlackJAX-shaped scheme
        ``scheme(rng_key, weights, num_samples) -> ancestors``.
    ess_threshold
        ``κ ∈ [0, 1]``: ``1`` resamples at every allowed step, ``0`` never.
    every
        ``F >= 1``: resample only at steps ``0, F, 2F, …`` (the weights accumulate between).
    num_resampled
        ``None``, or ``M >= 2`` for partial resampling (:func:`resample_if_needed`).

    Raises
    ------
    ValueError, TypeError
        Naming the invalid field, when the part is built.

    """

    scheme: Callable | str = "systematic"
    ess_threshold: float = 0.5
    every: int = 1
    num_resampled: int | None = None

    def __post_init__(self):
        scheme = get_scheme(self.scheme) if isinstance(self.scheme, str) else self.scheme
        if not callable(scheme) or isinstance(scheme, AdaptiveResampling):
            raise TypeError(
                "`scheme` must be a scheme name or a callable (rng_key, weights, num_samples) -> "
                f"ancestors, got {scheme!r}."
            )
        object.__setattr__(self, "scheme", scheme)
        threshold = check_real(self.ess_threshold, "ess_threshold", ge=0.0, le=1.0, concrete=True)
        object.__setattr__(self, "ess_threshold", threshold)
        check_int(self.every, "every")
        if self.num_resampled is not None:
            check_int(self.num_resampled, "num_resampled", 2)

    def __call__(
        self, rng_key: PRNGKey, log_weights: Array, particles: ArrayTree, index: ArrayLike = 0
    ) -> ResampleResult:
        """Resample ``particles`` at step ``index`` if the weights call for it."""
        allowed = True if self.every == 1 else jnp.asarray(index) % self.every == 0
        return resample_if_needed(
            rng_key,
            log_weights,
            particles,
            self.ess_threshold,
            self.scheme,
            num_resampled=self.num_resampled,
            allowed=allowed,
        )


def check_threshold(threshold: float, name: str = "threshold") -> float | None:
    """``threshold`` as a float in ``[0, 1]`` (:func:`psijax._checks.check_real`): a
    ``TypeError`` or ``ValueError`` naming ``name`` otherwise, ``None`` for a traced value (it
    cannot be checked)."""
    return check_real(threshold, name, ge=0.0, le=1.0)


def _resample_subset(rng_key, log_weights, scheme, m):
    """Ancestors and log-weights of partial resampling of ``m`` particles (the ``⌊m/2⌋``
    lightest and ``⌈m/2⌉`` heaviest); see :func:`resample_if_needed`."""
    n = log_weights.shape[0]
    order = jnp.argsort(log_weights, stable=True)  # −inf (zero weight) first
    subset = jnp.concatenate([order[: m // 2], order[n - (m - m // 2) :]])
    sub_weights, sub_log_sum = normalize(log_weights[subset])
    picks = scheme(rng_key, sub_weights, m).astype(jnp.int32)
    ancestors = jnp.arange(n, dtype=jnp.int32).at[subset].set(subset[picks].astype(jnp.int32))
    share = sub_log_sum - jnp.log(jnp.asarray(m, log_weights.dtype))
    return ancestors, log_weights.at[subset].set(share)


def _ess_from_weights(weights: Array) -> Array:
    """``min(1/ΣW², N)``, and 0 for all-zero weights."""
    sum_sq = jnp.sum(jnp.square(weights))
    n = weights.shape[0]
    inverse = 1.0 / jnp.where(sum_sq > 0, sum_sq, 1.0)
    return jnp.where(sum_sq > 0, jnp.minimum(inverse, n), 0.0)
