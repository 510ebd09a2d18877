r"""Reward alignment on handwritten digits: a learned FLUX flow with seen and held-out rewards.

The paper's image experiments in miniature (:mod:`psijax.models.digits`). The prior is a shipped
digits flow used **unconditionally** (class :data:`~psijax.models.digits.NULL_CLASS`):
``"reflow"`` (default), whose one-step Tweedie prediction ``x̂0(x1, 1)`` is a sharp digit, the
analog of timestep-distilled FLUX-schnell; or ``"flow"``, the plain rectified flow, whose
one-step prediction is a blur (the analog of FLUX-dev), where only the flow-map predictor makes
the initial stage reward-aware. Samples are packed tokens ``(16, 4)``; rewards see the image.

**Tasks.** Each has a differentiable *seen* reward used for alignment and a different
*held-out* metric used only to score the output (the paper's protocol):

- ``"class"``, target a digit ``c``: seen ``r(x0) = log p_MLP(c | x0)`` (the shipped MLP);
  held-out: whether the shipped CNN, another architecture trained separately, classifies the
  image as ``c``. Default ``α = 0.1``.
- ``"layout"``, target a box (a name of :data:`BOXES` or ``(row0, row1, col0, col1)``, half-open
  pixel ranges): seen ``r(x0) = mean ink inside − mean ink outside``, with
  ``ink = (x + 1)/2``; held-out: the IoU between the box and the bounding box of the
  thresholded ink (pixels ``> 0``, i.e. above half intensity; no such pixel: IoU 0). The IoU is
  a hard, non-differentiable score of the *extent* of the digit, which one stray pixel
  outside the box spoils; the seen reward is a soft mass balance. Default ``α = 0.05``.

Both tasks also report **realism**, ``nn_dist``: the mean squared distance per pixel from a
sample to the nearest of the 1,797 data images (the data's own leave-one-out value is about
0.07). A sampler that hacks a reward without staying on the data manifold shows up there
(:func:`hacking_check`).

**Metrics of a run** (:func:`evaluate`), on the final particles and their normalized weights
``w``: the weighted means of the seen reward (``reward``), the held-out metric (``heldout``)
and ``nn_dist``; the paper's single output, the particle with the highest seen reward (the
rule of :func:`psijax.align.best_sample`), scored the same way (``best_reward``,
``best_heldout``, ``best_nn_dist``); the ESS and the NFE spent.

**References** (:func:`reference_rows`) from a pool of the model's own samples (flow map
``Φ_1`` of ``N(0, I)`` draws): ``model (unguided)``, pool chunks of the prior-start particle
count with uniform weights; ``target (IS)``, the whole pool importance-weighted by
``exp(r/α)``, an estimate of what the exact tilted target scores (its ESS says how reliable).

Methods and their equal-NFE sizes are those of the toy study (:mod:`psijax.experiments.methods`),
with one change: an initial stage with the **flow-map** predictor (``"psi_sampler[flow_map]"``)
solves ``Φ_t`` by :data:`FLOW_MAP_STEPS` fixed Euler steps (:func:`euler_flow_map`, a predictor
of constant cost), so its chains are shortened by that factor and it spends the same budget as
the Tweedie version (:func:`method_options`). The tempered-SMC initial stage
(``"tempered_smc"``, ``"tempered_smc[flow_map]"``) cannot be sized in advance: it gets the same
particle count and the table reports the NFE it spent, as in the toy study. The adaptive Tsit5
flow map of the toy study costs about 30 model evaluations per prediction here, thirty times
the budget (``flow_map_steps=None`` still runs it, reporting its true NFE). DPS and FreeDoM use
``guidance_scale = 1/α`` (the tilt's own strength). Each (task, method) is compiled once, the
target being an argument of the compiled function, and looped over targets and seeds.
"""

import math
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from psijax._checks import check_int, check_real
from psijax.align import SAMPLERS, Custom, FlowMap, RewardProblem, diagnose
from psijax.experiments.methods import Method, parse_method, sampler_options
from psijax.experiments.methods import default_methods as _all_methods
from psijax.experiments.toy import FAST_COMPILE, FLOW_MAP_OPTIONS
from psijax.flows import ode
from psijax.models import digits
from psijax.models import digits_classifiers as dc

