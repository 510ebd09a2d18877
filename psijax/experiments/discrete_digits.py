r"""Reward alignment of the learned masked-diffusion digits: seen rewards, held-out judges.

The discrete half's analogue of :mod:`psijax.experiments.digits`, on the same data and the
same tasks, so that the two model families can be read side by side (docs/algorithms.md
§10.10). The prior is a shipped masked-diffusion transformer of
:mod:`psijax.models.masked_digits` (token set ``"binary"``, ``V = 2``, the paper's
binarised-MNIST setting at 8 × 8, or ``"grey"``, the 17 levels of the data), sampled by the
MDLM kernel with :data:`NUM_STEPS` steps. A sequence ``x ∈ {0 … V−1}^64`` is the image
``to_images(one_hot(x))``; a relaxed one-hot ``E`` reads as a grey image the same way, so the
rewards below are differentiable functions of ``E``.

**Tasks** (:func:`psijax.experiments.digits.make_task`; the target ``π ∝ P_θ·e^{r/β}``):

- ``"class"``, a digit ``c``: seen ``r = log p_MLP(c | image)``; held-out: the CNN says ``c``.
- ``"layout"``, a box: seen ``r`` = mean ink inside − mean ink outside; held-out: the IoU of
  the box with the thresholded ink's bounding box.

The classifiers are those of the token set (:func:`psijax.models.masked_digits.classifier`:
the digits study's own for ``grey``, retrained on binarised images for ``binary``).
**Realism**, ``nn_dist``, is the mean squared distance per pixel to the nearest data image
*of the same token set* (the data the model was trained on).

**Metrics of a run** (:func:`evaluate`) on the final particles and their weights ``w``: the
weighted seen reward, held-out score and ``nn_dist``; the same three for the particle of
highest seen reward (the paper's output, ``best_*``); the ESS; the NFE spent.

The runs, budgets, amortised proposal, references, hacking check and tables are those of
:mod:`psijax.experiments.discrete_study` (equal NFE, one compile per method and budget, seeds,
targets and ``β`` batched by ``vmap``); :class:`Models` is its domain, and the functions of
that module are re-exported here.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from psijax._checks import check_choice
from psijax.discrete.masking import one_hot
from psijax.experiments import digits as cd
from psijax.experiments import discrete_study as _study
from psijax.experiments.discrete_study import (
    METHODS,
    METRICS,
    PARTICLES,
    Amortised,
    ResidualHead,
    format_hacking,
    format_markdown,
    hacking_check,
    make_problem,
    reference_rows,
    run_method,
    run_study,
    summarize,
    train_amortised,
    unguided_pool,
)
from psijax.models import digits as _digits
from psijax.models import digits_classifiers as dc
from psijax.models import masked_digits as md
from psijax.models.masked_transformer import logits_fn as _logits_fn

__all__ = [
    "NUM_STEPS",
    "PARTICLES",
    "DEFAULT_BETAS",
    "DEFAULT_TARGETS",
    "METHODS",
    "METRICS",
    "Models",
    "load_models",
    "seen_reward",
    "heldout_metric",
    "make_problem",
    "budget_for",
    "ResidualHead",
    "Amortised",
    "train_amortised",
    "metrics_fn",
    "evaluate",
    "run_method",
    "unguided_pool",
    "reference_rows",
    "hacking_check",
    "run_study",
    "plot_grid",
    "summarize",
    "format_markdown",
    "format_hacking",
]

NUM_STEPS = 32
"""Denoising steps of every sampler (the MDLM kernel, linear schedule): two tokens a step on
average."""
DEFAULT_BETAS = {"class": (1.0, 0.1), "layout": (0.05, 0.02)}
"""Two ``β`` per task. The class task at ``β = 1`` is the posterior ``P_θ(x)·p_MLP(c | x)``:
its exact target is recognised by the held-out CNN 62–80 % of the time (binary), 85–97 % at
``β = 0.1``, so neither saturates."""
DEFAULT_TARGETS = cd.DEFAULT_TARGETS


class Models(NamedTuple):
    """The prior of ``token_set`` (its pure ``logits(E, t)``), its seen and held-out
    classifiers, and the data as images of the token set ``(1797, 1, 8, 8)`` (for
    ``nn_dist``)."""

    token_set: str
    logits: Callable
    mlp: nnx.Module
    cnn: nnx.Module
    data: np.ndarray

    # -- the domain of psijax.experiments.discrete_study ------------------------------------
    length = md.LENGTH
    num_steps = NUM_STEPS
    default_betas = DEFAULT_BETAS

    @property
    def name(self) -> str:
        """The token set, the rows' ``token_set`` column."""
        return self.token_set

    @property
    def vocab(self) -> int:
        """``V`` of the token set."""
        return md.TOKEN_SETS[self.token_set]

    def reward(self, task_name: str, param) -> Callable:
        """:func:`seen_reward`."""
        return seen_reward(self, task_name, param)

    def score(self, task: cd.Task, samples, log_weights) -> dict:
        """:func:`metrics_fn` over the leading axes of ``samples`` ``(..., N, 64)``."""
        samples, log_weights = jnp.asarray(samples), jnp.asarray(log_weights)
        lead = samples.shape[:-2]
        flat = samples.reshape((-1,) + samples.shape[-2:])
        fn = jax.vmap(metrics_fn(self, task.name), (0, 0, None, None))
        out = fn(flat, log_weights.reshape(flat.shape[:2]), jnp.asarray(task.param), _box(task))
        return {k: v.reshape(lead) for k, v in out.items()}

    def seen_judgement(self, task: cd.Task, tokens) -> dict:
        """Class task: the share of ``tokens`` the seen MLP itself calls ``target``."""
        if task.name != "class":
            return {}
        images = md.tokens_to_images(tokens, self.token_set)
        said = jnp.argmax(dc.log_probs(self.mlp, images), -1) == task.target
        return {"seen_accuracy": float(jnp.mean(said))}


