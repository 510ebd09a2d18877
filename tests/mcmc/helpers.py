"""Shared helpers and targets with exact answers for the kernel tests (pCN, pCNL, ULA).

Statistical conventions. Statistical tests use many independent chains started from ``N(0, I)``
and take the FINAL state of each chain as one draw: the draws are then independent and the
z-scores below are exact up to the (checked) convergence of the chains. Every statistical gate
is ``|z| < Z_GATE = 4.5``: a test computes at most ~10 statistics, so with a Bonferroni bound
its false-alarm probability is below ``10 · P(|N(0, 1)| > 4.5) ≈ 7e-5`` (and every seed is
fixed, so a run is reproducible). Each statistical test also checks that the same gate rejects
a wrong answer, so that it is not vacuous.

``ConjugateGaussian`` lives in :mod:`psijax.models.conjugate` (the benchmarks use it too).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from psijax.models.conjugate import ConjugateGaussian, make_conjugate  # noqa: F401

Z_GATE = 4.5


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
def cn_coefficients(h):
    """``ρ, β`` of docs/algorithms.md §4 in float64."""
    rho = (1.0 - h / 4.0) / (1.0 + h / 4.0)
    return rho, math.sqrt(1.0 - rho**2)


def random_unit_vectors(dim, num, seed):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((num, dim))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def gaussian_moment_z(samples, mean, var):
    """z-scores of the sample mean and variance of Gaussian draws (columns) against truth.

    ``z_mean = (m̂ − m)/√(v/n)`` and ``z_var = (v̂ − v)/(v √(2/(n − 1)))``; the latter uses the
    Gaussian variance of the unbiased sample variance, valid where the draws are Gaussian (e.g.
    projections of a Gaussian posterior).
    """
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean) / np.sqrt(var / n)
    z_var = (samples.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    return z_mean, z_var


def expectation_z(values, expected):
    """z-scores of sample means of (columns of) ``values`` using their sample sd."""
    n = values.shape[0]
    return (values.mean(0) - expected) / (values.std(0, ddof=1) / np.sqrt(n))


# ----------------------------------------------------------------------------------------------
# Chain runner
# ----------------------------------------------------------------------------------------------
def run_chains(algorithm, positions, num_steps: int, seed: int = 0, *, record: bool = False):
    """Run vmapped chains from ``positions`` (leading chain axis) under one jit.

    Returns the final states and the per-step mean acceptance rate or, with ``record=True``,
    every state and every info (leading step axis).
    """
    num_chains = jax.tree.leaves(positions)[0].shape[0]

    @jax.jit
    def run(key, positions):
        states = jax.vmap(algorithm.init)(positions)

        def body(states, key):
            states, info = jax.vmap(algorithm.step)(jax.random.split(key, num_chains), states)
            return states, (states, info) if record else jnp.mean(info.acceptance_rate)

        final, per_step = jax.lax.scan(body, states, jax.random.split(key, num_steps))
        return per_step if record else (final, per_step)

    return run(jax.random.key(seed), positions)


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
# The prior's values of the statistics of ``ng_statistics``: a wrong answer for power checks.
NG_PRIOR_MOMENTS = np.array([0.0, 0.0, 1.0, 1.0, 0.0])


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
    """Per-draw values of x1, x2, x1², x2², x1·x2 (float64), matching ``ng_quadrature_moments``."""
    x = np.asarray(x, np.float64)
    return np.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1]], axis=1)


# ----------------------------------------------------------------------------------------------
# Log-densities that are non-finite (value or gradient) for x0 > 1
# ----------------------------------------------------------------------------------------------
def std_normal(x):
    return -0.5 * jnp.sum(x**2)


def nan_value(x):
    return jnp.where(x[0] > 1.0, jnp.nan, -0.5 * jnp.sum(x**2))


def posinf_value(x):
    return jnp.where(x[0] > 1.0, jnp.inf, -0.5 * jnp.sum(x**2))


def nan_gradient(x):
    # Value −½‖x‖² everywhere, but the gradient is NaN for x0 > 1: the masked branch
    # 0·√(1 − x0) is NaN there and its zero cotangent times the NaN derivative of √ is NaN.
    return -0.5 * jnp.sum(x**2) + jnp.where(x[0] < 1.0, 0.0 * jnp.sqrt(1.0 - x[0]), 0.0)


# Truncated N(0, 1) on x0 ≤ 1: mean −φ(1)/Φ(1), variance 1 − φ(1)/Φ(1) − (φ(1)/Φ(1))².
_PHI1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
_CDF1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
TRUNC_MEAN = -_PHI1 / _CDF1
TRUNC_VAR = 1 - _PHI1 / _CDF1 - (_PHI1 / _CDF1) ** 2


# ----------------------------------------------------------------------------------------------
# Pytree target: the conjugate Gaussian written on {"a": (3,), "b": (2, 2)}
# ----------------------------------------------------------------------------------------------
PYTREE_TARGET = make_conjugate(7, num_directions=3, seed=11)


def flatten_pytree(p):
    return jnp.concatenate([p["a"], p["b"].reshape(-1)])


def unflatten_pytree(flat):
    """Batched inverse of ``flatten_pytree``: rows of ``flat`` (n, 7) to a dict of leaves."""
    return {"a": jnp.asarray(flat[:, :3]), "b": jnp.asarray(flat[:, 3:]).reshape(-1, 2, 2)}


def pytree_logdensity(p):
    """The conjugate target written on {"a": (3,), "b": (2, 2)}, leaf by leaf for the prior."""
    prior = -0.5 * (jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2))
    return prior + PYTREE_TARGET.loglikelihood(flatten_pytree(p))


# ----------------------------------------------------------------------------------------------
# One-step batches for the explicit acceptance-ratio and proposal checks (pCN, pCNL)
# ----------------------------------------------------------------------------------------------
MH_DIM = 5
MH_W = np.array([0.6, -0.4, 0.3, 0.8, -0.5])
MH_H = 0.8
PROPOSAL_X = np.array([1.0, -0.5, 0.3, 1.2, -0.8], np.float32)
NUM_PROPOSALS = 20_000


def mh_phi_np(x):
    """Φ(x) = −¼Σx⁴ + sin(wᵀx) + ½x0·x1 (float64, batched over rows)."""
    return -0.25 * np.sum(x**4, -1) + np.sin(x @ MH_W) + 0.5 * x[..., 0] * x[..., 1]


def mh_logdensity(x):
    phi = -0.25 * jnp.sum(x**4) + jnp.sin(x @ jnp.asarray(MH_W, x.dtype)) + 0.5 * x[0] * x[1]
    return -0.5 * jnp.sum(x**2) + phi


def one_step_batch(module, kernel):
    """One ``kernel`` step (one jit) on ``mh_logdensity`` with step ``MH_H`` from (i) 40 fixed
    states × 50 keys, for the ratio check, and (ii) the fixed ``PROPOSAL_X`` × 20000 keys, for
    the proposal law. Returns float64 arrays ``x, x', acceptance_rate, is_accepted`` of each
    part. ``module`` provides ``init``."""
    rng = np.random.default_rng(5)
    states = np.repeat(rng.standard_normal((40, MH_DIM)) * 0.9, 50, axis=0).astype(np.float32)
    x = np.concatenate([states, np.broadcast_to(PROPOSAL_X, (NUM_PROPOSALS, MH_DIM))])

    @jax.jit
    @jax.vmap
    def one_step(key, position):
        return kernel(key, module.init(position, mh_logdensity), mh_logdensity, MH_H)[1]

    info = one_step(jax.random.split(jax.random.key(6), x.shape[0]), jnp.asarray(x))
    xp = np.asarray(info.proposal.position, np.float64)
    acc = np.asarray(info.acceptance_rate, np.float64)
    accepted = np.asarray(info.is_accepted)
    m, x = states.shape[0], x.astype(np.float64)
    return (x[:m], xp[:m], acc[:m], accepted[:m]), (x[m:], xp[m:], acc[m:], accepted[m:])


def assert_acceptance_is_mh(explicit, acc, accepted):
    """``acc == min(1, exp(explicit))`` for an independently computed float64 log-ratio, and
    ``accepted`` is a Bernoulli(acc) draw."""
    # Non-vacuous: the ratios are varied, many are neither saturated at 1 nor ~0.
    assert np.mean(explicit < 0) > 0.3
    assert np.mean((explicit < -0.05) & (explicit > -10)) > 0.15
    assert np.all(np.isfinite(acc)) and np.all((acc >= 0) & (acc <= 1))
    # Float32 kernel vs float64 reference: Φ is O(10) at most here, so rounding is ~1e-5.
    moderate = explicit > -40.0
    np.testing.assert_allclose(
        np.log(acc[moderate]), np.minimum(0.0, explicit[moderate]), atol=1e-4, rtol=1e-5
    )
    assert np.all(acc[~moderate] < 1e-15)
    # The accept decision is a Bernoulli(acceptance_rate) draw: the number of accepted
    # proposals matches Σ a with sd √(Σ a(1 − a)) (independent keys).
    z = (accepted.sum() - acc.sum()) / np.sqrt(np.sum(acc * (1 - acc)))
    assert abs(z) < Z_GATE, z
    assert not np.any(accepted & (acc == 0.0))
