r"""The MDLM training objective of the masked-diffusion transformers (docs/algorithms.md §10.6).

For ``t ~ U(0, 1)`` (stratified over the batch), ``x_t`` masks each token of a data sequence
``x_0`` with probability ``1 − α(t)``, and

.. math::

    \mathcal{L} = \mathbb{E}_t\Big[\frac{−α'(t)}{1 − α(t)}\,\frac{1}{L}
    \sum_{l:\ x_t^l = m} −\log μ_θ(x_0^l \mid x_t)\Big]

(for the linear schedule the weight is ``1/t``). Any positive weight has the exact
conditionals as its minimiser; this one makes the loss a bound on ``−log p(x_0)/L``. Shared
by :mod:`psijax.models.masked_digits` and :mod:`psijax.models.masked_words`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from blackjax.types import Array, ArrayLike, PRNGKey
from flax import nnx

from psijax._checks import check_int
from psijax.discrete.masking import mask, one_hot
from psijax.discrete.schedules import get_schedule
from psijax.models._training import fit
from psijax.models.masked_transformer import MaskedTransformer, MaskedTransformerConfig

__all__ = ["TrainConfig", "mdlm_loss", "train"]


class TrainConfig(NamedTuple):
    """MDLM training settings (Adam with a cosine-decayed step size)."""

    num_steps: int = 1_200
    batch_size: int = 128
    learning_rate: float = 1e-3
    schedule: str = "linear"


def mdlm_loss(
    model: MaskedTransformer, rng_key: PRNGKey, tokens: ArrayLike, schedule="linear"
) -> Array:
    """The MDLM loss of a batch of token sequences ``(B, L)`` (module docstring)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    batch, length = tokens.shape
    vocab = model.config.vocab_size
    alpha = get_schedule(schedule)
    key_t, key_mask = jax.random.split(rng_key)
    # stratified times: one uniform shift of the grid (b + u)/B, kept away from t = 0
    u = jax.random.uniform(key_t)
    t = jnp.clip((jnp.arange(batch) + u) / batch, 1e-3, 1.0)
    a_t, da_t = jax.vmap(jax.value_and_grad(alpha))(t)
    weight = -da_t / jnp.maximum(1.0 - a_t, 1e-6)
    x_t = jax.vmap(mask, in_axes=(0, 0, 0, None))(
        jax.random.split(key_mask, batch), tokens, a_t, vocab
    )
    logits = model(one_hot(x_t, vocab), t)
    log_probs = jax.nn.log_softmax(logits[..., :-1], axis=-1)
    nll = -jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    masked = (x_t == vocab).astype(jnp.float32)
    return jnp.mean(weight * jnp.sum(masked * nll, axis=-1) / length)


def train(
    rng_key: PRNGKey,
    tokens: ArrayLike,
    model_config: MaskedTransformerConfig,
    config: TrainConfig | None = None,
) -> tuple[MaskedTransformer, Array]:
    """Train a :class:`MaskedTransformer` of ``model_config`` on ``tokens`` ``(N, L)``;
    returns ``(model, losses per step)``. Reproducible from ``rng_key`` (initialisation,
    minibatches uniform with replacement, times and masks); the steps run in one ``lax.scan``
    (:func:`psijax.models._training.fit`)."""
    config = TrainConfig() if config is None else config
    num_steps = check_int(config.num_steps, "config.num_steps")
    batch_size = check_int(config.batch_size, "config.batch_size")
    if not config.learning_rate > 0:
        raise ValueError(f"`config.learning_rate` must be > 0, got {config.learning_rate}.")
    length, vocab = model_config.length, model_config.vocab_size
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2 or tokens.shape[1] != length:
        raise ValueError(f"`tokens` must have shape (N, {length}), got {tokens.shape}.")
    if bool(jnp.any((tokens < 0) | (tokens >= vocab))):
        raise ValueError(f"`tokens` must be ids in [0, {vocab - 1}], got others.")
    key_init, key_steps = jax.random.split(rng_key)
    model = MaskedTransformer(model_config, rngs=nnx.Rngs(key_init))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, key):
        key_batch, key_loss = jax.random.split(key)
        idx = jax.random.randint(key_batch, (batch_size,), 0, tokens.shape[0])
        return mdlm_loss(nnx.merge(graphdef, params, rest), key_loss, tokens[idx], config.schedule)

    optimizer = optax.adam(optax.cosine_decay_schedule(config.learning_rate, num_steps))
    params, losses = fit(loss_fn, params, optimizer, key_steps, num_steps)
    return nnx.merge(graphdef, params, rest), losses
