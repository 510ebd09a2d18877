"""A class-conditional rectified flow on handwritten digits: a small FLUX learned on real images.

The paper's experiments align FLUX. This is the same experiment in miniature, on a CPU:
scikit-learn's bundled digits (1,797 images of 8×8 pixels, no download) are the "latent",
scaled to ``[-1, 1]`` and packed in FLUX's layout (2×2 patches: 16 tokens of 4 channels,
:func:`psijax.models.flux.pack`). The velocity field is our FLUX port
(:class:`psijax.models.flux.Flux`, preset :data:`CONFIG`), conditioned through its text and
pooled inputs on a learned per-class embedding that stands in for the text encoder
(``NUM_TEXT_TOKENS`` tokens and a pooled vector per class, plus :data:`NULL_CLASS` for
unconditional use). It is trained as a rectified flow (Liu et al. 2023; FLUX's convention,
docs/algorithms.md §1): ``x_t = (1 − t)·x0 + t·ε``,

    min_θ  E_{t ~ U(0, 1), x0, ε, c} ‖ v_θ(x_t, t, c) − (ε − x0) ‖²,

with the class dropped to :data:`NULL_CLASS` with probability ``class_dropout`` so that one
network is both the conditional and the unconditional model.

:func:`velocity_fn` returns a pure single-sample ``v(x, t)`` for one class, ready for
:class:`psijax.align.RewardProblem`.
"""

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.types import Array, ArrayLike, PRNGKey
from flax import nnx

from psijax._checks import check_int, concrete_value
from psijax.models import digits_classifiers, flux, module_io
from psijax.models._training import fit

__all__ = [
    "CONFIG",
    "IMAGE_SIZE",
    "NULL_CLASS",
    "NUM_CLASSES",
    "NUM_TEXT_TOKENS",
    "TrainConfig",
    "DigitsFlow",
    "load_digits",
    "to_tokens",
    "to_images",
    "conditioning",
    "velocity_fn",
    "flow_loss",
    "train",
    "SHIPPED",
    "weights_path",
    "load",
]

IMAGE_SIZE = 8
NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # the unconditional "class"
NUM_TEXT_TOKENS = 4
#: The transformer: 4 input channels (one grey channel in 2×2 patches), 2 + 2 blocks, 4 heads of
#: 16, context and pooled width 32 (the class embeddings).
CONFIG = flux.preset("tiny64", in_channels=4, out_channels=4)

#: The shipped models: name -> sha256 of ``weights/digits_<name>.safetensors`` (checked on load).
#: ``flow``: the rectified flow on the data; ``reflow``: trained on (noise, ODE sample) pairs of
#: ``flow``; ``mlp`` / ``cnn``: the seen and held-out classifiers
#: (:mod:`psijax.models.digits_classifiers`). Written by ``benchmarks/train_digits.py``.
SHIPPED: dict[str, str] = {
    "flow": "8d94e299a4c0839c49d658c212ddaa3ca2f77514fbd9979d48052d61db2c9f3f",
    "reflow": "c66951c17dedfc6335b6cb5ad111913823daad42d4239867e9371cb503f738cf",
    "mlp": "cd079a06ed5051960373cb9c6232b18b126af90c8da3ef56d6fd9210bbae2ca1",
    "cnn": "d8a7105b5e617d55002a3c1057a9cc2262fb6683a8f9934aa71f7ce2d8e283d2",
}
_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
_IMG_IDS = np.asarray(flux.image_ids(IMAGE_SIZE, IMAGE_SIZE))  # (16, 3)
_TXT_IDS = np.zeros((NUM_TEXT_TOKENS, 3), np.float32)


class TrainConfig(NamedTuple):
    """Rectified-flow training settings (Adam with a cosine-decayed step size)."""

    num_steps: int = 6_000
    batch_size: int = 96
    learning_rate: float = 2e-3
    class_dropout: float = 0.1


