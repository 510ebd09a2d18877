"""Every alignment sampler at equal NFE on the digits tasks: seen rewards, held-out metrics.

The study of ``psijax.experiments.digits`` on the shipped digits models (2 CPU cores, about
30 minutes):

1. The **reflow** prior (sharp one-step prediction, the FLUX-schnell analog): every method of
   the toy benchmark (``digits.default_methods()``: every sampler of ``psijax.align.SAMPLERS``,
   the tempered-SMC initial stage, and the flow-map variants of Ψ-Sampler and of the tempered
   stage), on the class task (targets 0, 4, 8) and the layout task (boxes left, right, narrow),
   ``B = 1000`` NFE, 25 steps, ``--seeds`` seeds each.
2. The plain **flow** prior (blurry one-step prediction, the FLUX-dev analog): Ψ-Sampler with
   the Tweedie and with the flow-map initial predictor, SMC and best-of-N.
3. The **hacking check**: Adam ascent of the seen reward on the pixels of 64 of the model's own
   samples (no prior), at L∞ radii 0.25, 0.5 and 2 (unconstrained), for one target per task.

Writes ``results/digits.md`` (tables: mean ± standard error over seeds, and over targets),
``digits.csv`` (per-seed rows), ``digits_timings.csv``, and image grids
``digits_<task>_<model>.png`` (six weighted draws of seed 0 per method and target) and
``digits_hacking.png``.

Usage: python benchmarks/digits.py [--seeds 5] [--quick] [--no-progress]
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, write_csv, write_text  # noqa: E402

from psijax.experiments import digits as dx  # noqa: E402
from psijax.experiments import digits_report  # noqa: E402

FLOW_METHODS = ("psi_sampler", "psi_sampler[flow_map]", "smc", "best_of_n")
QUICK_METHODS = ("psi_sampler", "psi_sampler[flow_map]", "smc", "best_of_n")
HACK_TARGETS = (("class", 4), ("layout", "left"))

CONCLUSIONS = """\
## Conclusions

Written from the tables of this file (reflow prior unless said otherwise; mean ± SE over
3 targets × 5 seeds; "n σ" compares two rows by their combined SE).

**No method wins everywhere, and Ψ-Sampler does not win here.**

- **Class task.** It is easy at α = 0.1 and B = 1,000: a tenth of the prior's samples are
  already the target digit.
  - Every sampler's single output, the highest-reward particle, is classified as the target by
    the held-out CNN in all 45 runs. The exception is best-of-N, at 0.93 ± 0.07.
  - The weighted held-out accuracy lies between 0.93 and 1.00 for every method, beside
    0.95 for the importance-sampled target.
  - Ψ-Sampler's 0.928 ± 0.041 is the lowest SMC value, but within 1.4 σ of SMC from the prior
    (0.985 ± 0.008).
- **Layout task: FK steering wins both metrics by not sampling the target.**
  - It reaches a seen reward E_w of 0.592 ± 0.008 and a held-out IoU of 0.806 ± 0.019. For its
    best particle: 0.641 and 0.832.
  - That is above the importance-sampled target itself (0.467 and 0.665). Its max-over-time
    potential aims at a sharper law than p*, with an ESS of 6.9 of 40.
  - The Top-K initial stage comes second (E_w 0.504 and 0.703).
- **The target-consistent samplers agree with the target and with each other.** These are
  Ψ-Sampler, SMC, TDS, MALA, pCN and the tempered stage: E_w reward 0.43–0.45, IoU 0.64–0.66,
  against 0.467 and 0.665 for the target.
  - Ψ-Sampler with the flow-map initial stage gives the best single output among the
    Ψ-Sampler variants: seen 0.608 ± 0.008 against 0.584 ± 0.007 with Tweedie (2.4 σ), and IoU
    0.807 against 0.773.
  - pCN without gradients reaches a best IoU of 0.828 ± 0.026.
  - DAS is the weakest SMC on layout (best 0.509 / 0.678).
- **The plain flow prior** is blurry at one step, the FLUX-dev analog.
  - On layout, Ψ-Sampler's best particle (0.547 ± 0.007, IoU 0.70) trails SMC from the prior
    (0.571 ± 0.007, IoU 0.77) by 2.5 σ.
  - The flow-map initial predictor gives the same 0.547. With four Euler steps per
    prediction, its chains are a quarter as long.
