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


# -- psijax digits ------------------------------------------------------------------------------
def _digits(args: argparse.Namespace) -> int:
    import jax

    from psijax.experiments import digits, digits_report

    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    models = digits.load_models(args.model)
    rows, particles, timings = digits.run_study(
        models,
        args.tasks,
        args.methods,
        budget=args.budget,
        num_steps=args.steps,
        seeds=args.seeds,
        pool_size=args.pool_size,
        flow_map_steps=args.flow_map_steps,
        progress=not args.no_progress,
    )
    per_target, per_task = digits_report.aggregate(rows)
    targets = [str(t.target) for t in args.tasks]
    figure = os.path.join(args.out, f"digits_{args.task}.png")
    shown = ["model (unguided)", "target (IS)", *args.methods]
    digits_report.plot_grid(particles, args.task, targets, shown, figure)
    elapsed = time.perf_counter() - start

    table = digits_report.format_markdown(per_target, per_task)
    with open(os.path.join(args.out, f"digits_{args.task}.md"), "w") as f:
        f.write(
            f"# psijax digits: {args.task} task, {args.model} model, B = {args.budget} NFE\n\n"
            f"{args.seeds} seed(s) per target, α = {args.tasks[0].alpha}; mean ± standard error. "
            f"{elapsed:.0f} s on {jax.default_backend()}.\n\n{table}\n\n"
            f"![samples](digits_{args.task}.png)\n"
        )
    config = {k: getattr(args, k) for k in ("task", "model", "budget", "steps", "seeds")}
    config |= {"targets": targets, "methods": list(args.methods), "alpha": args.tasks[0].alpha}
    config |= {"pool_size": args.pool_size, "flow_map_steps": args.flow_map_steps}
    record = {
        "backend": jax.default_backend(),
        "seconds": elapsed,
        "config": config,
        "summary": {"per_task": per_task, "per_target": per_target},
        "rows": rows,
        "timings": timings,
    }
    with open(os.path.join(args.out, f"digits_{args.task}.json"), "w") as f:
        json.dump(_json_safe(record), f, indent=1, allow_nan=False)
    print("\n" + table)
    print(f"\nFigure: {figure}\nTable and metrics: {args.out}/digits_{args.task}.{{md,json}}")
    print(f"Took {elapsed:.1f} s on {jax.default_backend()}.")
    return 0


def _check_digits(args: argparse.Namespace) -> None:
    for name in ("budget", "steps", "seeds", "pool_size", "flow_map_steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"psijax: --{name.replace('_', '-')} must be >= 1")
    from psijax.experiments import digits
    from psijax.experiments.methods import parse_method

    if args.model not in digits.MODELS:
        raise SystemExit(f"psijax: --model must be one of {', '.join(digits.MODELS)}")
    default = ",".join(str(t) for t in digits.DEFAULT_TARGETS[args.task])
    names = [t.strip() for t in (args.target or default).split(",")]
    try:
        args.tasks = [digits.make_task(args.task, _parse_target(t), args.alpha) for t in names if t]
    except ValueError as err:
        raise SystemExit(f"psijax: --target/--alpha: {err}") from err
    if not args.tasks:
        raise SystemExit("psijax: --target must name at least one target")
    if args.pool_size < args.seeds * (args.budget // args.steps):
        raise SystemExit(
            "psijax: --pool-size must be >= seeds × budget/steps (the unguided reference chunks)"
        )
    if args.method.strip() == "all":
        args.methods = digits.default_methods()
    else:
        args.methods = tuple(m.strip() for m in args.method.split(",") if m.strip())
    if not args.methods:
        raise SystemExit("psijax: --method must name at least one method")
    for name in args.methods:
        try:
            digits.method_options(
                parse_method(name),
                args.budget,
                args.steps,
                args.tasks[0].alpha,
                args.flow_map_steps,
            )
        except ValueError as err:
            raise SystemExit(f"psijax: --method/--budget: {err}") from err


def _parse_target(text: str):
    """``"4"`` → 4, ``"left"`` → ``"left"``, ``"0:8:1:6"`` → a box ``(0, 8, 1, 6)``; anything
    else is passed on for :func:`psijax.experiments.digits.make_task` to reject by name."""
    if ":" in text:
        try:
            return tuple(int(p) for p in text.split(":"))
        except ValueError:
            return text
    return int(text) if text.lstrip("-").isdigit() else text


def _add_budget_arguments(parser, seeds_help: str) -> None:
    """``--budget``, ``--steps`` and ``--seeds`` of the equal-NFE studies."""
    parser.add_argument("--budget", type=int, default=1000, help="NFE per run (default: 1000)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    parser.add_argument("--seeds", type=int, default=3, help=f"{seeds_help} (default: 3)")


def _add_digits(commands) -> None:
    dig = commands.add_parser(
        "digits",
        help="reward alignment of the shipped digits flow, seen and held-out metrics",
        description=(
            "Align the shipped FLUX-architecture digits flow with a seen reward and score the "
            "samples with a held-out metric (psijax.experiments.digits): class = log p of a "
            "digit under an MLP, held out: a CNN's accuracy; layout = ink inside a box vs "
            "outside, held out: the IoU of the ink's bounding box. Writes digits_<task>.png, "
            ".md and .json into --out."
        ),
    )
    dig.add_argument("--task", choices=("class", "layout"), default="class")
    dig.add_argument(
        "--target",
        default=None,
        help="comma-separated targets: digits 0-9 (class) or boxes left, right, narrow, "
        "row0:row1:col0:col1 (layout); default: the task's three",
    )
    dig.add_argument(
        "--method",
        default="psi_sampler",
        help="comma-separated methods (psijax.align.SAMPLERS, 'tempered', "
        "'psi_sampler[flow_map]', ...) or 'all' (default: %(default)s)",
    )
    dig.add_argument("--model", default="reflow", help="reflow or flow (default: %(default)s)")
    dig.add_argument("--alpha", type=float, default=None, help="tilt strength (default: task's)")
    _add_budget_arguments(dig, "seeds per target")
    dig.add_argument(
        "--pool-size",
        type=int,
        default=512,
        help="model samples for the unguided and importance-sampled references (default: 512)",
    )
    dig.add_argument(
        "--flow-map-steps",
        type=int,
        default=4,
        help="Euler steps of the flow-map initial predictor (default: 4)",
    )
    dig.add_argument("--out", default="psijax-digits", help="output folder (default: %(default)s)")
    dig.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    dig.set_defaults(run=_digits, check=_check_digits)


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
    _add_budget_arguments(demo, "seeds per method")
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
    _add_digits(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.check(args)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
