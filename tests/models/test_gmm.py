"""Gaussian mixture: exact flow quantities and exact tilts against independent computations.

Float32 model arithmetic against float64 references: tolerances of ~1e-4 on O(1)–O(10)
quantities are a few hundred float32 ulps, far below any formula error (which is O(1)).
Statistical gates are z-scores with |z| < 4.5 (two-sided false-alarm rate ~7e-6 per gate) at
fixed seeds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from psijax.models.gmm import GaussianMixture

Z_GATE = 4.5
tilt_quadratic = jax.jit(GaussianMixture.tilt_quadratic)


def random_mixture(seed=0, k=4, d=3, spread=3.0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 2.0))
    means = spread * rng.standard_normal((k, d))
    a = rng.standard_normal((k, d, d))
    covs = 0.3 * a @ a.transpose(0, 2, 1) / d + 0.1 * np.eye(d)
    return GaussianMixture(weights, means, covs)


def scipy_logpdf(gm, x):
    w, m, c = (np.asarray(v, np.float64) for v in (gm.weights, gm.means, gm.covs))
    comps = [np.log(w[k]) + stats.multivariate_normal(m[k], c[k]).logpdf(x) for k in range(len(w))]
    return np.logaddexp.reduce(np.stack(comps), axis=0)


@functools.cache
def _compiled(fn, timed):
    return jax.jit(jax.vmap(fn, (None, 0, None) if timed else (None, 0)))


def batched(fn, gm, xs, t=None):
    """``fn(gm, x[, t])`` over the rows of ``xs`` (one compilation per ``fn``; ``t`` traced)."""
    xs = jnp.asarray(xs, jnp.float32)
    if t is None:
        return np.asarray(_compiled(fn, False)(gm, xs))
    return np.asarray(_compiled(fn, True)(gm, xs, jnp.float32(t)))


def marginal_grad(gm, x, t):
    return jax.grad(gm.marginal(t).log_prob)(x)


@pytest.fixture(scope="module")
def gm():
    return random_mixture()


def np_sample(gm, n, seed):
    """An independent NumPy sampler (``gm.sample`` is tested on its own in test_sample_moments)."""
    rng = np.random.default_rng(seed)
    w, m, c = (np.asarray(v, np.float64) for v in (gm.weights, gm.means, gm.covs))
    k = rng.choice(len(w), size=n, p=w / w.sum())
    z = rng.standard_normal((n, m.shape[1]))
    return m[k] + np.einsum("nij,nj->ni", np.linalg.cholesky(c)[k], z)


@pytest.fixture(scope="module")
def points(gm):
    return np_sample(gm, 24, 1) + np.random.default_rng(2).standard_normal((24, gm.dim))


def test_log_prob_matches_scipy(gm, points):
    got = batched(GaussianMixture.log_prob, gm, points)
    np.testing.assert_allclose(got, scipy_logpdf(gm, points), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("t", [0.1, 0.4, 0.75, 0.95])
def test_velocity_is_x_minus_tweedie_over_t(gm, points, t):
    """``v = (x − x̂0)/t`` (the library computes ``v`` per component, never dividing by ``t``)."""
    xs = (1 - t) * points + t * np.random.default_rng(3).standard_normal(points.shape)
    v = batched(GaussianMixture.velocity, gm, xs, t)
    x0 = batched(GaussianMixture.tweedie, gm, xs, t)
    np.testing.assert_allclose(v, (xs - x0) / t, atol=2e-4 / t)


@pytest.mark.parametrize("t", [1e-6, 0.05, 0.5, 0.9, 1 - 1e-6])
def test_score_is_gradient_of_marginal_log_prob(gm, points, t):
    xs = (1 - t) * points + t * np.random.default_rng(4).standard_normal(points.shape)
    score = batched(GaussianMixture.score, gm, xs, t)
    grad = batched(marginal_grad, gm, xs, t)
    np.testing.assert_allclose(score, grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("t", [0.0, 1e-6, 0.2, 0.5, 0.9])
def test_tweedie_score_identity(gm, points, t):
    """``E[x1 | x_t] = −t·s`` and ``x = (1 − t)x̂0 + t·E[x1 | x_t]`` give
    ``x̂0 = (x + t² s)/(1 − t)``; for ``t > 0`` also ``s = −(x + (1 − t)v)/t``
    (docs/algorithms.md §1)."""
    xs = (1 - t) * points + t * np.random.default_rng(5).standard_normal(points.shape)
    x0 = batched(GaussianMixture.tweedie, gm, xs, t)
    s = batched(GaussianMixture.score, gm, xs, t)
    np.testing.assert_allclose(x0, (xs + t**2 * s) / (1 - t), atol=1e-4 / (1 - t))
    if t >= 0.2:
        v = batched(GaussianMixture.velocity, gm, xs, t)
        np.testing.assert_allclose(s, -(xs + (1 - t) * v) / t, atol=1e-4 / t)


def test_endpoints_are_finite_and_exact(gm, points):
    """t = 0: ``x̂0 = x``, ``v = −x`` (E[x1 | x0] = 0); t = 1: ``x̂0 = E[x0]``, ``v = x − E[x0]``,
    ``s = −x``. ``t = 1e-6`` and ``1 − 1e-6`` are finite and agree with the endpoints."""
    mean = np.asarray(gm.mean())
    exact = {
        0.0: (points, -points, None),
        1.0: (np.broadcast_to(mean, points.shape), points - mean, -points),
    }
    for t, ref_t in [(0.0, 0.0), (1e-6, 0.0), (1 - 1e-6, 1.0), (1.0, 1.0)]:
        fns = (GaussianMixture.tweedie, GaussianMixture.velocity, GaussianMixture.score)
        out = [batched(f, gm, points, t) for f in fns]
        for got, ref in zip(out, exact[ref_t], strict=True):
            assert np.all(np.isfinite(got)), t
            if ref is not None:
                np.testing.assert_allclose(got, ref, atol=2e-4)


def test_sample_moments(gm):
    """Sample mean and covariance vs :meth:`mean`/:meth:`covariance`, z-gated with standard
    errors from the sample (n = 200k; |z| < 4.5 at a fixed seed)."""
    n = 200_000
    x = np.asarray(jax.jit(GaussianMixture.sample, static_argnums=2)(gm, jax.random.key(0), n))
    x = x.astype(np.float64)
    mean, cov = np.asarray(gm.mean(), np.float64), np.asarray(gm.covariance(), np.float64)
    z_mean = (x.mean(0) - mean) / (x.std(0) / np.sqrt(n))
    c = x - mean
    prods = c[:, :, None] * c[:, None, :]
    z_cov = (prods.mean(0) - cov) / (prods.std(0) / np.sqrt(n))
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_cov)) < Z_GATE, z_cov


def test_pytree_through_jit_and_vmap(gm, points):
    """The mixture is a pytree: vmap over a stacked batch of mixtures and construction under a
    trace (validation then checks shapes only) both work inside jit."""
    x = jnp.asarray(points[0], jnp.float32)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), gm)

    @jax.jit
    def both(stacked, means):
        by_mixture = jax.vmap(lambda g: g.log_prob(x))(stacked)
        built = jax.vmap(lambda m: GaussianMixture(gm.weights, m, gm.covs).log_prob(x))(means)
        return by_mixture, built

    by_mixture, built = both(stacked, jnp.stack([gm.means, gm.means + 1.0]))
    ref = scipy_logpdf(gm, points[0])
    np.testing.assert_allclose(by_mixture, [ref, ref], rtol=1e-5)
    np.testing.assert_allclose(built, [ref, scipy_logpdf(_shift(gm, 1.0), points[0])], rtol=1e-5)
    leaves, treedef = jax.tree.flatten(gm)
    assert len(leaves) == 3 and isinstance(jax.tree.unflatten(treedef, leaves), GaussianMixture)


def _shift(gm, delta):
    return GaussianMixture(gm.weights, np.asarray(gm.means) + delta, gm.covs)


def _check_tilt(gm, tilted, log_z, log_tilt_fn, xs):
    """``log p*(x) − log p(x) − log tilt(x) = −log Z`` at every ``x``."""
    lhs = batched(GaussianMixture.log_prob, tilted, xs) - batched(GaussianMixture.log_prob, gm, xs)
    rhs = np.asarray(jax.vmap(log_tilt_fn)(jnp.asarray(xs, jnp.float32))) - float(log_z)
    np.testing.assert_allclose(lhs, rhs, atol=5e-4)


def _importance_z(gm, log_tilt_fn, log_z, n=200_000):
    """z-score of ``mean exp(log_tilt(x_i))``, ``x_i ~ p``, against ``exp(log Z)`` (ratio space)."""
    x = jnp.asarray(np_sample(gm, n, 7), jnp.float32)
    f = np.exp(np.asarray(jax.jit(jax.vmap(log_tilt_fn))(x), np.float64))
    return (f.mean() - np.exp(float(log_z))) / (f.std() / np.sqrt(n))


def _precisions(d=3):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((d, d))
    single = np.zeros((d, d))
    single[1, 1] = 2.0
    b = rng.standard_normal((d, 1))
    return {"full": a @ a.T + 0.1 * np.eye(d), "one_coordinate": single, "rank_one": b @ b.T}


@pytest.mark.parametrize("kind", ["full", "one_coordinate", "rank_one"])
def test_tilt_quadratic_is_exact(gm, points, kind):
    center, precision, alpha = np.array([1.0, -0.5, 2.0]), _precisions()[kind], 1.5
    tilted, log_z = tilt_quadratic(gm, center, precision, alpha)

    def log_tilt(x):
        diff = x - center
        return -0.5 * diff @ jnp.asarray(precision, jnp.float32) @ diff / alpha

    xs = np.concatenate([points, np_sample(tilted, 16, 3)])
    _check_tilt(gm, tilted, log_z, log_tilt, xs)
    assert abs(_importance_z(gm, log_tilt, log_z)) < Z_GATE
    assert abs(float(jnp.sum(tilted.weights)) - 1.0) < 1e-5


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_tilt_quadratic_matches_dense_float64_formulas(gm, scale):
    """The Cholesky/eigen formulation equals the textbook inverses (docs/algorithms.md §7) in
    float64, from a nearly flat to a very sharp reward (``Σ'`` then ≈ ``A⁻¹``, no cancellation)."""
    center, precision = np.array([1.0, -0.5, 2.0]), scale * np.diag([1.0, 2.0, 3.0])
    tilted, log_z = tilt_quadratic(gm, center, precision, 1.0)
    log_w, means, covs = [], [], []
    for w, m, c in zip(*(np.asarray(v, np.float64) for v in jax.tree.leaves(gm)), strict=True):
        cov = np.linalg.inv(np.linalg.inv(c) + precision)
        means.append(cov @ (np.linalg.solve(c, m) + precision @ center))
        covs.append(cov)
        ip = np.eye(3) + c @ precision
        quad = (m - center) @ precision @ np.linalg.solve(ip, m - center)
        log_w.append(np.log(w) - 0.5 * np.linalg.slogdet(ip)[1] - 0.5 * quad)
    ref_log_z = np.logaddexp.reduce(log_w)
    assert float(log_z) == pytest.approx(ref_log_z, abs=1e-5 * max(1.0, abs(ref_log_z)))
    np.testing.assert_allclose(tilted.weights, np.exp(np.array(log_w) - ref_log_z), atol=1e-6)
    np.testing.assert_allclose(tilted.means, np.array(means), atol=1e-5 * np.abs(means).max())
    np.testing.assert_allclose(tilted.covs, np.array(covs), atol=1e-6 * np.abs(covs).max())


def test_tilt_quadratic_zero_precision_is_identity(gm):
    tilted, log_z = tilt_quadratic(gm, np.zeros(3), np.zeros((3, 3)), 1.0)
    assert float(log_z) == pytest.approx(0.0, abs=1e-6)
    for a, b in zip(jax.tree.leaves(tilted), jax.tree.leaves(gm), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tilt_mixture_is_exact(gm, points):
    q = random_mixture(seed=11, k=3, d=3, spread=2.0)
    tilted, log_z = jax.jit(GaussianMixture.tilt_mixture)(gm, q)
    assert tilted.num_components == 12
    xs = np.concatenate([points, np_sample(tilted, 16, 4)])
    _check_tilt(gm, tilted, log_z, q.log_prob, xs)
    assert abs(_importance_z(gm, q.log_prob, log_z)) < Z_GATE
    # Component (k, l) = k·L + l is the product of p's k-th and q's l-th Gaussians.
    cov = np.linalg.inv(np.linalg.inv(gm.covs[1]) + np.linalg.inv(q.covs[2]))
    mean = cov @ (np.linalg.solve(gm.covs[1], gm.means[1]) + np.linalg.solve(q.covs[2], q.means[2]))
    np.testing.assert_allclose(tilted.covs[5], cov, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tilted.means[5], mean, rtol=1e-4, atol=1e-4)


def test_nearest_component_uses_responsibilities():
    """Equal round modes: nearest mean. A broad heavy mode beats a narrow one with a closer mean."""
    gm = GaussianMixture([0.5, 0.5], [[0.0, 0.0], [3.0, 0.0]], [np.eye(2) * 4.0, np.eye(2) * 0.01])
    assign = batched(GaussianMixture.nearest_component, gm, [[2.0, 0.0], [2.95, 0.0]])
    np.testing.assert_array_equal(assign, [0, 1])  # (2, 0) is closer to mean 1, yet goes to 0
    ring = GaussianMixture(np.full(3, 1 / 3), np.eye(3) * 5, np.tile(np.eye(3), (3, 1, 1)))
    assign = batched(GaussianMixture.nearest_component, ring, np.asarray(ring.means) + 0.4)
    np.testing.assert_array_equal(assign, [0, 1, 2])


def test_weights_within_tolerance_are_renormalized():
    gm = GaussianMixture([0.5, 0.50005], np.zeros((2, 1)), np.ones((2, 1, 1)))
    assert float(jnp.sum(gm.weights)) == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize(
    "args,name",
    [
        (([0.5, 0.6], np.zeros((2, 2)), np.tile(np.eye(2), (2, 1, 1))), "weights"),
        (([1.5, -0.5], np.zeros((2, 2)), np.tile(np.eye(2), (2, 1, 1))), "weights"),
        (([[1.0]], np.zeros((1, 2)), np.eye(2)[None]), "weights"),
        (([0.5, 0.5], np.zeros((3, 2)), np.tile(np.eye(2), (2, 1, 1))), "means"),
        (([0.5, 0.5], np.full((2, 2), np.nan), np.tile(np.eye(2), (2, 1, 1))), "means"),
        (([0.5, 0.5], np.zeros((2, 2)), np.tile(np.eye(3), (2, 1, 1))), "covs"),
        (([1.0], np.zeros((1, 2)), np.array([[[1.0, 0.5], [0.0, 1.0]]])), "covs"),
        (([1.0], np.zeros((1, 2)), np.array([[[1.0, 2.0], [2.0, 1.0]]])), "covs"),
    ],
)
def test_invalid_construction(args, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        GaussianMixture(*args)


def test_invalid_tilts(gm):
    with pytest.raises(ValueError, match="`alpha`"):
        gm.tilt_quadratic(np.zeros(3), np.eye(3), 0.0)
    with pytest.raises(ValueError, match="`center`"):
        gm.tilt_quadratic(np.zeros(2), np.eye(3), 1.0)
    with pytest.raises(ValueError, match="`precision`"):
        gm.tilt_quadratic(np.zeros(3), -np.eye(3), 1.0)
    with pytest.raises(ValueError, match="`precision`"):
        gm.tilt_quadratic(np.zeros(3), np.triu(np.ones((3, 3))), 1.0)
    with pytest.raises(ValueError, match="`other`"):
        gm.tilt_mixture(random_mixture(d=2))
