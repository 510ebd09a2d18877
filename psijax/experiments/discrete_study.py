r"""The alignment study of a learned masked-diffusion model, for any domain (docs/algorithms.md
§10.10).

The parts shared by :mod:`psijax.experiments.discrete_digits` (images as token sequences) and
:mod:`psijax.experiments.discrete_words` (English words): equal-NFE runs of every discrete
sampler batched over targets × ``β`` × seeds, the amortised proposal, the reference rows, the
hacking check and the tables. A **domain** is any object with

================================  ===========================================================
``name``                          the model's name (the rows' ``token_set`` column)
``logits``, ``length``, ``vocab``  the denoiser's pure ``logits(E, t)``, ``L`` and ``V``
``num_steps``                     the samplers' denoising steps
``default_betas``                 ``{task name: (β, …)}``
``reward(task_name, param)``      the seen reward ``r(E)`` of one relaxed one-hot
                                  ``(L, V + 1)``; ``param`` may be traced
``score(task, samples, log_w)``   ``{metric: array (...)}`` of weighted particle sets
                                  ``(..., N, L)`` with log-weights ``(..., N)``: at least
                                  :data:`SCORES`; zero-weight particles count nowhere
``seen_judgement(task, tokens)``  ``{name: float}``: what the seen model itself says of
                                  sequences ``(N, L)`` (the hacking check's last columns)
================================  ===========================================================

and a **task** is a named tuple with ``name``, ``target``, ``param`` (the array the reward
reads) and ``alpha`` (its ``β``).

**Equal cost.** A budget is named by ``N_ref ∈`` :data:`PARTICLES`, the paper's particle
counts: it is the NFE of ``smc_reverse`` with ``N_ref`` particles
(:func:`psijax.align.discrete.cost_per_particle`; a reward call counts as one NFE), and every
method gets the particles that budget buys (``best_of_n`` about twice as many, the gradient
proposal about half). The **amortised** proposal (:class:`ResidualHead`) is trained once per
(model, task, target) at the task's first ``β`` by the log-variance loss
(:func:`psijax.align.discrete.amortised.train`); its training time is reported apart and not
charged to the budget, and it is used with the corrected weights, so it stays exact at every
``β``.

**References** (:func:`reference_rows`) from a pool of the model's own unguided samples:
``model (unguided)`` (pool chunks of ``N_ref`` with uniform weights) and ``target (IS)`` (the
whole pool weighted by ``e^{r/β}``: what the exact target scores, as far as the pool's ESS
allows). :func:`hacking_check` ascends the seen reward over free relaxed one-hots with no
model at all.

Every (model, task, method, budget) is compiled once: the seeds, the targets and the ``β``
values are batched by ``vmap`` in one call (``β`` enters as a traced scale of the reward,
``r/β`` with the problem's own ``β = 1``: the same target).
"""

import math
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
from psijax.experiments.toy_report import aggregate, format_mean_se

__all__ = [
    "PARTICLES",
    "METHODS",
    "SCORES",
    "METRICS",
    "make_problem",
    "budget_for",
    "ResidualHead",
    "Amortised",
    "train_amortised",
    "MethodRun",
    "run_method",
    "unguided_pool",
    "reference_rows",
    "hacking_check",
    "run_study",
    "summarize",
    "format_markdown",
    "format_hacking",
]

PARTICLES = (2, 4, 8, 16)
METHODS = ("best_of_n", "fk_steering", "smc_reverse", "smc_first_order", "smc_amortised")
#: What a domain's ``score`` returns (the ``best_*`` are of the particle of highest seen reward).
SCORES = (
    "ess",
    "reward",
    "heldout",
    "nn_dist",
    "best_reward",
    "best_heldout",
    "best_nn_dist",
)
#: The columns averaged over seeds by :func:`summarize`.
METRICS = ("nfe", "num_particles", *SCORES)


