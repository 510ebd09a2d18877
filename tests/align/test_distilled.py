"""Every sampler on a distilled model with the re-noising kernel as the problem's transition.

The model is the ideal distilled model of Gaussian data (``LinearGaussianFlow(...,
distilled=True)``): the kernel keeps its marginals exactly on any grid, so the SMC's ``Ẑ`` is
unbiased for the **exact** ``Z = E_{p_0}[e^{r/α}]`` (no discretisation term), and ``Ẑ·Σ W_i x_i``
for ``Z`` times the exact tilted mean. Gates: ``|z| < 4.5`` over ``R`` independent runs at fixed
seeds, as in ``tests/align/test_denoising.py``; each gate is shown to reject a wrong answer.
"""

import jax
import numpy as np
import pytest

from psijax import align, flows
from psijax.align import Bootstrap, RewardProblem, Twisted, run_smc
from psijax.flows.distilled import Renoising
from psijax.models.linear_gaussian import LinearGaussianFlow
from psijax.models.presets import quadratic_reward
from tests.flows.gaussian import moment_z

Z_GATE = 4.5
MODEL = LinearGaussianFlow([1.0, -1.0], [[0.09, 0.02], [0.02, 0.16]], distilled=True)
# α = 0.2: sd(log Ẑ) ≈ 0.46 (twisted) and 0.09 (bootstrap) at N = 64 over 10 steps. The
# kernel re-draws the prediction at every step, so the Tweedie twist r(x̂0(x_t, t)) says less
# about the next step than on an exact model with the SDE (at α = 0.05, sd(log Ẑ) is 1.2–1.8).
CENTER, PRECISION, ALPHA = np.array([0.5, -0.5]), np.diag([1.0, 0.5]), 0.2
REWARD = quadratic_reward(CENTER, PRECISION)
PROBLEM = RewardProblem(MODEL.velocity, REWARD, (2,), ALPHA, transition=Renoising())
GRID = flows.uniform_grid(10)
RUNS, PARTICLES = 256, 64


def replicated(problem, proposal, diffusion=None):
    def one(key):
        k_init, k_run = jax.random.split(key)
        x = jax.random.normal(k_init, (PARTICLES, 2))
        return run_smc(k_run, problem, x, grid=GRID, proposal=proposal, diffusion=diffusion)

    keys = jax.random.split(jax.random.key(17), RUNS)
    return jax.tree.map(np.asarray, jax.jit(jax.vmap(one))(keys))


def ratio_z(values, log_z):
    """z-score of the mean of ``values·exp(log Ẑ − log Z)``-type ratios against 1."""
    ratio = np.exp(np.asarray(values, np.float64) - log_z)
    return (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))


@pytest.mark.parametrize("proposal", [Twisted(), Bootstrap()], ids=["twisted", "bootstrap"])
def test_normalizer_and_tilted_mean_are_unbiased_for_the_exact_target(proposal):
    res = replicated(PROBLEM, proposal)
    mean, _, log_z = MODEL.tilted_distribution(CENTER, PRECISION, ALPHA)
    assert np.all(np.isfinite(res.log_normalizer)) and np.std(res.log_normalizer) < 0.7
    z = ratio_z(res.log_normalizer, log_z)
    assert abs(z) < Z_GATE, z
    ratio = np.exp(np.asarray(res.log_normalizer, np.float64) - log_z)
    weighted = ratio[:, None] * np.einsum("rn,rnd->rd", np.exp(res.log_weights), res.samples)
    z_mean = (weighted.mean(0) - mean) / (weighted.std(0, ddof=1) / np.sqrt(RUNS))
    assert np.all(np.abs(z_mean) < Z_GATE), z_mean
    assert np.all(res.nfe == PARTICLES * 10)
    # the last step is the deterministic prediction: no noise to measure the shift against
    assert np.all(np.isnan(res.info.proposal_info.shift[:, -1]))


def test_the_gate_rejects_the_stochastic_sampler_on_the_distilled_model():
    """The same SMC with the SDE kernel targets another law: its Ẑ misses the exact Z
    (``log Z_disc − log Z = −0.22`` in closed form)."""
    plain = RewardProblem(MODEL.velocity, REWARD, (2,), ALPHA)
    res = replicated(plain, Twisted(), flows.reference_diffusion())
    log_z = MODEL.continuous_log_normalizer(CENTER, PRECISION, ALPHA)
    assert abs(ratio_z(res.log_normalizer, log_z)) > Z_GATE


def test_samplers_take_the_problems_transition():
    """Unguided DPS (ζ = 0) and best-of-N's particles run the problem's kernel (the data's
    moments); the SMC's program is the one with ``diffusion=Renoising()``; a different
    ``diffusion`` is refused."""
    x = align.dps(jax.random.key(3), PROBLEM, num_particles=4096, num_steps=4, guidance_scale=0.0)
    z_mean, z_var = moment_z(x.samples, MODEL.mean, np.diag(MODEL.cov))
    assert np.all(np.abs(z_mean) < Z_GATE) and np.all(np.abs(z_var) < Z_GATE), (z_mean, z_var)

    plain = RewardProblem(MODEL.velocity, REWARD, (2,), ALPHA)
    key = jax.random.key(0)
    kwargs = {"num_particles": 8, "num_steps": 3}
    ours = jax.make_jaxpr(lambda k: align.tds(k, PROBLEM, **kwargs))(key)
    theirs = jax.make_jaxpr(lambda k: align.tds(k, plain, diffusion=Renoising(), **kwargs))(key)
    sde = jax.make_jaxpr(lambda k: align.tds(k, plain, **kwargs))(key)
    assert str(ours) == str(theirs) and str(ours) != str(sde)

    for sampler in (align.smc, align.tds, align.fk_steering, align.dps, align.best_of_n):
        with pytest.raises(ValueError, match="transition"):
            sampler(key, PROBLEM, diffusion=flows.reference_diffusion(), **kwargs)
    with pytest.raises(TypeError, match="`transition`"):
        RewardProblem(MODEL.velocity, REWARD, (2,), ALPHA, transition="renoising")
