"""Tests of the pCNL kernel (:mod:`psijax.mcmc.pcnl`).

Statistical tests use many independent chains started from ``N(0, I)`` and take the FINAL state
of each chain as one draw: the draws are then independent and the z-scores below are exact up
to the (checked) convergence of the chains. Every statistical gate is ``|z| < 4.5``: a test
computes at most ~10 statistics, so with a Bonferroni bound the false-alarm probability per
test is below ``10 · P(|N(0, 1)| > 4.5) ≈ 7e-5`` (and every seed is fixed, so a run is
reproducible). Each statistical test also checks that the same gate rejects a wrong answer, so
that it is not vacuous.
"""

import functools
import math

import blackjax
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import psijax
from psijax.mcmc.pcnl import clip_drift
from tests.mcmc.targets import ConjugateGaussian, make_conjugate, run_chains

Z_GATE = 4.5


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def cn_coefficients(h):
    """``ρ, β`` of ALGORITHMS.md §4 in float64."""
    rho = (1.0 - h / 4.0) / (1.0 + h / 4.0)
    return rho, math.sqrt(1.0 - rho**2)


def random_unit_vectors(dim, num, seed):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((num, dim))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def gaussian_moment_z(samples, mean, var):
    """z-scores of the sample mean and variance of Gaussian draws (columns) against truth.

    ``z_mean = (m̂ − m)/√(v/n)`` and ``z_var = (v̂ − v)/(v √(2/(n − 1)))``; the latter uses the
    Gaussian variance of the unbiased sample variance, valid here because the projections of a
    Gaussian posterior are Gaussian.
    """
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean) / np.sqrt(var / n)
    z_var = (samples.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    return z_mean, z_var


def expectation_z(values, expected):
    """z-scores of sample means of (columns of) ``values`` using their sample sd."""
    n = values.shape[0]
    return (values.mean(0) - expected) / (values.std(0, ddof=1) / np.sqrt(n))


def run_recording(algorithm, positions, num_steps, seed):
    """Vmapped chains under one jit, returning every state and every info (leading step axis)."""
    num_chains = jax.tree.leaves(positions)[0].shape[0]

    @jax.jit
    def run(key, positions):
        states = jax.vmap(algorithm.init)(positions)

        def body(states, key):
            states, info = jax.vmap(algorithm.step)(jax.random.split(key, num_chains), states)
            return states, (states, info)

        return jax.lax.scan(body, states, jax.random.split(key, num_steps))[1]

    return run(jax.random.key(seed), positions)


# ----------------------------------------------------------------------------------------------
# Exactness on a conjugate Gaussian posterior
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dim, num_chains", [(1, 2000), (100, 2000), (10_000, 400)], ids=["d1", "d100", "d10000"]
)
def test_conjugate_posterior_moments(dim, num_chains):
    """pCNL (h = 0.5) reproduces the exact posterior moments of projections of a conjugate
    Gaussian, along the likelihood directions and along random directions, in any dimension."""
    target = make_conjugate(dim)
    u = np.concatenate([target.directions, random_unit_vectors(dim, 2, seed=dim)])
    mean, var = target.projection_moments(u)

    x0 = jax.random.normal(jax.random.key(1), (num_chains, dim))
    # 30 steps: with 1e5 chains the moments are already converged after 10 steps (acceptance
    # ≈ 0.82, ρ = 0.6); the likelihood part of the target is the same in every dimension.
    states, acceptance = run_chains(psijax.pcnl(target.logdensity, 0.5), x0, 30, seed=2)
    assert 0.6 < float(jnp.mean(acceptance[-10:])) < 0.95  # the chains do move

    proj = np.asarray(states.position, np.float64) @ u.T
    z_mean, z_var = gaussian_moment_z(proj, mean, var)
    assert np.all(np.isfinite(proj))
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var

    # Power check: the same gate rejects the posterior of the model with the noise sd doubled
    # (same data). It differs along the likelihood directions only.
    k = target.directions.shape[0]
    wrong = ConjugateGaussian(target.directions, target.observations, 2 * target.noise_sd)
    wrong_mean, wrong_var = wrong.projection_moments(target.directions)
    wz_mean, wz_var = gaussian_moment_z(proj[:, :k], wrong_mean, wrong_var)
    assert max(np.max(np.abs(wz_mean)), np.max(np.abs(wz_var))) > Z_GATE


