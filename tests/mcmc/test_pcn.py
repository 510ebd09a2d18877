"""Tests specific to the pCN kernel (:mod:`psijax.mcmc.pcn`): the explicit acceptance ratio and
the proposal law. The properties it shares with pCNL and ULA (exactness, NaN handling, step-size
validation, pytrees, jit) are in ``test_kernels.py``; statistical conventions (gate
``|z| < 4.5``, power checks) are those of :mod:`tests.mcmc.helpers`.
"""

import functools

import numpy as np

import psijax
from tests.mcmc.helpers import (
    MH_DIM,
    MH_H,
    Z_GATE,
    assert_acceptance_is_mh,
    cn_coefficients,
    gaussian_moment_z,
    mh_phi_np,
    one_step_batch,
)


@functools.lru_cache(maxsize=None)
def pcn_one_step_batch():
    """``one_step_batch`` of the pCN kernel (one jit, shared by the tests below)."""
    return one_step_batch(psijax.pcn, psijax.pcn.build_kernel())


def test_acceptance_equals_phi_difference():
    """``log info.acceptance_rate == min(0, Φ(x') − Φ(x))`` with Φ computed independently in
    float64 (the Gaussian parts of the MH ratio cancel for the prior-reversible proposal)."""
    (x, xp, acc, accepted), _ = pcn_one_step_batch()
    explicit = mh_phi_np(xp) - mh_phi_np(x)
    assert_acceptance_is_mh(explicit, acc, accepted)
    # Power check: the full log-density difference (forgetting the reference measure) is not
    # what the kernel uses.
    moderate = explicit > -40.0
    wrong = explicit - 0.5 * (np.sum(xp**2, -1) - np.sum(x**2, -1))
    assert not np.allclose(np.log(acc[moderate]), np.minimum(0.0, wrong[moderate]), atol=1e-2)


def test_proposal_mean_and_variance():
    """Proposals from a fixed x have mean ρx and per-coordinate variance β²."""
    _, (x, xp, _, _) = pcn_one_step_batch()
    rho, beta = cn_coefficients(MH_H)
    var = np.full(MH_DIM, beta**2)
    z_mean, z_var = gaussian_moment_z(xp, rho * x[0], var)
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var
    # Power check: a random walk centred at x (ρ = 1) is rejected by the gate.
    assert np.max(np.abs(gaussian_moment_z(xp, x[0], var)[0])) > Z_GATE