def load_models(token_set: str = "binary") -> Models:
    """The shipped models of ``token_set`` (sha-checked) and the token set's data images."""
    check_choice(token_set, "token_set", tuple(md.TOKEN_SETS))
    images, _ = _digits.load_digits()
    data = np.asarray(md.tokens_to_images(md.to_tokens(images, token_set), token_set))
    return Models(
        token_set,
        _logits_fn(md.load(token_set)),
        md.classifier("mlp", token_set),
        md.classifier("cnn", token_set),
        data,
    )


def _image_reward(models: Models, task_name: str, param) -> Callable:
    if task_name == "class":
        return lambda images: dc.log_probs(models.mlp, images)[..., param]
    return lambda images: cd.layout_reward(images, param)


def seen_reward(models: Models, task_name: str, param) -> Callable:
    """The seen reward ``r(E)`` of a single relaxed one-hot ``(64, V + 1)``; ``param`` (the
    digit, or the box's pixel mask) may be traced."""
    per_image = _image_reward(models, task_name, param)
    return lambda e: per_image(md.to_images(e, models.token_set))


def heldout_metric(models: Models, task: cd.Task, images) -> jax.Array:
    """Per image: the CNN says ``target`` (1/0), or the IoU of the ink's box."""
    return _heldout(models, task.name, task.target, _box(task), images)


def _heldout(models: Models, task_name: str, digit, box, images) -> jax.Array:
    if task_name == "class":
        return (jnp.argmax(dc.log_probs(models.cnn, images), -1) == digit).astype(jnp.float32)
    return cd.box_iou(images, box)


def _box(task: cd.Task) -> np.ndarray:
    return np.asarray(task.box if task.box is not None else (0, 0, 0, 0), np.int32)


def budget_for(num_particles: int, num_steps: int = NUM_STEPS) -> int:
    """:func:`psijax.experiments.discrete_study.budget_for` at :data:`NUM_STEPS` by default."""
    return _study.budget_for(num_particles, num_steps)


