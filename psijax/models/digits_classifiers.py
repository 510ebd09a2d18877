"""Two digit classifiers of different architectures: one for rewards, one held out for evaluation.

The paper aligns with one reward and evaluates with another, so that a sampler that merely
exploits the reward model does not look good. Here:

- :class:`MLPClassifier` (the **seen** model): an MLP on the 64 pixels. Its log-probability of a
  target class is the differentiable reward of the class task.
- :class:`ConvClassifier` (the **held-out** model): a small convolutional network, trained
  separately (other seed, other architecture), used only to score samples.

Both take images ``(..., 1, 8, 8)`` in ``[-1, 1]`` (:func:`psijax.models.digits.load_digits`).
They are trained with Gaussian pixel noise (``noise``) so that imperfect generated images are
scored sensibly.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from blackjax.types import Array, ArrayLike, PRNGKey
from flax import nnx

from psijax._checks import check_int
from psijax.models._training import fit

__all__ = [
    "MLPClassifier",
    "ConvClassifier",
    "ClassifierConfig",
    "KINDS",
    "train_classifier",
    "log_probs",
    "accuracy",
]


class MLPClassifier(nnx.Module):
    """64 pixels → 128 → 128 → 10 logits, GELU."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(64, 128, rngs=rngs)
        self.hidden2 = nnx.Linear(128, 128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, images: Array) -> Array:
        x = jnp.reshape(images, images.shape[:-3] + (64,))
        x = jax.nn.gelu(self.hidden1(x))
        x = jax.nn.gelu(self.hidden2(x))
        return self.out(x)


class ConvClassifier(nnx.Module):
    """3×3 conv (16) → 3×3 conv (32, stride 2) → dense 10, ReLU; channels-last inside."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), strides=(2, 2), rngs=rngs)
        self.out = nnx.Linear(4 * 4 * 32, 10, rngs=rngs)

    def __call__(self, images: Array) -> Array:
        lead = images.shape[:-3]
        x = jnp.reshape(images, (-1, 1, 8, 8)).transpose(0, 2, 3, 1)
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.conv2(x))
        return self.out(x.reshape(x.shape[0], -1)).reshape(lead + (10,))


#: classifier kinds by role
KINDS = {"mlp": MLPClassifier, "cnn": ConvClassifier}


class ClassifierConfig(NamedTuple):
    """Training settings: Adam, minibatches with replacement, Gaussian pixel noise."""

    num_steps: int = 3_000
    batch_size: int = 128
    learning_rate: float = 2e-3
    noise: float = 0.15
    weight_decay: float = 1e-4


def log_probs(model: nnx.Module, images: ArrayLike) -> Array:
    """Log class probabilities ``(..., 10)`` of images ``(..., 1, 8, 8)``."""
    return jax.nn.log_softmax(model(jnp.asarray(images, jnp.float32)), axis=-1)


def accuracy(model: nnx.Module, images: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of ``images`` whose most probable class is ``labels``."""
    predicted = jnp.argmax(model(jnp.asarray(images, jnp.float32)), axis=-1)
    return float(jnp.mean(predicted == jnp.asarray(labels)))


def train_classifier(
    kind: str,
    rng_key: PRNGKey,
    images: ArrayLike,
    labels: ArrayLike,
    config: ClassifierConfig | None = None,
) -> tuple[nnx.Module, Array]:
    """Train a classifier of ``kind`` (``"mlp"`` or ``"cnn"``) by cross-entropy; returns
    ``(model, losses per step)``. Reproducible from ``rng_key``; the steps run in one scan."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {sorted(KINDS)}, got {kind!r}.")
    config = ClassifierConfig() if config is None else config
    num_steps = check_int(config.num_steps, "config.num_steps")
    batch_size = check_int(config.batch_size, "config.batch_size")
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    key_init, key_steps = jax.random.split(rng_key)
    graphdef, params = nnx.split(KINDS[kind](nnx.Rngs(key_init)), nnx.Param)
    optimizer = optax.adamw(
        optax.cosine_decay_schedule(config.learning_rate, num_steps),
        weight_decay=config.weight_decay,
    )

    def loss_fn(params, key):
        key_batch, key_noise = jax.random.split(key)
        idx = jax.random.randint(key_batch, (batch_size,), 0, images.shape[0])
        x = images[idx] + config.noise * jax.random.normal(key_noise, images[idx].shape)
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()

    params, losses = fit(loss_fn, params, optimizer, key_steps, num_steps)
    return nnx.merge(graphdef, params), losses
