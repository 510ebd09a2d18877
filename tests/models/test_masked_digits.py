"""The digits as token sequences, and the MDLM training of the masked-diffusion transformer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from psijax.models import digits
from psijax.models import digits_classifiers as dc
from psijax.models import masked_digits as md
from psijax.models.masked_transformer import MaskedTransformer, MaskedTransformerConfig

TINY = MaskedTransformerConfig(64, 17, width=32, depth=1, num_heads=2)


@pytest.fixture(scope="module")
def data():
    return digits.load_digits()


def test_tokens_round_trip_and_soft_images(data):
    images, _ = data
    grey = md.to_tokens(images, "grey")
    assert grey.shape == (1797, 64) and grey.dtype == jnp.int32
    # the dataset's 17 grey levels are the tokens: nothing is lost
    np.testing.assert_array_equal(md.tokens_to_images(grey, "grey"), images)
    binary = md.to_tokens(images, "binary")
    np.testing.assert_array_equal(
        md.tokens_to_images(binary, "binary"), np.where(images > 0, 1, -1)
    )
    # a mask reads as mid-grey 0, and a relaxed one-hot as the expected pixel value
    e = jnp.zeros((64, 3)).at[:, 2].set(1.0).at[0].set(jnp.array([0.25, 0.75, 0.0]))
    image = md.to_images(e, "binary")
    assert image.shape == (1, 8, 8) and float(image[0, 0, 0]) == 0.5
    assert float(jnp.abs(image).sum()) == 0.5
    with pytest.raises(ValueError, match="`token_set` must be one of"):
        md.levels("colour")
    # NaN or out-of-range input is refused, never turned into a plausible token or image
    for bad in (jnp.asarray(images[:2]).at[0, 0, 0, 0].set(jnp.nan), images[:2] * 2.0):
        with pytest.raises(ValueError, match=r"`images` must be finite pixel values in \[-1, 1\]"):
            md.to_tokens(bad, "grey")
    with pytest.raises(ValueError, match=r"`tokens` must be ids in \[0, 2\]"):
        md.tokens_to_images(binary[:2] + 2, "binary")


def test_mdlm_loss_is_the_cross_entropy_bound_and_training_lowers_it(data):
    images, _ = data
    tokens = md.to_tokens(images, "grey")
    model = MaskedTransformer(TINY, rngs=nnx.Rngs(0))
    # the weight 1/t times the ~t·L masked positions: about log V per token at initialisation
    losses = [float(md.mdlm_loss(model, jax.random.key(k), tokens[:256])) for k in range(4)]
    assert abs(np.mean(losses) - np.log(17)) < 0.6, losses
    _, trained = md.train(jax.random.key(0), tokens, "grey", md.TrainConfig(150, 32), TINY)
    assert float(trained[-20:].mean()) < float(trained[:20].mean()) - 0.3


def test_bad_training_input_is_named(data):
    tokens = md.to_tokens(data[0], "binary")
    with pytest.raises(ValueError, match="`model_config` must have length 64 and vocab_size 2"):
        md.train(jax.random.key(0), tokens, "binary", md.TrainConfig(2, 4), TINY)
    with pytest.raises(ValueError, match=r"`tokens` must be ids in \[0, 1\]"):
        md.train(jax.random.key(0), tokens + 1, "binary", md.TrainConfig(2, 4))
    with pytest.raises(ValueError, match=r"`tokens` must have shape \(N, 64\)"):
        md.train(jax.random.key(0), tokens[:, :10], "binary", md.TrainConfig(2, 4))


@pytest.mark.parametrize("token_set", list(md.TOKEN_SETS))
def test_shipped_models_load_checked_and_fit_the_data(data, token_set):
    """The shipped weights load with their sha256; the denoiser at the all-masked state gives
    the exact per-pixel marginals of the model, which match the data's (measured max errors
    0.05 for binary; the gate, 0.1, is twice that)."""
    model = md.load(token_set)
    vocab = md.TOKEN_SETS[token_set]
    logits = model(jax.nn.one_hot(jnp.full((64,), vocab), vocab + 1))
    probs = np.asarray(jax.nn.softmax(logits[:, :vocab], axis=-1))
    tokens = np.asarray(md.to_tokens(data[0], token_set))
    freq = np.stack([(tokens == v).mean(0) for v in range(vocab)], axis=-1)
    assert np.abs(probs - freq).max() < 0.1
    with pytest.raises(ValueError, match="`token_set` must be one of"):
        md.load("colour")


def test_binary_classifiers_are_shipped_checked_and_accurate(data):
    """The classifiers of the binary token set are retrained ones (the grey ones lose accuracy
    on binarised images); on the held-out split of benchmarks/train_digits.py they reach 0.970
    (MLP) and 0.976 (CNN): the gate 0.955 is 1.5 standard errors below the lower one."""
    images, labels = data
    test = np.random.default_rng(0).permutation(len(images))[1_500:]
    binary = md.tokens_to_images(md.to_tokens(images[test], "binary"), "binary")
    for kind in ("mlp", "cnn"):
        model = md.classifier(kind, "binary")
        assert dc.accuracy(model, binary, labels[test]) > 0.955
        assert md.classifier_path(kind, "binary").endswith(f"digits_{kind}_binary.safetensors")
        # the grey token set reads the dataset's own levels: the digits study's classifiers
        assert md.classifier_path(kind, "grey") == digits.weights_path(kind)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        md.classifier("svm", "binary")
