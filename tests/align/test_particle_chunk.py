"""``particle_chunk``: every continuous sampler evaluates its particles' model and reward passes
at most that many at a time (a ``lax.map`` over chunks) and returns what it returns unchunked."""

import jax
import numpy as np
import pytest

from psijax import align
from psijax.models.linear_gaussian import LinearGaussianFlow
from psijax.models.presets import quadratic_reward

MODEL = LinearGaussianFlow([1.0, -1.0], [[0.09, 0.02], [0.02, 0.16]])
PROBLEM = align.RewardProblem(
    MODEL.velocity, quadratic_reward(np.array([0.5, -0.5]), np.eye(2)), (2,), 0.2
)

# (sampler, options): each family of model and reward evaluations, the stages included.
RUNS = {
    "tds": (align.tds, dict(num_particles=10, num_steps=6)),
    # Ψ-Sampler's stage, small: pCNL chains with step-size adaptation
    "chains_adapted": (
        align.smc,
        dict(num_particles=6, num_steps=4, init=align.Chains(num_chains=2, burn_in=4, adapt=True)),
    ),
    # (Tweedie's x̂0 at t = 1 is this Gaussian model's mean, the same for every candidate: the
    # ranking would be decided by rounding; a damped step ranks them by something real.)
    "top_k": (
        align.smc,
        dict(
            num_particles=6,
            num_steps=5,
            init=align.TopK(num_candidates=14, predictor=lambda v, x, t: x - 0.9 * t * v(x, t)),
        ),
    ),
    "chains_fixed_h": (
        align.smc,
        dict(num_particles=6, num_steps=5, init=align.Chains(num_chains=2, burn_in=3)),
    ),
    "dps": (align.dps, dict(num_particles=7, num_steps=6)),
    "freedom": (align.freedom, dict(num_particles=7, num_steps=6, num_repeats=1)),
    "best_of_n": (align.best_of_n, dict(num_particles=9, num_steps=6)),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_chunked_runs_equal_unchunked_ones(name):
    sampler, options = RUNS[name]

    def run(chunk):
        return jax.jit(lambda key: sampler(key, PROBLEM, particle_chunk=chunk, **options))(
            jax.random.key(4)
        )

    whole, chunked = run(None), run(4)  # 4 divides none of the counts: a ragged last chunk
    for field in ("samples", "log_weights", "rewards"):
        np.testing.assert_allclose(
            getattr(chunked, field), getattr(whole, field), rtol=1e-6, atol=1e-6, err_msg=field
        )
    assert int(chunked.nfe) == int(whole.nfe)
    if name != "tds":
        return
    # The problem's own setting is the same thing.
    chunked_problem = align.RewardProblem(
        PROBLEM.velocity_fn, PROBLEM.reward_fn, (2,), 0.2, particle_chunk=4
    )
    again = jax.jit(lambda key: sampler(key, chunked_problem, **options))(jax.random.key(4))
    np.testing.assert_array_equal(again.samples, chunked.samples)


def test_chunks_are_a_scan_over_batches_of_the_chunk():
    """12 particles in chunks of 3: the passes run in a scan of 4 batches (absent unchunked)."""

    def program(chunk):
        run = lambda key: align.tds(
            key, PROBLEM, num_particles=12, num_steps=2, particle_chunk=chunk
        )  # noqa: E731
        return str(jax.make_jaxpr(run)(jax.random.key(0)))

    assert "length=4" in program(3) and "length=4" not in program(None)


def test_bad_chunks_and_tempered_are_refused():
    with pytest.raises(ValueError, match="`particle_chunk` must be an int >= 1"):
        align.RewardProblem(PROBLEM.velocity_fn, PROBLEM.reward_fn, (2,), 0.2, particle_chunk=0)
    with pytest.raises(ValueError, match="`particle_chunk` must be an int >= 1"):
        align.tds(jax.random.key(0), PROBLEM, num_particles=4, particle_chunk=-2)
    with pytest.raises(ValueError, match="Tempered"):
        align.smc(
            jax.random.key(0), PROBLEM, num_particles=4, init=align.Tempered(), particle_chunk=2
        )
