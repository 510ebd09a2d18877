"""Log-weight bookkeeping (:mod:`psijax.smc.weights`).

Properties tested:

* ``normalize``/``ess``/``log_mean_exp`` against direct float64 computations, with huge
  offsets; ``ess`` is ``N`` for uniform and 1 for one-hot weights; NaN, ``+inf`` and ``−inf``
  log-weights all mean weight zero; all-zero weights give ``log_sum = −inf`` and ESS 0, no NaN;
* ``resample_if_needed`` keeps (accumulates) the log-weights and returns ``arange(N)`` when
  ``ESS > κN``, and resamples (log-weights 0, particles and their cached values copied
  together) when ``ESS ≤ κN``; ``κ = 1`` always and ``κ = 0`` never resamples; collapsed
  weights are never resampled; ``κ ∉ [0, 1]`` raises; it works under ``jit`` (``vmap`` in the
  end-to-end test, where runs that resample and runs that do not share a batch);
* ``log_normalizer_increment`` against a direct computation, including zero weights;
* end to end: tempered SMC with adaptive resampling (every scheme, about half the steps
  resampling) and exact MCMC moves estimates ``Z`` without bias — ``mean(Ẑ/Z) = 1`` over 1000
  independent runs — and the same gate rejects the bookkeeping quirk of docs/algorithms.md §9.1
  (accumulated weights dropped when not resampling) and a resampler drawing ``∝ W²``.

Statistical gate ``|z| < Z_GATE = 4.5``: 5 z-scores in this module, so by Bonferroni the
false-alarm probability is below ``5 · P(|N(0, 1)| > 4.5) ≈ 3e-5``; seeds are fixed. The
power checks need ``|z| > 4.5`` (they reach about 14 and 8).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from psijax.smc import resampling
from psijax.smc import weights as smc_weights

Z_GATE = 4.5

# The functions under test, jitted: this checks that they trace, and one compilation per
# shape is much cheaper on CPU than eager dispatch of every primitive.
normalize = jax.jit(smc_weights.normalize)
ess = jax.jit(smc_weights.ess)
log_mean_exp = jax.jit(smc_weights.log_mean_exp, static_argnames="axis")
log_normalizer_increment = jax.jit(smc_weights.log_normalizer_increment)
resample_if_needed = jax.jit(smc_weights.resample_if_needed, static_argnums=4)  # κ traced
N = 16
INF, NAN = np.inf, np.nan


# ----------------------------------------------------------------------------------------------
# normalize, ess, log_mean_exp
# ----------------------------------------------------------------------------------------------
def test_normalize_matches_direct_computation():
    log_w = np.random.default_rng(0).normal(size=N) * 3.0 + 1e4  # exp would overflow
    log_w = log_w.astype(np.float32)
    weights, log_sum = normalize(log_w)
    assert weights.dtype == jnp.float32
    log_w = log_w.astype(np.float64)  # the values float32 holds, in float64
    expected = np.exp(log_w - logsumexp(log_w))
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(log_sum, logsumexp(log_w), rtol=1e-6)
    assert float(ess(log_w.astype(np.float32))) == pytest.approx(1 / np.sum(expected**2), rel=1e-4)


def test_ess_extremes():
    assert float(ess(np.zeros(N, np.float32))) == pytest.approx(N, rel=1e-6)
    assert float(ess(np.full(N, -5.3, np.float32))) == pytest.approx(N, rel=1e-6)
    one_hot = np.full(N, -INF, np.float32)
    one_hot[7] = 3.0
    assert float(ess(one_hot)) == pytest.approx(1.0)
    nearly = np.full(N, -1e30, np.float32)
    nearly[0] = 0.0
    assert float(ess(nearly)) == pytest.approx(1.0)


def test_invalid_log_weights_are_zero_weights():
    log_w = np.array([0.0, NAN, -INF, 0.0, INF], np.float32)
    weights, log_sum = normalize(log_w)
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.0, 0.5, 0.0])
    assert float(log_sum) == pytest.approx(np.log(2.0))
    assert float(ess(log_w)) == pytest.approx(2.0)
    assert float(log_mean_exp(log_w)) == pytest.approx(np.log(2.0 / 5.0))


@pytest.mark.parametrize("fill", [-INF, NAN])
def test_all_zero_weights_flag_instead_of_nan(fill):
    log_w = np.full(N, fill, np.float32)
    zeros = np.zeros(N, np.float32)
    weights, log_sum = normalize(log_w)
    np.testing.assert_array_equal(weights, 0.0)
    assert float(log_sum) == -INF
    assert float(ess(log_w)) == 0.0
    assert float(log_mean_exp(log_w)) == -INF
    assert float(log_normalizer_increment(log_w, zeros)) == -INF
    assert float(log_normalizer_increment(zeros, log_w)) == -INF


def test_log_mean_exp():
    x = (np.random.default_rng(1).normal(size=(4, N)) * 10.0 - 500.0).astype(np.float32)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(log_mean_exp(x), logsumexp(x64) - np.log(x.size), rtol=1e-6)
    np.testing.assert_allclose(
        log_mean_exp(x, axis=1), logsumexp(x64, axis=1) - np.log(N), rtol=1e-6
    )


# ----------------------------------------------------------------------------------------------
# resample_if_needed
# ----------------------------------------------------------------------------------------------
def _particles():
    x = np.arange(2 * N, dtype=np.float32).reshape(N, 2)
    return {"x": x, "cache": {"reward": np.sum(x**2, axis=1)}}


def test_high_ess_accumulates():
    log_w = (0.1 * np.sin(np.arange(N))).astype(np.float32)  # ESS ≈ 0.995 N
    particles = _particles()
    out = resample_if_needed(jax.random.key(0), log_w, particles, 0.5, "systematic")
    new_particles, new_log_w, ancestors, resampled, ess_value = out
    assert not bool(resampled)
    assert float(ess_value) == pytest.approx(float(ess(log_w)), rel=1e-6)
    np.testing.assert_array_equal(new_log_w, log_w)  # kept, not reset
    np.testing.assert_array_equal(ancestors, np.arange(N))
    jax.tree.map(np.testing.assert_array_equal, new_particles, particles)


@pytest.mark.parametrize("scheme", ["ssp", resampling.systematic])  # a name or a function
def test_low_ess_resamples_particles_with_their_cache(scheme):
    log_w = np.full(N, -INF, np.float32)
    log_w[[3, 11]] = [0.0, 0.5]  # ESS < 2
    particles = _particles()
    new_particles, new_log_w, ancestors, resampled, _ = resample_if_needed(
        jax.random.key(1), log_w, particles, 0.5, scheme
    )
    assert bool(resampled)
    np.testing.assert_array_equal(new_log_w, 0.0)
    assert set(np.unique(ancestors)) <= {3, 11}
    np.testing.assert_array_equal(new_particles["x"], particles["x"][np.asarray(ancestors)])
    np.testing.assert_array_equal(
        new_particles["cache"]["reward"], np.sum(np.asarray(new_particles["x"]) ** 2, axis=1)
    )


def test_threshold_extremes_and_collapse():
    particles = _particles()
    key = jax.random.key(2)
    uniform = np.zeros(N, np.float32)
    assert bool(resample_if_needed(key, uniform, particles, 1.0, "ssp").resampled)
    nearly_one_hot = np.full(N, -50.0, np.float32)
    nearly_one_hot[0] = 0.0
    assert not bool(resample_if_needed(key, nearly_one_hot, particles, 0.0, "ssp").resampled)
    collapsed = np.full(N, NAN, np.float32)
    out = resample_if_needed(key, collapsed, particles, 1.0, "ssp")
    assert not bool(out.resampled)
    np.testing.assert_array_equal(out.log_weights, -INF)  # NaN → −inf, kept
    np.testing.assert_array_equal(out.ancestors, np.arange(N))


@pytest.mark.parametrize("threshold", [-0.1, 1.5, NAN])
def test_threshold_validation(threshold):
    with pytest.raises(ValueError, match="threshold"):
        smc_weights.resample_if_needed(
            jax.random.key(0), np.zeros(4), np.zeros(4), threshold, "ssp"
        )


# ----------------------------------------------------------------------------------------------
# Log-normalizer
# ----------------------------------------------------------------------------------------------
def test_log_normalizer_increment_matches_direct_computation():
    rng = np.random.default_rng(3)
    before = (rng.normal(size=N) * 2.0).astype(np.float32)
    before[[1, 7]] = -INF
    delta = (rng.normal(size=N) * 3.0).astype(np.float32)
    delta[[2, 9]] = [NAN, -INF]
    b64, d64 = before.astype(np.float64), np.where(np.isnan(delta), -INF, delta)
    direct = np.log(np.sum(np.exp(b64 - logsumexp(b64)) * np.exp(d64)))
    result = log_normalizer_increment(before, delta)
    assert float(result) == pytest.approx(direct, rel=1e-5, abs=1e-5)


# ----------------------------------------------------------------------------------------------
# End to end: unbiased Ẑ with adaptive resampling
# ----------------------------------------------------------------------------------------------
NUM_PARTICLES = 16
NUM_RUNS = 1000  # 200 would do for the gate; 1000 gives the power checks margin
NUM_STEPS = 5
BETAS = np.linspace(0.0, 1.0, NUM_STEPS + 1, dtype=np.float32)
# ∫ N(x; 0, 1) exp(−(x − 1)²/2) dx = √(2π)·N(1; 0, 2) = exp(−1/4)/√2.
LOG_Z = -0.25 - 0.5 * np.log(2.0)
SCHEME_NAMES = list(resampling.SCHEMES)


def _squared_multinomial(rng_key, weights, num_samples):
    """Biased on purpose: draws with probabilities ∝ W² (for the power check)."""
    return resampling.multinomial(rng_key, weights**2 / jnp.sum(weights**2), num_samples)


BRANCHES = [resampling.SCHEMES[name] for name in SCHEME_NAMES] + [_squared_multinomial]


def _smc_log_z(rng_key, scheme_index, threshold, quirk):
    """Tempered SMC for ``π_β ∝ N(x; 0, 1)·exp(−β(x − 1)²/2)``: ``(log Ẑ, #resampling steps)``.

    Each step: reweight by ``Δℓ = −(β_k − β_{k−1})(x − 1)²/2`` and add the log-normalizer
    increment, resample if ``ESS ≤ κN``, then move with an exact ``π_{β_k}``-invariant AR(1)
    kernel (``π_β = N(β/(1 + β), 1/(1 + β))``). ``scheme_index`` picks the scheme in
    ``BRANCHES`` through ``lax.switch`` and the threshold ``κ`` is traced (one compilation for
    every configuration); ``quirk=True`` reproduces docs/algorithms.md §9.1: the accumulated
    log-weights are dropped when not resampling.
    """
    branches = [functools.partial(fn, num_samples=NUM_PARTICLES) for fn in BRANCHES]

    def scheme(key, weights, num_samples):
        assert num_samples == NUM_PARTICLES
        return jax.lax.switch(scheme_index, branches, key, weights)

    key_init, key_steps = jax.random.split(rng_key)
    x = jax.random.normal(key_init, (NUM_PARTICLES,))
    log_w = jnp.zeros(NUM_PARTICLES)
    log_z = smc_weights.log_mean_exp(log_w)

    def step(carry, inputs):
        x, log_w, log_z, count = carry
        key, beta_prev, beta = inputs
        key_resample, key_move = jax.random.split(key)
        delta = -(beta - beta_prev) * (x - 1.0) ** 2 / 2.0
        log_z = log_z + smc_weights.log_normalizer_increment(log_w, delta)
        log_w = log_w + delta
        x, log_w_new, _, resampled, _ = smc_weights.resample_if_needed(
            key_resample, log_w, x, threshold, scheme
        )
        log_w = jnp.where(quirk & ~resampled, 0.0, log_w_new)
        mean, sd, rho = beta / (1.0 + beta), 1.0 / jnp.sqrt(1.0 + beta), 0.5
        noise = jax.random.normal(key_move, x.shape)
        x = mean + rho * (x - mean) + jnp.sqrt(1.0 - rho**2) * sd * noise
        return (x, log_w, log_z, count + resampled), None

    keys = jax.random.split(key_steps, NUM_STEPS)
    (_, _, log_z, count), _ = jax.lax.scan(
        step, (x, log_w, log_z, 0), (keys, BETAS[:-1], BETAS[1:])
    )
    return log_z, count


_run_smc = jax.jit(jax.vmap(_smc_log_z, in_axes=(0, None, None, None)))


@functools.lru_cache(maxsize=None)
def _ratio_z(scheme_index, threshold, quirk=False, seed=0):
    """z-score of ``mean(Ẑ/Z) = 1`` over ``NUM_RUNS`` runs, and the mean #resampling steps."""
    keys = jax.random.split(jax.random.key(seed), NUM_RUNS)
    log_z, count = _run_smc(keys, scheme_index, threshold, quirk)
    ratio = np.exp(np.asarray(log_z, np.float64) - LOG_Z)
    z = (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(NUM_RUNS))
    return z, float(np.mean(count))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_normalizer_is_unbiased_with_adaptive_resampling(name):
    # κ = 0.97: about half of the 5 steps resample and half accumulate (mean count ≈ 2.3).
    z, mean_count = _ratio_z(SCHEME_NAMES.index(name), 0.97)
    print(name, z, mean_count)
    assert 1 < mean_count < NUM_STEPS - 1
    assert abs(z) < Z_GATE, z


def test_normalizer_gate_rejects_dropped_weights():
    # κ = 0.9: the weights accumulate over most steps (≈ 0.85 resampling steps in 5), so the
    # quirk of dropping them matters most.
    z, _ = _ratio_z(SCHEME_NAMES.index("systematic"), 0.9, quirk=True)
    print("quirk", z)
    assert abs(z) > Z_GATE, z


def test_normalizer_gate_rejects_biased_resampling():
    z, _ = _ratio_z(len(SCHEME_NAMES), 0.97)  # resampling ∝ W²
    print("squared", z)
    assert abs(z) > Z_GATE, z


# ----------------------------------------------------------------------------------------------
# Partial resampling and resampling every F steps
# ----------------------------------------------------------------------------------------------
def test_partial_resampling_keeps_the_total_and_the_untouched_particles():
    """``M = 6`` of 16: the 3 lightest and 3 heaviest are resampled among themselves, each copy
    with weight ``Σ_S w / M``; the total weight is unchanged and the others keep theirs."""
    log_w = np.random.default_rng(5).normal(size=N).astype(np.float32) * 2.0
    particles = np.arange(N, dtype=np.int32)
    out = smc_weights.resample_if_needed(
        jax.random.key(0), log_w, particles, 1.0, "systematic", num_resampled=6
    )
    order = np.argsort(log_w, kind="stable")
    subset, rest = np.r_[order[:3], order[-3:]], order[3:-3]
    np.testing.assert_array_equal(out.particles[rest], rest)  # integers stay integers
    assert out.particles.dtype == np.int32
    assert set(np.asarray(out.ancestors)[subset]) <= set(subset)
    np.testing.assert_allclose(logsumexp(out.log_weights), logsumexp(log_w), rtol=1e-5)
    share = logsumexp(log_w[subset]) - np.log(6)
    np.testing.assert_allclose(np.asarray(out.log_weights)[subset], share, rtol=1e-5)


def test_partial_resampling_is_unbiased_for_the_weighted_measure():
    """``E[Σ_j w̃_j 1{a_j = i}] = w_i`` for every particle, over 4000 keys (z-scores of the
    per-particle means against the exact weights; ``|z| < 4.5``, Bonferroni over 16)."""
    log_w = np.random.default_rng(6).normal(size=N).astype(np.float32) * 1.5
    fn = jax.jit(
        jax.vmap(
            lambda k: smc_weights.resample_if_needed(
                k, log_w, np.zeros(N), 1.0, "ssp", num_resampled=8
            )[1:3]
        )
    )
    new_log_w, ancestors = (np.asarray(a) for a in fn(jax.random.split(jax.random.key(1), 4000)))
    w_new = np.exp(new_log_w - logsumexp(log_w))
    mass = np.stack([(w_new * (ancestors == i)).sum(1) for i in range(N)], axis=1)
    w = np.exp(log_w - logsumexp(log_w))
    se = mass.std(0, ddof=1) / np.sqrt(mass.shape[0])
    moved = se > 1e-6  # the untouched particles vary by float rounding only
    assert moved.sum() >= 8
    z = (mass.mean(0)[moved] - w[moved]) / se[moved]
    assert np.all(np.abs(z) < Z_GATE), z
    np.testing.assert_allclose(mass.mean(0)[~moved], w[~moved], rtol=1e-4)


def test_resampling_can_be_disallowed_for_a_step():
    """``allowed=False`` (resampling only every F steps) keeps the weights whatever the ESS."""
    log_w = np.array([0.0] + [-30.0] * (N - 1), np.float32)
    out = smc_weights.resample_if_needed(
        jax.random.key(0), log_w, np.arange(N), 1.0, "systematic", allowed=False
    )
    assert not bool(out.resampled)
    np.testing.assert_array_equal(out.log_weights, log_w)
    part = smc_weights.AdaptiveResampling(ess_threshold=1.0, every=3)
    flags = [bool(part(jax.random.key(0), log_w, np.arange(N), i).resampled) for i in range(6)]
    assert flags == [True, False, False, True, False, False]
