"""The masked-diffusion transformer: shapes, the mask logit, gradients in E, time, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from psijax.align import discrete as d
from psijax.models import masked_transformer as mt

CONFIG = mt.MaskedTransformerConfig(length=6, vocab_size=5, width=16, depth=2, num_heads=2)


def _soft(key, shape=(6, 6)):
    return jax.nn.softmax(3.0 * jax.random.normal(key, shape), axis=-1)


def test_logits_shape_mask_column_batching_and_gradient():
    model = mt.MaskedTransformer(CONFIG, rngs=nnx.Rngs(0))
    fn = mt.logits_fn(model)
    e = _soft(jax.random.key(1))
    logits = fn(e, 0.3)
    assert logits.shape == (6, 6) and logits.dtype == jnp.float32
    assert np.all(np.isneginf(logits[:, -1])) and np.all(np.isfinite(logits[:, :-1]))
    batch = jnp.stack([e, _soft(jax.random.key(2))])
    np.testing.assert_allclose(model(batch, 0.3)[0], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(fn, (0, None))(batch, 0.3), model(batch), atol=1e-6)
    # differentiable in E (a matrix-product embedding), and bidirectional: the first
    # position's logits depend on the last position's input
    grad = jax.grad(lambda e: jax.nn.log_softmax(fn(e, 0.3)[0, :-1])[2])(e)
    assert np.all(np.isfinite(grad)) and np.abs(grad[-1]).max() > 1e-6
    # without time conditioning the output does not depend on t
    np.testing.assert_array_equal(fn(e, 0.9), logits)


def test_time_conditioning_and_bf16_compute():
    config = mt.MaskedTransformerConfig(
        6, 5, width=16, depth=1, num_heads=2, time_conditioning=True
    )
    model = mt.MaskedTransformer(config, rngs=nnx.Rngs(0))
    e = _soft(jax.random.key(1))
    assert np.abs(model(e, 0.1) - model(e, 0.9))[:, :-1].max() > 1e-4
    low = mt.MaskedTransformerConfig(6, 5, width=16, depth=1, num_heads=2, dtype=jnp.bfloat16)
    out = mt.MaskedTransformer(low, rngs=nnx.Rngs(0))(e)
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out[:, :-1]))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="`width` must be a multiple of `num_heads`"):
        mt.MaskedTransformerConfig(6, 5, width=10, num_heads=4)
    with pytest.raises(ValueError, match="`depth` must be an int >= 1"):
        mt.MaskedTransformerConfig(6, 5, depth=0)
    model = mt.MaskedTransformer(CONFIG, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`E` must have shape \(\.\.\., 6, 6\)"):
        model(jnp.zeros((6, 5)))


def test_aligned_with_a_prompt_and_the_sparse_first_order_proposal():
    """The transformer through the discrete SMC: the prompt stays, every mask is filled, the
    weights are finite and normalised."""
    model = mt.MaskedTransformer(CONFIG, rngs=nnx.Rngs(0))
    prompt = jnp.array([1, 5, 5, 2, 5, 5])
    score = jnp.arange(6.0).at[5].set(0.0)
    problem = d.DiscreteProblem(
        mt.logits_fn(model), lambda e: jnp.mean(e @ score), 6, 5, beta=0.5, prompt=prompt
    )
    result = jax.jit(
        lambda k: d.smc_first_order(
            k,
            problem,
            num_particles=6,
            num_steps=4,
            proposal=d.FirstOrder(top_k=2),
            particle_chunk=4,
        )
    )(jax.random.key(0))
    samples = np.asarray(result.samples)
    assert np.all(samples[:, [0, 3]] == [1, 2]) and np.all(samples < 5)
    np.testing.assert_allclose(jax.nn.logsumexp(result.log_weights), 0.0, atol=1e-5)
    assert np.isfinite(float(result.log_normalizer))
