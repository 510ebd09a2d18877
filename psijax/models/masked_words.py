r"""A masked-diffusion model of English words at character level (docs/algorithms.md §10.11).

The discrete half's non-image domain. The data are two independent word lists shipped by the
``english-words`` package (``pip install psijax[words]``; nothing is downloaded):

==========  ==================================================================================
source      words kept (lower-case ``a–z`` only, 3 to 12 letters)
==========  ==================================================================================
``gcide``   103,567 of the GNU Collaborative International Dictionary of English: the
            **training list** of the denoiser and of the seen classifier
``web2``    196,969 of Webster's Second International (the Unix ``web2`` list): never seen
            by any model here, the **held-out judge** of :mod:`psijax.experiments.discrete_words`
==========  ==================================================================================

(76 % of the kept ``gcide`` words are in ``web2``.) A word is a sequence of ``L = 12`` tokens:
its letters (``a = 0 … z = 25``) followed by the pad token ``26``, so ``V = 27`` (the mask id
is ``27``). A sequence is **well formed** when no letter follows a pad and it has at least
:data:`MIN_LETTERS` letters; :func:`decode` returns ``None`` for the others.

The denoiser is a :class:`psijax.models.masked_transformer.MaskedTransformer` (:data:`CONFIG`)
trained on the ``gcide`` words with the MDLM objective (:mod:`psijax.models.mdlm`).

The **seen reward** of the study is :class:`WordClassifier`, trained on the ``gcide`` words
against non-words: the shipped denoiser's own samples that are not ``gcide`` words (so it
learns what tells this model's pseudo-words from words: a classifier trained on made-up
non-words alone scores the model's samples no better than chance), and strings made from the
list (:func:`non_words`: single and double edits of words, strings of the list's letter-bigram
model, words with a pad inside; none of them in the list). No ``web2`` word is used. It reads
relaxed one-hots ``(..., 12, 28)`` differentiably and is trained on relaxed inputs (a random
share of each position's one-hot mixed with a random distribution), since the samplers'
twists score the denoiser's expected one-hots. :func:`log_p_word` is its reward.
"""

import os
import re
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.types import Array, ArrayLike, PRNGKey
from flax import nnx

from psijax._checks import check_choice, check_int
from psijax.models import mdlm, module_io
from psijax.models._training import fit
from psijax.models.masked_transformer import MaskedTransformer, MaskedTransformerConfig
from psijax.models.mdlm import TrainConfig

__all__ = [
    "ALPHABET",
    "PAD",
    "VOCAB",
    "LENGTH",
    "MIN_LETTERS",
    "SOURCES",
    "CONFIG",
    "TRAIN",
    "load_words",
    "encode",
    "decode",
    "letters",
    "train",
    "SHIPPED",
    "weights_path",
    "load",
    "WordClassifier",
    "ClassifierConfig",
    "non_words",
    "encode_non_words",
    "train_classifier",
    "log_p_word",
    "CLASSIFIER",
    "classifier_path",
    "classifier",
]

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
PAD = 26
VOCAB = 27
LENGTH = 12
MIN_LETTERS = 3
SOURCES = ("gcide", "web2")
#: The denoiser: width 128, 4 blocks of 4 heads, no time conditioning.
CONFIG = MaskedTransformerConfig(LENGTH, VOCAB)
#: The shipped denoiser's training settings (``benchmarks/train_masked_words.py``).
TRAIN = TrainConfig(num_steps=4_000, batch_size=256, learning_rate=1e-3)
_WORD = re.compile(f"[a-z]{{{MIN_LETTERS},{LENGTH}}}")


@lru_cache(maxsize=None)
def _load(source: str) -> tuple[str, ...]:
    try:
        from english_words import get_english_words_set
    except ImportError as error:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "The word lists come from the `english-words` package: pip install 'psijax[words]'."
        ) from error
    words = get_english_words_set([source], lower=True, alpha=True)
    return tuple(sorted(w for w in words if _WORD.fullmatch(w)))


