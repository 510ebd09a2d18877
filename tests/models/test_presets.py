"""Presets, rewards and the 2D grid target against the closed-form tilts.

Grid quadrature (float64 sums of float32 log-densities) agrees with the exact ``log Z`` to
~1e-5: the trapezoid rule on a 256² grid over [−8, 8]² (spacing 0.063, modes of std ≥ 0.25) is
exact to far below float32 precision, so the 1e-4 tolerance is float32 evaluation error.
Statistical gates: |z| < 4.5 at fixed seeds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.models import presets
from psijax.models.gmm import GaussianMixture

Z_GATE = 4.5
TWO_D = ["six_modes_quadratic", "six_modes_mixture", "unequal_rare_modes", "anisotropic_coordinate"]
# Data modes carrying at least 5% of each exact target's mass (documented in presets.py).
MODES_WITH_MASS = {
    "six_modes_quadratic": {0, 1, 5},
    "six_modes_mixture": {0, 2},
    "unequal_rare_modes": {4, 5},
    "anisotropic_coordinate": {2, 5},
    "high_dim_mixture": {0, 5},
}


@functools.cache
def problem(name):
    return presets.toy_problem(name)


@functools.cache
def grid(name, extent=8.0):
    p = problem(name)
    return presets.grid_target(p.data.log_prob, p.reward_fn, p.alpha, extent, 256)


def np_sample(gm, n, seed):
    rng = np.random.default_rng(seed)
    w, m, c = (np.asarray(v, np.float64) for v in (gm.weights, gm.means, gm.covs))
    k = rng.choice(len(w), size=n, p=w / w.sum())
    return m[k] + np.einsum("nij,nj->ni", np.linalg.cholesky(c)[k], rng.standard_normal(m[k].shape))


def test_problem_names():
    assert set(presets.TOY_PROBLEMS) == set(MODES_WITH_MASS)


@pytest.mark.parametrize("name", presets.TOY_PROBLEMS)
def test_exact_target_is_the_tilt_by_the_reward(name):
    """``log p*(x) − log p(x) − r(x)/α = −log Z`` at points of both ``p`` and ``p*``: the
    reward function and ``α`` of the preset are the ones its exact target was built from."""
    p = problem(name)
    xs = np.concatenate([np_sample(p.data, 16, 0), np_sample(p.exact_target, 16, 1)])

    def residual(x):
        return p.exact_target.log_prob(x) - p.data.log_prob(x) - p.reward_fn(x) / p.alpha

    got = np.asarray(jax.jit(jax.vmap(residual))(jnp.asarray(xs, jnp.float32)))
    np.testing.assert_allclose(got, -float(p.log_Z), atol=5e-4)


@pytest.mark.parametrize("name", presets.TOY_PROBLEMS)
def test_target_puts_mass_on_the_documented_modes(name):
    """Occupancy of the data's modes (Bayes assignment) by exact-target draws; the set of modes
    with ≥ 5% of the mass is the documented one. Margins are > 0.03 (≫ the 0.005 draw noise)."""
    p = problem(name)
    xs = jnp.asarray(np_sample(p.exact_target, 4000, 2), jnp.float32)
    assign = np.asarray(jax.jit(jax.vmap(p.data.nearest_component))(xs))
    occupancy = np.bincount(assign, minlength=p.data.num_components) / len(assign)
    assert set(np.flatnonzero(occupancy >= 0.05)) == MODES_WITH_MASS[name], occupancy


def test_data_presets_geometry():
    ring = presets.six_modes()
    radii = np.linalg.norm(np.asarray(ring.means), axis=1)
    np.testing.assert_allclose(radii, 4.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ring.covs), np.tile(0.25 * np.eye(2), (6, 1, 1)))
    assert np.asarray(presets.unequal_six_modes().weights)[5] == pytest.approx(0.05)
    eig = np.linalg.eigvalsh(np.asarray(presets.anisotropic_modes().covs))
    np.testing.assert_allclose(eig, np.tile([0.0625, 0.64], (6, 1)), rtol=1e-5)
    hd = presets.high_dim_modes()
    m = np.asarray(hd.means, np.float64)
    assert hd.dim == 8
    dist = np.linalg.norm(m[:, None] - m[None], axis=-1)
    np.testing.assert_allclose(dist[~np.eye(6, dtype=bool)], 4 * np.sqrt(2), rtol=1e-5)


def test_reward_functions():
    r = presets.quadratic_reward([1.0, 2.0], [[2.0, 0.0], [0.0, 0.0]])
    assert float(jax.jit(r)(jnp.array([3.0, -5.0]))) == pytest.approx(-4.0)
    q = presets.six_modes()
    x = jnp.array([0.5, 3.0])
    lr = presets.mixture_log_reward(q, 0.3)
    got, log_q = jax.jit(lambda x: (lr(x), q.log_prob(x)))(x)
    assert float(got) == pytest.approx(0.3 * float(log_q), rel=1e-6)


@pytest.mark.parametrize("name", TWO_D)
def test_grid_target_matches_closed_form(name):
    """Quadrature ``log Z`` and the tabulated density equal the exact tilt (incl. the singular
    precision of ``anisotropic_coordinate`` and the product of mixtures)."""
    p, g = problem(name), grid(name)
    assert g.log_Z == pytest.approx(float(p.log_Z), abs=1e-4)
    assert g.boundary_mass < 1e-10
    pts = np.stack(np.meshgrid(g.xs, g.ys, indexing="ij"), axis=-1).reshape(-1, 2)
    exact = np.asarray(jax.jit(jax.vmap(p.exact_target.log_prob))(jnp.asarray(pts, jnp.float32)))
    log_d = g.log_density.reshape(-1)
    relevant = log_d > log_d.max() - 12  # where the density is within e^12 of its peak
    np.testing.assert_allclose(log_d[relevant], exact[relevant], atol=2e-4)
    assert np.sum(np.exp(g.log_density)) * g.cell_area == pytest.approx(1.0, abs=1e-12)


def test_grid_boundary_mass_flags_a_small_extent():
    p = problem("six_modes_quadratic")
    small = presets.grid_target(p.data.log_prob, p.reward_fn, p.alpha, 3.5, 64)
    assert small.boundary_mass > 1e-3


def test_sample_grid_target_mean():
    """Mean of grid draws vs the exact target's mean; variance includes the cell jitter."""
    name, n = "six_modes_mixture", 20_000
    p, g = problem(name), grid(name)
    x = np.asarray(presets.sample_grid_target(jax.random.key(0), g, n), np.float64)
    assert x.shape == (n, 2)
    h2 = np.array([g.xs[1] - g.xs[0], g.ys[1] - g.ys[0]]) ** 2
    var = np.diag(np.asarray(p.exact_target.covariance(), np.float64)) + h2 / 12
    z = (x.mean(0) - np.asarray(p.exact_target.mean())) / np.sqrt(var / n)
    assert np.max(np.abs(z)) < Z_GATE, z


def test_invalid_arguments():
    with pytest.raises(ValueError, match="`name`"):
        presets.toy_problem("nope")
    with pytest.raises(ValueError, match="`dim`"):
        presets.high_dim_modes(4)
    with pytest.raises(ValueError, match="`precision`"):
        presets.quadratic_reward(np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="`alpha`"):
        presets.mixture_log_reward(presets.six_modes(), 0.0)
    lp, r = presets.six_modes().log_prob, presets.quadratic_reward(np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="`alpha`"):
        presets.grid_target(lp, r, -1.0)
    with pytest.raises(ValueError, match="`extent`"):
        presets.grid_target(lp, r, 1.0, (1.0, -1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="`num_points`"):
        presets.grid_target(lp, r, 1.0, 4.0, 2)
    assert isinstance(presets.toy_problem("six_modes_quadratic").data, GaussianMixture)
