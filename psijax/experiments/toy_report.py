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

__all__ = [
    "mean_and_se",
    "format_mean_se",
    "aggregate",
    "format_markdown",
    "format_notes",
    "plot",
]


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


def format_notes(summary: list) -> str:
    """How to read the tables of :func:`format_markdown`: the reference rows, the ``±``, which
    direction is better for each column, and (when ``psi_sampler`` ran) why Ψ-Sampler trails
    on these toys, with its particle count and mode TV read off ``summary``."""
    lines = [
        "How to read the tables:",
        "- `exact target (iid)`: as many i.i.d. draws of the exact tilted target as the "
        "prior-start methods have particles, uniformly weighted (NFE 0): the best any method "
        "can score at that particle count (the metrics' noise floor).",
        "- `SMC limit (IS)`: what every SMC method tends to as N → ∞, importance-weighted draws "
        "of the model's own T-step sampler with its kernel (NFE n/a: not a sampler run); its "
        "distance to the exact target is what more particles cannot remove.",
        "- `a ± b`: mean ± standard error over the seeds (no ± with one seed).",
        "- Lower is better for MMD², energy dist. and mode TV (distances to the exact target; "
        "0 is a perfect match); E_w[r] is best close to the exact target's E[r] above each "
        "table (higher is not better: overshooting it means sampling another law); ESS is the "
        "effective number of particles of the final weights (higher is less degenerate, at "
        "most N); NFE is the model evaluations spent (equal budgets by design).",
    ]
    psi = [r for r in summary if r["method"] == "psi_sampler"]
    for r in psi:
        group = [
            s
            for s in summary
            if (s["preset"], s["model"], s["budget"]) == (r["preset"], r["model"], r["budget"])
            and s["method"] not in ("exact target (iid)", "SMC limit (IS)")
        ]
        ranked = sorted(group, key=lambda s: s["mode_tv"])
        rank = [s["method"] for s in ranked].index("psi_sampler") + 1
        prior_n = max(s["num_particles"] for s in group)
        why = (
            "its one-step Tweedie prediction x̂0(x, 1) = E[x0] is a constant with the exact model, "
            "so its initial stage targets the prior itself: half the budget goes to pCN chains "
            "on N(0, I) that cannot help"
            if r["model"] == "exact"
            else "its initial target is reward-aware with the reflowed model but multimodal, "
            "and its few pCNL chains do not cross between the modes"
        )
        verdict = "why it trails here" if rank > 1 else "it leads here, although"
        lines.append(
            f"- Ψ-Sampler ({r['preset']}, {r['model']} model) ranks {rank} of {len(group)} on "
            f"mode TV ({r['mode_tv']:.3f}), with {r['num_particles']:.0f} SMC particles against "
            f"{prior_n:.0f} for the prior-start methods; {verdict}: {why} (README, Benchmarks)."
        )
    return "\n".join(lines)


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
    pretrained model, exact target (blue: ``num_points`` draws of each), then each method's
    seed-0 particles in red with marker area and opacity ∝ weight over grey exact target draws
    (first two coordinates, the same axes in every panel; a legend under the panels). Writes a
    PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    titles = ["prior N(0, I)", "pretrained model", "exact target", *methods]
    fig, axes = plt.subplots(
        len(settings),
        len(titles),
        figsize=(2.0 * len(titles), 2.2 * len(settings) + 0.9),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
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
            ax.set(xlim=(-6.5, 6.5), ylim=(-6.5, 6.5), xticks=[-5, 0, 5], yticks=[-5, 0, 5])
            ax.set_aspect("equal")
            ax.tick_params(labelsize=6, length=2, pad=1)
            ax.set_title(title, fontsize=7)
        row[0].set_ylabel(f"{setting.model} model\nx₂", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("x₁", fontsize=7)
    legend = [
        Line2D(
            [], [], ls="", marker="o", ms=3, color="tab:blue", label="samples of the panel's law"
        ),
        Line2D(
            [], [], ls="", marker="o", ms=2, color="grey", label="exact target draws (reference)"
        ),
        Line2D([], [], ls="", marker="o", ms=2, color="#cc0000", alpha=0.4, label="low weight"),
        Line2D([], [], ls="", marker="o", ms=7, color="#cc0000", label="particle, area ∝ weight"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(f"{settings[0].preset}: particles of seed 0 at B = {budget} NFE", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _weighted_scatter(ax, x, w, target, max_points: int = 5000) -> None:
    """Target draws in grey, particles in red with area and opacity ∝ weight (at most
    ``max_points`` of them, the heaviest, so that a huge budget still draws quickly)."""
    ax.scatter(target[:, 0], target[:, 1], s=1, alpha=0.15, color="grey", linewidths=0)
    keep = w > 0
    x, w = x[keep], w[keep] / w[keep].max()
    if w.size > max_points:
        heaviest = np.argsort(w)[-max_points:]
        x, w = x[heaviest], w[heaviest]
    colors = np.zeros((w.size, 4))
    colors[:, 0], colors[:, 3] = 0.8, np.clip(0.15 + 0.85 * w, 0, 1)
    ax.scatter(x[:, 0], x[:, 1], s=4 + 40 * w, c=colors, linewidths=0)
