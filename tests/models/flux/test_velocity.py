"""The FLUX model as a velocity field: conditioning checks, vmap = batch, Ψ-Sampler end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from psijax import align
from psijax.flows import ode
from psijax.models import flux

H, W, LT, C = 4, 4, 3, 4  # packed token grid, text length, channels


@pytest.fixture(scope="module")
def tiny():
    config = flux.preset("tiny", guidance_embed=True)
    model = flux.Flux(config, rngs=nnx.Rngs(3))
    rng = np.random.default_rng(0)
    cond = flux.conditioning(
        txt=rng.standard_normal((LT, config.context_in_dim)),
        y=rng.standard_normal(config.vec_in_dim),
        img_ids=flux.image_ids(2 * H, 2 * W),
        guidance=3.5,
    )
    return model, cond


def test_vmapped_velocity_equals_the_batched_model(tiny):
    model, cond = tiny
    velocity_fn = flux.to_velocity_fn(model, cond)
    x = jax.random.normal(jax.random.key(1), (3, H * W, C))
    t = jnp.float32(0.7)
    got = jax.jit(jax.vmap(velocity_fn, in_axes=(0, None)))(x, t)
    expected = jax.jit(model, static_argnames="options")(
        x,
        cond.img_ids,
        jnp.broadcast_to(cond.txt, (3,) + cond.txt.shape),
        cond.txt_ids,
        jnp.full((3,), t),
        jnp.broadcast_to(cond.y, (3,) + cond.y.shape),
        jnp.full((3,), 3.5),
        options=flux.FluxOptions(path="reference"),
    )
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    # The velocity is a Partial: jit can take it as an argument (parameters as inputs).
    again = jax.jit(lambda f, x: f(x, t))(velocity_fn, x[0])
    np.testing.assert_allclose(again, got[0], atol=1e-5, rtol=1e-5)


def test_time_only_work_is_shared_across_particles(tiny):
    """Under vmap over particles with a shared time, no modulation matmul is batched."""
    model, cond = tiny
    velocity_fn = flux.to_velocity_fn(model, cond)
    x = jnp.zeros((5, H * W, C))
    jaxpr = jax.make_jaxpr(jax.vmap(velocity_fn, in_axes=(0, None)))(x, 0.5)
    hidden, blocks = model.config.hidden_size, model.config.depth
    # The stacked double-block modulation: (blocks, 1, 6·hidden) — computed once, not per particle.
    shapes = [tuple(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars]
    assert (blocks, 1, 6 * hidden) in shapes
    assert (5, blocks, 1, 6 * hidden) not in shapes and (blocks, 5, 6 * hidden) not in shapes


def test_conditioning_errors_name_the_argument(tiny):
    model, cond = tiny
    with pytest.raises(ValueError, match="`y`"):
        flux.to_velocity_fn(model, cond._replace(y=cond.y[:-1]))
    with pytest.raises(ValueError, match="`txt_ids`"):
        flux.to_velocity_fn(model, cond._replace(txt_ids=cond.txt_ids[:-1]))
    with pytest.raises(ValueError, match="pass `guidance`"):
        flux.to_velocity_fn(model, cond._replace(guidance=None))
    with pytest.raises(ValueError, match="`img_cond`"):
        flux.to_velocity_fn(model, cond._replace(img_cond=jnp.zeros((H * W, C))))
    with pytest.raises(TypeError, match="`options`"):
        flux.to_velocity_fn(model, cond, options="fast")
    fill = flux.Flux(flux.preset("tiny", in_channels=12), rngs=nnx.Rngs(0))
    fill_cond = flux.conditioning(jnp.zeros((LT, 32)), jnp.zeros(32), flux.image_ids(2 * H, 2 * W))
    with pytest.raises(ValueError, match="8 conditioning channels"):
        flux.to_velocity_fn(fill, fill_cond)
    extra = jnp.ones((H * W, 8))
    v = flux.to_velocity_fn(fill, fill_cond._replace(img_cond=extra))(jnp.zeros((H * W, C)), 0.5)
    assert v.shape == (H * W, 4)


def test_auto_attention_takes_cudnn_only_for_16_bit_on_nvidia_gpus():
    from psijax.models.flux.layers import recompute_attention
    from psijax.models.flux.model import _fast_attention

    device = jax.devices()[0]
    nvidia = device.platform == "gpu" and "nvidia" in device.device_kind.lower()
    assert _fast_attention("auto", jnp.float32) is recompute_attention
    assert (_fast_attention("auto", jnp.bfloat16) is recompute_attention) is not nvidia
    assert _fast_attention("recompute", jnp.bfloat16) is recompute_attention
    assert flux.FluxOptions().attention == "auto"
    with pytest.raises(ValueError, match="`attention`"):
        flux.FluxOptions(attention="flash")


def test_options_and_config_errors():
    with pytest.raises(ValueError, match="`path`"):
        flux.FluxOptions(path="slow")
    with pytest.raises(ValueError, match="reference path is float32"):
        flux.FluxOptions(path="reference", dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="cudnn"):
        flux.FluxOptions(attention="cudnn")  # float32
    with pytest.raises(ValueError, match="`axes_dim`"):
        flux.preset("tiny", axes_dim=(4, 4, 4))
    with pytest.raises(ValueError, match="`num_heads`"):
        flux.FluxConfig(hidden_size=30, num_heads=4, axes_dim=(2, 2, 2))
    with pytest.raises(ValueError, match="`name`"):
        flux.preset("pro")


def test_psi_sampler_end_to_end_on_a_tiny_random_flux(tiny):
    """Ψ-Sampler on a random FLUX with reward −mean((x̂0 − c)²) moves samples towards c."""
    model, cond = tiny
    velocity_fn = flux.to_velocity_fn(model, cond)
    target = jnp.full((H * W, C), 0.5)

    def reward(x0):
        return -jnp.mean((x0 - target) ** 2)

    problem = align.RewardProblem(velocity_fn, reward, event_shape=(H * W, C), alpha=0.03)
    kw = dict(num_particles=4, num_steps=4, num_chains=2, burn_in=3, num_kept=2)
    # One jit around the whole sampler: one compilation instead of many eager ones.
    result = jax.jit(lambda key: align.psi_sampler(key, problem, **kw))(jax.random.key(0))
    assert result.samples.shape == (4, H * W, C)
    assert np.all(np.isfinite(result.samples)) and np.all(np.isfinite(result.log_weights))
    np.testing.assert_allclose(result.rewards, jax.vmap(reward)(result.samples), rtol=1e-5)
    # NFE: 2 chains × (1 initial + 3 burn-in + 2 kept) evaluations, then 4 particles × 4 steps.
    assert result.info.nfe_init == 2 * (1 + 3 + 2) and result.info.nfe_sampling == 4 * 4
    # The model's own samples (Euler ODE on the same grid, no reward) are far from c.
    x1 = jax.random.normal(jax.random.key(1), (4, H * W, C))
    grid = flux.time_grid(4, shift=False)
    plain = jax.jit(jax.vmap(lambda x: reward(ode.euler_sample(velocity_fn, x, grid))))(x1)
    assert float(jnp.mean(result.rewards)) > float(jnp.mean(plain)) + 1.0
