"""Tests specific to the pCNL kernel (:mod:`psijax.mcmc.pcnl`): the explicit
Metropolis–Hastings ratio and proposal law for gradient and non-gradient drifts, NaN gradients
under a sanitising drift, and dimension robustness against BlackJAX MALA. The properties it
shares with pCN and ULA (exactness, NaN handling, step-size validation, pytrees, jit) are in
``test_kernels.py``; statistical conventions (gate ``|z| < 4.5``, power checks) are those of
:mod:`tests.mcmc.helpers`.
"""

import functools
import math

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import psijax
from psijax.mcmc.pcnl import clip_drift
from tests.mcmc.helpers import (
    MH_DIM,
    MH_H,
    MH_W,
    Z_GATE,
    assert_acceptance_is_mh,
    cn_coefficients,
    gaussian_moment_z,
    make_conjugate,
    mh_phi_np,
    nan_gradient,
    one_step_batch,
    run_chains,
)


# ----------------------------------------------------------------------------------------------
# Explicit Metropolis–Hastings ratio and proposal equation
# ----------------------------------------------------------------------------------------------
def mh_grad_phi_np(x):
    g = -(x**3) + np.cos(x @ MH_W)[..., None] * MH_W
    g[..., 0] += 0.5 * x[..., 1]
    g[..., 1] += 0.5 * x[..., 0]
    return g


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


@functools.lru_cache(maxsize=None)
def pcnl_one_step_batch(drift_name):
    """``one_step_batch`` of the pCNL kernel with the given drift (one jit per drift)."""
    drift_fn, _ = DRIFTS[drift_name]
    return one_step_batch(psijax.pcnl, psijax.pcnl.build_kernel(drift_fn))


@pytest.mark.parametrize("drift_name", list(DRIFTS))
def test_acceptance_equals_explicit_mh_ratio(drift_name):
    """``info.acceptance_rate`` is ``min(1, exp(r))`` with r the Metropolis–Hastings ratio of
    the proposal density ``q(b|a) = N(ρa + β(√h/2)G(a), β²I)``, computed independently in
    float64, for the plain gradient drift and for non-gradient drifts (clipped, tanh)."""
    _, drift_np = DRIFTS[drift_name]
    (x, xp, acc, accepted), _ = pcnl_one_step_batch(drift_name)
    explicit = explicit_log_ratio(x, xp, drift_np, MH_H)

    if drift_name == "clipped":  # the clip is active at most current and proposed states
        assert np.mean(np.linalg.norm(mh_grad_phi_np(x), axis=-1) > CLIP_NORM) > 0.8
        assert np.mean(np.linalg.norm(mh_grad_phi_np(xp), axis=-1) > CLIP_NORM) > 0.8
    assert_acceptance_is_mh(explicit, acc, accepted)


@pytest.mark.parametrize("drift_name", list(DRIFTS))
def test_proposal_mean_and_variance(drift_name):
    """Proposals from a fixed x have mean ρx + β(√h/2)G(x) and per-coordinate variance β²
    (the ratio check alone cannot see a wrong proposal equation)."""
    _, drift_np = DRIFTS[drift_name]
    _, (x, xp, _, _) = pcnl_one_step_batch(drift_name)
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
# NaN gradients
# ----------------------------------------------------------------------------------------------
def test_nan_gradient_rejected_even_if_drift_fn_sanitises_it():
    """A proposal whose gradient is NaN is rejected whatever the drift_fn makes of it, so the
    chain never stores a NaN ``logdensity_grad``."""
    algorithm = psijax.pcnl(nan_gradient, 1.0, drift_fn=lambda x, g: jnp.nan_to_num(g))
    x0 = jnp.full((200, 2), 0.9)
    states, info = run_chains(algorithm, x0, 20, seed=10, record=True)
    assert np.any(~np.isfinite(np.asarray(info.proposal.logdensity_grad)))  # they are proposed
    assert np.all(np.isfinite(np.asarray(states.logdensity_grad)))


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
