"""The ``psijax`` command.

``psijax demo`` compares the alignment samplers at equal NFE on a 2D Gaussian-mixture toy with
an exact target (:mod:`psijax.experiments.toy`): one preset, the exact and the reflowed model,
a few methods and seeds; it prints the table and writes the figure (PNG), the table (markdown)
and the results (JSON) into ``--out``. ``psijax acceptance`` runs a short version of the
acceptance-vs-dimension study (pCN, pCNL, ULA and BlackJAX MALA on a conjugate Gaussian
target, d from 16 to 65,536) and writes its figure, a CSV and a JSON.
"""

import argparse
import csv
import json
import math
import os
import sys
import time

__all__ = ["main", "build_parser"]

DEMO_METHODS = ("psi_sampler", "smc", "das", "tempered", "dps", "best_of_n")
DEMO_PRESET = "six_modes_mixture"
ACCEPTANCE_DIMS = (16, 256, 4096, 65536)
ACCEPTANCE_STEP_SIZES = (0.5,)


# -- psijax demo ---------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    import jax

    from psijax.experiments import toy, toy_report

    methods = _demo_methods(args)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    settings = [
        toy.build_setting(
            args.preset, model, jax.random.key(args.seed), occupancy_size=args.occupancy_size
        )
        for model in args.models
    ]
    try:
        rows, particles, timings = toy.run_study(
            settings,
            methods,
            budget=args.budget,
            num_steps=args.steps,
            seeds=args.seeds,
            progress=not args.no_progress,
        )
    except ValueError as err:  # e.g. a budget too small for a method's initial stage
        raise SystemExit(f"psijax: {err}") from err
    summary = toy_report.aggregate(rows)
    figure = os.path.join(args.out, f"toy_{args.preset}.png")
    toy_report.plot(settings, particles, methods, args.budget, figure)
    elapsed = time.perf_counter() - start

    table = toy_report.format_markdown(summary, settings, num_steps=args.steps)
    header = (
        f"# psijax demo: reward alignment on `{args.preset}` at equal NFE\n\n"
        f"{args.seeds} seed(s); mean ± standard error over seeds; {elapsed:.0f} s on "
        f"{jax.default_backend()}. Metrics against the exact tilted target "
        "(`psijax.experiments.toy`); `exact target (iid)`: as many i.i.d. exact draws as the "
        "prior-start methods have particles; `SMC limit (IS)`: the law every SMC method tends "
        "to as N → ∞ (importance-weighted draws of the model's stochastic sampler).\n"
    )
    with open(os.path.join(args.out, "toy.md"), "w") as f:
        f.write(header + "\n" + table + f"\n\n![figure](toy_{args.preset}.png)\n")
    record = {
        "backend": jax.default_backend(),
        "seconds": elapsed,
        "config": {k: getattr(args, k) for k in ("preset", "models", "budget", "steps", "seeds")}
        | {"methods": list(methods)},
        "summary": summary,
        "rows": rows,
        "timings": timings,
    }
    with open(os.path.join(args.out, "toy.json"), "w") as f:
        json.dump(_json_safe(record), f, indent=1, allow_nan=False)
    print("\n" + table)
    print(f"\nFigure: {figure}\nTable: {os.path.join(args.out, 'toy.md')}")
    print(f"Took {elapsed:.1f} s on {jax.default_backend()}.")
    return 0


def _demo_methods(args: argparse.Namespace) -> tuple[str, ...]:
    """The methods of ``--methods`` (``all``: every one), validated before anything runs."""
    from psijax.experiments import toy

    if args.methods.strip() == "all":
        return toy.default_methods()
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not methods:
        raise SystemExit("psijax: --methods must name at least one method")
    for name in methods:
        try:
            toy.sampler_options(toy.parse_method(name), args.budget, args.steps)
        except ValueError as err:
            raise SystemExit(f"psijax: --methods/--budget: {err}") from err
    return methods


