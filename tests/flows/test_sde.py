"""Tests of the stochastic sampler (:mod:`psijax.flows.sde`).

For Gaussian data the exact velocity is affine in x, so each step of the sampler is an affine
map plus Gaussian noise and the law of its output is Gaussian with moments propagated exactly
in float64 (``GaussianData.sde_moments``). The statistical tests compare samples with those
exact moments (gates ``|z| < 4.5``, false-alarm probability < 1e-4 per test with ≤ 12
statistics; fixed seeds) and, separately and deterministically, the discretised moments with the
data moments (the discretisation error, stated as a tolerance).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from psijax import flows
from tests.flows.gaussian import GaussianData, moment_z

Z_GATE = 4.5
MODEL = GaussianData([1.0, -2.0], 0.5)

DIFFUSIONS = {
    "linear": (flows.linear_diffusion(1.0), lambda t: t),
    "reference": (flows.reference_diffusion(), lambda t: t * (2.0 - t) ** 2),
}


# ----------------------------------------------------------------------------------------------
# Diffusion coefficients and one transition
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "diffusion,g_ref",
    [
        (flows.linear_diffusion(0.7), lambda t: 0.7 * t),
        (flows.reference_diffusion(), lambda t: t * (2.0 - t)),
        (flows.ode_diffusion(), lambda t: 0.0 * t),
        (flows.custom_diffusion(lambda t: 0.3 + 0.0 * t), lambda t: 0.3 + 0.0 * t),
    ],
)
def test_transition_matches_equation(diffusion, g_ref):
    """μ = x + Δ[−v + ½g²s], σ = g√Δ, with s from the score identity (float64 reference)."""
    rng = np.random.default_rng(3)
    x, v = rng.normal(size=(2, 5))
    for t, t_next in [(1.0, 0.9), (0.55, 0.3), (0.02, 0.0)]:
        trans = flows.transition_from_velocity(
            jnp.asarray(x, jnp.float32), jnp.asarray(v, jnp.float32), t, t_next, diffusion
        )
        g, delta = g_ref(t), t - t_next
        score = -(x + (1.0 - t) * v) / t
        np.testing.assert_allclose(
            trans.mean, x + delta * (-v + 0.5 * g**2 * score), rtol=2e-5, atol=2e-6
        )
        np.testing.assert_allclose(trans.std, g * np.sqrt(delta), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(diffusion.squared_over_time(t), g**2 / t, rtol=1e-6)


@pytest.mark.parametrize("name", ["linear", "reference"])
def test_last_step_to_zero_is_finite_and_bounded(name):
    """g²/t is bounded, so the step from a tiny t to 0 moves x by O(Δ), whatever ‖s‖ ~ 1/t."""
    diffusion, _ = DIFFUSIONS[name]
    velocity_fn = MODEL.jax_velocity()
    x = jnp.array([3.0, -4.0], jnp.float32)
    for t in [1e-2, 1e-4, 1e-7]:
        x_next, trans = flows.step(jax.random.key(0), velocity_fn, x, t, 0.0, diffusion)
        assert np.all(np.isfinite(x_next)) and np.isfinite(trans.std)
        # |μ − x| ≤ Δ(|v| + ½(g²/t)|x + (1 − t)v|) with g²/t ≤ 4t here.
        v = np.asarray(velocity_fn(x, jnp.float32(t)))
        bound = t * (np.abs(v) + 2.0 * t * np.abs(np.asarray(x) + v)) + 1e-6
        assert np.all(np.abs(np.asarray(trans.mean) - np.asarray(x)) <= bound)
    # The whole sampler on a grid that ends at 0 stays finite, also from far-out x1.
    out = flows.sample(jax.random.key(1), velocity_fn, 50.0 * x, flows.uniform_grid(10), diffusion)
    assert np.all(np.isfinite(out))


def test_transition_logpdf_matches_scipy():
    rng = np.random.default_rng(0)
    mean = {"a": rng.normal(size=(2, 3)), "b": rng.normal(size=4)}
    x_next = {"a": rng.normal(size=(2, 3)), "b": rng.normal(size=4)}
    std = 0.37
    trans = flows.Transition(jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), mean), std)
    got = flows.transition_logpdf(
        jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), x_next), trans
    )
    expected = sum(scipy.stats.norm.logpdf(x_next[k], mean[k], std).sum() for k in ("a", "b"))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_step_logpdf_of_own_draw_matches_scipy():
    velocity_fn = MODEL.jax_velocity()
    x = jnp.array([0.4, 0.1], jnp.float32)
    x_next, trans = flows.step(
        jax.random.key(5), velocity_fn, x, 0.6, 0.5, flows.reference_diffusion()
    )
    expected = scipy.stats.norm.logpdf(
        np.asarray(x_next, np.float64), np.asarray(trans.mean, np.float64), float(trans.std)
    ).sum()
    np.testing.assert_allclose(flows.transition_logpdf(x_next, trans), expected, rtol=1e-5)


def test_transition_logpdf_of_point_mass_is_infinite_not_nan():
    trans = flows.transition_from_velocity(
        jnp.ones(3), jnp.ones(3), 0.5, 0.4, flows.ode_diffusion()
    )
    assert float(trans.std) == 0.0
    assert float(flows.transition_logpdf(trans.mean, trans)) == np.inf
    assert float(flows.transition_logpdf(trans.mean + 1e-3, trans)) == -np.inf


# ----------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------
def _run_sampler(diffusion, grid, n, seed):
    """``n`` independent runs from N(0, I). The Gaussian model's velocity and every step act
    elementwise, so the (n, 2) batch is run as one sample (vmap is tested separately below)."""
    key_init, key_run = jax.random.split(jax.random.key(seed))
    x1 = jax.random.normal(key_init, (n, 2))
    run = jax.jit(lambda k, x: flows.sample(k, MODEL.jax_velocity(), x, grid, diffusion))
    return np.asarray(run(key_run, x1), np.float64)


@pytest.mark.parametrize("name", ["linear", "reference"])
def test_sampler_reproduces_data_moments(name):
    diffusion, g2_over_t = DIFFUSIONS[name]
    grid = flows.uniform_grid(200)
    samples = _run_sampler(diffusion, grid, n=40_000, seed=11)

    # (1) exact: the samples follow the discretised chain's Gaussian law.
    mean, var = MODEL.sde_moments(np.asarray(grid, np.float64), g2_over_t)
    z_mean, z_var = moment_z(samples, mean, var)
    assert np.all(np.abs(z_mean) < Z_GATE) and np.all(np.abs(z_var) < Z_GATE), (z_mean, z_var)
    # (2) discretisation: with 200 Euler–Maruyama steps the chain's moments are within 0.01 of
    # the data's N(m, s²) (first-order error; the variance is off by −2.7e-3 / −2.0e-3 for the
    # linear / reference diffusion, and the mean is exact for this model).
    np.testing.assert_allclose(mean, MODEL.m, atol=1e-6)
    np.testing.assert_allclose(var, MODEL.s**2, atol=0.01)
    # Not vacuous: a 6% error in the variance, or the data mean shifted by 0.02, is rejected.
    assert np.all(np.abs(moment_z(samples, mean, 1.06 * var)[1]) > Z_GATE)
    assert np.all(np.abs(moment_z(samples, mean + 0.02, var)[0]) > Z_GATE)


def test_sampler_without_score_correction_is_detected():
    """Noise without the ½g²s drift correction does not keep the marginals: the gate sees it."""
    grid = flows.uniform_grid(200)
    no_correction = flows.custom_diffusion(lambda t: t, lambda t: 0.0 * t)  # σ = t√Δ, no score
    samples = _run_sampler(no_correction, grid, n=20_000, seed=12)
    _, z_var = moment_z(samples, MODEL.m, MODEL.s**2)
    assert np.all(np.abs(z_var) > Z_GATE)


@pytest.mark.parametrize("diffusion", [flows.ode_diffusion(), flows.linear_diffusion(0.0)])
def test_zero_diffusion_is_euler(diffusion):
    velocity_fn = MODEL.jax_velocity()
    grid = flows.flux_grid(30, 1024)
    x1 = jax.random.normal(jax.random.key(2), (16, 2))
    keys = jax.random.split(jax.random.key(3), 16)
    stochastic = jax.vmap(lambda k, x: flows.sample(k, velocity_fn, x, grid, diffusion))(keys, x1)
    euler = jax.vmap(lambda x: flows.euler_sample(velocity_fn, x, grid))(x1)
    np.testing.assert_allclose(stochastic, euler, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------
def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="eta"):
        flows.linear_diffusion(-0.1)
    with pytest.raises(ValueError, match="eta"):
        flows.linear_diffusion(float("nan"))
    with pytest.raises(TypeError, match="eta"):
        flows.linear_diffusion("1")
    with pytest.raises(TypeError, match="coefficient_fn"):
        flows.custom_diffusion(1.0)
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match="t_next"):
        flows.transition_from_velocity(x, x, 0.5, 0.5, flows.reference_diffusion())
    with pytest.raises(ValueError, match="`t`"):
        flows.transition_from_velocity(x, x, 0.0, 0.0, flows.reference_diffusion())
    velocity_fn = MODEL.jax_velocity()
    for grid in (jnp.array([0.0, 1.0]), jnp.array([1.0]), jnp.ones((2, 2)), jnp.array([1.5, 0])):
        with pytest.raises(ValueError, match="grid"):
            flows.sample(jax.random.key(0), velocity_fn, x, grid, flows.reference_diffusion())
