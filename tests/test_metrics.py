"""Tests of the sample metrics (:mod:`psijax.metrics`).

Statistical gates: a metric is computed on ``R`` independent replicate pairs of samples (fixed
seeds) and the mean of the replicates is compared with its exact expectation through
``z = (mean − expected) / SE`` with ``SE = sd(replicates)/√R``. Every gate is ``|z| < 4.5``; a
test computes a handful of such statistics, so by a Bonferroni bound its false-alarm probability
is below ``10 · P(|N(0, 1)| > 4.5) ≈ 7e-5`` (and the seeds are fixed, so runs are reproducible).
Each statistical test also shows that the same gate rejects a wrong answer (the biased
V-statistic, a wrong closed form), so it is not vacuous.

Deterministic comparisons against float64 NumPy references use ``atol = 1e-5``: the metrics run
in float32, whose rounding over a few thousand pair terms of size O(1) stays near 1e-6.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from psijax import metrics

Z_GATE = 4.5
R = 100  # replicate pairs per statistical gate
N = 150  # samples per side in each replicate
# Shifts of the replicate runs; each with its own seed. The same (cached) runs serve the null,
# monotonicity and closed-form tests, which check different statements.
SHIFTS = (0.0, 0.25, 0.5, 1.0)
SEEDS = (10, 11, 12, 13)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def replicate_metrics(key, x, y, energy_only=False):
    """Every replicate statistic on one pair of samples, name → value (" V": V-statistic)."""
    if energy_only:
        return {"energy": metrics.energy_distance(x, y)}
    # `mmd(x, y)` uses this median bandwidth (test_median_heuristic); computing it once here
    # halves the cost of the replicates.
    ell = metrics.median_heuristic_bandwidth(x, y)
    out = {}
    for name, bandwidth in [("mmd", 1.0), ("mmd median", ell)]:
        out[name] = metrics.mmd(x, y, bandwidth=bandwidth)
        out[name + " V"] = metrics.mmd(x, y, bandwidth=bandwidth, biased=True)
    out["energy"] = metrics.energy_distance(x, y)
    out["energy V"] = metrics.energy_distance(x, y, biased=True)
    out["sliced W2"] = metrics.sliced_wasserstein(key, x, y, num_projections=32)
    return out


@functools.lru_cache
def replicate_fn(dim):
    """Compiled ``(keys, shift) → replicate_metrics`` for ``x ~ N(0, I)``, ``y ~ N(shift·e₁, I)``.

    In 1D only the energy distance is computed (its closed-form test), to save compilation.
    """

    def one(key, shift):
        kx, ky, km = jax.random.split(key, 3)
        x = jax.random.normal(kx, (N, dim))
        y = jax.random.normal(ky, (N, dim)).at[:, 0].add(shift)
        return replicate_metrics(km, x, y, energy_only=dim == 1)

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


@functools.lru_cache
def replicates(shift, dim, seed):
    """``R`` independent replicates of every statistic (``N`` samples a side) as a dict
    name → float64 array ``(R,)``; cached, so tests share runs."""
    values = replicate_fn(dim)(jax.random.split(jax.random.key(seed), R), shift)
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def mean_z(values, expected):
    """z-score of the replicate mean against ``expected`` with the replicate-spread SE."""
    return (values.mean() - expected) / (values.std(ddof=1) / math.sqrt(values.size))


def rbf(sq, bandwidths):
    return sum(np.exp(-sq / (2.0 * ell**2)) for ell in np.atleast_1d(bandwidths))


def neg_dist(sq):
    return -np.sqrt(sq)


def dense_within(a, w, kernel, groups=None, biased=False):
    """float64 normalised ``Σ w_i w_j k_ij`` over pairs in different ``groups`` (default i ≠ j)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    w = np.asarray(w, np.float64) / np.sum(w)
    k = kernel(np.sum((a[:, None, :] - a[None, :, :]) ** 2, axis=-1))
    pair_w = w[:, None] * w[None, :]
    if biased:
        return np.sum(pair_w * k)
    groups = np.arange(len(a)) if groups is None else np.asarray(groups)
    keep = groups[:, None] != groups[None, :]
    return np.sum(pair_w * k * keep) / np.sum(pair_w * keep)


def dense_cross(a, wa, b, wb, kernel):
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    wa, wb = np.asarray(wa, np.float64), np.asarray(wb, np.float64)
    k = kernel(np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1))
    return wa @ k @ wb / (wa.sum() * wb.sum())


