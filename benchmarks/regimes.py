"""Where each sampler wins: dimension × reward sharpness, exact targets, a distilled model.

``psijax.experiments.regimes`` builds the cells: six isotropic modes in ``d`` dimensions, a
Gaussian-likelihood reward on one feature whose high region has prior mass ``q``, the exact tilted
target and ``log Z``. Every method runs at equal NFE (``--budgets``) on the oracle distilled model
(the exact flow map as a one-step model) and, for ``d ≤ 32``, on a distilled MLP trained here, both
with the re-noising kernel. The number of steps ``T`` is part of each method: with the re-noising
kernel the first step from ``t = 1`` keeps only ``1 − t'`` of each particle's prediction (4 % at 25
steps), so an initial stage's particles reach the SMC's later steps only through the weights of
that step; ``T = 1`` sends them straight through the one-step map (for Ψ-Sampler: pCNL chains on
``π_init``, then ``Φ_1``, exact for an exact map and converged chains; the chains get 3/4 of the
budget), ``T = 4`` is FLUX-schnell's grid, ``T = 25`` the paper's. ``IS, T=1`` is plain importance
sampling of the one-step map's draws. The twisted proposals are capped at one noise width in norm
(``Twisted(max_shift=1/√d)``): uncapped, the reward's gradient over the re-noising kernel's noise
(σ = t' ≈ 1 at the first steps) throws the particles far off the data and the runs collapse.
Ψ-Sampler runs as the paper does (5 pCNL chains, h = 0.5), with the step size adapted during
burn-in, and with 20 adapted chains; MALA chains (``mala_smc``) show the acceptance collapse beside
pCNL's.

Writes ``results/regimes.md`` (the winners' map per metric, the four corner cells),
``regimes_cells.md`` (every cell), ``regimes.csv`` (per-seed rows) and ``regimes.png``.

Usage: python benchmarks/regimes.py [--quick] [--dims 2,8,32,128,512] [--masses ...]
       [--budgets 1000,4000] [--seeds 10] [--models oracle,learned] [--append] [--report-only]
"""

import argparse
import csv
import math
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, write_text  # noqa: E402

from psijax.align import Twisted  # noqa: E402
from psijax.experiments import regimes as rg  # noqa: E402
from psijax.experiments.toy_report import aggregate, format_mean_se  # noqa: E402
from psijax.flows import ode  # noqa: E402
from psijax.models import distilled, reflow  # noqa: E402

TWISTED = ("psi_sampler", "smc", "tds", "das", "top_k_smc", "tempered_smc", "mala_smc")
METHODS = {  # label -> (sampler, steps T, options, the initial stage's share of the budget)
    # one step: the particles go straight through the one-step map
    "IS, T=1": ("smc", 1, {}, 0.5),
    "psi_sampler, T=1": ("psi_sampler", 1, {}, 0.75),
    "psi_sampler/adapted, T=1": ("psi_sampler", 1, {"adapt": True}, 0.75),
    "psi_sampler/adapted/20 chains, T=1": (
        "psi_sampler",
        1,
        {"adapt": True, "num_chains": 20},
        0.75,
    ),
    "mala_smc, T=1": ("mala_smc", 1, {}, 0.75),
    "top_k_smc, T=1": ("top_k_smc", 1, {}, 0.5),
    # FLUX-schnell's four steps
    "smc, T=4": ("smc", 4, {}, 0.5),
    "das, T=4": ("das", 4, {}, 0.5),
    "fk_steering, T=4": ("fk_steering", 4, {}, 0.5),
    "psi_sampler/adapted, T=4": ("psi_sampler", 4, {"adapt": True}, 0.5),
    # the paper's 25 steps
    "psi_sampler, T=25": ("psi_sampler", 25, {}, 0.5),
    "smc, T=25": ("smc", 25, {}, 0.5),
    "tds, T=25": ("tds", 25, {}, 0.5),
    "das, T=25": ("das", 25, {}, 0.5),
    "fk_steering, T=25": ("fk_steering", 25, {}, 0.5),
    "tempered_smc, T=25": ("tempered_smc", 25, {}, 0.5),
}
QUICK_METHODS = ("IS, T=1", "psi_sampler/adapted, T=1", "smc, T=4", "das, T=25")
METRICS = (
    "reward",
    "best_reward",
    "high_mass",
    "mode_tv",
    "mmd",
    "ess",
    "log_z_error",
    "acceptance",
    "nfe",
)
BETTER = {"best_reward": max, "mode_tv": min, "mmd": min}
"""The metrics of the winners' map and which way is better."""


