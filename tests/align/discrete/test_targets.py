"""Product (classifier-free guidance) and temperature targets (DISCRETE test 6).

With the one-token kernel and exact denoisers, the path measure of ``γ log p_a + (1 − γ) log
p_b`` has the marginal ``p_a^γ p_b^{1−γ}`` exactly (float64 DP, 1e-12), and the temperature
path ``γ log p + (1 − γ) log q_forward`` has ``p^γ``; the SMC's ``Ẑ`` is unbiased for their
normalising constants (z-gated over 200 runs).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.align import discrete as d
from psijax.discrete import exact, kernels
from psijax.discrete.masking import denoiser_log_probs, one_hot
from psijax.models.masked_toys import HMM, MixtureOfProducts

L, V = 4, 3


def _models():
    a = MixtureOfProducts.random(jax.random.key(2), 3, L, V)
    b = HMM.random(jax.random.key(3), 2, L, V)
    return a, b


def _data_log_probs(model):
    data = jnp.array(list(itertools.product(range(V), repeat=L)))
    return jax.vmap(model.log_prob)(data)


def _forward_matrix(kernel, states, vocab):
    def row(x):
        return jax.vmap(lambda y: kernel.forward_log_prob(x, y, 0.0, 1.0, vocab))(states)

    return jax.lax.map(row, states)


@pytest.mark.parametrize("gamma", [0.3, 0.5, 0.8])
def test_product_path_marginal_is_the_geometric_mixture(gamma):
    with jax.enable_x64(True):
        a, b = _models()
        kernel = kernels.OneToken()
        states = exact.enumerate_states(L, V)
        mats = [exact.kernel_log_matrix(m.logits, kernel, states, 1.0, 0.0, 1.0, V) for m in (a, b)]
        start = jnp.where(jnp.arange(states.shape[0]) == states.shape[0] - 1, 0.0, -jnp.inf)
        log_path = exact.forward(lambda i: gamma * mats[0] + (1 - gamma) * mats[1], L, start)
        expected = gamma * _data_log_probs(a) + (1 - gamma) * _data_log_probs(b)
        got = exact.data_table(log_path, L, V).reshape(-1)
        np.testing.assert_allclose(got, expected, atol=1e-12)  # unnormalised: Z included


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_temperature_path_marginal_is_the_power(gamma):
    with jax.enable_x64(True):
        a, _ = _models()
        kernel = kernels.OneToken()
        states = exact.enumerate_states(L, V)
        forward_matrix = _forward_matrix(kernel, states, V)
        back = exact.kernel_log_matrix(a.logits, kernel, states, 1.0, 0.0, 1.0, V)
        finite = jnp.isfinite(forward_matrix)  # [a, b]: q(x_a | x_b) for the move a → b
        undo = jnp.where(finite, forward_matrix, 0.0)
        mixed = jnp.where(finite, gamma * back + (1 - gamma) * undo, -jnp.inf)
        start = jnp.where(jnp.arange(states.shape[0]) == states.shape[0] - 1, 0.0, -jnp.inf)
        log_path = exact.forward(lambda i: mixed, L, start)
        got = exact.data_table(log_path, L, V).reshape(-1)
        np.testing.assert_allclose(got, gamma * _data_log_probs(a), atol=1e-12)


def test_one_token_forward_kernel_inverts_the_reverse_one():
    """``Σ_x q(x | x') = 1`` for every ``x'`` with an unmasked position (it masks one)."""
    kernel = kernels.OneToken()
    states = exact.enumerate_states(L, V)
    total = jax.nn.logsumexp(_forward_matrix(kernel, states, V), axis=0)
    unmasked = np.asarray(jnp.any(states < V, axis=1))
    np.testing.assert_allclose(np.asarray(total)[unmasked], 0.0, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.5])
def test_product_smc_is_unbiased_and_its_proposal_is_locally_optimal(gamma):
    """``E[Ẑ] = Σ_x p_a^γ p_b^{1−γ}`` (also for ``γ > 1``, extrapolation), and with the
    product's locally optimal proposal the increment of a particle does not depend on the
    token drawn: two particles at the same state get the same weight."""
    a, b = _models()
    problem = d.DiscreteProblem(a.logits, None, L, V)
    with jax.enable_x64(True):
        log_z = float(
            jax.nn.logsumexp(gamma * _data_log_probs(a) + (1 - gamma) * _data_log_probs(b))
        )
    run = jax.jit(
        jax.vmap(
            lambda k: d.smc_product(
                k,
                problem,
                num_particles=32,
                num_steps=L,
                kernel="one_token",
                logits_fn_b=b.logits,
                gamma=gamma,
                ess_threshold=0.0,
            )
        )
    )
    results = run(jax.random.split(jax.random.key(3), 200))
    ratio = np.exp(np.asarray(results.log_normalizer, np.float64) - log_z)
    z = (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))
    assert abs(z) < 4.0, (ratio.mean(), z)
    assert np.all(np.isfinite(np.asarray(results.log_weights)))
    assert np.all(np.isnan(np.asarray(results.rewards)) == False)  # noqa: E712 (r ≡ 0)
    # one step from the all-masked state: G = Σ_{l,v} (1/L) μ_a^γ μ_b^{1−γ}, the same for all
    first = np.asarray(results.info.log_normalizer_increments[:, 0])
    e = one_hot(jnp.full((L,), V), V)
    la = denoiser_log_probs(a.logits(e), jnp.full((L,), V), V)[:, :V]
    lb = denoiser_log_probs(b.logits(e), jnp.full((L,), V), V)[:, :V]
    g0 = float(jax.nn.logsumexp(gamma * la + (1 - gamma) * lb) - np.log(L))
    np.testing.assert_allclose(first, g0, atol=1e-5)


def test_temperature_smc_is_unbiased():
    a, _ = _models()
    problem = d.DiscreteProblem(a.logits, None, L, V)
    gamma = 2.0
    with jax.enable_x64(True):
        log_z = float(jax.nn.logsumexp(gamma * _data_log_probs(a)))
    run = jax.jit(
        jax.vmap(
            lambda k: (
                d.run_discrete_smc(
                    k,
                    problem,
                    num_particles=32,
                    num_steps=L,
                    kernel="one_token",
                    target=d.Temperature(gamma),
                ).log_normalizer
            )
        )
    )
    ratio = np.exp(np.asarray(run(jax.random.split(jax.random.key(4), 200)), np.float64) - log_z)
    z = (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))
    assert abs(z) < 4.0 and ratio.std() > 1e-3, (ratio.mean(), z)
