"""Sample-quality metrics for (weighted) particle sets.

Every metric compares samples, given as arrays of shape ``(n, d)`` (an ``(n,)`` array is read
as ``n`` samples in ``d = 1``), and accepts optional nonnegative weights of shape ``(n,)``,
normalised internally (``None`` means uniform), so that the weighted particles of an SMC run
can be scored without resampling. The functions are pure JAX and jit-able; when the inputs are
concrete (not traced), shapes and weights are validated and a ``ValueError`` names the
offending argument.

**Non-finite values never give a number.** A sample holding NaN or ``±inf`` with positive
weight (or a non-finite weight) is a ``ValueError`` naming the argument when the inputs are
concrete; under ``jit`` (traced inputs, nothing can be raised) every metric returns NaN for
it. Samples of weight **zero** are ignored even when non-finite: an SMC's dead particles may
hold NaN, and their weight already says they do not count.

- :func:`mmd`: squared maximum mean discrepancy with an RBF kernel (median-heuristic, fixed or
  multi-scale bandwidth), unbiased U-statistic or biased V-statistic.
- :func:`energy_distance`: ``2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖`` (U- or V-statistic).
- :func:`sliced_wasserstein`: random projections and exact 1D Wasserstein-p between weighted
  empirical measures.
- :func:`mode_occupancy` / :func:`mode_tv`: mass nearest each mode and its total-variation
  distance to the exact mode weights.
- :func:`weighted_mean_and_sd`, :func:`effective_sample_size`: report helpers.

Pairwise sums (MMD, energy distance) run over blocks of rows with ``lax.map``, so memory is
``O(block_size · n)`` instead of ``O(n²)``: a 20k × 20k float32 kernel matrix would take 1.6 GB.
Squared distances use ``‖a‖² + ‖b‖² − 2⟨a, b⟩`` at ``Precision.HIGHEST`` on samples centred at
their pooled mean (distances are translation invariant; centring limits the cancellation).
Arithmetic is float32, or float64 when an input already is. Each public function validates
its arguments in Python and then calls a jitted core, so repeated calls in eager code do not
re-trace the block loop; inside a user's ``jit`` the cores are inlined.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey

from psijax._checks import check_int, check_real, concrete_value
from psijax._tree import accumulation_dtype

__all__ = [
    "mmd",
    "median_heuristic_bandwidth",
    "energy_distance",
    "sliced_wasserstein",
    "wasserstein_1d",
    "mode_occupancy",
    "mode_tv",
    "weighted_mean_and_sd",
    "effective_sample_size",
]

_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------
# Two-sample metrics
# ----------------------------------------------------------------------------------------------
def mmd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    x_weights: ArrayLike | None = None,
    y_weights: ArrayLike | None = None,
    bandwidth: str | float | Sequence[float] | Array = "median",
    biased: bool = False,
    block_size: int = 512,
) -> Array:
    r"""Squared maximum mean discrepancy with an RBF kernel.

    With normalised weights ``w`` on ``x`` and ``v`` on ``y`` and
    ``k(a, b) = Σ_ℓ exp(−‖a − b‖² / (2ℓ²))`` (one term per bandwidth):

    .. math::

        \widehat{\mathrm{MMD}}^2 = K_{xx} + K_{yy} − 2 \sum_{i, j} w_i v_j k(x_i, y_j),
        \qquad K_{xx} = \frac{\sum_{i ≠ j} w_i w_j k(x_i, x_j)}{1 − \sum_i w_i^2}

    (``K_yy`` likewise). For uniform weights ``K_xx`` is the usual U-statistic
    ``Σ_{i≠j} k_ij / (n(n − 1))`` and the estimate is unbiased: zero in expectation when ``x``
    and ``y`` come from the same distribution (it can be negative). For general weights ``K_xx``
    is the pair-weighted mean of ``k`` over pairs of *distinct* particles; with integer weights
    ``c_i`` it equals the mean over pairs of rows of the duplicated sample that stem from
    different particles (copies of one particle are never paired). ``biased=True`` gives the
    V-statistic ``Σ_{i,j} w_i w_j k_ij`` (diagonal included, no denominator) instead, which is
    ``‖μ̂_x − μ̂_y‖²`` in the RKHS, always ``≥ 0``, and equals the unweighted value on the
    duplicated sample exactly. With all the weight of a sample on one particle the U-statistic
    is undefined (NaN).

    References: Gretton et al. (2012), "A kernel two-sample test", JMLR 13.

    Parameters
    ----------
    x, y
        Samples, ``(n, d)`` and ``(m, d)`` (or ``(n,)``, ``(m,)``). The U-statistic needs at
        least two samples on each side.
    x_weights, y_weights
        Optional nonnegative weights ``(n,)``, ``(m,)``; normalised internally.
    bandwidth
        ``"median"`` (:func:`median_heuristic_bandwidth` of the pooled weighted samples), a
        float ``ℓ > 0``, or a sequence of floats (multi-scale: the kernels are summed).
        Compare methods at one fixed bandwidth: the median heuristic depends on the samples.
        No gradient flows through the median bandwidth (it acts as a constant).
    biased
        Use the V-statistic instead of the U-statistic.
    block_size
        Rows per block of the pairwise sums; memory is ``O(block_size · max(n, m))``.

    Returns
    -------
    The squared MMD, a scalar.

    """
    x, y, w, v, bad = _two_samples(x, y, x_weights, y_weights, need_pairs=not biased)
    _check_block_size(block_size)
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"`bandwidth` must be 'median', a float or floats, got {bandwidth!r}.")
        scales = None
    else:
        scales = jnp.asarray(bandwidth)
        if scales.ndim > 1 or scales.size == 0:
            raise ValueError(f"`bandwidth` must be a float or a 1D sequence, got {bandwidth!r}.")
        check_real(scales, "bandwidth", gt=0.0, scalar=False)
        scales = jnp.atleast_1d(scales)
    u_statistic, v_statistic = _mmd(x, y, w, v, scales, block_size=block_size)
    return _nan_if(v_statistic if biased else u_statistic, *bad)


def median_heuristic_bandwidth(
    x: ArrayLike,
    y: ArrayLike,
    *,
    x_weights: ArrayLike | None = None,
    y_weights: ArrayLike | None = None,
    max_points: int = 1000,
) -> Array:
    r"""Median heuristic for the RBF bandwidth: the median pairwise distance of the pooled sample.

    The pooled sample is ``z = [x; y]`` with weights ``q = [n·w, m·v] / (n + m)`` (uniform when
    ``x`` and ``y`` are unweighted). The bandwidth is the **lower weighted median** of
    ``{‖z_i − z_j‖ : i < j}`` with pair weights ``q_i q_j``: the smallest distance at which the
    cumulative pair weight reaches half the total. For unweighted samples this is the ordinary
    median over pairs of distinct points (the lower of the two middle values when the number of
    pairs is even). When ``n + m > max_points`` the pairs are taken among ``max_points`` rows at
    evenly spaced indices of ``z`` (a deterministic, stratified subsample; ``O(max_points²)``
    memory). The median is found by an exact bisection on the bit patterns of the squared
    distances (no sort; not differentiable: its gradient is 0). Returns 1 when the median is
    0 (e.g. all points equal) or no pair has weight. A cumulative weight equal to half up to
    float rounding (an even number of equally weighted pairs) may select either middle value.

    Parameters
    ----------
    x, y
        Samples ``(n, d)`` and ``(m, d)`` (or ``(n,)``, ``(m,)``).
    x_weights, y_weights
        Optional nonnegative weights; normalised internally.
    max_points
        Most pooled rows used.

    Returns
    -------
    The bandwidth ``ℓ`` (a scalar).

    """
    x, y, w, v, bad = _two_samples(x, y, x_weights, y_weights, need_pairs=False)
    if max_points < 2:
        raise ValueError(f"`max_points` must be >= 2, got {max_points!r}.")
    return _nan_if(_median_bandwidth(x, y, w, v, max_points=max_points), *bad)


@functools.partial(jax.jit, static_argnames=("max_points",))
def _median_bandwidth(x, y, w, v, max_points: int) -> Array:
    x, y, w, v = _prepare(x, y, w, v)
    n, m = x.shape[0], y.shape[0]
    z = jnp.concatenate([x, y])
    q = jnp.concatenate([w * n, v * m]) / (n + m)
    if n + m > max_points:
        rows = np.round(np.linspace(0, n + m - 1, max_points)).astype(np.int32)
        z, q = z[rows], q[rows]
    z = z - jnp.mean(z, axis=0)
    sq_dist = _sq_dist(z, z)
    sq_dist = jnp.where(sq_dist > 0, sq_dist, 0.0)  # +0.0, never −0.0 (a negative bit pattern)
    distinct = 1.0 - jnp.eye(z.shape[0], dtype=z.dtype)  # pairs i ≠ j (each pair twice)
    pair_weight = q[:, None] * q[None, :] * distinct
    pair_weight = jnp.where(jnp.sum(pair_weight) > 0, pair_weight, distinct)
    half = 0.5 * jnp.sum(pair_weight)
    # Lower weighted median without a sort: bisection on the bit patterns of the squared
    # distances (for floats ≥ 0 their integer order is their order), keeping
    # mass(≤ lo) < half ≤ mass(≤ hi); after as many steps as bits, hi is the smallest squared
    # distance whose cumulative pair weight reaches half.
    int_dtype = jnp.int64 if sq_dist.dtype == jnp.float64 else jnp.int32
    bits = jax.lax.bitcast_convert_type(sq_dist, int_dtype)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(jnp.where(bits <= mid, pair_weight, 0.0)) >= half
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    bounds = (jnp.asarray(-1, int_dtype), jnp.max(bits))
    _, hi = jax.lax.fori_loop(0, 8 * jnp.dtype(int_dtype).itemsize, bisect, bounds)
    median = jnp.sqrt(jax.lax.bitcast_convert_type(hi, sq_dist.dtype))
    return jnp.where(median > 0, median, jnp.ones_like(median))


def energy_distance(
    x: ArrayLike,
    y: ArrayLike,
    *,
    x_weights: ArrayLike | None = None,
    y_weights: ArrayLike | None = None,
    biased: bool = False,
    block_size: int = 512,
) -> Array:
    r"""Energy distance ``2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖``.

    With normalised weights ``w`` on ``x`` and ``v`` on ``y``:

    .. math::

        \hat{\mathcal E} = 2 \sum_{i, j} w_i v_j ‖x_i − y_j‖
            − \frac{\sum_{i ≠ j} w_i w_j ‖x_i − x_j‖}{1 − \sum_i w_i^2}
            − \frac{\sum_{i ≠ j} v_i v_j ‖y_i − y_j‖}{1 − \sum_j v_j^2}

    The within-sample terms are the same (weighted) U-statistics as in :func:`mmd`, so the
    estimate is zero in expectation for identical distributions (and can be negative); see
    :func:`mmd` for what the weighted form means for integer weights. ``biased=True`` uses the
    V-statistics ``Σ_{i,j} w_i w_j ‖x_i − x_j‖`` instead (always ``≥ 0``). The norm is computed
    as ``√(max(‖a − b‖², 0))`` with a gradient of 0 at coincident points (no NaN).

    References: Székely & Rizzo (2013), "Energy statistics: a class of statistics based on
    distances", J. Statist. Plann. Inference 143(8).

    Parameters
    ----------
    x, y
        Samples ``(n, d)`` and ``(m, d)`` (or ``(n,)``, ``(m,)``).
    x_weights, y_weights
        Optional nonnegative weights; normalised internally.
    biased
        Use the V-statistics for the within-sample terms.
    block_size
        Rows per block of the pairwise sums; memory is ``O(block_size · max(n, m))``.

    Returns
    -------
    The energy distance, a scalar.

    """
    x, y, w, v, bad = _two_samples(x, y, x_weights, y_weights, need_pairs=not biased)
    _check_block_size(block_size)
    u_statistic, v_statistic = _energy_distance(x, y, w, v, block_size=block_size)
    return _nan_if(v_statistic if biased else u_statistic, *bad)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _energy_distance(x, y, w, v, block_size: int) -> tuple[Array, Array]:
    x, y, w, v = _prepare(x, y, w, v)
    # the kernel is −‖a − b‖: MMD's formula K_xx + K_yy − 2K_xy then gives the energy distance
    return _two_sample_statistic(x, y, w, v, lambda d2: -_safe_sqrt(d2), block_size)


def sliced_wasserstein(
    rng_key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    x_weights: ArrayLike | None = None,
    y_weights: ArrayLike | None = None,
    num_projections: int = 128,
    p: float = 2,
) -> Array:
    r"""Sliced Wasserstein-p distance between weighted empirical measures.

    .. math::

        \widehat{SW}_p = \Big(\frac1L \sum_{l=1}^{L} W_p^p(θ_l^\top \hat μ_x, θ_l^\top \hat μ_y)
        \Big)^{1/p}, \qquad θ_l \sim \mathrm{Unif}(S^{d−1})

    Each 1D term is exact for the projected weighted empirical measures
    (:func:`wasserstein_1d`). The projections depend on ``rng_key`` and ``d`` only, so two calls
    with the same key use the same directions. The Monte Carlo error over directions is
    ``O(L^{-1/2})``.

    References: Bonneel et al. (2015), "Sliced and Radon Wasserstein barycenters of measures",
    J. Math. Imaging Vis. 51.

    Parameters
    ----------
    rng_key
        Key for the projection directions.
    x, y
        Samples ``(n, d)`` and ``(m, d)`` (or ``(n,)``, ``(m,)``).
    x_weights, y_weights
        Optional nonnegative weights; normalised internally.
    num_projections
        Number ``L`` of random directions.
    p
        Order ``p ≥ 1`` (a Python number: it is static under ``jit``).

    Returns
    -------
    The sliced Wasserstein-p distance, a scalar.

    """
    x, y, w, v, bad = _two_samples(x, y, x_weights, y_weights, need_pairs=False)
    p = _check_p(p)
    if num_projections < 1:
        raise ValueError(f"`num_projections` must be >= 1, got {num_projections!r}.")
    value = _sliced_wasserstein(rng_key, x, y, w, v, num_projections=num_projections, p=p)
    return _nan_if(value, *bad)


@functools.partial(jax.jit, static_argnames=("num_projections", "p"))
def _sliced_wasserstein(rng_key, x, y, w, v, num_projections: int, p: float) -> Array:
    x, y, w, v = _prepare(x, y, w, v)
    directions = jax.random.normal(rng_key, (num_projections, x.shape[1]), x.dtype)
    directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    x_proj = jnp.matmul(x, directions.T, precision=_HIGHEST)  # (n, L)
    y_proj = jnp.matmul(y, directions.T, precision=_HIGHEST)
    wp = jax.vmap(_wasserstein_1d_pp, in_axes=(1, None, 1, None, None))(x_proj, w, y_proj, v, p)
    return jnp.mean(wp) ** (1.0 / p)


def wasserstein_1d(
    x: ArrayLike,
    y: ArrayLike,
    *,
    x_weights: ArrayLike | None = None,
    y_weights: ArrayLike | None = None,
    p: float = 1,
) -> Array:
    r"""Exact Wasserstein-p distance between two weighted empirical measures on the line.

    .. math::

        W_p^p = \int_0^1 |F_x^{-1}(u) − F_y^{-1}(u)|^p \, du
              = \sum_k (u_k − u_{k−1}) \, |F_x^{-1}(u_k) − F_y^{-1}(u_k)|^p

    where ``F^{-1}(u) = min{t : F(t) ≥ u}`` and ``0 = u_0 ≤ u_1 ≤ …`` are the merged jump levels
    of both weighted CDFs: both quantile functions are constant on each ``(u_{k−1}, u_k]``, so
    the sum is exact. Cost ``O((n + m) log(n + m))``.

    Parameters
    ----------
    x, y
        One-dimensional samples ``(n,)`` and ``(m,)``.
    x_weights, y_weights
        Optional nonnegative weights; normalised internally.
    p
        Order ``p ≥ 1`` (a Python number).

    Returns
    -------
    ``W_p``, a scalar.

    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    for name, a in (("x", x), ("y", y)):
        if a.ndim != 1 or a.shape[0] == 0:
            raise ValueError(f"`{name}` must have shape (n,) with n >= 1, got {a.shape}.")
    p = _check_p(p)
    w = _check_weights(x_weights, x.shape[0], "x_weights")
    v = _check_weights(y_weights, y.shape[0], "y_weights")
    (x, bad_x), (y, bad_y) = _finite(x, w, "x"), _finite(y, v, "y")
    return _nan_if(_wasserstein_1d(x, y, w, v, p=p), bad_x, bad_y)