__all__ = [
    "TASKS",
    "BOXES",
    "DEFAULT_ALPHA",
    "DEFAULT_TARGETS",
    "MODELS",
    "METRICS",
    "INK_THRESHOLD",
    "DigitsModels",
    "Task",
    "load_models",
    "make_task",
    "ink",
    "layout_reward",
    "ink_bounding_box",
    "box_iou",
    "nearest_data_distance",
    "seen_reward",
    "heldout_metric",
    "make_problem",
    "FLOW_MAP_STEPS",
    "euler_flow_map",
    "default_methods",
    "method_options",
    "flow_samples",
    "evaluate",
    "MethodRun",
    "run_method",
    "reference_rows",
    "hacking_check",
    "run_study",
]

TASKS = ("class", "layout")
MODELS = ("reflow", "flow")
BOXES = {
    "left": (0, 8, 0, 5),
    "right": (0, 8, 3, 8),
    "narrow": (0, 8, 2, 5),
}
"""Named layout targets ``(row0, row1, col0, col1)``, half-open. The data's digits span all eight
rows and mostly columns 2 to 5 or 6 inclusive (bounding boxes of the thresholded ink: 40 % are
columns 2–5, 30 % 2–6); the boxes ask for a digit in columns 0–4 (shifted left), 3–7 (shifted
right) or 2–4 (narrower than almost all data: 2 % fit inside it)."""
DEFAULT_ALPHA = {"class": 0.1, "layout": 0.05}
DEFAULT_TARGETS = {"class": (0, 4, 8), "layout": ("left", "right", "narrow")}
METRICS = (
    "nfe",
    "num_particles",
    "ess",
    "reward",
    "heldout",
    "nn_dist",
    "best_reward",
    "best_heldout",
    "best_nn_dist",
)
INK_THRESHOLD = 0.0
"""Pixels above this value (in ``[-1, 1]``; half of full intensity) count as ink for the IoU."""


class DigitsModels(NamedTuple):
    """The prior (``name``: ``"reflow"`` or ``"flow"``), the seen and held-out classifiers and
    the data images ``(1797, 1, 8, 8)`` (for ``nn_dist``)."""

    name: str
    flow: digits.DigitsFlow
    mlp: dc.MLPClassifier
    cnn: dc.ConvClassifier
    data: np.ndarray


class Task(NamedTuple):
    """A task with its target: ``name`` (:data:`TASKS`), ``target`` as given (a digit or a box
    name), ``box`` (layout; ``None`` for class) and ``alpha``; ``param`` is the array the
    seen reward reads (the digit, or the box's 0/1 pixel mask), an argument of the compiled
    samplers."""

    name: str
    target: int | str | tuple
    alpha: float
    param: np.ndarray
    box: tuple | None = None


def load_models(model: str = "reflow") -> DigitsModels:
    """The shipped prior ``model`` (``"reflow"`` or ``"flow"``) and classifiers, sha-checked."""
    if model not in MODELS:
        raise ValueError(f"`model` must be one of {MODELS}, got {model!r}.")
    data, _ = digits.load_digits()
    return DigitsModels(model, digits.load(model), digits.load("mlp"), digits.load("cnn"), data)


def make_task(name: str, target, alpha: float | None = None) -> Task:
    """A :class:`Task`: ``name`` in :data:`TASKS`; ``target`` a digit 0–9 (``"class"``) or a box
    (``"layout"``: a name of :data:`BOXES` or ``(row0, row1, col0, col1)`` with
    ``0 <= row0 < row1 <= 8`` and ``0 <= col0 < col1 <= 8``, not the whole image); ``alpha``
    (default :data:`DEFAULT_ALPHA`) finite and ``> 0``. Raises ``ValueError`` naming the
    argument."""
    if name not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {name!r}.")
    alpha = DEFAULT_ALPHA[name] if alpha is None else alpha
    if check_real(alpha, "alpha", gt=0.0) is None:
        raise ValueError("`alpha` must be concrete (not traced).")
    if name == "class":
        value = _as_digit(target)
        return Task(name, value, float(alpha), np.int32(value))
    box = _as_box(target)
    mask = np.zeros((8, 8), np.float32)
    mask[box[0] : box[1], box[2] : box[3]] = 1.0
    return Task(name, target if isinstance(target, str) else box, float(alpha), mask, box)


