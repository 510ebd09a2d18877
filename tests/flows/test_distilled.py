"""The re-noising kernel of a distilled model (:mod:`psijax.flows.distilled`).

For Gaussian data the ideal distilled model (one-step prediction = the exact flow map) has an
affine velocity (:class:`LinearGaussianFlow` with ``distilled=True``), so every kernel is
linear-Gaussian and the law of the chain is known in closed form. The closed forms show which
kernel keeps which model's marginals; Monte Carlo draws of :func:`psijax.flows.sample` are
checked against them with ``|z| < 4.5`` gates at fixed seeds (false-alarm probability below
1e-4 per test).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax import flows
from psijax.flows.distilled import Renoising
from psijax.models.linear_gaussian import LinearGaussianFlow
from tests.flows.gaussian import moment_z

Z_GATE = 4.5
MEAN, COV = [1.0, -1.0], [[0.09, 0.02], [0.02, 0.16]]
DISTILLED = LinearGaussianFlow(MEAN, COV, distilled=True)
EXACT = LinearGaussianFlow(MEAN, COV)
GRIDS = {
    "one step": np.array([1.0, 0.0]),
    "4 uniform": np.asarray(flows.uniform_grid(4), np.float64),
    "uneven": np.array([1.0, 0.93, 0.4, 0.05, 0.0]),
}


def test_transition_is_the_renoised_prediction():
    """μ = (1 − t')(x − t·v), σ = t', on pytrees; bf16 inputs give a float32 mean."""
    rng = np.random.default_rng(0)
    x, v = rng.normal(size=(2, 5))
    for t, t_next in [(1.0, 0.75), (0.5, 0.2), (0.3, 0.0)]:
        trans = flows.transition_from_velocity(
            {"a": jnp.asarray(x, jnp.bfloat16)},
            {"a": jnp.asarray(v, jnp.bfloat16)},
            t,
            t_next,
            Renoising(),
        )
        xb = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
        vb = np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64)
        assert trans.mean["a"].dtype == jnp.float32
        np.testing.assert_allclose(trans.mean["a"], (1 - t_next) * (xb - t * vb), rtol=1e-6)
        np.testing.assert_allclose(trans.std, t_next, rtol=1e-7)
    with pytest.raises(ValueError, match="t_next"):
        Renoising().transition(jnp.zeros(2), jnp.zeros(2), 0.5, 0.6)
    with pytest.raises(ValueError, match="`t`"):
        Renoising().transition(jnp.zeros(2), jnp.zeros(2), 0.0, 0.0)


def test_distilled_velocity_predicts_the_flow_map():
    """``x − t·u(x, t) = Φ_t(x)``: the closed-form flow map, and the ODE of the exact velocity
    (diffrax, tight tolerances); the JAX velocity equals its float64 coefficients."""
    x = np.array([0.3, -0.2])
    for t in (1.0, 0.6, 0.05):
        k_mat, k_vec = DISTILLED.velocity_coefficients(t)
        m_mat, c_vec = DISTILLED.flow_map(t)
        np.testing.assert_allclose(x - t * (k_mat @ x + k_vec), m_mat @ x + c_vec, atol=1e-12)
        u = DISTILLED.velocity(jnp.asarray(x, jnp.float32), t)
        np.testing.assert_allclose(u, k_mat @ x + k_vec, rtol=1e-5, atol=1e-6)
        ode, _ = flows.flow_map(EXACT.velocity, jnp.asarray(x), t, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(ode, m_mat @ x + c_vec, atol=2e-5)
    # finite at t = 0, where both models' velocity is v(x, 0) = −x
    np.testing.assert_allclose(DISTILLED.velocity(jnp.asarray(x), 0.0), -x, rtol=1e-6)
    np.testing.assert_allclose(DISTILLED.velocity_coefficients(0.0)[0], -np.eye(2), atol=1e-12)


@pytest.mark.parametrize("grid", list(GRIDS), ids=list(GRIDS))
def test_renoising_keeps_every_marginal_of_the_distilled_model(grid):
    """On the distilled model the kernel's chain is ``N((1 − t)μ, S_t)`` at every grid time, on
    any grid (no discretisation error)."""
    times = GRIDS[grid]
    means, covs = DISTILLED.discretized_marginals(times, Renoising())
    for t, mean, cov in zip(times, means, covs, strict=True):
        exact_mean, exact_cov = DISTILLED.marginal(t)
        np.testing.assert_allclose(mean, exact_mean, atol=1e-12)
        np.testing.assert_allclose(cov, exact_cov, atol=1e-12)


def test_each_kernel_is_wrong_for_the_other_model():
    """The stochastic sampler on the distilled model, and the re-noising kernel on the exact
    one, miss the data covariance by far more than any discretisation error: the distilled
    velocity is not a conditional mean, and the exact model's prediction is not a sample."""
    grid = np.asarray(flows.uniform_grid(25), np.float64)
    sde_cov = DISTILLED.discretized_marginals(grid, flows.reference_diffusion())[1][-1]
    renoised_cov = EXACT.discretized_marginals(grid, Renoising())[1][-1]
    exact_sde_cov = EXACT.discretized_marginals(grid, flows.reference_diffusion())[1][-1]
    variances = np.diag(EXACT.cov)
    assert np.all(np.diag(sde_cov) > 2.5 * variances)  # 3.2× the data's variance
    assert np.all(np.diag(renoised_cov) < 0.5 * variances)  # 0.42–0.43×
    # while the right pairing is close even at 25 steps
    np.testing.assert_allclose(np.diag(exact_sde_cov), variances, rtol=0.1)


@pytest.mark.parametrize("grid", ["4 uniform", "uneven"])
def test_sampler_draws_follow_the_closed_form(grid):
    """:func:`psijax.flows.sample` with the kernel on the distilled JAX velocity: the draws have
    the data's moments (the chain's exact law); the gate rejects the exact model's draws."""
    times = GRIDS[grid]
    n = 1 << 15
    key_x, key_run = jax.random.split(jax.random.key(5))
    x1 = jax.random.normal(key_x, (n, 2))
    keys = jax.random.split(key_run, n)

    def draws(model):
        one = lambda k, x: flows.sample(k, model.velocity, x, times, Renoising())  # noqa: E731
        return np.asarray(jax.jit(jax.vmap(one))(keys, x1), np.float64)

    variances = np.diag(DISTILLED.cov)
    z_mean, z_var = moment_z(draws(DISTILLED), DISTILLED.mean, variances)
    assert np.all(np.abs(z_mean) < Z_GATE) and np.all(np.abs(z_var) < Z_GATE), (z_mean, z_var)
    assert np.all(np.abs(moment_z(draws(EXACT), DISTILLED.mean, variances)[1]) > Z_GATE)


def test_closed_forms_refuse_other_kernels():
    class Kernel:
        def transition(self, x, v, t, t_next):
            return Renoising().transition(x, v, t, t_next)

    with pytest.raises(TypeError, match="Diffusion or Renoising"):
        DISTILLED.step_coefficients(1.0, 0.5, Kernel())
    with pytest.raises(TypeError, match="distilled"):
        LinearGaussianFlow(MEAN, COV, distilled="yes")


def test_oracle_velocity_is_the_flow_map_and_finite_at_zero():
    """``flows.ode.distilled_velocity``: its one-step prediction is the ODE flow map (here the
    closed form of Gaussian data); at ``t = 0`` it is the model's own velocity, also under
    ``vmap`` over times that include 0, where both branches run (no 0/0)."""
    oracle = flows.distilled_velocity(EXACT.velocity, rtol=1e-7, atol=1e-7)
    x = jnp.array([0.3, -0.2])
    for t in (1.0, 0.4):
        m_mat, c_vec = EXACT.flow_map(t)
        np.testing.assert_allclose(x - t * oracle(x, t), m_mat @ x + c_vec, atol=2e-5)
    np.testing.assert_allclose(oracle(x, 0.0), EXACT.velocity(x, 0.0), rtol=1e-6)
    both = jax.vmap(oracle, in_axes=(None, 0))(x, jnp.array([0.0, 0.4]))
    np.testing.assert_allclose(both[0], EXACT.velocity(x, 0.0), rtol=1e-6)
    assert np.all(np.isfinite(both))