@functools.partial(jax.jit, static_argnames=("p",))
def _wasserstein_1d(x, y, w, v, p: float) -> Array:
    x, y, w, v = _prepare(x[:, None], y[:, None], w, v)
    return _wasserstein_1d_pp(x[:, 0], w, y[:, 0], v, p) ** (1.0 / p)


# ----------------------------------------------------------------------------------------------
# Modes and reports
# ----------------------------------------------------------------------------------------------
def mode_occupancy(x: ArrayLike, modes: ArrayLike, *, weights: ArrayLike | None = None) -> Array:
    r"""Fraction of the (weighted) samples nearest each mode.

    .. math::

        o_k = \sum_i w_i \, 1[\arg\min_{k'} ‖x_i − μ_{k'}‖ = k]

    Ties go to the lowest mode index.

    Parameters
    ----------
    x
        Samples ``(n, d)`` (or ``(n,)``).
    modes
        Mode locations ``(K, d)`` (or ``(K,)``).
    weights
        Optional nonnegative sample weights ``(n,)``; normalised internally.

    Returns
    -------
    Occupancies ``(K,)``, summing to 1.

    """
    x = _samples(x, "x")
    modes = _samples(modes, "modes")
    if modes.shape[1] != x.shape[1]:
        raise ValueError(
            f"`modes` must have the dimension of `x` ({x.shape[1]}), got shape {modes.shape}."
        )
    weights = _check_weights(weights, x.shape[0], "weights")
    (x, bad), (modes, bad_modes) = _finite(x, weights, "x"), _finite(modes, None, "modes")
    return _nan_if(_mode_occupancy(x, modes, weights), bad, bad_modes)


