"""Tables and image grids of the digits study (:mod:`psijax.experiments.digits`).

:func:`aggregate` gives mean ± standard error over seeds per (task, target, method) and, per
(task, method), the mean over targets with the standard error of that mean (targets fixed:
``√(Σ se_t²)/k``). :func:`format_markdown` writes the tables; :func:`plot_grid` draws, for each
method, images drawn from its weighted particles, a block of columns per target.
"""

import math

import numpy as np

from psijax.experiments.digits import METRICS
from psijax.experiments.toy_report import aggregate as _aggregate
from psijax.experiments.toy_report import format_mean_se
from psijax.models.digits import to_images

__all__ = [
    "aggregate",
    "format_markdown",
    "grid_images",
    "image_strip",
    "plot_grid",
    "format_hacking",
]

_KEYS = ("task", "target", "model", "budget", "method")
_COLUMNS = (
    ("NFE", "nfe"),
    ("N", "num_particles"),
    ("ESS", "ess"),
    ("seen E_w[r]", "reward"),
    ("held-out E_w", "heldout"),
    ("nn dist. E_w", "nn_dist"),
    ("best: seen r", "best_reward"),
    ("best: held-out", "best_heldout"),
    ("best: nn dist.", "best_nn_dist"),
)
_HELDOUT = {"class": "held-out = CNN accuracy", "layout": "held-out = ink-box IoU"}


def aggregate(rows: list) -> tuple[list, list]:
    """``(per_target, per_task)``: mean ± SE over seeds per (task, target, model, budget,
    method); and per (task, model, budget, method) the mean of the target means with SE
    ``√(Σ se_t²)/k`` over its ``k`` targets (``seeds``: the runs behind it)."""
    per_target = _aggregate(rows, METRICS, _KEYS)
    groups = {}
    for row in per_target:
        groups.setdefault(tuple(row[k] for k in _KEYS if k != "target"), []).append(row)
    per_task = []
    for key, group in groups.items():
        out = dict(zip([k for k in _KEYS if k != "target"], key, strict=True))
        out |= {"targets": len(group), "seeds": sum(r["seeds"] for r in group)}
        for name in METRICS:
            out[name] = float(np.mean([r[name] for r in group]))
            se = [r[f"{name}_se"] for r in group]
            out[f"{name}_se"] = math.sqrt(sum(s * s for s in se)) / len(se)
        per_task.append(out)
    return per_target, per_task


def _table(summary: list, first: str) -> list:
    lines = [
        f"| {first} | " + " | ".join(c for c, _ in _COLUMNS) + " |",
        "|---" * (len(_COLUMNS) + 1) + "|",
    ]
    for r in summary:
        cells = [format_mean_se(r[m], r[f"{m}_se"]) for _, m in _COLUMNS]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return lines


def format_markdown(per_target: list, per_task: list) -> str:
    """Per task: the table averaged over targets, then one table per target (``mean ± SE``)."""
    blocks = []
    for task in dict.fromkeys(r["task"] for r in per_task):
        rows = [r for r in per_task if r["task"] == task]
        targets = list(dict.fromkeys(r["target"] for r in per_target if r["task"] == task))
        head = rows[0]
        blocks.append(
            "\n".join(
                [
                    f"### {task} task ({_HELDOUT[task]}) · {head['model']} model · "
                    f"B = {head['budget']} NFE · mean over targets {', '.join(targets)}",
                    "",
                    *_table(rows, "method"),
                ]
            )
        )
        for target in targets:
            rows = [r for r in per_target if (r["task"], r["target"]) == (task, target)]
            blocks.append("\n".join([f"#### {task} = {target}", "", *_table(rows, "method")]))
    return "\n\n".join(blocks)


def format_hacking(rows: list, task: str, target) -> str:
    """The :func:`psijax.experiments.digits.hacking_check` rows as a markdown table."""
    seen = "seen MLP says target" if task == "class" else "seen reward raised"
    lines = [
        f"| L∞ radius | seen r | held-out | nn dist. | {seen} |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        radius = "start" if r["radius"] == 0 else f"{r['radius']:g}"
        lines.append(
            f"| {radius} | {r['reward']:.3f} | {r['heldout']:.3f} | {r['nn_dist']:.3f} "
            f"| {r['seen_accuracy']:.3f} |"
        )
    return f"{task} = {target}:\n\n" + "\n".join(lines)


def grid_images(tokens, weights, num: int, seed: int = 0) -> np.ndarray:
    """``num`` images ``(num, 8, 8)`` drawn from the weighted particles (systematic
    resampling with a fixed ``seed``, so a uniform set shows its first ``num`` particles in
    order, and a single kept sample is repeated)."""
    w = np.asarray(weights, np.float64)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    w = w / w.sum()
    u = (np.random.default_rng(seed).uniform() + np.arange(num)) / num
    idx = np.minimum(np.searchsorted(np.cumsum(w), u), len(w) - 1)
    images = np.asarray(to_images(np.asarray(tokens)[idx]))[:, 0]
    return np.clip(images, -1.0, 1.0)


def image_strip(images) -> np.ndarray:
    """Images ``(n, 8, 8)`` side by side, each framed by one blank pixel: ``(10, 10·n)``."""
    return np.concatenate([np.pad(im, 1, constant_values=-1.0) for im in images], 1)


def plot_grid(particles: dict, task: str, targets: list, methods: list, path: str, num: int = 6):
    """One row per method (``particles[(task, target, method)] = (tokens, weights)``), a block
    of ``num`` weighted draws per target; dark = ink. Writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(methods),
        len(targets),
        figsize=(0.62 * num * len(targets) + 1.8, 0.75 * len(methods) + 0.6),
        squeeze=False,
    )
    for i, method in enumerate(methods):
        for j, target in enumerate(targets):
            ax = axes[i, j]
            strip = image_strip(grid_images(*particles[(task, str(target), method)], num))
            ax.imshow(-strip, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{task} = {target}", fontsize=8)
            if j == 0:
                ax.text(
                    -0.03, 0.5, method, transform=ax.transAxes, fontsize=7, ha="right", va="center"
                )
    fig.subplots_adjust(left=0.2, right=0.98, top=0.93, bottom=0.02, wspace=0.05, hspace=0.15)
    fig.savefig(path, dpi=110)
    plt.close(fig)
