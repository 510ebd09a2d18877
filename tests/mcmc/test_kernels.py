"""Properties shared by the kernels pCN, pCNL and ULA, each test parametrized over the kernels
it applies to. Kernel-specific checks (explicit proposal laws, ratios, biases) are in
``test_pcn.py``, ``test_pcnl.py`` and ``test_ula.py``.

Statistical conventions (independent final states, gate ``|z| < 4.5``, power checks) are those of
:mod:`tests.mcmc.helpers`. The exactness tests apply to the Metropolis-corrected kernels (pCN,
pCNL) only: ULA is biased at any finite step (its bias is tested in ``test_ula.py``).
"""

import dataclasses
import math
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import psijax
from psijax.mcmc.pcnl import clip_drift
from tests.mcmc.helpers import (
    NG_PRIOR_MOMENTS,
    PYTREE_TARGET,
    TRUNC_MEAN,
    TRUNC_VAR,
    Z_GATE,
    ConjugateGaussian,
    cn_coefficients,
    expectation_z,
    flatten_pytree,
    gaussian_moment_z,
    make_conjugate,
    nan_gradient,
    nan_value,
    ng_logdensity,
    ng_quadrature_moments,
    ng_statistics,
    posinf_value,
    pytree_logdensity,
    random_unit_vectors,
    run_chains,
    std_normal,
    unflatten_pytree,
)


# ----------------------------------------------------------------------------------------------
# Explicit flat MH log-ratios of one step on the pytree target (float64, batched over rows)
# ----------------------------------------------------------------------------------------------
def _pytree_phi(z):
    t = PYTREE_TARGET
    return -0.5 * np.sum((z @ t.directions.T - t.observations) ** 2, -1) / t.noise_sd**2


def _pytree_pcn_log_ratio(x, xp, h):
    """pCN: Φ(x') − Φ(x) (the Gaussian parts of the MH ratio cancel)."""
    return _pytree_phi(xp) - _pytree_phi(x)


def _pytree_pcnl_log_ratio(x, xp, h):
    """pCNL: log π(x') + log q(x|x') − log π(x) − log q(x'|x) with
    ``q(b|a) = N(b; ρa + β(√h/2)∇Φ(a), β²I)``."""
    t = PYTREE_TARGET
    rho, beta = cn_coefficients(h)
    c = 0.5 * math.sqrt(h)
    a_mat, y, s2 = t.directions, t.observations, t.noise_sd**2

    def log_pi(z):
        return -0.5 * np.sum(z**2, -1) + _pytree_phi(z)

    def grad_phi(z):
        return -((z @ a_mat.T - y) @ a_mat) / s2

    def log_q(b, a):
        return -0.5 * np.sum((b - rho * a - beta * c * grad_phi(a)) ** 2, -1) / beta**2

    return log_pi(xp) + log_q(x, xp) - log_pi(x) - log_q(xp, x)


# ----------------------------------------------------------------------------------------------
# Kernel-specific settings
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Kernel:
    """A kernel module and its settings in the shared tests; ``None``: the test does not apply."""

    module: object
    # Metropolis-corrected, so the chains sample π exactly.
    exact: bool
    # Conjugate posterior (h = 0.5): number of steps, window of the late mean acceptance.
    conjugate: tuple[int, tuple[float, float]] | None
    # Non-Gaussian 2D target: step size, number of steps.
    non_gaussian: tuple[float, int] | None
    # Pytree conjugate target (h = 0.5): number of steps.
    pytree_steps: int | None
    # One step on the pytree target: step size, explicit flat log-ratio(x, x', h).
    pytree_ratio: tuple[float, Callable] | None
    # Non-finite log-densities: number of chains, of steps, step size, init key, run seed.
    nonfinite: tuple[int, int, float, int, int]
    # Expected is_accepted for the traced step sizes (0.5, 0, −1, NaN, inf); None: either.
    traced_accepted: tuple
    # build_kernel arguments compared jitted vs eager, and the number of keys for each.
    jit_builds: tuple
    jit_keys: int


