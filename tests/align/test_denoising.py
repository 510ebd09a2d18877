"""RewardProblem and the SMC over the denoising grid (``psijax.align.denoising``), against the
linear-Gaussian closed forms.

Statistical gates are z-scores at fixed seeds. ``Ẑ`` is unbiased for ``Z_disc`` (the normalizer
of the discretized chain, :meth:`LinearGaussianFlow.discretized_log_normalizer`), so the mean of
``Ẑ/Z_disc`` over ``R`` independent runs is 1 within ``|z| < 4.5`` standard errors (two-sided
false-alarm rate ~7e-6 per statistic). The same gate must reject the continuous-time ``Z``
(a 5% gap at 10 steps for this problem, ~7–8 standard errors for the twisted proposal).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax import flows
from psijax.align import (
    AlignmentResult,
    Bootstrap,
    Current,
    Difference,
    FlowMap,
    Max,
    RewardProblem,
    Sum,
    Twisted,
    run_smc,
)
from psijax.models.linear_gaussian import LinearGaussianFlow
from psijax.models.presets import quadratic_reward

Z_GATE = 4.5
MODEL = LinearGaussianFlow([1.0, -1.0], [[0.09, 0.02], [0.02, 0.16]])
CENTER = np.array([0.5, -0.5])
PRECISION = np.diag([1.0, 0.5])
# α small enough that with κ = 0.5 some steps resample and some accumulate, large enough that
# sd(log Ẑ) ≈ 0.1–0.25 at N = 64 particles.
ALPHA = 0.05
NUM_STEPS = 10
GRID = flows.uniform_grid(NUM_STEPS)
DIFFUSION = flows.reference_diffusion()
PROBLEM = RewardProblem(MODEL.velocity, quadratic_reward(CENTER, PRECISION), (2,), ALPHA)


def prior_start(key, problem, num_particles):
    """Prior draws ``x ~ N(0, I)``: log-weights 0 relative to the prior."""
    x = jax.random.normal(key, (num_particles,) + problem.event_shape, jnp.float32)
    return x, jnp.zeros(num_particles)


PROPOSALS = {"twisted": Twisted(), "bootstrap": Bootstrap()}
POTENTIALS = {"difference": Difference(), "max": Max(), "sum": Sum(), "current": Current()}


def run(key, problem=PROBLEM, num_particles=64, **kwargs):
    k_init, k_run = jax.random.split(key)
    x, log_w = prior_start(k_init, problem, num_particles)
    kwargs = {"grid": GRID, "diffusion": DIFFUSION, **kwargs}
    return run_smc(k_run, problem, x, log_w, **kwargs)


def jitted_run(**kwargs):
    return jax.jit(lambda key: run(key, **kwargs))


@functools.cache
def replicated(proposal: str, threshold: float, num_runs: int = 256) -> AlignmentResult:
    keys = jax.random.split(jax.random.key(7), num_runs)
    part = PROPOSALS[proposal]
    fn = jax.jit(jax.vmap(lambda k: run(k, proposal=part, ess_threshold=threshold)))
    return jax.tree.map(np.asarray, fn(keys))


def ratio_z(log_z_hat: np.ndarray, log_z: float) -> float:
    ratio = np.exp(np.asarray(log_z_hat, np.float64) - log_z)
    return (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))


# ----------------------------------------------------------------------------------------------
# RewardProblem
# ----------------------------------------------------------------------------------------------
def test_potential_and_grad_is_one_model_call_and_matches_closed_form():
    calls = []

    def velocity(x, t):
        calls.append(1)
        return MODEL.velocity(x, t)

    problem = RewardProblem(velocity, quadratic_reward(CENTER, PRECISION), (2,), ALPHA)
    assert len(calls) == 1  # the build-time shape check traces it once
    calls.clear()
    x, t = jnp.array([0.3, -0.7]), 0.6
    r, g, v, nfe = jax.jit(problem.potential_and_grad)(x, t)
    assert len(calls) == 1 and nfe == 1
    k_mat, k_vec = MODEL.velocity_coefficients(t)
    x0 = np.asarray(x) - t * (k_mat @ np.asarray(x) + k_vec)
    grad_r = -PRECISION @ (x0 - CENTER)
    np.testing.assert_allclose(v, k_mat @ np.asarray(x) + k_vec, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, -0.5 * (x0 - CENTER) @ PRECISION @ (x0 - CENTER), rtol=1e-5)
    np.testing.assert_allclose(g, (np.eye(2) - t * k_mat).T @ grad_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(problem.predict_x0(x, t), x0, rtol=1e-5, atol=1e-6)


def test_callable_predictor_declares_its_cost():
    def tweedie(velocity_fn, x, t):
        return x - t * velocity_fn(x, t)

    def costly(velocity_fn, x, t):
        return tweedie(velocity_fn, x, t), 7

    x = jnp.array([0.3, -0.7])
    expected = jax.jit(PROBLEM.potential_and_grad)(x, 0.5)
    for predictor, cost in ((tweedie, 1), (costly, 7)):
        custom = RewardProblem(MODEL.velocity, PROBLEM.reward_fn, (2,), ALPHA, predictor)
        *values, nfe = jax.jit(custom.potential_and_grad)(x, 0.5)
        for a, b in zip(values, expected[:3], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        assert nfe == cost + 1  # the predictor's evaluations plus the velocity for the move
    # Same weights as Tweedie; N·T potentials, each counted at 8 evaluations.
    custom = RewardProblem(MODEL.velocity, PROBLEM.reward_fn, (2,), ALPHA, costly)
    key = jax.random.key(4)
    res, ref = jitted_run(problem=custom)(key), jitted_run()(key)
    np.testing.assert_allclose(res.log_weights, ref.log_weights, rtol=1e-5, atol=1e-5)
    assert res.nfe == 64 * NUM_STEPS * 8 and ref.nfe == 64 * NUM_STEPS


def test_flow_map_predictor_in_smc_counts_every_ode_evaluation_and_stays_unbiased():
    """Potentials through the flow map: the NFE is the sum of the solves' exact counts (each
    potential costs its solve plus one velocity call) and ``Ẑ`` still targets ``Z_disc`` (the
    potentials telescope to the exact final reward whatever the predictor)."""
    options = {"rtol": 1e-4, "atol": 1e-4}
    flow = RewardProblem(MODEL.velocity, PROBLEM.reward_fn, (2,), ALPHA, FlowMap(**options))
    x = jnp.array([[0.3, -0.7], [1.2, 0.4]])
    _, counts = jax.vmap(lambda y: flows.flow_map(MODEL.velocity, y, 1.0, **options))(x)
    res = run_smc(jax.random.key(0), flow, x, grid=jnp.array([1.0, 0.0]), diffusion=DIFFUSION)
    assert res.nfe == int(jnp.sum(counts)) + 2  # T = 1: the t_0 potentials only
    assert int(jnp.min(counts)) > 5

    def one(key):
        k_init, k_run = jax.random.split(key)
        x = jax.random.normal(k_init, (64, 2))
        out = run_smc(k_run, flow, x, grid=GRID, diffusion=DIFFUSION)
        return out.log_normalizer, out.nfe

    log_z_hat, nfe = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(21), 64))
    log_z_disc = MODEL.discretized_log_normalizer(GRID, DIFFUSION, CENTER, PRECISION, ALPHA)
    assert abs(ratio_z(np.asarray(log_z_hat), log_z_disc)) < Z_GATE
    assert np.all(np.asarray(nfe) > 64 * NUM_STEPS * 6)


@pytest.mark.parametrize(
    "kwargs, name, error",
    [
        ({"alpha": 0.0}, "alpha", ValueError),
        ({"alpha": float("inf")}, "alpha", ValueError),
        ({"alpha": "0.1"}, "alpha", TypeError),
        ({"event_shape": (2, 0)}, "event_shape", ValueError),
        ({"event_shape": [2]}, "event_shape", TypeError),
        ({"x0_predictor": "euler"}, "x0_predictor", ValueError),
        ({"x0_predictor": 3}, "x0_predictor", TypeError),
        ({"flow_map_options": {"tol": 1e-3}}, "flow_map_options", ValueError),
        ({"flow_map_options": 1e-3}, "flow_map_options", TypeError),
        ({"velocity_fn": None}, "velocity_fn", TypeError),
    ],
)
def test_problem_invalid_arguments_raise(kwargs, name, error):
    args = {
        "velocity_fn": MODEL.velocity,
        "reward_fn": PROBLEM.reward_fn,
        "event_shape": (2,),
        "alpha": ALPHA,
        **kwargs,
    }
    with pytest.raises(error, match=f"`{name}`"):
        RewardProblem(**args)


def test_predictor_fields_are_checked():
    with pytest.raises(ValueError, match="`rtol`"):
        FlowMap(rtol=0.0)
    with pytest.raises(TypeError, match="`max_steps`"):
        FlowMap(max_steps=10.5)


# ----------------------------------------------------------------------------------------------
# Unbiasedness of Ẑ and its power
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.5, 1.0])
@pytest.mark.parametrize("proposal", ["twisted", "bootstrap"])
def test_log_normalizer_is_unbiased_for_the_discretized_chain(proposal, threshold):
    res = replicated(proposal, threshold)
    log_z_disc = MODEL.discretized_log_normalizer(GRID, DIFFUSION, CENTER, PRECISION, ALPHA)
    log_z_hat = res.log_normalizer
    assert np.all(np.isfinite(log_z_hat))
    assert np.std(log_z_hat) < 0.7
    z = ratio_z(log_z_hat, log_z_disc)
    print(f"{proposal} κ={threshold}: sd(log Ẑ)={np.std(log_z_hat):.3f}, z={z:.2f}")
    assert abs(z) < Z_GATE
    resampled = res.info.resampled
    if threshold == 1.0:
        assert np.all(resampled)
    else:  # some steps accumulate, some resample
        assert resampled.any() and not resampled.all()
    assert np.all(res.nfe == 64 * NUM_STEPS)
    np.testing.assert_allclose(np.exp(res.log_weights).sum(axis=1), 1.0, rtol=1e-5)  # normalized


@pytest.mark.parametrize("potential", ["max", "sum", "current"])
def test_fk_steering_potentials_keep_the_target(potential):
    """FK steering's potentials with the bootstrap proposal, resampling every step: the last
    potential divides by the earlier ones, so ``Ẑ`` is unbiased for ``Z_disc`` and
    ``Ẑ·Σ W_i x_i / Z_disc`` is unbiased for the exact tilted mean of the discretized chain."""
    # α = 0.5, not ALPHA: "sum" stacks T(T+1)/2 rewards into the path potential and its final
    # correction, so its Ẑ grows heavy tails as α shrinks (sd(log Ẑ) 0.2 at α = 1, 0.8 at 0.3,
    # and at α = 0.05 a sample mean hundreds of standard errors low: unbiased only in theory).
    alpha = 0.5
    problem = RewardProblem(MODEL.velocity, quadratic_reward(CENTER, PRECISION), (2,), alpha)
    keys = jax.random.split(jax.random.key(8), 256)
    fn = jax.vmap(
        lambda k: run(
            k, problem, proposal=Bootstrap(), potential=POTENTIALS[potential], ess_threshold=1.0
        )
    )
    res = jax.tree.map(np.asarray, jax.jit(fn)(keys))
    mean, _, log_z_disc = MODEL.tilted_final_distribution(GRID, DIFFUSION, CENTER, PRECISION, alpha)
    z = ratio_z(res.log_normalizer, log_z_disc)
    print(f"{potential}: sd(log Ẑ)={np.std(res.log_normalizer):.3f}, z={z:.2f}")
    assert abs(z) < Z_GATE
    assert np.std(res.log_normalizer) < 1.5
    ratio = np.exp(np.asarray(res.log_normalizer, np.float64) - log_z_disc)
    unbiased = ratio[:, None] * np.einsum("rn,rnd->rd", np.exp(res.log_weights), res.samples)
    z_mean = (unbiased.mean(0) - mean) / (unbiased.std(0, ddof=1) / np.sqrt(len(ratio)))
    assert np.all(np.abs(z_mean) < Z_GATE), z_mean
    # The potential really was applied: the step increments are not the difference potential's.
    ref = run(keys[0], problem, proposal=Bootstrap(), ess_threshold=1.0)
    increments = res.info.log_normalizer_increments[0]
    assert not np.allclose(increments, ref.info.log_normalizer_increments, atol=1e-2)


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_the_same_gate_rejects_the_continuous_time_normalizer(threshold):
    log_z = MODEL.continuous_log_normalizer(CENTER, PRECISION, ALPHA)
    z = ratio_z(replicated("twisted", threshold).log_normalizer, log_z)
    print(f"continuous Z, κ={threshold}: z={z:.2f}")
    assert abs(z) > Z_GATE


# ----------------------------------------------------------------------------------------------
# Weight accumulation, invalid rewards, moments
# ----------------------------------------------------------------------------------------------
def test_weights_accumulate_when_ess_stays_high():
    """Near-flat reward: no step resamples at κ = 0.5; the result equals the κ = 0 run, and for
    the bootstrap proposal the accumulated increments telescope to ``r(x_T)/α``."""
    flat = RewardProblem(MODEL.velocity, quadratic_reward(CENTER, 0.01 * PRECISION), (2,), 1.0)
    key = jax.random.key(3)
    res = jitted_run(problem=flat, proposal=Bootstrap(), ess_threshold=0.5)(key)
    never = jitted_run(problem=flat, proposal=Bootstrap(), ess_threshold=0.0)(key)
    assert not np.any(res.info.resampled)
    np.testing.assert_array_equal(res.log_weights, never.log_weights)
    np.testing.assert_array_equal(res.samples, never.samples)
    assert np.ptp(res.log_weights) > 1e-3  # weights were kept, not reset
    expected = jax.nn.log_softmax(res.rewards / flat.alpha)
    np.testing.assert_allclose(res.log_weights, expected, atol=1e-5)


def test_nan_reward_gives_zero_weight_and_the_run_completes():
    quad = quadratic_reward(CENTER, PRECISION)

    def reward(x):
        return jnp.where(x[0] > 1.4, jnp.nan, quad(x))

    problem = RewardProblem(MODEL.velocity, reward, (2,), 0.5)
    res = jitted_run(problem=problem, num_particles=256, ess_threshold=0.5)(jax.random.key(11))
    assert np.isfinite(res.log_normalizer)
    assert np.all(np.isfinite(res.samples))
    assert not np.any(np.isnan(res.log_weights))
    hit = np.asarray(res.samples[:, 0] > 1.4)
    assert np.all(res.log_weights[hit] == -np.inf)
    assert np.all(np.isnan(res.rewards[hit]))
    assert np.all(np.isfinite(res.log_weights[~hit]) | (res.log_weights[~hit] == -np.inf))
    assert hit.any() and (~hit).any()


# ----------------------------------------------------------------------------------------------
# Configuration errors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, name",
    [
        ({"num_particles": 0}, "initial_particles"),
        ({"ess_threshold": 1.5}, "ess_threshold"),
        ({"ess_threshold": -0.1}, "ess_threshold"),
        ({"grid": jnp.linspace(0.0, 1.0, 11)}, "grid"),
        ({"grid": jnp.linspace(0.9, 0.0, 11)}, "grid"),
        ({"grid": jnp.linspace(1.0, 0.1, 11)}, "grid"),
        ({"schedule": jnp.ones(NUM_STEPS)}, "schedule"),
        ({"schedule": jnp.linspace(-0.1, 1.0, NUM_STEPS + 1)}, "schedule"),
        ({"schedule": jnp.full(NUM_STEPS + 1, 0.5)}, "schedule"),
        ({"proposal": "guided"}, "proposal"),
        ({"potential": "min"}, "potential"),
        ({"resample_every": 0}, "every"),
        ({"num_resampled": 1}, "num_resampled"),
        ({"num_resampled": 9}, "num_resampled"),
        ({"resampling": "best"}, "resampling"),
    ],
)
def test_invalid_configuration_raises(change, name):
    change = dict(change)
    num_particles = change.pop("num_particles", 8)
    x = jnp.zeros((max(num_particles, 0), 2))
    kwargs = {"grid": GRID, "diffusion": DIFFUSION, **change}
    with pytest.raises(ValueError, match=name):
        run_smc(jax.random.key(0), PROBLEM, x, jnp.zeros(x.shape[0]), **kwargs)


@pytest.mark.parametrize(
    "change, name",
    [
        ({"proposal": 3}, "proposal"),
        ({"potential": Twisted()}, "potential"),
        ({"diffusion": "reference"}, "diffusion"),
        ({"ess_threshold": "half"}, "ess_threshold"),
        ({"resample_every": 2.0}, "every"),
    ],
)
def test_wrong_kinds_of_parts_are_type_errors(change, name):
    kwargs = {"grid": GRID, "diffusion": DIFFUSION, **change}
    with pytest.raises(TypeError, match=name):
        run_smc(jax.random.key(0), PROBLEM, jnp.zeros((8, 2)), jnp.zeros(8), **kwargs)
    with pytest.raises(TypeError, match="problem"):
        run_smc(jax.random.key(0), "problem", jnp.zeros((8, 2)), grid=GRID, diffusion=DIFFUSION)


def test_invalid_shapes_raise():
    key = jax.random.key(0)
    kwargs = {"grid": GRID, "diffusion": DIFFUSION}
    with pytest.raises(ValueError, match="`initial_particles`"):
        run_smc(key, PROBLEM, jnp.zeros((8, 3)), jnp.zeros(8), **kwargs)
    with pytest.raises(ValueError, match="`initial_log_weights`"):
        run_smc(key, PROBLEM, jnp.zeros((8, 2)), jnp.zeros(7), **kwargs)


def test_tempered_schedule_runs_and_is_unbiased_in_a_single_check():
    """A DAS-style schedule (λ_0 = 0): initial weights λ_0·r/α = 0; Ẑ still targets Z_disc."""
    lambdas = jnp.minimum(jnp.linspace(0.0, 1.3, NUM_STEPS + 1), 1.0)

    def one(key):
        k_init, k_run = jax.random.split(key)
        x = jax.random.normal(k_init, (64, 2))
        return run_smc(
            k_run, PROBLEM, x, jnp.zeros(64), grid=GRID, diffusion=DIFFUSION, schedule=lambdas
        ).log_normalizer

    log_z_hat = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(9), 256)))
    log_z_disc = MODEL.discretized_log_normalizer(GRID, DIFFUSION, CENTER, PRECISION, ALPHA)
    assert abs(ratio_z(log_z_hat, log_z_disc)) < Z_GATE


# ----------------------------------------------------------------------------------------------
# A user's own parts, and the resampling options, keep Ẑ unbiased
# ----------------------------------------------------------------------------------------------
INFLATION = 1.3


def inflated_bootstrap(rng_key, step):
    """A user's proposal, written outside the library: the model's transition with its noise
    inflated by ``c``, ``q = N(μ, c²σ²I)``, so ``log p − log q = d·log c − ‖z‖²(c² − 1)/2`` at
    ``x' = μ + cσz`` (``d`` the event size)."""
    z = jax.random.normal(rng_key, step.x.shape, step.mean.dtype)
    sq = jnp.sum(z * z, axis=tuple(range(1, z.ndim)))
    d = np.prod(step.x.shape[1:])
    log_p_minus_q = d * np.log(INFLATION) - 0.5 * sq * (INFLATION**2 - 1.0)
    return step.mean + INFLATION * step.std * z, log_p_minus_q