@jax.jit
def _mode_occupancy(x, modes, weights) -> Array:
    dtype = accumulation_dtype(x, modes)
    w = _normalize(weights, x.shape[0], dtype)
    x, modes = x.astype(dtype), modes.astype(dtype)
    # ‖x − μ_k‖² − ‖x‖² = ‖μ_k‖² − 2⟨x, μ_k⟩: O(nK) memory, not O(nKd)
    center = jnp.mean(modes, axis=0)
    x, modes = x - center, modes - center
    score = jnp.sum(jnp.square(modes), axis=1) - 2.0 * jnp.matmul(x, modes.T, precision=_HIGHEST)
    nearest = jax.nn.one_hot(jnp.argmin(score, axis=1), modes.shape[0], dtype=dtype)
    # A reduction, not segment_sum: XLA:CPU's scatter-add accumulates sequentially and drifts
    # (6e-4 at n = 1e5 in float32); the reduction sums pairwise.
    return jnp.sum(w[:, None] * nearest, axis=0)


def mode_tv(
    x: ArrayLike,
    modes: ArrayLike,
    target_weights: ArrayLike,
    *,
    weights: ArrayLike | None = None,
) -> Array:
    r"""Total-variation distance between mode occupancy and the exact mode weights.

    .. math::

        \mathrm{TV} = \tfrac12 \sum_k |o_k − π_k|

    with ``o`` from :func:`mode_occupancy` and ``π`` the target weights (normalised internally).

    Parameters
    ----------
    x
        Samples ``(n, d)`` (or ``(n,)``).
    modes
        Mode locations ``(K, d)`` (or ``(K,)``).
    target_weights
        Exact mode weights ``(K,)``, nonnegative.
    weights
        Optional nonnegative sample weights ``(n,)``; normalised internally.

    Returns
    -------
    The distance in ``[0, 1]``, a scalar.

    """
    occupancy = mode_occupancy(x, modes, weights=weights)
    target = _check_weights(target_weights, occupancy.shape[0], "target_weights")
    return _tv(occupancy, target)