KERNELS = {
    "pcn": Kernel(
        module=psijax.pcn,
        exact=True,
        # 50 steps: with 1e5 chains the moments are converged after 20 steps (acceptance
        # ≈ 0.55, ρ = 0.6); the likelihood part of the target is the same in every dimension.
        conjugate=(50, (0.4, 0.8)),
        # h = 1: acceptance ≈ 0.47; with 40000 chains the moments are converged at 600 steps.
        non_gaussian=(1.0, 600),
        pytree_steps=50,
        pytree_ratio=(1.0, _pytree_pcn_log_ratio),
        nonfinite=(1000, 150, 1.0, 8, 9),
        # h = 0 gives ρ = 1, β = 0: the proposal is x itself, whether accepted or not.
        traced_accepted=(True, None, False, False, False),
        jit_builds=((),),
        jit_keys=8,
    ),
    "pcnl": Kernel(
        module=psijax.pcnl,
        exact=True,
        # 30 steps: with 1e5 chains the moments are already converged after 10 steps
        # (acceptance ≈ 0.82, ρ = 0.6); the likelihood part is the same in every dimension.
        conjugate=(30, (0.6, 0.95)),
        # h = 2: acceptance ≈ 0.92; 400 steps is ≥ 2× what the moments need to converge. At
        # this step the unadjusted proposal (always accepted) is biased enough to fail the gate
        # (z ≈ 6 on E[x1]), so the test depends on the Metropolis correction; at h = 1 it would
        # not.
        non_gaussian=(2.0, 400),
        pytree_steps=40,
        pytree_ratio=(2.0, _pytree_pcnl_log_ratio),
        nonfinite=(1000, 150, 1.0, 8, 9),
        # An invalid h makes the proposal non-finite: rejected.
        traced_accepted=(True, False, False, False, False),
        jit_builds=((None,), (clip_drift(0.3),)),  # gradient drift and a clipped drift
        jit_keys=6,
    ),
    "ula": Kernel(
        module=psijax.ula,
        exact=False,
        conjugate=None,
        non_gaussian=None,
        pytree_steps=None,
        pytree_ratio=None,
        nonfinite=(500, 100, 0.5, 4, 5),
        # h = 0 proposes x itself, which is finite and so taken; h < 0 gives √(2h) = NaN and
        # h = NaN, inf non-finite proposals, which are refused.
        traced_accepted=(True, True, False, False, False),
        jit_builds=((),),
        jit_keys=4,
    ),
}


def kernels_with(field):
    """Names of the kernels to which the test using settings ``field`` applies."""
    return [name for name, k in KERNELS.items() if getattr(k, field) not in (None, False)]


# ----------------------------------------------------------------------------------------------
# Exactness on a conjugate Gaussian posterior
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", kernels_with("conjugate"))
@pytest.mark.parametrize(
    "dim, num_chains", [(1, 2000), (100, 2000), (10_000, 400)], ids=["d1", "d100", "d10000"]
)
def test_conjugate_posterior_moments(dim, num_chains, name):
    """The kernel (h = 0.5) reproduces the exact posterior moments of projections of a
    conjugate Gaussian, along the likelihood directions and along random directions, in any
    dimension."""
    num_steps, (acc_low, acc_high) = KERNELS[name].conjugate
    target = make_conjugate(dim)
    u = np.concatenate([target.directions, random_unit_vectors(dim, 2, seed=dim)])
    mean, var = target.projection_moments(u)

    x0 = jax.random.normal(jax.random.key(1), (num_chains, dim))
    algorithm = KERNELS[name].module(target.logdensity, 0.5)
    states, acceptance = run_chains(algorithm, x0, num_steps, seed=2)
    assert acc_low < float(jnp.mean(acceptance[-10:])) < acc_high  # the chains do move

    proj = np.asarray(states.position, np.float64) @ u.T
    assert np.all(np.isfinite(proj))
    z_mean, z_var = gaussian_moment_z(proj, mean, var)
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var

    # Power check: the same gate rejects the posterior of the model with the noise sd doubled
    # (same data). It differs along the likelihood directions only.
    k = target.directions.shape[0]
    wrong = ConjugateGaussian(target.directions, target.observations, 2 * target.noise_sd)
    wrong_mean, wrong_var = wrong.projection_moments(target.directions)
    wz_mean, wz_var = gaussian_moment_z(proj[:, :k], wrong_mean, wrong_var)
    assert max(np.max(np.abs(wz_mean)), np.max(np.abs(wz_var))) > Z_GATE