def dense_two_sample(x, wx, y, wy, kernel, biased=False, x_groups=None, y_groups=None):
    """float64 reference of ``K_xx + K_yy − 2K_xy``."""
    return (
        dense_within(x, wx, kernel, x_groups, biased)
        + dense_within(y, wy, kernel, y_groups, biased)
        - 2.0 * dense_cross(x, wx, y, wy, kernel)
    )


def sample_pair(seed, n=40, m=30, dim=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    y = (rng.standard_normal((m, dim)) + 0.4).astype(np.float32)
    wx = rng.uniform(0.1, 2.0, n).astype(np.float32)
    wy = rng.uniform(0.1, 2.0, m).astype(np.float32)
    return x, y, wx, wy


# ----------------------------------------------------------------------------------------------
# Identical distributions: unbiased in expectation, and the V-statistic is detectably biased
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mmd", "mmd median", "energy"])
def test_identical_distributions_unbiased(name):
    # The median bandwidth is a symmetric function of the pooled sample (n + m ≤ max_points, so
    # no subsampling), and under the null the split of the pool into x and y is exchangeable,
    # so the U-statistic stays exactly unbiased with it.
    values = replicates(SHIFTS[0], 2, SEEDS[0])
    z_unbiased = mean_z(values[name], 0.0)
    assert abs(z_unbiased) < Z_GATE, (name, z_unbiased)
    # Power: the same gate detects the O(1/n) positive bias of the V-statistic.
    z_biased = mean_z(values[name + " V"], 0.0)
    assert z_biased > Z_GATE, (name, z_biased)


# ----------------------------------------------------------------------------------------------
# Monotone in the shift
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mmd", "mmd median", "energy", "sliced W2"])
def test_increasing_with_shift(name):
    runs = [replicates(s, 2, seed)[name] for s, seed in zip(SHIFTS, SEEDS, strict=True)]
    means = [r.mean() for r in runs]
    ses = [r.std(ddof=1) / math.sqrt(r.size) for r in runs]
    for k in range(len(SHIFTS) - 1):
        # each step must exceed Z_GATE standard errors of the difference of the two means
        margin = means[k + 1] - means[k]
        assert margin > Z_GATE * math.hypot(ses[k], ses[k + 1]), (name, SHIFTS[k + 1], means)


# ----------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------
def mmd_gaussian_closed_form(delta, dim, s, ell):
    """MMD² between N(0, s²I) and N(Δ, s²I) with ``k = exp(−‖a − b‖²/(2ℓ²))``."""
    scale = ell**2 + 2.0 * s**2
    c = (ell**2 / scale) ** (dim / 2)
    return 2.0 * c * (1.0 - math.exp(-(delta**2) / (2.0 * scale)))


def abs_normal_mean(m, sigma):
    """``E|Z|`` for ``Z ~ N(m, σ²)``."""
    return sigma * math.sqrt(2.0 / math.pi) * math.exp(-(m**2) / (2.0 * sigma**2)) + m * (
        1.0 - 2.0 * scipy.stats.norm.cdf(-m / sigma)
    )


def energy_gaussian_closed_form(delta):
    """Energy distance between N(0, 1) and N(δ, 1) in 1D."""
    return 2.0 * abs_normal_mean(delta, math.sqrt(2.0)) - 2.0 * abs_normal_mean(0.0, math.sqrt(2))


@pytest.mark.parametrize("delta, seed", [(0.5, SEEDS[2]), (1.0, SEEDS[3])])
def test_mmd_closed_form(delta, seed):
    dim, ell = 2, 1.0
    values = replicates(delta, dim, seed)["mmd"]
    assert abs(mean_z(values, mmd_gaussian_closed_form(delta, dim, 1.0, ell))) < Z_GATE
    # power: the closed form at a shift 0.1 away is rejected
    assert abs(mean_z(values, mmd_gaussian_closed_form(delta + 0.1, dim, 1.0, ell))) > Z_GATE


@pytest.mark.parametrize("delta", [0.5, 1.0])
def test_energy_distance_closed_form(delta):
    values = replicates(delta, 1, 30)["energy"]
    assert abs(mean_z(values, energy_gaussian_closed_form(delta))) < Z_GATE
    assert abs(mean_z(values, energy_gaussian_closed_form(delta + 0.1))) > Z_GATE


def test_sliced_wasserstein_point_masses():
    # SW2² between δ_u and δ_v is the mean of (θ·Δ)² over the directions; (θ·e)² for θ uniform
    # on S^{d−1} is Beta(1/2, (d−1)/2): mean 1/d, variance 2(d − 1)/(d²(d + 2)).
    dim, num = 3, 4096
    delta = np.array([1.0, -2.0, 0.5])
    x = np.zeros((5, dim), np.float32)
    y = np.tile(delta.astype(np.float32), (7, 1))
    sw2 = float(metrics.sliced_wasserstein(jax.random.key(0), x, y, num_projections=num)) ** 2
    sq = float(delta @ delta)
    se = sq * math.sqrt(2.0 * (dim - 1) / (dim**2 * (dim + 2)) / num)
    assert abs(sw2 - sq / dim) / se < Z_GATE


def test_sliced_wasserstein_gaussians_1d():
    # W2(N(a, σ²), N(b, σ²)) = |a − b|. Quantile ("stratified") samples of the same shape are
    # exact; for d = 1 the projections are ±1, so SW = W for any key.
    a, b, sigma, n = -0.3, 1.2, 2.0, 20000
    q = scipy.stats.norm.ppf((np.arange(n) + 0.5) / n)
    x, y = (a + sigma * q).astype(np.float32), (b + sigma * q).astype(np.float32)
    sw = metrics.sliced_wasserstein(jax.random.key(3), x, y, num_projections=2)
    np.testing.assert_allclose(sw, abs(a - b), atol=1e-5)
    # Random samples, n = 20000 each: W2² = (a − b)² + 2(a − b)(mean error) + O(log log n / n);
    # the mean error has sd σ√(2/n) = 0.02, so W2 is within ~0.02 of |a − b|; gate 0.1 (5 sd).
    kx, ky = jax.random.split(jax.random.key(4))
    x = a + sigma * jax.random.normal(kx, (n,))
    y = b + sigma * jax.random.normal(ky, (n,))
    sw = metrics.sliced_wasserstein(jax.random.key(5), x, y, num_projections=2)
    assert abs(float(sw) - abs(a - b)) < 0.1


def test_wasserstein_1d_hand_computed():
    # x = {0: ¼, 3: ¾}, y = {1: ½, 2: ½}: on (0, ¼] the quantiles are (0, 1), on (¼, ½] (3, 1),
    # on (½, 1] (3, 2): W1 = ¼·1 + ¼·2 + ½·1 = 1.25, W2² = ¼ + 1 + ½ = 1.75, W3³ = ¼ + 2 + ½.
    x, wx = np.array([3.0, 0.0]), np.array([3.0, 1.0])  # unsorted, unnormalised
    y, wy = np.array([2.0, 1.0]), np.array([0.5, 0.5])
    for p, expected in [(1, 1.25), (2, math.sqrt(1.75)), (3, 2.75 ** (1 / 3))]:
        w = metrics.wasserstein_1d(x, y, x_weights=wx, y_weights=wy, p=p)
        np.testing.assert_allclose(w, expected, atol=1e-6)
    # in 1D the directions are ±1, so SW = W for any key
    sw = metrics.sliced_wasserstein(
        jax.random.key(1), x, y, x_weights=wx, y_weights=wy, num_projections=3, p=2
    )
    np.testing.assert_allclose(sw, math.sqrt(1.75), atol=1e-6)
    # zero weights drop points: {0: ½, 5: 0, 1: ½} vs {0.5: 1} has W1 = ½
    w = metrics.wasserstein_1d([0.0, 5.0, 1.0], [0.5], x_weights=[1.0, 0.0, 1.0])
    np.testing.assert_allclose(w, 0.5, atol=1e-6)


def test_wasserstein_1d_matches_scipy():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal(60), rng.standard_normal(45) + 0.3
    wx, wy = rng.uniform(0, 1, 60), rng.uniform(0, 1, 45)
    expected = scipy.stats.wasserstein_distance(x, y, wx, wy)
    np.testing.assert_allclose(
        metrics.wasserstein_1d(x, y, x_weights=wx, y_weights=wy), expected, atol=1e-5
    )


# ----------------------------------------------------------------------------------------------
# Weighted samples versus duplicated rows
# ----------------------------------------------------------------------------------------------
def duplicated(seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((12, 2)).astype(np.float32)
    y = (rng.standard_normal((9, 2)) + 0.5).astype(np.float32)
    cx, cy = rng.integers(1, 4, 12), rng.integers(1, 4, 9)  # integer weights 1..3
    return x, y, cx, cy, np.repeat(x, cx, axis=0), np.repeat(y, cy, axis=0)


@pytest.mark.parametrize(
    "name, fn, kernel",
    [
        ("mmd", functools.partial(metrics.mmd, bandwidth=(0.7, 1.5)), lambda s: rbf(s, (0.7, 1.5))),
        ("energy", metrics.energy_distance, neg_dist),
    ],
)
def test_weights_equal_duplicated_rows(name, fn, kernel):
    x, y, cx, cy, x_dup, y_dup = duplicated()
    # V-statistic: integer weights = the duplicated sample, exactly
    weighted = fn(x, y, x_weights=cx, y_weights=cy, biased=True)
    np.testing.assert_allclose(weighted, fn(x_dup, y_dup, biased=True), atol=1e-5)
    # U-statistic: the weighted form averages over pairs of *distinct particles*, i.e. over
    # pairs of duplicated rows that stem from different particles (copies never paired). It
    # differs from the plain U-statistic of the duplicated sample, which pairs copies.
    weighted = fn(x, y, x_weights=cx, y_weights=cy)
    origin_x, origin_y = np.repeat(np.arange(12), cx), np.repeat(np.arange(9), cy)
    ones_x, ones_y = np.ones(len(x_dup)), np.ones(len(y_dup))
    reference = dense_two_sample(
        x_dup, ones_x, y_dup, ones_y, kernel, x_groups=origin_x, y_groups=origin_y
    )
    np.testing.assert_allclose(weighted, reference, atol=1e-5)
    plain = dense_two_sample(x_dup, ones_x, y_dup, ones_y, kernel)
    assert abs(float(weighted) - plain) > 1e-3  # the two really differ here
    # uniform weights reduce to the standard U-statistic
    np.testing.assert_allclose(
        fn(x, y, x_weights=np.full(12, 2.5), y_weights=np.ones(9)), fn(x, y), atol=1e-6
    )


def test_weights_equal_duplicated_rows_sliced_and_modes():
    x, y, cx, cy, x_dup, y_dup = duplicated()
    key = jax.random.key(11)
    weighted = metrics.sliced_wasserstein(key, x, y, x_weights=cx, y_weights=cy)
    unweighted = metrics.sliced_wasserstein(key, x_dup, y_dup)
    np.testing.assert_allclose(weighted, unweighted, atol=1e-6)
    modes = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]], np.float32)
    np.testing.assert_allclose(
        metrics.mode_occupancy(x, modes, weights=cx),
        metrics.mode_occupancy(x_dup, modes),
        atol=1e-6,
    )
    mean, sd = metrics.weighted_mean_and_sd(x[:, 0], cx)
    np.testing.assert_allclose(mean, x_dup[:, 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(sd, x_dup[:, 0].std(), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Blockwise = dense
# ----------------------------------------------------------------------------------------------
def test_blockwise_equals_dense():
    x, y, wx, wy = sample_pair(0)  # n = 40, m = 30
    # (weights, biased, block_size): 7 pads the last block of both samples, 40 is one block
    cases = [
        ((wx, wy), False, 7),
        ((wx, wy), True, 7),
        ((None, None), False, 7),
        ((wx, wy), False, 40),
    ]
    for (ux, uy), biased, block_size in cases:
        kw = dict(x_weights=ux, y_weights=uy, biased=biased, block_size=block_size)
        ux = np.ones(len(x)) if ux is None else ux
        uy = np.ones(len(y)) if uy is None else uy
        value = metrics.mmd(x, y, bandwidth=(0.5, 2.0), **kw)
        ref = dense_two_sample(x, ux, y, uy, lambda s: rbf(s, (0.5, 2.0)), biased)
        np.testing.assert_allclose(value, ref, atol=1e-5)
        value = metrics.energy_distance(x, y, **kw)
        ref = dense_two_sample(x, ux, y, uy, neg_dist, biased)
        np.testing.assert_allclose(value, ref, atol=1e-5)


def test_jit_with_traced_weights():
    # (the median bandwidth under jit is exercised by the replicate tests)
    x, y, wx, wy = sample_pair(0)
    kw = dict(block_size=7)  # shares the eager compilations of test_blockwise_equals_dense
    fns = {
        "mmd": lambda x, y, wx, wy: metrics.mmd(
            x, y, x_weights=wx, y_weights=wy, bandwidth=(0.5, 2.0), **kw
        ),
        "energy": lambda x, y, wx, wy: metrics.energy_distance(
            x, y, x_weights=wx, y_weights=wy, **kw
        ),
        "sw": lambda x, y, wx, wy: metrics.sliced_wasserstein(
            jax.random.key(0), x, y, x_weights=wx, y_weights=wy
        ),
    }
    jitted = jax.jit(lambda *args: {name: fn(*args) for name, fn in fns.items()})(x, y, wx, wy)
    for name, fn in fns.items():
        np.testing.assert_allclose(jitted[name], fn(x, y, wx, wy), atol=1e-6, err_msg=name)


def test_gradients_finite_at_coincident_points():
    x, y, _, _ = sample_pair(2, n=10, m=10)
    x = np.concatenate([x, x[:3]])  # duplicated rows: zero distances inside x
    y = np.concatenate([y, x[:2]])  # and across x and y

    def objective(x):  # all three metrics in one compiled gradient
        return (
            metrics.energy_distance(x, y)
            + metrics.energy_distance(x, y, biased=True)
            + metrics.sliced_wasserstein(jax.random.key(0), x, y)
        )

    assert np.all(np.isfinite(jax.jit(jax.grad(objective))(jnp.asarray(x))))


def test_median_heuristic():
    # pooled {0, 1, 3}: distances {1, 3, 2} → 2
    np.testing.assert_allclose(metrics.median_heuristic_bandwidth([0.0, 1.0], [3.0]), 2.0)
    # pooled {0, 1, 3, 7}: distances {1, 2, 3, 4, 6, 7} → lower median 3
    np.testing.assert_allclose(metrics.median_heuristic_bandwidth([0.0, 1.0], [3.0, 7.0]), 3.0)
    # zero weight on the point 1: only the pair (0, 3) has weight
    value = metrics.median_heuristic_bandwidth([0.0, 1.0], [3.0], x_weights=[1.0, 0.0])
    np.testing.assert_allclose(value, 3.0)
    # all points equal → fallback 1
    np.testing.assert_allclose(metrics.median_heuristic_bandwidth(np.zeros(3), np.zeros(2)), 1.0)
    # subsampling: the evenly spaced rows of the pool
    x, y, _, _ = sample_pair(4, n=40, m=30)
    pool = np.concatenate([x, y])[np.round(np.linspace(0, 69, 25)).astype(int)]
    dists = np.sort(scipy.spatial.distance.pdist(pool.astype(np.float64)))
    expected = dists[(len(dists) + 1) // 2 - 1]  # lower median
    value = metrics.median_heuristic_bandwidth(x, y, max_points=25)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # mmd(bandwidth="median") uses it
    np.testing.assert_allclose(
        metrics.mmd(x, y),
        metrics.mmd(x, y, bandwidth=float(metrics.median_heuristic_bandwidth(x, y))),
    )


# ----------------------------------------------------------------------------------------------
# Modes, reports
# ----------------------------------------------------------------------------------------------
def test_mode_occupancy_and_tv():
    modes = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.array([[1.0, 1.0], [9.0, 0.0], [0.0, 8.0], [0.5, -1.0], [6.0, 0.0]])  # modes 0,1,2,0,1
    np.testing.assert_allclose(metrics.mode_occupancy(x, modes), [0.4, 0.4, 0.2], atol=1e-7)
    occupancy = metrics.mode_occupancy(x, modes, weights=[1.0, 2.0, 3.0, 4.0, 0.0])
    np.testing.assert_allclose(occupancy, [0.5, 0.2, 0.3], atol=1e-7)
    assert float(metrics.mode_tv(x, modes, [0.4, 0.4, 0.2])) < 1e-7
    assert float(metrics.mode_tv(x, modes, [2.0, 2.0, 1.0])) < 1e-7  # normalised internally
    np.testing.assert_allclose(metrics.mode_tv(x, modes, [1.0, 0.0, 0.0]), 0.6, atol=1e-6)
    # 1D inputs are d = 1
    np.testing.assert_allclose(metrics.mode_occupancy([0.1, 0.9, 2.0], [0.0, 1.0]), [1 / 3, 2 / 3])


def test_effective_sample_size():
    np.testing.assert_allclose(metrics.effective_sample_size(np.zeros(10)), 10.0, rtol=1e-6)
    np.testing.assert_allclose(metrics.effective_sample_size([0.0, -np.inf, 0.0]), 2.0, rtol=1e-6)
    np.testing.assert_allclose(metrics.effective_sample_size([5.0, -np.inf, -np.inf]), 1.0)
    # W = (¼, ¼, ½) → 1/(1/16 + 1/16 + 1/4) = 8/3, at log-weights far beyond exp's range
    lw = np.array([1000.0, 1000.0, 1000.0 + math.log(2.0)])
    np.testing.assert_allclose(metrics.effective_sample_size(lw), 8.0 / 3.0, rtol=1e-5)
    batched = metrics.effective_sample_size(np.stack([np.zeros(4), [0.0, 0.0, -np.inf, -np.inf]]))
    np.testing.assert_allclose(batched, [4.0, 2.0], rtol=1e-6)


def test_weighted_mean_and_sd():
    mean, sd = metrics.weighted_mean_and_sd([1.0, 2.0, 4.0], [1.0, 1.0, 2.0])
    np.testing.assert_allclose(mean, 2.75)
    np.testing.assert_allclose(sd, math.sqrt(1.6875), rtol=1e-6)
    mean, sd = metrics.weighted_mean_and_sd(np.array([[1.0, 0.0], [3.0, 0.0]]))
    np.testing.assert_allclose(mean, [2.0, 0.0])
    np.testing.assert_allclose(sd, [1.0, 0.0])


# ----------------------------------------------------------------------------------------------
# Invalid inputs
# ----------------------------------------------------------------------------------------------
X2, Y2, Y3 = np.zeros((4, 2)), np.ones((5, 2)), np.ones((5, 3))
KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: metrics.mmd(X2, Y3), "`y`"),
        (lambda: metrics.energy_distance(X2, Y3), "`y`"),
        (lambda: metrics.sliced_wasserstein(KEY, X2, Y3), "`y`"),
        (lambda: metrics.mmd(np.zeros((2, 2, 2)), Y2), "`x`"),
        (lambda: metrics.mmd(X2, Y2, x_weights=[1.0, -1.0, 1.0, 1.0]), "`x_weights`"),
        (lambda: metrics.energy_distance(X2, Y2, y_weights=np.ones(4)), "`y_weights`"),
        (lambda: metrics.sliced_wasserstein(KEY, X2, Y2, x_weights=np.ones(3)), "`x_weights`"),
        (lambda: metrics.sliced_wasserstein(KEY, X2, Y2, y_weights=-np.ones(5)), "`y_weights`"),
        (lambda: metrics.mmd(X2, Y2, x_weights=np.zeros(4)), "`x_weights`"),
        (lambda: metrics.mmd(X2, Y2, y_weights=[1.0, np.nan, 1, 1, 1]), "`y_weights`"),
        (lambda: metrics.mmd(X2, Y2, bandwidth=-1.0), "`bandwidth`"),
        (lambda: metrics.mmd(X2, Y2, bandwidth="mean"), "`bandwidth`"),
        (lambda: metrics.mmd(X2[:1], Y2), "`x`"),
        (lambda: metrics.sliced_wasserstein(KEY, X2, Y2, p=0.5), "`p`"),
        (lambda: metrics.mode_occupancy(X2, np.zeros((3, 3))), "`modes`"),
        (lambda: metrics.mode_occupancy(X2, np.zeros((3, 2)), weights=np.ones(5)), "`weights`"),
        (lambda: metrics.mode_occupancy(X2, np.zeros((3, 2)), weights=-np.ones(4)), "`weights`"),
        (lambda: metrics.mode_tv(X2, np.zeros((3, 2)), [0.5, 0.5]), "`target_weights`"),
        (lambda: metrics.mode_tv(X2, np.zeros((3, 2)), [1.0, -0.5, 0.5]), "`target_weights`"),
        (lambda: metrics.weighted_mean_and_sd(np.ones(3), np.ones(2)), "`weights`"),
        (lambda: metrics.effective_sample_size(np.zeros(0)), "`log_weights`"),
    ],
)
def test_invalid_inputs(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


def test_mode_occupancy_is_accurate_at_large_n():
    """100,000 equal float32 weights: the occupancy is the exact fraction to ~1e-6 (a
    sequential float32 accumulation drifted by 6e-4 here)."""
    x = jax.random.normal(jax.random.key(0), (100_000, 2))
    occ = np.asarray(metrics.mode_occupancy(x, np.array([[1.0, 0.0], [-1.0, 0.0]])))
    exact = np.mean(np.asarray(x[:, 0]) >= 0.0)
    np.testing.assert_allclose(occ, [exact, 1.0 - exact], atol=5e-6)
