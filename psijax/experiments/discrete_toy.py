r"""The discrete toy study: every discrete sampler at equal NFE on the 64 × 64 grid mixtures.

The masked-diffusion analogue of :mod:`psijax.experiments.toy` (docs/algorithms.md §10). The
model is the exact denoiser of a discretised 2-D Gaussian mixture
(:func:`psijax.models.masked_toys.gmm1`, :func:`~psijax.models.masked_toys.ring8`: ``L = 2``
coordinates, ``V = 64`` grid points each) and the reward is a smooth function of the
coordinates. A relaxed one-hot is read through its expected coordinate ``Σ_v E_{l,v} g_v``:

=============  ===================================  ========================================
reward         ``r(x)``                             what it does
=============  ===================================  ========================================
``center``     ``−‖x‖²/2``                          pulls to the centre (GMM1: one mode; the
                                                    ring: the inner flanks of all eight)
``diagonal``   ``−(x₁ − x₂)²/2``                    keeps the modes on the diagonal, drops
                                                    the others
=============  ===================================  ========================================

The exact target ``π ∝ P^T e^{r/β}`` of the ``T``-step sampler, its ``Z`` and the soft values
come from the dynamic programme (:mod:`psijax.discrete.exact`). So every run can be judged by
the total-variation distance of its weighted particles from ``π``, the weighted mean reward
(against ``E_π[r]``), the distinct points with nonzero weight, ``log Ẑ`` (its spread over
seeds) and the final ESS. Every method gets the same NFE budget: the cost of ``smc_reverse``
with ``N`` particles, at :func:`psijax.align.discrete.cost_per_particle`'s count. The
``exact`` row is the locally optimal proposal with the exact twist (a reference: its
enumeration is not counted).
"""

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from psijax.align import discrete as d
from psijax.discrete import exact
from psijax.models.masked_toys import JointTable, gmm1, ring8

__all__ = [
    "TOYS",
    "REWARDS",
    "METHODS",
    "TWIST",
    "budget_for",
    "DiscreteToy",
    "make_toy",
    "run_method",
    "run_study",
    "summarize",
    "format_markdown",
    "plot",
]

TOYS = {"gmm1": gmm1, "ring8": ring8}
REWARDS = {
    "center": lambda c: -0.5 * jnp.sum(c**2),
    "diagonal": lambda c: -0.5 * (c[0] - c[1]) ** 2,
}
METHODS = (
    "best_of_n",
    "fk_steering",
    "smc_reverse",
    "smc_first_order",
    "smc_first_order_denoiser",
    "exact",
)
TWIST = d.LogMeanExp(4)
"""The twist of the SMC methods in the study. The soft and point estimates are poor here: a
coordinate's conditional is multimodal, so the reward of its mean or of its argmax is far from
the soft value (docs/algorithms.md §10.3, "a poor twist")."""


class DiscreteToy(NamedTuple):
    """One setting: the model, the problem and its exact answers."""

    name: str
    reward_name: str
    model: JointTable
    problem: d.DiscreteProblem
    num_steps: int
    log_target: np.ndarray  # (K,) over psijax.discrete.exact.enumerate_states
    log_z: float
    mean_reward: float  # E_π[r]
    log_values: np.ndarray  # (T + 1, K)


def make_toy(
    name: str, reward_name: str, *, beta: float = 1.0, num_steps: int = 100
) -> DiscreteToy:
    """The setting ``name`` × ``reward_name`` with its exact answers (a few seconds)."""
    model = TOYS[name]()
    points = jnp.asarray(model.points)
    vocab = points.shape[0]
    coordinate = REWARDS[reward_name]

    def reward(e):
        return coordinate(e[:, :vocab] @ points)

    problem = d.DiscreteProblem(model.logits, reward, 2, vocab, beta=beta)
    log_p, log_matrix = exact.sampler_marginal(model.logits, 2, vocab, num_steps=num_steps)
    states = exact.enumerate_states(2, vocab)
    terminal = exact.terminal_log_values(reward, states, vocab, beta)
    log_pi, log_z = exact.tilted_target(log_p, terminal)
    log_values = exact.backward(log_matrix, num_steps, terminal)
    pi = np.exp(np.asarray(log_pi, np.float64))
    rewards = np.where(np.isfinite(np.asarray(terminal)), np.asarray(terminal) * beta, 0.0)
    return DiscreteToy(
        name,
        reward_name,
        model,
        problem,
        num_steps,
        np.asarray(log_pi),
        float(log_z),
        float(np.sum(pi * rewards)),
        np.asarray(log_values),
    )


