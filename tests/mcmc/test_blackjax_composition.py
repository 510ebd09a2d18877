"""The pCN / pCNL kernels composed with BlackJAX's own machinery.

``psijax.pcnl.build_kernel()`` / ``psijax.pcnl.init`` (and the pCN ones) are meant to drop
into ``blackjax.adaptive_tempered_smc`` as its mutation step, and ``psijax.pcnl(...)`` into
``blackjax.util.run_inference_algorithm``, unchanged (docs/algorithms.md §4). These tests run that
composition on a conjugate Gaussian target (``tests/mcmc/helpers.py``) whose posterior moments
and evidence ``Z`` are exact, and check the answers statistically:

* posterior moments with z-gates whose standard errors come from independent replicates
  (independent SMC runs, or independent chains), never from the correlated particles of one
  run;
* ``log Z`` in ratio space (docs/algorithms.md §7): ``Ẑ`` is unbiased for ``Z``, ``log Ẑ`` is not,
  so the gate is on the mean over runs of ``Ẑ/Z``, with a sample-sd standard error, after
  checking that ``sd(log Ẑ)`` is small enough for that standard error to be trustworthy.

Every random quantity uses a fixed seed, so the tests are deterministic; the gates are set
so that a correct implementation would fail them with probability ≲ 1e-3 under a fresh seed.
"""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import psijax
from tests.mcmc.helpers import make_conjugate

DIM = 10
NUM_DIRECTIONS = 3
NOISE_SD = 0.5
# Likelihood sd 0.5 on 3 orthonormal directions: posterior sd 0.45 along them (vs prior 1)
# and posterior means O(1) away from 0, so the tempering needs several steps and the
# moments / evidence checks below are far from what an unmoved prior sample would give.
TARGET = make_conjugate(DIM, NUM_DIRECTIONS, NOISE_SD, seed=1)

# Gate, in standard errors, for z-tests on moments. With ≲ 12 comparisons per test and
# replicate-based standard errors (Student-t with ≥ 15 dof), 4.5 SE keeps the family-wise
# false-alarm rate below ~1e-2 while a real bias of a few SE still fails.
Z_GATE = 4.5
# Gate, in standard errors, for the ratio-space evidence test (docs/algorithms.md §7: "a few").
RATIO_GATE = 4.0


def _logprior(x):
    """``log N(x; 0, I)`` up to a constant: the reference measure of the kernels."""
    return -0.5 * jnp.sum(x**2)


def _test_directions() -> np.ndarray:
    """Unit vectors to project on: the likelihood directions, one random direction (mixing
    likelihood and prior-only components) and one direction orthogonal to the likelihood
    (posterior = prior there: mean 0, variance 1 — checks the reference is left intact)."""
    rng = np.random.default_rng(123)
    a = TARGET.directions
    mixed = rng.standard_normal(DIM)
    mixed /= np.linalg.norm(mixed)
    orth = rng.standard_normal(DIM)
    orth -= a.T @ (a @ orth)
    orth /= np.linalg.norm(orth)
    return np.vstack([a, mixed, orth])


U = _test_directions()
EXACT_MEAN, EXACT_VAR = TARGET.projection_moments(U)


def _make_smc_runner(module, step_size: float, num_particles: int, num_mcmc_steps: int):
    """One jitted adaptive-tempered-SMC run (prior → posterior) for the given kernel module.

    Returns ``run(key) -> (final_state, log_Z_hat, num_tempering_steps)``. The tempering loop
    is a ``jax.lax.while_loop`` until ``λ = 1``; ``log Ẑ`` accumulates
    ``SMCInfo.log_likelihood_increment``.
    """
    algorithm = blackjax.adaptive_tempered_smc(
        logprior_fn=_logprior,
        loglikelihood_fn=TARGET.normalized_loglikelihood,
        mcmc_step_fn=module.build_kernel(),
        mcmc_init_fn=module.init,
        # Shared parameters have a leading axis of length 1 in this BlackJAX version
        # (smc/from_mcmc.py: unshared_parameters_and_step_fn); extend_params adds it.
        mcmc_parameters=blackjax.smc.extend_params({"step_size": step_size}),
        resampling_fn=blackjax.smc.resampling.systematic,
        target_ess=0.5,
        num_mcmc_steps=num_mcmc_steps,
    )
    max_tempering_steps = 100  # guard against a non-terminating loop; asserted below

    @jax.jit
    def run(key):
        key_init, key_loop = jax.random.split(key)
        particles = jax.random.normal(key_init, (num_particles, DIM))
        state = algorithm.init(particles)

        def cond(carry):
            state, _, n, _ = carry
            return (state.tempering_param < 1.0) & (n < max_tempering_steps)

        def body(carry):
            state, log_z, n, key = carry
            key, key_step = jax.random.split(key)
            state, info = algorithm.step(key_step, state)
            return state, log_z + info.log_likelihood_increment, n + 1, key

        init = (state, jnp.zeros((), jnp.float32), jnp.int32(0), key_loop)
        state, log_z, n, _ = jax.lax.while_loop(cond, body, init)
        return state, log_z, n

    return run, max_tempering_steps