def load_words(source: str) -> tuple[str, ...]:
    """The sorted words of ``source`` (``"gcide"`` or ``"web2"``) kept by the module docstring's
    rule (lower-case, 3 to 12 letters ``a–z``)."""
    return _load(check_choice(source, "source", SOURCES))


def encode(words) -> np.ndarray:
    """Words (strings of 1 to 12 letters ``a–z``) → int32 tokens ``(N, 12)``, pad-filled."""
    words = [words] if isinstance(words, str) else list(words)
    out = np.full((len(words), LENGTH), PAD, np.int32)
    for i, word in enumerate(words):
        if not isinstance(word, str) or not re.fullmatch(f"[a-z]{{1,{LENGTH}}}", word):
            raise ValueError(f"`words` must be strings of 1 to {LENGTH} letters a-z, got {word!r}.")
        out[i, : len(word)] = [ord(c) - 97 for c in word]
    return out


def _check_tokens(tokens) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.shape[-1:] != (LENGTH,) or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"`tokens` must be integer ids of shape (..., {LENGTH}).")
    if np.any((tokens < 0) | (tokens > VOCAB)):
        raise ValueError(f"`tokens` must be ids in [0, {VOCAB}] ({PAD}: pad, {VOCAB}: mask).")
    return tokens


def letters(tokens) -> list[str]:
    """The letters of each sequence ``(N, 12)`` in order, pads and masks dropped."""
    tokens = _check_tokens(tokens).reshape(-1, LENGTH)
    return ["".join(ALPHABET[v] for v in row if v < PAD) for row in tokens]


def decode(tokens) -> list:
    """Sequences ``(N, 12)`` → their words, or ``None`` for a sequence that is not well formed
    (a mask, a letter after a pad, or fewer than :data:`MIN_LETTERS` letters)."""
    tokens = _check_tokens(tokens).reshape(-1, LENGTH)
    out = []
    for row, word in zip(tokens, letters(tokens), strict=True):
        n = len(word)
        ok = n >= MIN_LETTERS and np.all(row[:n] < PAD) and np.all(row[n:] == PAD)
        out.append(word if ok else None)
    return out


def train(
    rng_key: PRNGKey,
    tokens: ArrayLike,
    config: TrainConfig | None = None,
    model_config: MaskedTransformerConfig | None = None,
) -> tuple[MaskedTransformer, Array]:
    """Train the words denoiser on ``tokens`` ``(N, 12)`` (default settings :data:`TRAIN`);
    returns ``(model, losses per step)`` (:func:`psijax.models.mdlm.train`)."""
    model_config = CONFIG if model_config is None else model_config
    if (model_config.length, model_config.vocab_size) != (LENGTH, VOCAB):
        raise ValueError(
            f"`model_config` must have length {LENGTH} and vocab_size {VOCAB}, got "
            f"{model_config.length} and {model_config.vocab_size}."
        )
    return mdlm.train(rng_key, tokens, model_config, TRAIN if config is None else config)


_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
#: sha256 of ``weights/masked_words.safetensors`` (checked on load), written by
#: ``benchmarks/train_masked_words.py --write-weights``.
SHIPPED = "10c26a136cf399e6f3d3303c8c1b14329a83333f5fd0b1d09e448634c11729a0"


def weights_path() -> str:
    """Path of the shipped denoiser, ``weights/masked_words.safetensors``."""
    return os.path.join(_WEIGHTS, "masked_words.safetensors")


def load() -> MaskedTransformer:
    """The shipped denoiser, its file's sha256 checked against :data:`SHIPPED`."""
    return module_io.load_module(
        lambda: MaskedTransformer(CONFIG, rngs=nnx.Rngs(0)), weights_path(), SHIPPED
    )


