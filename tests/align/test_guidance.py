"""DPS, FreeDoM and best-of-N against hand computations and linear-Gaussian closed forms.

The model is Gaussian data with a diagonal covariance, whose exact velocity is affine and
elementwise (written out below, cheap to compile). With the Tweedie predictor and a quadratic
reward the DPS and FreeDoM chains are linear-Gaussian too: the guidance term
``ζΔ∇_x r(x̂0) = −ζΔ·J Q (J x − t k − c)`` (``J = I − tK_t``) is affine in ``x``, and so is
FreeDoM's re-noising. Their exact final means and covariances are propagated in float64 NumPy
and the samplers are gated on them with z-scores ``|z| < 4.5`` (two-sided false-alarm rate
~7e-6 per statistic); each gate is also shown to reject a nearby wrong answer.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from psijax import flows
from psijax.align import RewardProblem
from psijax.align.guidance import NORMALIZE_EPS, best_of_n, dps, freedom
from psijax.models.linear_gaussian import LinearGaussianFlow
from psijax.models.presets import quadratic_reward

Z_GATE = 4.5
MEAN = np.array([1.0, -1.0])
VAR = np.array([0.09, 0.16])
MODEL = LinearGaussianFlow(MEAN, np.diag(VAR))
CENTER = np.array([0.0, 0.5])
PRECISION = np.eye(2)
DIFFUSION = flows.reference_diffusion()
KEY = jax.random.key(0)


def velocity(x, t):
    """The exact velocity of ``N(MEAN, diag(VAR))`` data: ``K_t x + k_t`` with diagonal ``K_t``."""
    var, mean = jnp.asarray(VAR, jnp.float32), jnp.asarray(MEAN, jnp.float32)
    gain = (t - (1.0 - t) * var) / ((1.0 - t) ** 2 * var + t**2)
    return gain * x - mean - (1.0 - t) * gain * mean


REWARD = quadratic_reward(CENTER, PRECISION)
PROBLEM = RewardProblem(velocity, REWARD, (2,), 1.0)


def exact_reward(x):
    d = np.asarray(x, np.float64) - CENTER
    return -0.5 * np.einsum("...i,ij,...j->...", d, PRECISION, d)


def particle_keys(key, i, num_steps):
    """The documented per-particle key convention: ``(k_init, split(k_path, T))``."""
    k_init, k_path = jax.random.split(jax.random.fold_in(key, i))
    return k_init, k_path, jax.random.split(k_path, num_steps)


# ----------------------------------------------------------------------------------------------
# Exact moments of the guided chains (float64)
# ----------------------------------------------------------------------------------------------
def guided_map(t, t_next, scale):
    """``(A', b', σ)`` of one guided step ``x' = A'x + b' + σz`` (Tweedie, quadratic reward)."""
    a, b, sigma = MODEL.step_coefficients(t, t_next, DIFFUSION)
    k_mat, k_vec = MODEL.velocity_coefficients(t)
    jac = np.eye(2) - t * k_mat  # ∂x̂0/∂x, symmetric
    zeta = scale * (t - t_next)
    a_guided = a - zeta * jac @ PRECISION @ jac
    b_guided = b + zeta * jac @ PRECISION @ (t * k_vec + CENTER)
    return a_guided, b_guided, sigma


def guided_moments(grid, scale, repeats=0, window=(0.0, 1.0), renoise=flows.renoise_coefficients):
    """Final mean and covariance of DPS (``repeats = 0``) / FreeDoM from ``N(0, I)``.

    ``renoise(t', t) -> (a, b)`` is the time-travel kernel ``x ← a x + b ξ`` (swappable, to
    show that the gates reject wrong ones).
    """
    times = np.asarray(grid, np.float64)
    m, c = np.zeros(2), np.eye(2)
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        a, b, sigma = guided_map(t, t_next, scale)
        m, c = a @ m + b, a @ c @ a.T + sigma**2 * np.eye(2)
        for _ in range(repeats if window[0] <= t <= window[1] else 0):
            ra, rb = (float(v) for v in renoise(t_next, t))
            m, c = ra * m, ra**2 * c + rb**2 * np.eye(2)
            m, c = a @ m + b, a @ c @ a.T + sigma**2 * np.eye(2)
    return m, c