def _as_digit(target) -> int:
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target)
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
        raise ValueError(f"`target` of the class task must be a digit 0-9, got {target!r}.")
    if not 0 <= target <= 9:
        raise ValueError(f"`target` of the class task must be a digit 0-9, got {target!r}.")
    return int(target)


def _as_box(target) -> tuple:
    if isinstance(target, str):
        if target not in BOXES:
            raise ValueError(
                f"`target` of the layout task must be one of {tuple(BOXES)} or "
                f"(row0, row1, col0, col1), got {target!r}."
            )
        return BOXES[target]
    try:
        box = tuple(int(v) for v in target)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not (0 <= box[0] < box[1] <= 8 and 0 <= box[2] < box[3] <= 8):
        raise ValueError(
            "`target` box must be (row0, row1, col0, col1) with 0 <= row0 < row1 <= 8 and "
            f"0 <= col0 < col1 <= 8, got {target!r}."
        )
    if box == (0, 8, 0, 8):
        raise ValueError("`target` box must not be the whole image (its reward is undefined).")
    return box


# -- rewards and metrics on images (..., 1, 8, 8) ------------------------------------------------
def ink(images):
    """Ink ``(x + 1)/2`` of pixels in ``[-1, 1]`` (0: blank, 1: full)."""
    return (jnp.asarray(images, jnp.float32) + 1.0) / 2.0


def layout_reward(images, mask):
    """Mean ink inside the 0/1 pixel ``mask`` ``M`` ``(8, 8)`` minus mean ink outside it, per
    image: ``r = Σ M·ink / Σ M − Σ (1 − M)·ink / Σ (1 − M)``, in ``[−1, 1]``."""
    mask = jnp.asarray(mask, jnp.float32)
    values = ink(images)[..., 0, :, :]
    inside = jnp.sum(values * mask, axis=(-2, -1)) / jnp.sum(mask)
    outside = jnp.sum(values * (1.0 - mask), axis=(-2, -1)) / jnp.sum(1.0 - mask)
    return inside - outside


def ink_bounding_box(images, threshold: float = INK_THRESHOLD):
    """Bounding box ``(row0, row1, col0, col1)`` (half-open, int32, last axis) of the pixels
    above ``threshold``, and whether there is any."""
    on = jnp.asarray(images)[..., 0, :, :] > threshold
    rows, cols = jnp.any(on, axis=-1), jnp.any(on, axis=-2)

    def extent(a):
        first = jnp.argmax(a, axis=-1)
        last = a.shape[-1] - jnp.argmax(a[..., ::-1], axis=-1)
        return first, last

    (r0, r1), (c0, c1) = extent(rows), extent(cols)
    return jnp.stack([r0, r1, c0, c1], axis=-1).astype(jnp.int32), jnp.any(rows, axis=-1)


def box_iou(images, box, threshold: float = INK_THRESHOLD):
    """IoU between ``box`` ``B`` and the bounding box ``A`` of each image's thresholded ink:
    ``|A ∩ B| / (|A| + |B| − |A ∩ B|)`` in pixels (0 if no pixel is ink)."""
    bb, found = ink_bounding_box(images, threshold)
    r0, r1, c0, c1 = (jnp.asarray(v, jnp.float32) for v in box)
    b = bb.astype(jnp.float32)
    height = jnp.clip(jnp.minimum(b[..., 1], r1) - jnp.maximum(b[..., 0], r0), 0.0)
    width = jnp.clip(jnp.minimum(b[..., 3], c1) - jnp.maximum(b[..., 2], c0), 0.0)
    inter = height * width
    union = (b[..., 1] - b[..., 0]) * (b[..., 3] - b[..., 2]) + (r1 - r0) * (c1 - c0) - inter
    return jnp.where(found, inter / union, 0.0)