def make_problem(domain, task_name: str, param, beta) -> DiscreteProblem:
    """The problem ``P_θ·e^{r/β}`` written as ``β' = 1`` and the reward ``r/β`` (``param`` and
    ``beta`` may be traced)."""
    reward = domain.reward(task_name, param)
    return DiscreteProblem(
        domain.logits, lambda e: reward(e) / beta, domain.length, domain.vocab, beta=1.0
    )


def budget_for(num_particles: int, num_steps: int) -> int:
    """The NFE of ``smc_reverse`` (soft twist) with ``num_particles`` particles."""
    return int(round(num_particles * cost_per_particle(num_steps, Soft(), Reverse())))


# -- the amortised proposal --------------------------------------------------------------------
class ResidualHead:
    r"""A light amortised proposal on the frozen denoiser: logits
    ``μ_θ(E, t) + b_0 + t·b_1 + (E U) W``, with ``b_0, b_1 ∈ ℝ^{L×V}`` position biases and a
    rank-``r`` context term (``U`` fixed at random, ``W`` learned; everything learned starts at
    0, so training starts from the base model's proposal). Only the head is trained: the
    denoiser's forward is shared, not differentiated. ``params`` is a dict of arrays."""

    def __init__(self, domain, rank: int = 16, seed: int = 0):
        self.domain = domain
        self.length, self.vocab = domain.length, domain.vocab
        self.rank = check_int(rank, "rank")
        width = self.length * (self.vocab + 1)
        scale = 1.0 / math.sqrt(width)
        self.projection = scale * jax.random.normal(jax.random.key(seed), (width, self.rank))

    def init(self) -> dict:
        """Zero parameters: the base model's proposal."""
        shape = (self.length, self.vocab)
        return {
            "b0": jnp.zeros(shape),
            "b1": jnp.zeros(shape),
            "w": jnp.zeros((self.rank, self.length * self.vocab)),
        }

    def logits(self, params: dict, e, t):
        """The proposal's logits ``(L, V + 1)`` (mask column as the denoiser's)."""
        base = self.domain.logits(e, t)
        context = (jnp.reshape(e, (-1,)) @ self.projection) @ params["w"]
        shift = params["b0"] + t * params["b1"] + context.reshape(self.length, self.vocab)
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
    domain,
    task,
    *,
    num_iterations: int = 150,
    num_trajectories: int = 16,
    learning_rate: float = 1e-2,
    num_steps: int | None = None,
    seed: int = 0,
) -> Amortised:
    """Train a :class:`ResidualHead` for ``task`` at ``task.alpha`` (its ``β``): the
    log-variance loss over mixed on/off-policy trajectories of the soft-twisted SMC, Adam, the
    loop in ``lax.scan`` (:func:`psijax.align.discrete.amortised.train`)."""
    num_steps = domain.num_steps if num_steps is None else num_steps
    head = ResidualHead(domain, seed=seed)
    problem = make_problem(domain, task.name, jnp.asarray(task.param), task.alpha)
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


# -- runs --------------------------------------------------------------------------------------
class MethodRun(NamedTuple):
    """Rows per (target, β, seed); the first seed's particles per (target, β) for the grids;
    the compile and run seconds of the one batched call."""

    rows: list
    particles: dict
    compile_s: float
    run_s: float


