"""Isotropic Gaussian mixtures: the O(K·d) velocity equals the general mixture's."""

import jax
import numpy as np
import pytest

from psijax.models.isotropic import IsotropicMixture


@pytest.mark.parametrize("dim", [2, 8])
def test_velocity_and_tweedie_equal_the_general_mixture(dim):
    rng = np.random.default_rng(dim)
    model = IsotropicMixture(rng.uniform(0.5, 2.0, 5), 3.0 * rng.standard_normal((5, dim)), 0.4)
    general = model.mixture
    x = rng.standard_normal((7, dim)) * 3.0
    for t in (0.0, 0.03, 0.5, 0.97, 1.0):
        ours = jax.vmap(model.velocity, in_axes=(0, None))(x, t)
        theirs = jax.vmap(general.velocity, in_axes=(0, None))(x, t)
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(
            jax.vmap(model.tweedie, in_axes=(0, None))(x, t),
            jax.vmap(general.tweedie, in_axes=(0, None))(x, t),
            rtol=2e-4,
            atol=2e-4,
        )
    np.testing.assert_allclose(np.asarray(general.weights).sum(), 1.0, rtol=1e-6)


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="weights"):
        IsotropicMixture(np.array([1.0, -1.0]), np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="means"):
        IsotropicMixture(np.ones(2), np.zeros((3, 2)), 0.5)
    with pytest.raises(ValueError, match="std"):
        IsotropicMixture(np.ones(2), np.zeros((2, 2)), 0.0)