def nearest_data_distance(images, data):
    """Mean squared distance per pixel from each image to its nearest image of ``data``:
    ``min_j ‖x − d_j‖² / 64``."""
    x = jnp.reshape(jnp.asarray(images, jnp.float32), (-1, 64))
    d = jnp.reshape(jnp.asarray(data, jnp.float32), (-1, 64))
    sq = jnp.sum(x**2, 1)[:, None] - 2.0 * x @ d.T + jnp.sum(d**2, 1)[None, :]
    out = jnp.maximum(jnp.min(sq, axis=1), 0.0) / 64.0
    return jnp.reshape(out, jnp.shape(images)[:-3])


def seen_reward(models: DigitsModels, task_name: str, param) -> Callable:
    """The seen reward ``r(x0)`` on packed tokens ``(16, 4)``; ``param`` may be traced."""
    per_image = _image_reward(models, task_name, param)
    return lambda x0: per_image(digits.to_images(x0))


def _image_reward(models: DigitsModels, task_name: str, param) -> Callable:
    """The seen reward on images ``(..., 1, 8, 8)``, one value per image."""
    if task_name == "class":
        return lambda images: dc.log_probs(models.mlp, images)[..., param]
    return lambda images: layout_reward(images, param)


def heldout_metric(models: DigitsModels, task: Task, images) -> jax.Array:
    """The held-out score per image: CNN says ``target`` (1/0), or the ink box's IoU."""
    if task.name == "class":
        return (jnp.argmax(dc.log_probs(models.cnn, images), -1) == task.target).astype(float)
    return box_iou(images, task.box)


def make_problem(
    models: DigitsModels, task_name: str, param, alpha: float, transition=None
) -> RewardProblem:
    """The unconditional prior with the seen reward of ``param`` (Tweedie); ``transition`` is
    the kernel between denoising steps (``None``: the samplers' stochastic one;
    :class:`psijax.flows.distilled.Renoising` re-noises the one-step prediction)."""
    return RewardProblem(
        digits.velocity_fn(models.flow, digits.NULL_CLASS),
        seen_reward(models, task_name, param),
        (16, 4),
        alpha,
        transition=transition,
    )


DATA_RANGE = (-1.0, 1.0)
"""The pixel range of the data (:func:`psijax.align.diagnose` flags particles far outside)."""

FLOW_MAP_STEPS = 4
"""Euler steps of the flow-map predictor of the initial stages in this study."""


def euler_flow_map(num_steps: int = FLOW_MAP_STEPS) -> Custom:
    """An x0-predictor ``(velocity_fn, x, t) -> (Φ_t(x), num_steps)``: the flow map solved by
    ``num_steps`` Euler steps on the uniform grid from ``t`` to 0 (differentiable; a
    :class:`~psijax.align.Custom` predictor of constant cost ``nfe_per_call = num_steps``)."""
    num_steps = check_int(num_steps, "flow_map_steps")

    def predictor(velocity_fn, x, t):
        grid = jnp.asarray(t, jnp.float32) * jnp.linspace(1.0, 0.0, num_steps + 1)
        return ode.euler_sample(velocity_fn, x, grid), jnp.int32(num_steps)

    return Custom(predictor, nfe_per_call=num_steps)


def default_methods() -> tuple[str, ...]:
    """The toy study's methods: every sampler of :data:`psijax.align.SAMPLERS` and the flow-map
    variants ``"psi_sampler[flow_map]"`` and ``"tempered_smc[flow_map]"``
    (:func:`psijax.experiments.methods.default_methods`)."""
    return _all_methods(flow_map=True)