# ----------------------------------------------------------------------------------------------
# Non-Gaussian 2D target, moments by quadrature
# ----------------------------------------------------------------------------------------------
# Φ(x) = a·log cosh(b·x1) + c·x1·x2 + t·x1. With a·b² > 1 the x1-marginal of N(0, I)·exp(Φ) is
# bimodal (modes near x1 ≈ ±1.2, the tilt t makes them unequal: ~26% of the mass at x1 < 0), and
# the coupling c correlates x2 with x1. ∇Φ is Lipschitz, so Langevin-type chains started from
# N(0, I) do not get stuck in the tails, and the barrier (< 1 nat) is crossed in a few dozen
# steps. (A quartic double well, e.g. −2(x1² − 1)², leaves chains started at |x1| ≳ 3 stuck: the
# drift there overshoots so far that every proposal is rejected.)
NG_A, NG_B, NG_C, NG_T = 1.0, 1.5, 0.3, 0.3


def ng_logdensity(x):
    log_cosh = jnp.logaddexp(NG_B * x[0], -NG_B * x[0]) - jnp.log(2.0)
    return -0.5 * jnp.sum(x**2) + NG_A * log_cosh + NG_C * x[0] * x[1] + NG_T * x[0]


@functools.lru_cache(maxsize=None)
def ng_quadrature_moments():
    """E[x1], E[x2], E[x1²], E[x2²], E[x1 x2] by a Riemann sum on a fine float64 grid.

    The grid spacing is 0.01 on [−12, 12]²: the integrand is smooth and its mass beyond the box
    is < 1e-9, so the quadrature error is far below the Monte Carlo error.
    """
    g = np.linspace(-12.0, 12.0, 2401)
    x1, x2 = np.meshgrid(g, g, indexing="ij")
    log_w = (
        -0.5 * (x1**2 + x2**2)
        + NG_A * (np.logaddexp(NG_B * x1, -NG_B * x1) - np.log(2.0))
        + NG_C * x1 * x2
        + NG_T * x1
    )
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    return np.array([np.sum(w * f) for f in (x1, x2, x1**2, x2**2, x1 * x2)])


def ng_statistics(x):
    x = np.asarray(x, np.float64)
    return np.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1]], axis=1)


def test_non_gaussian_2d_moments():
    """pCNL reproduces the first and second moments of a bimodal, correlated 2D target
    (quadrature reference), which needs the chains to move mass between the two modes."""
    expected = ng_quadrature_moments()
    x0 = jax.random.normal(jax.random.key(3), (4000, 2))
    # h = 2: acceptance ≈ 0.92; 400 steps is ≥ 2× what the moments need to converge. At this
    # step the unadjusted proposal (always accepted) is biased enough to fail the gate (z ≈ 6
    # on E[x1]), so the test depends on the Metropolis correction; at h = 1 it would not.
    states, _ = run_chains(psijax.pcnl(ng_logdensity, 2.0), x0, 400, seed=4)
    stats = ng_statistics(states.position)
    z = expectation_z(stats, expected)
    assert np.max(np.abs(z)) < Z_GATE, z
    # Power check: the prior moments (0, 0, 1, 1, 0) are rejected by the same gate.
    assert np.max(np.abs(expectation_z(stats, np.array([0.0, 0.0, 1.0, 1.0, 0.0])))) > Z_GATE


# ----------------------------------------------------------------------------------------------
# Explicit Metropolis–Hastings ratio and proposal equation
# ----------------------------------------------------------------------------------------------
MH_DIM = 5
MH_W = np.array([0.6, -0.4, 0.3, 0.8, -0.5])
MH_H = 0.8


def mh_phi_np(x):
    """Φ(x) = −¼Σx⁴ + sin(wᵀx) + ½x0·x1 (float64, batched over rows)."""
    return -0.25 * np.sum(x**4, -1) + np.sin(x @ MH_W) + 0.5 * x[..., 0] * x[..., 1]


def mh_grad_phi_np(x):
    g = -(x**3) + np.cos(x @ MH_W)[..., None] * MH_W
    g[..., 0] += 0.5 * x[..., 1]
    g[..., 1] += 0.5 * x[..., 0]
    return g


