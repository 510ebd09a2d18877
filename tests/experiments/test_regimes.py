"""The regime study's problems (psijax.experiments.regimes): the threshold puts the stated prior
mass in the high region, the exact target and log Z agree with Monte Carlo, the two rewarded
modes keep their 6 : 1 ratio. Gates |z| < 4.5 at fixed seeds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.experiments import regimes as rg

Z_GATE = 4.5


@pytest.mark.parametrize("dim", [2, 8])
def test_threshold_puts_the_stated_mass_in_the_high_region(dim):
    for mass in (1e-1, 1e-3, 1e-6):
        problem = rg.regime_problem(dim, mass, jax.random.key(0), num_draws=2000)
        assert rg.high_region_mass(problem.data, problem.direction, problem.threshold) == (
            pytest.approx(mass, rel=1e-9)
        )
    # Monte Carlo at the largest mass
    problem = rg.regime_problem(dim, 0.1, jax.random.key(0), num_draws=2000)
    x = problem.data.mixture.sample(jax.random.key(1), 200_000)
    hits = np.asarray(x @ jnp.asarray(problem.direction, jnp.float32) >= problem.threshold)
    z = (hits.mean() - 0.1) / math.sqrt(0.1 * 0.9 / hits.size)
    assert abs(z) < Z_GATE, z


def test_exact_target_and_log_z_match_importance_sampling():
    """``log Z = log E_p[e^{r/α}]`` and the target's mean along the feature, by importance
    sampling of 400,000 data draws (q = 0.1, d = 8); the rewarded modes hold 6/7 and 1/7."""
    problem = rg.regime_problem(8, 0.1, jax.random.key(0), num_draws=20_000)
    x = problem.data.mixture.sample(jax.random.key(2), 400_000)
    r = jax.vmap(lambda y: rg.reward_fn(problem.direction)(y, problem.threshold))(x)
    w = np.exp(np.asarray(r, np.float64) / rg.ALPHA)
    z = (w.mean() - math.exp(problem.log_z)) / (w.std(ddof=1) / math.sqrt(w.size))
    assert abs(z) < Z_GATE, z
    features = np.asarray(x @ jnp.asarray(problem.direction, jnp.float32), np.float64)
    draws = problem.target.sample(jax.random.key(3), 20_000)
    exact_mean = float(jnp.mean(draws @ jnp.asarray(problem.direction, jnp.float32)))
    is_mean = float(np.sum(w * features) / np.sum(w))
    assert abs(is_mean - exact_mean) < 0.02
    np.testing.assert_allclose(problem.occupancy[[rg.COMMON, rg.RARE]], [6 / 7, 1 / 7], atol=0.01)
    assert problem.occupancy.sum() == pytest.approx(1.0)


def test_bad_cells_are_refused():
    with pytest.raises(ValueError, match="mass"):
        rg.regime_problem(2, 0.7, jax.random.key(0))
    with pytest.raises(ValueError, match="dim"):
        rg.regime_data(4)
    with pytest.raises(ValueError, match="model"):
        rg.regime_model(rg.regime_data(2), "exact")