def _json_safe(value):
    """NaN/inf → None, numpy scalars → Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- psijax acceptance ---------------------------------------------------------------------------
def _acceptance(args: argparse.Namespace) -> int:
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


# -- parser --------------------------------------------------------------------------------------
def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="every sampler at equal NFE on a 2D toy with an exact target (about a minute on CPU)",
        description=(
            "Ψ-Sampler and the baselines at equal NFE on a 2D Gaussian-mixture toy with an "
            "exact tilted target, with the exact and the reflowed model. Prints the table and "
            "writes toy_<preset>.png, toy.md and toy.json into --out."
        ),
    )
    demo.add_argument("--out", default="psijax-demo", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--preset",
        default=DEMO_PRESET,
        help="a name of psijax.models.presets.TOY_PROBLEMS; with the reflow model one of "
        "six_modes_mixture, six_modes_quadratic, unequal_rare_modes (default: %(default)s)",
    )
    demo.add_argument(
        "--models",
        default="exact,reflow",
        type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
        help="comma-separated: exact, reflow (default: %(default)s)",
    )
    demo.add_argument(
        "--methods",
        default=",".join(DEMO_METHODS),
        help="comma-separated sampler names (psijax.align.SAMPLERS, 'tempered', a "
        "'[flow_map]' suffix on initial-stage methods) or 'all' (default: %(default)s)",
    )
    demo.add_argument("--budget", type=int, default=1000, help="NFE per run (default: 1000)")
    demo.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    demo.add_argument("--seeds", type=int, default=3, help="seeds per method (default: 3)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the exact reference draws")
    demo.add_argument(
        "--occupancy-size",
        type=int,
        default=50_000,
        help="exact draws for the target's mode occupancy (default: %(default)s)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(run=_demo, check=_check_demo)


def _add_acceptance(commands) -> None:
    acc = commands.add_parser(
        "acceptance",
        help="pCNL vs pCN vs MALA acceptance across dimensions (about a minute on CPU)",
        description=(
            "Acceptance of pCN, pCNL, ULA (n/a) and BlackJAX MALA vs dimension on a conjugate "
            "Gaussian target. Writes a PNG, a CSV and a JSON into --out."
        ),
    )
    acc.add_argument("--out", default="psijax-demo", help="output folder (default: %(default)s)")
    acc.add_argument("--dims", type=int, nargs="+", default=list(ACCEPTANCE_DIMS))
    acc.add_argument("--step-sizes", type=float, nargs="+", default=list(ACCEPTANCE_STEP_SIZES))
    acc.add_argument("--chains", type=int, default=5)
    acc.add_argument("--steps", type=int, default=100)
    acc.add_argument("--burn-in", type=int, default=25)
    acc.add_argument("--seed", type=int, default=0)
    acc.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    acc.set_defaults(run=_acceptance, check=_check_acceptance)


def _check_demo(args: argparse.Namespace) -> None:
    for name in ("budget", "steps", "seeds", "occupancy_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"psijax: --{name.replace('_', '-')} must be >= 1")
    bad = [m for m in args.models if m not in ("exact", "reflow")]
    if bad or not args.models:
        raise SystemExit(f"psijax: --models must be a subset of exact,reflow, got {bad or 'none'}")
    from psijax.experiments.toy import REFLOW_DATA
    from psijax.models.presets import TOY_PROBLEMS

    if args.preset not in TOY_PROBLEMS:
        raise SystemExit(f"psijax: --preset must be one of {', '.join(TOY_PROBLEMS)}")
    if "reflow" in args.models and args.preset not in REFLOW_DATA:
        raise SystemExit(
            f"psijax: --preset {args.preset} has no reflow model; use one of "
            f"{', '.join(REFLOW_DATA)} or --models exact"
        )


def _check_acceptance(args: argparse.Namespace) -> None:
    for name in ("chains", "steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"psijax: --{name} must be >= 1")
    if any(d < 1 for d in args.dims):
        raise SystemExit("psijax: --dims must all be >= 1")
    if any(not h > 0 for h in args.step_sizes):
        raise SystemExit("psijax: --step-sizes must all be > 0")
    if not 0 <= args.burn_in < args.steps:
        raise SystemExit("psijax: --burn-in must satisfy 0 <= burn-in < steps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psijax", description="Inference-time reward alignment in JAX (Ψ-Sampler)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_acceptance(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.check(args)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