def mh_logdensity(x):
    phi = -0.25 * jnp.sum(x**4) + jnp.sin(x @ jnp.asarray(MH_W, x.dtype)) + 0.5 * x[0] * x[1]
    return -0.5 * jnp.sum(x**2) + phi


CLIP_NORM = 0.5


def _np_clip(g):
    norm = np.linalg.norm(g, axis=-1, keepdims=True)
    return g * np.minimum(1.0, CLIP_NORM / norm)


# (name, drift_fn for the kernel, the same drift G as a function of ∇Φ in float64 numpy)
DRIFTS = {
    "gradient": (None, lambda g: g),
    "clipped": (clip_drift(CLIP_NORM), _np_clip),
    "tanh": (lambda x, g: jnp.tanh(g), np.tanh),
}


def explicit_log_ratio(x, xp, drift_np, h):
    """``log π(x') + log q(x|x') − log π(x) − log q(x'|x)`` in float64, with
    ``q(b|a) = N(b; ρa + β(√h/2)G(a), β²I)`` (constants cancel)."""
    rho, beta = cn_coefficients(h)
    c = 0.5 * math.sqrt(h)

    def log_pi(z):
        return -0.5 * np.sum(z**2, -1) + mh_phi_np(z)

    def log_q(b, a):
        mean = rho * a + beta * c * drift_np(mh_grad_phi_np(a))
        return -0.5 * np.sum((b - mean) ** 2, -1) / beta**2

    return log_pi(xp) + log_q(x, xp) - log_pi(x) - log_q(xp, x)


PROPOSAL_X = np.array([1.0, -0.5, 0.3, 1.2, -0.8], np.float32)
NUM_PROPOSALS = 20_000


@functools.lru_cache(maxsize=None)
def one_step_batch(drift_name):
    """One kernel step (one jit) from (i) 40 fixed states × 50 keys, for the ratio check, and
    (ii) the fixed ``PROPOSAL_X`` × 20000 keys, for the proposal law. Returns float64 arrays
    ``x, x', acceptance_rate, is_accepted`` of each part."""
    drift_fn, _ = DRIFTS[drift_name]
    kernel = psijax.pcnl.build_kernel(drift_fn)
    rng = np.random.default_rng(5)
    states = np.repeat(rng.standard_normal((40, MH_DIM)) * 0.9, 50, axis=0).astype(np.float32)
    fixed = np.broadcast_to(PROPOSAL_X, (NUM_PROPOSALS, MH_DIM))
    x = np.concatenate([states, fixed])
    keys = jax.random.split(jax.random.key(6), x.shape[0])

    @jax.jit
    @jax.vmap
    def one_step(key, position):
        state = psijax.pcnl.init(position, mh_logdensity)
        return kernel(key, state, mh_logdensity, MH_H)[1]

    info = one_step(keys, jnp.asarray(x))
    xp = np.asarray(info.proposal.position, np.float64)
    acc = np.asarray(info.acceptance_rate, np.float64)
    accepted = np.asarray(info.is_accepted)
    m = states.shape[0]
    x = x.astype(np.float64)
    return (x[:m], xp[:m], acc[:m], accepted[:m]), (x[m:], xp[m:], acc[m:], accepted[m:])


@pytest.mark.parametrize("drift_name", list(DRIFTS))
def test_acceptance_equals_explicit_mh_ratio(drift_name):
    """``info.acceptance_rate`` is ``min(1, exp(r))`` with r the Metropolis–Hastings ratio of
    the proposal density ``q(b|a) = N(ρa + β(√h/2)G(a), β²I)``, computed independently in
    float64, for the plain gradient drift and for non-gradient drifts (clipped, tanh)."""
    _, drift_np = DRIFTS[drift_name]
    (x, xp, acc, accepted), _ = one_step_batch(drift_name)
    explicit = explicit_log_ratio(x, xp, drift_np, MH_H)

    # Non-vacuous: the ratios are varied, many are neither saturated at 1 nor ~0.
    assert np.mean(explicit < 0) > 0.3
    assert np.mean((explicit < -0.05) & (explicit > -10)) > 0.15
    if drift_name == "clipped":  # the clip is active at most current and proposed states
        assert np.mean(np.linalg.norm(mh_grad_phi_np(x), axis=-1) > CLIP_NORM) > 0.8
        assert np.mean(np.linalg.norm(mh_grad_phi_np(xp), axis=-1) > CLIP_NORM) > 0.8

    # Float32 kernel vs float64 reference: Φ is O(10) at most here, so rounding is ~1e-5.
    moderate = explicit > -40.0
    assert np.all(np.isfinite(acc)) and np.all((acc >= 0) & (acc <= 1))
    np.testing.assert_allclose(
        np.log(acc[moderate]), np.minimum(0.0, explicit[moderate]), atol=1e-4, rtol=1e-5
    )
    assert np.all(acc[~moderate] < 1e-15)

    # The accept decision is a Bernoulli(acceptance_rate) draw: the number of accepted
    # proposals matches Σ a with sd √(Σ a(1 − a)) (independent keys).
    z = (accepted.sum() - acc.sum()) / np.sqrt(np.sum(acc * (1 - acc)))
    assert abs(z) < Z_GATE, z
    assert not np.any(accepted & (acc == 0.0))


