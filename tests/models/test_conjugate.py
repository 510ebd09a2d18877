"""The conjugate Gaussian target's exact answers against brute-force linear algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from psijax.models.conjugate import make_conjugate


@pytest.mark.parametrize("dim,k", [(1, 1), (5, 3), (7, 7)])
def test_moments_and_normalizer_match_dense_formulas(dim, k):
    """Woodbury moments and ``log Z`` equal the dense posterior ``(I + AᵀA/σ²)⁻¹`` formulas."""
    t = make_conjugate(dim, num_directions=k, noise_sd=0.6, seed=3)
    a, y, s2 = t.directions, t.observations, t.noise_sd**2
    cov = np.linalg.inv(np.eye(dim) + a.T @ a / s2)
    mean = cov @ a.T @ y / s2
    u = np.random.default_rng(0).standard_normal((4, dim))
    m, v = t.projection_moments(u)
    np.testing.assert_allclose(m, u @ mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(v, np.einsum("nd,de,ne->n", u, cov, u), rtol=1e-10)
    marginal = stats.multivariate_normal(np.zeros(len(y)), s2 * np.eye(len(y)) + a @ a.T)
    assert t.log_normalizer() == pytest.approx(marginal.logpdf(y), abs=1e-10)


def test_normalizer_by_quadrature_in_one_dimension():
    """In d = 1, ``∫ N(x; 0, 1)·exp(normalized_loglikelihood(x)) dx`` by quadrature is ``Z``."""
    t = make_conjugate(1, noise_sd=0.5, seed=1)
    f = jax.jit(lambda x: t.normalized_loglikelihood(jnp.atleast_1d(x)))
    z, _ = integrate.quad(lambda x: stats.norm.pdf(x) * np.exp(float(f(x))), -12, 12)
    assert np.log(z) == pytest.approx(t.log_normalizer(), abs=1e-5)


def test_logdensity_is_prior_times_likelihood_and_gradient_vanishes_at_mean():
    """``∇ log π`` is zero at the exact posterior mean (the posterior is Gaussian)."""
    t = make_conjugate(50, seed=2)
    mean, _ = t.projection_moments(np.eye(50))
    grad = jax.grad(t.logdensity)(jnp.asarray(mean, jnp.float32))
    np.testing.assert_allclose(np.asarray(grad), 0.0, atol=1e-5)


def test_observations_do_not_depend_on_dimension():
    """For a fixed seed the data, hence the posterior along the directions, are shared by all d."""
    ys = [make_conjugate(d, seed=4).observations for d in (3, 16, 4096)]
    np.testing.assert_array_equal(ys[0], ys[1])
    np.testing.assert_array_equal(ys[0], ys[2])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="dim"):
        make_conjugate(0)
    with pytest.raises(ValueError, match="noise_sd"):
        make_conjugate(3, noise_sd=0.0)