@jax.jit
def _tv(occupancy: Array, target: Array) -> Array:
    target = _normalize(target, occupancy.shape[0], occupancy.dtype)
    return 0.5 * jnp.sum(jnp.abs(occupancy - target))


def weighted_mean_and_sd(
    values: ArrayLike, weights: ArrayLike | None = None
) -> tuple[Array, Array]:
    r"""Weighted mean and standard deviation along the first axis.

    .. math::

        m = \sum_i w_i v_i, \qquad s = \Big(\sum_i w_i (v_i − m)^2\Big)^{1/2}

    with normalised weights ``w``; ``s`` is the sd of the weighted empirical distribution (no
    Bessel correction), so integer weights give the values of the duplicated sample.

    Parameters
    ----------
    values
        Values ``(n,)`` or ``(n, ...)`` (e.g. rewards of the samples).
    weights
        Optional nonnegative weights ``(n,)``; normalised internally.

    Returns
    -------
    ``(mean, sd)``, each of shape ``values.shape[1:]``.

    """
    values = jnp.asarray(values)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError(f"`values` must have shape (n, ...) with n >= 1, got {values.shape}.")
    weights = _check_weights(weights, values.shape[0], "weights")
    values, bad = _finite(values, weights, "values")
    return _nan_if(_weighted_mean_and_sd(values, weights), bad)


