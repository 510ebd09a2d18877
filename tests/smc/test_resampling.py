"""Resampling schemes (:mod:`psijax.smc.resampling`).

Properties tested, for every scheme (multinomial, stratified, systematic, residual, SSP):

* unbiasedness ``E[count_i] = M W_i`` for every particle of a weight vector with zeros, tiny
  and large weights, for ``M = N`` (and ``M ≠ N`` for systematic, residual, SSP), by
  per-particle z-scores over 4000 replicates — and the same gate rejects two deliberately
  biased schemes (power check);
* the support of the offspring counts: totals are exactly ``M``; systematic and SSP give
  ``⌊M W_i⌋`` or ``⌈M W_i⌉``; residual at least ``⌊M W_i⌋``; zero weights are never selected;
* robustness: weights whose float32 sum is below 1 (``1 − 10⁻⁶``, ``0.999``, 10⁵ equal
  weights), one-hot, NaN/negative/inf/all-zero weights never give an out-of-range index or a
  zero-weight ancestor (BlackJAX's versions do select a zero-weight last particle: the reason
  we do not reuse them as they are);
* scale: systematic and SSP at ``N = 2²⁰`` run in well under a second after compilation, with
  exact totals and floor/ceil counts, and no scheme's HLO holds an ``N × N`` array;
* ``get_scheme`` and ``offspring_counts``.

Statistical gate: ``|z| < Z_GATE = 4.5``. The unbiasedness test computes 8 (scheme, M) pairs ×
64 particles = 512 z-scores; by the Bonferroni bound its false-alarm probability is at
most ``512 · P(|N(0, 1)| > 4.5) ≈ 3.5e-3`` (and the seeds are fixed, so a run is reproducible).
"""

import functools
import time

import blackjax.smc.resampling as bjx_resampling
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.smc import resampling
from psijax.smc.resampling import SCHEMES, get_scheme, offspring_counts

Z_GATE = 4.5
NUM_REPLICATES = 4000
N = 64


def _test_weights() -> np.ndarray:
    """64 float32 weights: 8 exact zeros, tiny ones (M·W ~ 1e-5 … 1e-2), one large (M·W ≈ 13)."""
    rng = np.random.default_rng(0)
    w = rng.gamma(0.7, size=N)
    w[[3, 10, 11, 30, 41, 50, 62, 63]] = 0.0  # zeros, incl. the last two
    w[[5, 20, 33]] = [1e-7, 1e-5, 1e-3]
    w /= w.sum()
    w[17] += 0.2  # one particle with m ≈ 13 offspring at M = N
    return (w / w.sum()).astype(np.float32)


WEIGHTS = _test_weights()


def _squared_multinomial(rng_key, weights, num_samples):
    """Biased on purpose: draws with probabilities ∝ W²."""
    return resampling.multinomial(rng_key, weights**2 / jnp.sum(weights**2), num_samples)


def _rounding_systematic(rng_key, weights, num_samples):
    """Biased on purpose: systematic with the offset fixed at ½ (deterministic rounding)."""
    del rng_key
    return resampling._inverse_cdf(weights, (jnp.arange(num_samples) + 0.5) / num_samples)


BIASED = {"squared_multinomial": _squared_multinomial, "rounding": _rounding_systematic}


SIZES = (N, 100)  # M = N and M ≠ N


def _sizes(name: str) -> tuple[int, ...]:
    """``M`` values tested. Multinomial and stratified use ``M`` only as the number of uniforms
    they search (one code path for every ``M``), and the biased schemes need one size: test
    those at ``M = N`` only, to save compilations."""
    return SIZES if name in ("systematic", "residual", "ssp") else (N,)


@functools.lru_cache(maxsize=None)
def _counts_fn(name: str):
    """``(keys, weights (N,)) -> {M: counts (keys, N)}`` for each ``M`` in ``_sizes(name)``,
    jitted once per scheme and reused for every weight vector of shape ``(N,)``."""
    scheme = SCHEMES[name] if name in SCHEMES else BIASED[name]

    @jax.jit
    def counts_fn(keys, weights):
        return {
            m: jax.vmap(lambda k, m=m: offspring_counts(scheme(k, weights, m), N))(keys)
            for m in _sizes(name)
        }

    return counts_fn


