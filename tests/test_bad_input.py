"""Inputs that once gave a silently wrong answer or a raw JAX traceback, and what they get now.

One test per input of the "no silently wrong answer" review (the CLI's share is in
tests/test_first_hour.py, FLUX checkpoints in tests/models/flux/test_weights.py). Each test
fails on the code before it: a metric of a NaN sample returned 0.0, a sharp reward threw the
particles out of the data with a final ESS of N and nothing said, an all-zero resampling
returned scheme-dependent ancestors, a wrong shape surfaced 11–23 frames deep in JAX.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import psijax
from psijax import align, metrics
from psijax.experiments import toy
from psijax.smc import resampling, weights
from psijax.smc.resampling import SCHEMES

TOY = toy.exact_problem("six_modes_quadratic")


def _sharp(alpha: float) -> align.RewardProblem:
    return dataclasses.replace(TOY, alpha=alpha)


# ----------------------------------------------------------------------------------------------
# Metrics never score a non-finite sample
# ----------------------------------------------------------------------------------------------
X = np.asarray(jax.random.normal(jax.random.key(0), (50, 2)))
X_NAN = X.copy()
X_NAN[3, 0] = np.nan

METRICS = {
    "mmd": lambda x, y, w=None: metrics.mmd(x, y, x_weights=w),
    "energy_distance": lambda x, y, w=None: metrics.energy_distance(x, y, x_weights=w),
    "sliced_wasserstein": lambda x, y, w=None: metrics.sliced_wasserstein(
        jax.random.key(1), x, y, x_weights=w
    ),
    "median_bandwidth": lambda x, y, w=None: metrics.median_heuristic_bandwidth(x, y, x_weights=w),
    "wasserstein_1d": lambda x, y, w=None: metrics.wasserstein_1d(x[:, 0], y[:, 0], x_weights=w),
    "mode_occupancy": lambda x, y, w=None: metrics.mode_occupancy(x, y[:3], weights=w),
    "weighted_mean_and_sd": lambda x, y, w=None: metrics.weighted_mean_and_sd(x, w)[0],
}


@pytest.mark.parametrize("name", list(METRICS))
def test_metric_of_a_nan_sample_is_an_error_or_nan_never_a_number(name):
    """energy_distance returned 0.0 (a perfect match) for a NaN sample."""
    metric = METRICS[name]
    with pytest.raises(ValueError, match=r"non-finite .*index 3"):
        metric(X_NAN, X)
    assert np.all(np.isnan(np.asarray(jax.jit(metric)(X_NAN, X))))  # traced: NaN
    # a zero-weight sample may hold NaN (an SMC's dead particle): it is ignored
    w = np.ones(50, np.float32)
    w[3] = 0.0
    clean = X.copy()
    clean[3] = 0.0
    np.testing.assert_allclose(metric(X_NAN, X, w), metric(clean, X, w), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Sharp rewards: the failure is in the result, and the capped proposal avoids it
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sharp_toy():
    run = jax.jit(
        lambda key, cap: align.smc(
            key, _sharp(1e-3), num_particles=40, num_steps=25, proposal=align.Twisted(cap)
        ),
        static_argnums=1,
    )
    return run(jax.random.key(0), None), run(jax.random.key(0), 3.0)


def test_sharp_toy_reward_is_flagged_and_the_ess_history_reads_zero_after_the_collapse(sharp_toy):
    """α = 1e-3: samples ~1e16 and rewards ~−1e35, the proposal an unstable gradient step."""
    result, _ = sharp_toy
    info = result.info.smc
    assert bool(info.collapsed) and float(info.final_ess) == 0.0
    assert np.all(np.asarray(result.log_weights) == -np.inf)
    ess = np.asarray(info.ess)
    dead = np.flatnonzero(np.asarray(info.log_normalizer_increments) == -np.inf)
    assert dead.size and np.all(ess[dead[0] + 1 :] == 0.0)  # never N after the collapse
    assert np.isneginf(float(result.info.log_normalizer_smc))
    problems = align.diagnose(result)
    kinds = {p.split(":")[0] for p in problems}
    assert {"collapsed", "invalid", "shift"} <= kinds, problems


def test_capped_twisted_proposal_keeps_a_sharp_run_in_range(sharp_toy):
    """``Twisted(max_shift=3)`` moves at most 3 noise widths beyond the model: finite, in-range
    particles, no collapse; the weight degeneracy that remains is still reported."""
    _, capped = sharp_toy
    info = capped.info.smc
    assert not bool(info.collapsed)
    assert np.all(np.isfinite(np.asarray(capped.samples)))
    assert float(np.max(np.abs(capped.samples))) < 6.0  # the modes lie on a ring of radius 4
    # ‖x' − μ‖/(σ√d) ≤ cap + the noise's own |z|/√d (< 4 for 40 draws in d = 2)
    assert float(np.max(info.proposal_info.shift)) < 3.0 + 4.0
    kinds = {p.split(":")[0] for p in align.diagnose(capped)}
    assert "degenerate" in kinds and not {"collapsed", "invalid", "shift"} & kinds


def test_capped_proposal_is_exact_when_the_cap_does_not_bind():
    """A cap far above the shift changes nothing, bit for bit."""
    problem = _sharp(2.0)
    key = jax.random.key(3)
    plain = align.smc(key, problem, num_particles=16, num_steps=5)
    capped = align.smc(key, problem, num_particles=16, num_steps=5, proposal=align.Twisted(1e6))
    np.testing.assert_array_equal(np.asarray(plain.samples), np.asarray(capped.samples))
    np.testing.assert_array_equal(np.asarray(plain.log_weights), np.asarray(capped.log_weights))
    assert align.diagnose(plain) == ()


def test_shift_is_nan_not_zero_without_noise():
    """A deterministic sampler (σ = 0) has no noise to measure a shift against: NaN, and
    diagnose raises no shift warning from it (0 would read as "perfectly healthy")."""
    from psijax.flows import sde

    result = align.smc(
        jax.random.key(0), TOY, num_particles=8, num_steps=4, diffusion=sde.ode_diffusion()
    )
    assert np.all(np.isnan(np.asarray(result.info.smc.proposal_info.shift)))
    assert "shift" not in {p.split(":")[0] for p in align.diagnose(result)}


def test_very_sharp_psi_sampler_gives_nan_particles_only_with_zero_weight_and_says_so():
    """α = 1e-4: NaN samples (psi_sampler too); every one has weight zero and is reported."""
    result = jax.jit(lambda k: align.psi_sampler(k, _sharp(1e-4), nfe_budget=1000, num_steps=25))(
        jax.random.key(0)
    )
    x, log_w = np.asarray(result.samples), np.asarray(result.log_weights)
    assert not np.all(np.isfinite(x))
    assert np.all(log_w[~np.all(np.isfinite(x), axis=1)] == -np.inf)
    assert bool(result.info.smc.collapsed)
    assert {"collapsed", "invalid"} <= {p.split(":")[0] for p in align.diagnose(result)}


def test_sharp_digits_reward_out_of_range_is_flagged_and_the_cli_warns(capsys):
    """digits, class 4, smc, α = 1e-5, 20 particles, 10 steps: rc 0, ESS 20/20, held-out
    accuracy 1 and black blobs with pixels up to 233 before. The first twisted step moved the
    particles hundreds of noise widths (ESS 1 there); the classifier saturates out there
    (r = 0, ∇r = 0), so every later weight is uniform: an exact ESS of N of copies far outside
    [−1, 1]. The study row now carries the warnings and the CLI prints them."""
    from psijax import cli
    from psijax.experiments import digits

    models = digits.load_models("reflow")
    task = digits.make_task("class", 4, alpha=1e-5)
    run = digits.run_method(models, [task], "smc", budget=200, num_steps=10, seeds=1)
    (row,) = run.rows
    assert row["ess"] > 19.0 and row["nn_dist"] > 100.0  # the misleading numbers
    kinds = {p.split(":")[0] for p in row["warnings"].split(" | ")}
    assert {"shift", "range"} <= kinds, row["warnings"]
    cli._warn_about(run.rows)
    err = capsys.readouterr().err
    assert "psijax: warning: smc: 1 of 1 run(s) cannot be trusted" in err and "- shift:" in err

    problem = digits.make_problem(models, "class", 4, 1e-5)
    capped = jax.jit(
        lambda key: align.smc(
            key, problem, num_particles=20, num_steps=10, proposal=align.Twisted(max_shift=3.0)
        )
    )(jax.random.key(0))
    assert float(np.max(np.abs(capped.samples))) < 2.0
    problems = align.diagnose(capped, data_range=digits.DATA_RANGE)
    assert not {"shift", "range"} & {p.split(":")[0] for p in problems}, problems


def test_diagnose_rejects_what_it_cannot_read():
    with pytest.raises(TypeError, match="AlignmentResult"):
        align.diagnose(object())
    result = align.smc(jax.random.key(0), TOY, num_particles=4, num_steps=2)
    with pytest.raises(TypeError, match="unknown thresholds"):
        align.diagnose(result, shfit=3.0)
    with pytest.raises(ValueError, match="data_range"):
        align.diagnose(result, data_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="max_shift"):
        align.Twisted(max_shift=0.0)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
def _logdensity(x):
    return -0.5 * jnp.sum(x**2)


@pytest.mark.parametrize("kernel", [psijax.pcn, psijax.pcnl, psijax.ula], ids=str)
def test_kernel_rejects_a_non_finite_start_or_says_so_in_the_state(kernel):
    """A chain started at NaN stayed NaN forever, looking like a chain."""
    algorithm = kernel(_logdensity, 0.5)
    with pytest.raises(ValueError, match="initial `position` must be finite"):
        algorithm.init(jnp.array([jnp.nan, 0.0]))
    states = jax.vmap(algorithm.init)(jnp.array([[jnp.nan, 0.0], [1.0, 2.0]]))
    assert np.isnan(float(states.logdensity[0])) and float(states.logdensity[1]) == -2.5


@pytest.mark.parametrize("step_size", [4.0, 5.0])
def test_pcnl_step_size_rule_is_in_the_kernel(step_size):
    with pytest.raises(ValueError, match=r"step_size.*\(0.0, 4.0\)"):
        psijax.pcnl(_logdensity, step_size)


# ----------------------------------------------------------------------------------------------
# Resampling
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCHEMES))
def test_degenerate_concrete_weights_are_errors(name):
    scheme = SCHEMES[name]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="no positive finite entry"):
        scheme(key, jnp.zeros(5), 5)
    with pytest.raises(ValueError, match=r"\+inf .*index 1"):
        scheme(key, jnp.array([0.5, jnp.inf, 0.5]), 3)
    with pytest.raises(ValueError, match=r"shape \(N,\) with N >= 1"):
        scheme(key, jnp.zeros(0), 3)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_traced_all_zero_weights_draw_uniform_ancestors_in_every_scheme(name):
    """Before: systematic gave all zeros, multinomial anything. Now every scheme draws from
    uniform weights: mean offspring 1 per particle, z-scores over 2000 draws."""
    n, reps = 8, 2000
    draw = jax.jit(jax.vmap(lambda k, w: SCHEMES[name](k, w, n), in_axes=(0, None)))
    ancestors = np.asarray(draw(jax.random.split(jax.random.key(1), reps), jnp.zeros(n)))
    counts = np.stack([np.bincount(a, minlength=n) for a in ancestors])
    mean, se = counts.mean(0), counts.std(0, ddof=1) / np.sqrt(reps)
    z = np.where(se > 0, (mean - 1.0) / np.where(se > 0, se, 1.0), mean - 1.0)
    assert np.all(np.abs(z) < 4.5), z  # Bonferroni over 8 particles × 5 schemes at ~1e-4


def test_resample_if_needed_checks_the_particles_length():
    """A lax.cond type error before."""
    with pytest.raises(ValueError, match="leading axis N = 5"):
        weights.resample_if_needed(
            jax.random.key(0), jnp.zeros(5), jnp.zeros((4, 2)), 0.5, "systematic"
        )
    with pytest.raises(ValueError, match=r"`log_weights` must have shape \(N,\)"):
        weights.resample_if_needed(
            jax.random.key(0), jnp.zeros(0), jnp.zeros((0, 2)), 0.5, resampling.systematic
        )


# ----------------------------------------------------------------------------------------------
# The user's functions, checked once at build time
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reward_fn": lambda x: x}, r"`reward_fn` must return one scalar .*got shape \(2,\)"),
        ({"event_shape": (3,)}, r"`velocity_fn` failed .*`event_shape` = \(3,\)"),
        ({"velocity_fn": lambda x, t: x[:1]}, r"`velocity_fn` must return .*\(2,\).*\(1,\)"),
        (
            {"x0_predictor": lambda v, x, t: jnp.concatenate([x, x])},
            r"`x0_predictor` must return .*\(2,\).*got shape \(4,\)",
        ),
    ],
    ids=["vector_reward", "event_shape", "velocity_shape", "predictor_shape"],
)
def test_wrong_shapes_are_named_at_build_time(kwargs, match):
    args = {
        "velocity_fn": TOY.velocity_fn,
        "reward_fn": TOY.reward_fn,
        "event_shape": (2,),
        "alpha": 1.0,
    }
    with pytest.raises(ValueError, match=match):
        align.RewardProblem(**(args | kwargs))


def test_a_typo_names_the_sampler_called_and_the_closest_argument():
    """Was reported as an unexpected argument of smc() / initial_particles()."""
    with pytest.raises(TypeError, match=r"psi_sampler\(\).*'num_partcles'.*'num_particles'"):
        align.psi_sampler(jax.random.key(0), TOY, num_partcles=4)


def test_a_traced_particle_count_is_told_to_be_static():
    """Was "must be an int >= 1, got JitTracer"."""
    run = jax.jit(lambda n: align.smc(jax.random.key(0), TOY, num_particles=n, num_steps=3))
    with pytest.raises(TypeError, match=r"`num_particles` must be a static"):
        run(4)
