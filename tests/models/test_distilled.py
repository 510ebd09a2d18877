"""The learned distilled toy models: shipped weights, their one-step prediction against the exact
flow map at every t, the re-noising kernel keeping their own distribution, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax import flows, metrics
from psijax.flows import ode
from psijax.flows.distilled import Renoising
from psijax.models import distilled, presets, reflow
from psijax.models.linear_gaussian import LinearGaussianFlow

N = 2000
R = 10
Z_GATE = 4.5


@pytest.fixture(scope="module", params=sorted(distilled.SHIPPED))
def shipped(request):
    name = request.param
    return getattr(presets, name)(), distilled.load_distilled(name)


def one_step(velocity, key, n=N):
    x1 = jax.random.normal(key, (n, 2))
    return x1 - jax.vmap(velocity, in_axes=(0, None))(x1, 1.0)


def test_prediction_is_the_flow_map_at_every_time(shipped):
    """``x − t·u(x, t)`` against the exact ODE map from fresh points of the interpolant
    (measured 0.002–0.03 by benchmarks/train_distilled.py; mode std 0.5, modes 4 apart)."""
    data, (velocity, _, config) = shipped
    assert config == distilled.DISTILLED_CONFIG
    for i, t in enumerate((1.0, 0.6, 0.2)):
        k0, k1 = jax.random.split(jax.random.key(i))
        xt = (1 - t) * data.sample(k0, 100) + t * jax.random.normal(k1, (100, 2))
        exact = jax.vmap(lambda x, t=t: ode.flow_map(data.velocity, x, t, rtol=1e-5, atol=1e-5))
        target, _ = exact(xt)
        pred = xt - t * jax.vmap(velocity, in_axes=(0, None))(xt, t)
        assert float(jnp.mean(jnp.linalg.norm(pred - target, axis=-1))) < 0.05, t


def test_renoising_keeps_the_models_own_distribution(shipped):
    """MMD² between 4-step re-noising draws and the model's own one-step draws, against its
    spread between independent one-step sets (a z-gate); the stochastic sampler fails it."""
    data, (velocity, _, _) = shipped
    own = one_step(velocity, jax.random.key(100))
    null = [float(metrics.mmd(one_step(velocity, jax.random.key(r)), own)) for r in range(R)]
    mean, sd = np.mean(null), np.std(null, ddof=1)
    keys = jax.random.split(jax.random.key(7), N)
    x1 = jax.random.normal(jax.random.key(8), (N, 2))

    def z(kernel, steps):
        grid = flows.uniform_grid(steps)
        one = lambda k, x: flows.sample(k, velocity, x, grid, kernel)  # noqa: E731
        return (float(metrics.mmd(jax.jit(jax.vmap(one))(keys, x1), own)) - mean) / sd

    assert abs(z(Renoising(), 4)) < Z_GATE
    assert z(flows.reference_diffusion(), 25) > Z_GATE
    assert float(metrics.mode_tv(own, data.means, data.weights)) < 0.05


def test_training_learns_a_closed_form_flow_map():
    """On Gaussian data the flow map is affine (``LinearGaussianFlow.flow_map``): a small
    training run lowers the loss and predicts it."""
    model = LinearGaussianFlow([1.0, -0.5], [[0.3, 0.1], [0.1, 0.2]])
    values, vectors = np.linalg.eigh(model.cov)
    root = jnp.asarray((vectors * np.sqrt(values)) @ vectors.T, jnp.float32)

    def sample(key, n):
        return model.mean + jax.random.normal(key, (n, 2)) @ root

    oracle = LinearGaussianFlow(model.mean, model.cov, distilled=True)

    def flow_map(x, t):  # the distilled model's one-step prediction is the exact flow map
        return x - t * oracle.velocity(x, t)

    config = distilled.DISTILLED_CONFIG._replace(
        width=32, depth=2, num_pairs=4096, num_train_steps=600, batch_size=256
    )
    params, losses = distilled.train_distilled(jax.random.key(0), sample, flow_map, config)
    assert float(losses[-50:].mean()) < 0.05 * float(losses[:50].mean())
    velocity = reflow.velocity_fn(params, config)
    x = jax.random.normal(jax.random.key(1), (200, 2))
    for t in (1.0, 0.5):
        pred = x - t * jax.vmap(velocity, in_axes=(0, None))(x, t)
        exact = np.asarray(x) @ model.flow_map(t)[0].T + model.flow_map(t)[1]
        assert float(np.mean(np.linalg.norm(np.asarray(pred) - exact, axis=-1))) < 0.1


# Recorded from the shipped files (benchmarks/train_distilled.py --seed 0) on CPU, float32.
EXPECTED_VELOCITIES = {
    "six_modes": [[0.05639686, 0.35213351], [-1.87995315, 3.40633273], [3.48574877, -0.42902783]],
    "unequal_six_modes": [
        [-1.85491276, -2.84631515],
        [-1.88865328, 3.40740681],
        [3.48838520, -0.42249021],
    ],
}


@pytest.mark.parametrize("name", sorted(distilled.SHIPPED))
def test_shipped_outputs_are_reproducible(name):
    """u(x, t) at fixed points: a changed file or network definition is caught even if it loads."""
    velocity, _, _ = distilled.load_distilled(name)
    x = jnp.array([[0.0, 0.0], [1.5, -2.0], [-3.0, 0.5]])
    t = jnp.array([1.0, 0.5, 0.1])
    np.testing.assert_allclose(
        jax.vmap(velocity)(x, t), EXPECTED_VELOCITIES[name], rtol=1e-4, atol=1e-5
    )


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="`name`"):
        distilled.load_distilled("rings")