# -- the seen classifier -----------------------------------------------------------------------
class WordClassifier(nnx.Module):
    """Relaxed one-hot ``(..., 12, 28)`` → the logit of "a word of the training list": the
    letters-and-pad columns ``E[:, :27]`` flattened (324), two hidden layers of ``width``
    (GELU), one logit. The mask column is not read. (An MLP: on 2 CPU cores it trains 20×
    faster than a convolution of the same size, and capacity, not locality, is what telling
    words from pseudo-words takes.)"""

    def __init__(self, rngs: nnx.Rngs, width: int = 512):
        self.hidden1 = nnx.Linear(LENGTH * VOCAB, width, rngs=rngs)
        self.hidden2 = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, soft_one_hot: ArrayLike) -> Array:
        e = jnp.asarray(soft_one_hot, jnp.float32)
        if e.shape[-2:] != (LENGTH, VOCAB + 1):
            raise ValueError(f"`E` must have shape (..., {LENGTH}, {VOCAB + 1}), got {e.shape}.")
        h = e[..., :VOCAB].reshape(e.shape[:-2] + (LENGTH * VOCAB,))
        h = jax.nn.gelu(self.hidden2(jax.nn.gelu(self.hidden1(h))))
        return self.out(h)[..., 0]


def log_p_word(model: WordClassifier, soft_one_hot: ArrayLike) -> Array:
    """``log σ(logit)``: the classifier's log-probability that ``E`` is a word."""
    return jax.nn.log_sigmoid(model(soft_one_hot))


class ClassifierConfig(NamedTuple):
    """Training settings of :class:`WordClassifier`: AdamW with a cosine-decayed step size,
    balanced minibatches of words and non-words, each sequence relaxed by mixing a share
    ``λ ~ U(0, noise)`` of a random distribution ``softmax(2 g)``, ``g ~ N(0, 1)``, into every
    position."""

    num_steps: int = 20_000
    batch_size: int = 256
    learning_rate: float = 2e-3
    noise: float = 0.25
    weight_decay: float = 1e-4


def non_words(seed: int, words, count: int) -> tuple[str, ...]:
    """``count`` distinct strings of 3–12 letters that are not in ``words`` (or malformed
    sequences, see below), drawn by ``numpy.random.default_rng(seed)``: 40 % one or two random
    edits (substitution, insertion, deletion, swap of neighbours) of a word, 40 % strings of
    the words' letter-bigram model (with start and end), 20 % a word with a pad inside
    (written ``"_"``, read as the pad token by :func:`train_classifier`)."""
    count = check_int(count, "count")
    rng = np.random.default_rng(seed)
    vocab = set(words)
    words = list(words)
    counts = np.ones((28, 28))  # 26 = start, 27 = end; add-one smoothing
    for word in words:
        ids = [26] + [ord(c) - 97 for c in word] + [27]
        np.add.at(counts, (ids[:-1], ids[1:]), 1)
    bigram = counts[:, :] / counts.sum(1, keepdims=True)
    bigram[:, 26] = 0.0
    bigram /= bigram.sum(1, keepdims=True)

    def edit(word):
        for _ in range(rng.integers(1, 3)):
            i = int(rng.integers(0, len(word)))
            kind = rng.integers(0, 4)
            c = ALPHABET[rng.integers(0, 26)]
            if kind == 0:
                word = word[:i] + c + word[i + 1 :]
            elif kind == 1:
                word = word[:i] + c + word[i:]
            elif kind == 2 and len(word) > 1:
                word = word[:i] + word[i + 1 :]
            elif i + 1 < len(word):
                word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        return word

    def bigram_string():
        out, state = "", 26
        while len(out) <= LENGTH:
            state = int(rng.choice(28, p=bigram[state]))
            if state == 27:
                return out
            out += ALPHABET[state]
        return out

    def padded(word):
        i = int(rng.integers(1, len(word)))
        return word[:i] + "_" + word[i:]

    out: dict = {}
    while len(out) < count:
        u = rng.random()
        word = words[rng.integers(0, len(words))]
        s = edit(word) if u < 0.4 else (bigram_string() if u < 0.8 else padded(word))
        if MIN_LETTERS <= len(s.replace("_", "")) and len(s) <= LENGTH and s not in vocab:
            out.setdefault(s, None)
    return tuple(out)