def learned_model(dim: int, seed: int):
    """A distilled MLP of ``regime_data(dim)`` (the shipped models' recipe, trained here); prints
    its final loss and its one-step error against the exact flow map at ``t = 1``."""
    data = rg.regime_data(dim)
    exact = lambda x, t: ode.flow_map(data.velocity, x, t, rtol=1e-6, atol=1e-6)[0]  # noqa: E731
    config = distilled.DISTILLED_CONFIG._replace(dim=dim)
    params, losses = distilled.train_distilled(
        jax.random.key(seed), data.mixture.sample, exact, config
    )
    velocity = reflow.velocity_fn(params, config)
    x1 = jax.random.normal(jax.random.key(seed + 1), (500, dim))
    one_step = x1 - jax.vmap(velocity, in_axes=(0, None))(x1, 1.0)
    target = jax.vmap(lambda x: exact(x, 1.0))(x1)
    error = float(jax.numpy.mean(jax.numpy.linalg.norm(one_step - target, axis=-1)))
    print(f"  learned d={dim}: loss {float(losses[-200:].mean()):.4f}, one-step error {error:.3f}")
    return velocity


def run(args, path: str) -> None:
    """Every requested cell, its rows appended to the CSV at ``path`` as each method ends (a
    long sweep can be stopped and its blocks reported together with ``--report-only``)."""
    for model in args.models:
        for dim in args.dims:
            if model == "learned" and dim > 32:
                continue
            start = time.perf_counter()
            problems = [rg.regime_problem(dim, q, jax.random.key(1)) for q in args.masses]
            data = problems[0].data
            velocity = rg.regime_model(data) if model == "oracle" else learned_model(dim, 0)
            print(f"{model} d={dim}: problems and model in {time.perf_counter() - start:.0f} s")
            for budget in args.budgets:
                append_csv(
                    rg.reference_rows(
                        problems, budget // 25, budget=budget, model=model, seeds=args.seeds
                    ),
                    path,
                )
                for label in args.methods:
                    sampler, steps, fields, split = METHODS[label]
                    options = dict(fields)
                    if sampler in TWISTED:
                        options["proposal"] = Twisted(max_shift=1.0 / math.sqrt(dim))
                    out = rg.run_method(
                        problems,
                        velocity,
                        model,
                        sampler,
                        budget=budget,
                        num_steps=steps,
                        seeds=args.seeds,
                        options=options,
                        budget_split=split,
                    )
                    for row in out.rows:
                        row["method"] = label
                    append_csv(out.rows, path)
                    print(
                        f"  B={budget} {label}: compile {out.compile_s:.0f} s, "
                        f"run {out.run_s:.2f} s",
                        flush=True,
                    )


COLUMNS = (
    "dim mass model budget method seed steps nfe num_particles ess reward high_mass mode_tv mmd "
    "best_reward log_z_error acceptance"
).split()


def append_csv(rows, path: str) -> None:
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str) -> list:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in COLUMNS:
            if k in ("model", "method"):
                continue
            value = float(r[k]) if r[k] != "" else math.nan
            integer = k in ("dim", "budget", "seed", "steps") and math.isfinite(value)
            r[k] = int(value) if integer else value
    return rows


def collapsed_counts(rows) -> dict:
    """Seeds whose run kept no usable particle, per (dim, mass, model, budget, method)."""
    counts = {}
    for r in rows:
        key = (r["dim"], r["mass"], r["model"], r["budget"], r["method"])
        counts[key] = counts.get(key, 0) + (not math.isfinite(r["ess"]))
    return counts


def winners(summary, counts, metric: str) -> dict:
    """``{(model, budget, dim, mass): (winner, runner-up within one combined SE?)}`` among the
    methods with no collapsed seed."""
    pick = BETTER[metric]
    cells = {}
    for s in summary:
        key = (s["model"], s["budget"], s["dim"], s["mass"])
        if (
            s["method"] == rg.REFERENCE
            or counts[(s["dim"], s["mass"], s["model"], s["budget"], s["method"])]
        ):
            continue
        if math.isfinite(s[metric]):
            cells.setdefault(key, []).append(s)
    out = {}
    for key, entries in cells.items():
        best = pick(entries, key=lambda s: s[metric])
        close = [
            s["method"]
            for s in entries
            if s is not best
            and abs(s[metric] - best[metric])
            <= math.hypot(s[f"{metric}_se"] or 0.0, best[f"{metric}_se"] or 0.0)
        ]
        out[key] = (best["method"], close)
    return out


def report(rows, args) -> tuple[str, str]:
    """The main report (maps and the corner cells) and the table of every cell."""
    summary = aggregate(rows, METRICS, ("dim", "mass", "model", "budget", "method"))
    counts = collapsed_counts(rows)
    lines = [
        "# Regimes: dimension × reward sharpness, every sampler at equal NFE\n",
        f"Machine: {machine()}.\n",
        __doc__.split("\n\n")[1].replace("\n", " ") + "\n",
        f"Seeds: {args.seeds} per cell; mean ± standard error; 'collapsed': seeds whose run kept "
        "no usable particle (their metrics are left out of the mean and the method out of the "
        "map).\n",
    ]
    for metric in BETTER:
        lines.append(f"\n## Winners by {metric} ({BETTER[metric].__name__} is better)\n")
        table = winners(summary, counts, metric)
        for model in args.models:
            for budget in args.budgets:
                dims = [d for d in args.dims if (model, budget, d, args.masses[0]) in table]
                if not dims:
                    continue
                lines.append(f"\n{model} model, B = {budget} (≈: another method within one SE)\n")
                lines.append("| q \\ d | " + " | ".join(str(d) for d in dims) + " |")
                lines.append("|---|" + "---|" * len(dims))
                for q in args.masses:
                    cells = []
                    for d in dims:
                        name, close = table.get((model, budget, d, q), ("–", []))
                        cells.append(name + (f" ≈ {', '.join(close)}" if close else ""))
                    lines.append(f"| {q:g} | " + " | ".join(cells) + " |")
    corners = {(min(args.dims), max(args.masses)), (min(args.dims), min(args.masses))}
    corners |= {(max(args.dims), max(args.masses)), (max(args.dims), min(args.masses))}
    lines.append(
        "\n## The four corners (every cell: regimes_cells.md)\n\n"
        + cell_table(summary, counts, lambda s: (s["dim"], s["mass"]) in corners)
    )
    return "\n".join(lines) + "\n", (
        "# Regimes: every cell\n\n" + cell_table(summary, counts, lambda s: True) + "\n"
    )