# -- evaluation --------------------------------------------------------------------------------
def metrics_fn(models: Models, task_name: str) -> Callable:
    """The jitted ``fn(samples, log_weights, param, box) -> {metric: scalar}`` of
    :func:`evaluate` for ``task_name`` (``param``: the digit or the box's pixel mask; ``box``:
    ``(row0, row1, col0, col1)``, unused by the class task); vmappable, so a whole batch of
    runs is scored in one call."""
    vocab = md.TOKEN_SETS[models.token_set]

    def fn(samples, log_weights, param, box):
        log_weights = jnp.asarray(log_weights, jnp.float32)
        log_weights = jnp.where(jnp.isfinite(log_weights), log_weights, -jnp.inf)
        top = jnp.max(log_weights)
        any_used = jnp.isfinite(top)  # else every weight is zero (or NaN from a model)
        w = jnp.where(any_used, jnp.exp(log_weights - jnp.where(any_used, top, 0.0)), 0.0)
        w = w / jnp.where(any_used, jnp.sum(w), 1.0)
        used = w > 0
        tokens = jnp.where(used[:, None], jnp.clip(jnp.asarray(samples), 0, vocab - 1), 0)
        e = one_hot(tokens, vocab)
        images = md.to_images(e, models.token_set)
        rewards = jax.vmap(seen_reward(models, task_name, param))(e)
        rewards = jnp.where(used & jnp.isfinite(rewards), rewards, -jnp.inf)
        held = _heldout(models, task_name, param, box, images)
        dist = cd.nearest_data_distance(images, models.data)
        best = jnp.argmax(rewards)
        no_best = ~jnp.isfinite(rewards[best])  # no usable particle: no best one to score
        mean = lambda v: jnp.where(any_used, jnp.sum(jnp.where(used, w * v, 0.0)), jnp.nan)  # noqa: E731
        return {
            "ess": jnp.where(any_used, 1.0 / jnp.sum(w**2), 0.0),
            "reward": mean(jnp.where(used, rewards, 0.0)),
            "heldout": mean(held),
            "nn_dist": mean(dist),
            "best_reward": rewards[best],
            "best_heldout": jnp.where(no_best, jnp.nan, held[best]),
            "best_nn_dist": jnp.where(no_best, jnp.nan, dist[best]),
        }

    return jax.jit(fn)


def evaluate(models: Models, task: cd.Task, samples, log_weights) -> dict:
    """Metrics of one weighted particle set (module docstring): ``samples`` are token
    sequences ``(N, 64)``; zero-weight particles count nowhere. The seen reward is recomputed
    on the sequences (unscaled by ``β``)."""
    out = metrics_fn(models, task.name)(
        jnp.asarray(samples), log_weights, jnp.asarray(task.param), _box(task)
    )
    return {k: float(v) for k, v in out.items()}


def plot_grid(
    models: Models, first: dict, task_name: str, beta: float, n_ref: int, path: str, top: int = 4
) -> None:
    """The ``top`` highest-weight particles (seed 0) of every method (rows) and target
    (columns) of ``task_name`` at ``β`` and budget ``N_ref``, best first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in first if k[0] == task_name and k[2] == beta and k[4] == n_ref]
    targets = list(dict.fromkeys(k[1] for k in keys))
    methods = list(dict.fromkeys(k[3] for k in keys))
    fig, axes = plt.subplots(
        len(methods),
        len(targets),
        figsize=(1.1 * top * len(targets), 1.25 * len(methods)),
        squeeze=False,
    )
    for row, method in enumerate(methods):
        for col, target in enumerate(targets):
            tokens, weights = first[(task_name, target, beta, method, n_ref)]
            order = np.argsort(-weights)[:top]
            images = np.asarray(md.tokens_to_images(tokens[order], models.token_set))[:, 0]
            strip = np.concatenate([np.pad(im, 1, constant_values=-1.0) for im in images], axis=1)
            ax = axes[row, col]
            ax.imshow(-strip, cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{task_name} = {target}", fontsize=8)
            if col == 0:
                ax.set_ylabel(method, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{models.token_set}, β = {beta:g}, budget of N = {n_ref}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
