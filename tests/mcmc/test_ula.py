"""Tests of the unadjusted Langevin algorithm (:mod:`psijax.mcmc.ula`).

ULA has no Metropolis correction, so it is biased at any finite step. On a Gaussian target the
bias is known exactly: for ``π = N(0, s²)``, ``x' = x − ε x/s² + √(2ε) ξ`` is an AR(1) process with
stationary law ``N(0, 2ε/(1 − (1 − ε/s²)²)) = N(0, s²/(1 − ε/(2s²)))``. Statistical gates are
``|z| < 4.5`` (at most ~6 statistics per test: Bonferroni false-alarm bound ≈ 4e-5; fixed seeds).

The properties ULA shares with pCN and pCNL (non-finite proposals refused, step-size validation,
jit) are in ``test_kernels.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import psijax
from tests.mcmc.helpers import Z_GATE, gaussian_moment_z, run_chains


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


def test_diverging_chain_stays_finite():
    """With a step far beyond stability (ε = 1 on N(0, 0.1²): x' ≈ −99x) the iterates overflow;
    the overflowing proposals are refused and the chain keeps its last finite state."""

    def logdensity(x):
        return -0.5 * jnp.sum((x / 0.1) ** 2)

    algorithm = psijax.ula(logdensity, 1.0)
    states, info = run_chains(algorithm, jnp.full((4, 2), 0.1), 40, seed=6, record=True)
    for leaf in jax.tree.leaves(states):
        assert np.all(np.isfinite(np.asarray(leaf)))
    acc = np.asarray(info.acceptance_rate)
    assert np.all(acc[:5] == 1.0) and np.all(acc[-5:] == 0.0)  # it diverged, then got stuck
    assert not np.any(np.isnan(acc))
