"""The generic Feynman–Kac SMC (``psijax.smc.feynman_kac``) on a model with an exact ``Z``.

**A discrete Feynman–Kac model.** Integer tokens ``x_i ∈ {0, 1, 2}``: ``x_0 ~ p_0``, then the
Markov kernel ``P``, and potentials ``G_i(x_i) = exp(g_i[x_i])``. Its normalizer is a forward
recursion, ``Z = p_0ᵀ D_0 P D_1 ⋯ P D_T 1`` with ``D_i = diag(G_i)`` (float64 NumPy). The SMC
proposes from the uniform kernel ``q`` (so ``log p − log q = log P[x, x'] + log 3`` is not
zero) and its particles are a pytree of an int32 token, a float cache and an int32 count that
the potential writes: the generic code must keep every leaf's dtype.

Gates: ``|z| < 4.5`` on the mean of ``Ẑ/Z`` over independent runs (fixed seeds), and each
gate also rejects a wrong ``Z``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.smc import feynman_kac
from psijax.smc.weights import AdaptiveResampling

Z_GATE = 4.5
P0 = np.array([0.5, 0.3, 0.2])
P = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
T = 6
G = np.random.default_rng(0).normal(size=(T + 1, 3)) * 0.8  # log-potentials g_i[x]


def exact_log_z() -> float:
    alpha = P0 * np.exp(G[0])
    for i in range(1, T + 1):
        alpha = (alpha @ P) * np.exp(G[i])
    return float(np.log(alpha.sum()))


def proposal(key, particles, inputs):
    """Uniform proposal over the 3 states; ``log P[x, x'] − log(1/3)``; info = #moves."""
    x = particles["token"]
    new = jax.random.randint(key, x.shape, 0, 3, dtype=jnp.int32)
    log_p_minus_q = jnp.log(jnp.asarray(P, jnp.float32))[x, new] + jnp.log(3.0)
    moved = {**particles, "token": new, "cache": jnp.asarray(G, jnp.float32)[inputs, new]}
    return moved, log_p_minus_q, jnp.sum(new != x)


def potential(particles, moved, inputs):
    """``log G_i(x_i)``, read off the cache; counts the visits to state 0 (an int leaf)."""
    moved = {**moved, "zeros": moved["zeros"] + (moved["token"] == 0).astype(jnp.int32)}
    return moved, moved["cache"]


def initial_state(key, n):
    token = jax.random.choice(key, 3, (n,), p=jnp.asarray(P0)).astype(jnp.int32)
    cache = jnp.asarray(G[0], jnp.float32)[token]
    particles = {"token": token, "cache": cache, "zeros": (token == 0).astype(jnp.int32)}
    return feynman_kac.init(particles, cache)


def run(key, n=64, resampling=None, **kwargs):
    key_init, key_run = jax.random.split(key)
    state = initial_state(key_init, n)
    steps = jnp.arange(1, T + 1)
    return feynman_kac.run(key_run, state, steps, proposal, potential, resampling, **kwargs)


def ratio_z(log_z_hat, log_z):
    ratio = np.exp(np.asarray(log_z_hat, np.float64) - log_z)
    return (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))


@pytest.mark.parametrize(
    "resampling",
    [
        AdaptiveResampling(),
        AdaptiveResampling("multinomial", ess_threshold=1.0),
        AdaptiveResampling("ssp", ess_threshold=1.0, every=2),
        AdaptiveResampling(ess_threshold=0.9, num_resampled=20),
        AdaptiveResampling(ess_threshold=0.0),
    ],
    ids=["adaptive", "every_step", "every_2", "partial", "never"],
)
def test_normalizer_is_unbiased_on_tokens(resampling):
    """``E[Ẑ/Z] = 1`` over 400 runs of 64 particles; the gate rejects ``Z·e^{0.15}``."""
    keys = jax.random.split(jax.random.key(1), 400)
    states, _ = jax.jit(jax.vmap(lambda k: run(k, resampling=resampling)))(keys)
    log_z_hat = np.asarray(states.log_normalizer)
    assert np.std(log_z_hat) < 0.7
    assert abs(ratio_z(log_z_hat, exact_log_z())) < Z_GATE
    assert abs(ratio_z(log_z_hat, exact_log_z() + 0.15)) > Z_GATE


def test_particles_keep_their_dtypes_and_the_history_is_complete():
    state, info = jax.jit(lambda k: run(k, resampling=AdaptiveResampling(ess_threshold=1.0)))(
        jax.random.key(2)
    )
    assert state.particles["token"].dtype == jnp.int32
    assert state.particles["zeros"].dtype == jnp.int32
    assert state.particles["cache"].dtype == jnp.float32
    assert int(jnp.max(state.particles["zeros"])) <= T + 1  # the potential's count travelled
    assert info.ess.shape == info.resampled.shape == info.log_normalizer_increments.shape == (T,)
    assert np.all(np.asarray(info.resampled))
    assert info.proposal_info.shape == (T,) and info.proposal_info.dtype == jnp.int32
    np.testing.assert_allclose(
        float(state.log_normalizer),
        float(feynman_kac.init(*_initial(jax.random.key(2))).log_normalizer)
        + float(jnp.sum(info.log_normalizer_increments)),
        rtol=1e-5,
    )
    assert not bool(info.collapsed)


