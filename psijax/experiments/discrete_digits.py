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

**Equal cost.** A budget is named by ``N_ref ∈`` :data:`PARTICLES`, the paper's particle
counts: it is the NFE of ``smc_reverse`` with ``N_ref`` particles
(:func:`psijax.align.discrete.cost_per_particle`; a reward call counts as one NFE), and every
method gets the particles that budget buys (``best_of_n`` about twice as many, the gradient
proposal about half). The **amortised** proposal (:class:`ResidualHead`) is trained once per
(token set, task, target) at the first ``β`` of :data:`DEFAULT_BETAS` by the log-variance loss
(:func:`psijax.align.discrete.amortised.train`); its training time is reported apart and not
charged to the budget, and it is used with the corrected weights, so it stays exact at every
``β``.

**References** (:func:`reference_rows`) from a pool of the model's own unguided samples:
``model (unguided)`` (pool chunks of ``N_ref`` with uniform weights) and ``target (IS)`` (the
whole pool weighted by ``e^{r/β}``: what the exact target scores, as far as the pool's ESS
allows). :func:`hacking_check` ascends the seen reward over free relaxed one-hots with no
model at all: the held-out scores of its outputs show whether the seen reward can be hacked.

Every (token set, task, method, budget) is compiled once: the seeds, the targets and the
``β`` values are batched by ``vmap`` in one call (``β`` enters as a traced scale of the reward,
``r/β`` with the problem's own ``β = 1``: the same target).
"""

import math
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from psijax._checks import check_choice, check_int
from psijax.align.discrete import (
    DISCRETE_SAMPLERS,
    DiscreteProblem,
    Reverse,
    Soft,
    cost_per_particle,
)
from psijax.align.discrete import Amortised as AmortisedProposal
from psijax.align.discrete import amortised as _amortised
from psijax.discrete.masking import one_hot
from psijax.discrete.sampling import sample
from psijax.experiments import digits as cd
from psijax.experiments.toy_report import aggregate, format_mean_se
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
    "Models",
    "load_models",
    "seen_reward",
    "heldout_metric",
    "make_problem",
    "budget_for",
    "ResidualHead",
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
]

NUM_STEPS = 32
"""Denoising steps of every sampler (the MDLM kernel, linear schedule): two tokens a step on
average."""
PARTICLES = (2, 4, 8, 16)
DEFAULT_BETAS = {"class": (1.0, 0.1), "layout": (0.05, 0.02)}
"""Two ``β`` per task. The class task at ``β = 1`` is the posterior ``P_θ(x)·p_MLP(c | x)``:
its exact target is recognised by the held-out CNN 62–80 % of the time (binary), 85–97 % at
``β = 0.1``, so neither saturates."""
DEFAULT_TARGETS = cd.DEFAULT_TARGETS
METHODS = ("best_of_n", "fk_steering", "smc_reverse", "smc_first_order", "smc_amortised")
METRICS = cd.METRICS


class Models(NamedTuple):
    """The prior of ``token_set`` (its pure ``logits(E, t)``), its seen and held-out
    classifiers, and the data as images of the token set ``(1797, 1, 8, 8)`` (for
    ``nn_dist``)."""

    token_set: str
    logits: Callable
    mlp: nnx.Module
    cnn: nnx.Module
    data: np.ndarray


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


def make_problem(models: Models, task_name: str, param, beta) -> DiscreteProblem:
    """The problem ``P_θ·e^{r/β}`` written as ``β' = 1`` and the reward ``r/β`` (``param`` and
    ``beta`` may be traced)."""
    reward = seen_reward(models, task_name, param)
    vocab = md.TOKEN_SETS[models.token_set]
    return DiscreteProblem(models.logits, lambda e: reward(e) / beta, md.LENGTH, vocab, beta=1.0)


def budget_for(num_particles: int, num_steps: int = NUM_STEPS) -> int:
    """The NFE of ``smc_reverse`` (soft twist) with ``num_particles`` particles."""
    return int(round(num_particles * cost_per_particle(num_steps, Soft(), Reverse())))


# -- the amortised proposal --------------------------------------------------------------------
class ResidualHead:
    r"""A light amortised proposal on the frozen denoiser: logits
    ``μ_θ(E, t) + b_0 + t·b_1 + (E U) W``, with ``b_0, b_1 ∈ ℝ^{L×V}`` position biases and a
    rank-``r`` context term (``U`` fixed at random, ``W`` learned; everything learned starts at
    0, so training starts from the base model's proposal). Only the head is trained: the
    denoiser's forward is shared, not differentiated. ``params`` is a dict of arrays."""

    def __init__(self, models: Models, rank: int = 16, seed: int = 0):
        self.models = models
        self.vocab = md.TOKEN_SETS[models.token_set]
        self.rank = check_int(rank, "rank")
        width = md.LENGTH * (self.vocab + 1)
        scale = 1.0 / math.sqrt(width)
        self.projection = scale * jax.random.normal(jax.random.key(seed), (width, self.rank))

    def init(self) -> dict:
        """Zero parameters: the base model's proposal."""
        shape = (md.LENGTH, self.vocab)
        return {
            "b0": jnp.zeros(shape),
            "b1": jnp.zeros(shape),
            "w": jnp.zeros((self.rank, md.LENGTH * self.vocab)),
        }

    def logits(self, params: dict, e, t):
        """The proposal's logits ``(64, V + 1)`` (mask column as the denoiser's)."""
        base = self.models.logits(e, t)
        context = (jnp.reshape(e, (-1,)) @ self.projection) @ params["w"]
        shift = params["b0"] + t * params["b1"] + context.reshape(md.LENGTH, self.vocab)
        return base.at[:, : self.vocab].add(shift)


class Amortised(NamedTuple):
    """A trained head and its parameters, the log-variance loss and ``Var[log w]`` per training
    step, and the training time in seconds."""

    head: ResidualHead
    params: dict
    loss: np.ndarray
    log_weight_variance: np.ndarray
    train_s: float

    @property
    def logits_fn(self) -> Callable:
        """The proposal's ``logits_fn(E, t)``, for ``smc_amortised``."""
        return lambda e, t: self.head.logits(self.params, e, t)


def train_amortised(
    models: Models,
    task: cd.Task,
    *,
    num_iterations: int = 150,
    num_trajectories: int = 16,
    learning_rate: float = 1e-2,
    num_steps: int = NUM_STEPS,
    seed: int = 0,
) -> Amortised:
    """Train a :class:`ResidualHead` for ``task`` at ``task.alpha`` (its ``β``): the
    log-variance loss over mixed on/off-policy trajectories of the soft-twisted SMC, Adam, the
    loop in ``lax.scan`` (:func:`psijax.align.discrete.amortised.train`)."""
    head = ResidualHead(models, seed=seed)
    problem = make_problem(models, task.name, jnp.asarray(task.param), task.alpha)
    start = time.perf_counter()
    state, info = jax.jit(
        lambda key: _amortised.train(
            key,
            problem,
            head.logits,
            head.init(),
            num_steps=num_steps,
            num_iterations=num_iterations,
            num_trajectories=num_trajectories,
            optimizer=optax.adam(learning_rate),
            twist=Soft(),
        )
    )(jax.random.key(seed))
    jax.block_until_ready(state)
    train_s = time.perf_counter() - start
    return Amortised(
        head,
        state.params,
        np.asarray(info.loss),
        np.asarray(info.log_weight_variance),
        train_s,
    )


# -- evaluation --------------------------------------------------------------------------------
def metrics_fn(models: Models, task_name: str) -> Callable:
    """The jitted ``fn(samples, log_weights, param, box) -> {metric: scalar}`` of
    :func:`evaluate` for ``task_name`` (``param``: the digit or the box's pixel mask; ``box``:
    ``(row0, row1, col0, col1)``, unused by the class task); vmappable, so a whole batch of
    runs is scored in one call."""
    vocab = md.TOKEN_SETS[models.token_set]

    def fn(samples, log_weights, param, box):
        log_weights = jnp.asarray(log_weights, jnp.float32)
        w = jnp.exp(log_weights - jax.scipy.special.logsumexp(log_weights))
        used = w > 0
        tokens = jnp.where(used[:, None], jnp.clip(jnp.asarray(samples), 0, vocab - 1), 0)
        e = one_hot(tokens, vocab)
        images = md.to_images(e, models.token_set)
        rewards = jax.vmap(seen_reward(models, task_name, param))(e)
        rewards = jnp.where(used & jnp.isfinite(rewards), rewards, -jnp.inf)
        held = _heldout(models, task_name, param, box, images)
        dist = cd.nearest_data_distance(images, models.data)
        best = jnp.argmax(rewards)
        mean = lambda v: jnp.sum(jnp.where(used, w * v, 0.0))  # noqa: E731
        return {
            "ess": 1.0 / jnp.sum(w**2),
            "reward": mean(jnp.where(used, rewards, 0.0)),
            "heldout": mean(held),
            "nn_dist": mean(dist),
            "best_reward": rewards[best],
            "best_heldout": held[best],
            "best_nn_dist": dist[best],
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


class MethodRun(NamedTuple):
    """Rows per (target, β, seed); the first seed's particles per (target, β) for the grids;
    the compile and run seconds of the one batched call."""

    rows: list
    particles: dict
    compile_s: float
    run_s: float


def run_method(
    models: Models,
    tasks: Sequence[cd.Task],
    method: str,
    reference_particles: int,
    *,
    betas: Sequence[float],
    seeds: int = 5,
    num_steps: int = NUM_STEPS,
    amortised: dict | None = None,
    num_particles: int | None = None,
) -> MethodRun:
    """``method`` (a name of :data:`METHODS`) on every task of ``tasks`` (one task name) × every
    ``β`` × ``seeds`` seeds, at the budget of ``reference_particles``
    (:func:`budget_for`), in one compiled, vmapped call; ``num_particles`` instead fixes the
    particle count (the paper's equal-N comparison). ``smc_amortised`` needs ``amortised``:
    ``{target: Amortised}``, one per task's target. Seed ``s`` uses ``jax.random.key(s)``."""
    check_choice(method, "method", METHODS)
    names = {t.name for t in tasks}
    if len(names) != 1:
        raise ValueError(f"`tasks` must share one task name, got {sorted(names)}.")
    name = names.pop()
    sampler = DISCRETE_SAMPLERS[method]
    budget = budget_for(reference_particles, num_steps)
    probe = make_problem(models, name, jnp.asarray(tasks[0].param), 1.0)
    targets = [str(t.target) for t in tasks]
    heads = None
    if method == "smc_amortised":
        if amortised is None or any(target not in amortised for target in targets):
            raise ValueError("`amortised` must map every target of `tasks` to its proposal.")
        head = amortised[targets[0]].head
        # the targets' heads share one structure: their parameters are batched with the targets
        heads = jax.tree.map(lambda *p: jnp.stack(p), *[amortised[t].params for t in targets])
    if num_particles is None:
        options = {"num_steps": num_steps}
        if heads is not None:
            options["proposal"] = AmortisedProposal(amortised[targets[0]].logits_fn)
        num_particles = sampler.num_particles_for(budget, probe, **options)
    params = jnp.stack([jnp.asarray(t.param) for t in tasks])
    beta_values = [float(b) for b in betas]
    betas = jnp.asarray(beta_values, jnp.float32)

    def one(key, param, beta, head_params):
        problem = make_problem(models, name, param, beta)
        config = {}
        if heads is not None:
            config["proposal_logits_fn"] = lambda e, t: head.logits(head_params, e, t)
        return sampler(key, problem, num_particles=num_particles, num_steps=num_steps, **config)

    batched = jax.vmap(  # targets × betas × seeds
        jax.vmap(jax.vmap(one, (0, None, None, None)), (None, None, 0, None)),
        (None, 0, None, 0),
    )
    keys = jnp.stack([jax.random.key(s) for s in range(seeds)])
    start = time.perf_counter()
    compiled = jax.jit(batched).lower(keys, params, betas, heads).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(keys, params, betas, heads))
    run_s = time.perf_counter() - start
    calls = np.asarray(result.info.proposal_info.reward_calls).sum(-1)
    score = metrics_fn(models, name)
    boxes = jnp.stack([jnp.asarray(_box(t)) for t in tasks])
    per_seed = jax.vmap(score, (0, 0, None, None))
    per_beta = jax.vmap(per_seed, (0, 0, None, None))
    scores = jax.vmap(per_beta)(result.samples, result.log_weights, params, boxes)
    scores = {k: np.asarray(v) for k, v in scores.items()}
    rows, particles = [], {}
    for i in range(len(tasks)):
        for j, beta in enumerate(beta_values):
            for s in range(seeds):
                samples = result.samples[i, j, s]
                log_w = result.log_weights[i, j, s]
                row = {"token_set": models.token_set, "task": name, "target": targets[i]}
                row |= {"beta": beta, "budget": budget, "n_ref": reference_particles}
                row |= {"method": method, "seed": s, "nfe": int(result.nfe[i, j, s])}
                row |= {"reward_calls": int(calls[i, j, s])}
                row |= {"num_particles": num_particles}
                row |= {k: float(v[i, j, s]) for k, v in scores.items()}
                rows.append(row)
                if s == 0:
                    particles[(targets[i], beta)] = (
                        np.asarray(samples),
                        np.exp(np.asarray(log_w, np.float64)),
                    )
    return MethodRun(rows, particles, compile_s, run_s)


# -- references --------------------------------------------------------------------------------
def unguided_pool(models: Models, size: int, *, num_steps: int = NUM_STEPS, seed: int = 12345):
    """``size`` unguided sequences ``(size, 64)`` of the model (MDLM kernel, ``num_steps``):
    samples of ``P_θ``, the SMC's own prior."""
    vocab = md.TOKEN_SETS[models.token_set]

    @jax.jit
    def draw(keys):
        one = lambda k: sample(k, models.logits, md.LENGTH, vocab, num_steps=num_steps)  # noqa: E731
        return jax.lax.map(one, keys, batch_size=256)

    return np.asarray(draw(jax.random.split(jax.random.key(seed), size)))


def reference_rows(
    models: Models, task: cd.Task, pool, *, betas: Sequence[float], chunk: int, seeds: int
) -> list:
    """``model (unguided)``: ``seeds`` chunks of ``chunk`` pool sequences, uniform weights;
    ``target (IS)``: the whole pool weighted by ``e^{r/β}``, one row per ``β``."""
    pool = jnp.asarray(pool)
    if pool.shape[0] < seeds * chunk:
        raise ValueError(f"`pool` needs >= {seeds * chunk} samples, got {pool.shape[0]}.")
    vocab = md.TOKEN_SETS[models.token_set]
    reward = jax.jit(jax.vmap(seen_reward(models, task.name, jnp.asarray(task.param))))
    rewards = reward(one_hot(pool, vocab))
    base = {"token_set": models.token_set, "task": task.name, "target": str(task.target)}
    base |= {"n_ref": chunk, "nfe": math.nan}
    rows = []
    for beta in betas:
        for seed in range(seeds):
            part = slice(seed * chunk, (seed + 1) * chunk)
            uniform = jnp.full((chunk,), -math.log(chunk))
            row = base | {"beta": float(beta), "method": "model (unguided)", "seed": seed}
            row |= {"num_particles": chunk, "budget": math.nan}
            rows.append(row | evaluate(models, task, pool[part], uniform))
        log_w = rewards / beta
        row = base | {"beta": float(beta), "method": "target (IS)", "seed": 0}
        row |= {"num_particles": int(pool.shape[0]), "budget": math.nan}
        rows.append(row | evaluate(models, task, pool, log_w))
    return rows


def hacking_check(
    models: Models,
    task: cd.Task,
    pool,
    *,
    steps: Sequence[int] = (25, 100, 400),
    learning_rate: float = 0.1,
) -> list:
    """A pure reward hacker over relaxed one-hots: Adam ascent of the **seen** reward on free
    logits ``Z`` (``E = softmax(Z)``, no mask), started from the pool's sequences (``Z`` = 4 ×
    one-hot), no model. Rows per number of steps (0: the start): the seen reward of the
    relaxed ``E`` and of its rounding ``argmax Z`` (the sequence a discrete sampler would
    output), the held-out score and ``nn_dist`` of the rounded sequences, and for the class
    task the seen MLP's own accuracy on them."""
    vocab = md.TOKEN_SETS[models.token_set]
    tokens = jnp.asarray(pool)
    reward = seen_reward(models, task.name, jnp.asarray(task.param))

    def relaxed(z):
        return jnp.concatenate([jax.nn.softmax(z, -1), jnp.zeros(z.shape[:-1] + (1,))], -1)

    grad = jax.jit(jax.grad(lambda z: -jnp.sum(jax.vmap(reward)(relaxed(z)))))
    z = 4.0 * jax.nn.one_hot(tokens, vocab)
    optimizer = optax.adam(learning_rate)
    state = optimizer.init(z)

    def row(n, z):
        hard = one_hot(jnp.argmax(z, -1), vocab)
        images = md.to_images(hard, models.token_set)
        out = {"steps": n, "reward_relaxed": float(jnp.mean(jax.vmap(reward)(relaxed(z))))}
        out["reward"] = float(jnp.mean(jax.vmap(reward)(hard)))
        out["heldout"] = float(jnp.mean(heldout_metric(models, task, images)))
        out["nn_dist"] = float(jnp.mean(cd.nearest_data_distance(images, models.data)))
        if task.name == "class":
            said = jnp.argmax(dc.log_probs(models.mlp, images), -1) == task.target
            out["seen_accuracy"] = float(jnp.mean(said))
        return out

    rows, done = [row(0, z)], 0
    for n in sorted(steps):
        for _ in range(n - done):
            updates, state = optimizer.update(grad(z), state)
            z = optax.apply_updates(z, updates)
        done = n
        rows.append(row(n, z))
    return rows


# -- the study ---------------------------------------------------------------------------------
def run_study(
    models: Models,
    tasks: Sequence[cd.Task],
    methods: Sequence[str] = METHODS,
    *,
    particles: Sequence[int] = PARTICLES,
    betas: dict | None = None,
    seeds: int = 5,
    pool_size: int = 4096,
    amortised_options: dict | None = None,
    progress: bool = False,
) -> tuple[list, dict, list]:
    """Every method × budget (:data:`PARTICLES`) × task × ``β`` × seed on one token set, with
    the reference rows (a pool of ``pool_size`` unguided samples, seed 12345) and, for
    ``smc_amortised``, a proposal trained per target (:func:`train_amortised` with
    ``amortised_options``).

    Returns ``(rows, particles, timings)``: per-seed rows; ``{(task, target, β, method, N_ref):
    (tokens, weights)}`` of seed 0; and rows ``{token_set, task, method, n_ref, compile_s,
    run_s}`` (``method = "train smc_amortised"`` rows: ``target`` and ``train_s``).
    """
    betas = DEFAULT_BETAS if betas is None else betas
    for method in methods:
        check_choice(method, "methods", METHODS)
    groups: dict = {}
    for task in tasks:
        groups.setdefault(task.name, []).append(task)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = len(groups) * len(methods) * len(particles)
        bar = tqdm(total=total, desc=f"discrete digits ({models.token_set})", unit="call")
    pool = unguided_pool(models, pool_size)
    rows, first, timings = [], {}, []
    for name, group in groups.items():
        for task in group:
            rows += reference_rows(
                models, task, pool, betas=betas[name], chunk=min(particles), seeds=seeds
            )
        trained = None
        if "smc_amortised" in methods:
            trained = {}
            for task in group:
                at = task._replace(alpha=float(betas[name][0]))
                done = train_amortised(models, at, **(amortised_options or {}))
                trained[str(task.target)] = done
                timings.append(
                    {"token_set": models.token_set, "task": name, "target": str(task.target)}
                    | {"method": "train smc_amortised", "train_s": done.train_s}
                )
        for method in methods:
            for n_ref in particles:
                if bar is not None:
                    bar.set_postfix_str(f"{name}/{method}/N_ref={n_ref}")
                out = run_method(
                    models, group, method, n_ref, betas=betas[name], seeds=seeds, amortised=trained
                )
                rows += out.rows
                for (target, beta), value in out.particles.items():
                    first[(name, target, beta, method, n_ref)] = value
                timings.append(
                    {"token_set": models.token_set, "task": name, "method": method}
                    | {"n_ref": n_ref, "compile_s": out.compile_s, "run_s": out.run_s}
                )
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    return rows, first, timings


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


# -- tables ------------------------------------------------------------------------------------
def summarize(rows: list[dict], over_targets: bool = False) -> list[dict]:
    """Per (model, task, target, β, budget, method): means and standard errors over seeds of
    :data:`METRICS` (the reference rows of ``target (IS)`` have one seed: no error). With
    ``over_targets``, per (model, task, β, budget, method), pooling targets and seeds."""
    keys = ("token_set", "task", "target", "beta", "n_ref", "method")
    if over_targets:
        rows = [r | {"target": "all"} for r in rows]
    return aggregate(rows, METRICS, keys)


def format_markdown(summary: list[dict]) -> str:
    """The summary as one markdown table (± one standard error over seeds)."""
    lines = [
        "| model | task | target | β | N_ref | method | N | NFE | heldout | best heldout | "
        "reward | best reward | nn_dist | best nn_dist | ESS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pm(e, name):
        return format_mean_se(e[name], e[name + "_se"])

    for e in summary:
        nfe = "–" if math.isnan(e["nfe"]) else f"{e['nfe']:.0f}"
        lines.append(
            f"| {e['token_set']} | {e['task']} | {e['target']} | {e['beta']:g} | {e['n_ref']} | "
            f"{e['method']} | {e['num_particles']:.0f} | {nfe} | {pm(e, 'heldout')} | "
            f"{pm(e, 'best_heldout')} | {pm(e, 'reward')} | {pm(e, 'best_reward')} | "
            f"{pm(e, 'nn_dist')} | {pm(e, 'best_nn_dist')} | {e['ess']:.1f} |"
        )
    return "\n".join(lines)
