r"""A masked-diffusion model of scikit-learn's digits as token sequences (docs/algorithms.md §10.6).

The digits' 8 × 8 images become sequences of ``L = 64`` tokens in one of two token sets:

==========  =====  ===================================================================
name        ``V``  token of a pixel ``p ∈ {0 … 16}`` (the dataset's own grey levels)
==========  =====  ===================================================================
``binary``  2      ``1[p > 8]`` (binarised digits, the paper's binarised-MNIST setting)
``grey``    17     ``p`` itself (no information lost)
==========  =====  ===================================================================

Token ``v`` has the pixel value ``levels[v]`` (``V`` values evenly spaced in ``[−1, 1]``), and a
relaxed one-hot ``E`` reads as the image ``E[:, :V]·levels`` (:func:`to_images`): a mask is
mid-grey 0, and the map is linear, so the digits classifiers of
:mod:`psijax.models.digits_classifiers` become differentiable rewards of ``E``.

The denoiser is a :class:`psijax.models.masked_transformer.MaskedTransformer`, trained with the
MDLM objective (:mod:`psijax.models.mdlm`), the ELBO of the masked process.
"""

import os

import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey
from flax import nnx

from psijax._checks import check_choice, concrete_value
from psijax.discrete.masking import one_hot
from psijax.models import digits, mdlm, module_io
from psijax.models import digits_classifiers as dc
from psijax.models.masked_transformer import MaskedTransformer, MaskedTransformerConfig
from psijax.models.mdlm import TrainConfig, mdlm_loss

__all__ = [
    "TOKEN_SETS",
    "CONFIGS",
    "levels",
    "to_tokens",
    "to_images",
    "tokens_to_images",
    "TrainConfig",
    "mdlm_loss",
    "train",
    "SHIPPED",
    "weights_path",
    "load",
    "BINARY_CLASSIFIERS",
    "CLASSIFIERS",
    "classifier_path",
    "classifier",
]

LENGTH = 64
#: Token set name -> vocabulary size ``V``.
TOKEN_SETS = {"binary": 2, "grey": 17}
#: The transformer of each token set: width 128, 4 blocks of 4 heads, no time conditioning.
CONFIGS = {name: MaskedTransformerConfig(LENGTH, v) for name, v in TOKEN_SETS.items()}


def _vocab(token_set: str) -> int:
    return TOKEN_SETS[check_choice(token_set, "token_set", tuple(TOKEN_SETS))]


def levels(token_set: str) -> Array:
    """The ``(V,)`` pixel values of the tokens, evenly spaced in ``[−1, 1]``."""
    return jnp.linspace(-1.0, 1.0, _vocab(token_set))


def to_tokens(images: ArrayLike, token_set: str) -> Array:
    """Images ``(..., 1, 8, 8)`` in ``[−1, 1]`` (:func:`psijax.models.digits.load_digits`) →
    int32 tokens ``(..., 64)`` (module docstring)."""
    vocab = _vocab(token_set)
    values = concrete_value(images, np.float32)
    if values is not None and not np.all(np.abs(values) <= 1.0):  # NaN fails too
        raise ValueError("`images` must be finite pixel values in [-1, 1].")
    images = jnp.asarray(images, jnp.float32)
    flat = images.reshape(images.shape[:-3] + (LENGTH,))
    if vocab == 2:
        return (flat > 0.0).astype(jnp.int32)
    return jnp.clip(jnp.round((flat + 1.0) * (vocab - 1) / 2.0), 0, vocab - 1).astype(jnp.int32)


def to_images(soft_one_hot: ArrayLike, token_set: str) -> Array:
    """A (relaxed) one-hot ``(..., 64, V + 1)`` → images ``(..., 1, 8, 8)``: ``E[:, :V]·levels``
    (a mask reads as 0); linear, so differentiable in ``E``."""
    e = jnp.asarray(soft_one_hot)
    pixels = e[..., :-1] @ levels(token_set)
    return pixels.reshape(pixels.shape[:-1] + (1, 8, 8))


def tokens_to_images(tokens: ArrayLike, token_set: str) -> Array:
    """Tokens ``(..., 64)`` (mask id ``V`` allowed) → images ``(..., 1, 8, 8)``."""
    vocab = _vocab(token_set)
    values = concrete_value(tokens)
    if values is not None and (np.any(values < 0) or np.any(values > vocab)):
        raise ValueError(f"`tokens` must be ids in [0, {vocab}] ({vocab}: the mask).")
    return to_images(one_hot(tokens, vocab), token_set)


