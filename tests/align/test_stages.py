"""Initial stages (``psijax.align.stages``, ``.chains``, ``.tempered``) against exact answers.

**Gaussian π_init.** ``LinearGaussianFlow`` is an exact model, so its Tweedie prediction at
``t = 1`` is the constant ``E[x0] = μ`` and its ``π_init`` is the prior (docs/algorithms.md §3). The
tests use instead the *straight* (perfectly reflowed) flow of the same data ``N(μ, LLᵀ)``:
``x_t = (1 − t)(μ + L x1) + t x1``, velocity ``v = x1 − μ − L x1`` at ``x1 = M_t⁻¹(x − (1 − t)μ)``,
``M_t = (1 − t)L + tI``. Its one-step Tweedie ``x̂0(x, 1) = μ + Lx`` is affine and pushes
``N(0, I)`` to the data, like a distilled model's. With ``r(y) = −½(y − c)ᵀA(y − c)``,
``π_init = N(m, P⁻¹)``, ``P = I + LᵀAL/α``, ``m = P⁻¹LᵀA(c − μ)/α``, and ``Z_init`` is a Gaussian
integral (float64 NumPy, checked against :func:`gaussian_tilt`).

**Six modes through a flow map.** ``π_init ∝ N·exp(r(F(x))/α)`` with ``F`` a flow map of the
exact six-mode velocity, pushed through ``F``, is ``∝ (F#N)·exp(r/α) = p*_0`` and
``Z_init = Z``. ``x0_predictor=FlowMap()`` (diffrax) took ~30 s to compile inside tempered SMC
on 2 CPU cores, so the statistical test uses a callable predictor: a 12-step RK4 flow map
(max error 0.006 over 4000 prior draws against diffrax at rtol 1e-7; mode std 0.5; over 256
independent runs no bias in occupancies, mean or ``Ẑ/Z`` was visible). The ``FlowMap`` path
itself is tested for its exact NFE on Top-K; the per-point NFE bookkeeping of the chains and of
tempered SMC with a cost that varies with ``x`` is tested with a stand-in cost function.

Gates: ``|z| < Z_GATE = 4.5`` with standard errors from independent draws (one final state per
chain) or independent replicates (tempered SMC), so correlations inside a run never enter. Each
statistical test also shows its gate rejects a wrong answer.
"""

import dataclasses
import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import psijax
import psijax.align.stages as stages_module
from psijax import metrics
from psijax.align import Chains, Custom, FlowMap, Prior, RewardProblem, Tempered, TopK
from psijax.align.chains import thinning_layout
from psijax.flows.ode import flow_map
from psijax.models.linear_gaussian import gaussian_tilt
from psijax.models.presets import quadratic_reward, toy_problem

Z_GATE = 4.5

# -- the Gaussian problem ---------------------------------------------------------------------
MU = np.array([1.0, -0.5, 0.3])
L_DATA = np.array([[0.8, 0.0, 0.0], [0.3, 0.6, 0.0], [-0.2, 0.4, 0.5]])
CENTER = np.array([2.0, 0.5, -1.0])
PRECISION = np.array([[1.0, 0.3, 0.0], [0.3, 0.8, 0.0], [0.0, 0.0, 0.5]])
ALPHA_INIT = 0.5  # problem.alpha is 1.0: passing alpha= is exercised everywhere
D = 3


def straight_velocity(x, t):
    """``x1 − μ − L x1`` with ``x1 = M_t⁻¹(x − (1 − t)μ)`` by forward substitution (``M_t`` is
    lower triangular; elementwise ops compile much faster on CPU than a linear solve)."""
    m = (1 - t) * L_DATA + t * np.eye(D)
    b = x - (1 - t) * jnp.asarray(MU, jnp.float32)
    x1 = []
    for i in range(D):
        x1.append((b[i] - sum(m[i, j] * x1[j] for j in range(i))) / m[i, i])
    x1 = jnp.stack(x1)
    return x1 - jnp.asarray(MU, jnp.float32) - jnp.asarray(L_DATA, jnp.float32) @ x1


PROBLEM = RewardProblem(straight_velocity, quadratic_reward(CENTER, PRECISION), (D,), 1.0)