@jax.jit
def _weighted_mean_and_sd(values: Array, weights: Array | None) -> tuple[Array, Array]:
    dtype = accumulation_dtype(values)
    w = _normalize(weights, values.shape[0], dtype)
    values = values.astype(dtype)
    w = w.reshape((-1,) + (1,) * (values.ndim - 1))
    mean = jnp.sum(w * values, axis=0)
    var = jnp.sum(w * jnp.square(values - mean), axis=0)
    return mean, jnp.sqrt(var)


def effective_sample_size(log_weights: ArrayLike) -> Array:
    r"""Effective sample size of unnormalised log-weights (along the last axis).

    .. math::

        \mathrm{ESS} = \frac{1}{\sum_i W_i^2} = \exp\big(2\,\mathrm{LSE}(\log w)
            − \mathrm{LSE}(2 \log w)\big), \qquad W_i = w_i / \sum_j w_j

    computed with log-sum-exp, so it is invariant to shifts of ``log w``, stable for large
    log-weights, and ``−inf`` entries (zero weights) are allowed; all ``−inf`` gives NaN. The
    result lies in ``[1, n]``.

    Parameters
    ----------
    log_weights
        Unnormalised log-weights ``(..., n)``.

    Returns
    -------
    The ESS, of shape ``log_weights.shape[:-1]``.

    """
    log_weights = jnp.asarray(log_weights)
    if log_weights.ndim == 0 or log_weights.shape[-1] == 0:
        raise ValueError(f"`log_weights` must have shape (..., n), got {log_weights.shape}.")
    return _effective_sample_size(log_weights)