def moment_z(samples, mean, cov):
    """z-scores of the sample mean and of the sample variances per coordinate (Gaussian)."""
    x = np.asarray(samples, np.float64)
    n, var = x.shape[0], np.diag(cov)
    z_mean = (x.mean(0) - mean) / np.sqrt(var / n)
    z_var = (x.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    return np.concatenate([z_mean, z_var])


def expected_reward(mean, cov):
    return exact_reward(mean) - 0.5 * np.trace(PRECISION @ cov)


# ----------------------------------------------------------------------------------------------
# Runs shared by several tests (compiled once each)
# ----------------------------------------------------------------------------------------------
SMALL = {"num_particles": 16, "num_steps": 5}
GRID5 = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.0], np.float32)  # uniform_grid(5)


def costly_predictor(vf, x, t):
    """Tweedie, declared to cost 3 model evaluations."""
    return x - t * vf(x, t), 3


COSTLY_PROBLEM = RewardProblem(velocity, REWARD, (2,), 1.0, x0_predictor=costly_predictor)


@functools.cache
def small_runs():
    """ζ = 0 DPS, best-of-N, the reference sampler, and DPS/FreeDoM variants on 5 steps."""

    def reference(key):
        def one(i):
            k_init, k_path, _ = particle_keys(key, i, SMALL["num_steps"])
            x1 = jax.random.normal(k_init, (2,), jnp.float32)
            return flows.sample(
                k_path, velocity, x1, flows.uniform_grid(SMALL["num_steps"]), DIFFUSION
            )

        return jax.vmap(one)(jnp.arange(SMALL["num_particles"]))

    def all_runs(key):
        guided = {"guidance_scale": 1.5, "normalize": True}
        return {
            "dps0": dps(key, PROBLEM, guidance_scale=0.0, **SMALL),
            "bon": best_of_n(key, PROBLEM, **SMALL),
            "reference": reference(key),
            "dps": dps(key, PROBLEM, **guided, **SMALL),
            "freedom0": freedom(key, PROBLEM, num_repeats=0, **guided, **SMALL),
            "dps1": dps(key, PROBLEM, **SMALL),
            "dps_predictor": dps(key, COSTLY_PROBLEM, **SMALL),
            "bon_grid": best_of_n(
                key, PROBLEM, num_particles=SMALL["num_particles"], num_steps=5, grid=GRID5
            ),
            # grid times 1, .8, .6, .4, .2: none lies in [0.41, 0.59]
            "freedom_empty": freedom(
                key, PROBLEM, num_repeats=2, window=(0.41, 0.59), **guided, **SMALL
            ),
        }

    return jax.tree.map(np.asarray, jax.jit(all_runs)(KEY))


NUM_LARGE = 4000
GRID8 = flows.uniform_grid(8)  # 1, .875, …, .125, 0: exact in float32
WINDOW = (0.25, 0.75)  # inclusive: t = .75, .625, .5, .375, .25 time-travel (5 steps)


@functools.cache
def large_runs():
    def all_runs(key):
        kwargs = {"num_particles": NUM_LARGE, "grid": GRID8, "num_steps": None}
        return {
            "unguided": dps(key, PROBLEM, guidance_scale=0.0, **kwargs),
            "dps": dps(key, PROBLEM, guidance_scale=1.0, **kwargs),
            "freedom": freedom(
                key, PROBLEM, guidance_scale=1.0, num_repeats=2, window=WINDOW, **kwargs
            ),
        }

    return jax.tree.map(np.asarray, jax.jit(all_runs)(jax.random.key(3)))