def method_options(
    method: Method, budget: int, num_steps: int, alpha: float, flow_map_steps: int | None
) -> dict:
    """Sampler keyword arguments of ``method`` at the NFE budget (module doc): those of
    :func:`psijax.experiments.methods.sampler_options`, with guidance ``1/α``; a flow-map
    initial stage gets :func:`euler_flow_map` (``None``: the adaptive flow map of the toy study,
    :data:`psijax.experiments.toy.FLOW_MAP_OPTIONS`, with the Tweedie layout)."""
    flow_map = FlowMap(**FLOW_MAP_OPTIONS) if flow_map_steps is None else None
    flow_map = euler_flow_map(flow_map_steps) if flow_map is None else flow_map
    options = sampler_options(method, budget, num_steps, flow_map=flow_map)
    if method.sampler in ("dps", "freedom"):
        options["guidance_scale"] = 1.0 / alpha
    return options


def flow_samples(model: digits.DigitsFlow, rng_key, labels, tolerance: float = 1e-3):
    """``(x1, Φ_1(x1; label), nfe)`` in packed tokens for each of ``labels``: the batch is solved
    as one ODE (diffrax Tsit5, ``rtol = atol = tolerance``, adaptive steps shared by the batch;
    ``nfe`` counts batched model calls)."""
    labels = jnp.asarray(labels, jnp.int32)
    x1 = jax.random.normal(rng_key, (labels.shape[0], 16, 4))

    @jax.jit
    def solve(x1):
        velocity = lambda x, t: model(x, jnp.full((x.shape[0],), t), labels)  # noqa: E731
        return ode.flow_map(velocity, x1, 1.0, rtol=tolerance, atol=tolerance)

    x0, nfe = solve(x1)
    return x1, x0, int(nfe)


# -- evaluation ----------------------------------------------------------------------------------
def evaluate(models: DigitsModels, task: Task, samples, log_weights, rewards) -> dict:
    """Metrics of one weighted particle set (module doc). ``samples`` are tokens ``(N, 16, 4)``;
    zero-weight particles (which may hold NaN) count nowhere."""
    log_weights = jnp.asarray(log_weights, jnp.float32)
    w = jnp.exp(log_weights - jax.scipy.special.logsumexp(log_weights))
    used = w > 0
    tokens = jnp.where(used[:, None, None], jnp.asarray(samples), 0.0)
    images = digits.to_images(tokens)
    rewards = jnp.where(used, jnp.asarray(rewards), -jnp.inf)
    held = heldout_metric(models, task, images)
    dist = nearest_data_distance(images, models.data)
    best = int(jnp.argmax(jnp.where(jnp.isfinite(rewards), rewards, -jnp.inf)))
    mean = lambda v: float(jnp.sum(jnp.where(used, w * v, 0.0)))  # noqa: E731
    return {
        "ess": float(1.0 / jnp.sum(w**2)),
        "reward": mean(rewards),
        "heldout": mean(held),
        "nn_dist": mean(dist),
        "best_reward": float(rewards[best]),
        "best_heldout": float(held[best]),
        "best_nn_dist": float(dist[best]),
    }


class MethodRun(NamedTuple):
    """Per-(target, seed) rows of a method; per target the first seed's particles (tokens) and
    normalized weights, for the image grids; timings: the first call (compilation included)
    and the median later call, in seconds."""

    rows: list
    particles: dict
    compile_s: float
    run_s: float


