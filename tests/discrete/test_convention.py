"""The masked-diffusion convention: schedules, kernels, exact denoisers, the unguided sampler.

Exact checks compare with enumeration in float64 (``jax.enable_x64``); the
sampler's histogram is judged by a chi-square against the exact ``P^T`` of the dynamic
programme (fixed seed; the gate is the 99.99 % quantile, so a correct sampler fails it with
probability 1e-4 for a random seed and never for this one).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from psijax.discrete import exact, kernels, masking, sampling, schedules
from psijax.models.masked_toys import HMM, JointTable, MixtureOfProducts, gmm1, ring8

L, V = 4, 3


def _models():
    return {
        "mixture": MixtureOfProducts.random(jax.random.key(1), 3, L, V),
        "hmm": HMM.random(jax.random.key(2), 2, L, V),
        "table": JointTable(jax.random.normal(jax.random.key(3), (V,) * L)),
    }


def _data_states():
    return jnp.array(list(itertools.product(range(V), repeat=L)), jnp.int32)


@pytest.mark.parametrize("name", ["mixture", "hmm", "table"])
def test_exact_denoisers_equal_enumeration(name):
    """``μ*_{l,v} = p(x^l = v | unmasked)`` at every partially masked state, to 1e-10."""
    with jax.enable_x64(True):
        model = _models()[name]
        data = _data_states()
        log_p = jax.vmap(model.log_prob)(data)
        np.testing.assert_allclose(float(jax.nn.logsumexp(log_p)), 0.0, atol=1e-10)
        states = exact.enumerate_states(L, V)
        mus = np.exp(
            np.asarray(jax.vmap(lambda x: model.logits(masking.one_hot(x, V, jnp.float64)))(states))
        )
        assert np.all(mus[..., V] == 0.0)  # no mass on the mask
        data, p = np.asarray(data), np.exp(np.asarray(log_p))
        for x, mu in zip(np.asarray(states), mus, strict=True):
            observed = x < V
            weights = np.where(np.all((data == x) | ~observed, axis=1), p, 0.0)
            for pos in np.flatnonzero(~observed):
                expected = np.bincount(data[:, pos], weights, minlength=V)
                np.testing.assert_allclose(mu[pos, :V], expected / expected.sum(), atol=1e-10)


@pytest.mark.parametrize(
    "kernel", [kernels.MDLM(), kernels.ReMDM(0.5), kernels.ReMDM(0.3, "cap"), kernels.OneToken()]
)
def test_kernel_rows_sum_to_one_and_carry_over(kernel):
    """Rows (or the joint table) sum to 1; an unmasked position of MDLM has ``log p = 0``;
    the last step (``α_s = 1``) leaves no mask."""
    model = _models()["mixture"]
    x = jnp.array([V, 1, V, 0])
    log_mu = masking.denoiser_log_probs(model.logits(masking.one_hot(x, V)), x, V)
    table = kernel.table(x, log_mu, 0.4, 0.7)
    total = jnp.sum(jnp.exp(table)) if kernel.joint else jnp.sum(jnp.exp(table), axis=-1)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if isinstance(kernel, kernels.ReMDM) and kernel.eta == 0.0:
        np.testing.assert_array_equal(table[1], jnp.log(masking.one_hot(1, V)))
        moved = kernel.sample(jax.random.key(0), table, x)
        assert moved[1] == 1 and moved[3] == 0
        assert kernel.log_prob(table, x, x) == pytest.approx(float(jnp.sum(table[[0, 2], V])))
    last = kernel.table(x, log_mu, 0.4, 1.0)
    for key in jax.random.split(jax.random.key(1), 20):
        filled = kernel.sample(key, last, x)
        if not kernel.joint:
            assert not np.any(np.asarray(filled) == V)
        assert np.isfinite(kernel.log_prob(last, x, filled))


def test_every_kernel_is_exact_for_one_position():
    """For ``L = 1`` the factorised kernels are the exact reverse process: with an exact
    denoiser, MDLM and ReMDM (both modes) on the cosine schedule end at ``p`` exactly."""
    with jax.enable_x64(True):
        p = jnp.array([0.2, 0.5, 0.3])
        model = JointTable(jnp.log(p))
        for kernel in (kernels.MDLM(), kernels.ReMDM(0.8), kernels.ReMDM(0.4, "cap")):
            log_p, _ = exact.sampler_marginal(
                model.logits, 1, 3, num_steps=5, kernel=kernel, schedule="cosine"
            )
            np.testing.assert_allclose(np.exp(log_p[:3]), p, atol=1e-12)
            assert log_p[3] == -np.inf


@pytest.mark.parametrize("name", ["mixture", "hmm"])
def test_one_token_kernel_samples_the_data_exactly(name):
    """With an exact denoiser, one token per step reproduces ``p_data`` (any-order
    autoregression), while MDLM's ``T``-step sampler does not (positions unmasked together are
    drawn independently): the difference is what the DP must capture."""
    with jax.enable_x64(True):
        model = _models()[name]
        log_data = jax.vmap(model.log_prob)(_data_states())
        one, _ = exact.sampler_marginal(model.logits, L, V, num_steps=L, kernel="one_token")
        np.testing.assert_allclose(exact.data_table(one, L, V).reshape(-1), log_data, atol=1e-10)
        mdlm, _ = exact.sampler_marginal(model.logits, L, V, num_steps=2)
        np.testing.assert_allclose(float(jax.nn.logsumexp(mdlm)), 0.0, atol=1e-12)
        gap = np.abs(np.exp(exact.data_table(mdlm, L, V).reshape(-1)) - np.exp(log_data)).max()
        assert gap > 1e-3


@pytest.mark.parametrize("kernel", ["mdlm", kernels.ReMDM(0.5), "one_token"])
def test_unguided_sampler_matches_the_exact_marginal(kernel):
    """Chi-square of 20,000 draws against ``P^T`` of the DP (cells of expected count ≥ 5)."""
    model = _models()["hmm"]
    steps = L if kernel == "one_token" else 3
    draw = jax.jit(
        jax.vmap(lambda k: sampling.sample(k, model.logits, L, V, num_steps=steps, kernel=kernel))
    )
    xs = draw(jax.random.split(jax.random.key(0), 20_000))
    assert not np.any(np.asarray(xs) == V)
    with jax.enable_x64(True):
        log_p, _ = exact.sampler_marginal(model.logits, L, V, num_steps=steps, kernel=kernel)
    p = np.exp(np.asarray(log_p, np.float64))
    counts = np.bincount(np.asarray(exact.state_index(xs, V)), minlength=p.size)
    expected = p * xs.shape[0]
    big = expected >= 5
    chi2 = np.sum((counts[big] - expected[big]) ** 2 / expected[big])
    assert chi2 < stats.chi2.ppf(0.9999, big.sum() - 1), chi2


def test_prompt_positions_are_frozen_under_remasking():
    model = _models()["mixture"]
    prompt = jnp.array([2, V, V, 0])
    xs = jax.vmap(
        lambda k: sampling.sample(
            k, model.logits, L, V, num_steps=6, kernel=kernels.ReMDM(1.0), prompt=prompt
        )
    )(jax.random.split(jax.random.key(3), 200))
    assert np.all(np.asarray(xs[:, 0]) == 2) and np.all(np.asarray(xs[:, 3]) == 0)
    assert len(np.unique(np.asarray(xs[:, 1:3]), axis=0)) > 1


def test_grid_mixtures():
    """GMM1 and the ring on the 64-point grid: normalised, each mode's disc of radius 1.5
    holding its share (a Gaussian of variance 0.3 puts 97.6 % there), and the exact denoiser
    at the all-masked state equal to the axis marginal."""
    axis = np.array([-4.0, 0.0, 4.0])
    grid_means = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    angles = 2 * np.pi * np.arange(8) / 8
    ring_means = 4.0 * np.stack([np.cos(angles), np.sin(angles)], -1)
    for model, means in ((gmm1(), grid_means), (ring8(), ring_means)):
        p = np.asarray(model.probs(), np.float64)
        assert p.shape == (64, 64) and abs(p.sum() - 1.0) < 1e-5
        points = np.asarray(model.points)
        gx, gy = np.meshgrid(points, points, indexing="ij")
        for mean in means:
            share = p[(gx - mean[0]) ** 2 + (gy - mean[1]) ** 2 < 1.5**2].sum()
            assert 0.95 / len(means) < share < 1.0 / len(means), share
        mu = np.exp(np.asarray(model.logits(masking.one_hot(jnp.array([64, 64]), 64))))
        np.testing.assert_allclose(mu[0, :64], p.sum(1), atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: schedules.alphas(lambda t: t, schedules.time_grid(4)), "decreasing"),
        (lambda: schedules.alphas("linear", [1.0, 0.5, 0.6, 0.0]), "decrease strictly"),
        (lambda: schedules.alphas(lambda t: 0.9 - 0.9 * t, schedules.time_grid(4)), "α\\(0\\) = 1"),
        (lambda: schedules.get_schedule("square"), "must be one of"),
        (lambda: kernels.ReMDM(1.5), "eta"),
        (lambda: kernels.ReMDM(0.5, "clip"), "mode"),
        (lambda: kernels.MDLM(0.2), "ReMDM"),
        (lambda: sampling.initial_state(3, 2, jnp.array([0, 3, 1])), "token ids"),
        (
            lambda: sampling.sample(
                jax.random.key(0), lambda e, t: e, 3, 2, num_steps=2, kernel="one_token"
            ),
            "free positions",
        ),
        (lambda: exact.enumerate_states(20, 4), "exceeds"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