@jax.jit
def _effective_sample_size(log_weights: Array) -> Array:
    log_weights = log_weights.astype(accumulation_dtype(log_weights))
    lse = jax.scipy.special.logsumexp
    return jnp.exp(2.0 * lse(log_weights, axis=-1) - lse(2.0 * log_weights, axis=-1))


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
def _is_traced(value) -> bool:
    return concrete_value(value) is None


def _samples(x: ArrayLike, name: str) -> Array:
    """``x`` as an ``(n, d)`` array; ``(n,)`` becomes ``(n, 1)``."""
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (n, d) or (n,) with n >= 1, got {x.shape}.")
    return x


def _check_weights(
    weights: ArrayLike | None, n: int, name: str, default_ones: bool = False
) -> Array | None:
    """``weights`` as an array of shape ``(n,)``; values checked when concrete. ``None`` stays
    ``None`` (uniform) or becomes ones with ``default_ones``."""
    if weights is None:
        return jnp.ones((n,)) if default_ones else None
    weights = jnp.asarray(weights)
    if weights.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},), got {weights.shape}.")
    if not _is_traced(weights):
        concrete = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(concrete)) or np.any(concrete < 0):
            raise ValueError(f"`{name}` must be finite and nonnegative.")
        if not concrete.sum() > 0:
            raise ValueError(f"`{name}` must have a positive sum.")
    return weights


def _finite(x: Array, weights: Array | None, name: str) -> tuple[Array, Array | None]:
    """``x`` with its non-finite rows of zero weight zeroed (an SMC's dead particles may hold
    NaN), and whether a row of positive weight is non-finite.

    Concrete inputs with such a row are a ``ValueError`` (no metric of them means anything);
    for traced inputs the flag is returned (``None`` when concrete) and the caller returns NaN.
    """
    axes = tuple(range(1, x.ndim))
    bad = ~jnp.all(jnp.isfinite(x), axis=axes) if axes else ~jnp.isfinite(x)
    used = jnp.ones_like(bad) if weights is None else jnp.asarray(weights) > 0
    invalid = jnp.any(bad & used)
    if not (_is_traced(x) or _is_traced(weights)):
        if bool(invalid):
            rows = np.flatnonzero(np.asarray(bad & used))
            raise ValueError(
                f"`{name}` holds non-finite values (NaN or inf) in {rows.size} sample(s) of "
                f"positive weight (first at index {rows[0]}): a metric of them would be "
                "meaningless. Drop them or give them weight zero."
            )
        invalid = None
    if not bool(jnp.issubdtype(x.dtype, jnp.inexact)):
        return x, invalid
    mask = bad.reshape(bad.shape + (1,) * len(axes))
    return jnp.where(mask, jnp.zeros((), x.dtype), x), invalid