def run_method(
    models: DigitsModels,
    tasks: Sequence[Task],
    method: str | Method,
    *,
    budget: int = 1000,
    num_steps: int = 25,
    seeds: int = 5,
    flow_map_steps: int | None = FLOW_MAP_STEPS,
    on_run: Callable | None = None,
    transition=None,
) -> MethodRun:
    """Run ``method`` on every task of ``tasks`` (all of one kind and ``α``) for ``seeds`` seeds
    at the NFE budget ``budget`` (:func:`method_options`); one compilation. ``on_run(task,
    seed)`` is called after each run (progress bars). Seed ``s`` uses ``jax.random.key(s)`` for
    every target. ``transition``: the kernel between steps (:func:`make_problem`)."""
    method = parse_method(method) if isinstance(method, str) else method
    kinds = {(t.name, t.alpha) for t in tasks}
    if len(kinds) != 1:
        raise ValueError(f"`tasks` must share one task name and alpha, got {sorted(kinds)}.")
    name, alpha = kinds.pop()
    options = method_options(method, budget, num_steps, alpha, flow_map_steps)
    sampler = SAMPLERS[method.sampler]

    def one(key, param):
        problem = make_problem(models, name, param, alpha, transition)
        return sampler(key, problem, num_steps=num_steps, **options)

    run = jax.jit(one, compiler_options=FAST_COMPILE)
    rows, particles, times = [], {}, []
    for task in tasks:
        for seed in range(seeds):
            start = time.perf_counter()
            result = jax.block_until_ready(run(jax.random.key(seed), jnp.asarray(task.param)))
            times.append(time.perf_counter() - start)
            row = {"task": task.name, "target": str(task.target), "model": models.name}
            row |= {"budget": budget, "method": method.name, "seed": seed}
            row |= {"nfe": int(result.nfe), "num_particles": int(result.samples.shape[0])}
            row |= evaluate(models, task, result.samples, result.log_weights, result.rewards)
            row["warnings"] = " | ".join(diagnose(result, data_range=DATA_RANGE))
            rows.append(row)
            if seed == 0:
                particles[str(task.target)] = (
                    np.asarray(result.samples),
                    np.exp(np.asarray(result.log_weights, np.float64)),
                )
            if on_run is not None:
                on_run(task, seed)
    run_s = float(np.median(times[1:])) if len(times) > 1 else math.nan
    return MethodRun(rows, particles, times[0], run_s)


def reference_rows(
    models: DigitsModels, task: Task, pool, *, budget: int, chunk: int, seeds: int
) -> tuple[list, dict]:
    """``model (unguided)``: ``seeds`` chunks of ``chunk`` pool samples with uniform weights;
    ``target (IS)``: the whole pool weighted by ``exp(r/α)`` (one row). ``pool``: the model's
    flow-map samples, tokens ``(M, 16, 4)`` with ``M >= seeds·chunk``. Returns the rows and the
    particles ``{method: (tokens, weights)}`` (first chunk; the pool) for the grids."""
    pool = jnp.asarray(pool)
    if pool.shape[0] < seeds * chunk:
        raise ValueError(f"`pool` needs >= {seeds * chunk} samples, got {pool.shape[0]}.")
    reward = jax.jit(jax.vmap(seen_reward(models, task.name, jnp.asarray(task.param))))
    rewards = reward(pool)
    base = {"task": task.name, "target": str(task.target), "model": models.name, "budget": budget}
    rows = []
    for seed in range(seeds):
        part = slice(seed * chunk, (seed + 1) * chunk)
        uniform = jnp.full((chunk,), -math.log(chunk))
        row = base | {"method": "model (unguided)", "seed": seed, "nfe": math.nan}
        row |= {"num_particles": chunk}
        rows.append(row | evaluate(models, task, pool[part], uniform, rewards[part]))
    log_w = rewards / task.alpha
    log_w = log_w - jax.scipy.special.logsumexp(log_w)
    row = base | {"method": "target (IS)", "seed": 0, "nfe": math.nan}
    row |= {"num_particles": int(pool.shape[0])}
    rows.append(row | evaluate(models, task, pool, log_w, rewards))
    uniform = np.full(chunk, 1.0 / chunk)
    particles = {
        "model (unguided)": (np.asarray(pool[:chunk]), uniform),
        "target (IS)": (np.asarray(pool), np.exp(np.asarray(log_w, np.float64))),
    }
    return rows, particles