@functools.lru_cache(maxsize=None)
def _replicate_counts(name: str, weights_bytes: bytes = WEIGHTS.tobytes()) -> dict:
    """Offspring counts of ``NUM_REPLICATES`` independent calls for each tested ``M``."""
    weights = np.frombuffer(weights_bytes, np.float32)
    keys = jax.random.split(jax.random.key(123), NUM_REPLICATES)
    return {m: np.asarray(c) for m, c in _counts_fn(name)(keys, weights).items()}


def _offspring_z(counts: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """z-scores of the mean counts against ``M·W``.

    The standard error uses ``max(s², p(1 − p))`` with ``s²`` the sample variance and
    ``p = frac(M W_i)``: any integer-valued count with mean ``M W_i`` has variance at least
    ``p(1 − p)`` (the variance of ``⌊m⌋ + Bernoulli(p)``, which systematic and SSP attain), so the
    floor never exceeds the true variance. It matters where the sample variance is 0 (a particle
    whose tiny ``p`` produced no extra offspring in 4000 draws, or a deterministic scheme); where
    ``p = 0`` too (zero weight), the mean must be exact.
    """
    mean = counts.mean(0)
    frac = expected - np.floor(expected)
    var = np.maximum(counts.var(0, ddof=1), frac * (1.0 - frac))
    diff = mean - expected
    se = np.sqrt(var / counts.shape[0])
    return np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))


@pytest.mark.parametrize("name", list(SCHEMES))
def test_offspring_are_unbiased(name):
    for num_samples, counts in _replicate_counts(name).items():
        _assert_unbiased(name, num_samples, counts)


def _assert_unbiased(name, num_samples, counts):
    expected = num_samples * WEIGHTS.astype(np.float64)
    z = _offspring_z(counts, expected)
    assert np.max(np.abs(z)) < Z_GATE, (name, np.argmax(np.abs(z)), z[np.argmax(np.abs(z))])


@pytest.mark.parametrize("name", list(BIASED))
def test_unbiasedness_gate_has_power(name):
    counts = _replicate_counts(name)[N]
    z = _offspring_z(counts, N * WEIGHTS.astype(np.float64))
    assert np.max(np.abs(z)) > 3 * Z_GATE


@pytest.mark.parametrize("name", list(SCHEMES))
def test_offspring_support(name):
    for num_samples, counts in _replicate_counts(name).items():
        _assert_support(name, num_samples, counts)


def _assert_support(name, num_samples, counts):
    expected = num_samples * WEIGHTS.astype(np.float64)
    lower, upper = np.floor(expected), np.ceil(expected)
    np.testing.assert_array_equal(counts.sum(1), num_samples)
    assert np.all(counts[:, WEIGHTS == 0] == 0)
    assert np.all(counts >= 0)
    if name in ("systematic", "ssp"):
        assert np.all((counts >= lower) & (counts <= upper))
    if name == "residual":
        assert np.all(counts >= lower)


def _deficient_weights(n, total):
    """``n − 1`` equal float32 weights summing to ``total`` and a last weight of 0."""
    weights = np.full(n, total / (n - 1), np.float32)
    weights[-1] = 0.0
    return weights


def _robustness_cases() -> dict[str, np.ndarray]:
    """Weight vectors of shape ``(N,)`` that must never give a bad index."""
    invalid = np.zeros(N, np.float32)
    invalid[:5] = [np.nan, 0.5, -1.0, 0.5, np.inf]  # NaN, −1 and inf are zero weights
    cases = {
        "sum_1-1e-6": _deficient_weights(N, 1 - 1e-6),  # float32 sum below 1, last weight 0
        "sum_0.999": _deficient_weights(N, 0.999),
        "invalid": invalid,
        "all_zero": np.zeros(N, np.float32),  # in range is all that is promised
    }
    for position in (0, 31, N - 1):  # a single positive weight
        cases[f"one_hot_{position}"] = np.eye(N, dtype=np.float32)[position]
    return cases