def _run_replicates(module, seed, num_runs, **kwargs):
    """``num_runs`` independent SMC runs (a Python loop over one compiled run: on CPU this
    compiles markedly faster than vmapping the while-loop). Returns NumPy arrays."""
    run, max_steps = _make_smc_runner(module, **kwargs)
    outs = [run(k) for k in jax.random.split(jax.random.key(seed), num_runs)]
    states, log_z, n = zip(*outs, strict=True)
    return dict(
        particles=np.stack([np.asarray(s.particles, np.float64) for s in states]),
        weights=np.stack([np.asarray(s.weights, np.float64) for s in states]),
        tempering_param=np.array([float(s.tempering_param) for s in states]),
        log_z=np.array(log_z, np.float64),
        num_steps=np.array(n),
        max_steps=max_steps,
    )


def _ratio_gate(log_z_hat: np.ndarray, log_z: float) -> tuple[float, float]:
    """Mean over runs of ``Ẑ/Z`` and its standard error (sample sd / √R)."""
    ratio = np.exp(log_z_hat - log_z)
    return float(ratio.mean()), float(ratio.std(ddof=1) / np.sqrt(ratio.size))


@pytest.fixture(scope="module")
def pcnl_smc():
    """16 independent adaptive-tempered SMC runs with pCNL mutations, 1000 particles each."""
    return _run_replicates(
        psijax.pcnl, seed=0, num_runs=16, step_size=0.5, num_particles=1000, num_mcmc_steps=5
    )


def test_pcnl_smc_reaches_posterior_temperature(pcnl_smc):
    """The adaptive schedule with pCNL mutations ends exactly at ``λ = 1`` after several
    (more than one, fewer than the guard) tempering steps, with finite weights and evidence.

    More than one step shows the ESS-driven schedule was actually exercised (the posterior is
    far enough from the prior that a single jump would collapse the ESS below 0.5·N).
    """
    assert np.all(pcnl_smc["tempering_param"] == 1.0)
    assert np.all(pcnl_smc["num_steps"] > 1)
    assert np.all(pcnl_smc["num_steps"] < pcnl_smc["max_steps"])
    assert np.all(np.isfinite(pcnl_smc["particles"]))
    assert np.all(np.isfinite(pcnl_smc["log_z"]))
    np.testing.assert_allclose(pcnl_smc["weights"].sum(axis=1), 1.0, rtol=1e-4)


def test_pcnl_smc_posterior_projection_moments(pcnl_smc):
    """Weighted SMC estimates of ``E[uᵀx]`` and ``Var[uᵀx]`` match the exact conjugate
    posterior for the likelihood directions, a mixed direction and a prior-only direction.

    Gate: each run gives one weighted estimate; the runs are independent, so the standard
    error of their mean is the sample sd over runs / √R (this accounts for the correlation
    that resampling induces between particles, which a posterior-sd/√ESS error would not).
    Bias of SMC estimates is O(1/N) and negligible at N = 1000.
    """
    proj = np.einsum("rnd,kd->rnk", pcnl_smc["particles"], U)  # (R, N, K)
    w = pcnl_smc["weights"][..., None]
    mean_r = np.sum(w * proj, axis=1)  # (R, K)
    var_r = np.sum(w * (proj - mean_r[:, None, :]) ** 2, axis=1)
    num_runs = mean_r.shape[0]

    mean_est, mean_se = mean_r.mean(0), mean_r.std(0, ddof=1) / np.sqrt(num_runs)
    var_est, var_se = var_r.mean(0), var_r.std(0, ddof=1) / np.sqrt(num_runs)
    z_mean = (mean_est - EXACT_MEAN) / mean_se
    z_var = (var_est - EXACT_VAR) / var_se
    assert np.all(np.abs(z_mean) < Z_GATE), (mean_est, EXACT_MEAN, z_mean)
    assert np.all(np.abs(z_var) < Z_GATE), (var_est, EXACT_VAR, z_var)

    # Non-vacuity: the prior (mean 0, variance 1) is rejected by a wide margin along the
    # likelihood directions, so the gates above do distinguish posterior from prior.
    a = slice(0, NUM_DIRECTIONS)
    assert np.all(np.abs((mean_est[a] - 0.0) / mean_se[a]) > 10 * Z_GATE)
    assert np.all(np.abs((var_est[a] - 1.0) / var_se[a]) > 10 * Z_GATE)


