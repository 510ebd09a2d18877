"""Tables and figures of the toy study (:mod:`psijax.experiments.toy`).

:func:`aggregate` turns per-seed rows into mean ± standard error, :func:`format_markdown` writes
one table per setting, :func:`plot` draws the paper-style panels (prior draws, the model's
samples, the exact target, then each method's particles with marker area ∝ weight).
"""

import functools
import math

import jax
import numpy as np

from psijax.experiments.toy import FIXED_BANDWIDTH, FLOW_MAP_OPTIONS, METRICS, ToySetting
from psijax.flows.ode import flow_map

__all__ = ["mean_and_se", "format_mean_se", "aggregate", "format_markdown", "plot"]


def mean_and_se(values) -> tuple[float, float]:
    """Mean and standard error ``sd/√n`` (``ddof = 1``; NaN for ``n < 2``) of ``values``."""
    v = np.asarray(values, np.float64)
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


_KEYS = ("preset", "model", "budget", "method")


def aggregate(
    rows: list, metric_names: tuple[str, ...] = METRICS, keys: tuple[str, ...] = _KEYS
) -> list:
    """One row per distinct ``keys`` (default (preset, model, budget, method)), in first-seen
    order: ``seeds``, and for each metric ``m`` its mean ``m`` and standard error ``m_se`` over
    the group's rows (the seeds)."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    summary = []
    for key, group in groups.items():
        out = dict(zip(keys, key, strict=True)) | {"seeds": len(group)}
        for name in metric_names:
            out[name], out[f"{name}_se"] = mean_and_se([r[name] for r in group])
        summary.append(out)
    return summary


def format_mean_se(mean: float, se: float) -> str:
    """``mean ± se`` with the standard error to two significant digits, at most
    ``max(3, 3 − ⌊log10|mean|⌋)`` decimals (so a near-zero SE does not print 9 digits)."""
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(se) or se == 0:
        return f"{mean:.0f}" if mean == round(mean) else f"{mean:.4g}"
    cap = max(3, 3 - math.floor(math.log10(abs(mean)))) if mean != 0 else 6
    digits = min(cap, max(0, 1 - math.floor(math.log10(se))))
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


_COLUMNS = (
    ("NFE", "nfe"),
    ("N", "num_particles"),
    ("ESS", "ess"),
    ("E_w[r]", "reward"),
    (f"MMD² (ℓ={FIXED_BANDWIDTH:g})", "mmd_fixed"),
    ("MMD² (median ℓ)", "mmd_median"),
    ("energy dist.", "energy"),
    ("mode TV", "mode_tv"),
)


def format_markdown(summary: list, settings: list[ToySetting], num_steps: int = 25) -> str:
    """One markdown table per (preset, model, budget): a line per method, ``mean ± SE``."""
    blocks = []
    tables = {tuple(r[k] for k in _KEYS[:3]): None for r in summary}
    for preset, model, budget in tables:
        (setting,) = [s for s in settings if (s.preset, s.model) == (preset, model)]
        occupancy = ", ".join(f"{w:.3f}" for w in setting.mode_weights)
        lines = [
            f"### {preset} · {model} model · B = {budget} NFE, {num_steps} steps",
            "",
            f"Exact target: E[r] = {setting.reference_reward:.3f}; mode occupancy ({occupancy}).",
            "",
            "| method | " + " | ".join(c for c, _ in _COLUMNS) + " |",
            "|---" * (len(_COLUMNS) + 1) + "|",
        ]
        for r in summary:
            if (r["preset"], r["model"], r["budget"]) == (preset, model, budget):
                cells = [format_mean_se(r[m], r[f"{m}_se"]) for _, m in _COLUMNS]
                lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- figure --------------------------------------------------------------------------------------
def _model_samples(setting: ToySetting, rng_key, n: int) -> np.ndarray:
    """Samples of the pretrained model: the data (exact model) or the reflow model's ODE."""
    if setting.model == "exact":
        return np.asarray(setting.toy.data.sample(rng_key, n))
    x1 = jax.random.normal(rng_key, (n, setting.toy.data.dim))
    fm = functools.partial(flow_map, setting.velocity_fn, t=1.0, **FLOW_MAP_OPTIONS)
    return np.asarray(jax.jit(jax.vmap(lambda x: fm(x)[0]))(x1))


def plot(
    settings: list[ToySetting],
    particles: dict,
    methods: tuple[str, ...],
    budget: int,
    path: str,
    num_points: int = 500,
) -> None:
    """The paper-style figure for one preset: a row per model; panels prior ``N(0, I)``,
    pretrained model, exact target, then each method's seed-0 particles with marker area and
    opacity ∝ weight (first two coordinates). Writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ["prior N(0, I)", "pretrained model", "exact target", *methods]
    fig, axes = plt.subplots(
        len(settings), len(titles), figsize=(1.9 * len(titles), 2.1 * len(settings)), squeeze=False
    )
    key = jax.random.key(0)
    for row, setting in zip(axes, settings, strict=True):
        dim = setting.toy.data.dim
        panels = [
            np.asarray(jax.random.normal(key, (num_points, dim))),
            _model_samples(setting, key, num_points),
            np.asarray(setting.toy.exact_target.sample(key, num_points)),
        ]
        for ax, x in zip(row[:3], panels, strict=True):
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color="tab:blue", linewidths=0)
        for ax, name in zip(row[3:], methods, strict=True):
            x, w = particles[(setting.preset, setting.model, budget, name)]
            _weighted_scatter(ax, x, w, panels[2])
        for ax, title in zip(row, titles, strict=True):
            ax.set(xlim=(-6.5, 6.5), ylim=(-6.5, 6.5), xticks=[], yticks=[], aspect="equal")
            ax.set_title(title, fontsize=7)
        row[0].set_ylabel(f"{setting.model} model", fontsize=8)
    fig.suptitle(f"{settings[0].preset}: particles of seed 0 at B = {budget} NFE", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _weighted_scatter(ax, x, w, target) -> None:
    """Target draws in grey, particles in red with area and opacity ∝ weight."""
    ax.scatter(target[:, 0], target[:, 1], s=1, alpha=0.15, color="grey", linewidths=0)
    keep = w > 0
    x, w = x[keep], w[keep] / w[keep].max()
    colors = np.zeros((w.size, 4))
    colors[:, 0], colors[:, 3] = 0.8, np.clip(0.15 + 0.85 * w, 0, 1)
    ax.scatter(x[:, 0], x[:, 1], s=4 + 40 * w, c=colors, linewidths=0)