@functools.partial(jax.jit, static_argnums=0)
def _rewards(problem, x):
    return jax.vmap(lambda y: problem.reward(problem.predict_x0(y, 1.0)))(x)


def r_init(problem, x, alpha):
    """``r(x̂0(x, 1))/α`` recomputed for a batch (float64 NumPy)."""
    return np.asarray(_rewards(problem, jnp.asarray(x)), np.float64) / alpha


@functools.cache
def exact_pi_init():
    """Mean, covariance and log Z_init of π_init from the affine map read off the model."""
    b0 = np.asarray(PROBLEM.predict_x0(jnp.zeros(D), 1.0), np.float64)
    jac = np.asarray(jax.jacfwd(lambda x: PROBLEM.predict_x0(x, 1.0))(jnp.zeros(D)), np.float64)
    np.testing.assert_allclose(b0, MU, atol=1e-6)  # x̂0(x, 1) = μ + Lx
    np.testing.assert_allclose(jac, L_DATA, atol=1e-6)
    b0, jac = MU, L_DATA  # the exact values (float64) of what was just read off the model
    p = np.eye(D) + jac.T @ PRECISION @ jac / ALPHA_INIT
    b = jac.T @ PRECISION @ (CENTER - b0) / ALPHA_INIT
    mean = np.linalg.solve(p, b)
    diff = b0 - CENTER
    log_z = -0.5 * np.linalg.slogdet(p)[1] - 0.5 * diff @ PRECISION @ diff / ALPHA_INIT
    log_z += 0.5 * b @ mean
    # Z_init = E_{N(μ, LLᵀ)}[exp(r/α)], the Gaussian tilt of the data (Woodbury form).
    np.testing.assert_allclose(
        log_z, gaussian_tilt(MU, L_DATA @ L_DATA.T, CENTER, PRECISION, ALPHA_INIT)[2], rtol=1e-10
    )
    return mean, np.linalg.inv(p), log_z


def projections():
    """Eigenvectors of the π_init covariance (rows): independent coordinates."""
    return np.linalg.eigh(exact_pi_init()[1])[1].T


def moment_z(x, mean, cov):
    """z-scores of mean and variance of independent Gaussian draws along :func:`projections`."""
    u = projections()
    proj, m, v = x @ u.T, u @ mean, np.einsum("kd,de,ke->k", u, cov, u)
    n = x.shape[0]
    z_mean = (proj.mean(0) - m) / np.sqrt(v / n)
    z_var = (proj.var(0, ddof=1) - v) / (v * np.sqrt(2.0 / (n - 1)))
    return z_mean, z_var


# -- chains -----------------------------------------------------------------------------------
NUM_CHAINS = 500
KERNELS = {"pcnl": psijax.pcnl, "pcn": psijax.pcn, "mala": blackjax.mala, "ula": psijax.ula}
# The kernels' own step sizes: h for pCN/pCNL, ε = h/2 for MALA and ULA (the Langevin time of
# a pCNL step h). ULA runs at a larger step so that its O(ε) bias is large against the
# standard errors.
CHAIN_STEP = {"pcnl": 0.5, "pcn": 0.5, "mala": 0.25, "ula": 0.5}
BURN_IN = {"pcnl": 80, "pcn": 120, "mala": 60, "ula": 60}
# pCNL (the method of the paper) also tunes h during its burn-in, toward acceptance 0.3.
ADAPT = {"pcnl": dict(adapt=True, target_acceptance_rate=0.3)}


def sample(stage, problem, num_particles, key):
    """``stage.sample`` under ``jit``, as NumPy."""
    run = jax.jit(lambda k: stage.sample(k, problem, num_particles))
    return jax.tree.map(np.asarray, run(key))


@functools.cache
def chain_draws(method):
    """One final state per chain (K = C, S = 1): independent draws after burn-in."""
    stage = Chains(
        kernel=KERNELS[method],
        step_size=CHAIN_STEP[method],
        num_chains=NUM_CHAINS,
        burn_in=BURN_IN[method],
        num_kept=1,
        alpha=ALPHA_INIT,
        **ADAPT.get(method, {}),
    )
    return sample(stage, PROBLEM, NUM_CHAINS, jax.random.key(11))