def _nan_if(value, *flags):
    """``value`` (an array or a tuple of them), NaN where any traced flag is set."""
    flags = [f for f in flags if f is not None]
    if not flags:
        return value
    invalid = functools.reduce(jnp.logical_or, flags)
    return jax.tree.map(lambda a: jnp.where(invalid, jnp.nan, a), value)


def _normalize(weights: Array | None, n: int, dtype) -> Array:
    """Weights divided by their sum; uniform ``1/n`` for ``None``."""
    if weights is None:
        return jnp.full((n,), 1.0 / n, dtype)
    weights = weights.astype(dtype)
    return weights / jnp.sum(weights)


def _check_block_size(block_size: int) -> None:
    check_int(block_size, "block_size")


def _check_p(p) -> float:
    value = check_real(p, "p", ge=1.0)
    if value is None:
        raise ValueError(f"`p` must be a concrete number >= 1 (not traced), got {p!r}.")
    return value


def _two_samples(x, y, x_weights, y_weights, need_pairs: bool):
    """Validated ``(n, d)`` arrays ``x, y`` with equal ``d``, their checked weights and the
    non-finite flags of :func:`_finite`."""
    x, y = _samples(x, "x"), _samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"`x` and `y` must have the same dimension, got shapes {x.shape} and {y.shape}."
        )
    if need_pairs:
        for name, a in (("x", x), ("y", y)):
            if a.shape[0] < 2:
                raise ValueError(f"`{name}` needs at least 2 samples for the U-statistic.")
    # uniform weights as an array, so that weighted and unweighted calls share compilations
    w = _check_weights(x_weights, x.shape[0], "x_weights", default_ones=True)
    v = _check_weights(y_weights, y.shape[0], "y_weights", default_ones=True)
    x, bad_x = _finite(x, w, "x")
    y, bad_y = _finite(y, v, "y")
    return x, y, w, v, [bad_x, bad_y]


def _prepare(x, y, w, v):
    """Inside a core: common float dtype and normalised weights."""
    dtype = accumulation_dtype(x, y)
    w = _normalize(w, x.shape[0], dtype)
    v = _normalize(v, y.shape[0], dtype)
    return x.astype(dtype), y.astype(dtype), w, v


@functools.partial(jax.jit, static_argnames=("block_size",))
def _mmd(x, y, w, v, scales, block_size: int) -> tuple[Array, Array]:
    x, y, w, v = _prepare(x, y, w, v)
    if scales is None:
        scales = _median_bandwidth(x, y, w, v, max_points=1000)[None]
    inv_two_sq = 0.5 / jnp.square(scales.astype(x.dtype))

    def kernel(sq_dist: Array) -> Array:
        return jnp.sum(jnp.exp(-sq_dist[..., None] * inv_two_sq), axis=-1)

    return _two_sample_statistic(x, y, w, v, kernel, block_size)


def _sq_dist(a: Array, b: Array) -> Array:
    """``‖a_i − b_j‖²`` as ``‖a_i‖² + ‖b_j‖² − 2⟨a_i, b_j⟩``, clipped at 0."""
    cross = jnp.matmul(a, b.T, precision=_HIGHEST)
    sq = jnp.sum(jnp.square(a), axis=1)[:, None] + jnp.sum(jnp.square(b), axis=1)[None, :]
    return jnp.maximum(sq - 2.0 * cross, 0.0)