def run_method(
    domain,
    tasks: Sequence,
    method: str,
    reference_particles: int,
    *,
    betas: Sequence[float],
    seeds: int = 5,
    num_steps: int | None = None,
    amortised: dict | None = None,
    num_particles: int | None = None,
    options: dict | None = None,
    label: str | None = None,
) -> MethodRun:
    """``method`` (a name of :data:`METHODS`) on every task of ``tasks`` (one task name) × every
    ``β`` × ``seeds`` seeds, at the budget of ``reference_particles``
    (:func:`budget_for`), in one compiled, vmapped call; ``num_particles`` instead fixes the
    particle count (the paper's equal-N comparison). ``smc_amortised`` needs ``amortised``:
    ``{target: Amortised}``, one per task's target. ``options`` are further keywords of the
    sampler (e.g. ``{"proposal": FirstOrder(clip=1.0)}``; the budget's particle count follows
    them), and ``label`` names the rows' ``method`` (default ``method``). Seed ``s`` uses
    ``jax.random.key(s)``."""
    check_choice(method, "method", METHODS)
    names = {t.name for t in tasks}
    if len(names) != 1:
        raise ValueError(f"`tasks` must share one task name, got {sorted(names)}.")
    name = names.pop()
    num_steps = domain.num_steps if num_steps is None else num_steps
    sampler = DISCRETE_SAMPLERS[method]
    budget = budget_for(reference_particles, num_steps)
    probe = make_problem(domain, name, jnp.asarray(tasks[0].param), 1.0)
    targets = [str(t.target) for t in tasks]
    heads = None
    if method == "smc_amortised":
        if amortised is None or any(target not in amortised for target in targets):
            raise ValueError("`amortised` must map every target of `tasks` to its proposal.")
        head = amortised[targets[0]].head
        # the targets' heads share one structure: their parameters are batched with the targets
        heads = jax.tree.map(lambda *p: jnp.stack(p), *[amortised[t].params for t in targets])
    options = dict(options or {})
    if num_particles is None:
        sizing = {"num_steps": num_steps, **options}
        if heads is not None:
            sizing["proposal"] = AmortisedProposal(amortised[targets[0]].logits_fn)
        num_particles = sampler.num_particles_for(budget, probe, **sizing)
    params = jnp.stack([jnp.asarray(t.param) for t in tasks])
    beta_values = [float(b) for b in betas]
    betas = jnp.asarray(beta_values, jnp.float32)

    def one(key, param, beta, head_params):
        problem = make_problem(domain, name, param, beta)
        config = dict(options)
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
    rows, particles = [], {}
    for i, task in enumerate(tasks):
        scores = domain.score(task, result.samples[i], result.log_weights[i])
        scores = {k: np.asarray(v) for k, v in scores.items()}
        for j, beta in enumerate(beta_values):
            for s in range(seeds):
                row = {"token_set": domain.name, "task": name, "target": targets[i]}
                row |= {"beta": beta, "budget": budget, "n_ref": reference_particles}
                row |= {"method": label or method, "seed": s}
                row |= {"nfe": int(result.nfe[i, j, s])}
                row |= {"reward_calls": int(calls[i, j, s])}
                row |= {"num_particles": num_particles}
                row |= {k: float(v[j, s]) for k, v in scores.items()}
                rows.append(row)
            particles[(targets[i], beta)] = (
                np.asarray(result.samples[i, j, 0]),
                np.exp(np.asarray(result.log_weights[i, j, 0], np.float64)),
            )
    return MethodRun(rows, particles, compile_s, run_s)


# -- references --------------------------------------------------------------------------------
def unguided_pool(domain, size: int, *, num_steps: int | None = None, seed: int = 12345):
    """``size`` unguided sequences ``(size, L)`` of the model (MDLM kernel, ``num_steps``):
    samples of ``P_θ``, the SMC's own prior."""
    num_steps = domain.num_steps if num_steps is None else num_steps

    @jax.jit
    def draw(keys):
        def one(key):
            return sample(key, domain.logits, domain.length, domain.vocab, num_steps=num_steps)

        return jax.lax.map(one, keys, batch_size=256)

    return np.asarray(draw(jax.random.split(jax.random.key(seed), size)))


def _score_one(domain, task, samples, log_weights) -> dict:
    out = domain.score(task, jnp.asarray(samples)[None], jnp.asarray(log_weights)[None])
    return {k: float(np.asarray(v)[0]) for k, v in out.items()}