@pytest.mark.parametrize("drift_name", list(DRIFTS))
def test_proposal_mean_and_variance(drift_name):
    """Proposals from a fixed x have mean ρx + β(√h/2)G(x) and per-coordinate variance β²
    (the ratio check alone cannot see a wrong proposal equation)."""
    _, drift_np = DRIFTS[drift_name]
    _, (x, xp, _, _) = one_step_batch(drift_name)
    x = x[0]
    rho, beta = cn_coefficients(MH_H)
    mean = rho * x + beta * 0.5 * math.sqrt(MH_H) * drift_np(mh_grad_phi_np(x))
    var = np.full(MH_DIM, beta**2)
    z_mean, z_var = gaussian_moment_z(xp, mean, var)
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var
    # Power check: the gate rejects the mean without the drift term (pCN's ρx).
    assert np.max(np.abs(gaussian_moment_z(xp, rho * x, var)[0])) > Z_GATE


# ----------------------------------------------------------------------------------------------
# NaN / inf handling
# ----------------------------------------------------------------------------------------------
def _nan_value(x):
    return jnp.where(x[0] > 1.0, jnp.nan, -0.5 * jnp.sum(x**2))


def _posinf_value(x):
    return jnp.where(x[0] > 1.0, jnp.inf, -0.5 * jnp.sum(x**2))


def _nan_gradient(x):
    # Value −½‖x‖² everywhere, but the gradient is NaN for x0 > 1: the masked branch
    # 0·√(1 − x0) is NaN there and its zero cotangent times the NaN derivative of √ is NaN.
    return -0.5 * jnp.sum(x**2) + jnp.where(x[0] < 1.0, 0.0 * jnp.sqrt(1.0 - x[0]), 0.0)


# Truncated N(0, 1) on x0 ≤ 1: mean −φ(1)/Φ(1), variance 1 − φ(1)/Φ(1) − (φ(1)/Φ(1))².
_PHI1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
_CDF1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
TRUNC_MEAN = -_PHI1 / _CDF1
TRUNC_VAR = 1 - _PHI1 / _CDF1 - (_PHI1 / _CDF1) ** 2


@pytest.mark.parametrize(
    "logdensity", [_nan_value, _posinf_value, _nan_gradient], ids=["nan", "posinf", "nan_grad"]
)
def test_nonfinite_proposals_are_rejected(logdensity):
    """A proposal whose log-density is NaN/+inf or whose gradient is NaN is rejected: no chain
    ever holds a non-finite value, the acceptance rate is never NaN and is 0 for such
    proposals. Rejection makes the invalid region a zero-density region, so the chains sample
    N(0, I) truncated to x0 ≤ 1 (checked against the truncated-normal moments)."""
    num_chains, num_steps = 1000, 150
    x0 = jax.random.normal(jax.random.key(8), (num_chains, 2))
    x0 = x0.at[:, 0].set(-jnp.abs(x0[:, 0]))  # valid starting points
    states, info = run_recording(psijax.pcnl(logdensity, 1.0), x0, num_steps, seed=9)

    pos = np.asarray(states.position)
    assert np.all(np.isfinite(pos))
    assert np.all(np.isfinite(np.asarray(states.logdensity)))
    assert np.all(np.isfinite(np.asarray(states.logdensity_grad)))
    assert np.all(pos[..., 0] <= 1.0)
    acc = np.asarray(info.acceptance_rate)
    assert not np.any(np.isnan(acc))

    prop = info.proposal
    bad = ~(
        np.isfinite(np.asarray(prop.logdensity))
        & np.all(np.isfinite(np.asarray(prop.logdensity_grad)), axis=-1)
    )
    assert bad.sum() > 1000  # the invalid region is actually proposed into
    assert not np.any(np.asarray(info.is_accepted)[bad])
    assert np.all(acc[bad] == 0.0)

    final = pos[-1].astype(np.float64)
    z_mean, z_var = gaussian_moment_z(final, 0.0, 1.0)  # x1 column: untouched N(0, 1)
    z = expectation_z(
        np.stack([final[:, 0], (final[:, 0] - TRUNC_MEAN) ** 2], axis=1),
        np.array([TRUNC_MEAN, TRUNC_VAR]),
    )
    assert np.max(np.abs(z)) < Z_GATE, z
    assert abs(z_mean[1]) < Z_GATE and abs(z_var[1]) < Z_GATE
    # Power check: the untruncated mean 0 of x0 is rejected.
    assert abs(expectation_z(final[:, :1], np.zeros(1))[0]) > Z_GATE