- **The adaptive flow map** (Tsit5 at 1e-3, the toy study's predictor) costs about 30 model
  evaluations per prediction here. This was measured in a separate run, class targets 4 and 0,
  2 seeds: 30,130–31,798 NFE per run, 30× the budget, 152 s per run against 2.1 s. Its held-out
  accuracy (0.82–1.00) was no better. The study therefore solves the flow map in 4 Euler steps
  at equal NFE.
- **The tempered stage with the flow map** (`tempered_smc[flow_map]`, not sizeable in advance)
  spent 2,201 ± 91 (layout) and 3,609 ± 154 (class) NFE, 2.2–3.6× the budget, and gained little
  over the Tweedie tempered stage. On layout: E_w 0.440 / 0.640 and best 0.576 / 0.774, against
  0.434 / 0.654 and 0.569 / 0.738.

**Hacking.**
- A pure pixel optimizer of the seen reward also raises the held-out metrics:
  - class, L∞ ≤ 0.5: the seen MLP says "4" for 92 % of images and the held-out CNN for 75 %;
    unconstrained, both say it for 100 %;
  - layout, unconstrained: it paints a solid block in the box, which has IoU 1.
- The held-out metrics alone can therefore be hacked, by an optimizer that ignores the prior.
  Realism catches it: the distance to the nearest data image rises from 0.146 to 0.25–0.38
  (class) and to 1.0 (layout).
- The samplers' gains are not hacks. Their nn dist. (0.10–0.13) stays at or below the unguided
  model's 0.145, with one exception: ULA on the class task, at 0.43 ± 0.16. ULA's chains,
  with no Metropolis correction, leave the data manifold and still score 0.99 with the CNN.
  Its row in `digits_class_reflow.png` shows such images.
"""


def study(model, methods, seeds, quick, progress):
    models = dx.load_models(model)
    tasks = [
        dx.make_task(name, target)
        for name, targets in dx.DEFAULT_TARGETS.items()
        for target in (targets[:1] if quick else targets)
    ]
    rows, particles, timings = dx.run_study(
        models, tasks, methods, seeds=seeds, pool_size=512 if quick else 4096, progress=progress
    )
    return models, tasks, rows, particles, timings


def hacking_figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(7, 1.3 * len(results)), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], results.items(), strict=True):
        strips = [digits_report.image_strip(batch[:8, 0]) for batch in images.values()]
        ax.imshow(-np.concatenate(strips, 0), cmap="gray", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([5 + 10 * i for i in range(len(images))])
        ax.set_yticklabels(["start" if r == 0 else f"L∞ ≤ {r:g}" for r in images], fontsize=7)
        ax.set_title(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one target per task, few methods")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    all_rows, all_timings, sections = [], [], []
    plans = [("reflow", QUICK_METHODS if args.quick else dx.default_methods())]
    plans.append(("flow", FLOW_METHODS))
    pools = {}
    for model, methods in plans:
        models, tasks, rows, particles, timings = study(
            model, methods, args.seeds, args.quick, not args.no_progress
        )
        pools[model] = models
        all_rows += rows
        all_timings += [t | {"model": model} for t in timings]
        per_target, per_task = digits_report.aggregate(rows)
        sections.append(digits_report.format_markdown(per_target, per_task))
        shown = ["model (unguided)", "target (IS)", *methods]
        for name in dx.TASKS:
            targets = [str(t.target) for t in tasks if t.name == name]
            path = os.path.join(RESULTS, f"digits_{name}_{model}{suffix}.png")
            digits_report.plot_grid(particles, name, targets, shown, path)
            sections.append(f"![{name}, {model}](digits_{name}_{model}{suffix}.png)")

    models = pools["reflow"]
    pool = dx.flow_samples(models.flow, jax.random.key(7), np.full(64, 10))[1]
    hack_blocks, hack_images = [], {}
    for name, target in HACK_TARGETS:
        task = dx.make_task(name, target)
        rows, images = dx.hacking_check(models, task, dx.digits.to_images(pool))
        hack_blocks.append(digits_report.format_hacking(rows, name, target))
        hack_images[f"{name} = {target}: reward ascent on the pixels"] = images
    hacking_figure(hack_images, os.path.join(RESULTS, f"digits_hacking{suffix}.png"))
    elapsed = time.perf_counter() - start

    text = [
        "# Digits: reward alignment at equal NFE, seen rewards and held-out metrics\n",
        f"Machine: {machine()}\n",
        f"Total time {elapsed / 60:.1f} min. {args.seeds} seeds per target; mean ± standard "
        "error over seeds (per target) and over targets (task tables: SE of the mean of the "
        "target means). `E_w`: weighted mean over the final particles; `best`: the particle "
        "with the highest seen reward (the paper's output). Held-out: the CNN's accuracy "
        "(class) or the IoU of the thresholded ink's bounding box with the target box "
        "(layout); nn dist.: mean squared distance per pixel to the nearest data image (data "
        "leave-one-out ≈ 0.07). References: `model (unguided)` = the model's flow-map samples in "
        "chunks of 40, `target (IS)` = 4096 of them importance-weighted by exp(r/α). Flow-map "
        f"initial stages use {dx.FLOW_MAP_STEPS} Euler steps per prediction (equal NFE).\n",
        *sections,
        "\n## Hacking check (reward ascent on the pixels, no prior)\n",
        *hack_blocks,
        f"\n![hacking](digits_hacking{suffix}.png)\n",
        "" if args.quick else CONCLUSIONS,
        "\nCommand: `python benchmarks/digits.py" + (" --quick" if args.quick else "") + "`\n",
    ]
    write_text("\n\n".join(text), f"digits{suffix}.md")
    write_csv(all_rows, f"digits{suffix}.csv")
    write_csv(all_timings, f"digits_timings{suffix}.csv")
    print(f"done in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