def train(
    rng_key: PRNGKey,
    tokens: ArrayLike,
    token_set: str,
    config: TrainConfig | None = None,
    model_config: MaskedTransformerConfig | None = None,
) -> tuple[MaskedTransformer, Array]:
    """Train the masked-diffusion transformer of ``token_set`` on ``tokens`` ``(N, 64)``;
    returns ``(model, losses per step)`` (:func:`psijax.models.mdlm.train`)."""
    vocab = _vocab(token_set)
    model_config = CONFIGS[token_set] if model_config is None else model_config
    if (model_config.length, model_config.vocab_size) != (LENGTH, vocab):
        raise ValueError(
            f"`model_config` must have length {LENGTH} and vocab_size {vocab} for token set "
            f"{token_set!r}, got {model_config.length} and {model_config.vocab_size}."
        )
    return mdlm.train(rng_key, tokens, model_config, config)


#: The shipped models: token set -> sha256 of ``weights/masked_digits_<name>.safetensors``
#: (checked on load). Written by ``benchmarks/train_masked_digits.py --write-weights``.
SHIPPED: dict[str, str] = {
    "binary": "35581e3e923c3d78acbc8ea316c6d1463d634e0493fc60aa6299fea42767cf23",
    "grey": "b83dd86dbef263366a62d617f62c3c2d846f72f70faa6997a6d232406af81349",
}
_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def weights_path(token_set: str) -> str:
    """Path of the shipped file ``weights/masked_digits_<token_set>.safetensors``."""
    _vocab(token_set)
    return os.path.join(_WEIGHTS, f"masked_digits_{token_set}.safetensors")


def load(token_set: str) -> MaskedTransformer:
    """The shipped denoiser of ``token_set``, its file's sha256 checked against
    :data:`SHIPPED`."""
    path = weights_path(token_set)
    config = CONFIGS[token_set]
    return module_io.load_module(
        lambda: MaskedTransformer(config, rngs=nnx.Rngs(0)), path, SHIPPED[token_set]
    )


#: The training settings of the classifiers shipped for the ``binary`` token set (the shipped
#: grey-image classifiers lose accuracy on binarised images: 0.960 and 0.953 on the test split;
#: these reach 0.970 and 0.976, ``benchmarks/results/train_masked_digits_classifiers.md``).
#: Stronger pixel noise and weight decay than the grey ones: a binarised digit is a cruder
#: image, and the samplers' relaxed one-hots read as grey images between the two levels.
BINARY_CLASSIFIERS = {
    "mlp": dc.ClassifierConfig(noise=0.6, weight_decay=3e-2),
    "cnn": dc.ClassifierConfig(noise=0.6, weight_decay=1e-2),
}
#: sha256 of ``weights/digits_<kind>_binary.safetensors`` (checked on load), written by
#: ``benchmarks/train_masked_digits.py --classifiers --write-weights``.
CLASSIFIERS: dict[str, str] = {
    "mlp": "0959b4a86e6d5312de69f8dd3c4fe7c8b072fb4eed279966a062f52a6de52ab2",
    "cnn": "1ea331c4474b56b24fd2e7b698af25867303a173ce4a906c208e8f790e0cf210",
}


def classifier_path(kind: str, token_set: str) -> str:
    """The shipped file of the classifier ``kind`` (``"mlp"``: seen, ``"cnn"``: held-out) for
    ``token_set``: the grey-image classifiers of :mod:`psijax.models.digits` for ``grey`` (its
    tokens are the dataset's own 17 levels, nothing is lost), retrained ones for ``binary``."""
    kind = check_choice(kind, "kind", tuple(dc.KINDS))
    if _vocab(token_set) == TOKEN_SETS["grey"]:
        return digits.weights_path(kind)
    return os.path.join(_WEIGHTS, f"digits_{kind}_binary.safetensors")


def classifier(kind: str, token_set: str) -> nnx.Module:
    """The shipped classifier ``kind`` for ``token_set`` (:func:`classifier_path`), sha-checked;
    it reads the images of :func:`to_images`."""
    path = classifier_path(kind, token_set)
    if token_set == "grey":
        return digits.load(kind)
    return module_io.load_module(lambda: dc.KINDS[kind](nnx.Rngs(0)), path, CLASSIFIERS[kind])
