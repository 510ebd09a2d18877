"""The discrete SMC against exact answers (docs/algorithms.md §10; DISCRETE tests 2–6).

Gates are z-scores of Monte Carlo averages over independent runs with fixed seeds: ``E[Ẑ]/Z``
is the mean of ``Ẑ/Z`` over ``R`` runs, judged by its standard error (|z| < 4); the runs'
spread ``sd(log Ẑ)`` orders the proposals with margins several times the sampling error of a
standard deviation from ``R`` runs (relative error ``≈ 1/√(2R)``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.align import discrete as d
from psijax.discrete import exact
from tests.align.discrete.toys import L, V, toy

RUNS = 200


def _log_z_hats(t, runs=RUNS, num_particles=32, **options):
    run = jax.jit(
        jax.vmap(
            lambda k: (
                d.run_discrete_smc(
                    k, t.problem, num_particles=num_particles, num_steps=t.num_steps, **options
                ).log_normalizer
            )
        )
    )
    return np.asarray(run(jax.random.split(jax.random.key(11), runs)), np.float64)


def test_exact_twist_and_locally_optimal_proposal_have_zero_variance():
    """Every increment is 0, ESS = N at every step and ``Ẑ = Z`` in every run. This is also
    the regression test for the twist at the all-masked state: ``ψ_0(m^L) = Z`` here, so a
    sampler that left it out would return ``log Ẑ = 0`` (``log Z`` is far from 0)."""
    t = toy(coupling=0.5)
    assert abs(t.log_z) > 0.5
    twist = d.Exact(t.log_values, V)
    result = jax.jit(
        lambda k: d.run_discrete_smc(
            k,
            t.problem,
            num_particles=16,
            num_steps=t.num_steps,
            twist=twist,
            proposal=d.LocallyOptimal(),
        )
    )(jax.random.key(0))
    np.testing.assert_allclose(result.info.log_normalizer_increments, 0.0, atol=2e-6)
    np.testing.assert_allclose(result.info.ess, 16.0, rtol=1e-6)
    np.testing.assert_allclose(result.log_normalizer, t.log_z, atol=1e-5)
    log_z = _log_z_hats(t, runs=20, twist=twist, proposal=d.LocallyOptimal())
    np.testing.assert_allclose(log_z, t.log_z, atol=1e-5)


def _shifted(problem, scale=0.7):
    """A proposal denoiser with random logit shifts (a fixed, wrong model)."""
    shift = scale * jax.random.normal(jax.random.key(9), (L, V + 1))
    return lambda e, t: problem.logits_fn(e, t) + shift


CONFIGS = {
    "reverse, no twist": dict(twist=d.NoTwist()),
    "twisted reverse": dict(twist=d.Soft()),
    "point twist": dict(twist=d.Point()),
    "random logit shifts": dict(twist=d.Soft(), proposal="shifted"),
    "first-order (kernel)": dict(twist=d.Soft(), proposal=d.FirstOrder()),
    "first-order (denoiser, clipped)": dict(
        twist=d.Soft(), proposal=d.FirstOrder("denoiser", clip=2.0)
    ),
    "first-order, mean twist": dict(twist=d.Mean(2), proposal=d.FirstOrder()),
    "first-order, log-mean-exp": dict(twist=d.LogMeanExp(2), proposal=d.FirstOrder()),
    "annealed, one-token": dict(
        twist=d.Soft(), proposal=d.FirstOrder(), kernel="one_token", annealing=d.annealing(4, 0.5)
    ),
    "remasking": dict(twist=d.Soft(), proposal=d.FirstOrder(), kernel="remdm_half"),
    "first-order top-1, chunked": dict(
        twist=d.Soft(), proposal=d.FirstOrder(top_k=1), particle_chunk=8
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_normalizing_constant_is_unbiased(name):
    """``E[Ẑ]/Z = 1`` for every proposal and twist (200 runs of 32 particles)."""
    options = dict(CONFIGS[name])
    kernel = options.pop("kernel", "mdlm")
    if kernel == "remdm_half":
        from psijax.discrete.kernels import ReMDM

        t = toy(coupling=0.5, num_steps=6)
        t_kernel = ReMDM(0.5)
        # the exact Z of the remasking sampler (its own P^T)
        with jax.enable_x64(True):
            log_p, _ = exact.sampler_marginal(
                t.problem.logits_fn, L, V, num_steps=6, kernel=t_kernel
            )
            states = exact.enumerate_states(L, V)
            term = exact.terminal_log_values(t.problem.reward_fn, states, V, 1.0)
            _, log_z = exact.tilted_target(log_p, term)
        kernel, log_z = t_kernel, float(log_z)
    else:
        t = toy(coupling=0.5, num_steps=L if kernel == "one_token" else 4, kernel=kernel)
        log_z = t.log_z
    if options.get("proposal") == "shifted":
        options["proposal"] = d.Amortised(_shifted(t.problem))
    log_z_hat = _log_z_hats(t, kernel=kernel, **options)
    ratio = np.exp(log_z_hat - log_z)
    z = (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))
    assert abs(z) < 4.0, (ratio.mean(), ratio.std(), z)
    assert ratio.std() > 1e-3  # a random estimate: the gate is not vacuous


def test_top_k_over_every_token_and_particle_chunks_change_nothing():
    """``FirstOrder(top_k=V)`` keeps every entry (the dense proposal) and ``particle_chunk``
    only changes how the passes are batched: the same particles, weights and ``Ẑ``; a smaller
    ``top_k`` is another proposal (other particles)."""
    t = toy(coupling=0.5)

    def run(proposal, chunk=None):
        return jax.jit(
            lambda k: d.run_discrete_smc(
                k,
                t.problem,
                num_particles=12,
                num_steps=t.num_steps,
                twist=d.Soft(),
                proposal=proposal,
                particle_chunk=chunk,
            )
        )(jax.random.key(3))

    dense = run(d.FirstOrder())
    other = run(d.FirstOrder(top_k=V), chunk=5)  # 12 particles: chunks of 5, 5 and 2
    np.testing.assert_array_equal(other.samples, dense.samples)
    np.testing.assert_allclose(other.log_weights, dense.log_weights, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(other.log_normalizer, dense.log_normalizer, rtol=1e-5)
    assert not np.array_equal(run(d.FirstOrder(top_k=1)).samples, dense.samples)


def test_efficiency_ordering_of_proposals():
    """``sd(log Ẑ)``: reverse > first-order > exact (= 0). Measured with 200 runs of 32
    particles: 0.135, 0.028 (kernel injection), 0.002 (denoiser injection), 0; the gates
    leave a factor 2 where the sampling error of each sd is 5 %."""
    t = toy(coupling=0.0)
    reverse = _log_z_hats(t, twist=d.Soft()).std()
    first = _log_z_hats(t, twist=d.Soft(), proposal=d.FirstOrder()).std()
    first_mu = _log_z_hats(t, twist=d.Soft(), proposal=d.FirstOrder("denoiser")).std()
    best = _log_z_hats(
        t, runs=20, twist=d.Exact(t.log_values, V), proposal=d.LocallyOptimal()
    ).std()
    assert reverse > 2.0 * first and reverse > 2.0 * first_mu, (reverse, first, first_mu)
    assert first > 10 * best and first_mu > best and best < 1e-5, (first, first_mu, best)


def test_weighted_histogram_matches_the_target_like_iid_draws_with_the_same_ess():
    """The pooled weighted histogram of 200 runs against ``π``: its total-variation distance
    is compared with that of ``M`` i.i.d. draws from ``π``, ``M`` the summed ESS; the gate is
    the 99.9 % quantile of the i.i.d. distances (simulated with a fixed seed) times 1.5 (the
    self-normalisation bias of ``N = 64``)."""
    t = toy(coupling=0.5)
    run = jax.jit(
        jax.vmap(
            lambda k: d.run_discrete_smc(
                k, t.problem, num_particles=64, num_steps=t.num_steps, proposal=d.FirstOrder()
            )
        )
    )
    result = run(jax.random.split(jax.random.key(5), RUNS))
    index = np.asarray(exact.state_index(result.samples, V)).reshape(-1)
    w = np.exp(np.asarray(result.log_weights, np.float64))
    ess = float(np.sum(1.0 / np.sum(w**2, axis=1)))
    hist = np.bincount(index, w.reshape(-1), minlength=t.log_target.size) / RUNS
    pi = np.exp(t.log_target)
    tv = 0.5 * np.abs(hist - pi).sum()
    rng = np.random.default_rng(0)
    m = int(ess)
    iid = [0.5 * np.abs(rng.multinomial(m, pi / pi.sum()) / m - pi).sum() for _ in range(200)]
    assert tv < 1.5 * np.quantile(iid, 0.999), (tv, np.quantile(iid, [0.5, 0.999]), ess)
    assert tv > 0.0


def test_named_samplers_return_alignment_results_and_count_their_evaluations():
    t = toy(coupling=0.5)
    n = 8
    for name, sampler in d.DISCRETE_SAMPLERS.items():
        extra = {}
        if name == "smc_amortised":
            extra = dict(proposal_logits_fn=_shifted(t.problem))
        if name == "smc_product":
            extra = dict(logits_fn_b=_shifted(t.problem), gamma=0.5)
        result = jax.jit(
            lambda k, s=sampler, e=extra: s(k, t.problem, num_particles=n, num_steps=4, **e)
        )(jax.random.key(0))
        assert result.samples.shape == (n, L) and result.samples.dtype == jnp.int32
        assert np.all(np.asarray(result.samples) < V)
        assert np.isfinite(result.log_normalizer)
        np.testing.assert_allclose(jax.nn.logsumexp(result.log_weights), 0.0, atol=1e-5)
        proposal = sampler.config.get("proposal") or (
            d.Amortised(extra["proposal_logits_fn"]) if name == "smc_amortised" else None
        )
        twist = sampler.config["twist"]
        target = d.Product(extra["logits_fn_b"], 0.5) if name == "smc_product" else None
        cost = d.cost_per_particle(4, twist, proposal, target, reward_cost=0.0)
        assert int(result.nfe) == round(n * cost), name
    # best-of-N: 4 levels of one denoiser call, then 1 reward call: 5 per particle
    assert d.best_of_n.num_particles_for(100, t.problem, num_steps=4) == 20
    # first-order: per level forward + backward and 2 reward passes (soft twist), then 1
    assert d.smc_first_order.num_particles_for(100, t.problem, num_steps=4) == 100 // 17
    result = jax.jit(lambda k: d.smc_first_order(k, t.problem, nfe_budget=100, num_steps=4))(
        jax.random.key(1)
    )
    assert result.samples.shape[0] == 100 // 17
