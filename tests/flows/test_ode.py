"""Tests of Euler sampling, adaptive solves and the flow map (:mod:`psijax.flows.ode`).

For Gaussian data ``N(m, s² I)`` the flow map is affine, ``Φ_t(x) = m + s/√S(t)·(x − (1 − t)m)``
with ``S(t) = (1 − t)²s² + t²`` (derivation in ``tests/flows/gaussian.py``), so ``Φ_1(x1) =
m + s·x1`` and its Jacobian is ``s/√S(t)·I``. Statistical gates are ``|z| < 4.5`` on exact
Monte Carlo errors (false-alarm probability < 1e-4 per test; fixed seeds).
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax import flows
from psijax.flows.ode import _diffeqsolve
from tests.flows.gaussian import GaussianData, moment_z

Z_GATE = 4.5
MODEL = GaussianData([1.0, -2.0, 0.5], 0.5)
STIFF = GaussianData([1.0, -2.0], 0.05)  # sharp data: the solver rejects steps near t = 0


@jax.jit
def _batched_flow_map(x, t):
    """MODEL's flow map at tolerances 1e-7, vmapped over samples and times (compiled once).

    The global error of an adaptive solve is larger than its local tolerance: at the default
    1e-5 it reaches ~7e-4 for |x| ≈ 8 (the same in float64), at 1e-7 ~1e-6.
    """
    fn = lambda x, t: flows.flow_map(MODEL.jax_velocity(), x, t, rtol=1e-7, atol=1e-7)
    return jax.vmap(fn)(x, t)


def test_flow_map_matches_closed_form():
    velocity_fn = MODEL.jax_velocity()
    x = jax.random.normal(jax.random.key(0), (4000, 3)) * 2.0
    ts = jnp.linspace(1.0, 0.0, 4000)
    out, nfe = _batched_flow_map(x, ts)
    expected = MODEL.flow_map(np.asarray(x, np.float64), np.asarray(ts, np.float64)[:, None])
    np.testing.assert_allclose(out, expected, atol=2e-5)
    assert nfe[-1] == 1 and np.all(nfe[:-1] >= 7)  # t = 0: only the seeded first stage
    np.testing.assert_allclose(out[-1], x[-1])  # Φ_0 is the identity
    # Not vacuous: the Tweedie prediction x − t·v is far from the flow map.
    tweedie = jax.vmap(lambda x, t: flows.tweedie_from_velocity(x, velocity_fn(x, t), t))(x, ts)
    assert np.max(np.abs(np.asarray(tweedie) - expected)) > 0.5


def test_flow_map_pushes_noise_to_data():
    x1 = jax.random.normal(jax.random.key(1), (4000, 3))
    x0, _ = _batched_flow_map(x1, jnp.ones(4000))
    z_mean, z_var = moment_z(x0, MODEL.m, MODEL.s**2)
    assert np.all(np.abs(z_mean) < Z_GATE) and np.all(np.abs(z_var) < Z_GATE), (z_mean, z_var)
    # Not vacuous: a 20% error in the scale of the data is rejected.
    assert np.all(np.abs(moment_z(x0, MODEL.m, 1.2**2 * MODEL.s**2)[1]) > Z_GATE)


def test_solve_forward_direction_inverts_flow_map():
    x1 = np.array([0.3, -1.0, 2.0])
    x0 = jnp.asarray(MODEL.flow_map(x1, 1.0), jnp.float32)  # = m + s·x1
    kwargs = {"solver": diffrax.Dopri5(), "dt0": 0.05, "rtol": 1e-6, "atol": 1e-6}
    back, nfe = jax.jit(lambda x: flows.solve(MODEL.jax_velocity(), x, 0.0, 1.0, **kwargs))(x0)
    np.testing.assert_allclose(back, x1, atol=1e-4)
    assert nfe.dtype == jnp.int32 and int(nfe) > 7


def test_euler_sample_pushes_noise_to_data():
    grid = flows.uniform_grid(100)
    x1 = jax.random.normal(jax.random.key(2), (40_000, 3))
    # The exact velocity acts elementwise, so the batch is integrated as one sample.
    x0 = jax.jit(lambda x: flows.euler_sample(MODEL.jax_velocity(), x, grid))(x1)
    mean, var = MODEL.euler_moments(np.asarray(grid, np.float64))
    z_mean, z_var = moment_z(x0, mean, var)
    assert np.all(np.abs(z_mean) < Z_GATE) and np.all(np.abs(z_var) < Z_GATE), (z_mean, z_var)
    # Discretisation: 100 Euler steps bias the variance by −7.3e-3 (mean exact); tolerance 0.01.
    np.testing.assert_allclose(mean, MODEL.m, atol=1e-6)
    np.testing.assert_allclose(var, MODEL.s**2, atol=0.01)
    assert np.all(np.abs(moment_z(x0, mean, 1.06 * var)[1]) > Z_GATE)


def test_flow_map_gradient():
    """∇_x⟨w, Φ_t(x)⟩ = s/√S(t)·w, checked analytically and with finite differences."""
    w = jnp.array([0.3, -1.1, 0.7])
    x = jnp.array([0.5, 1.5, -0.4])

    def objective(x, t):
        return jnp.vdot(w, flows.flow_map(MODEL.jax_velocity(), x, t)[0])

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    value = lambda x, t: value_and_grad(x, t)[0]
    for t in (1.0, 0.5):
        val, g = value_and_grad(x, t)
        # Default tolerances (1e-5): the value is within 1e-3 of the closed form.
        expected = np.vdot(w, MODEL.flow_map(np.asarray(x, np.float64), t))
        np.testing.assert_allclose(val, expected, atol=1e-3)
        np.testing.assert_allclose(g, MODEL.s / np.sqrt(MODEL.var(t)) * np.asarray(w), atol=1e-4)
        # Central differences. The map is affine, so a wide step has no truncation error; what
        # remains is the solver error of the two values (≲ 3e-4 each, from different adaptive
        # step sequences at x ± ε), hence the 1e-3 tolerance.
        eps = 0.5
        fd = [(value(x + eps * e, t) - value(x - eps * e, t)) / (2 * eps) for e in jnp.eye(3)]
        np.testing.assert_allclose(g, np.asarray(fd), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Exact NFE
# ----------------------------------------------------------------------------------------------
def _counting(velocity_fn):
    calls = [0]

    def increment(_):
        calls[0] += 1

    def counted(x, t):
        jax.debug.callback(increment, t)
        return velocity_fn(x, t)

    return counted, calls


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dt0": 0.2},  # Tsit5: 7 stages, first-same-as-last
        {"solver": diffrax.Heun(), "rtol": 1e-3, "atol": 1e-3},  # 2 stages, not FSAL
    ],
)
def test_nfe_is_exact(kwargs):
    counted, calls = _counting(STIFF.jax_velocity())
    x = jnp.array([0.3, -1.2])
    sol, nfe = jax.jit(lambda x: _diffeqsolve(counted, x, 1.0, 0.0, **kwargs))(x)
    jax.effects_barrier()
    assert int(sol.stats["num_rejected_steps"]) > 0  # the count covers rejected steps too
    assert int(nfe) == calls[0]
    np.testing.assert_allclose(sol.ys[-1], STIFF.flow_map(np.asarray(x), 1.0), atol=2e-3)
    # The public functions report the same count.
    calls[0] = 0
    _, nfe_public = flows.flow_map(counted, x, 1.0, **kwargs)
    jax.effects_barrier()
    assert int(nfe_public) == calls[0] == int(nfe)


def test_euler_nfe_is_num_steps():
    counted, calls = _counting(MODEL.jax_velocity())
    flows.euler_sample(counted, jnp.zeros(3), flows.uniform_grid(13))
    jax.effects_barrier()
    assert calls[0] == 13


# ----------------------------------------------------------------------------------------------
# Predictor, pytrees, validation
# ----------------------------------------------------------------------------------------------
def test_flow_map_predictor_and_pytrees():
    velocity_fn = MODEL.jax_velocity()

    def tree_velocity(x, t):
        return {"a": velocity_fn(x["a"], t), "b": -x["b"]}  # dx_b/dt = −x_b

    predictor = flows.flow_map_predictor(tree_velocity, rtol=1e-6, atol=1e-6)
    x = {"a": jnp.array([0.1, 0.2, -0.3]), "b": jnp.array(2.0, jnp.bfloat16)}
    out = jax.jit(predictor)(x, 0.7)
    assert out["b"].dtype == jnp.bfloat16
    np.testing.assert_allclose(out["a"], MODEL.flow_map(np.asarray(x["a"]), 0.7), atol=1e-4)
    np.testing.assert_allclose(float(out["b"]), 2.0 * np.exp(0.7), rtol=1e-2)  # bf16 output


def test_failed_solve_raises_or_gives_nan():
    """``max_steps`` too small for a stiff solve: ``throw=True`` raises, ``throw=False`` gives a
    NaN state (never the state where the solver stopped); the oracle distilled model defaults
    to NaN, which a sampler turns into a zero-weight particle."""
    x = jnp.array([0.3, -0.2])
    with pytest.raises(Exception, match="max_steps|maximum number"):
        jax.block_until_ready(flows.flow_map(STIFF.jax_velocity(), x, 1.0, max_steps=4))
    state, _ = flows.flow_map(STIFF.jax_velocity(), x, 1.0, max_steps=4, throw=False)
    assert np.all(np.isnan(state))
    fine, _ = flows.flow_map(STIFF.jax_velocity(), x, 1.0, throw=False)
    np.testing.assert_allclose(fine, STIFF.flow_map(np.asarray(x), 1.0), atol=1e-3)
    oracle = flows.distilled_velocity(STIFF.jax_velocity(), max_steps=4)
    assert np.all(np.isnan(oracle(x, 1.0)))
    with pytest.raises(TypeError, match="throw"):
        flows.flow_map(STIFF.jax_velocity(), x, 1.0, throw="no")


def test_invalid_solver_arguments_raise():
    velocity_fn = MODEL.jax_velocity()
    x = jnp.zeros(3)
    with pytest.raises(TypeError, match="solver"):
        flows.flow_map(velocity_fn, x, 1.0, solver=diffrax.Euler())
    with pytest.raises(TypeError, match="solver"):
        flows.flow_map_predictor(velocity_fn, solver="tsit5")
    with pytest.raises(ValueError, match="rtol"):
        flows.flow_map(velocity_fn, x, 1.0, rtol=0.0)
    with pytest.raises(ValueError, match="dt0"):
        flows.flow_map(velocity_fn, x, 1.0, dt0=-0.1)
    with pytest.raises(TypeError, match="max_steps"):
        flows.flow_map(velocity_fn, x, 1.0, max_steps=10.5)
    with pytest.raises(ValueError, match="t_start"):
        flows.flow_map(velocity_fn, x, 1.5)
    with pytest.raises(ValueError, match="grid"):
        flows.euler_sample(velocity_fn, x, jnp.array([0.0, 0.5, 1.0]))
