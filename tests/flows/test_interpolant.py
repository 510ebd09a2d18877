"""Tests of :mod:`psijax.flows.interpolant` against closed forms.

Gaussian data ``N(m, s² I)`` makes every prediction closed-form (see ``tests/flows/gaussian.py``).
Statistical gates are ``|z| < 4.5`` on exact Monte Carlo standard errors: with at most ~10
statistics per test the false-alarm probability is below ``10·P(|N(0,1)| > 4.5) ≈ 7e-5``, and
every seed is fixed. Each statistical test also checks that its gate rejects a wrong answer.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax import flows
from tests.flows.gaussian import GaussianData, moment_z

Z_GATE = 4.5
MODEL = GaussianData([1.0, -2.0, 0.5], 0.7)


def _gaussian_log_marginal(x, t):
    var = MODEL.var(t)
    mean = (1.0 - t) * jnp.asarray(MODEL.m, jnp.float32)
    return -0.5 * jnp.sum((x - mean) ** 2) / var - 0.5 * x.size * jnp.log(2 * jnp.pi * var)


@pytest.mark.parametrize("t", [0.05, 0.4, 0.9, 1.0])
def test_predictions_from_exact_velocity(t):
    x = np.random.default_rng(0).normal(size=3) * 1.5
    # The velocity formula is E[x1|x] − E[x0|x] from Gaussian regression (independent check).
    np.testing.assert_allclose(
        MODEL.velocity(x, t), MODEL.x1_mean(x, t) - MODEL.x0_mean(x, t), rtol=1e-12
    )
    xj = jnp.asarray(x, jnp.float32)
    v = MODEL.jax_velocity()(xj, jnp.float32(t))

    np.testing.assert_allclose(
        flows.tweedie_from_velocity(xj, v, t), MODEL.x0_mean(x, t), rtol=2e-5, atol=2e-6
    )
    np.testing.assert_allclose(
        flows.noise_from_velocity(xj, v, t), MODEL.x1_mean(x, t), rtol=2e-5, atol=2e-6
    )
    autodiff_score = jax.grad(_gaussian_log_marginal)(xj, t)
    np.testing.assert_allclose(
        flows.score_from_velocity(xj, v, t), autodiff_score, rtol=2e-5, atol=2e-6
    )
    x0_hat = jnp.asarray(MODEL.x0_mean(x, t), jnp.float32)
    np.testing.assert_allclose(flows.velocity_from_tweedie(xj, x0_hat, t), v, rtol=1e-4, atol=2e-5)
    # x = (1 − t)·x̂0 + t·ε̂: the interpolant of the two predictions gives back x.
    eps_hat = flows.noise_from_velocity(xj, v, t)
    np.testing.assert_allclose(
        flows.interpolate(flows.tweedie_from_velocity(xj, v, t), eps_hat, t), x, rtol=1e-5
    )


def test_predictions_on_pytrees_keep_dtypes():
    x = {"a": jnp.arange(3.0, dtype=jnp.bfloat16), "b": jnp.ones((2, 2), jnp.float32)}
    v = jax.tree.map(lambda a: 0.5 * jnp.ones_like(a), x)
    out = flows.tweedie_from_velocity(x, v, 0.5)
    assert out["a"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
    np.testing.assert_allclose(out["a"].astype(np.float32), np.arange(3.0) - 0.25)
    np.testing.assert_allclose(out["b"], np.full((2, 2), 0.75))
    score = flows.score_from_velocity(x, v, 0.25)
    np.testing.assert_allclose(score["b"], np.full((2, 2), -(1.0 + 0.75 * 0.5) / 0.25))


# ----------------------------------------------------------------------------------------------
# Time grids and the FLUX shift
# ----------------------------------------------------------------------------------------------
def test_flux_mu_line():
    np.testing.assert_allclose(flows.flux_mu(256), 0.5, rtol=1e-6)
    np.testing.assert_allclose(flows.flux_mu(4096), 1.15, rtol=1e-6)
    np.testing.assert_allclose(flows.flux_mu(1024), 0.5 + 0.65 * 768 / 3840, rtol=1e-6)
    with pytest.raises(ValueError, match="num_tokens"):
        flows.flux_mu(0)


@pytest.mark.parametrize("mu", [0.0, 0.5, 1.15, 3.0])
def test_flux_shift_endpoints_monotone_and_formula(mu):
    assert float(flows.flux_shift(0.0, mu)) == 0.0
    assert float(flows.flux_shift(1.0, mu)) == 1.0
    grads = jax.vmap(jax.grad(flows.flux_shift), (0, None))(jnp.array([0.0, 1.0]), mu)
    assert np.all(np.isfinite(grads)) and np.all(grads > 0)
    t = np.linspace(0.0, 1.0, 2001)
    shifted = np.asarray(flows.flux_shift(jnp.asarray(t, jnp.float32), mu), np.float64)
    assert np.all(np.diff(shifted) > 0)
    inner = t[1:-1]
    expected = math.exp(mu) / (math.exp(mu) + 1.0 / inner - 1.0)
    np.testing.assert_allclose(shifted[1:-1], expected, rtol=1e-5, atol=1e-7)
    if mu > 0:  # a positive shift moves every interior time towards the noise end
        assert np.all(shifted[1:-1] > inner)


def test_uniform_grid():
    grid = flows.uniform_grid(7)
    assert grid.dtype == jnp.float32 and grid.shape == (8,)
    assert float(grid[0]) == 1.0 and float(grid[-1]) == 0.0
    np.testing.assert_allclose(grid, 1.0 - np.arange(8) / 7, atol=1e-7)
    assert np.all(np.diff(np.asarray(grid)) < 0)


def test_flux_grid_matches_shifted_uniform_grid():
    grid = flows.flux_grid(4, 4096)
    assert grid.dtype == jnp.float32
    assert float(grid[0]) == 1.0 and float(grid[-1]) == 0.0
    assert np.all(np.diff(np.asarray(grid)) < 0)
    # diffusers' FluxPipeline: sigmas linspace(1, 1/4, 4) shifted with μ(4096) = 1.15, then 0.
    sigmas = np.linspace(1.0, 0.25, 4)
    expected = np.append(math.exp(1.15) / (math.exp(1.15) + 1.0 / sigmas - 1.0), 0.0)
    np.testing.assert_allclose(grid, expected, rtol=1e-6)
    big = flows.flux_grid(50, 1024)
    np.testing.assert_allclose(
        big, flows.flux_shift(flows.uniform_grid(50), flows.flux_mu(1024)), atol=1e-6
    )


@pytest.mark.parametrize("fn", [flows.uniform_grid, lambda n: flows.flux_grid(n, 256)])
def test_invalid_num_steps_raise(fn):
    for bad in (0, -3):
        with pytest.raises(ValueError, match="num_steps"):
            fn(bad)
    for bad in (2.5, True, "4"):
        with pytest.raises(TypeError, match="num_steps"):
            fn(bad)
    with pytest.raises(ValueError, match="num_tokens"):
        flows.flux_grid(4, 0)


# ----------------------------------------------------------------------------------------------
# Forward re-noising kernel
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t_from,t_to", [(0.0, 0.3), (0.2, 0.5), (0.7, 0.71), (0.5, 1.0)])
def test_renoise_coefficients_formula(t_from, t_to):
    a, b = flows.renoise_coefficients(t_from, t_to)
    a_ref = (1.0 - t_to) / (1.0 - t_from)
    np.testing.assert_allclose(a, a_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b**2, t_to**2 - a_ref**2 * t_from**2, rtol=1e-5, atol=1e-7)


def test_renoise_vmaps_with_traced_times():
    x = jnp.ones((4, 2))
    keys = jax.random.split(jax.random.key(0), 4)
    t_from = jnp.array([0.0, 0.2, 0.4, 0.6])
    out = jax.jit(jax.vmap(flows.renoise, (0, 0, 0, None)))(keys, x, t_from, 0.9)
    a, b = jax.vmap(flows.renoise_coefficients, (0, None))(t_from, 0.9)
    z = jax.vmap(lambda k, xi: jax.random.normal(k, xi.shape))(keys, x)
    np.testing.assert_allclose(out, a[:, None] * x + b[:, None] * z, rtol=1e-5, atol=1e-6)


def test_renoise_coefficients_reject_bad_times():
    for t_from, t_to in [(0.5, 0.5), (0.5, 0.2), (1.0, 1.0), (-0.1, 0.5), (0.2, 1.5)]:
        with pytest.raises(ValueError, match="t_"):
            flows.renoise_coefficients(t_from, t_to)


def test_renoise_gives_exact_marginal():
    """x_{t'} from the exact interpolant, re-noised to t, has the law of x_t (also given x0)."""
    n, t_from, t_to = 100_000, 0.3, 0.8
    k0, k1, k2 = jax.random.split(jax.random.key(1), 3)
    m = jnp.asarray(MODEL.m, jnp.float32)
    x0 = m + MODEL.s * jax.random.normal(k0, (n, 3))
    x_from = flows.interpolate(x0, jax.random.normal(k1, (n, 3)), t_from)
    # The kernel acts elementwise, so the whole (n, 3) batch is renoised as one "sample".
    x_to = flows.renoise(k2, x_from, t_from, t_to)
    x_to, x0 = np.asarray(x_to, np.float64), np.asarray(x0, np.float64)
    z_mean, z_var = moment_z(x_to, (1.0 - t_to) * MODEL.m, MODEL.var(t_to))
    assert np.all(np.abs(z_mean) < Z_GATE) and np.all(np.abs(z_var) < Z_GATE), (z_mean, z_var)
    # Given x0, x_t − (1 − t)x0 must be N(0, t²): checks the coupling, not only the marginal.
    z_mean, z_var = moment_z(x_to - (1.0 - t_to) * x0, 0.0, t_to**2)
    assert np.all(np.abs(z_mean) < Z_GATE) and np.all(np.abs(z_var) < Z_GATE), (z_mean, z_var)
    # Not vacuous: the marginal at t' (no re-noising) is rejected.
    _, z_wrong = moment_z(np.asarray(x_from, np.float64), 0.0, MODEL.var(t_to))
    assert np.all(np.abs(z_wrong) > Z_GATE)
