r"""Reward alignment of the learned masked-diffusion words model: a seen classifier, a held-out
dictionary (docs/algorithms.md §10.11).

The non-image counterpart of :mod:`psijax.experiments.discrete_digits`, the kind of task of the
paper's language experiments: steer a sequence model with a learned reward and judge it by
something the reward never saw. The prior is the shipped denoiser of
:mod:`psijax.models.masked_words` (``L = 12`` characters, ``V = 27`` with the pad), trained on
the ``gcide`` list and sampled by the MDLM kernel with :data:`NUM_STEPS` steps.

**Tasks** (:func:`make_task`; the target ``π ∝ P_θ·e^{r/β}``), with ``p_word`` the seen
:class:`psijax.models.masked_words.WordClassifier` (trained on ``gcide`` against non-words):

- ``"word"`` (target ``"any"``): seen ``r = log p_word(E)``; held-out: the sequence is a word
  of the ``web2`` list, which no model here was trained on.
- ``"letter"``, a letter ``c`` (default ``q``, ``k``, ``w``: in 1.8 %, 7.4 % and 7.1 % of the
  model's samples, and 0.02–0.15 % of its samples are ``web2`` words containing them): seen
  ``r = log p_word(E) + log(δ + (1 − δ)·(1 − Π_l (1 − E_{l,c})))``, the second term the
  log-probability that the (relaxed) sequence contains ``c``, floored at ``log δ = −``
  :data:`LETTER_PENALTY` nats; held-out: a ``web2`` word containing ``c``.

**Realism**, ``nn_dist``: the edit distance (Levenshtein, in characters) from the sequence's
letters to the nearest training word (0 for a memorised word, like an exact copy in the digits
study). A run's rows also carry ``novel``: the weighted share of held-out successes that are
not training words (the model made a real word it never saw).

The runs, budgets, amortised proposal, references, hacking check and tables are those of
:mod:`psijax.experiments.discrete_study`; :class:`WordsModels` is its domain.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from psijax._checks import check_choice
from psijax.discrete.masking import one_hot
from psijax.models import masked_words as mw
from psijax.models.masked_transformer import logits_fn as _logits_fn

__all__ = [
    "NUM_STEPS",
    "TASKS",
    "DEFAULT_TARGETS",
    "DEFAULT_BETAS",
    "LETTER_PENALTY",
    "WordTask",
    "make_task",
    "WordsModels",
    "load_models",
    "seen_reward",
    "nearest_edit_distance",
    "evaluate",
    "best_sequences",
    "sample_table",
    "plot_grid",
]

NUM_STEPS = 16
"""Denoising steps of every sampler (MDLM kernel, linear schedule) for 12 positions."""
TASKS = ("word", "letter")
DEFAULT_TARGETS = {"word": ("any",), "letter": ("q", "k", "w")}
DEFAULT_BETAS = {"word": (1.0, 0.25), "letter": (1.0, 0.25)}
"""Two ``β`` per task: ``β = 1`` is the posterior ``P_θ(x)·p_word(x)``, ``0.25`` sharper."""
LETTER_PENALTY = 5.0
"""``−log δ``: the seen reward's cost, in nats, of a sequence without the target letter."""


class WordTask(NamedTuple):
    """A task with its target: ``name`` (:data:`TASKS`), ``target`` (``"any"`` or a letter),
    ``param`` (the letter's id, ``-1`` for ``"word"``; the array the reward reads) and
    ``alpha`` (its ``β``)."""

    name: str
    target: str
    param: np.ndarray
    alpha: float


def make_task(name: str, target: str = "any", alpha: float = 1.0) -> WordTask:
    """A :class:`WordTask`: ``name`` in :data:`TASKS`; ``target`` ``"any"`` for ``"word"``, one
    letter ``a–z`` for ``"letter"``; ``alpha`` finite and ``> 0``."""
    check_choice(name, "name", TASKS)
    if name == "word" and target != "any":
        raise ValueError(f"`target` of the word task must be 'any', got {target!r}.")
    if name == "letter" and not (isinstance(target, str) and target in mw.ALPHABET[:26]):
        raise ValueError(f"`target` of the letter task must be one letter a-z, got {target!r}.")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < float("inf")):
        raise ValueError(f"`alpha` must be finite and > 0, got {alpha!r}.")
    param = np.int32(-1 if name == "word" else mw.ALPHABET.index(target))
    return WordTask(name, target, param, float(alpha))