# ----------------------------------------------------------------------------------------------
# Non-Gaussian 2D target, moments by quadrature
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", kernels_with("non_gaussian"))
def test_non_gaussian_2d_moments(name):
    """The kernel reproduces the first and second moments of a bimodal, correlated 2D target
    (quadrature reference), which needs the chains to move mass between the two modes."""
    step_size, num_steps = KERNELS[name].non_gaussian
    expected = ng_quadrature_moments()
    x0 = jax.random.normal(jax.random.key(3), (4000, 2))
    algorithm = KERNELS[name].module(ng_logdensity, step_size)
    states, _ = run_chains(algorithm, x0, num_steps, seed=4)
    stats = ng_statistics(states.position)
    z = expectation_z(stats, expected)
    assert np.max(np.abs(z)) < Z_GATE, z
    # Power check: the prior moments (0, 0, 1, 1, 0) are rejected by the same gate.
    assert np.max(np.abs(expectation_z(stats, NG_PRIOR_MOMENTS))) > Z_GATE


# ----------------------------------------------------------------------------------------------
# NaN / inf handling
# ----------------------------------------------------------------------------------------------
NONFINITE_CASES = [
    ("pcn", nan_value),
    ("pcn", posinf_value),
    ("pcnl", nan_value),
    ("pcnl", posinf_value),
    ("pcnl", nan_gradient),
    ("ula", nan_value),
    ("ula", nan_gradient),
]


@pytest.mark.parametrize(
    "name, logdensity",
    NONFINITE_CASES,
    ids=[f"{name}-{fn.__name__}" for name, fn in NONFINITE_CASES],
)
def test_nonfinite_proposals_are_rejected(name, logdensity):
    """A proposal whose log-density is NaN/+inf or whose gradient is NaN (for the kernels that
    use it) is rejected: no chain ever holds a non-finite value, the acceptance rate is never
    NaN and is 0 for such proposals, and no chain enters the invalid region x0 > 1.

    Metropolis-corrected kernels: rejection makes the invalid region a zero-density region, so
    the chains sample N(0, I) truncated to x0 ≤ 1 (checked against the truncated-normal
    moments). ULA: every finite proposal is accepted with acceptance_rate exactly 1, so a step
    either moves to the proposal or, refused, keeps the previous position."""
    kernel = KERNELS[name]
    num_chains, num_steps, step_size, init_key, seed = kernel.nonfinite
    x0 = jax.random.normal(jax.random.key(init_key), (num_chains, 2))
    x0 = x0.at[:, 0].set(-jnp.abs(x0[:, 0]))  # valid starting points
    algorithm = kernel.module(logdensity, step_size)
    states, info = run_chains(algorithm, x0, num_steps, seed=seed, record=True)

    for leaf in jax.tree.leaves(states):  # position, log-density (and gradient)
        assert np.all(np.isfinite(np.asarray(leaf)))
    pos = np.asarray(states.position)
    assert np.all(pos[..., 0] <= 1.0)
    acc = np.asarray(info.acceptance_rate)
    assert not np.any(np.isnan(acc))

    prop = info.proposal
    finite = np.isfinite(np.asarray(prop.logdensity)) & np.all(
        np.isfinite(np.asarray(prop.position)), axis=-1
    )
    if hasattr(prop, "logdensity_grad"):
        finite &= np.all(np.isfinite(np.asarray(prop.logdensity_grad)), axis=-1)
    bad = ~finite
    assert bad.sum() > 1000  # the invalid region is actually proposed into
    assert not np.any(np.asarray(info.is_accepted)[bad])
    assert np.all(acc[bad] == 0.0)

    if kernel.exact:
        final = pos[-1].astype(np.float64)
        z = expectation_z(
            np.stack([final[:, 0], (final[:, 0] - TRUNC_MEAN) ** 2], axis=1),
            np.array([TRUNC_MEAN, TRUNC_VAR]),
        )
        assert np.max(np.abs(z)) < Z_GATE, z
        z_mean, z_var = gaussian_moment_z(final[:, 1:], 0.0, 1.0)  # x1: untouched N(0, 1)
        assert abs(z_mean[0]) < Z_GATE and abs(z_var[0]) < Z_GATE
        # Power check: the untruncated mean 0 of x0 is rejected.
        assert abs(expectation_z(final[:, :1], np.zeros(1))[0]) > Z_GATE
    else:
        np.testing.assert_array_equal(acc, finite.astype(acc.dtype))
        np.testing.assert_array_equal(np.asarray(info.is_accepted), finite)
        # Accepted steps move to the proposal, refused steps keep the previous position.
        prev = np.concatenate([np.asarray(x0)[None], pos[:-1]])
        np.testing.assert_allclose(
            pos[finite], np.asarray(prop.position)[finite], rtol=1e-6, atol=1e-6
        )
        np.testing.assert_array_equal(pos[~finite], prev[~finite])


