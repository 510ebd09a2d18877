"""The ``psijax`` command.

``psijax demo`` runs a short version of the acceptance-vs-dimension study (pCN, pCNL, ULA and
BlackJAX MALA on a conjugate Gaussian target, d from 16 to 65,536), prints the table and writes
the figure, a CSV and a JSON of the results. Later subcommands extend it.
"""

import argparse
import csv
import json
import os
import sys
import time

__all__ = ["main"]

DEMO_DIMS = (16, 256, 4096, 65536)
DEMO_STEP_SIZES = (0.5,)


def _demo(args: argparse.Namespace) -> int:
    import jax

    from psijax.experiments import acceptance

    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    rows = acceptance.acceptance_vs_dimension(
        dims=args.dims,
        step_sizes=args.step_sizes,
        num_chains=args.chains,
        num_steps=args.steps,
        burn_in=args.burn_in,
        seed=args.seed,
        progress=not args.no_progress,
    )
    elapsed = time.perf_counter() - start

    figure = os.path.join(args.out, "acceptance_vs_dimension.png")
    acceptance.plot(rows, figure)
    with open(os.path.join(args.out, "acceptance_vs_dimension.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.out, "acceptance_vs_dimension.json"), "w") as f:
        json.dump({"backend": jax.default_backend(), "seconds": elapsed, "rows": rows}, f, indent=1)

    print(
        "\nAcceptance vs dimension — conjugate Gaussian target (likelihood on 3 directions), "
        f"{args.chains} chains × {args.steps} steps ({args.burn_in} burn-in); "
        "MALA/ULA at ε = h/2.\n"
    )
    print(acceptance.format_markdown(rows))
    print(f"\nFigure: {figure}\nTook {elapsed:.1f} s on {jax.default_backend()}.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psijax", description="Inference-time reward alignment in JAX (Ψ-Sampler)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="pCNL vs pCN vs MALA acceptance across dimensions (about a minute on CPU)",
        description=(
            "Acceptance of pCN, pCNL, ULA (n/a) and BlackJAX MALA vs dimension on a conjugate "
            "Gaussian target. Writes a PNG, a CSV and a JSON into --out."
        ),
    )
    demo.add_argument("--out", default="psijax-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--dims", type=int, nargs="+", default=list(DEMO_DIMS))
    demo.add_argument("--step-sizes", type=float, nargs="+", default=list(DEMO_STEP_SIZES))
    demo.add_argument("--chains", type=int, default=5)
    demo.add_argument("--steps", type=int, default=100)
    demo.add_argument("--burn-in", type=int, default=25)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("chains", "steps"):
        if getattr(args, name, 1) < 1:
            raise SystemExit(f"psijax: --{name} must be >= 1")
    if any(d < 1 for d in getattr(args, "dims", [1])):
        raise SystemExit("psijax: --dims must all be >= 1")
    if any(not h > 0 for h in getattr(args, "step_sizes", [1.0])):
        raise SystemExit("psijax: --step-sizes must all be > 0")
    if not 0 <= getattr(args, "burn_in", 0) < getattr(args, "steps", 1):
        raise SystemExit("psijax: --burn-in must satisfy 0 <= burn-in < steps")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