def _initial(key):
    key_init, _ = jax.random.split(key)
    state = initial_state(key_init, 64)
    return state.particles, state.log_weights


def test_non_finite_increments_are_zero_weights_and_a_collapse_is_flagged():
    """A proposal returning NaN for half the particles gives them weight zero (not NaN); when
    every increment is NaN the run collapses: ``log Ẑ = −inf``, ``collapsed``, ESS 0."""

    def half_nan(key, particles, inputs):
        moved, lpq, info = proposal(key, particles, inputs)
        bad = jnp.arange(lpq.shape[0]) % 2 == 0
        return moved, jnp.where(bad, jnp.nan, lpq), info

    def all_nan(key, particles, inputs):
        moved, lpq, info = proposal(key, particles, inputs)
        return moved, jnp.full_like(lpq, jnp.nan), info

    state, _ = feynman_kac.step(
        jax.random.key(3),
        initial_state(jax.random.key(4), 8),
        1,
        half_nan,
        potential,
        AdaptiveResampling(ess_threshold=0.0),
    )
    w = np.asarray(state.log_weights)
    assert np.all(w[::2] == -np.inf) and np.all(np.isfinite(w[1::2]))
    key_init, key_run = jax.random.split(jax.random.key(5))
    state, info = feynman_kac.run(
        key_run, initial_state(key_init, 8), jnp.arange(1, T + 1), all_nan, potential
    )
    assert float(state.log_normalizer) == -np.inf and bool(info.collapsed)
    assert float(info.final_ess) == 0.0
    assert not np.any(np.isnan(np.asarray(info.log_normalizer_increments)))
    np.testing.assert_array_equal(feynman_kac.normalized_log_weights(state.log_weights), -np.inf)


def test_the_final_parts_run_at_the_last_step_only():
    calls = []

    def final(key, particles, inputs):
        moved, lpq, info = proposal(key, particles, inputs)
        calls.append(True)
        return moved, lpq, jnp.int32(-1)

    _, info = run(jax.random.key(6), final_proposal=final)
    assert calls and np.asarray(info.proposal_info)[-1] == -1
    assert np.all(np.asarray(info.proposal_info)[:-1] >= 0)


def test_bad_particles_and_inputs_are_value_errors():
    with pytest.raises(ValueError, match="leading particle axis"):
        feynman_kac.init({"a": jnp.zeros(3), "b": jnp.zeros(4)})
    with pytest.raises(ValueError, match="leading particle axis"):
        feynman_kac.init({"a": jnp.zeros(3), "b": jnp.zeros(())})
    with pytest.raises(ValueError, match="`log_weights`"):
        feynman_kac.init(jnp.zeros(3), jnp.zeros(4))
    state = initial_state(jax.random.key(0), 4)
    with pytest.raises(ValueError, match="`inputs`"):
        feynman_kac.run(jax.random.key(0), state, jnp.zeros(()), proposal, potential)
    with pytest.raises(ValueError, match="same leading step axis"):
        feynman_kac.run(jax.random.key(0), state, (jnp.zeros(3), jnp.zeros(2)), proposal, potential)
    with pytest.raises(ValueError, match="ess_threshold"):
        AdaptiveResampling(ess_threshold=1.5)
    with pytest.raises(TypeError, match="every"):
        AdaptiveResampling(every=1.0)


def test_the_genealogy_is_kept_on_request():
    _, info = run(jax.random.key(7), keep_ancestors=True)
    assert info.ancestors.shape == (T, 64) and info.ancestors.dtype == jnp.int32
    resampled = np.asarray(info.resampled)
    never = ~resampled
    np.testing.assert_array_equal(
        np.asarray(info.ancestors)[never], np.tile(np.arange(64), (never.sum(), 1))
    )
    assert run(jax.random.key(7))[1].ancestors is None


def test_float64_particles_keep_a_fixed_carry():
    """Under ``jax_enable_x64`` the state stays in one dtype across the scan."""
    with jax.enable_x64(True):
        key_init, key_run = jax.random.split(jax.random.key(8))
        state = feynman_kac.init(jnp.zeros((8, 2), jnp.float64))
        assert state.log_weights.dtype == jnp.float64

        def move(key, x, inputs):
            return x + jax.random.normal(key, x.shape, jnp.float64), jnp.zeros(8), ()

        state, _ = feynman_kac.run(
            key_run, state, jnp.arange(3.0), move, lambda x, y, i: (y, -jnp.sum(y**2, 1))
        )
        assert state.log_normalizer.dtype == jnp.float64