# ----------------------------------------------------------------------------------------------
# Step-size validation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize(
    "step_size",
    [0.0, -1.0, -0.1, float("nan"), float("inf"), np.float32(0.0), jnp.asarray(-1.0)],
    ids=["zero", "negative", "small_negative", "nan", "inf", "np_zero", "jnp_negative"],
)
def test_invalid_step_size_raises(step_size, name):
    """A concrete step size that is not finite and > 0 raises ValueError naming `step_size`,
    both in the top-level API and when the kernel is called eagerly."""
    module = KERNELS[name].module
    with pytest.raises(ValueError, match="step_size"):
        module(std_normal, step_size)
    state = module.init(jnp.zeros(3), std_normal)
    with pytest.raises(ValueError, match="step_size"):
        module.build_kernel()(jax.random.key(0), state, std_normal, step_size)


@pytest.mark.parametrize("name", list(KERNELS))
def test_string_step_size_raises_type_error(name):
    """A non-numeric step size raises TypeError."""
    module = KERNELS[name].module
    with pytest.raises(TypeError, match="step_size"):
        module(std_normal, "0.5")
    state = module.init(jnp.zeros(3), std_normal)
    with pytest.raises(TypeError, match="step_size"):
        module.build_kernel()(jax.random.key(0), state, std_normal, "0.5")


@pytest.mark.parametrize("name", list(KERNELS))
def test_traced_step_size_does_not_raise(name):
    """A traced step size is not checked (it cannot be) and does not raise; a valid one moves
    the chain, an invalid one (0, −1, NaN, inf) leaves the state where it was, finite (a
    non-finite proposal is rejected; see ``traced_accepted`` for what each kernel does at 0)."""
    module = KERNELS[name].module
    step_sizes = jnp.array([0.5, 0.0, -1.0, jnp.nan, jnp.inf])
    x = jnp.array([0.3, -0.2, 0.1])
    state = module.init(x, std_normal)
    kernel = module.build_kernel()

    @jax.jit
    @jax.vmap
    def step(h):  # top-level API built inside jit (h traced) and the bare kernel
        key = jax.random.key(0)
        return module(std_normal, h).step(key, state), kernel(key, state, std_normal, h)

    expected = KERNELS[name].traced_accepted
    checked = [i for i, e in enumerate(expected) if e is not None]
    for new_state, info in step(step_sizes):
        assert np.all(np.isfinite(np.asarray(new_state.position)))
        assert np.all(np.isfinite(np.asarray(new_state.logdensity)))
        assert not np.any(np.isnan(np.asarray(info.acceptance_rate)))
        accepted = np.asarray(info.is_accepted)
        np.testing.assert_array_equal(accepted[checked], np.array(expected)[checked])
        assert not np.allclose(new_state.position[0], x)
        np.testing.assert_array_equal(new_state.position[1:], np.broadcast_to(x, (4, 3)))


# ----------------------------------------------------------------------------------------------
# Pytree positions
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", kernels_with("pytree_steps"))
def test_pytree_position_moments(name):
    """On a dict position, the kernel samples the same law as the flattened target: exact
    projection moments of the conjugate posterior (z-gates), and states keep the pytree
    structure."""
    n = 2000
    flat0 = jax.random.normal(jax.random.key(12), (n, 7))
    pos0 = unflatten_pytree(flat0)
    algorithm = KERNELS[name].module(pytree_logdensity, 0.5)
    states, _ = run_chains(algorithm, pos0, KERNELS[name].pytree_steps, seed=13)
    assert jax.tree.structure(states.position) == jax.tree.structure(pos0)
    if hasattr(states, "logdensity_grad"):
        assert states.logdensity_grad["b"].shape == (n, 2, 2)

    flat = np.asarray(jax.vmap(flatten_pytree)(states.position), np.float64)
    u = np.concatenate([PYTREE_TARGET.directions, random_unit_vectors(7, 2, seed=14)])
    mean, var = PYTREE_TARGET.projection_moments(u)
    z_mean, z_var = gaussian_moment_z(flat @ u.T, mean, var)
    assert np.max(np.abs(z_mean)) < Z_GATE, z_mean
    assert np.max(np.abs(z_var)) < Z_GATE, z_var
    prior_z = gaussian_moment_z(flat @ PYTREE_TARGET.directions.T, 0.0, 1.0)
    assert max(np.max(np.abs(prior_z[0])), np.max(np.abs(prior_z[1]))) > Z_GATE  # power check