def test_nan_gradient_rejected_even_if_drift_fn_sanitises_it():
    """A proposal whose gradient is NaN is rejected whatever the drift_fn makes of it, so the
    chain never stores a NaN ``logdensity_grad``."""
    algorithm = psijax.pcnl(_nan_gradient, 1.0, drift_fn=lambda x, g: jnp.nan_to_num(g))
    x0 = jnp.full((200, 2), 0.9)
    states, info = run_recording(algorithm, x0, 20, seed=10)
    assert np.any(~np.isfinite(np.asarray(info.proposal.logdensity_grad)))  # they are proposed
    assert np.all(np.isfinite(np.asarray(states.logdensity_grad)))


# ----------------------------------------------------------------------------------------------
# Step-size validation
# ----------------------------------------------------------------------------------------------
def _std_normal(x):
    return -0.5 * jnp.sum(x**2)


@pytest.mark.parametrize(
    "step_size",
    [0.0, -1.0, float("nan"), float("inf"), np.float32(0.0), jnp.asarray(-1.0)],
    ids=["zero", "negative", "nan", "inf", "np_zero", "jnp_negative"],
)
def test_invalid_step_size_raises(step_size):
    """A concrete step size that is not finite and > 0 raises ValueError naming `step_size`,
    both in the top-level API and when the kernel is called eagerly."""
    with pytest.raises(ValueError, match="step_size"):
        psijax.pcnl(_std_normal, step_size)
    state = psijax.pcnl.init(jnp.zeros(3), _std_normal)
    with pytest.raises(ValueError, match="step_size"):
        psijax.pcnl.build_kernel()(jax.random.key(0), state, _std_normal, step_size)


def test_string_step_size_raises_type_error():
    """A non-numeric step size raises TypeError."""
    with pytest.raises(TypeError, match="step_size"):
        psijax.pcnl(_std_normal, "0.5")
    state = psijax.pcnl.init(jnp.zeros(3), _std_normal)
    with pytest.raises(TypeError, match="step_size"):
        psijax.pcnl.build_kernel()(jax.random.key(0), state, _std_normal, "0.5")


def test_traced_step_size_does_not_raise():
    """A traced step size is not checked (it cannot be) and does not raise; a valid one moves
    the chain, an invalid one (0, −1, NaN, inf) makes the proposal non-finite and it is
    rejected, so the state stays put and finite."""
    step_sizes = jnp.array([0.5, 0.0, -1.0, jnp.nan, jnp.inf])
    x = jnp.array([0.3, -0.2, 0.1])
    state = psijax.pcnl.init(x, _std_normal)
    kernel = psijax.pcnl.build_kernel()

    @jax.jit
    @jax.vmap
    def step(h):  # top-level API built inside jit (h traced) and the bare kernel
        key = jax.random.key(0)
        return psijax.pcnl(_std_normal, h).step(key, state), kernel(key, state, _std_normal, h)

    for new_state, info in step(step_sizes):
        assert np.all(np.isfinite(np.asarray(new_state.position)))
        assert np.all(np.isfinite(np.asarray(new_state.logdensity)))
        assert not np.any(np.isnan(np.asarray(info.acceptance_rate)))
        accepted = np.asarray(info.is_accepted)
        np.testing.assert_array_equal(accepted, [True, False, False, False, False])
        assert not np.allclose(new_state.position[0], x)
        np.testing.assert_array_equal(new_state.position[1:], np.broadcast_to(x, (4, 3)))


