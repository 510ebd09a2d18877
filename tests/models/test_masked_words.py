"""English words as token sequences, the non-words, the seen classifier and the shipped models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from psijax.discrete.masking import one_hot
from psijax.models import masked_words as mw
from psijax.models.masked_transformer import MaskedTransformerConfig


@pytest.fixture(scope="module")
def words():
    return mw.load_words("gcide")


def test_word_lists_are_two_independent_sources(words):
    web2 = mw.load_words("web2")
    # the module docstring's counts, and the overlap it states
    assert (len(words), len(web2)) == (103_401, 196_870)
    assert all(3 <= len(w) <= 12 and w.isalpha() and w.islower() for w in words[::997])
    shared = len(set(words) & set(web2)) / len(words)
    assert 0.70 < shared < 0.80  # measured 0.76
    with pytest.raises(ValueError, match="`source` must be one of"):
        mw.load_words("oed")


def test_encode_decode_and_malformed_sequences():
    tokens = mw.encode(["cat", "zebra", "abcdefghijkl"])
    assert tokens.shape == (3, 12) and tokens.dtype == np.int32
    assert tokens[0].tolist() == [2, 0, 19] + [mw.PAD] * 9
    assert mw.decode(tokens) == ["cat", "zebra", "abcdefghijkl"]
    bad = tokens.copy()
    bad[0, 4] = 7  # a letter after a pad
    bad[1, 1] = mw.VOCAB  # a mask
    bad[2] = mw.encode(["ab"])[0]  # too short
    assert mw.decode(bad) == [None, None, None]
    assert mw.letters(bad)[:2] == ["cath", "zbra"]
    for word in ("Cat", "abcdefghijklm", "", 3):
        with pytest.raises(ValueError, match="`words` must be strings of 1 to 12 letters"):
            mw.encode([word])
    with pytest.raises(ValueError, match=r"`tokens` must be ids in \[0, 27\]"):
        mw.decode(tokens + 5)
    with pytest.raises(ValueError, match=r"integer ids of shape \(\.\.\., 12\)"):
        mw.decode(tokens[:, :5])


def test_non_words_are_reproducible_and_never_words(words):
    a = mw.non_words(7, words, 3000)
    assert a == mw.non_words(7, words, 3000) and a != mw.non_words(8, words, 3000)
    assert len(set(a)) == 3000 and not set(a) & set(words)
    padded = [s for s in a if "_" in s]
    assert 0.15 < len(padded) / len(a) < 0.25  # 20 % by construction
    tokens = mw.encode_non_words(padded[:3])
    assert all((row == mw.PAD).sum() > 12 - len(s) for row, s in zip(tokens, padded, strict=False))
    assert all(3 <= len(s.replace("_", "")) and len(s) <= 12 for s in a)


def test_classifier_reads_relaxed_one_hots_and_is_differentiable():
    model = mw.WordClassifier(nnx.Rngs(0))
    e = one_hot(jnp.asarray(mw.encode(["cat", "house"])), mw.VOCAB)
    assert model(e).shape == (2,) and mw.log_p_word(model, e[0]).shape == ()
    # the mask column is not read
    np.testing.assert_allclose(model(e.at[..., -1].set(1.0)), model(e), rtol=1e-6)
    grad = jax.grad(lambda e: mw.log_p_word(model, e))(e[0])
    assert grad.shape == (12, 28) and bool(jnp.all(jnp.isfinite(grad)))
    with pytest.raises(ValueError, match=r"`E` must have shape \(\.\.\., 12, 28\)"):
        model(e[..., :27])


def test_training_lowers_the_losses_and_bad_input_is_named(words):
    tiny = MaskedTransformerConfig(12, 27, width=32, depth=1, num_heads=2)
    tokens = mw.encode(words[::20])
    _, losses = mw.train(jax.random.key(0), tokens, mw.TRAIN._replace(num_steps=120), tiny)
    assert float(losses[-20:].mean()) < float(losses[:20].mean()) - 0.3
    negatives = mw.encode_non_words(mw.non_words(0, words[::20], 2000))
    config = mw.ClassifierConfig(num_steps=150, batch_size=64)
    _, closs = mw.train_classifier(jax.random.key(1), tokens, negatives, config)
    assert float(closs[-20:].mean()) < 0.65  # log 2 = 0.69 at chance
    with pytest.raises(ValueError, match="`model_config` must have length 12 and vocab_size 27"):
        mw.train(jax.random.key(0), tokens, None, MaskedTransformerConfig(64, 2))
    with pytest.raises(ValueError, match=r"`config.noise` must be in \[0, 1\]"):
        mw.train_classifier(jax.random.key(1), tokens, negatives, config._replace(noise=2))
    with pytest.raises(ValueError, match=r"`negatives` must be token sequences of shape"):
        mw.train_classifier(jax.random.key(1), tokens, negatives[:, :4], config)
    with pytest.raises(ValueError, match="`strings` must be at most 12 characters"):
        mw.encode_non_words(["ab-c"])


def test_shipped_models_load_checked_and_judge_unseen_strings(words):
    """The shipped files load with their sha256; the classifier accepts real words it never
    saw (web2 words outside gcide) far more often than non-words it never saw."""
    model = mw.load()
    classifier = mw.classifier()
    # the denoiser at the all-masked state: its first-letter marginal is the data's
    e = jax.nn.one_hot(jnp.full((12,), mw.VOCAB), mw.VOCAB + 1)
    first = np.asarray(jax.nn.softmax(model(e)[0, :-1]))
    data = np.bincount(mw.encode(words)[:, 0], minlength=mw.VOCAB) / len(words)
    assert 0.5 * np.abs(first - data).sum() < 0.05
    unseen = sorted(set(mw.load_words("web2")) - set(words))[::200]
    fresh = mw.non_words(12345, words, 600)

    def accept(strings):
        e = one_hot(jnp.asarray(mw.encode_non_words(strings)), mw.VOCAB)
        return float(jnp.mean(mw.log_p_word(classifier, e) > np.log(0.5)))

    assert accept(unseen) > accept(fresh) + 0.3