def reference_rows(domain, task, pool, *, betas: Sequence[float], chunk: int, seeds: int) -> list:
    """``model (unguided)``: ``seeds`` chunks of ``chunk`` pool sequences, uniform weights;
    ``target (IS)``: the whole pool weighted by ``e^{r/β}``, one row per ``β``."""
    pool = jnp.asarray(pool)
    if pool.shape[0] < seeds * chunk:
        raise ValueError(f"`pool` needs >= {seeds * chunk} samples, got {pool.shape[0]}.")
    reward = jax.jit(jax.vmap(domain.reward(task.name, jnp.asarray(task.param))))
    rewards = reward(one_hot(pool, domain.vocab))
    base = {"token_set": domain.name, "task": task.name, "target": str(task.target)}
    base |= {"n_ref": chunk, "nfe": math.nan}
    rows = []
    for beta in betas:
        for seed in range(seeds):
            part = slice(seed * chunk, (seed + 1) * chunk)
            uniform = jnp.full((chunk,), -math.log(chunk))
            row = base | {"beta": float(beta), "method": "model (unguided)", "seed": seed}
            row |= {"num_particles": chunk, "budget": math.nan}
            rows.append(row | _score_one(domain, task, pool[part], uniform))
        log_w = rewards / beta
        row = base | {"beta": float(beta), "method": "target (IS)", "seed": 0}
        row |= {"num_particles": int(pool.shape[0]), "budget": math.nan}
        rows.append(row | _score_one(domain, task, pool, log_w))
    return rows


def hacking_check(
    domain,
    task,
    pool,
    *,
    steps: Sequence[int] = (25, 100, 400),
    learning_rate: float = 0.1,
) -> list:
    """A pure reward hacker over relaxed one-hots: Adam ascent of the **seen** reward on free
    logits ``Z`` (``E = softmax(Z)``, no mask), started from the pool's sequences (``Z`` = 4 ×
    one-hot), no model. Rows per number of steps (0: the start): the seen reward of the
    relaxed ``E`` and of its rounding ``argmax Z`` (the sequence a discrete sampler would
    output), the held-out score and ``nn_dist`` of the rounded sequences, and the domain's
    ``seen_judgement`` of them."""
    vocab = domain.vocab
    tokens = jnp.asarray(pool)
    reward = domain.reward(task.name, jnp.asarray(task.param))

    def relaxed(z):
        return jnp.concatenate([jax.nn.softmax(z, -1), jnp.zeros(z.shape[:-1] + (1,))], -1)

    grad = jax.jit(jax.grad(lambda z: -jnp.sum(jax.vmap(reward)(relaxed(z)))))
    z = 4.0 * jax.nn.one_hot(tokens, vocab)
    optimizer = optax.adam(learning_rate)
    state = optimizer.init(z)

    def row(n, z):
        rounded = jnp.argmax(z, -1)
        out = {"steps": n, "reward_relaxed": float(jnp.mean(jax.vmap(reward)(relaxed(z))))}
        out["reward"] = float(jnp.mean(jax.vmap(reward)(one_hot(rounded, vocab))))
        uniform = jnp.full((rounded.shape[0],), -math.log(rounded.shape[0]))
        scores = _score_one(domain, task, rounded, uniform)
        out |= {"heldout": scores["heldout"], "nn_dist": scores["nn_dist"]}
        return out | domain.seen_judgement(task, rounded)

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
    domain,
    tasks: Sequence,
    methods: Sequence[str] = METHODS,
    *,
    particles: Sequence[int] = PARTICLES,
    betas: dict | None = None,
    seeds: int = 5,
    pool_size: int = 4096,
    amortised_options: dict | None = None,
    variants: dict | None = None,
    progress: bool = False,
) -> tuple[list, dict, list]:
    """Every method × budget (:data:`PARTICLES`) × task × ``β`` (default
    ``domain.default_betas``) × seed on one model, with the reference rows (a pool of
    ``pool_size`` unguided samples, seed 12345) and, for ``smc_amortised``, a proposal trained
    per target (:func:`train_amortised` with ``amortised_options``). ``variants`` adds
    labelled configurations, ``{label: (method, options)}`` (e.g. ``{"smc_first_order (clip 3)":
    ("smc_first_order", {"proposal": FirstOrder(clip=3.0)})}``), run at every budget like the
    methods, their rows' ``method`` being the label (:func:`run_method`'s ``options`` and
    ``label``).

    Returns ``(rows, particles, timings)``: per-seed rows; ``{(task, target, β, method, N_ref):
    (tokens, weights)}`` of seed 0; and rows ``{token_set, task, method, n_ref, compile_s,
    run_s}`` (``method = "train smc_amortised"`` rows: ``target`` and ``train_s``).
    """
    betas = domain.default_betas if betas is None else betas
    runs = [(method, method, None) for method in methods]
    runs += [(label, method, options) for label, (method, options) in (variants or {}).items()]
    for label, method, _ in runs:
        check_choice(method, "methods" if label == method else f"variants[{label!r}]", METHODS)
    groups: dict = {}
    for task in tasks:
        groups.setdefault(task.name, []).append(task)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = len(groups) * len(runs) * len(particles)
        bar = tqdm(total=total, desc=f"discrete study ({domain.name})", unit="call")
    pool = unguided_pool(domain, pool_size)
    rows, first, timings = [], {}, []
    for name, group in groups.items():
        for task in group:
            rows += reference_rows(
                domain, task, pool, betas=betas[name], chunk=min(particles), seeds=seeds
            )
        trained = None
        if any(method == "smc_amortised" for _, method, _ in runs):
            trained = {}
            for task in group:
                at = task._replace(alpha=float(betas[name][0]))
                done = train_amortised(domain, at, **(amortised_options or {}))
                trained[str(task.target)] = done
                timings.append(
                    {"token_set": domain.name, "task": name, "target": str(task.target)}
                    | {"method": "train smc_amortised", "train_s": done.train_s}
                )
        for label, method, options in runs:
            for n_ref in particles:
                if bar is not None:
                    bar.set_postfix_str(f"{name}/{label}/N_ref={n_ref}")
                out = run_method(
                    domain,
                    group,
                    method,
                    n_ref,
                    betas=betas[name],
                    seeds=seeds,
                    amortised=trained,
                    options=options,
                    label=label,
                )
                rows += out.rows
                for (target, beta), value in out.particles.items():
                    first[(name, target, beta, label, n_ref)] = value
                timings.append(
                    {"token_set": domain.name, "task": name, "method": label}
                    | {"n_ref": n_ref, "compile_s": out.compile_s, "run_s": out.run_s}
                )
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    return rows, first, timings