def cell_table(summary, counts, keep) -> str:
    lines = [
        "| model | B | d | q | method | collapsed | best r | E_w[r] | high-region mass | mode TV "
        "| MMD² | ESS | log Ẑ − log Z | acceptance | NFE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if not keep(s):
            continue
        n = counts[(s["dim"], s["mass"], s["model"], s["budget"], s["method"])]
        cells = [format_mean_se(s[m], s[f"{m}_se"]) for m in METRICS]
        lines.append(
            f"| {s['model']} | {s['budget']} | {s['dim']} | {s['mass']:g} | {s['method']} | {n} "
            f"| {cells[1]} | {cells[0]} | {' | '.join(cells[2:])} |"
        )
    return "\n".join(lines)


def plot(rows, args, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = aggregate(rows, METRICS, ("dim", "mass", "model", "budget", "method"))
    counts = collapsed_counts(rows)
    labels = list(args.methods)
    colours = plt.get_cmap("tab10")
    panels = [(m, b, metric) for m in args.models for b in args.budgets for metric in BETTER]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (model, budget, metric) in zip(axes[0], panels, strict=True):
        table = winners(summary, counts, metric)
        for i, d in enumerate(args.dims):
            for j, q in enumerate(args.masses):
                if (model, budget, d, q) not in table:
                    continue
                name, close = table[(model, budget, d, q)]
                colour = colours(labels.index(name) % 10)
                ax.add_patch(plt.Rectangle((i, j), 1, 1, color=colour, alpha=0.4 if close else 0.9))
        ax.set_xticks(np.arange(len(args.dims)) + 0.5, [str(d) for d in args.dims])
        ax.set_yticks(np.arange(len(args.masses)) + 0.5, [f"{q:g}" for q in args.masses])
        ax.set_xlim(0, len(args.dims))
        ax.set_ylim(0, len(args.masses))
        ax.set_xlabel("dimension d")
        ax.set_ylabel("prior mass of the high region")
        ax.set_title(f"{model}, B={budget}: {metric}", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(i % 10)) for i in range(len(labels))]
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d 2, 8; q 1e-1, 1e-4; 4 methods")
    parser.add_argument("--dims", default=None)
    parser.add_argument("--masses", default=None)
    parser.add_argument("--budgets", default="1000,4000")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--models", default="oracle,learned")
    parser.add_argument("--methods", default=";".join(METHODS), help="';'-separated labels")
    parser.add_argument("--append", action="store_true", help="add to the existing CSV")
    parser.add_argument("--report-only", action="store_true", help="report the existing CSV")
    args = parser.parse_args()
    quick = args.quick
    args.dims = [int(d) for d in (args.dims or ("2,8" if quick else "2,8,32,128,512")).split(",")]
    default_masses = "1e-1,1e-4" if quick else ",".join(f"{q:g}" for q in rg.MASSES)
    args.masses = [float(q) for q in (args.masses or default_masses).split(",")]
    args.budgets = [int(b) for b in ("1000" if quick else args.budgets).split(",")]
    args.models = args.models.split(",")
    args.methods = list(QUICK_METHODS) if quick else args.methods.split(";")
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    if quick:
        args.seeds = min(args.seeds, 3)
    path = os.path.join(RESULTS, "regimes.csv")
    print(machine(), flush=True)
    start = time.perf_counter()
    if not args.report_only:
        if not args.append and os.path.exists(path):
            os.remove(path)
        run(args, path)
    rows = read_csv(path)
    args.dims = sorted({r["dim"] for r in rows})
    args.masses = sorted({r["mass"] for r in rows}, reverse=True)
    args.budgets = sorted({r["budget"] for r in rows})
    args.models = [m for m in ("oracle", "learned") if any(r["model"] == m for r in rows)]
    args.methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    text, cells = report(rows, args)
    if not args.report_only:
        text += f"\nThis run: {(time.perf_counter() - start) / 60:.0f} min.\n"
    print(text)
    write_text(text, "regimes.md")
    write_text(cells, "regimes_cells.md")
    plot(rows, args, os.path.join(RESULTS, "regimes.png"))


if __name__ == "__main__":
    main()
