"""Every discrete sampler at equal NFE on the masked-diffusion words model: a seen classifier,
a held-out dictionary.

The study of ``psijax.experiments.discrete_words`` on the shipped words model (2 CPU cores):

1. The word task (target ``any``) and the letter task (targets ``q``, ``k``, ``w``), each at
   the two ``β`` of ``DEFAULT_BETAS``, every method of ``discrete_study.METHODS`` at the
   budgets of ``smc_reverse`` with N_ref ∈ {2, 4, 8, 16} particles, ``--seeds`` seeds; the
   amortised proposal trained per target (its time reported apart), and the first-order
   proposal with its tilt clipped at 3 nats (``VARIANTS``); references from 4,096 unguided
   samples.
2. The **hacking check** (seen-reward ascent over free relaxed one-hots, no model) for the
   word task and the letter ``q``.

Writes ``results/discrete_words.md`` (tables per task, pooled over targets: mean ± standard
error over targets × seeds; the highest-weight sequences of seed 0 per method and target at
N_ref = 16 and the first ``β``), ``discrete_words.csv`` (per-seed rows) and
``discrete_words_timings.csv``.

Usage: python benchmarks/discrete_words.py [--seeds 5] [--quick]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_csv, write_text  # noqa: E402

from psijax.align.discrete import FirstOrder  # noqa: E402
from psijax.experiments import discrete_study as ds  # noqa: E402
from psijax.experiments import discrete_words as dw  # noqa: E402

METRICS = (*ds.METRICS, "novel")
HACK_TARGETS = (("word", "any"), ("letter", "q"))
# The seen classifier is sharp: the unclipped gradient tilt collapses a particle set onto one
# letter (`qqqq…`); the clipped tilt is the variant that works on this domain.
VARIANTS = {"smc_first_order (clip 3)": ("smc_first_order", {"proposal": FirstOrder(clip=3.0)})}


def hacking(models, pool) -> str:
    lines = []
    for name, target in HACK_TARGETS:
        rows = ds.hacking_check(models, dw.make_task(name, target), pool[:64])
        lines += [
            f"\n{name} = {target}:\n",
            ds.format_hacking(rows, "seen_accepts", "seen classifier says word"),
        ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one target per task, small")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    tasks = [
        dw.make_task(name, target)
        for name, targets in dw.DEFAULT_TARGETS.items()
        for target in (targets[:1] if args.quick else targets)
    ]
    particles = (2, 4) if args.quick else ds.PARTICLES
    options = {"num_iterations": 5} if args.quick else {"num_iterations": 60}
    pool_size = 512 if args.quick else 4096
    models = dw.load_models()
    rows, first, timings = ds.run_study(
        models,
        tasks,
        particles=particles,
        seeds=args.seeds,
        pool_size=pool_size,
        amortised_options=options,
        variants=VARIANTS,
        progress=not args.no_progress,
    )
    pool = ds.unguided_pool(models, 64, seed=7)
    hack = hacking(models, pool)
    elapsed = time.perf_counter() - start

    summary = ds.summarize(rows, over_targets=True, metrics=METRICS)
    trains = [t for t in timings if t["method"] == "train smc_amortised"]
    train_line = ", ".join(f"{t['task']}/{t['target']} {t['train_s']:.0f} s" for t in trains)
    text = [
        "# Masked-diffusion words: every discrete sampler at equal NFE, a seen classifier and "
        "a held-out dictionary\n",
        f"Machine: {machine()}\n",
        f"Total time {elapsed / 60:.1f} min. T = {dw.NUM_STEPS} MDLM steps; {args.seeds} seeds "
        "× the task's targets per row (word: `any`; letter: q, k, w), mean ± standard error "
        "over the runs. `N_ref`: the budget is the NFE of smc_reverse with N_ref particles (a "
        "reward call counts as one NFE); `N`: the particles a method gets for it; `NFE`: its "
        "denoiser passes. `heldout`: weighted over the final particles — the sequence is a "
        "`web2` word (containing the letter, for the letter task), a list no model here saw; "
        "`best`: the particle of highest seen reward. nn_dist: edit distance to the nearest "
        "training (`gcide`) word; novel: the weighted share of held-out successes that are not "
        "training words. References: `model (unguided)` = unguided samples in chunks of "
        f"N_ref = {min(particles)}, `target (IS)` = {pool_size:,} of them weighted by "
        "exp(r/β).\n",
        f"Amortised proposal training (charged apart): {train_line}.\n",
    ]
    for name in dw.DEFAULT_TARGETS:
        part = [e for e in summary if e["task"] == name]
        text += [f"\n## Task `{name}`\n", ds.format_markdown(part, extra=("novel",))]
        beta = dw.DEFAULT_BETAS[name][0]
        text += [
            f"\nHighest-weight sequences (seed 0, β = {beta:g}, N_ref = {max(particles)}; "
            "bold: a held-out success; `_`: a pad inside a malformed sequence):\n",
            dw.sample_table(models, first, name, beta, max(particles)),
        ]
    text += [
        "\n## Hacking check (seen-reward ascent over relaxed one-hots, no model)\n",
        hack,
        "\nCommand: `python benchmarks/discrete_words.py"
        + (" --quick" if args.quick else "")
        + "`\n",
    ]
    write_text("\n\n".join(text), f"discrete_words{suffix}.md")
    write_csv(rows, f"discrete_words{suffix}.csv")
    write_csv(timings, f"discrete_words_timings{suffix}.csv")
    print(f"done in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