def _safe_sqrt(sq: Array) -> Array:
    """``√sq`` with value and gradient 0 at ``sq = 0`` (instead of an infinite gradient)."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _pair_sum(
    a: Array,
    wa: Array,
    b: Array,
    wb: Array,
    kernel: Callable[[Array], Array],
    exclude_diagonal: bool,
    block_size: int,
) -> Array:
    """``Σ_i Σ_j wa_i wb_j kernel(‖a_i − b_j‖²)`` (``i ≠ j`` if ``exclude_diagonal``).

    ``lax.map`` over blocks of ``block_size`` rows of ``a`` (zero-weight rows pad the last
    block), so at most ``block_size × len(b)`` kernel values exist at once.
    """
    n, m = a.shape[0], b.shape[0]
    col_index = jnp.arange(m)

    def block_sum(args):
        a_blk, wa_blk, rows = args
        values = kernel(_sq_dist(a_blk, b))  # (block, m)
        if exclude_diagonal:
            values = jnp.where(rows[:, None] == col_index[None, :], 0.0, values)
        return jnp.dot(wa_blk, jnp.dot(values, wb, precision=_HIGHEST), precision=_HIGHEST)

    if n <= block_size:  # one block: no loop
        return block_sum((a, wa, jnp.arange(n)))
    block = block_size
    num_blocks = -(-n // block)
    pad = num_blocks * block - n
    a_blocks = jnp.pad(a, ((0, pad), (0, 0))).reshape(num_blocks, block, a.shape[1])
    wa_blocks = jnp.pad(wa, (0, pad)).reshape(num_blocks, block)
    row_index = jnp.arange(num_blocks * block).reshape(num_blocks, block)
    return jnp.sum(jax.lax.map(block_sum, (a_blocks, wa_blocks, row_index)))


def _two_sample_statistic(x, y, w, v, kernel, block_size: int) -> tuple[Array, Array]:
    """``K_xx + K_yy − 2K_xy`` with U- and with V-statistic within-sample terms (both).

    One pass gives both: the off-diagonal sum ``S = Σ_{i≠j} w_i w_j k_ij`` (the diagonal is
    masked exactly, so rounding in computed diagonal distances cannot leak in) yields the
    U-statistic ``S/(1 − Σ w_i²)`` and the V-statistic ``S + Σ w_i² k(a, a)`` with the exact
    ``k(a, a) = kernel(0)``.
    """
    center = 0.5 * (jnp.mean(x, axis=0) + jnp.mean(y, axis=0))
    x, y = x - center, y - center
    k_self = kernel(jnp.zeros((), x.dtype))

    def within(a: Array, wa: Array) -> tuple[Array, Array]:
        off_diagonal = _pair_sum(a, wa, a, wa, kernel, True, block_size)
        sum_sq = jnp.sum(jnp.square(wa))
        return off_diagonal / (1.0 - sum_sq), off_diagonal + sum_sq * k_self

    cross = 2.0 * _pair_sum(x, w, y, v, kernel, False, block_size)
    (ux, vx), (uy, vy) = within(x, w), within(y, v)
    return ux + uy - cross, vx + vy - cross


def _wasserstein_1d_pp(x: Array, w: Array, y: Array, v: Array, p) -> Array:
    """``W_p^p`` between ``Σ w_i δ_{x_i}`` and ``Σ v_j δ_{y_j}`` on the line (normalised w, v)."""
    x_order, y_order = jnp.argsort(x), jnp.argsort(y)
    x_sorted, y_sorted = x[x_order], y[y_order]
    x_cdf, y_cdf = jnp.cumsum(w[x_order]), jnp.cumsum(v[y_order])
    x_cdf, y_cdf = x_cdf / x_cdf[-1], y_cdf / y_cdf[-1]  # both end at exactly 1
    n, m = x.shape[0], y.shape[0]
    from_x = jnp.concatenate([jnp.ones(n, jnp.int32), jnp.zeros(m, jnp.int32)])
    levels, from_x = jax.lax.sort((jnp.concatenate([x_cdf, y_cdf]), from_x), num_keys=1)
    widths = jnp.diff(levels, prepend=jnp.zeros((1,), levels.dtype))
    # F⁻¹ is constant on (u_{k−1}, u_k] and equals F⁻¹(u_k) = the point of index #{i: F_i < u_k}
    # (a searchsorted): the number of the sample's levels before the first level equal to u_k
    # in the merged order.
    position = jnp.arange(n + m)
    first_equal = jax.lax.cummax(jnp.where(jnp.diff(levels, prepend=-1.0) > 0, position, 0))
    x_below = (jnp.cumsum(from_x) - from_x)[first_equal]
    y_below = first_equal - x_below
    x_quantile = x_sorted[jnp.minimum(x_below, n - 1)]
    y_quantile = y_sorted[jnp.minimum(y_below, m - 1)]
    return jnp.sum(widths * jnp.abs(x_quantile - y_quantile) ** p)