def hacking_check(
    models: DigitsModels,
    task: Task,
    images,
    *,
    radii: Sequence[float] = (0.25, 0.5, 2.0),
    num_steps: int = 100,
    learning_rate: float = 0.05,
) -> tuple[list, dict]:
    """A pure reward hacker: Adam ascent of the **seen** reward directly on the pixels of
    ``images`` ``(n, 1, 8, 8)`` (no model, no prior), projected onto ``[-1, 1]`` and onto an
    ``L∞`` ball of each radius around the start (2 = unconstrained).

    Returns rows ``{radius, reward, heldout, nn_dist, seen_accuracy}`` (means over images;
    radius 0 is the start; ``seen_accuracy``: the seen MLP's own accuracy for the class task,
    the fraction of images with a higher seen reward than at the start for layout) and
    ``{radius: images}``. If the held-out metric rose with the seen reward as far as the seen
    model's own verdict, it would be hacked along; ``nn_dist`` shows how far from the data
    such images drift.
    """
    start = jnp.asarray(images, jnp.float32)
    per_image = _image_reward(models, task.name, jnp.asarray(task.param))
    grad = jax.jit(jax.grad(lambda x: -jnp.sum(per_image(x))))

    def row(radius, x):
        out = {"radius": radius, "reward": float(jnp.mean(per_image(x)))}
        out["heldout"] = float(jnp.mean(heldout_metric(models, task, x)))
        out["nn_dist"] = float(jnp.mean(nearest_data_distance(x, models.data)))
        if task.name == "class":
            said = jnp.argmax(dc.log_probs(models.mlp, x), -1) == task.target
        else:
            said = per_image(x) > per_image(start)
        out["seen_accuracy"] = float(jnp.mean(said))
        return out

    rows, out = [row(0.0, start)], {0.0: np.asarray(start)}
    for radius in radii:
        lo, hi = jnp.maximum(start - radius, -1.0), jnp.minimum(start + radius, 1.0)
        optimizer = optax.adam(learning_rate)
        x, state = start, optimizer.init(start)
        for _ in range(num_steps):
            updates, state = optimizer.update(grad(x), state)
            x = jnp.clip(optax.apply_updates(x, updates), lo, hi)
        rows.append(row(float(radius), x))
        out[float(radius)] = np.asarray(x)
    return rows, out


def run_study(
    models: DigitsModels,
    tasks: Sequence[Task],
    methods: Sequence[str],
    *,
    budget: int = 1000,
    num_steps: int = 25,
    seeds: int = 5,
    pool_size: int = 4096,
    flow_map_steps: int | None = FLOW_MAP_STEPS,
    progress: bool = False,
) -> tuple[list, dict, list]:
    """Every method on every task at one budget, plus the reference rows (pool of
    ``pool_size`` flow-map samples of the model, seed 12345).

    Returns ``(rows, particles, timings)``: per-(target, seed) metric rows; ``{(task, target,
    method): (tokens, weights)}`` of seed 0; and ``{task, method, compile_s, run_s}`` rows.
    ``progress`` shows a tqdm bar over the runs.
    """
    parsed = [parse_method(m) for m in methods]
    groups = {}
    for task in tasks:
        groups.setdefault((task.name, task.alpha), []).append(task)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks) * len(parsed) * seeds, desc="digits study", unit="run")
    labels = np.full(pool_size, digits.NULL_CLASS)
    pool = flow_samples(models.flow, jax.random.key(12345), labels)[1]
    chunk = budget // num_steps
    rows, particles, timings = [], {}, []
    for task in tasks:
        ref_rows, ref_particles = reference_rows(
            models, task, pool, budget=budget, chunk=chunk, seeds=min(seeds, pool_size // chunk)
        )
        rows += ref_rows
        for method, value in ref_particles.items():
            particles[(task.name, str(task.target), method)] = value
    for group in groups.values():
        for method in parsed:
            if bar is not None:
                bar.set_postfix_str(f"{group[0].name}/{method.name}")
            out = run_method(
                models,
                group,
                method,
                budget=budget,
                num_steps=num_steps,
                seeds=seeds,
                flow_map_steps=flow_map_steps,
                on_run=None if bar is None else (lambda task, seed: bar.update()),
            )
            rows += out.rows
            for target, value in out.particles.items():
                particles[(group[0].name, target, method.name)] = value
            timings.append({"task": group[0].name, "method": method.name})
            timings[-1] |= {"compile_s": out.compile_s, "run_s": out.run_s}
    if bar is not None:
        bar.close()
    return rows, particles, timings