# ----------------------------------------------------------------------------------------------
# Pytree positions
# ----------------------------------------------------------------------------------------------
PYTREE_TARGET = make_conjugate(7, num_directions=3, seed=11)


def _flatten(p):
    return jnp.concatenate([p["a"], p["b"].reshape(-1)])


def _pytree_logdensity(p):
    """The conjugate target written on {"a": (3,), "b": (2, 2)}, leaf by leaf for the prior."""
    prior = -0.5 * (jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2))
    return prior + PYTREE_TARGET.loglikelihood(_flatten(p))


def test_pytree_position_moments():
    """On a dict position, pCNL samples the same law as the flattened target: exact projection
    moments of the conjugate posterior (z-gates), and states keep the pytree structure."""
    n = 2000
    flat0 = jax.random.normal(jax.random.key(12), (n, 7))
    pos0 = {"a": flat0[:, :3], "b": flat0[:, 3:].reshape(n, 2, 2)}
    states, _ = run_chains(psijax.pcnl(_pytree_logdensity, 0.5), pos0, 40, seed=13)
    assert jax.tree.structure(states.position) == jax.tree.structure(pos0)
    assert states.logdensity_grad["b"].shape == (n, 2, 2)

    flat = np.asarray(jax.vmap(_flatten)(states.position), np.float64)
    u = np.concatenate([PYTREE_TARGET.directions, random_unit_vectors(7, 2, seed=14)])
    mean, var = PYTREE_TARGET.projection_moments(u)
    z_mean, z_var = gaussian_moment_z(flat @ u.T, mean, var)
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var
    prior_z = gaussian_moment_z(flat @ PYTREE_TARGET.directions.T, 0.0, 1.0)
    assert max(np.max(np.abs(prior_z[0])), np.max(np.abs(prior_z[1]))) > Z_GATE  # power check


def test_pytree_acceptance_equals_flat_mh_ratio():
    """For a dict position, the kernel's acceptance equals the MH ratio computed on the
    flattened vectors (checks the tree-wide inner products and norms in the ratio)."""
    t = PYTREE_TARGET
    h = 2.0
    rho, beta = cn_coefficients(h)
    c = 0.5 * math.sqrt(h)
    a_mat, y, s2 = t.directions, t.observations, t.noise_sd**2

    def log_pi(z):
        return -0.5 * np.sum(z**2, -1) - 0.5 * np.sum((z @ a_mat.T - y) ** 2, -1) / s2

    def grad_phi(z):
        return -((z @ a_mat.T - y) @ a_mat) / s2

    def log_q(b, a):
        return -0.5 * np.sum((b - rho * a - beta * c * grad_phi(a)) ** 2, -1) / beta**2

    n = 500
    flat0 = np.random.default_rng(15).standard_normal((n, 7)).astype(np.float32) * 0.8
    pos0 = {"a": jnp.asarray(flat0[:, :3]), "b": jnp.asarray(flat0[:, 3:].reshape(n, 2, 2))}
    kernel = psijax.pcnl.build_kernel()

    @jax.jit
    @jax.vmap
    def one_step(key, p):
        return kernel(key, psijax.pcnl.init(p, _pytree_logdensity), _pytree_logdensity, h)[1]

    info = one_step(jax.random.split(jax.random.key(16), n), pos0)
    x = flat0.astype(np.float64)
    xp = np.asarray(jax.vmap(_flatten)(info.proposal.position), np.float64)
    explicit = log_pi(xp) + log_q(x, xp) - log_pi(x) - log_q(xp, x)
    assert np.mean(explicit < -0.05) > 0.3  # ratios not saturated
    moderate = explicit > -40.0
    np.testing.assert_allclose(
        np.log(np.asarray(info.acceptance_rate, np.float64)[moderate]),
        np.minimum(0.0, explicit[moderate]),
        atol=1e-4,
        rtol=1e-5,
    )


