"""The linear-Gaussian model's exact answers against the library's samplers and closed forms.

Algebra (step coefficients, Euler push-forward) is checked under x64 to ~1e-10: any formula
error is O(1). Statistical gates are z-scores ``|z| < 4.5`` (two-sided false-alarm rate ~7e-6
per statistic, ≤ 14 statistics per test) at fixed seeds, on float32 draws of
:func:`psijax.flows.sde.sample` with the exact Gaussian velocity; the float32 sampler error
(~1e-6 relative) is far below the Monte Carlo error (~1e-2).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax import flows
from psijax.models.gmm import GaussianMixture
from psijax.models.linear_gaussian import LinearGaussianFlow, gaussian_tilt
from psijax.models.presets import quadratic_reward
from tests.flows.gaussian import GaussianData, moment_z

Z_GATE = 4.5
NUM_DRAWS = 1 << 15
MODEL = LinearGaussianFlow(
    [1.0, -1.0, 0.5], [[0.09, 0.03, 0.0], [0.03, 0.16, -0.02], [0.0, -0.02, 0.25]]
)
# Reward and strength where the 20-step discretization error of Z is ~15 Monte Carlo standard
# errors at NUM_DRAWS draws (a small data variance makes the covariance error relatively large).
CENTER = np.array([1.0, -1.0, 0.5])
PRECISION = np.diag([1.0, 0.5, 1.0])
ALPHA = 0.3
DIFFUSIONS = {
    "linear": flows.linear_diffusion(1.0),
    "reference": flows.reference_diffusion(),
}
# Projections: the coordinates and three mixed directions, so off-diagonal covariances count.
DIRECTIONS = np.concatenate(
    [np.eye(3), np.array([[1.0, 1.0, 0.0], [0.0, 1.0, -1.0], [1.0, -0.5, 0.7]])]
)
DIRECTIONS /= np.linalg.norm(DIRECTIONS, axis=1, keepdims=True)


@functools.cache
def draws(name: str, num_steps: int = 20) -> np.ndarray:
    """``NUM_DRAWS`` float32 samples of the stochastic sampler from ``x1 ~ N(0, I)``."""
    grid = flows.uniform_grid(num_steps)
    diffusion = DIFFUSIONS[name]
    keys = jax.random.split(jax.random.key(20 + num_steps + len(name)), NUM_DRAWS + 1)
    x1 = jax.random.normal(keys[0], (NUM_DRAWS, 3), jnp.float32)
    run = jax.jit(
        jax.vmap(lambda k, x: flows.sample(k, MODEL.velocity, x, grid, diffusion)),
    )
    return np.asarray(run(keys[1:], x1), np.float64)


def weights(samples: np.ndarray) -> np.ndarray:
    """``exp(r(x)/α)`` per draw, float64."""
    diff = samples - CENTER
    return np.exp(-0.5 * np.einsum("ni,ij,nj->n", diff, PRECISION, diff) / ALPHA)


# ----------------------------------------------------------------------------------------------
# The affine velocity and one step
# ----------------------------------------------------------------------------------------------
def test_velocity_is_the_affine_closed_form():
    """``K_t x + k_t`` equals the brief's ``−μ + (tI − (1 − t)Σ)S_t⁻¹(x − (1 − t)μ)`` and the
    mixture's velocity."""
    mu, sigma = MODEL.mean, MODEL.cov
    x = np.random.default_rng(0).normal(size=(5, 3))
    for t in [1.0, 0.7, 0.2, 0.0]:
        k_mat, k_vec = MODEL.velocity_coefficients(t)
        np.testing.assert_allclose(k_mat, k_mat.T, atol=1e-12)
        s = (1 - t) ** 2 * sigma + t**2 * np.eye(3)
        ref = -mu + (x - (1 - t) * mu) @ np.linalg.solve(s, t * np.eye(3) - (1 - t) * sigma)
        np.testing.assert_allclose(x @ k_mat.T + k_vec, ref, rtol=1e-12, atol=1e-12)
        model = jax.vmap(MODEL.velocity, (0, None))(jnp.asarray(x, jnp.float32), t)
        np.testing.assert_allclose(model, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "diffusion",
    [
        flows.linear_diffusion(0.8),
        flows.reference_diffusion(),
        flows.ode_diffusion(),
        flows.custom_diffusion(lambda t: 0.4 + 0.0 * t),
    ],
    ids=["linear", "reference", "ode", "constant"],
)
def test_step_coefficients_equal_transition_from_velocity(diffusion):
    """``A x + b`` and ``σ`` equal ``transition_from_velocity(x, v(x, t), t, t', g)`` (x64)."""
    x = np.random.default_rng(1).normal(size=(6, 3)) * 2.0
    with jax.enable_x64(True):
        for t, t_next in [(1.0, 0.95), (1.0, 0.0), (0.55, 0.3), (0.3, 0.29), (0.02, 0.0)]:
            a, b, sigma = MODEL.step_coefficients(t, t_next, diffusion)
            xs = jnp.asarray(x, jnp.float64)
            vs = jax.vmap(MODEL.velocity, (0, None))(xs, jnp.float64(t))
            assert vs.dtype == jnp.float64
            trans = jax.vmap(
                lambda xi, vi, t=t, t_next=t_next: flows.transition_from_velocity(
                    xi, vi, jnp.float64(t), jnp.float64(t_next), diffusion
                )
            )(xs, vs)
            np.testing.assert_allclose(x @ a.T + b, trans.mean, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(sigma, trans.std, rtol=1e-10, atol=1e-14)


def test_isotropic_case_matches_the_independent_scalar_recursion():
    """For ``Σ = s²I`` the marginals equal ``tests.flows.gaussian``'s per-coordinate moments."""
    data = GaussianData([1.0, -2.0], 0.5)
    model = LinearGaussianFlow(data.m, 0.25 * np.eye(2))
    grid = np.asarray(flows.uniform_grid(12), np.float64)
    for diffusion, g2_over_t in [
        (flows.linear_diffusion(1.0), lambda t: t),
        (flows.reference_diffusion(), lambda t: t * (2.0 - t) ** 2),
    ]:
        means, covs = model.discretized_marginals(grid, diffusion)
        mean, var = data.sde_moments(grid, g2_over_t)
        np.testing.assert_allclose(means[-1], mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(covs[-1], var * np.eye(2), rtol=1e-12, atol=1e-14)
    means, covs = model.discretized_marginals(grid, flows.ode_diffusion())
    mean, var = data.euler_moments(grid)
    np.testing.assert_allclose(means[-1], mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(covs[-1], var * np.eye(2), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# The discretized marginals
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DIFFUSIONS))
def test_discretized_marginal_matches_monte_carlo(name):
    """Mean and variance of 6 projections of ``sde.sample`` draws vs ``N(m_T, C_T)``."""
    samples = draws(name)
    means, covs = MODEL.discretized_marginals(flows.uniform_grid(20), DIFFUSIONS[name])
    proj = samples @ DIRECTIONS.T
    mean = DIRECTIONS @ means[-1]
    var = np.einsum("ki,ij,kj->k", DIRECTIONS, covs[-1], DIRECTIONS)
    z_mean, z_var = moment_z(proj, mean, var)
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var
    # Power: the data covariance is off by ~2-5 % at 20 steps, which these draws detect.
    data_var = np.einsum("ki,ij,kj->k", DIRECTIONS, MODEL.cov, DIRECTIONS)
    assert np.max(np.abs(moment_z(proj, mean, data_var)[1])) > Z_GATE


def test_intermediate_marginals_match_monte_carlo():
    """The marginal at an interior grid time, sampled on the truncated grid."""
    grid = flows.uniform_grid(10)
    diffusion = DIFFUSIONS["reference"]
    means, covs = MODEL.discretized_marginals(grid, diffusion, [0.5, 0.0, -0.5], 0.8 * np.eye(3))
    keys = jax.random.split(jax.random.key(5), 8193)
    x1 = jnp.array([0.5, 0.0, -0.5]) + np.sqrt(0.8) * jax.random.normal(keys[0], (8192, 3))
    run = jax.jit(jax.vmap(lambda k, x: flows.sample(k, MODEL.velocity, x, grid[:5], diffusion)))
    proj = np.asarray(run(keys[1:], x1), np.float64) @ DIRECTIONS.T
    mean = DIRECTIONS @ means[4]
    var = np.einsum("ki,ij,kj->k", DIRECTIONS, covs[4], DIRECTIONS)
    z_mean, z_var = moment_z(proj, mean, var)
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var


def test_zero_diffusion_is_the_euler_push_forward():
    """With ``g ≡ 0`` the chain is the affine Euler map ``x_T = F x_0 + f`` (from
    ``flows.euler_sample`` at 0 and the basis vectors): ``m_T = F m_0 + f``, ``C_T = F C_0 Fᵀ``."""
    grid = np.asarray(flows.uniform_grid(7), np.float64)
    init_mean = np.array([0.3, -0.2, 1.0])
    a = np.random.default_rng(2).normal(size=(3, 3))
    init_cov = a @ a.T + 0.1 * np.eye(3)
    means, covs = MODEL.discretized_marginals(grid, flows.ode_diffusion(), init_mean, init_cov)
    with jax.enable_x64(True):
        points = jnp.asarray(np.concatenate([np.zeros((1, 3)), np.eye(3)]), jnp.float64)
        push = jax.vmap(lambda x: flows.euler_sample(MODEL.velocity, x, jnp.asarray(grid)))
        out = np.asarray(push(points))
    offset, f = out[0], (out[1:] - out[0]).T
    np.testing.assert_allclose(means[-1], f @ init_mean + offset, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(covs[-1], f @ init_cov @ f.T, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(means[0], init_mean)
    np.testing.assert_allclose(covs[0], init_cov)


@pytest.mark.parametrize("name", ["linear", "reference", "ode"])
def test_final_marginal_converges_to_the_data_at_rate_one_over_steps(name):
    """``|C_T − Σ|`` and ``|log Z_disc − log Z|`` shrink like ``1/T`` (weak order 1); the mean of
    ``x_T`` is exact on every grid (the mean of the exact velocity is the exact mean velocity)."""
    diffusion = flows.ode_diffusion() if name == "ode" else DIFFUSIONS[name]
    log_z = MODEL.continuous_log_normalizer(CENTER, PRECISION, ALPHA)
    cov_err, z_err = [], []
    for steps in (20, 200, 2000):
        means, covs = MODEL.discretized_marginals(flows.uniform_grid(steps), diffusion)
        np.testing.assert_allclose(means[-1], MODEL.mean, atol=1e-9)
        cov_err.append(np.max(np.abs(covs[-1] - MODEL.cov)))
        log_z_disc = MODEL.discretized_log_normalizer(
            flows.uniform_grid(steps), diffusion, CENTER, PRECISION, ALPHA
        )
        z_err.append(abs(log_z_disc - log_z))
    for err in (np.array(cov_err), np.array(z_err)):
        scaled = err * np.array([20, 200, 2000])  # ≈ constant for a first-order error
        assert np.all(scaled > 0.5 * scaled[0]) and np.all(scaled < 2.0 * scaled[0]), scaled
    assert cov_err[-1] < 1e-3 and z_err[-1] < 1e-3


# ----------------------------------------------------------------------------------------------
# Normalizers and the tilted target
# ----------------------------------------------------------------------------------------------
def test_continuous_log_normalizer_and_tilt_match_tilt_quadratic():
    """One-component ``GaussianMixture.tilt_quadratic``: same ``log Z``, mean and covariance,
    also for a singular (single-coordinate) precision."""
    gm = GaussianMixture(np.ones(1), MODEL.mean[None], MODEL.cov[None])
    single = np.diag([0.0, 2.0, 0.0])
    for precision, alpha in [(PRECISION, ALPHA), (single, 0.7)]:
        tilted, log_z = gm.tilt_quadratic(CENTER + 0.4, precision, alpha)
        mean, cov, log_z_ref = MODEL.tilted_distribution(CENTER + 0.4, precision, alpha)
        assert MODEL.continuous_log_normalizer(CENTER + 0.4, precision, alpha) == log_z_ref
        np.testing.assert_allclose(log_z_ref, log_z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mean, tilted.means[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cov, tilted.covs[0], rtol=1e-5, atol=1e-6)


def test_gaussian_tilt_matches_dense_formulas():
    """``Σ' = (C⁻¹ + P)⁻¹``, ``μ' = Σ'(C⁻¹m + Pc)``,
    ``Z = |I + CP|^{-1/2} exp(−½ δᵀ(C + P⁻¹)⁻¹δ)`` with ``δ = m − c``."""
    rng = np.random.default_rng(3)
    a, q = rng.normal(size=(2, 3, 3))
    c_mat, q = a @ a.T + 0.2 * np.eye(3), q @ q.T + 0.1 * np.eye(3)
    m, c = rng.normal(size=(2, 3))
    p = q / 0.6
    cov_ref = np.linalg.inv(np.linalg.inv(c_mat) + p)
    mean_ref = cov_ref @ (np.linalg.solve(c_mat, m) + p @ c)
    delta = m - c
    log_z_ref = -0.5 * np.linalg.slogdet(np.eye(3) + c_mat @ p)[1] - 0.5 * delta @ np.linalg.solve(
        c_mat + np.linalg.inv(p), delta
    )
    mean, cov, log_z = gaussian_tilt(m, c_mat, c, q, 0.6)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-10, atol=1e-12)
    assert log_z == pytest.approx(log_z_ref, abs=1e-12)
    # A point mass (C = 0) gives Z = exp(r(m)/α) and leaves it in place.
    mean, cov, log_z = gaussian_tilt(m, np.zeros((3, 3)), c, q, 0.6)
    assert log_z == pytest.approx(-0.5 * delta @ p @ delta, abs=1e-12)
    np.testing.assert_allclose(mean, m, atol=1e-12)
    np.testing.assert_allclose(cov, 0.0, atol=1e-12)


def test_quadratic_reward():
    r = quadratic_reward(CENTER, PRECISION)
    x = np.array([0.2, 0.4, -1.0])
    assert float(r(x)) == pytest.approx(-0.5 * (x - CENTER) @ PRECISION @ (x - CENTER), rel=1e-6)


@pytest.mark.parametrize("name", list(DIFFUSIONS))
def test_discretized_log_normalizer_matches_monte_carlo(name):
    """``mean(exp(r(x_T)/α))`` over sampler draws is ``Z_disc`` (ratio space, ``|z| < 4.5``), and
    those draws tell it apart from the continuous ``Z`` (``|z| > 4.5``)."""
    grid = flows.uniform_grid(20)
    w = weights(draws(name))
    log_z_disc = MODEL.discretized_log_normalizer(grid, DIFFUSIONS[name], CENTER, PRECISION, ALPHA)
    log_z = MODEL.continuous_log_normalizer(CENTER, PRECISION, ALPHA)
    ratio, rel_se = w.mean() / np.exp(log_z_disc), w.std(ddof=1) / np.sqrt(w.size) / w.mean()
    assert abs(ratio - 1.0) < Z_GATE * rel_se, (ratio, rel_se)
    assert abs(w.mean() / np.exp(log_z) - 1.0) > Z_GATE * rel_se, (log_z_disc, log_z, rel_se)


def test_twenty_steps_differ_visibly_from_continuous_time():
    """At 20 steps ``log Z_disc − log Z`` is several times the MC standard error of ``log Ẑ``
    with ``NUM_DRAWS`` draws (computed in closed form from ``Z(α/2)``); it vanishes with the step.

    Values (3-D model here, reference diffusion): log Z_disc ≈ −0.5170, log Z ≈ −0.5504.
    """
    diffusion = DIFFUSIONS["reference"]
    log_z = MODEL.continuous_log_normalizer(CENTER, PRECISION, ALPHA)
    grid = flows.uniform_grid(20)
    log_z_disc = MODEL.discretized_log_normalizer(grid, diffusion, CENTER, PRECISION, ALPHA)
    # sd(w)/E[w] for w = exp(r/α) is √(Z_disc(α/2)/Z_disc(α)² − 1).
    log_z_half = MODEL.discretized_log_normalizer(grid, diffusion, CENTER, PRECISION, ALPHA / 2)
    rel_se = np.sqrt(np.expm1(log_z_half - 2 * log_z_disc) / NUM_DRAWS)
    print(f"20 steps: log Z_disc = {log_z_disc:.4f}, continuous log Z = {log_z:.4f}, ")
    print(f"MC rel. s.e. with {NUM_DRAWS} draws = {rel_se:.4f}")
    assert log_z_disc == pytest.approx(-0.5170, abs=1e-4)
    assert log_z == pytest.approx(-0.5504, abs=1e-4)
    assert abs(log_z_disc - log_z) > 10 * rel_se


@pytest.mark.parametrize("name", list(DIFFUSIONS))
def test_tilted_final_distribution_matches_weighted_monte_carlo(name):
    """Self-normalized ``exp(r/α)``-weighted projection means of the draws vs the tilted
    Gaussian's (delta-method standard errors, ``|z| < 4.5``)."""
    samples = draws(name)
    w = weights(samples)
    w = w / w.sum()
    mean, cov, log_z = MODEL.tilted_final_distribution(
        flows.uniform_grid(20), DIFFUSIONS[name], CENTER, PRECISION, ALPHA
    )
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    proj = samples @ DIRECTIONS.T
    est = w @ proj
    se = np.sqrt(np.sum(w[:, None] ** 2 * (proj - est) ** 2, axis=0))
    z = (est - DIRECTIONS @ mean) / se
    assert np.max(np.abs(z)) < Z_GATE, z
    var = np.einsum("ki,ij,kj->k", DIRECTIONS, cov, DIRECTIONS)
    est_var = w @ (proj - est) ** 2
    # Loose second-moment check: weighted variance within 5 % (≫ its ~1 % sampling error).
    np.testing.assert_allclose(est_var, var, rtol=0.05)


# ----------------------------------------------------------------------------------------------
# Invalid inputs
# ----------------------------------------------------------------------------------------------
def test_invalid_inputs_raise():
    grid = flows.uniform_grid(5)
    diffusion = flows.reference_diffusion()
    with pytest.raises(ValueError, match="`cov`"):
        LinearGaussianFlow([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])  # indefinite
    with pytest.raises(ValueError, match="`cov`"):
        LinearGaussianFlow([0.0, 0.0], np.eye(3))
    with pytest.raises(ValueError, match="`cov`"):
        LinearGaussianFlow([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]])  # not symmetric
    with pytest.raises(ValueError, match="`mean`"):
        LinearGaussianFlow([np.nan, 0.0], np.eye(2))
    for alpha in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="`alpha`"):
            MODEL.discretized_log_normalizer(grid, diffusion, CENTER, PRECISION, alpha)
        with pytest.raises(ValueError, match="`alpha`"):
            MODEL.continuous_log_normalizer(CENTER, PRECISION, alpha)
    with pytest.raises(ValueError, match="`precision`"):
        MODEL.continuous_log_normalizer(CENTER, -PRECISION, 1.0)
    with pytest.raises(ValueError, match="`center`"):
        MODEL.continuous_log_normalizer(CENTER[:2], PRECISION, 1.0)
    for bad in ([1.0], [0.0, 0.5, 1.0], [1.0, 0.5, 0.5, 0.0], [1.5, 0.0], [[1.0, 0.0]]):
        with pytest.raises(ValueError, match="`grid`"):
            MODEL.discretized_marginals(bad, diffusion)
    with pytest.raises(ValueError, match="`init_cov`"):
        MODEL.discretized_marginals(grid, diffusion, init_cov=-np.eye(3))
    with pytest.raises(ValueError, match="`init_mean`"):
        MODEL.discretized_marginals(grid, diffusion, init_mean=np.zeros(2))
    with pytest.raises(ValueError, match="`t_next`"):
        MODEL.step_coefficients(0.5, 0.5, diffusion)
    with pytest.raises(ValueError, match="`t`"):
        MODEL.step_coefficients(1.5, 0.5, diffusion)
    with pytest.raises(ValueError, match="`diffusion`"):
        MODEL.step_coefficients(0.5, 0.2, flows.custom_diffusion(lambda t: -1.0 + 0.0 * t))
    with pytest.raises(TypeError, match="`diffusion`"):
        MODEL.step_coefficients(0.5, 0.2, lambda t: t)