# ----------------------------------------------------------------------------------------------
# Equalities between configurations
# ----------------------------------------------------------------------------------------------
def test_zero_scale_dps_is_unguided_sampling_and_best_of_n_particles():
    runs = small_runs()
    # The velocity inside value_and_grad is the same computation as a plain call; 1e-6 allows
    # for XLA fusing the two graphs differently.
    np.testing.assert_allclose(runs["dps0"].samples, runs["reference"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(runs["bon"].samples, runs["reference"], rtol=0, atol=1e-6)
    assert np.all(np.isfinite(runs["reference"]))


def test_freedom_without_time_travel_is_dps_bit_for_bit():
    runs = small_runs()
    for name in ("freedom0", "freedom_empty"):
        for field in ("samples", "rewards", "log_weights", "nfe"):
            np.testing.assert_array_equal(getattr(runs[name], field), getattr(runs["dps"], field))
    assert not np.allclose(runs["dps"].samples, runs["dps0"].samples)  # the guidance acts


def test_guided_result_fields():
    res = small_runs()["dps"]
    n, t = SMALL["num_particles"], SMALL["num_steps"]
    assert res.samples.shape == (n, 2) and res.samples.dtype == np.float32
    np.testing.assert_allclose(res.rewards, exact_reward(res.samples), rtol=1e-5)
    np.testing.assert_allclose(res.log_weights, np.full(n, -np.log(n)), rtol=1e-6)
    assert res.nfe == n * t and res.nfe.dtype == np.int32
    assert res.info.nfe_sampling == n * t and res.info.nfe_init == 0
    assert res.info.init is None and res.info.smc is None
    assert np.isnan(res.log_normalizer) and np.isnan(res.info.log_normalizer_smc)
    assert np.isnan(res.info.log_normalizer_init)


# ----------------------------------------------------------------------------------------------
# The guided step by hand
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [False, True])
def test_guided_steps_match_hand_computation(normalize):
    grid, scale, n = np.array([1.0, 0.6, 0.0]), 0.8, 3
    run = jax.jit(
        lambda k: dps(
            k,
            PROBLEM,
            num_particles=n,
            num_steps=None,
            grid=grid,
            guidance_scale=scale,
            normalize=normalize,
        )
    )
    res = jax.tree.map(np.asarray, run(KEY))
    for i in range(n):
        k_init, _, step_keys = particle_keys(KEY, i, 2)
        x = np.asarray(jax.random.normal(k_init, (2,), jnp.float32), np.float64)
        for j, (t, t_next) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
            k_mat, k_vec = MODEL.velocity_coefficients(t)
            v = k_mat @ x + k_vec
            delta, g = t - t_next, t * (2.0 - t)  # reference diffusion g(t) = t(2 − t)
            mean = x + delta * (-v - 0.5 * g**2 / t * (x + (1.0 - t) * v))
            z = np.asarray(jax.random.normal(step_keys[j], (2,), jnp.float32), np.float64)
            x0_hat = x - t * v
            grad = -(np.eye(2) - t * k_mat) @ PRECISION @ (x0_hat - CENTER)  # closed form
            if normalize:
                grad = grad / (abs(exact_reward(x0_hat)) + NORMALIZE_EPS)
            x = mean + g * np.sqrt(delta) * z + scale * delta * grad
        np.testing.assert_allclose(res.samples[i], x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res.rewards[i], exact_reward(x), rtol=1e-5, atol=1e-6)
    assert res.nfe == n * 2


# ----------------------------------------------------------------------------------------------
# Statistics against the closed forms
# ----------------------------------------------------------------------------------------------
def test_velocity_is_the_closed_form():
    for t in (1.0, 0.7, 0.2):
        x = np.array([0.3, -0.4])
        k_mat, k_vec = MODEL.velocity_coefficients(t)
        np.testing.assert_allclose(velocity(jnp.asarray(x), t), k_mat @ x + k_vec, rtol=1e-5)


@pytest.mark.parametrize("method", ["unguided", "dps", "freedom"])
def test_final_moments_match_the_linear_gaussian_chain(method):
    res = large_runs()[method]
    scale, repeats = {"unguided": (0.0, 0), "dps": (1.0, 0), "freedom": (1.0, 2)}[method]
    mean, cov = guided_moments(GRID8, scale, repeats, WINDOW)
    assert np.all(np.abs(moment_z(res.samples, mean, cov)) < Z_GATE)
    # Power: the same gate rejects nearby wrong chains by a wide margin.
    if method == "freedom":
        wrongs = [
            guided_moments(GRID8, scale),  # no time travel
            guided_moments(GRID8, scale, repeats, WINDOW, lambda s, t: (1.0, 0.0)),  # no re-noise
            guided_moments(GRID8, scale, repeats, WINDOW, lambda s, t: (renoise_a(s, t), 0.0)),
        ]
    else:
        wrongs = [guided_moments(GRID8, 0.5 if method == "dps" else 0.2)]
    for wrong in wrongs:
        assert np.max(np.abs(moment_z(res.samples, *wrong))) > 2 * Z_GATE


def renoise_a(t_from, t_to):
    return float(flows.renoise_coefficients(t_from, t_to)[0])


def test_guidance_raises_the_mean_reward_and_freedom_more_than_dps():
    runs = large_runs()
    r = {k: np.asarray(v.rewards, np.float64) for k, v in runs.items()}
    n = NUM_LARGE

    def z_two_sample(a, b):
        return (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)

    assert z_two_sample(r["dps"], r["unguided"]) > 10.0
    # Same key: the paths coincide until the window, so the paired difference is informative.
    d = r["freedom"] - r["dps"]
    assert d.mean() / (d.std(ddof=1) / np.sqrt(n)) > Z_GATE
    # And the exact expectations agree with the ordering.
    exact = [
        expected_reward(*guided_moments(GRID8, s, k, WINDOW)) for s, k in [(0, 0), (1, 0), (1, 2)]
    ]
    assert exact[0] < exact[1] < exact[2]


def test_freedom_nfe_counts_window_steps_inclusively():
    runs = large_runs()
    assert runs["dps"].nfe == NUM_LARGE * 8
    assert runs["freedom"].nfe == NUM_LARGE * (8 + 2 * 5)
    assert runs["freedom"].info.nfe_sampling == runs["freedom"].nfe


def test_predictor_cost_is_counted():
    runs = small_runs()
    n, t = SMALL["num_particles"], SMALL["num_steps"]
    assert runs["dps_predictor"].nfe == n * t * (3 + 1)  # its count plus one velocity call
    # The same Tweedie prediction: the same samples as the built-in predictor.
    np.testing.assert_allclose(runs["dps_predictor"].samples, runs["dps1"].samples, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Invalid rewards
# ----------------------------------------------------------------------------------------------
def nan_above(threshold):
    def reward(x):
        return jnp.where(x[0] > threshold, jnp.nan, REWARD(x))

    return reward


def nan_gradient(x):
    """A finite reward whose gradient is NaN everywhere (``0·∞`` from ``√0``)."""
    return REWARD(x) + 0.0 * jnp.sqrt(jnp.sum(x - x))


def test_invalid_rewards_never_put_nan_into_the_state():
    threshold = 0.9
    nan_problem = RewardProblem(velocity, nan_above(threshold), (2,), 1.0)
    grad_problem = RewardProblem(velocity, nan_gradient, (2,), 1.0)
    assert np.isnan(jax.grad(nan_gradient)(jnp.ones(2))).all()
    res_nan, res_grad = jax.tree.map(
        np.asarray,
        jax.jit(lambda k: (dps(k, nan_problem, **SMALL), dps(k, grad_problem, **SMALL)))(KEY),
    )
    # NaN rewards at some particles and steps: the run completes with finite samples.
    assert np.all(np.isfinite(res_nan.samples))
    bad = res_nan.samples[:, 0] > threshold
    assert 0 < bad.sum() < bad.size
    assert np.all(np.isnan(res_nan.rewards[bad])) and np.all(np.isfinite(res_nan.rewards[~bad]))
    assert np.all(res_nan.log_weights[bad] == -np.inf)
    np.testing.assert_allclose(res_nan.log_weights[~bad], -np.log((~bad).sum()), rtol=1e-6)
    assert abs(logsumexp(res_nan.log_weights)) < 1e-6
    # NaN gradients everywhere: every guidance term is zeroed, which is unguided sampling.
    np.testing.assert_array_equal(res_grad.samples, small_runs()["dps0"].samples)
    assert np.all(np.isfinite(res_grad.rewards))


# ----------------------------------------------------------------------------------------------
# Best-of-N
# ----------------------------------------------------------------------------------------------
def test_best_of_n_keeps_the_argmax():
    res = small_runs()["bon"]
    n = SMALL["num_particles"]
    np.testing.assert_allclose(res.rewards, exact_reward(res.samples), rtol=1e-5)
    best = int(np.argmax(res.rewards))
    expected = np.full(n, -np.inf, np.float32)
    expected[best] = 0.0
    np.testing.assert_array_equal(res.log_weights, expected)
    assert res.nfe == n * SMALL["num_steps"] and res.info.nfe_init == 0
    assert np.isnan(res.log_normalizer)


def test_best_of_n_invalid_rewards_and_ties():
    def first_coordinate_unless_large(x):  # the particles with NaN would otherwise win
        return jnp.where(x[0] > 0.9, jnp.nan, x[0])

    problems = [
        RewardProblem(velocity, first_coordinate_unless_large, (2,), 1.0),
        RewardProblem(velocity, lambda x: 0.0 * x[0], (2,), 1.0),  # every reward ties
        RewardProblem(velocity, lambda x: jnp.nan * x[0], (2,), 1.0),  # no finite reward
    ]
    nan_res, tie_res, none_res = jax.tree.map(
        np.asarray, jax.jit(lambda k: [best_of_n(k, p, **SMALL) for p in problems])(KEY)
    )
    # Same key, same unguided particles whatever the reward.
    np.testing.assert_array_equal(nan_res.samples, small_runs()["bon"].samples)
    bad = nan_res.samples[:, 0] > 0.9
    assert bad.any() and np.all(np.isnan(nan_res.rewards[bad]))
    winner = int(np.flatnonzero(nan_res.log_weights == 0)[0])
    assert not bad[winner]
    assert nan_res.rewards[winner] == np.max(nan_res.rewards[~bad])
    assert np.sum(nan_res.log_weights == 0) == 1
    assert tie_res.log_weights[0] == 0 and np.all(tie_res.log_weights[1:] == -np.inf)
    assert np.all(none_res.log_weights == -np.inf) and np.all(np.isnan(none_res.rewards))


# ----------------------------------------------------------------------------------------------
# Argument errors (raised before anything runs)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match, error",
    [
        ({"num_particles": 0}, "num_particles", ValueError),
        ({"num_particles": 2.0}, "num_particles", TypeError),
        ({"num_particles": True}, "num_particles", TypeError),
        ({"num_steps": 0}, "num_steps", ValueError),
        ({"num_steps": None}, "num_steps", ValueError),
        ({"guidance_scale": -1.0}, "guidance_scale", ValueError),
        ({"guidance_scale": np.inf}, "guidance_scale", ValueError),
        ({"guidance_scale": "1"}, "guidance_scale", TypeError),
        ({"normalize": 1}, "normalize", TypeError),
        ({"num_repeats": -1}, "num_repeats", ValueError),
        ({"num_repeats": 1.5}, "num_repeats", TypeError),
        ({"window": (0.7, 0.3)}, "window", ValueError),
        ({"window": (-0.1, 0.5)}, "window", ValueError),
        ({"window": (0.5, 1.5)}, "window", ValueError),
        ({"window": 0.5}, "window", TypeError),
        ({"diffusion": "ode"}, "diffusion", TypeError),
        ({"grid": np.array([1.0, 0.5]), "num_steps": None}, "grid", ValueError),
        ({"grid": np.array([0.9, 0.5, 0.0]), "num_steps": None}, "grid", ValueError),
        ({"grid": np.array([1.0, 0.5, 0.6, 0.0]), "num_steps": None}, "grid", ValueError),
        ({"grid": np.array([1.0, 0.5, 0.0]), "num_steps": 5}, "num_steps", ValueError),
        ({"problem": "not a problem"}, "problem", TypeError),
    ],
)
def test_argument_errors(kwargs, match, error):
    """A wrong kind of value is a ``TypeError``, a value out of range a ``ValueError``."""
    kwargs = {"problem": PROBLEM, "num_particles": 4, **kwargs}
    problem = kwargs.pop("problem")
    with pytest.raises(error, match=match):
        freedom(KEY, problem, **kwargs)
    if not {"num_repeats", "window"} & set(kwargs):
        with pytest.raises(error, match=match):
            dps(KEY, problem, **kwargs)
        if not {"guidance_scale", "normalize"} & set(kwargs):
            with pytest.raises(error, match=match):
                best_of_n(KEY, problem, **kwargs)


def test_grid_with_matching_num_steps_is_accepted():
    runs = small_runs()
    np.testing.assert_array_equal(runs["bon_grid"].samples, runs["bon"].samples)
    assert runs["bon_grid"].nfe == runs["bon"].nfe


def test_nfe_budget_sizes_the_particles():
    """``nfe_budget = B``: ``N = ⌊B/T⌋`` for DPS and best-of-N, ``⌊B/(T + K·W)⌋`` for FreeDoM
    (grid 1, .8, …, .2: ``t = .6, .4`` in the window), and the run spends at most ``B``."""
    for sampler, per_particle in ((dps, 5), (best_of_n, 5), (freedom, 5 + 3 * 2)):
        res = sampler(KEY, PROBLEM, nfe_budget=57, num_steps=5)
        assert res.samples.shape[0] == 57 // per_particle
        assert int(res.nfe) == (57 // per_particle) * per_particle <= 57
    with pytest.raises(ValueError, match="not both"):
        dps(KEY, PROBLEM, nfe_budget=57, num_particles=3)
    with pytest.raises(ValueError, match="too small"):
        freedom(KEY, PROBLEM, nfe_budget=10, num_steps=5)
    with pytest.raises(ValueError, match="Tweedie"):
        dps(KEY, COSTLY_PROBLEM, nfe_budget=57, num_steps=5)