@pytest.mark.parametrize("method", ["pcnl", "pcn", "mala"])
def test_chains_reproduce_pi_init(method):
    """Final chain states have π_init's mean and variance along its principal axes."""
    out = chain_draws(method)
    mean, cov, _ = exact_pi_init()
    z_mean, z_var = moment_z(out.particles.astype(np.float64), mean, cov)
    assert np.all(np.abs(z_mean) < Z_GATE), z_mean
    assert np.all(np.abs(z_var) < Z_GATE), z_var
    # Non-vacuity: the prior's mean (0) is rejected by the same gate.
    z_prior, _ = moment_z(out.particles.astype(np.float64), np.zeros(D), cov)
    assert np.max(np.abs(z_prior)) > 4 * Z_GATE
    acceptance = out.info.acceptance_rate  # (C,), here one kept step each
    assert acceptance.shape == (NUM_CHAINS,) and 0.2 < acceptance.mean() < 1.0


def test_adapted_step_size():
    """pCNL adapted during burn-in: it accepts most proposals at h = 0.5 here, so the step
    tuned toward 0.3 is larger, and the kept step (at the tuned h) accepts near 0.3 on average
    over the 500 chains."""
    out = chain_draws("pcnl")
    assert 1.0 < float(out.info.step_size) < 4.0
    assert abs(out.info.acceptance_rate.mean() - 0.3) < 0.1


def test_ula_has_its_exact_step_size_bias():
    """ULA at step ``ε`` on the Gaussian ``N(m, P⁻¹)`` is the AR(1) chain
    ``x' = (I − εP)x + εPm + √(2ε)ξ``: stationary mean ``m`` (no bias), covariance
    ``(P − εP²/2)⁻¹`` (inflated). Both hold, and the unbiased covariance ``P⁻¹`` is rejected."""
    out = chain_draws("ula")
    mean, cov, _ = exact_pi_init()
    p, eps = np.linalg.inv(cov), CHAIN_STEP["ula"]
    biased = np.linalg.inv(p - eps * p @ p / 2)
    z_mean, z_var = moment_z(out.particles.astype(np.float64), mean, biased)
    assert np.all(np.abs(z_mean) < Z_GATE), z_mean
    assert np.all(np.abs(z_var) < Z_GATE), z_var
    _, z_unbiased = moment_z(out.particles.astype(np.float64), mean, cov)
    assert np.max(np.abs(z_unbiased)) > 2 * Z_GATE, z_unbiased
    assert np.all(np.isnan(out.info.acceptance_rate))


@pytest.mark.parametrize("method", ["pcnl", "pcn", "mala", "ula"])
def test_chain_log_weights_and_nfe(method):
    """``log_weights = −r_init/α_init`` (recomputed), NFE ``= C·(B + S + 1)`` for Tweedie."""
    out = chain_draws(method)
    expected = -r_init(PROBLEM, out.particles, ALPHA_INIT)
    np.testing.assert_allclose(out.log_weights, expected, rtol=1e-4, atol=1e-4)
    assert out.nfe == NUM_CHAINS * (BURN_IN[method] + 1 + 1)
    assert out.particles.dtype == np.float32 and out.log_weights.dtype == np.float32
    if method != "pcnl":
        assert out.info.step_size == CHAIN_STEP[method]