@pytest.mark.parametrize("name", kernels_with("pytree_ratio"))
def test_pytree_acceptance_equals_flat_mh_ratio(name):
    """For a dict position, the kernel's acceptance equals ``min(1, exp(r))`` with r the MH
    log-ratio computed on the flattened vectors (checks the tree-wide inner products and norms
    in the ratio, e.g. pCN's ½(‖x'‖² − ‖x‖²) term)."""
    module = KERNELS[name].module
    h, log_ratio = KERNELS[name].pytree_ratio
    n = 500
    flat0 = np.random.default_rng(15).standard_normal((n, 7)).astype(np.float32) * 0.8
    kernel = module.build_kernel()

    @jax.jit
    @jax.vmap
    def one_step(key, p):
        return kernel(key, module.init(p, pytree_logdensity), pytree_logdensity, h)[1]

    info = one_step(jax.random.split(jax.random.key(16), n), unflatten_pytree(flat0))
    xp = np.asarray(jax.vmap(flatten_pytree)(info.proposal.position), np.float64)
    explicit = log_ratio(flat0.astype(np.float64), xp, h)
    assert np.mean(explicit < -0.05) > 0.3  # ratios not saturated
    moderate = explicit > -40.0
    np.testing.assert_allclose(
        np.log(np.asarray(info.acceptance_rate, np.float64)[moderate]),
        np.minimum(0.0, explicit[moderate]),
        atol=1e-4,
        rtol=1e-5,
    )


# ----------------------------------------------------------------------------------------------
# jit / no-jit agreement and tracing
# ----------------------------------------------------------------------------------------------
class JitAgreementTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters((name, name) for name in KERNELS)
    def test_one_step_same_with_and_without_jit(self, name):
        """One step from a fixed state and key gives the same new state and info, jitted or
        not (for pCNL with the gradient drift and with a clipped drift)."""
        spec = KERNELS[name]
        target = make_conjugate(6, seed=17)
        x = jnp.asarray(np.random.default_rng(18).standard_normal(6), jnp.float32)
        accepted = []
        for build_args in spec.jit_builds:
            kernel = spec.module.build_kernel(*build_args)

            def step(key, state, kernel=kernel):
                return kernel(key, state, target.logdensity, 0.5)

            state = spec.module.init(x, target.logdensity)
            variant_step = self.variant(step)
            for i in range(spec.jit_keys):
                new_state, info = variant_step(jax.random.key(i), state)
                ref_state, ref_info = step(jax.random.key(i), state)  # eager reference
                chex.assert_trees_all_close(new_state, ref_state, rtol=1e-5, atol=1e-6)
                chex.assert_trees_all_close(info, ref_info, rtol=1e-5, atol=1e-6)
                accepted.append(bool(info.is_accepted))
        if spec.exact:  # both outcomes of the accept/reject step are exercised over the keys
            assert any(accepted) and not all(accepted)
        else:  # ULA takes every finite proposal
            assert all(accepted)


@pytest.mark.parametrize("name", list(KERNELS))
def test_no_retracing_over_keys_states_and_step_sizes(name):
    """A jitted step traces once for 10 calls with different keys, states and (array) step
    sizes: the step size is a traced argument, not a static one."""
    module = KERNELS[name].module
    chex.clear_trace_counter()
    target = make_conjugate(4, seed=19)
    kernel = module.build_kernel()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state, h):
        return kernel(key, state, target.logdensity, h)

    state = module.init(jnp.zeros(4), target.logdensity)
    start = state.position
    for i, h in enumerate(np.linspace(0.2, 1.5, 10)):
        state, _ = step(jax.random.key(i), state, jnp.asarray(h, jnp.float32))
    assert not np.allclose(state.position, start)
    chex.clear_trace_counter()