def _options(toy: DiscreteToy, method: str) -> tuple[d.DiscreteSampler, dict]:
    if method == "exact":
        return d.smc_reverse, dict(
            twist=d.Exact(toy.log_values, toy.problem.vocab_size), proposal=d.LocallyOptimal()
        )
    if method == "smc_first_order_denoiser":
        return d.smc_first_order, dict(twist=TWIST, proposal=d.FirstOrder("denoiser"))
    if method in ("smc_reverse", "smc_first_order"):
        return d.DISCRETE_SAMPLERS[method], dict(twist=TWIST)
    return d.DISCRETE_SAMPLERS[method], {}


def budget_for(toy: DiscreteToy, num_particles: int) -> int:
    """The NFE budget of ``smc_reverse`` (with the study's twist) and ``num_particles``."""
    cost = d.cost_per_particle(toy.num_steps, TWIST, d.Reverse())
    return int(round(num_particles * cost))


def run_method(toy: DiscreteToy, method: str, num_particles: int, *, seeds: int = 10):
    """``(rows, (samples, weights) of seed 0, compile_s, run_s)``: one vmapped call over the
    seeds at the budget of ``smc_reverse`` with ``num_particles`` particles."""
    sampler, extra = _options(toy, method)
    budget = budget_for(toy, num_particles)
    if method == "exact":
        n = num_particles
    else:
        n = sampler.num_particles_for(budget, toy.problem, num_steps=toy.num_steps, **extra)

    def one(key):
        return sampler(key, toy.problem, num_particles=n, num_steps=toy.num_steps, **extra)

    run = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.key(0), seeds)
    start = time.perf_counter()
    compiled = run.lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - start
    pi = np.exp(toy.log_target.astype(np.float64))
    vocab = toy.problem.vocab_size
    rows = []
    for s in range(seeds):
        w = np.exp(np.asarray(result.log_weights[s], np.float64))
        index = np.asarray(exact.state_index(result.samples[s], vocab))
        hist = np.bincount(index, w, minlength=pi.size)
        r = np.asarray(result.rewards[s], np.float64)
        rows.append(
            {
                "toy": toy.name,
                "reward": toy.reward_name,
                "method": method,
                "seed": s,
                "num_particles": n,
                "nfe_budget": budget,
                "nfe": int(result.nfe[s]),
                "mean_reward": float(np.sum(w * np.where(w > 0, r, 0.0))),
                "target_reward": toy.mean_reward,
                "tv": float(0.5 * np.abs(hist - pi).sum()),
                "unique": int(len(np.unique(index[w > 0]))),
                "log_z_hat": float(result.log_normalizer[s]),
                "log_z": toy.log_z,
                "ess": float(result.info.final_ess[s]),
                "run_s": run_s / seeds,
            }
        )
    first = (np.asarray(result.samples[0]), np.exp(np.asarray(result.log_weights[0])))
    return rows, first, compile_s, run_s


def run_study(
    toys: list[DiscreteToy],
    methods=METHODS,
    particles=(4, 16, 64, 256),
    *,
    seeds: int = 10,
    progress: bool = False,
):
    """Every method × toy × ``N``; ``(rows, particles_of_seed_0, timings)``."""
    jobs = [(t, m, n) for t in toys for n in particles for m in methods]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="discrete toy study", unit="run")
    rows, first, timings = [], {}, []
    for toy, method, n in jobs:
        if bar is not None:
            bar.set_postfix_str(f"{toy.name}/{toy.reward_name}/{method}/N={n}")
        out, sample, compile_s, run_s = run_method(toy, method, n, seeds=seeds)
        rows += out
        first[(toy.name, toy.reward_name, method, n)] = sample
        timings.append(
            {
                "toy": toy.name,
                "reward": toy.reward_name,
                "method": method,
                "num_particles": n,
                "compile_s": compile_s,
                "run_s": run_s,
            }
        )
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return rows, first, timings