@pytest.mark.parametrize("case", list(_robustness_cases()))
@pytest.mark.parametrize("name", list(SCHEMES))
def test_robust_to_short_sums_and_invalid_weights(name, case):
    """Counts sum to ``M`` (so no index fell out of range: ``offspring_counts`` drops those)
    and a particle of zero (or NaN, negative, inf) weight has no offspring."""
    weights = _robustness_cases()[case]
    counts = _replicate_counts(name, weights.tobytes())
    for m, c in counts.items():
        np.testing.assert_array_equal(c.sum(1), m)
        if case != "all_zero":
            positive = np.isfinite(weights) & (weights > 0)
            assert np.all(c[:, ~positive] == 0)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_many_equal_float32_weights(name):
    """10⁵ float32 weights 1/n (their cumulative sum is not 1), the first and last 3 zero."""
    n = 100_000
    weights = np.full(n, 1.0 / n, np.float32)
    weights[:3] = weights[-3:] = 0.0
    ancestors = np.asarray(jax.jit(SCHEMES[name], static_argnums=2)(jax.random.key(5), weights, n))
    assert ancestors.dtype == np.int32 and ancestors.shape == (n,)
    assert ancestors.min() >= 3 and ancestors.max() < n - 3


def test_blackjax_selects_zero_weight_on_short_sums():
    """Why we wrap: BlackJAX clips overflowing indices onto the (zero-weight) last particle."""
    weights = _deficient_weights(1000, 0.999)
    ancestors = np.asarray(bjx_resampling.systematic(jax.random.key(0), weights, 1000))
    assert np.any(ancestors == 999)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_no_quadratic_arrays(name):
    n = 2**20
    scheme = SCHEMES[name]
    weights = jax.ShapeDtypeStruct((n,), jnp.float32)
    hlo = jax.jit(lambda k, w: scheme(k, w, n)).lower(jax.random.key(0), weights).as_text()
    assert f"{n},{n}" not in hlo


@pytest.mark.parametrize("name", ["systematic", "ssp"])
def test_large_n_is_fast_and_exact(name):
    """``N = 2²⁰`` (which covers SSP at ``2¹⁶``): fast, totals ``N``, floor/ceil counts."""
    n = 2**20
    weights = jax.random.uniform(jax.random.key(2), (n,)).at[::7].set(0.0)
    weights = weights / jnp.sum(weights)
    fn = jax.jit(lambda k, w: offspring_counts(SCHEMES[name](k, w, n), n))
    fn(jax.random.key(0), weights).block_until_ready()  # compile
    start = time.perf_counter()
    counts = fn(jax.random.key(1), weights).block_until_ready()
    assert time.perf_counter() - start < 3.0  # ≈ 0.1 s on 2 CPU cores
    counts = np.asarray(counts)
    expected = n * np.asarray(weights, np.float64)
    assert counts.sum() == n
    assert np.all(counts[::7] == 0)
    # float32 m = N·W may sit an ulp from an integer: allow its rounding (≤ 2⁻²³·m ≪ 1e-3).
    assert np.all((counts >= np.floor(expected - 1e-3)) & (counts <= np.ceil(expected + 1e-3)))


def test_get_scheme():
    for name, fn in SCHEMES.items():
        assert get_scheme(name) is fn
    assert set(SCHEMES) == {"multinomial", "stratified", "systematic", "residual", "ssp"}
    with pytest.raises(ValueError, match="'ssp'"):
        get_scheme("srs")


def test_offspring_counts():
    counts = offspring_counts(jnp.array([0, 2, 2, 4, 2]), 5)
    np.testing.assert_array_equal(counts, [1, 0, 3, 0, 1])
    assert counts.dtype == jnp.int32
