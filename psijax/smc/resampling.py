r"""Resampling schemes: draw ancestor indices from normalized particle weights.

Every scheme has BlackJAX's signature ``scheme(rng_key, weights, num_samples) -> ancestors``:
``weights`` are the normalized weights ``W`` of shape ``(N,)`` and ``ancestors`` is an int32
array of shape ``(num_samples,)`` with values in ``[0, N)``. With ``M = num_samples``, every
scheme is unbiased,

.. math::

    \mathbb E[\#\{k : a_k = i\}] = M W_i \qquad\text{for every particle } i,

and costs ``O(N + M)`` (systematic, SSP, residual's integer part) or ``O((N + M) log N)`` (a binary
search of sorted uniforms in the cumulative weights); no scheme builds an ``N × M`` array
(``jax.random.categorical`` with ``shape=(M,)`` would). All are jit- and vmap-friendly.

Why not BlackJAX's functions as they are. ``blackjax.smc.resampling`` (1.7) has the same four
inverse-CDF schemes, but

* they search ``u`` in the float32 cumulative sum with ``side="left"`` and clip the result to
  ``N − 1``: when the cumulative sum ends below 1 (weights normalized in float32, or in a
  lower precision upstream) every ``u`` above it selects particle ``N − 1`` even if its weight is
  0, and ``u = 0`` selects particle 0 even if its weight is 0;
* ``multinomial`` turns ``N + 1`` uniforms into sorted uniforms with ``−log(u)``; a uniform
  is exactly 0 with probability ``2⁻²³`` in float32, so at ``N = 2²⁰`` about one call in eight
  produces ``inf``, every later "uniform" is NaN and most ancestors become ``N − 1``;
* ``residual`` inherits both through its multinomial draw of the residuals.

Multinomial, stratified and residual here share one inverse-CDF search (:func:`_inverse_cdf`)
that is immune to these problems: non-finite and negative weights count as zero, the uniforms
are scaled by the actual total of the cumulative sum (so a sum of ``1 − 10⁻⁶`` or of ``0.98`` is
renormalized instead of biasing the last particle), the search uses ``side="right"`` (a
zero-weight particle has an empty interval ``[C_{i−1}, C_i)``), and any index that floating
point still lands on a zero-weight particle (or past the end) is moved to the next particle of
positive weight, or to the last one.

**Degenerate weights.** Called with concrete weights, every scheme raises a ``ValueError``
for an empty vector, a ``+inf`` entry, or no positive finite entry (all zero, NaN or
negative): there is no right answer to return. Under ``jit`` (traced weights) nothing can be
raised: NaN, ``±inf`` and negative entries count as zero and, if no entry is left positive,
**every scheme draws from uniform weights** (so the result is the same law for every
scheme, not an artefact of one). An SMC never gets there:
:func:`psijax.smc.weights.resample_if_needed` does not resample all-zero weights and the run
reports itself collapsed (``SMCInfo.collapsed``); a user's own loop can test
``jnp.any(weights > 0)``. Systematic and SSP are computed from offspring counts instead (see
their docstrings). A limit that remains for the inverse-CDF schemes: the float32 cumulative sum
resolves an interval only to about ``2⁻²⁴`` absolute, i.e. a relative ``N·6·10⁻⁸`` of an average
weight (6 % at ``N = 2²⁰``, 0.4 % at ``2¹⁶``, negligible at ``N ≲ 10⁴``); enable float64 for
such sizes if that matters.

The Srinivasan sampling process (:func:`ssp`) is written here: BlackJAX does not have it.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey
from jax import lax

from psijax._checks import concrete_value

__all__ = [
    "multinomial",
    "stratified",
    "systematic",
    "residual",
    "ssp",
    "get_scheme",
    "offspring_counts",
    "SCHEMES",
]


def multinomial(rng_key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    r"""Multinomial resampling: ``num_samples`` independent draws from the weights.

    .. math::

        a_k = F^{-1}(u_{(k)}), \qquad u_{(1)} ≤ … ≤ u_{(M)} \text{ sorted } U(0, 1),

    with ``F⁻¹(u) = min{i : C_i > u}`` and ``C_i = Σ_{j ≤ i} W_j``. The sorted uniforms are
    normalized partial sums of ``M + 1`` standard exponentials (Chopin & Papaspiliopoulos 2020,
    §9.4), drawn as ``−log(1 − u)`` so that none is infinite. Offspring counts are
    ``Multinomial(M, W)``: the highest-variance scheme, kept for reference and for algorithms that
    need conditionally independent ancestors.

    Parameters
    ----------
    rng_key
        PRNG key.
    weights
        Normalized weights, shape ``(N,)``.
    num_samples
        Number of ancestors ``M`` to draw.

    Returns
    -------
    Ancestor indices, int32, shape ``(num_samples,)``, sorted.

    """
    weights = _as_weights(weights)
    spacings = jax.random.exponential(rng_key, (num_samples + 1,), weights.dtype)
    partial_sums = jnp.cumsum(spacings)
    uniforms = partial_sums[:-1] / partial_sums[-1]
    return _inverse_cdf(weights, uniforms)


def stratified(rng_key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    r"""Stratified resampling: one uniform in each stratum ``[k/M, (k+1)/M)``.

    .. math::

        a_k = F^{-1}\Big(\frac{k + U_k}{M}\Big), \qquad U_k \overset{iid}{\sim} U(0, 1),
        \quad k = 0, …, M − 1.

    Parameters
    ----------
    rng_key
        PRNG key.
    weights
        Normalized weights, shape ``(N,)``.
    num_samples
        Number of ancestors ``M`` to draw.

    Returns
    -------
    Ancestor indices, int32, shape ``(num_samples,)``, sorted.

    """
    weights = _as_weights(weights)
    offsets = jax.random.uniform(rng_key, (num_samples,), weights.dtype)
    return _inverse_cdf(weights, _grid(num_samples, offsets, weights.dtype))


def systematic(rng_key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    r"""Systematic resampling: one shared uniform shifts a regular grid.

    .. math::

        a_k = F^{-1}\Big(\frac{k + U}{M}\Big), \qquad U \sim U(0, 1), \quad k = 0, …, M − 1.

    Particle ``i`` receives the number of grid points in ``[C_{i−1}, C_i)``, an interval of
    length ``W_i`` in a grid of spacing ``1/M``: always ``⌊M W_i⌋`` or ``⌈M W_i⌉``.

    Computed from offspring counts rather than by searching the float32 cumulative sum, whose
    resolution near 1 (``2⁻²⁴``) is a few percent of a weight at ``N = 2²⁰`` and would break the
    floor/ceil property. With ``m_i = M W_i = ⌊m_i⌋ + p_i`` and the running fractional offset
    ``F_i = frac(U + Σ_{j ≤ i} p_j)`` (``F_{−1} = U``), the count is

    .. math::

        \text{count}_i = ⌊m_i⌋ + (F_{i−1} + p_i − F_i), \qquad F_{i−1} + p_i − F_i ∈ \{0, 1\},

    with ``F`` an associative scan of addition modulo 1 (``O(N)``, depth ``log N``, absolute error
    ``≲ 10⁻⁶``: the 0/1 term is rounded). Zero weights get 0. The total is ``M`` except when
    ``U`` lies within that error of 0 or 1, where it may be ``M ± 1`` (then the last slot is
    dropped or repeats the last particle with offspring).

    Parameters
    ----------
    rng_key
        PRNG key.
    weights
        Normalized weights, shape ``(N,)``.
    num_samples
        Number of ancestors ``M`` to draw.

    Returns
    -------
    Ancestor indices, int32, shape ``(num_samples,)``, sorted.

    """
    weights = _as_weights(weights)
    offset = jax.random.uniform(rng_key, (), weights.dtype)
    expected = num_samples * weights / _total(weights)
    integer_part = jnp.floor(expected)
    fractional = jnp.clip(expected - integer_part, 0.0, 1.0)

    def add_mod_one(a, b):
        total = a + b
        return total - jnp.floor(total)

    first = add_mod_one(fractional[0], offset)
    running = lax.associative_scan(add_mod_one, fractional.at[0].set(first))
    previous = jnp.concatenate([offset[None], running[:-1]])
    wraps = jnp.round(previous + fractional - running).astype(jnp.int32)
    wraps = jnp.where(fractional > 0, jnp.clip(wraps, 0, 1), 0)
    return _counts_to_ancestors(integer_part.astype(jnp.int32) + wraps, num_samples)


def residual(rng_key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    r"""Residual resampling: deterministic integer parts, multinomial residuals.

    With ``m_i = M W_i``, particle ``i`` first gets ``⌊m_i⌋`` copies; the remaining
    ``R = M − Σ_i ⌊m_i⌋`` ancestors are drawn independently with probabilities
    ``(m_i − ⌊m_i⌋)/R``, so ``E[count_i] = ⌊m_i⌋ + R·(m_i − ⌊m_i⌋)/R = m_i``.

    Static shapes: ``M`` independent residual draws are made and the last ``R`` slots use them
    (the draws are i.i.d. and unsorted, so any ``R`` of them have the right law; BlackJAX
    permutes sorted draws instead).

    Parameters
    ----------
    rng_key
        PRNG key.
    weights
        Normalized weights, shape ``(N,)``.
    num_samples
        Number of ancestors ``M`` to draw.

    Returns
    -------
    Ancestor indices, int32, shape ``(num_samples,)``; the integer-part block comes first.

    """
    weights = _as_weights(weights)
    expected = num_samples * weights / _total(weights)
    integer_part = jnp.floor(expected)
    residual_weights = expected - integer_part
    uniforms = jax.random.uniform(rng_key, (num_samples,), weights.dtype)
    residual_draws = _inverse_cdf(residual_weights, uniforms)

    counts = integer_part.astype(jnp.int32)
    num_deterministic = jnp.sum(counts)
    deterministic = _counts_to_ancestors(counts, num_samples)
    slots = jnp.arange(num_samples)
    return jnp.where(slots < num_deterministic, deterministic, residual_draws)


def ssp(rng_key: PRNGKey, weights: ArrayLike, num_samples: int) -> Array:
    r"""Srinivasan sampling process (SSP) resampling.

    With ``m_i = M W_i`` (``M = num_samples``), integer parts ``⌊m_i⌋`` and fractional parts
    ``p_i = m_i − ⌊m_i⌋``, the fractional parts are walked sequentially keeping one "open"
    index ``i`` (initially the first particle). For the next particle ``j``:

    * if ``p_i + p_j < 1``: with probability ``p_j/(p_i + p_j)``, ``p_j ← p_i + p_j`` and
      ``p_i ← 0``, otherwise ``p_i ← p_i + p_j`` and ``p_j ← 0``;
    * if ``p_i + p_j ≥ 1``: with probability ``(1 − p_j)/(2 − p_i − p_j)``, ``p_i ← 1`` and
      ``p_j ← p_i + p_j − 1``, otherwise ``p_j ← 1`` and ``p_i ← p_i + p_j − 1``;

    whichever of the two is still fractional is the open index for the next step; the other is
    final (0 or 1). Each step keeps ``E[p_i]``, ``E[p_j]`` and ``p_i + p_j``, so the offspring
    ``⌊m_i⌋ + b_i`` (``b_i`` the final 0/1) has ``E = m_i``, is always ``⌊m_i⌋`` or
    ``⌈m_i⌉``, and the counts sum to exactly ``M``. Gerber, Chopin & Whiteley (2019), "Negative
    association, ordering and convergence of resampling methods", Annals of Statistics 47(4).

    The walk is a ``lax.scan`` over the particles (``O(N)``, sequential); the counts become
    ancestor indices in ``O(N + M)``. The last open index gets ``b = M − Σ⌊m⌋ − (number of
    1s so far)``, which in exact arithmetic equals its remaining fractional part (0 or 1); this
    makes the total exactly ``M`` despite float32 rounding of the walk (whose drift is
    ``≲ N·6e−8``, below ½ for ``N < 2²³``). ``b`` is clipped to ``{0, 1}`` and set to 0 on a
    zero-weight particle; should that ever leave fewer than ``M`` ancestors, the last slots
    repeat the last particle with positive offspring.

    Generalization: ``num_samples`` may differ from ``N`` — the process is the same with
    ``m_i = M W_i`` (whose sum is ``M``), with the same guarantees.

    Parameters
    ----------
    rng_key
        PRNG key.
    weights
        Normalized weights, shape ``(N,)``.
    num_samples
        Number of ancestors ``M`` to draw.

    Returns
    -------
    Ancestor indices, int32, shape ``(num_samples,)``, sorted.

    """
    weights = _as_weights(weights)
    n = weights.shape[0]
    expected = num_samples * weights / _total(weights)
    integer_part = jnp.floor(expected)
    fractional = jnp.clip(expected - integer_part, 0.0, 1.0)
    uniforms = jax.random.uniform(rng_key, (n,), weights.dtype)

    def pair(carry, inputs):
        i, p_i = carry
        j, p_j, u = inputs
        total = p_i + p_j
        below_one = total < 1.0
        # P(j takes the mass) if p_i + p_j < 1; P(i becomes 1) otherwise.
        numerator = jnp.where(below_one, p_j, 1.0 - p_j)
        denominator = jnp.where(below_one, total, 2.0 - total)
        prob = jnp.where(denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1), 0)
        event = u < prob
        # below one: event → j open with `total`, i final 0; else i open with `total`, j final 0.
        # at/above one: event → i final 1, j open with `total − 1`; else j final 1, i open.
        j_open = event
        open_p = jnp.where(below_one, total, total - 1.0)
        final_idx = jnp.where(j_open, i, j)
        final_bit = jnp.where(below_one, 0, 1).astype(jnp.int32)
        new_open = jnp.where(j_open, j, i)
        return (new_open, open_p), (final_idx, final_bit)

    init = (jnp.zeros((), jnp.int32), fractional[0])
    inputs = (jnp.arange(1, n, dtype=jnp.int32), fractional[1:], uniforms[1:])
    (open_idx, _), (final_idx, final_bits) = lax.scan(pair, init, inputs)

    counts = integer_part.astype(jnp.int32)
    bits = jnp.zeros(n, jnp.int32).at[final_idx].set(final_bits)
    last_bit = num_samples - jnp.sum(counts) - jnp.sum(final_bits)
    last_bit = jnp.where(weights[open_idx] > 0, jnp.clip(last_bit, 0, 1), 0)
    bits = bits.at[open_idx].set(last_bit)
    return _counts_to_ancestors(counts + bits, num_samples)


SCHEMES: dict[str, Callable] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
    "ssp": ssp,
}


def get_scheme(name: str) -> Callable:
    """The resampling function called ``name``, one of :data:`SCHEMES`.

    Raises
    ------
    ValueError
        If ``name`` is not a known scheme; the message lists the allowed names.

    """
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        allowed = ", ".join(repr(k) for k in SCHEMES)
        raise ValueError(f"`resampling` must be one of {allowed}, got {name!r}.") from None


def offspring_counts(ancestors: ArrayLike, n: int) -> Array:
    """Number of offspring of each of ``n`` particles: ``count_i = #{k : ancestors_k = i}``.

    Returns
    -------
    int32 array of shape ``(n,)`` summing to ``len(ancestors)``.

    """
    ancestors = jnp.asarray(ancestors)
    return jnp.zeros(n, jnp.int32).at[ancestors].add(1, mode="drop")


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------
def _as_weights(weights: ArrayLike) -> Array:
    """Weights as a float (≥ float32) vector with NaN, ±inf and negative entries set to 0, and
    all ones when no entry is left positive (traced weights only: concrete ones are checked).
    """
    weights = jnp.asarray(weights)
    if weights.ndim != 1 or weights.shape[0] == 0:
        raise ValueError(f"`weights` must have shape (N,) with N >= 1, got {weights.shape}.")
    concrete = concrete_value(weights)
    if concrete is not None and np.issubdtype(concrete.dtype, np.number):
        values = concrete.astype(np.float64)
        if np.any(np.isposinf(values)):
            raise ValueError(
                f"`weights` holds +inf (first at index {np.flatnonzero(np.isposinf(values))[0]}):"
                " normalize the log-weights first (psijax.smc.weights.normalize)."
            )
        if not np.any(np.isfinite(values) & (values > 0)):
            raise ValueError(
                "`weights` has no positive finite entry: there is nothing to resample from "
                "(an SMC whose weights are all zero has collapsed; "
                "psijax.smc.weights.resample_if_needed does not resample then)."
            )
    weights = weights.astype(jnp.result_type(jnp.float32, weights.dtype))
    valid = jnp.where(jnp.isfinite(weights) & (weights > 0), weights, 0.0)
    return jnp.where(jnp.any(valid > 0), valid, jnp.ones_like(valid))


def _total(weights: Array) -> Array:
    """``Σ W``, or 1 when it is 0 (no positive weight; then everything downstream is 0)."""
    total = jnp.sum(weights)
    return jnp.where(total > 0, total, 1.0)


def _grid(num_samples: int, offsets: ArrayLike, dtype) -> Array:
    """``(k + U_k)/M`` for ``k = 0, …, M − 1``."""
    return (jnp.arange(num_samples, dtype=dtype) + offsets) / num_samples


def _inverse_cdf(weights: Array, uniforms: Array) -> Array:
    r"""``F⁻¹(u) = min{i : C_i > u·C_N}`` for ``u ∈ [0, 1)``, never a zero-weight particle.

    ``C_i = Σ_{j ≤ i} W_j`` is the float cumulative sum and ``u`` is scaled by its actual last
    value, so weights that do not sum to 1 exactly are renormalized. ``side="right"`` gives a
    zero-weight particle the empty interval ``[C_{i−1}, C_i)``; a result that floating point puts
    past the end or on a zero weight anyway is moved to the next positive weight (or the last
    one). Weights with no positive entry are treated as uniform. ``O((N + M) log N)``.
    """
    n = weights.shape[0]
    positive = weights > 0
    any_positive = jnp.any(positive)
    weights = jnp.where(any_positive, weights, 1.0)
    positive = positive | ~any_positive
    cumulative = jnp.cumsum(weights)
    idx = jnp.searchsorted(cumulative, uniforms * cumulative[-1], side="right")
    idx = jnp.minimum(idx, n - 1)

    particles = jnp.arange(n, dtype=jnp.int32)
    next_positive = lax.cummin(jnp.where(positive, particles, n), reverse=True)
    last_positive = jnp.max(jnp.where(positive, particles, -1))
    snap = jnp.where(next_positive < n, next_positive, last_positive)
    return snap[idx].astype(jnp.int32)


def _counts_to_ancestors(counts: Array, num_samples: int) -> Array:
    """Indices ``i`` repeated ``counts_i`` times, as ``num_samples`` slots, in ``O(N + M)``.

    Slot ``k`` gets the largest particle with positive count whose block starts at or before
    ``k`` (a scatter-max of the block starts followed by a running max). If the counts sum to
    more than ``num_samples`` the excess is dropped; if to fewer, the last slots repeat the last
    particle with a positive count (the schemes above make the sum exactly ``num_samples``).
    """
    n = counts.shape[0]
    starts = jnp.cumsum(counts) - counts
    owners = jnp.where(counts > 0, jnp.arange(n, dtype=jnp.int32), 0)
    starts = jnp.where(counts > 0, starts, num_samples)  # empty blocks are dropped
    marks = jnp.zeros(num_samples, jnp.int32).at[starts].max(owners, mode="drop")
    return lax.cummax(marks).astype(jnp.int32)