# -- tables ------------------------------------------------------------------------------------
def summarize(
    rows: list[dict], over_targets: bool = False, metrics: Sequence[str] = METRICS
) -> list[dict]:
    """Per (model, task, target, β, budget, method): means and standard errors over seeds of
    ``metrics`` (the reference rows of ``target (IS)`` have one seed: no error). With
    ``over_targets``, per (model, task, β, budget, method), pooling targets and seeds."""
    keys = ("token_set", "task", "target", "beta", "n_ref", "method")
    if over_targets:
        rows = [r | {"target": "all"} for r in rows]
    return aggregate(rows, tuple(metrics), keys)


def format_markdown(summary: list[dict], extra: Sequence[str] = ()) -> str:
    """The summary as one markdown table (± one standard error over seeds); ``extra`` names
    further metrics of the summary to show as the last columns."""
    lines = [
        "| model | task | target | β | N_ref | method | N | NFE | heldout | best heldout | "
        "reward | best reward | nn_dist | best nn_dist | ESS |"
        + "".join(f" {name} |" for name in extra),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(extra),
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
            + "".join(f" {pm(e, name)} |" for name in extra)
        )
    return "\n".join(lines)


def format_hacking(rows: list[dict], judgement: str, label: str) -> str:
    """The rows of :func:`hacking_check` as a markdown table; ``judgement`` names the
    ``seen_judgement`` column to show (under ``label``), "–" where a row lacks it."""
    lines = [
        f"| Adam steps | seen r (relaxed E) | seen r (rounded) | held-out | nn_dist | {label} |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        said = f"{r[judgement]:.2f}" if judgement in r else "–"
        lines.append(
            f"| {r['steps']} | {r['reward_relaxed']:.3f} | {r['reward']:.3f} | "
            f"{r['heldout']:.2f} | {r['nn_dist']:.3g} | {said} |"
        )
    return "\n".join(lines)