DATA_NEEDS_SKLEARN = (
    "the digits data need scikit-learn (its bundled copy of the dataset): install it with "
    '`pip install -e ".[digits]"` from a clone, or `pip install scikit-learn`'
)
"""The one-line message of the ``ImportError`` of :func:`load_digits` without scikit-learn."""


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images (1797, 1, 8, 8) in [-1, 1], labels (1797,))``.

    The pixel values 0–16 map linearly to ``[-1, 1]``. float32 and int32, in the dataset's order.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(DATA_NEEDS_SKLEARN) from error
    data = sklearn_digits()
    images = (data.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    return images, data.target.astype(np.int32)


def to_tokens(images: ArrayLike) -> Array:
    """Images ``(..., 1, 8, 8)`` → packed tokens ``(..., 16, 4)`` (:func:`flux.pack`)."""
    return flux.pack(images)


def to_images(tokens: ArrayLike) -> Array:
    """Packed tokens ``(..., 16, 4)`` → images ``(..., 1, 8, 8)`` (:func:`flux.unpack`)."""
    return flux.unpack(tokens, IMAGE_SIZE, IMAGE_SIZE)


class DigitsFlow(nnx.Module):
    """The FLUX transformer and the class embeddings that stand in for its text encoder.

    ``class_txt`` ``(11, NUM_TEXT_TOKENS, 32)`` and ``class_y`` ``(11, 32)``: row ``c`` is
    class ``c``'s text states and pooled vector, row :data:`NULL_CLASS` the unconditional one.
    """

    def __init__(self, rngs: nnx.Rngs, config: flux.FluxConfig = CONFIG):
        self.flux = flux.Flux(config, rngs=rngs)
        shape = (NUM_CLASSES + 1, NUM_TEXT_TOKENS, config.context_in_dim)
        self.class_txt = nnx.Param(jax.random.normal(rngs.params(), shape))
        self.class_y = nnx.Param(
            jax.random.normal(rngs.params(), (NUM_CLASSES + 1, config.vec_in_dim))
        )

    def __call__(self, x: Array, t: Array, labels: Array) -> Array:
        """Velocities of a batch: tokens ``(B, 16, 4)``, times ``(B,)``, classes ``(B,)``."""
        txt = self.class_txt[...][labels]
        y = self.class_y[...][labels]
        return self.flux(x, _IMG_IDS, txt, _TXT_IDS, t, y)


def conditioning(model: DigitsFlow, label) -> flux.FluxConditioning:
    """The FLUX conditioning of class ``label`` (``NULL_CLASS``: unconditional).

    ``label`` may be traced (a ``vmap`` over classes); a concrete one is checked.
    """
    value = concrete_value(label)
    if value is not None and (
        value.shape != () or value.dtype.kind not in "iu" or not 0 <= value <= NULL_CLASS
    ):
        raise ValueError(
            f"`label` must be an int in [0, {NULL_CLASS}] ({NULL_CLASS}: none), got {label!r}."
        )
    label = jnp.asarray(label, jnp.int32)
    return flux.conditioning(
        model.class_txt[...][label],
        model.class_y[...][label],
        _IMG_IDS,
        txt_ids=_TXT_IDS,
    )


def velocity_fn(model: DigitsFlow, label=NULL_CLASS, options=None):
    """Single-sample ``v(x, t)`` on packed tokens ``(16, 4)`` of class ``label``."""
    return flux.to_velocity_fn(model.flux, conditioning(model, label), options)


def flow_loss(model: DigitsFlow, rng_key: PRNGKey, x0, labels, dropout: float, x1=None):
    """Mean rectified-flow loss of a batch of packed tokens ``x0`` ``(B, 16, 4)``.

    ``x1``: the noise coupled to each ``x0`` (reflow pairs); ``None`` draws it independently.
    """
    key_t, key_eps, key_drop = jax.random.split(rng_key, 3)
    t = jax.random.uniform(key_t, (x0.shape[0],))
    eps = jax.random.normal(key_eps, x0.shape) if x1 is None else x1
    drop = jax.random.bernoulli(key_drop, dropout, labels.shape)
    labels = jnp.where(drop, NULL_CLASS, labels)
    x_t = (1.0 - t)[:, None, None] * x0 + t[:, None, None] * eps
    return jnp.mean((model(x_t, t, labels) - (eps - x0)) ** 2)


def train(
    rng_key: PRNGKey,
    images: ArrayLike,
    labels: ArrayLike,
    config: TrainConfig | None = None,
    noise: ArrayLike | None = None,
) -> tuple[DigitsFlow, Array]:
    """Train a :class:`DigitsFlow` by rectified flow; returns ``(model, losses per step)``.

    ``noise``: reflow. Packed tokens ``(N, 16, 4)``, the ``x1`` each image was generated from
    (``images[i] = Φ_1(noise[i])`` under a trained model), used as the coupled ``ε`` instead of
    fresh draws, so the learned paths are (nearly) straight (Liu et al. 2023).

    Reproducible from ``rng_key``: the initialisation, the minibatches (uniform with
    replacement), times, noise and class dropout all derive from it. The steps run in one
    ``lax.scan``.
    """
    config = TrainConfig() if config is None else config
    num_steps = check_int(config.num_steps, "config.num_steps", minimum=1)
    batch_size = check_int(config.batch_size, "config.batch_size", minimum=1)
    if not config.learning_rate > 0:
        raise ValueError(f"`config.learning_rate` must be > 0, got {config.learning_rate}.")
    if not 0.0 <= config.class_dropout < 1.0:
        raise ValueError(f"`config.class_dropout` must be in [0, 1), got {config.class_dropout}.")
    tokens = to_tokens(jnp.asarray(images, jnp.float32))
    labels = jnp.asarray(labels, jnp.int32)
    if tokens.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`images` and `labels` must have the same length, got {tokens.shape[0]} and "
            f"{labels.shape[0]}."
        )
    if noise is not None:
        noise = jnp.asarray(noise, jnp.float32)
        if noise.shape != tokens.shape:
            raise ValueError(
                f"`noise` must have the packed shape {tokens.shape} of `images`, got {noise.shape}."
            )
    key_init, key_steps = jax.random.split(rng_key)
    model = DigitsFlow(nnx.Rngs(key_init))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, key):
        key_batch, key_loss = jax.random.split(key)
        idx = jax.random.randint(key_batch, (batch_size,), 0, tokens.shape[0])
        x1 = None if noise is None else noise[idx]
        m = nnx.merge(graphdef, params, rest)
        return flow_loss(m, key_loss, tokens[idx], labels[idx], config.class_dropout, x1)

    optimizer = optax.adam(optax.cosine_decay_schedule(config.learning_rate, num_steps))
    params, losses = fit(loss_fn, params, optimizer, key_steps, num_steps)
    return nnx.merge(graphdef, params, rest), losses


def weights_path(name: str) -> str:
    """Path of the shipped file ``weights/digits_<name>.safetensors``."""
    if name not in ("flow", "reflow", "mlp", "cnn"):
        raise ValueError(f"`name` must be 'flow', 'reflow', 'mlp' or 'cnn', got {name!r}.")
    return os.path.join(_WEIGHTS, f"digits_{name}.safetensors")


def load(name: str) -> nnx.Module:
    """A shipped model: ``"flow"`` / ``"reflow"`` (:class:`DigitsFlow`) or ``"mlp"`` / ``"cnn"``
    (the classifiers), its file's sha256 checked against :data:`SHIPPED`."""
    path = weights_path(name)
    if name in ("flow", "reflow"):
        make = lambda: DigitsFlow(nnx.Rngs(0))  # noqa: E731
    else:
        make = lambda: digits_classifiers.KINDS[name](nnx.Rngs(0))  # noqa: E731
    return module_io.load_module(make, path, SHIPPED[name])