# -- thinning ---------------------------------------------------------------------------------
def test_thinning_layout_indices():
    """K = 7, C = 3, S = 5: k = (3, 2, 2), strides (1, 2, 2), the last states first."""
    chain, step = thinning_layout(7, 3, 5)
    np.testing.assert_array_equal(chain, [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(step, [4, 3, 2, 4, 2, 4, 2])
    chain, step = thinning_layout(2, 3, 5)  # fewer particles than chains
    np.testing.assert_array_equal(chain, [0, 1])
    np.testing.assert_array_equal(step, [4, 4])
    chain, step = thinning_layout(4, 1, 50)  # the default-like stride S // k
    np.testing.assert_array_equal(step, [49, 37, 25, 13])
    for k, c, s in [(15, 3, 5), (10, 5, 50), (1, 5, 50), (250, 5, 50)]:
        chain, step = thinning_layout(k, c, s)
        assert chain.size == k and len(set(zip(chain, step, strict=True))) == k
        assert np.all((step >= 0) & (step < s)) and np.all(np.diff(chain) >= 0)
    with pytest.raises(ValueError, match="num_particles.*num_chains.*num_kept"):
        thinning_layout(16, 3, 5)


def test_thinned_particles_are_the_laid_out_chain_states():
    """With the same key the chains do not depend on K: keeping all ``C·S`` states (stride 1:
    particle ``5c + 4 − s`` is chain ``c`` at kept step ``s``) and keeping 7 of them select the
    same states, at the indices of :func:`thinning_layout`. Default kernel (pCNL)."""
    stage = Chains(alpha=ALPHA_INIT, num_chains=3, burn_in=2, num_kept=5)
    run = lambda k: stage.sample(jax.random.key(5), PROBLEM, k)  # noqa: E731
    full, part = jax.tree.map(np.asarray, jax.jit(lambda: (run(15), run(7)))())
    index = lambda chain, step: 5 * chain + 4 - step  # noqa: E731
    np.testing.assert_array_equal(index(*thinning_layout(15, 3, 5)), np.arange(15))
    picked = index(*thinning_layout(7, 3, 5))
    np.testing.assert_array_equal(part.particles, full.particles[picked])
    np.testing.assert_array_equal(part.log_weights, full.log_weights[picked])
    assert len({tuple(p) for p in full.particles}) > 3  # the chains do move
    assert int(full.nfe) == int(part.nfe) == 3 * (2 + 5 + 1)


# -- tempered SMC -----------------------------------------------------------------------------
NUM_RUNS, TEMPERED_K, TEMPERED_M = 16, 400, 4


@functools.cache
def tempered_runs():
    stage = Tempered(alpha=ALPHA_INIT, num_mcmc_steps=TEMPERED_M)
    fn = lambda key: stage.sample(key, PROBLEM, TEMPERED_K)  # noqa: E731
    keys = jax.random.split(jax.random.key(21), NUM_RUNS)
    return jax.tree.map(np.asarray, jax.jit(jax.vmap(fn))(keys))


def ratio_z(log_z_hat, log_z):
    ratio = np.exp(np.asarray(log_z_hat, np.float64) - log_z)
    return (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))


def test_tempered_matches_pi_init_and_z_init():
    """Weighted moments over 16 independent runs match π_init; ``E[Ẑ_init/Z_init] = 1``.

    Weights ``W ∝ exp(log_weights + r_init/α_init)`` (the tempered particles' own weights).
    The ratio gate needs non-heavy-tailed ratios: ``sd(log Ẑ) < 0.7`` is checked first.
    """
    runs = tempered_runs()
    mean, cov, log_z = exact_pi_init()
    u = projections()
    ll = np.stack([r_init(PROBLEM, x, ALPHA_INIT) for x in runs.particles])
    w = np.exp(runs.log_weights + ll - np.max(runs.log_weights + ll, axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    proj = np.einsum("rnd,kd->rnk", runs.particles.astype(np.float64), u)
    m_r = np.einsum("rn,rnk->rk", w, proj)
    v_r = np.einsum("rn,rnk->rk", w, (proj - m_r[:, None]) ** 2)
    se = lambda a: a.std(0, ddof=1) / np.sqrt(NUM_RUNS)  # noqa: E731
    z_mean = (m_r.mean(0) - u @ mean) / se(m_r)
    z_var = (v_r.mean(0) - np.einsum("kd,de,ke->k", u, cov, u)) / se(v_r)
    assert np.all(np.abs(z_mean) < Z_GATE), z_mean
    assert np.all(np.abs(z_var) < Z_GATE), z_var
    assert np.max(np.abs(m_r.mean(0) / se(m_r))) > 4 * Z_GATE  # the prior mean is rejected

    lz = runs.info.log_normalizer
    assert np.all(runs.info.num_tempering_steps > 1) and np.all(np.isfinite(lz))
    assert np.std(lz, ddof=1) < 0.7, lz
    assert abs(ratio_z(lz, log_z)) < Z_GATE
    assert abs(ratio_z(lz, log_z + 0.1)) > Z_GATE  # a 0.1 error in log Z is detected


def test_tempered_log_weights_and_nfe():
    """``log_weights = log(K·W) − r_init/α_init``: ``mean(exp(log_weights + r_init/α)) = 1``;
    NFE ``= T·K·(M + 3) + K`` for Tweedie (T tempering steps)."""
    runs = tempered_runs()
    for x, log_w in zip(runs.particles, runs.log_weights, strict=True):
        log_kw = log_w.astype(np.float64) + r_init(PROBLEM, x, ALPHA_INIT)
        assert np.all(np.isfinite(log_kw))
        np.testing.assert_allclose(np.log(np.mean(np.exp(log_kw))), 0.0, atol=1e-3)
    steps = runs.info.num_tempering_steps
    np.testing.assert_array_equal(runs.nfe, steps * TEMPERED_K * (TEMPERED_M + 3) + TEMPERED_K)
    assert runs.info.acceptance_rate.shape == (NUM_RUNS, 1)


# -- prior and Top-K --------------------------------------------------------------------------
def test_prior_and_top_k():
    """Top-K keeps exactly the K highest-reward of its N candidates, which are the prior draws
    of the same key (in decreasing reward); both get log-weights 0; NFE ``N`` and 0."""
    key, n, k = jax.random.key(8), 64, 8

    @jax.jit
    def run():
        return (
            Prior().sample(key, PROBLEM, n),
            TopK(num_candidates=n).sample(key, PROBLEM, k),
            TopK().sample(key, PROBLEM, k).nfe,
        )

    prior, top, default_nfe = jax.tree.map(np.asarray, run())
    assert prior.particles.shape == (n, D) and int(prior.nfe) == 0
    assert float(prior.info.log_normalizer) == 0.0
    np.testing.assert_array_equal(prior.log_weights, np.zeros(n))
    best = np.argsort(-r_init(PROBLEM, prior.particles, 1.0))[:k]
    np.testing.assert_array_equal(top.particles, prior.particles[best])
    np.testing.assert_array_equal(top.log_weights, np.zeros(k))
    assert int(top.nfe) == n and np.isnan(top.info.log_normalizer)
    assert int(default_nfe) == 4 * k


# -- six modes through a flow map -------------------------------------------------------------
TOY = toy_problem("six_modes_quadratic")
_MEANS = jnp.asarray(TOY.data.means, jnp.float32)
_LOG_W = jnp.log(jnp.asarray(TOY.data.weights, jnp.float32))
_VAR = 0.25  # every component is N(μ_k, 0.5² I)


def six_mode_velocity(x, t):
    """The exact velocity of :func:`six_modes` for isotropic components (cheap to compile):
    ``Σ_k π_k(−μ_k + (t − (1 − t)σ²)/S·(x − (1 − t)μ_k))``, ``S = (1 − t)²σ² + t²``."""
    s = (1 - t) ** 2 * _VAR + t**2
    diff = x - (1 - t) * _MEANS
    resp = jax.nn.softmax(_LOG_W - 0.5 * jnp.sum(diff**2, axis=1) / s)
    return resp @ (-_MEANS + (t - (1 - t) * _VAR) / s * diff)


def rk4_flow_map(velocity_fn, x, t, num_steps=12):
    """``Φ_t(x)`` by classical RK4 on a uniform grid from ``t`` to 0."""
    h = -t / num_steps

    def step(y, i):
        s = t + i * h
        k1 = velocity_fn(y, s)
        k2 = velocity_fn(y + 0.5 * h * k1, s + 0.5 * h)
        k3 = velocity_fn(y + 0.5 * h * k2, s + 0.5 * h)
        k4 = velocity_fn(y + h * k3, s + h)
        return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

    return jax.lax.scan(step, x, jnp.arange(num_steps, dtype=jnp.float32))[0]


def test_six_mode_velocity_is_the_mixture_velocity():
    x = 3.0 * jax.random.normal(jax.random.key(0), (64, 2))
    t = jnp.repeat(jnp.array([0.0, 0.3, 0.8, 1.0]), 16)
    lean, exact = jax.jit(
        lambda: (jax.vmap(six_mode_velocity)(x, t), jax.vmap(TOY.data.velocity)(x, t))
    )()
    np.testing.assert_allclose(lean, exact, atol=1e-4)


def test_tempered_through_flow_map_gives_tilted_mixture():
    """π_init with a flow-map predictor, pushed through it, is ``p*_0``: weighted mode
    occupancies and mean match the exact tilted mixture and ``E[Ẑ_init/Z] = 1``, over 16
    independent runs of 256 particles."""
    problem = RewardProblem(six_mode_velocity, TOY.reward_fn, (2,), TOY.alpha, rk4_flow_map)

    def one(key):
        out = Tempered(num_mcmc_steps=3).sample(key, problem, 256)
        x0 = jax.vmap(lambda x: rk4_flow_map(six_mode_velocity, x, 1.0))(out.particles)
        log_w = out.log_weights + jax.vmap(problem.reward)(x0) / TOY.alpha
        return x0, jax.nn.softmax(log_w), out.info.log_normalizer

    keys = jax.random.split(jax.random.key(4), NUM_RUNS)
    x0, w, lz = jax.tree.map(np.asarray, jax.jit(jax.vmap(one))(keys))
    modes = np.asarray(TOY.data.means)
    occ = np.stack(
        [metrics.mode_occupancy(x, modes, weights=v) for x, v in zip(x0, w, strict=True)]
    )
    exact = np.asarray(TOY.exact_target.weights, np.float64)
    main = [0, 1, 5]  # 0.74, 0.125, 0.125; the far modes 2, 3, 4 hold 0.008 together
    se = occ[:, main].std(0, ddof=1) / np.sqrt(NUM_RUNS)
    z_occ = (occ[:, main].mean(0) - exact[main]) / se
    assert np.all(np.abs(z_occ) < Z_GATE), z_occ
    assert np.all(np.abs((1 / 6 - exact[main]) / se) > Z_GATE)  # the untilted data fail
    assert occ[:, [2, 3, 4]].sum(1).mean() < 0.03
    m_r = np.einsum("rn,rnd->rd", w, x0)
    z_mean = (m_r.mean(0) - np.asarray(TOY.exact_target.mean())) / (
        m_r.std(0, ddof=1) / np.sqrt(NUM_RUNS)
    )
    assert np.all(np.abs(z_mean) < Z_GATE), z_mean
    assert np.std(lz, ddof=1) < 0.7
    assert abs(ratio_z(lz, float(TOY.log_Z))) < Z_GATE
    assert abs(ratio_z(lz, float(TOY.log_Z) + 0.25)) > Z_GATE  # sd(log Ẑ) ≈ 0.08 here


def test_flow_map_predictor_nfe_is_exact():
    """``x0_predictor=FlowMap()``: Top-K ranks by ``r(Φ_1(x))`` and its NFE is the sum of the
    flow map's exact per-sample counts at the candidates."""
    problem = RewardProblem(six_mode_velocity, TOY.reward_fn, (2,), TOY.alpha, FlowMap())
    key, n, k = jax.random.key(2), 8, 3

    @jax.jit
    def run():
        top = TopK(num_candidates=n).sample(key, problem, k)
        candidates = Prior().sample(key, problem, n).particles
        x0, nfe = jax.vmap(lambda x: flow_map(six_mode_velocity, x, 1.0))(candidates)
        return top, candidates, jax.vmap(problem.reward)(x0), nfe

    top, candidates, rewards, nfe = jax.tree.map(np.asarray, run())
    np.testing.assert_array_equal(top.particles, candidates[np.argsort(-rewards)[:k]])
    assert int(top.nfe) == int(nfe.sum()) and nfe.min() > n  # many evaluations per solve


# -- exact NFE bookkeeping --------------------------------------------------------------------
def _counting_reward(problem, calls):
    """A stand-in for ``stages.reward_with_nfe``: ``r_init`` costs ``1 + (⌊4|x_0|⌋ mod 3)``
    (varies with x, like a flow-map solve); every evaluation made adds its cost and 1 to
    ``calls``."""

    def cost(x):
        return (1 + jnp.floor(4 * jnp.abs(x[0])).astype(jnp.int32) % 3).astype(jnp.int32)

    def record(c):
        calls["nfe"] += int(c)
        calls["n"] += 1

    def reward_and_nfe(x):
        jax.debug.callback(record, cost(x))
        return problem.reward(problem.predict_x0(x, 1.0)), cost(x)

    return reward_and_nfe, lambda x: cost(jax.lax.stop_gradient(x))


def _tweedie(velocity_fn, x, t):
    return x - t * velocity_fn(x, t)


@pytest.mark.parametrize(
    "stage, num_evaluations",
    [
        # BlackJAX's MALA as it is: its info has no proposal; C = 1 is raised to ⌈6/4⌉ = 2.
        (
            Chains(
                kernel=blackjax.mala,
                step_size=0.25,
                num_chains=1,
                burn_in=3,
                num_kept=4,
                on_too_few_states="more_chains",
                alpha=ALPHA_INIT,
            ),
            2 * (3 + 4 + 1),
        ),
        (Chains(num_chains=2, burn_in=3, num_kept=4, alpha=ALPHA_INIT), 2 * (3 + 4 + 1)),
        (Tempered(num_mcmc_steps=2, alpha=ALPHA_INIT), None),
    ],
    ids=["mala", "pcnl", "tempered"],
)
def test_nfe_counts_every_evaluation(monkeypatch, stage, num_evaluations):
    """The reported NFE is the sum of the per-evaluation cost over the evaluations actually
    made (counted by a host callback in ``r_init``), for a predictor whose cost varies with
    ``x``: exact for BlackJAX MALA's proposals (found by the same kernel step on a flat, high
    log-density, since its info omits them), for pCNL (from its info) and for the tempered
    SMC's resampling/mutation bookkeeping. The number of evaluations is the documented one:
    ``C·(B + S + 1)``, ``T·K·(M + 3) + K``."""
    calls = {"nfe": 0, "n": 0}
    monkeypatch.setattr(
        stages_module, "reward_with_nfe", lambda problem: _counting_reward(problem, calls)
    )
    problem = dataclasses.replace(PROBLEM, x0_predictor=Custom(_tweedie))  # a varying cost
    out = jax.jit(lambda key: stage.sample(key, problem, 6))(jax.random.key(1))
    jax.effects_barrier()
    if num_evaluations is None:
        num_evaluations = int(out.info.num_tempering_steps) * 6 * (2 + 3) + 6
    else:
        assert out.info.acceptance_rate.shape == (2,)
    assert calls["n"] == num_evaluations
    assert int(out.nfe) == calls["nfe"] > calls["n"]


def test_evaluations_per_step():
    """A kernel that evaluates ``e`` times per step (declared): NFE ``C·(1 + (B + S)·e)``
    with Tweedie; with a varying cost it is refused (where it evaluates is not known)."""
    stage = Chains(num_chains=2, burn_in=3, num_kept=4, evaluations_per_step=3)
    out = jax.jit(lambda key: stage.sample(key, PROBLEM, 4))(jax.random.key(0))
    assert int(out.nfe) == 2 * (1 + 7 * 3)
    problem = dataclasses.replace(PROBLEM, x0_predictor=Custom(_tweedie))
    with pytest.raises(ValueError, match="evaluations_per_step"):
        stage.sample(jax.random.key(0), problem, 4)


# -- argument errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, num_particles, error, match",
    [
        (lambda: Prior(), 0, ValueError, "num_particles"),
        (lambda: Prior(), 2.0, TypeError, "num_particles"),
        (lambda: Chains(num_chains=0), 4, ValueError, "num_chains"),
        (lambda: Chains(burn_in=-1), 4, ValueError, "burn_in"),
        (lambda: Chains(num_kept=0), 4, ValueError, "num_kept"),
        (lambda: Chains(alpha=0.0), 4, ValueError, "alpha"),
        (lambda: Chains(alpha=float("inf")), 4, ValueError, "alpha"),
        (lambda: Chains(alpha="big"), 4, TypeError, "alpha"),
        (lambda: Chains(step_size=4.0), 4, ValueError, r"step_size.*\(0.0, 4.0\)"),
        (lambda: Chains(kernel=psijax.pcn, step_size=0.0), 4, ValueError, "step_size"),
        (lambda: Tempered(step_size=4.0), 4, ValueError, "step_size"),
        (lambda: Chains(kernel=blackjax.mala, step_size=-1.0), 4, ValueError, "step_size"),
        (lambda: Chains(kernel=psijax.ula, step_size=0.0), 4, ValueError, "step_size"),
        (lambda: Chains(kernel="mala"), 4, TypeError, "kernel"),
        (lambda: Tempered(target_ess=1.0), 4, ValueError, "target_ess"),
        (lambda: Tempered(num_mcmc_steps=0), 4, ValueError, "num_mcmc_steps"),
        (lambda: TopK(num_candidates=3), 4, ValueError, "num_candidates"),
        (lambda: Chains(kernel=blackjax.mala, adapt=True), 4, ValueError, "adapt"),
        (lambda: Chains(adapt=True, burn_in=0), 4, ValueError, "burn_in"),
        (lambda: Chains(adapt=True, target_acceptance_rate=1.5), 4, ValueError, "target_acc"),
        (lambda: Chains(on_too_few_states="duplicate"), 4, ValueError, "on_too_few_states"),
        (lambda: Chains(), 300, ValueError, "num_particles.*num_chains.*num_kept"),
        (lambda: Chains(predictor=3), 4, TypeError, "predictor"),
    ],
)
def test_invalid_arguments(make, num_particles, error, match):
    """Each bad field or size is a ``TypeError`` (wrong kind) or ``ValueError`` (out of range)
    naming it, raised when the stage is built or before it samples."""
    with pytest.raises(error, match=match):
        make().sample(jax.random.key(0), PROBLEM, num_particles)


def test_tempered_with_the_diffrax_flow_map_predictor():
    """The same check with the library's ``x0_predictor="flow_map"`` (diffrax Tsit5), one run
    of 512 particles (its compilation inside the tempered loop costs ~30 s, so one run): the
    pushed-forward weighted particles hold the exact mode weights within ``4.5`` standard
    errors (binomial at the ESS, doubled for the particles' correlation), and ``log Ẑ_init`` is
    within 0.3 of ``log Z`` (5× the spread measured over the RK4 runs above at 256 particles)."""
    options = {"rtol": 1e-3, "atol": 1e-3}
    problem = RewardProblem(six_mode_velocity, TOY.reward_fn, (2,), TOY.alpha, FlowMap(**options))

    @jax.jit
    def run(key):
        out = Tempered(num_mcmc_steps=2).sample(key, problem, 512)
        x0, nfe = jax.vmap(lambda x: flow_map(six_mode_velocity, x, 1.0, **options))(out.particles)
        log_w = out.log_weights + jax.vmap(problem.reward)(x0) / TOY.alpha
        return x0, jax.nn.softmax(log_w), out.info.log_normalizer, out.nfe, nfe

    x0, w, log_z, nfe, solve_nfe = run(jax.random.key(6))
    occ = np.asarray(metrics.mode_occupancy(x0, TOY.data.means, weights=w), np.float64)
    exact = np.asarray(TOY.exact_target.weights, np.float64)
    ess = 1.0 / np.sum(np.asarray(w, np.float64) ** 2)
    se = 2.0 * np.sqrt(exact * (1.0 - exact) / ess)
    main = [0, 1, 5]
    assert np.all(np.abs(occ[main] - exact[main]) < Z_GATE * se[main]), (occ, exact, ess)
    assert abs(float(log_z) - float(TOY.log_Z)) < 0.3
    # Every evaluation of the predictor is an ODE solve: the NFE is many times the count of
    # evaluations (about 10 velocity calls per solve at these tolerances).
    assert int(nfe) > 5 * 512 and int(np.min(solve_nfe)) > 5