# ----------------------------------------------------------------------------------------------
# jit / no-jit agreement and tracing
# ----------------------------------------------------------------------------------------------
class JitAgreementTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_one_step_same_with_and_without_jit(self):
        """One step from a fixed state and key gives the same new state and info, jitted or
        not (for the gradient drift and for a clipped drift)."""
        target = make_conjugate(6, seed=17)
        x = jnp.asarray(np.random.default_rng(18).standard_normal(6), jnp.float32)
        accepted = []
        for drift_fn in (None, clip_drift(0.3)):
            kernel = psijax.pcnl.build_kernel(drift_fn)

            def step(key, state, kernel=kernel):
                return kernel(key, state, target.logdensity, 0.5)

            state = psijax.pcnl.init(x, target.logdensity)
            variant_step = self.variant(step)
            for i in range(6):
                new_state, info = variant_step(jax.random.key(i), state)
                ref_state, ref_info = step(jax.random.key(i), state)  # eager reference
                chex.assert_trees_all_close(new_state, ref_state, rtol=1e-5, atol=1e-6)
                chex.assert_trees_all_close(info, ref_info, rtol=1e-5, atol=1e-6)
                accepted.append(bool(info.is_accepted))
        # Both outcomes of the accept/reject step are exercised over the keys.
        assert any(accepted) and not all(accepted)


def test_no_retracing_over_keys_states_and_step_sizes():
    """A jitted step traces once for 10 calls with different keys, states and (array) step
    sizes: the step size is a traced argument, not a static one."""
    chex.clear_trace_counter()
    target = make_conjugate(4, seed=19)
    kernel = psijax.pcnl.build_kernel()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state, h):
        return kernel(key, state, target.logdensity, h)

    state = psijax.pcnl.init(jnp.zeros(4), target.logdensity)
    start = state.position
    for i, h in enumerate(np.linspace(0.2, 1.5, 10)):
        state, _ = step(jax.random.key(i), state, jnp.asarray(h, jnp.float32))
    assert not np.allclose(state.position, start)
    chex.clear_trace_counter()


# ----------------------------------------------------------------------------------------------
# Dimension robustness vs MALA
# ----------------------------------------------------------------------------------------------
def test_acceptance_does_not_decay_with_dimension():
    """At fixed h = 0.5 the pCNL acceptance rate at d = 65536 is that at d = 16 (Φ depends on 3
    directions only), whereas MALA at the matching step collapses.

    Matching step: ρ = (1 − h/4)/(1 + h/4) = 1 − h/2 + O(h²) and β = 4√h/(4 + h) = √h + O(h^1.5),
    so pCNL's x' = ρx + β(ξ + (√h/2)(∇log π(x) + x)) ≈ x + (h/2)∇log π(x) + √h ξ, which is
    MALA's x' = x + ε∇log π(x) + √(2ε)ξ with ε = h/2.
    """
    h = 0.5
    results = {}
    for dim, num_chains, mala_steps in [(16, 1024, 100), (65_536, 16, 20)]:
        target = make_conjugate(dim, num_directions=3)
        x0 = jax.random.normal(jax.random.key(20), (num_chains, dim))
        _, acc_pcnl = run_chains(psijax.pcnl(target.logdensity, h), x0, 100, seed=21)
        _, acc_mala = run_chains(
            blackjax.mala(target.logdensity, step_size=h / 2), x0, mala_steps, seed=22
        )
        # Average over the second half of the steps (the first ones are burn-in of the 3
        # likelihood directions, ~10 steps; in the orthogonal complement the chains start at
        # stationarity). MALA at d = 65536 rejects from the first step, 20 steps suffice.
        results[dim] = (
            float(jnp.mean(acc_pcnl[-50:])),
            float(jnp.mean(acc_mala[-(mala_steps // 2) :])),
        )
    print(
        "\nmean acceptance (pCNL h=0.5, MALA eps=0.25): "
        + ", ".join(f"d={d}: pCNL {p:.3f} MALA {m:.3f}" for d, (p, m) in results.items())
    )
    (pcnl_small, mala_small), (pcnl_big, mala_big) = results[16], results[65_536]
    # The projected pCNL dynamics on the likelihood subspace is the same Markov chain in any
    # d ≥ 3, so the two acceptance rates differ by Monte Carlo noise only (≈ 0.01–0.02 here).
    assert abs(pcnl_big - pcnl_small) < 0.05
    assert pcnl_small > 0.6
    assert mala_small > 0.5
    assert mala_big < 0.05
