"""docs/design.md, "How to add a sampler", followed once: everything new lives in this file.

A new initial stage (antithetic prior draws) and a baseline built on it are written here and
registered; nothing else in the library is edited. The new sampler is then a method of the
registry, of the studies (:mod:`psijax.experiments.methods`), of the command line, and it
keeps ``E[Ẑ] = Z_disc`` on the linear-Gaussian model (``|z| < 4.5`` over 256 runs).
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax import align, cli, flows
from psijax.align.stages import InitialParticles, InitialStage, no_mcmc_info
from psijax.experiments import methods
from psijax.models.linear_gaussian import LinearGaussianFlow
from psijax.models.presets import quadratic_reward

Z_GATE = 4.5
MODEL = LinearGaussianFlow([1.0, -1.0], [[0.09, 0.02], [0.02, 0.16]])
CENTER, PRECISION, ALPHA, STEPS = np.array([0.5, -0.5]), np.diag([1.0, 0.5]), 0.1, 10
PROBLEM = align.RewardProblem(MODEL.velocity, quadratic_reward(CENTER, PRECISION), (2,), ALPHA)


# -- step 1: the stage, a frozen dataclass with sample / check (/ budgeted) ----------------------
@dataclasses.dataclass(frozen=True)
class Antithetic(InitialStage):
    """Prior draws in antithetic pairs ``(z, −z)``: each particle is marginally ``N(0, I)``,
    so its log-weight relative to prior draws is 0; it spends no model evaluation."""

    scale: float = 1.0  # a field: it becomes a keyword of the named sampler

    spends_budget = False

    def check(self, problem, num_particles, mesh) -> None:
        super().check(problem, num_particles, mesh)
        if num_particles % 2:
            raise ValueError(f"`num_particles` must be even for pairs, got {num_particles}.")

    def sample(self, rng_key, problem, num_particles, *, mesh=None) -> InitialParticles:
        self.check(problem, num_particles, mesh)
        half = jax.random.normal(rng_key, (num_particles // 2, *problem.event_shape))
        x = self.scale * jnp.concatenate([half, -half])
        info = no_mcmc_info(log_normalizer=0.0)
        return InitialParticles(x, jnp.zeros(num_particles), jnp.int32(0), info)


# -- step 2: the baseline, a NamedSampler, registered -----------------------------------------
@pytest.fixture(scope="module")
def antithetic_smc():
    sampler = align.register(
        align.NamedSampler(
            "antithetic_smc",
            "Twisted SMC from antithetic prior pairs (a test's own baseline).",
            {"init": Antithetic(), "ess_threshold": 0.7},
        )
    )
    yield sampler
    align.unregister("antithetic_smc")


def test_the_new_sampler_is_everywhere_the_registry_is(antithetic_smc):
    assert align.SAMPLERS["antithetic_smc"] is antithetic_smc
    assert "antithetic_smc" in methods.default_methods()
    assert methods.parse_method("antithetic_smc").sampler == "antithetic_smc"
    assert methods.sampler_options(methods.parse_method("antithetic_smc"), 1000, 25) == {
        "nfe_budget": 1000
    }
    assert "antithetic_smc" in cli._method_names()
    args = cli.build_parser().parse_args(["bench", "--methods", "antithetic_smc"])
    args.check(args)  # the command line accepts it
    params = inspect.signature(antithetic_smc).parameters
    assert params["scale"].default == 1.0 and params["ess_threshold"].default == 0.7
    assert "antithetic" in inspect.getdoc(antithetic_smc)


def test_the_new_sampler_runs_and_is_unbiased(antithetic_smc):
    grid = flows.uniform_grid(STEPS)
    diffusion = flows.reference_diffusion()

    def one(key):
        res = antithetic_smc(key, PROBLEM, num_particles=64, num_steps=STEPS, diffusion=diffusion)
        return res.log_normalizer, res.nfe, res.samples

    log_z, nfe, samples = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 256))
    log_z_disc = MODEL.discretized_log_normalizer(grid, diffusion, CENTER, PRECISION, ALPHA)
    ratio = np.exp(np.asarray(log_z, np.float64) - log_z_disc)
    z = (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))
    assert abs(z) < Z_GATE
    assert np.all(np.asarray(nfe) == 64 * STEPS) and np.all(np.isfinite(samples))
    with pytest.raises(ValueError, match="even"):
        antithetic_smc(jax.random.key(0), PROBLEM, num_particles=7)
    budgeted = antithetic_smc(jax.random.key(0), PROBLEM, nfe_budget=200, num_steps=STEPS)
    assert int(budgeted.nfe) == 200  # N = ⌊B/T⌋ = 20: the stage spends nothing