def encode_non_words(strings) -> np.ndarray:
    """Strings of :func:`non_words` → tokens ``(N, 12)``: like :func:`encode`, with ``"_"``
    read as the pad token (the malformed non-words)."""
    if any(len(s) > LENGTH or not re.fullmatch("[a-z_]*", s) for s in strings):
        raise ValueError(f"`strings` must be at most {LENGTH} characters of a-z and _.")
    out = np.full((len(strings), LENGTH), PAD, np.int32)
    for i, s in enumerate(strings):
        out[i, : len(s)] = [PAD if c == "_" else ord(c) - 97 for c in s]
    return out


def train_classifier(
    rng_key: PRNGKey, words: ArrayLike, negatives: ArrayLike, config: ClassifierConfig | None = None
) -> tuple[WordClassifier, Array]:
    """Train a :class:`WordClassifier` on the token sequences ``words`` ``(N, 12)`` (label 1)
    against ``negatives`` ``(M, 12)`` (label 0: e.g. :func:`non_words` through
    :func:`encode_non_words`, or a model's samples that are not words) by logistic loss, in
    balanced minibatches; returns ``(model, losses per step)``. Reproducible from
    ``rng_key``; the steps run in one scan."""
    config = ClassifierConfig() if config is None else config
    num_steps = check_int(config.num_steps, "config.num_steps")
    batch_size = check_int(config.batch_size, "config.batch_size")
    if not 0 <= config.noise <= 1:
        raise ValueError(f"`config.noise` must be in [0, 1], got {config.noise}.")
    pos, neg = jnp.asarray(words, jnp.int32), jnp.asarray(negatives, jnp.int32)
    for name, value in (("words", pos), ("negatives", neg)):
        if value.ndim != 2 or value.shape[1] != LENGTH or value.shape[0] == 0:
            raise ValueError(f"`{name}` must be token sequences of shape (N, {LENGTH}).")
    key_init, key_steps = jax.random.split(rng_key)
    graphdef, params = nnx.split(WordClassifier(nnx.Rngs(key_init)), nnx.Param)
    optimizer = optax.adamw(
        optax.cosine_decay_schedule(config.learning_rate, num_steps),
        weight_decay=config.weight_decay,
    )
    half = batch_size // 2

    def loss_fn(params, key):
        k_pos, k_neg, k_mix, k_noise = jax.random.split(key, 4)
        tokens = jnp.concatenate(
            [
                pos[jax.random.randint(k_pos, (half,), 0, pos.shape[0])],
                neg[jax.random.randint(k_neg, (half,), 0, neg.shape[0])],
            ]
        )
        labels = jnp.concatenate([jnp.ones(half), jnp.zeros(half)])
        hard = jax.nn.one_hot(tokens, VOCAB + 1)
        share = config.noise * jax.random.uniform(k_mix, (2 * half, 1, 1))
        noise = jax.nn.softmax(2.0 * jax.random.normal(k_noise, hard.shape[:-1] + (VOCAB,)))
        noise = jnp.pad(noise, [(0, 0), (0, 0), (0, 1)])
        logits = nnx.merge(graphdef, params)((1.0 - share) * hard + share * noise)
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

    params, losses = fit(loss_fn, params, optimizer, key_steps, num_steps)
    return nnx.merge(graphdef, params), losses


#: sha256 of ``weights/words_classifier.safetensors`` (checked on load), written by
#: ``benchmarks/train_masked_words.py --write-weights``.
CLASSIFIER = "7847b470cd08de2f5e2ef78cc79ad7a5f00eba5c7ef45710e9c7a3e1e74c52d2"


def classifier_path() -> str:
    """Path of the shipped seen classifier, ``weights/words_classifier.safetensors``."""
    return os.path.join(_WEIGHTS, "words_classifier.safetensors")


def classifier() -> WordClassifier:
    """The shipped seen classifier, sha-checked against :data:`CLASSIFIER`."""
    return module_io.load_module(lambda: WordClassifier(nnx.Rngs(0)), classifier_path(), CLASSIFIER)