def summarize(rows: list[dict]) -> list[dict]:
    """Per (toy, reward, budget, method): means ± standard errors over seeds, and
    ``sd(log Ẑ)``."""
    groups: dict = {}
    for row in rows:
        key = (row["toy"], row["reward"], row["nfe_budget"], row["method"])
        groups.setdefault(key, []).append(row)
    out = []
    for (toy, reward, budget, method), group in groups.items():
        entry = {
            "toy": toy,
            "reward": reward,
            "nfe_budget": budget,
            "method": method,
            "num_particles": group[0]["num_particles"],
            "seeds": len(group),
            "target_reward": group[0]["target_reward"],
        }
        for name in ("mean_reward", "tv", "unique", "ess", "run_s"):
            values = np.array([g[name] for g in group], np.float64)
            entry[name] = float(values.mean())
            entry[name + "_se"] = (
                float(values.std(ddof=1) / np.sqrt(len(values)))
                if len(values) > 1
                else float("nan")
            )
        log_z = np.array([g["log_z_hat"] for g in group], np.float64)
        entry["sd_log_z"] = float(log_z.std(ddof=1)) if len(log_z) > 1 else float("nan")
        entry["z_ratio"] = float(np.mean(np.exp(log_z - group[0]["log_z"])))
        out.append(entry)
    return out


def format_markdown(summary: list[dict]) -> str:
    """The summary as a markdown table (± one standard error over seeds)."""
    lines = [
        "| toy | reward | budget | method | N | mean reward (target) | TV to π | unique | "
        "sd(log Ẑ) | E[Ẑ]/Z | ESS | run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        lines.append(
            f"| {e['toy']} | {e['reward']} | {e['nfe_budget']} | {e['method']} | "
            f"{e['num_particles']} | {e['mean_reward']:.3f} ± {e['mean_reward_se']:.3f} "
            f"({e['target_reward']:.3f}) | {e['tv']:.3f} ± {e['tv_se']:.3f} | "
            f"{e['unique']:.0f} | {e['sd_log_z']:.3f} | {e['z_ratio']:.2f} | "
            f"{e['ess']:.1f} | {e['run_s']:.3f} |"
        )
    return "\n".join(lines)


def plot(toys: list[DiscreteToy], first: dict, num_particles: int, path: str) -> None:
    """The exact target and each method's weighted particles (seed 0) on the grid, one row per
    setting, at ``num_particles``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({k[2] for k in first if k[3] == num_particles}, key=list(METHODS).index)
    fig, axes = plt.subplots(
        len(toys),
        1 + len(methods),
        figsize=(2.6 * (1 + len(methods)), 2.6 * len(toys)),
        squeeze=False,
    )
    for row, toy in enumerate(toys):
        vocab = toy.problem.vocab_size
        points = np.asarray(toy.model.points)
        pi = np.exp(np.asarray(exact.data_table(toy.log_target, 2, vocab)))
        extent = (points[0], points[-1], points[0], points[-1])
        axes[row, 0].imshow(pi.T, origin="lower", extent=extent, cmap="Greys")
        axes[row, 0].set_title(f"target: {toy.name}, {toy.reward_name}", fontsize=8)
        for col, method in enumerate(methods, start=1):
            ax = axes[row, col]
            ax.imshow(pi.T, origin="lower", extent=extent, cmap="Greys", alpha=0.35)
            samples, weights = first[(toy.name, toy.reward_name, method, num_particles)]
            keep = weights > 0
            ax.scatter(
                points[samples[keep, 0]],
                points[samples[keep, 1]],
                s=4 + 200 * weights[keep],
                c="tab:red",
                alpha=0.6,
                linewidths=0,
            )
            ax.set_title(method, fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