def test_pcnl_smc_evidence_is_unbiased_in_ratio_space(pcnl_smc):
    """``Ẑ`` from the summed ``log_likelihood_increment`` is unbiased for the exact ``Z``.

    docs/algorithms.md §7: gate in ratio space. ``mean_r Ẑ_r/Z`` must be 1 within
    ``RATIO_GATE`` standard errors (sample sd of the ratios / √R). The sample-sd error is
    only reliable when the ratios are not heavy-tailed, hence the precondition
    ``sd(log Ẑ) < 0.7``. A shifted truth ``log Z + 0.5`` must fail the same gate, showing the
    gate has the power to see an evidence error of that size.
    """
    log_z = TARGET.log_normalizer()
    log_z_hat = pcnl_smc["log_z"]
    assert np.std(log_z_hat, ddof=1) < 0.7, np.std(log_z_hat, ddof=1)

    mean_ratio, se = _ratio_gate(log_z_hat, log_z)
    assert abs(mean_ratio - 1.0) < RATIO_GATE * se, (mean_ratio, se)

    # Non-vacuity: wrong truths are rejected. sd(log Ẑ) ≈ 0.035 here, so even a 0.1 error in
    # log Z is ≈ 10 standard errors away; 0.5 is the size named in the test plan.
    for shift in (0.5, 0.1, -0.1):
        wrong_mean, wrong_se = _ratio_gate(log_z_hat, log_z + shift)
        assert abs(wrong_mean - 1.0) > RATIO_GATE * wrong_se, (shift, wrong_mean, wrong_se)


def test_pcn_smc_evidence_is_unbiased_in_ratio_space():
    """Same composition with the gradient-free ``psijax.pcn`` kernel as mutation step: the
    runs reach ``λ = 1`` and the evidence passes the ratio-space gate (and the shifted truth
    ``log Z + 0.5`` fails it, for non-vacuity).

    pCN moves less per step than pCNL, so it gets 10 mutation steps per temperature.
    """
    runs = _run_replicates(
        psijax.pcn, seed=1, num_runs=16, step_size=0.5, num_particles=1000, num_mcmc_steps=10
    )
    assert np.all(runs["tempering_param"] == 1.0)
    log_z = TARGET.log_normalizer()
    assert np.std(runs["log_z"], ddof=1) < 0.7
    mean_ratio, se = _ratio_gate(runs["log_z"], log_z)
    assert abs(mean_ratio - 1.0) < RATIO_GATE * se, (mean_ratio, se)
    wrong_mean, wrong_se = _ratio_gate(runs["log_z"], log_z + 0.5)
    assert abs(wrong_mean - 1.0) > RATIO_GATE * wrong_se


def test_run_inference_algorithm_with_pcnl_samples_posterior():
    """``blackjax.util.run_inference_algorithm`` drives ``psijax.pcnl(logp, 0.5)`` (vmapped over
    independent chains started from the prior) to the exact posterior.

    Checks, with chains as independent replicates:

    * the final states' projections have the exact posterior mean (SE = exact sd / √C) and
      variance (SE = var·√(2/(C−1)), the Gaussian sample-variance error);
    * the trace (history of states) averaged over each chain's second half has the exact
      mean (SE = sample sd of the per-chain averages / √C);
    * the trace's last state is the returned final state, and the chains do move
      (mean acceptance well above 0), so the gates are not passed by a frozen chain.

    200 steps at ``h = 0.5``: the prior-only directions have autocorrelation
    ``ρ = 3.5/4.5 ≈ 0.78`` per step (≈ 5-step correlation time) and the likelihood directions
    mix faster, so the second half of each chain is far past burn-in.
    """
    num_chains, num_steps = 500, 200
    algorithm = psijax.pcnl(TARGET.logdensity, 0.5)

    def keep(state, info):
        # Keep only what is checked: a smaller trace (and a faster compile) than full states.
        return state.position, info.acceptance_rate

    @jax.jit
    def run(keys, positions):
        return jax.vmap(
            lambda k, x: blackjax.util.run_inference_algorithm(
                k, algorithm, num_steps, initial_position=x, transform=keep
            )
        )(keys, positions)

    key_init, key_run = jax.random.split(jax.random.key(2))
    positions = jax.random.normal(key_init, (num_chains, DIM))
    final_state, (trace, acceptance) = run(jax.random.split(key_run, num_chains), positions)

    trace = np.asarray(trace, np.float64)  # (C, T, d): the history of positions
    final = np.asarray(final_state.position, np.float64)  # (C, d)
    np.testing.assert_array_equal(trace[:, -1], final)
    assert np.all(np.isfinite(trace))
    # pCNL at h = 0.5 on this target accepts most proposals (dimension-free acceptance).
    assert float(np.mean(acceptance)) > 0.5

    exact_sd = np.sqrt(EXACT_VAR)
    proj_final = final @ U.T  # (C, K): independent draws across chains
    z_mean = (proj_final.mean(0) - EXACT_MEAN) / (exact_sd / np.sqrt(num_chains))
    var_se = EXACT_VAR * np.sqrt(2.0 / (num_chains - 1))
    z_var = (proj_final.var(0, ddof=1) - EXACT_VAR) / var_se
    assert np.all(np.abs(z_mean) < Z_GATE), z_mean
    assert np.all(np.abs(z_var) < Z_GATE), z_var

    chain_avg = np.einsum("ctd,kd->ck", trace[:, num_steps // 2 :], U) / (num_steps // 2)
    z_trace = (chain_avg.mean(0) - EXACT_MEAN) / (chain_avg.std(0, ddof=1) / np.sqrt(num_chains))
    assert np.all(np.abs(z_trace) < Z_GATE), z_trace
