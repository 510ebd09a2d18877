"""The torch bridge against a pure-JAX re-implementation of the same small torch model, under
``jit(vmap(...))`` and ``grad``; NaN scores give zero-weight particles in a sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from psijax import align  # noqa: E402
from psijax.models.linear_gaussian import LinearGaussianFlow  # noqa: E402
from psijax.rewards import from_torch  # noqa: E402

EVENT = (3, 8, 6)


class TinyCNN(torch.nn.Module):
    """conv 3→4 (3×3, padding 1) → tanh → mean over pixels → linear 4→1."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean(dim=(2, 3)))[:, 0]


@pytest.fixture(scope="module")
def pair():
    model = TinyCNN().eval()
    w = model.conv.weight.detach().numpy()
    b = model.conv.bias.detach().numpy()
    fw = model.fc.weight.detach().numpy()
    fb = model.fc.bias.detach().numpy()

    def in_jax(x):  # one sample (3, H, W)
        y = jax.lax.conv_general_dilated(x[None], w, (1, 1), ((1, 1), (1, 1)))[0]
        h = jnp.tanh(y + b[:, None, None]).mean(axis=(1, 2))
        return (fw @ h + fb)[0]

    return from_torch(model, EVENT), in_jax


def test_values_and_gradients_equal_the_jax_model_under_jit_vmap(pair):
    bridged, in_jax = pair
    x = jax.random.normal(jax.random.key(0), (5, *EVENT))
    np.testing.assert_allclose(jax.jit(jax.vmap(bridged))(x), jax.vmap(in_jax)(x), atol=1e-5)
    np.testing.assert_allclose(bridged(x), jax.vmap(in_jax)(x), atol=1e-5)  # eager, batched
    grad = jax.jit(jax.vmap(jax.grad(bridged)))(x)
    np.testing.assert_allclose(grad, jax.vmap(jax.grad(in_jax))(x), atol=1e-5)
    # a scalar of the whole batch, with a cotangent that is not all ones
    c = jnp.arange(1.0, 6.0)
    total = jax.jit(jax.grad(lambda y: jnp.sum(c * bridged(y))))(x)
    want = jax.grad(lambda y: jnp.sum(c * jax.vmap(in_jax)(y)))(x)
    np.testing.assert_allclose(total, want, atol=1e-5)
    # nested leading axes
    z = x.reshape(5, 1, *EVENT)
    np.testing.assert_allclose(bridged(z)[:, 0], bridged(x), atol=1e-6)


def test_bad_functions_and_shapes_are_named():
    with pytest.raises(TypeError, match="fn"):
        from_torch("not a function", EVENT)
    with pytest.raises(ValueError, match="event_shape"):
        from_torch(TinyCNN(), (3, 0, 6))
    bridged = from_torch(TinyCNN(), EVENT)
    with pytest.raises(ValueError, match=r"\(\.\.\., \(3, 8, 6\)\)"):
        bridged(jnp.zeros((2, 3, 8, 5)))
    wrong = from_torch(lambda t: t.sum(dim=1), EVENT)
    with pytest.raises(ValueError, match="one score per sample"):
        wrong(jnp.zeros((2, *EVENT)))


def test_a_nan_torch_score_gives_that_particle_zero_weight():
    """A sampler whose reward is a torch function returning NaN on part of the space."""

    def torch_reward(x):
        score = -((x - 0.5) ** 2).sum(dim=1)
        return torch.where(x[:, 0] > 1.4, torch.full_like(score, float("nan")), score)

    model = LinearGaussianFlow([1.0, -1.0], [[0.09, 0.02], [0.02, 0.16]])
    problem = align.RewardProblem(model.velocity, from_torch(torch_reward, (2,)), (2,), 0.5)
    res = jax.jit(lambda key: align.fk_steering(key, problem, num_particles=64, num_steps=8))(
        jax.random.key(3)
    )
    hit = np.asarray(res.samples[:, 0] > 1.4)
    assert hit.any() and (~hit).any()
    assert np.all(res.log_weights[hit] == -np.inf)
    assert np.all(np.isnan(res.rewards[hit]))
    assert np.isfinite(res.log_normalizer)