class HalfTwist(Difference):
    """A user's potential: the difference potential of half the log-twist ``s/2`` (the final
    correction ``s_T − Ψ_{T−1}`` is inherited), a valid but different Feynman–Kac model."""

    def init(self, log_twist):
        return super().init(0.5 * log_twist)

    def update(self, path, log_twist, final):
        return super().update(path, log_twist if final else 0.5 * log_twist, final)


def _replicated_log_z(num_runs=256, seed=31, **kwargs):
    keys = jax.random.split(jax.random.key(seed), num_runs)
    return np.asarray(jax.jit(jax.vmap(lambda k: run(k, **kwargs).log_normalizer))(keys))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"proposal": inflated_bootstrap},
        {"potential": HalfTwist()},
        {"proposal": inflated_bootstrap, "potential": HalfTwist(), "ess_threshold": 1.0},
    ],
    ids=["own_proposal", "own_potential", "both"],
)
def test_a_users_own_proposal_and_potential_are_unbiased(kwargs):
    """``E[Ẑ/Z_disc] = 1`` for parts written outside the library (the README example), and
    the gate rejects ``Z_disc`` shifted by the 5% of the continuous-time ``Z``."""
    log_z_hat = _replicated_log_z(**kwargs)
    log_z_disc = MODEL.discretized_log_normalizer(GRID, DIFFUSION, CENTER, PRECISION, ALPHA)
    assert np.std(log_z_hat) < 0.7
    assert abs(ratio_z(log_z_hat, log_z_disc)) < Z_GATE
    assert abs(ratio_z(log_z_hat, log_z_disc + 0.1)) > Z_GATE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resample_every": 3, "ess_threshold": 1.0},
        {"num_resampled": 16, "ess_threshold": 0.8},
        {"num_resampled": 63, "resample_every": 2, "ess_threshold": 1.0},
    ],
    ids=["every_3", "partial_16", "partial_every_2"],
)
def test_resampling_every_f_steps_and_partial_resampling_are_unbiased(kwargs):
    """Resampling only every ``F`` steps, and partial resampling of the ``M`` lightest and
    heaviest particles, keep ``E[Ẑ/Z_disc] = 1``; the history shows when each resampled."""
    log_z_hat = _replicated_log_z(**kwargs)
    log_z_disc = MODEL.discretized_log_normalizer(GRID, DIFFUSION, CENTER, PRECISION, ALPHA)
    assert abs(ratio_z(log_z_hat, log_z_disc)) < Z_GATE
    res = jitted_run(**kwargs)(jax.random.key(3))
    resampled = np.asarray(res.info.resampled)
    every = kwargs.get("resample_every", 1)
    assert not resampled[np.arange(NUM_STEPS) % every != 0].any()
    assert resampled.any()
    np.testing.assert_allclose(jax.nn.logsumexp(res.log_weights), 0.0, atol=1e-5)


def test_deprecated_part_names_are_the_objects():
    """``proposal="bootstrap"``, ``potential="max"`` (0.1) warn and give the objects' result."""
    key = jax.random.key(2)
    new = jitted_run(proposal=Bootstrap(), potential=Max())(key)
    with pytest.warns(DeprecationWarning, match="proposal="):
        old = jitted_run(proposal="bootstrap", potential="max")(key)
    np.testing.assert_array_equal(new.samples, old.samples)
    np.testing.assert_array_equal(new.log_weights, old.log_weights)


def test_nfe_per_step_is_reported():
    """``info.proposal_info`` holds the model evaluations of each step: ``N`` per step and none
    at the last one (the exact reward); with the ``N`` at ``t_0`` they sum to ``nfe``."""
    res = jitted_run()(jax.random.key(0))
    per_step = np.asarray(res.info.proposal_info.nfe)
    np.testing.assert_array_equal(per_step, [64] * (NUM_STEPS - 1) + [0])
    assert int(res.nfe) == 64 + per_step.sum()
