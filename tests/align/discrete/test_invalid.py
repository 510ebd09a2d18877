"""Bad input is named before anything runs; NaN/inf from a user's model or reward gives
zero-weight particles, never a NaN result (docs/algorithms.md §10.7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.align import discrete as d
from tests.align.discrete.toys import L, V, toy


def _problem(logits_fn=None, reward_fn=None, **kw):
    t = toy(coupling=0.5)
    return d.DiscreteProblem(
        logits_fn or t.problem.logits_fn, reward_fn or t.problem.reward_fn, L, V, **kw
    )


def _run(problem, **kw):
    options = dict(num_particles=16, num_steps=4, proposal=d.FirstOrder())
    options.update(kw)
    return jax.jit(lambda k: d.run_discrete_smc(k, problem, **options))(jax.random.key(0))


def test_nan_reward_gives_zero_weight_particles():
    base = toy(coupling=0.5).problem.reward_fn

    def reward(e):  # NaN whenever position 0 is (mostly) token 0
        return jnp.where(e[0, 0] > 0.5, jnp.nan, base(e))

    result = _run(_problem(reward_fn=reward))
    w = np.asarray(result.log_weights)
    bad = np.asarray(result.samples[:, 0]) == 0
    assert np.isfinite(result.log_normalizer)
    assert np.all(w[bad] == -np.inf) and np.all(np.isnan(np.asarray(result.rewards)[bad]))
    assert np.all(np.isfinite(w[~bad])) and (~bad).sum() > 0
    assert not np.any(np.isnan(w))


def test_nan_logits_give_zero_weight_particles():
    base = toy(coupling=0.5).problem.logits_fn

    def logits(e, t):  # the model breaks once position 1 holds token 0
        return jnp.where(e[1, 0] > 0.5, jnp.nan, base(e, t))

    result = _run(_problem(logits_fn=logits))
    assert not np.any(np.isnan(np.asarray(result.log_weights)))
    assert np.isfinite(result.log_normalizer)
    assert np.sum(np.asarray(result.info.proposal_info.num_invalid)) > 0  # the case occurred


def test_every_particle_invalid_is_a_collapse_not_a_nan():
    result = _run(_problem(reward_fn=lambda e: jnp.nan * jnp.sum(e)))
    assert bool(result.info.collapsed)
    assert result.log_normalizer == -np.inf
    assert np.all(np.asarray(result.log_weights) == -np.inf)


def test_infinite_logits_of_excluded_tokens_are_allowed():
    """``−∞`` for a token is a model ruling it out (not an error); that token never appears."""
    base = toy(coupling=0.5).problem.logits_fn
    result = _run(_problem(logits_fn=lambda e, t: base(e, t).at[:, 1].set(-jnp.inf)))
    assert np.all(np.isfinite(np.asarray(result.log_weights)))
    assert not np.any(np.asarray(result.samples) == 1)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: _problem(beta=0.0), ValueError, "`beta` must be a finite real number > 0.0"),
        (lambda: _problem(beta=-1.0), ValueError, "`beta`"),
        (lambda: _problem(prompt=jnp.array([0, 5, V, V])), ValueError, "token ids must lie in"),
        (lambda: _problem(prompt=jnp.array([0, 1])), ValueError, "shape \\(4,\\)"),
        (lambda: _problem(prompt=jnp.array([0, 1, 2, 0])), ValueError, "nothing to sample"),
        (
            lambda: _problem(logits_fn=lambda e, t: e[:, :V]),
            ValueError,
            "must return floating logits of shape \\(4, 4\\)",
        ),
        (lambda: _problem(logits_fn=lambda e: e), ValueError, "`logits_fn` failed"),
        (lambda: _problem(reward_fn=lambda e: e.sum(0)), ValueError, "floating scalar"),
        (lambda: d.DiscreteProblem(lambda e, t: e, "r", L, V), TypeError, "reward_fn"),
        (lambda: d.DiscreteProblem(lambda e, t: e, None, 0, V), ValueError, "`length`"),
        (lambda: d.Mean(0), ValueError, "`num_samples` must be an int >= 1"),
        (lambda: d.LogMeanExp(1.5), TypeError, "`num_samples`"),
        (lambda: d.FirstOrder("logits"), ValueError, "`injection`"),
        (lambda: d.FirstOrder(clip=0.0), ValueError, "`clip`"),
        (lambda: d.FirstOrder(top_k=0), ValueError, "`top_k` must be an int >= 1"),
        (lambda: d.Product(lambda e, t: e, float("nan")), ValueError, "`gamma`"),
        (lambda: d.Temperature(0.0), ValueError, "`gamma`"),
        (lambda: d.annealing(4, 1.5), ValueError, "`fraction`"),
    ],
)
def test_bad_arguments_are_named_at_build_time(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(num_particles=0), ValueError, "`num_particles` must be an int >= 1"),
        (dict(num_steps=0), ValueError, "`num_steps`"),
        (dict(schedule=lambda t: t), ValueError, "`schedule` must be decreasing"),
        (dict(grid=[1.0, 0.7, 0.8, 0.0]), ValueError, "decrease strictly"),
        (dict(kernel="one_token", num_steps=3), ValueError, "free positions, 4"),
        (dict(kernel="uniform"), ValueError, "`kernel` must be one of"),
        (dict(twist="soft"), TypeError, "`twist`"),
        (dict(proposal="grad"), TypeError, "`proposal`"),
        (dict(target="cfg"), TypeError, "`target`"),
        (dict(proposal=d.LocallyOptimal(), twist=d.Mean(2)), ValueError, "deterministic twist"),
        (dict(annealing=np.linspace(0, 0.9, 5)), ValueError, "λ_T = 1"),
        (dict(annealing=np.ones(3)), ValueError, "shape \\(5,\\)"),
        (dict(ess_threshold=1.5), ValueError, "`ess_threshold`"),
        (dict(particle_chunk=0), ValueError, "`particle_chunk` must be an int >= 1"),
    ],
)
def test_bad_run_arguments_are_named_before_anything_runs(options, error, message):
    problem = toy(coupling=0.5).problem
    config = dict(num_particles=8, num_steps=4)
    config.update(options)
    with pytest.raises(error, match=message):
        d.run_discrete_smc(jax.random.key(0), problem, **config)


def test_named_sampler_keywords_are_checked():
    problem = toy(coupling=0.5).problem
    with pytest.raises(TypeError, match="did you mean 'num_steps'"):
        d.smc_first_order(jax.random.key(0), problem, num_particles=4, num_step=4)
    with pytest.raises(TypeError, match="needs the keyword arguments \\['logits_fn_b', 'gamma'\\]"):
        d.smc_product(jax.random.key(0), problem, num_particles=4, num_steps=4)
    with pytest.raises(TypeError, match="exactly one of"):
        d.best_of_n(jax.random.key(0), problem, num_steps=4)
    with pytest.raises(ValueError, match="buys no particle"):
        d.smc_first_order(jax.random.key(0), problem, nfe_budget=10, num_steps=4)


def test_jit_and_vmap_agree_with_eager():
    problem = toy(coupling=0.5).problem
    run = lambda k: d.run_discrete_smc(  # noqa: E731
        k, problem, num_particles=8, num_steps=4, proposal=d.FirstOrder()
    )
    keys = jax.random.split(jax.random.key(2), 3)
    batched = jax.jit(jax.vmap(run))(keys)
    eager = run(keys[1])
    np.testing.assert_array_equal(batched.samples[1], eager.samples)
    np.testing.assert_allclose(batched.log_normalizer[1], eager.log_normalizer, rtol=1e-5)