def seen_reward(classifier: nnx.Module, task_name: str, param) -> Callable:
    """The seen reward ``r(E)`` of one relaxed one-hot ``(12, 28)`` (module docstring);
    ``param`` (the letter's id) may be traced."""
    check_choice(task_name, "task_name", TASKS)

    def reward(e):
        r = mw.log_p_word(classifier, e)
        if task_name == "letter":
            column = jnp.take(e, param, axis=-1)
            contains = 1.0 - jnp.prod(1.0 - column)
            floor = jnp.exp(-LETTER_PENALTY)
            r = r + jnp.log(floor + (1.0 - floor) * contains)
        return r

    return reward


class _Index(NamedTuple):
    words: frozenset
    codes: np.ndarray  # (M, 12) letter ids, 26 past the end
    lengths: np.ndarray  # (M,)
    counts: np.ndarray  # (M, 26) letter counts
    nearest: dict  # letters -> nearest_edit_distance, filled on use


def _index(words) -> _Index:
    words = sorted(words)
    codes = mw.encode(words).astype(np.int16)
    counts = np.stack([np.sum(codes == c, axis=1) for c in range(26)], axis=1)
    return _Index(frozenset(words), codes, (codes < 26).sum(1), counts.astype(np.int16), {})


def _edit_distances(word: str, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Levenshtein distances from ``word`` to the rows of ``codes`` (``(M, 12)``, padded with
    26, which matches no letter), vectorised over the rows."""
    m, n = codes.shape
    prev = np.broadcast_to(np.arange(n + 1, dtype=np.int16), (m, n + 1)).copy()
    for i, c in enumerate(word, start=1):
        cur = np.empty_like(prev)
        cur[:, 0] = i
        best = np.minimum(prev[:, :-1] + (codes != ord(c) - 97), prev[:, 1:] + 1)
        for j in range(1, n + 1):  # the left neighbour is sequential
            cur[:, j] = np.minimum(best[:, j - 1], cur[:, j - 1] + 1)
        prev = cur
    return prev[np.arange(m), lengths]


def nearest_edit_distance(word: str, index: _Index, chunk: int = 4096) -> int:
    """The Levenshtein distance from ``word`` (letters) to the nearest word of ``index``.
    Exact: the words are visited in order of a lower bound (the letters one string has in
    excess of the other, at least the length difference), and the search stops once the bound
    reaches the best distance found."""
    if word in index.words:
        return 0
    counts = np.bincount([ord(c) - 97 for c in word], minlength=26).astype(np.int16)
    diff = index.counts - counts
    bound = np.maximum(np.maximum(diff, 0).sum(1), np.maximum(-diff, 0).sum(1))
    order = np.argsort(bound, kind="stable")
    best = max(len(word), mw.MIN_LETTERS)  # at most: replace or delete every letter
    for start in range(0, order.size, chunk):
        rows = order[start : start + chunk]
        if bound[rows[0]] >= best:
            break
        rows = rows[bound[rows] < best]
        found = _edit_distances(word, index.codes[rows], index.lengths[rows])
        best = min(best, int(found.min()))
    return best


class WordsModels(NamedTuple):
    """The prior (its pure ``logits(E, t)``), the seen classifier, and the indexes of the
    training list (``gcide``, for ``nn_dist``) and of the judge's list (``web2``)."""

    logits: Callable
    classifier: nnx.Module
    train: _Index
    judge: frozenset

    # -- the domain of psijax.experiments.discrete_study ------------------------------------
    name = "words"
    length = mw.LENGTH
    vocab = mw.VOCAB
    num_steps = NUM_STEPS
    default_betas = DEFAULT_BETAS

    def reward(self, task_name: str, param) -> Callable:
        """:func:`seen_reward` with the shipped classifier."""
        return seen_reward(self.classifier, task_name, param)

    def score(self, task: WordTask, samples, log_weights) -> dict:
        """:func:`evaluate` over the leading axes of ``samples`` ``(..., N, 12)``, plus
        ``novel`` (module docstring)."""
        samples = np.asarray(samples)
        log_weights = np.asarray(log_weights, np.float64)
        lead = samples.shape[:-2]
        flat = samples.reshape((-1,) + samples.shape[-2:])
        flat_w = log_weights.reshape(flat.shape[:2])
        rewards = np.asarray(_batched_reward(self, task.name)(jnp.asarray(flat), task.param))
        out = [self._score(task, s, w, r) for s, w, r in zip(flat, flat_w, rewards, strict=True)]
        return {k: np.asarray([o[k] for o in out]).reshape(lead) for k in out[0]}

    def _score(self, task, samples, log_weights, rewards) -> dict:
        finite = np.isfinite(log_weights)
        w = np.zeros_like(log_weights)
        if finite.any():
            top = log_weights[finite].max()
            w[finite] = np.exp(log_weights[finite] - top)
            w /= w.sum()
        used = w > 0
        tokens = np.where(used[:, None], np.clip(samples, 0, mw.VOCAB - 1), mw.PAD)
        words = mw.decode(tokens)
        held = np.asarray([_judged(self, task, word) for word in words], np.float64)
        novel = np.asarray(
            [h > 0 and word not in self.train.words for h, word in zip(held, words, strict=True)],
            np.float64,
        )
        dist = np.asarray([_nearest(self, s) for s in mw.letters(tokens)], np.float64)
        rewards = np.where(used & np.isfinite(rewards), rewards, -np.inf)
        best = int(np.argmax(rewards))
        if not np.isfinite(rewards[best]):  # no usable particle: no best one to score
            held, dist = np.full_like(held, np.nan), np.full_like(dist, np.nan)
        mean = lambda v: float(np.sum(np.where(used, w * v, 0.0)))  # noqa: E731
        return {
            "ess": float(1.0 / np.sum(w**2)) if used.any() else 0.0,
            "reward": mean(np.where(used, rewards, 0.0)) if used.any() else np.nan,
            "heldout": mean(held) if used.any() else np.nan,
            "nn_dist": mean(dist) if used.any() else np.nan,
            "novel": mean(novel) if used.any() else np.nan,
            "best_reward": float(rewards[best]),
            "best_heldout": float(held[best]),
            "best_nn_dist": float(dist[best]),
        }

    def seen_judgement(self, task: WordTask, tokens) -> dict:
        """The share of ``tokens`` the seen classifier calls a word (``p_word > 1/2``)."""
        e = one_hot(jnp.asarray(tokens), mw.VOCAB)
        accepts = mw.log_p_word(self.classifier, e) > jnp.log(0.5)
        return {"seen_accepts": float(jnp.mean(accepts))}


_REWARDS: dict = {}  # (id of the classifier, task name) -> the jitted batched reward


def _batched_reward(models: WordsModels, task_name: str):
    """``fn(tokens (R, N, 12), param) -> rewards (R, N)``, compiled once per classifier."""
    key = (id(models.classifier), task_name)
    if key not in _REWARDS:

        def fn(tokens, param):
            e = one_hot(jnp.clip(tokens, 0, mw.VOCAB - 1), mw.VOCAB)
            reward = seen_reward(models.classifier, task_name, param)
            return jax.vmap(jax.vmap(reward))(e)

        _REWARDS[key] = (models.classifier, jax.jit(fn))  # the module kept alive with its id
    return _REWARDS[key][1]


def _judged(models: WordsModels, task: WordTask, word) -> float:
    if word is None or word not in models.judge:
        return 0.0
    return float(task.name == "word" or task.target in word)


def _nearest(models: WordsModels, letters: str) -> int:
    cache = models.train.nearest
    if letters not in cache:
        cache[letters] = nearest_edit_distance(letters, models.train)
    return cache[letters]


def load_models() -> WordsModels:
    """The shipped denoiser and classifier (sha-checked) and the two word lists."""
    return WordsModels(
        _logits_fn(mw.load()),
        mw.classifier(),
        _index(mw.load_words("gcide")),
        frozenset(mw.load_words("web2")),
    )


def evaluate(models: WordsModels, task: WordTask, samples, log_weights) -> dict:
    """Metrics of one weighted particle set ``(N, 12)`` (the metrics of
    :data:`psijax.experiments.discrete_study.SCORES` and ``novel``); zero-weight particles
    count nowhere. The seen reward is recomputed on the sequences (unscaled by ``β``)."""
    out = models.score(task, np.asarray(samples)[None], np.asarray(log_weights)[None])
    return {k: float(v[0]) for k, v in out.items()}


def best_sequences(
    models: WordsModels, first: dict, task_name: str, beta: float, n_ref: int, top: int = 4
) -> tuple[list, list, dict]:
    """``(targets, methods, cells)``: for every method and target of ``task_name`` at ``β`` and
    budget ``N_ref``, the ``top`` highest-weight sequences of seed 0 as ``(text, success)``
    pairs, best first (a malformed sequence shows its letters with ``_`` for pads;
    ``success``: the held-out judge accepts it)."""
    keys = [k for k in first if k[0] == task_name and k[2] == beta and k[4] == n_ref]
    targets = list(dict.fromkeys(k[1] for k in keys))
    methods = list(dict.fromkeys(k[3] for k in keys))
    cells = {}
    for method in methods:
        for target in targets:
            tokens, weights = first[(task_name, target, beta, method, n_ref)]
            order = np.argsort(-weights)[:top]
            task = make_task(task_name, target)
            shown = []
            for row, word in zip(tokens[order], mw.decode(tokens[order]), strict=True):
                if word is None:
                    text = "".join("_" if v >= mw.PAD else mw.ALPHABET[v] for v in row)
                    shown.append((text.rstrip("_") or "_", False))
                else:
                    shown.append((word, bool(_judged(models, task, word))))
            cells[(method, target)] = shown
    return targets, methods, cells


def sample_table(
    models: WordsModels, first: dict, task_name: str, beta: float, n_ref: int, top: int = 4
) -> str:
    """:func:`best_sequences` as a markdown table, a held-out success in bold."""
    targets, methods, cells = best_sequences(models, first, task_name, beta, n_ref, top)
    lines = ["| method | " + " | ".join(f"{task_name} = {t}" for t in targets) + " |"]
    lines.append("|---" * (len(targets) + 1) + "|")
    for method in methods:
        shown = [
            ", ".join(f"**{w}**" if ok else w for w, ok in cells[(method, t)]) for t in targets
        ]
        lines.append(f"| {method} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def plot_grid(
    models: WordsModels,
    first: dict,
    task_name: str,
    beta: float,
    n_ref: int,
    path: str,
    top: int = 4,
) -> None:
    """:func:`best_sequences` as a PNG: methods (rows) × targets (columns), a held-out success
    in green, a failure in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets, methods, cells = best_sequences(models, first, task_name, beta, n_ref, top)
    fig, axes = plt.subplots(
        len(methods),
        len(targets),
        figsize=(1.6 * top * len(targets) + 1.2, 0.45 * len(methods) + 0.5),
        squeeze=False,
    )
    for row, method in enumerate(methods):
        for col, target in enumerate(targets):
            ax = axes[row, col]
            ax.axis("off")
            for k, (word, ok) in enumerate(cells[(method, target)]):
                ax.text(
                    (k + 0.5) / top, 0.5, word, ha="center", va="center", family="monospace",
                    fontsize=8, color="tab:green" if ok else "tab:red", transform=ax.transAxes,
                )  # fmt: skip
            if row == 0:
                ax.set_title(f"{task_name} = {target}", fontsize=8)
            if col == 0:
                ax.text(-0.02, 0.5, method, ha="right", va="center", fontsize=7,
                        transform=ax.transAxes)  # fmt: skip
    fig.suptitle(f"words, β = {beta:g}, budget of N = {n_ref} (green: a web2 word)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
