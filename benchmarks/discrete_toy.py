"""The discrete toy study (psijax.experiments.discrete_toy): every discrete sampler at equal NFE
on the 64 × 64 grid mixtures, against the exact target of the T-step sampler.

    python benchmarks/discrete_toy.py [--steps 100] [--seeds 10] [--particles 4 16 64 256]
    python benchmarks/discrete_toy.py --toys gmm1 --particles 2000 --name discrete_toy_n2000

Writes benchmarks/results/<name>.{csv,md,json,png} (default name discrete_toy) with the
machine and versions.
"""

import argparse
import os
import platform
import time

import jax

from psijax.experiments import discrete_toy as dt
from psijax.experiments import records

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--particles", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--toys", nargs="+", default=list(dt.TOYS))
    parser.add_argument("--rewards", nargs="+", default=list(dt.REWARDS))
    parser.add_argument("--methods", nargs="+", default=list(dt.METHODS))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--name", default="discrete_toy", help="base name of the output files")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    toys = [dt.make_toy(t, r, num_steps=args.steps) for t in args.toys for r in args.rewards]
    rows, first, timings = dt.run_study(
        toys, args.methods, args.particles, seeds=args.seeds, progress=True
    )
    summary = dt.summarize(rows)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.default_backend()}, jax {jax.__version__}, Python {platform.python_version()}"
    )
    base = os.path.join(args.out, args.name)
    records.write_csv(summary, base + ".csv")
    records.write_json(
        {
            "machine": machine,
            "steps": args.steps,
            "seeds": args.seeds,
            "summary": summary,
            "timings": timings,
            "seconds": time.perf_counter() - start,
        },
        base + ".json",
    )
    with open(base + ".md", "w") as f:
        f.write(
            f"# Discrete toy study\n\n{machine}; T = {args.steps} steps, {args.seeds} seeds, "
            f"± one standard error over seeds; budget = the cost of smc_reverse with N "
            f"particles.\n\n{dt.format_markdown(summary)}\n"
        )
    dt.plot(toys, first, max(args.particles), base + ".png")
    print(dt.format_markdown(summary))
    print(f"\nWrote {base}.{{csv,md,json,png}} in {time.perf_counter() - start:.0f} s on {machine}")


if __name__ == "__main__":
    main()
