"""Tests of the unadjusted Langevin algorithm (:mod:`psijax.mcmc.ula`).

ULA has no Metropolis correction, so it is biased at any finite step. On a Gaussian target the
bias is known exactly: for ``π = N(0, s²)``, ``x' = x − ε x/s² + √(2ε) ξ`` is an AR(1) process with
stationary law ``N(0, 2ε/(1 − (1 − ε/s²)²)) = N(0, s²/(1 − ε/(2s²)))``. Statistical gates are
``|z| < 4.5`` (at most ~6 statistics per test: Bonferroni false-alarm bound ≈ 4e-5; fixed seeds).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import psijax
from tests.mcmc.targets import run_chains

Z_GATE = 4.5


def gaussian_moment_z(samples, mean, var):
    """z-scores ``(m̂ − m)/√(v/n)`` and ``(v̂ − v)/(v √(2/(n − 1)))`` of Gaussian draws."""
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean) / np.sqrt(var / n)
    z_var = (samples.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    return z_mean, z_var


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


@pytest.mark.parametrize("scales", [(1.0,), (0.8, 1.2)], ids=["1d", "2d"])
def test_stationary_variance_is_the_discretised_one(scales):
    """On N(0, diag(s²)) the ULA chains' stationary variance is the AR(1) value
    2ε/(1 − (1 − ε/s²)²), which differs from s² by many standard errors (the bias is real);
    every finite proposal is accepted."""
    s = np.asarray(scales)
    eps, num_chains = 0.4, 4000
    s_jax = jnp.asarray(s, jnp.float32)

    def logdensity(x):
        return -0.5 * jnp.sum((x / s_jax) ** 2)

    x0 = jax.random.normal(jax.random.key(1), (num_chains, s.size))
    # AR coefficient 1 − ε/s² ≤ 0.73 here, so after 80 steps the initial law is forgotten to
    # ~1e-11 in variance.
    states, acceptance = run_chains(psijax.ula(logdensity, eps), x0, 80, seed=2)
    np.testing.assert_array_equal(np.asarray(acceptance), 1.0)

    draws = np.asarray(states.position, np.float64)
    stationary_var = 2 * eps / (1 - (1 - eps / s**2) ** 2)
    z_mean, z_var = gaussian_moment_z(draws, 0.0, stationary_var)
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var
    # The target variance s² is rejected in every coordinate: ULA is biased, visibly so.
    _, z_target = gaussian_moment_z(draws, 0.0, s**2)
    assert np.all(np.abs(z_target) > Z_GATE), z_target


def test_proposal_mean_and_variance():
    """From a fixed x, the ULA proposal has mean x + ε∇log π(x) and variance 2ε per coordinate
    (BlackJAX MALA's step convention)."""
    eps, n = 0.3, 20_000

    def logdensity(x):
        return -0.5 * jnp.sum(x**2) - 0.25 * jnp.sum(x**4)

    x = np.array([0.8, -1.1, 0.2], np.float32)
    state = psijax.ula.init(jnp.asarray(x), logdensity)
    kernel = psijax.ula.build_kernel()
    keys = jax.random.split(jax.random.key(3), n)
    states, info = jax.jit(jax.vmap(lambda k: kernel(k, state, logdensity, eps)))(keys)
    xp = np.asarray(info.proposal.position, np.float64)
    # Always accepted. (Not bitwise: XLA may fuse the proposal arithmetic twice, with and
    # without FMA contraction, so the stored state and ``info.proposal`` can differ by 1 ulp.)
    np.testing.assert_allclose(states.position, info.proposal.position, rtol=1e-6, atol=1e-6)

    x64 = x.astype(np.float64)
    mean = x64 + eps * (-x64 - x64**3)
    z_mean, z_var = gaussian_moment_z(xp, mean, np.full(3, 2 * eps))
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var
    # Power check: the proposal without drift (a random walk centred at x) is rejected.
    assert np.max(np.abs(gaussian_moment_z(xp, x64, np.full(3, 2 * eps))[0])) > Z_GATE


def _nan_value(x):
    return jnp.where(x[0] > 1.0, jnp.nan, -0.5 * jnp.sum(x**2))


def _nan_gradient(x):
    # Finite value everywhere; the gradient is NaN for x0 > 1 (masked √ of a negative number).
    return -0.5 * jnp.sum(x**2) + jnp.where(x[0] < 1.0, 0.0 * jnp.sqrt(1.0 - x[0]), 0.0)


@pytest.mark.parametrize("logdensity", [_nan_value, _nan_gradient], ids=["nan", "nan_grad"])
def test_nonfinite_proposals_are_refused(logdensity):
    """A proposal with a NaN log-density or gradient is refused (the chain stays, and never
    holds NaN); every finite proposal is accepted with acceptance_rate exactly 1."""
    x0 = jax.random.normal(jax.random.key(4), (500, 2))
    x0 = x0.at[:, 0].set(-jnp.abs(x0[:, 0]))
    states, info = run_recording(psijax.ula(logdensity, 0.5), x0, 100, seed=5)

    for leaf in jax.tree.leaves(states):
        assert np.all(np.isfinite(np.asarray(leaf)))
    prop = info.proposal
    finite = (
        np.isfinite(np.asarray(prop.logdensity))
        & np.all(np.isfinite(np.asarray(prop.position)), -1)
        & np.all(np.isfinite(np.asarray(prop.logdensity_grad)), -1)
    )
    assert (~finite).sum() > 1000  # invalid proposals do happen
    acc = np.asarray(info.acceptance_rate)
    np.testing.assert_array_equal(acc, finite.astype(acc.dtype))
    np.testing.assert_array_equal(np.asarray(info.is_accepted), finite)
    # Accepted steps move to the proposal, refused steps keep the previous position.
    pos, prev = np.asarray(states.position), np.concatenate([x0[None], states.position[:-1]])
    np.testing.assert_allclose(pos[finite], np.asarray(prop.position)[finite], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(pos[~finite], np.asarray(prev)[~finite])


def test_diverging_chain_stays_finite():
    """With a step far beyond stability (ε = 1 on N(0, 0.1²): x' ≈ −99x) the iterates overflow;
    the overflowing proposals are refused and the chain keeps its last finite state."""

    def logdensity(x):
        return -0.5 * jnp.sum((x / 0.1) ** 2)

    states, info = run_recording(psijax.ula(logdensity, 1.0), jnp.full((4, 2), 0.1), 40, seed=6)
    for leaf in jax.tree.leaves(states):
        assert np.all(np.isfinite(np.asarray(leaf)))
    acc = np.asarray(info.acceptance_rate)
    assert np.all(acc[:5] == 1.0) and np.all(acc[-5:] == 0.0)  # it diverged, then got stuck
    assert not np.any(np.isnan(acc))


@pytest.mark.parametrize("step_size", [0.0, -0.1, float("nan"), float("inf")])
def test_invalid_step_size_raises(step_size):
    """A step size that is not finite and > 0 raises ValueError naming `step_size`."""
    logdensity = lambda x: -0.5 * jnp.sum(x**2)  # noqa: E731
    with pytest.raises(ValueError, match="step_size"):
        psijax.ula(logdensity, step_size)
    state = psijax.ula.init(jnp.zeros(2), logdensity)
    with pytest.raises(ValueError, match="step_size"):
        psijax.ula.build_kernel()(jax.random.key(0), state, logdensity, step_size)
    with pytest.raises(TypeError, match="step_size"):
        psijax.ula(logdensity, "0.1")
