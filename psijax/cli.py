"""The ``psijax`` command: ``psijax <command> --help`` documents each one.

- ``demo``: a few samplers at equal NFE on one 2D Gaussian-mixture toy with an exact target
  (:mod:`psijax.experiments.toy`), the exact and the reflowed model, about a minute on CPU.
- ``toy``: the same study with every method on every toy preset (``--preset``, ``--methods``).
- ``acceptance``: acceptance of pCN, pCNL, ULA and BlackJAX MALA against dimension on a
  conjugate Gaussian target (:mod:`psijax.experiments.acceptance`).
- ``digits``: reward alignment of the shipped digits flow, class or layout task, with seen and
  held-out metrics (:mod:`psijax.experiments.digits`).
- ``bench``: compile and run times of the samplers (:mod:`psijax.experiments.bench`).
- ``discrete-toy``: the masked-diffusion samplers at equal NFE on the 64 × 64 grid mixtures
  against their exact targets (:mod:`psijax.experiments.discrete_toy`).
- ``discrete-digits``: the masked-diffusion samplers at equal NFE on the learned digits
  models, class and layout tasks, seen rewards and held-out judges
  (:mod:`psijax.experiments.discrete_digits`).
- ``discrete-words``: the same on the learned English-words model, a seen word classifier and a
  held-out dictionary (:mod:`psijax.experiments.discrete_words`).
- ``flux``: a sampler on FLUX from local checkpoints, the images scored by an image reward
  (:mod:`psijax.experiments.flux_images`).
- ``flux-prompts``: FLUX's text encoders on a list of prompts, once, into the file ``flux``
  reads (:mod:`psijax.models.flux.prompts`; the optional ``prompts`` extra).

Every command writes its figure (PNG), its results (JSON, and CSV rows) and, for the studies,
a markdown table into ``--out`` (default ``./psijax-<command>``) and prints their absolute
paths, shows a progress bar unless ``--no-progress``, and takes ``--compilation-cache DIR`` (or
``$PSIJAX_COMPILATION_CACHE``), JAX's persistent compilation cache, so that repeated runs at
the same sizes skip most compilation.

Nothing runs before the arguments are checked: a wrong value, an ``--out`` that cannot be
written, or sizes whose estimated memory (:func:`toy_memory_bytes`,
:func:`digits_memory_bytes`) exceeds the machine's (:func:`available_memory`) exit with one
line ``psijax: --option value: reason``. Building the parser imports no JAX, so ``psijax
--help`` and ``psijax --version`` answer at once.
"""

import argparse
import os
import sys
import tempfile
import time

from psijax.experiments import records

__all__ = ["main", "build_parser", "available_memory", "toy_memory_bytes", "digits_memory_bytes"]

DEMO_METHODS = ("psi_sampler", "smc", "das", "tempered_smc", "dps", "best_of_n")
DEMO_PRESET = "six_modes_mixture"
ACCEPTANCE_DIMS = (16, 256, 4096, 65536)
ACCEPTANCE_STEP_SIZES = (0.5,)


# -- checks before anything runs -----------------------------------------------------------------
def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    from importlib import metadata

    try:
        return metadata.version("psijax")
    except metadata.PackageNotFoundError:
        import psijax

        return getattr(psijax, "__version__", "unknown")


def _check_out(out: str) -> None:
    """``--out`` must be a folder this process can write into, or creatable as one: checked
    (without creating anything) before any computation, a one-line error otherwise."""
    path = os.path.abspath(out)
    existing = path
    while not os.path.exists(existing):  # the nearest existing ancestor gets the new folder
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is a file" if existing == path else f"{existing} is a file"
        raise SystemExit(f"psijax: --out {out}: {what}, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        where = "" if existing == path else f" (into {existing})"
        raise SystemExit(
            f"psijax: --out {out}: cannot write there{where}: {err.strerror}"
        ) from None


def available_memory() -> int | None:
    """This machine's physical memory in bytes (``sysconf``, else ``/proc/meminfo``'s
    ``MemTotal``); ``None`` when neither tells."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return pages * size
    except (AttributeError, OSError, ValueError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


BASE_BYTES = 2 * 1024**3
"""What a study needs before its particles: the interpreter, JAX, XLA's compiled programs and
the fixed-size references (measured peak of the default ``psijax demo``: 0.94 GB; doubled)."""
BYTES_PER_COORDINATE = 4 * 450
"""Bytes per particle coordinate of a toy run: float32 (4 bytes) times a factor of 450 for
the copies XLA keeps alive in one SMC step (positions, means, twist gradients and their
reverse-mode residuals, reward caches, resampling gathers) and the metrics' blocks. Measured
on CPU for the demo's methods: about 900 bytes a coordinate (the 72 GB the demo asked for at
B = 10⁹, 4·10⁷ particles in 2D; 560 bytes from the peak at B = 10⁷); doubled, so the
estimate is conservative."""


def toy_memory_bytes(budget: int, num_steps: int, dim: int, num_settings: int = 1) -> int:
    """A conservative estimate of the peak memory (bytes) of a toy study at ``budget`` NFE over
    ``num_steps`` steps in ``dim`` dimensions: :data:`BASE_BYTES` plus ``N × dim ×``
    :data:`BYTES_PER_COORDINATE` for the largest particle count ``N = ⌊B/T⌋`` any method (and
    the exact reference rows) uses; initial-stage methods run half as many, Top-K's candidates
    and chains fewer coordinates at a time. The settings run one after another, so only the
    kept seed-0 particles of each (``N × dim × 8`` bytes per method, float32 samples and
    float64 weights, ``num_settings`` × 10 methods at most) add up."""
    n = budget // max(num_steps, 1)
    kept = num_settings * 10 * n * (4 * dim + 8)
    return BASE_BYTES + n * dim * BYTES_PER_COORDINATE + kept


DIGITS_BYTES_PER_PARTICLE = 2 * 1024**2
"""Bytes per particle of a digits run: the gradient of the reward through the small FLUX keeps
every block's activations of the batch alive. Measured on CPU (``smc``, one target): a peak of
1.05 GB at the default B = 1000 (40 particles), 1.41 GB at B = 10,000 (400), about 1 MB a
particle; doubled."""


def digits_memory_bytes(budget: int, num_steps: int, pool_size: int) -> int:
    """A rough, conservative peak memory (bytes) of a digits study: :data:`BASE_BYTES` plus
    :data:`DIGITS_BYTES_PER_PARTICLE` for each of the ``⌊B/T⌋`` particles (the most any method
    runs at once) and for each of the ``pool_size`` reference samples."""
    return BASE_BYTES + DIGITS_BYTES_PER_PARTICLE * (budget // max(num_steps, 1) + pool_size)


def _check_memory(needed: int, option: str) -> None:
    """Refuse, in one line, a run whose estimated memory exceeds the machine's."""
    have = available_memory()
    if have is not None and needed > have:
        raise SystemExit(
            f"psijax: {option}: needs about {needed / 1e9:.1f} GB of memory (a conservative "
            f"estimate), this machine has {have / 1e9:.1f} GB; lower it"
        )


class _Formatter(argparse.HelpFormatter):
    """Fills ``{methods}`` (the registry's method names) and ``{samplers}`` (without the
    flow-map variants) in help texts only when a help is shown: building the parser must not
    import JAX, so that ``psijax --help`` is fast."""

    def _expand_help(self, action):
        text = super()._expand_help(action)
        if "{methods}" in text:
            text = text.replace("{methods}", _method_names())
        if "{samplers}" in text:
            text = text.replace("{samplers}", _method_names(variants=False))
        return text


# -- psijax toy / demo ---------------------------------------------------------------------------
def _toy(args: argparse.Namespace) -> int:
    import jax

    from psijax.experiments import toy, toy_report

    methods = _demo_methods(args)
    presets = _presets(args)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    settings = [
        toy.build_setting(
            preset, model, jax.random.key(args.seed), occupancy_size=args.occupancy_size
        )
        for preset in presets
        for model in args.models
        if model in ("exact", "oracle") or preset in toy.REFLOW_DATA
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
    _warn_about(rows)
    summary = toy_report.aggregate(rows)
    figures = []
    for preset in presets:
        figures.append(os.path.join(args.out, f"toy_{preset}.png"))
        group = [s for s in settings if s.preset == preset]
        toy_report.plot(group, particles, methods, args.budget, figures[-1])
    elapsed = time.perf_counter() - start

    table = toy_report.format_markdown(summary, settings, num_steps=args.steps)
    notes = toy_report.format_notes(summary)
    header = (
        f"# psijax {args.command}: reward alignment on {', '.join(presets)} at equal NFE\n\n"
        f"{args.seeds} seed(s); mean ± standard error over seeds; {elapsed:.0f} s on "
        f"{jax.default_backend()}. Metrics against the exact tilted target "
        "(`psijax.experiments.toy`).\n"
    )
    images = "".join(f"\n![{p}](toy_{p}.png)\n" for p in presets)
    paths = {k: os.path.abspath(os.path.join(args.out, f"toy.{k}")) for k in ("md", "json", "csv")}
    with open(paths["md"], "w") as f:
        f.write(header + "\n" + table + "\n\n" + notes + "\n" + images)
    config = {k: getattr(args, k) for k in ("models", "budget", "steps", "seeds")}
    record = {
        "backend": jax.default_backend(),
        "seconds": elapsed,
        "config": config | {"presets": list(presets), "methods": list(methods)},
        "summary": summary,
        "rows": rows,
        "timings": timings,
    }
    records.write_json(record, paths["json"])
    records.write_csv(rows, paths["csv"])
    print("\n" + table + "\n\n" + notes)
    print("\nWrote:")
    for figure in figures:
        print(f"  figure   {os.path.abspath(figure)}")
    print(f"  table    {paths['md']}\n  results  {paths['json']}\n  per seed {paths['csv']}")
    print(f"Took {elapsed:.1f} s on {jax.default_backend()}.")
    return 0


def _warn_about(rows: list) -> None:
    """Print the health warnings of the runs (:func:`psijax.align.diagnose`, the rows'
    ``warnings``) to stderr, once per method with the number of runs that raised them."""
    flagged = {}
    for row in rows:
        if row.get("warnings"):
            flagged.setdefault(row["method"], []).append(row)
    for method, group in flagged.items():
        total = sum(1 for r in rows if r["method"] == method)
        print(
            f"psijax: warning: {method}: {len(group)} of {total} run(s) cannot be trusted "
            "(psijax.align.diagnose); the first:",
            file=sys.stderr,
        )
        for message in group[0]["warnings"].split(" | "):
            print(f"  - {message}", file=sys.stderr)


def _presets(args: argparse.Namespace) -> tuple[str, ...]:
    from psijax.models.presets import TOY_PROBLEMS

    if args.preset.strip() == "all":
        return TOY_PROBLEMS
    return _names(args.preset)


def _demo_methods(args: argparse.Namespace) -> tuple[str, ...]:
    """The methods of ``--methods`` (``all``: every one), validated before anything runs."""
    from psijax.experiments import toy

    if args.methods.strip() == "all":
        return toy.default_methods()
    methods = _names(args.methods)
    if not methods:
        raise SystemExit("psijax: --methods must name at least one method")
    for name in methods:
        try:
            toy.sampler_options(toy.parse_method(name), args.budget, args.steps)
        except ValueError as err:
            raise SystemExit(f"psijax: --methods/--budget: {err}") from err
    return methods


def _names(text: str) -> tuple[str, ...]:
    """The non-empty, stripped items of a comma-separated option value."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


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
    records.write_csv(rows, os.path.join(args.out, "acceptance_vs_dimension.csv"))
    record = {"backend": jax.default_backend(), "seconds": elapsed, "rows": rows}
    records.write_json(record, os.path.join(args.out, "acceptance_vs_dimension.json"))

    print(
        "\nAcceptance vs dimension — conjugate Gaussian target (likelihood on 3 directions), "
        f"{args.chains} chains × {args.steps} steps ({args.burn_in} burn-in); "
        "MALA/ULA at ε = h/2.\n"
    )
    print(acceptance.format_markdown(rows))
    print(f"\nWrote: {os.path.abspath(figure)}, and the .csv and .json beside it")
    print(f"Took {elapsed:.1f} s on {jax.default_backend()}.")
    return 0


# -- psijax discrete-toy -------------------------------------------------------------------------
def _discrete_toy(args: argparse.Namespace) -> int:
    import jax

    from psijax.experiments import discrete_toy as dt

    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    toys = [dt.make_toy(t, r, num_steps=args.steps) for t in args.toys for r in args.rewards]
    rows, first, timings = dt.run_study(
        toys, args.methods, args.particles, seeds=args.seeds, progress=not args.no_progress
    )
    summary = dt.summarize(rows)
    elapsed = time.perf_counter() - start
    base = os.path.join(args.out, "discrete_toy")
    dt.plot(toys, first, max(args.particles), base + ".png")
    records.write_csv(rows, base + ".csv")
    record = {
        "backend": jax.default_backend(),
        "seconds": elapsed,
        "steps": args.steps,
        "summary": summary,
        "timings": timings,
        "rows": rows,
    }
    records.write_json(record, base + ".json")
    table = dt.format_markdown(summary)
    with open(base + ".md", "w") as f:
        f.write(table + "\n")
    print(
        f"\nDiscrete toy study — T = {args.steps} steps, {args.seeds} seeds, equal NFE "
        "(the cost of smc_reverse with N particles); ± one standard error over seeds.\n"
    )
    print(table)
    print(f"\nWrote: {os.path.abspath(base + '.png')}, and the .csv, .json and .md beside it")
    print(f"Took {elapsed:.1f} s on {jax.default_backend()}.")
    return 0


def _check_discrete_toy(args: argparse.Namespace) -> None:
    from psijax.experiments import discrete_toy as dt

    for name in ("steps", "seeds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"psijax: --{name} must be >= 1")
    if any(n < 1 for n in args.particles):
        raise SystemExit("psijax: --particles must be >= 1")
    for option, names, allowed in (
        ("toys", args.toys, dt.TOYS),
        ("rewards", args.rewards, dt.REWARDS),
        ("methods", args.methods, dt.METHODS),
    ):
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise SystemExit(
                f"psijax: --{option} {','.join(unknown)}: choose from {', '.join(allowed)}"
            )


def _add_discrete_toy(commands) -> None:
    methods = "best_of_n,fk_steering,smc_reverse,smc_first_order,smc_first_order_denoiser,exact"
    cmd = commands.add_parser(
        "discrete-toy",
        formatter_class=_Formatter,
        help="masked-diffusion SMC at equal NFE on the 64 × 64 grid mixtures (minutes on CPU)",
        description=(
            "Every discrete sampler at equal NFE on the discretised 2-D Gaussian mixtures, "
            "judged against the exact target of the T-step sampler (TV, mean reward, unique "
            "points, sd(log Ẑ), ESS). Writes discrete_toy.png (the target and each method's "
            "particles), .md, .json and .csv into --out."
        ),
    )
    _add_common_arguments(cmd, "psijax-discrete-toy")
    cmd.add_argument(
        "--toys",
        type=_names,
        default=("gmm1", "ring8"),
        help="comma-separated: gmm1, ring8 (default: %(default)s)",
    )
    cmd.add_argument(
        "--rewards",
        type=_names,
        default=("diagonal",),
        help="comma-separated: center, diagonal (default: %(default)s)",
    )
    cmd.add_argument(
        "--methods",
        type=_names,
        default=tuple(methods.split(",")),
        help=f"comma-separated, of {methods} (default: %(default)s)",
    )
    cmd.add_argument(
        "--particles",
        type=int,
        nargs="+",
        default=[4, 16, 64],
        help="N of smc_reverse that sets each budget (default: %(default)s)",
    )
    cmd.add_argument(
        "--steps", type=int, default=100, help="denoising steps T (default: %(default)s)"
    )
    cmd.add_argument(
        "--seeds", type=int, default=10, help="seeds per method and budget (default: %(default)s)"
    )
    cmd.set_defaults(run=_discrete_toy, check=_check_discrete_toy)


# -- psijax discrete-digits ----------------------------------------------------------------------
def _run_discrete_study(args, domain, tasks, *, steps, title, stem, plot, extra=()) -> int:
    """The study of :mod:`psijax.experiments.discrete_study` on ``domain`` with the options of
    ``args``: a PNG per task (``plot(first, task, β, N_ref, path)``), .md, .json and .csv."""
    import jax

    from psijax.align.discrete import FirstOrder
    from psijax.experiments import discrete_study as ds

    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    betas = {name: args.betas[name] for name in args.tasks}
    variants = {
        f"smc_first_order (clip {c:g})": ("smc_first_order", {"proposal": FirstOrder(clip=c)})
        for c in args.first_order_clip
    }
    rows, first, timings = ds.run_study(
        domain,
        tasks,
        args.methods,
        particles=args.particles,
        betas=betas,
        seeds=args.seeds,
        pool_size=args.pool_size,
        amortised_options={"num_iterations": args.amortised_iterations},
        variants=variants,
        progress=not args.no_progress,
    )
    metrics = (*ds.METRICS, *extra)
    summary = ds.summarize(rows, over_targets=True, metrics=metrics)
    elapsed = time.perf_counter() - start
    base = os.path.join(args.out, stem)
    figures = []
    for name in args.tasks:
        figures.append(f"{base}_{name}.png")
        plot(first, name, betas[name][0], max(args.particles), figures[-1])
    records.write_csv(rows, base + ".csv")
    record = {
        "backend": jax.default_backend(),
        "seconds": elapsed,
        "model": domain.name,
        "steps": steps,
        "betas": betas,
        "summary": summary,
        "per_target": ds.summarize(rows, metrics=metrics),
        "timings": timings,
        "rows": rows,
    }
    records.write_json(record, base + ".json")
    table = ds.format_markdown(summary, extra=extra)
    with open(base + ".md", "w") as f:
        f.write(table + "\n")
    print(
        f"\n{title} — T = {steps} steps, {args.seeds} seeds per target, equal NFE (the cost of "
        "smc_reverse with N_ref particles); ± one standard error over targets × seeds.\n"
    )
    print(table)
    print(f"\nWrote: {', '.join(os.path.abspath(f) for f in figures)}, and the .csv, .json and")
    print(".md beside them")
    print(f"Took {elapsed:.1f} s on {jax.default_backend()}.")
    return 0


def _discrete_digits(args: argparse.Namespace) -> int:
    from psijax.experiments import digits as cd
    from psijax.experiments import discrete_digits as dd

    models = dd.load_models(args.token_set)
    return _run_discrete_study(
        args,
        models,
        [cd.make_task(name, t) for name in args.tasks for t in args.targets[name]],
        steps=dd.NUM_STEPS,
        title=f"Masked-diffusion digits ({args.token_set})",
        stem="discrete_digits",
        plot=lambda *a: dd.plot_grid(models, *a),
    )


def _check_discrete_digits(args: argparse.Namespace) -> None:
    from psijax.experiments import digits as cd
    from psijax.experiments import discrete_digits as dd

    _check_discrete_study(args, cd.TASKS, dd.METHODS)
    targets, betas = dict(dd.DEFAULT_TARGETS), dict(dd.DEFAULT_BETAS)
    for option, value in (("class-targets", args.class_targets), ("boxes", args.boxes)):
        if value is not None:
            targets["class" if option == "class-targets" else "layout"] = value
    for option, value in (("class-betas", args.class_betas), ("layout-betas", args.layout_betas)):
        if value is not None:
            betas[option.split("-")[0]] = _check_betas(option, value)
    for name in args.tasks:
        for target in targets[name]:
            try:
                cd.make_task(name, target)
            except ValueError as error:
                option = "class-targets" if name == "class" else "boxes"
                raise SystemExit(f"psijax: --{option} {target}: {error}") from None
    args.targets, args.betas = targets, betas


def _add_discrete_digits(commands) -> None:
    methods = "best_of_n,fk_steering,smc_reverse,smc_first_order,smc_amortised"
    cmd = commands.add_parser(
        "discrete-digits",
        formatter_class=_Formatter,
        help="masked-diffusion SMC on the learned digits, seen and held-out (minutes on CPU)",
        description=(
            "Every discrete sampler at equal NFE on a shipped masked-diffusion digits model: the "
            "class task (seen: the MLP's log p(class); held-out: the CNN) and the layout task "
            "(seen: ink inside a box; held-out: IoU), with realism (nearest-data distance), the "
            "unguided model and the importance-weighted target as references. The amortised "
            "proposal is trained per target first (its time is reported apart). Writes "
            "discrete_digits_<task>.png (the best particles per method and target), .md, .json "
            "and .csv into --out."
        ),
    )
    _add_common_arguments(cmd, "psijax-discrete-digits")
    cmd.add_argument(
        "--token-set",
        choices=("binary", "grey"),
        default="binary",
        help="binary (V = 2) or grey (V = 17) digits (default: %(default)s)",
    )
    cmd.add_argument(
        "--tasks",
        type=_names,
        default=("class", "layout"),
        help="comma-separated: class, layout (default: %(default)s)",
    )
    cmd.add_argument(
        "--class-targets",
        type=_names,
        default=None,
        help="comma-separated digits (default: 0,4,8)",
    )
    cmd.add_argument(
        "--boxes",
        type=_names,
        default=None,
        help="comma-separated boxes: left, right, narrow (default: all three)",
    )
    cmd.add_argument(
        "--class-betas",
        type=float,
        nargs="+",
        default=None,
        help="β of the class task (default: 1 0.1)",
    )
    cmd.add_argument(
        "--layout-betas",
        type=float,
        nargs="+",
        default=None,
        help="β of the layout task (default: 0.05 0.02)",
    )
    _add_study_arguments(cmd, methods)
    cmd.set_defaults(run=_discrete_digits, check=_check_discrete_digits)


# -- psijax discrete-words ----------------------------------------------------------------------
def _discrete_words(args: argparse.Namespace) -> int:
    from psijax.experiments import discrete_words as dw

    models = dw.load_models()
    tasks = [dw.make_task(name, t) for name in args.tasks for t in args.targets[name]]
    return _run_discrete_study(
        args,
        models,
        tasks,
        steps=dw.NUM_STEPS,
        title="Masked-diffusion words",
        stem="discrete_words",
        plot=lambda *a: dw.plot_grid(models, *a),
        extra=("novel",),
    )


def _check_discrete_study(args: argparse.Namespace, tasks, methods) -> None:
    """The options every discrete study shares: counts, pool size, tasks and methods."""
    for name in ("seeds", "pool_size", "amortised_iterations"):
        if getattr(args, name) < 1:
            raise SystemExit(f"psijax: --{name.replace('_', '-')} must be >= 1")
    if any(n < 1 for n in args.particles):
        raise SystemExit("psijax: --particles must be >= 1")
    if args.first_order_clip is None:
        args.first_order_clip = args.default_clips
    if any(not (c > 0 and c < float("inf")) for c in args.first_order_clip):
        raise SystemExit(
            f"psijax: --first-order-clip {args.first_order_clip}: each C must be finite and > 0"
        )
    if args.pool_size < args.seeds * min(args.particles):
        raise SystemExit(
            f"psijax: --pool-size {args.pool_size}: must be >= seeds × min(particles) = "
            f"{args.seeds * min(args.particles)}"
        )
    for option, names, allowed in (
        ("tasks", args.tasks, tasks),
        ("methods", args.methods, methods),
    ):
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise SystemExit(
                f"psijax: --{option} {','.join(unknown)}: choose from {', '.join(allowed)}"
            )


def _check_betas(option: str, value) -> tuple:
    if not value or any(not (b > 0 and b < float("inf")) for b in value):
        raise SystemExit(f"psijax: --{option} {value}: each β must be finite and > 0")
    return tuple(value)


def _check_discrete_words(args: argparse.Namespace) -> None:
    from psijax.experiments import discrete_study as ds
    from psijax.experiments import discrete_words as dw

    _check_discrete_study(args, dw.TASKS, ds.METHODS)
    targets, betas = dict(dw.DEFAULT_TARGETS), dict(dw.DEFAULT_BETAS)
    if args.letters is not None:
        targets["letter"] = args.letters
    for option, value in (("word-betas", args.word_betas), ("letter-betas", args.letter_betas)):
        if value is not None:
            betas[option.split("-")[0]] = _check_betas(option, value)
    for target in targets["letter"]:
        try:
            dw.make_task("letter", target)
        except ValueError as error:
            raise SystemExit(f"psijax: --letters {target}: {error}") from None
    args.targets, args.betas = targets, betas


def _add_study_arguments(cmd, methods: str, clips: tuple = ()) -> None:
    """--methods, --first-order-clip, --particles, --seeds, --pool-size,
    --amortised-iterations."""
    cmd.add_argument(
        "--methods",
        type=_names,
        default=tuple(methods.split(",")),
        help=f"comma-separated, of {methods} (default: %(default)s)",
    )
    shown = " ".join(f"{c:g}" for c in clips) or "none"
    cmd.add_argument(
        "--first-order-clip",
        type=float,
        nargs="*",
        default=None,
        metavar="C",
        help="also run smc_first_order with its tilt clipped to ±C nats, once per C, labelled "
        f"'smc_first_order (clip C)'; no value: none (default: {shown})",
    )
    cmd.set_defaults(default_clips=list(clips))
    cmd.add_argument(
        "--particles",
        type=int,
        nargs="+",
        default=[4, 16],
        help="N_ref of smc_reverse that sets each budget (default: %(default)s)",
    )
    cmd.add_argument(
        "--seeds", type=int, default=5, help="seeds per target and budget (default: %(default)s)"
    )
    cmd.add_argument(
        "--pool-size",
        type=int,
        default=4096,
        help="unguided samples for the references (default: %(default)s)",
    )
    cmd.add_argument(
        "--amortised-iterations",
        type=int,
        default=60,
        help="training steps of each amortised proposal (default: %(default)s)",
    )


def _add_discrete_words(commands) -> None:
    cmd = commands.add_parser(
        "discrete-words",
        formatter_class=_Formatter,
        help="masked-diffusion SMC on the learned English-words model (minutes on CPU)",
        description=(
            "Every discrete sampler at equal NFE on the shipped masked-diffusion words model "
            "(12 characters, trained on the gcide list): the word task (seen: a classifier's "
            "log p(word); held-out: the word is in the web2 list, which no model saw) and the "
            "letter task (the same, for words containing a letter), with realism (edit "
            "distance to the nearest training word), the share of novel real words, and the "
            "unguided model and the importance-weighted target as references. Needs the "
            "english-words package (pip install 'psijax[words]'). Writes "
            "discrete_words_<task>.png (the best sequences per method and target), .md, .json "
            "and .csv into --out."
        ),
    )
    _add_common_arguments(cmd, "psijax-discrete-words")
    cmd.add_argument(
        "--tasks",
        type=_names,
        default=("word", "letter"),
        help="comma-separated: word, letter (default: %(default)s)",
    )
    cmd.add_argument(
        "--letters", type=_names, default=None, help="comma-separated letters (default: q,k,w)"
    )
    cmd.add_argument(
        "--word-betas",
        type=float,
        nargs="+",
        default=None,
        help="β of the word task (default: 1 0.25)",
    )
    cmd.add_argument(
        "--letter-betas",
        type=float,
        nargs="+",
        default=None,
        help="β of the letter task (default: 1 0.25)",
    )
    # the sharp word classifier collapses the unclipped tilt (docs/algorithms.md §10.11)
    _add_study_arguments(
        cmd, "best_of_n,fk_steering,smc_reverse,smc_first_order,smc_amortised", clips=(3.0,)
    )
    cmd.set_defaults(run=_discrete_words, check=_check_discrete_words)


# -- psijax bench -------------------------------------------------------------------------------
def _bench(args: argparse.Namespace) -> int:
    import jax

    from psijax.experiments import bench

    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    rows = bench.time_samplers(
        _names(args.methods),
        num_particles=args.particles,
        num_steps=args.steps,
        all_devices=args.all_devices,
        repeats=args.repeats,
        progress=not args.no_progress,
    )
    elapsed = time.perf_counter() - start
    records.write_csv(rows, os.path.join(args.out, "bench.csv"))
    record = {"backend": jax.default_backend(), "devices": jax.device_count(), "rows": rows}
    records.write_json(record | {"seconds": elapsed}, os.path.join(args.out, "bench.json"))
    figure = os.path.join(args.out, "bench.png")
    _plot_bench(rows, figure)
    lines = [
        f"\nSamplers on the 2D toy, N = {args.particles}, T = {args.steps}, "
        f"{rows[0]['devices']} device(s), {jax.default_backend()}:\n",
        "| method | NFE | NFE / particle-step | compile (s) | run (ms) | µs / particle-step "
        "| µs / NFE |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['method']} | {r['nfe']} | {r['nfe'] / (r['num_particles'] * r['num_steps']):.2f} "
        f"| {r['compile_s']:.1f} | {1e3 * r['run_s']:.2f} | {r['us_per_particle_step']:.2f} "
        f"| {r['us_per_nfe']:.2f} |"
        for r in rows
    ]
    lines.append(
        "\nThe methods spend different NFE on the same N × T (an initial stage's chains or "
        "candidates, guidance's extra evaluations): µs / particle-step is the cost of a run of "
        "N particles over T steps, µs / NFE the cost per model evaluation."
    )
    print("\n".join(lines))
    print(f"\nWrote: {os.path.abspath(figure)}, bench.json, bench.csv\nTook {elapsed:.1f} s.")
    return 0


def _plot_bench(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["method"] for r in rows]
    ax.barh(names, [1e3 * r["run_s"] for r in rows], color="tab:blue", label="run (median)")
    ax.set_xlabel("ms per call")
    ax.invert_yaxis()
    ax.set_title(f"N = {rows[0]['num_particles']}, T = {rows[0]['num_steps']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    _warn_about(rows)
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
    records.write_json(record, os.path.join(args.out, f"digits_{args.task}.json"))
    records.write_csv(rows, os.path.join(args.out, f"digits_{args.task}.csv"))
    print("\n" + table)
    print(f"\nWrote: {os.path.abspath(figure)}, and digits_{args.task}.md, .json, .csv beside it")
    print(f"Took {elapsed:.1f} s on {jax.default_backend()}.")
    return 0


def _check_digits(args: argparse.Namespace) -> None:
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        from psijax.models.digits import DATA_NEEDS_SKLEARN

        raise SystemExit(f"psijax digits: {DATA_NEEDS_SKLEARN}")
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
    needed = digits_memory_bytes(args.budget, args.steps, args.pool_size)
    _check_memory(needed, f"--budget {args.budget}/--pool-size {args.pool_size}")
    if args.pool_size < args.seeds * (args.budget // args.steps):
        raise SystemExit(
            "psijax: --pool-size must be >= seeds × budget/steps (the unguided reference chunks)"
        )
    if args.method.strip() == "all":
        args.methods = digits.default_methods()
    else:
        args.methods = _names(args.method)
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
    parser.add_argument(
        "--budget", type=int, default=1000, help="NFE per run (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=25, help="denoising steps (default: %(default)s)"
    )
    parser.add_argument("--seeds", type=int, default=3, help=f"{seeds_help} (default: %(default)s)")


def _add_digits(commands) -> None:
    dig = commands.add_parser(
        "digits",
        formatter_class=_Formatter,
        help="reward alignment of the shipped digits flow, seen and held-out metrics",
        description=(
            "Align the shipped FLUX-architecture digits flow with a seen reward and score the "
            "samples with a held-out metric (psijax.experiments.digits): class = log p of a "
            "digit under an MLP, held out: a CNN's accuracy; layout = ink inside a box vs "
            "outside, held out: the IoU of the ink's bounding box. Writes digits_<task>.png, "
            ".md, .json and .csv into --out."
        ),
    )
    dig.add_argument(
        "--task",
        choices=("class", "layout"),
        default="class",
        help="class: a digit's log-probability; layout: ink inside a box (default: %(default)s)",
    )
    dig.add_argument(
        "--target",
        default=None,
        help="comma-separated targets: digits 0-9 (class) or boxes left, right, narrow, "
        "row0:row1:col0:col1 (layout) (default: the task's three)",
    )
    dig.add_argument(
        "--method",
        default="psi_sampler",
        help="comma-separated methods ({methods}) or 'all' (default: %(default)s)",
    )
    dig.add_argument("--model", default="reflow", help="reflow or flow (default: %(default)s)")
    dig.add_argument(
        "--alpha", type=float, default=None, help="tilt strength (default: the task's)"
    )
    _add_budget_arguments(dig, "seeds per target")
    dig.add_argument(
        "--pool-size",
        type=int,
        default=512,
        help="model samples for the unguided and importance-sampled references "
        "(default: %(default)s)",
    )
    dig.add_argument(
        "--flow-map-steps",
        type=int,
        default=4,
        help="Euler steps of the flow-map initial predictor (default: %(default)s)",
    )
    _add_common_arguments(dig, "psijax-digits")
    dig.set_defaults(run=_digits, check=_check_digits)


# -- parser --------------------------------------------------------------------------------------
def _method_names(variants: bool = True) -> str:
    """The registry's samplers (:data:`psijax.align.SAMPLERS`), and the '[flow_map]' variants."""
    from psijax.experiments import methods

    names = list(methods.default_methods(flow_map=False))
    if variants:
        names += methods.flow_map_variants()
    return ", ".join(names)


def _add_toy(commands, name: str, presets: str, methods: str, help_text: str) -> None:
    toy = commands.add_parser(
        name,
        help=help_text,
        formatter_class=_Formatter,
        description=(
            "Ψ-Sampler and the baselines at equal NFE on 2D Gaussian-mixture toys with exact "
            "tilted targets, with the exact and the reflowed model. Prints the tables and "
            "writes toy_<preset>.png, toy.md, toy.json and toy.csv (per-seed rows) into --out."
        ),
    )
    _add_common_arguments(toy, f"psijax-{name}")
    toy.add_argument(
        "--preset",
        default=presets,
        help="comma-separated names of psijax.models.presets.TOY_PROBLEMS, or 'all'; the "
        "reflow and distilled models exist for six_modes_mixture, six_modes_quadratic and "
        "unequal_rare_modes (with 'all', the others run the exact and oracle models only) "
        "(default: %(default)s)",
    )
    toy.add_argument(
        "--models",
        default="exact,reflow",
        type=lambda text: list(_names(text)),
        help="comma-separated: exact, reflow, distilled (the re-noising kernel on a learned "
        "distilled model), oracle (the same on the exact flow map; an ODE solve per "
        "evaluation) (default: %(default)s)",
    )
    toy.add_argument(
        "--methods",
        default=methods,
        help="comma-separated methods ({methods}) or 'all' (default: %(default)s)",
    )
    _add_budget_arguments(toy, "seeds per method")
    toy.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the exact reference draws (default: %(default)s)",
    )
    toy.add_argument(
        "--occupancy-size",
        type=int,
        default=50_000,
        help="exact draws for the target's mode occupancy (default: %(default)s)",
    )
    toy.set_defaults(run=_toy, check=_check_toy)


def _add_bench(commands) -> None:
    from psijax.experiments.bench import DEFAULT_METHODS

    bench = commands.add_parser(
        "bench",
        formatter_class=_Formatter,
        help="time the samplers (compile and median run) on the 2D toy",
        description=(
            "Compile time, median run time, NFE and time per particle-step of each sampler on "
            "the exact 2D six-mode toy (a cheap model: the samplers' own cost). Writes "
            "bench.json, bench.csv and bench.png into --out."
        ),
    )
    _add_common_arguments(bench, "psijax-bench")
    bench.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated samplers ({samplers}) (default: %(default)s)",
    )
    bench.add_argument("--particles", type=int, default=64, help="N (default: %(default)s)")
    bench.add_argument("--steps", type=int, default=25, help="T (default: %(default)s)")
    bench.add_argument(
        "--repeats", type=int, default=10, help="timed calls per method (default: %(default)s)"
    )
    bench.add_argument(
        "--all-devices",
        action="store_true",
        help="shard the particles over every device (psijax.smc.particle_mesh())",
    )
    bench.set_defaults(run=_bench, check=_check_bench)


# -- psijax flux / flux-prompts ------------------------------------------------------------------
def _add_flux(commands) -> None:
    cmd = commands.add_parser(
        "flux",
        formatter_class=_Formatter,
        help="align FLUX images with an image reward from local checkpoints (a GPU job)",
        description=(
            "Ψ-Sampler (or any sampler) on FLUX from local files: the transformer, its "
            "autoencoder, a prompt-embeddings file (psijax flux-prompts), and CLIP (with LAION's "
            "aesthetic head, or the CLIP score). FLUX's time grid, bf16 and remat by default. "
            "Writes flux_<i>.png (the final particles, best first, with rewards and weights), "
            "flux.json (every number) and flux.csv (one row per particle) into --out."
        ),
    )
    _add_common_arguments(cmd, "psijax-flux")
    required = "(default: %(default)s; required)"
    cmd.add_argument("--transformer", required=True, help=f"FLUX checkpoint {required}")
    cmd.add_argument(
        "--autoencoder", required=True, help=f"ae.safetensors or a vae/ folder {required}"
    )
    cmd.add_argument("--prompts", required=True, help=f"prompt-embeddings file {required}")
    cmd.add_argument("--clip", required=True, help=f"CLIP model folder {required}")
    cmd.add_argument(
        "--prompt",
        nargs="+",
        default=None,
        help="prompts (text or index) of the file to run (default: %(default)s: all)",
    )
    cmd.add_argument(
        "--reward",
        choices=("aesthetic", "clip_score"),
        default="aesthetic",
        help="the image reward (default: %(default)s)",
    )
    cmd.add_argument(
        "--aesthetic-head",
        default=None,
        help="LAION's head (.pth or .safetensors) (default: %(default)s)",
    )
    cmd.add_argument(
        "--method",
        default="psi_sampler",
        help="a sampler of psijax.align.SAMPLERS (default: %(default)s)",
    )
    cmd.add_argument(
        "--alpha", type=float, default=0.1, help="reward strength α (default: %(default)s)"
    )
    cmd.add_argument(
        "--nfe-budget", type=int, default=1000, help="NFE per prompt (default: %(default)s)"
    )
    cmd.add_argument(
        "--particles",
        type=int,
        default=None,
        help="N instead of --nfe-budget (default: %(default)s)",
    )
    cmd.add_argument("--steps", type=int, default=25, help="denoising steps (default: %(default)s)")
    cmd.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[512, 512],
        metavar=("H", "W"),
        help="image height and width in pixels (default: %(default)s)",
    )
    cmd.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="compute dtype of the models (default: %(default)s)",
    )
    cmd.add_argument("--no-remat", action="store_true", help="keep activations (more memory)")
    cmd.add_argument(
        "--particle-chunk",
        type=int,
        default=None,
        help="evaluate at most this many particles at a time (default: %(default)s: all)",
    )
    cmd.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="FLUX-dev's guidance scale (default: %(default)s: schnell)",
    )
    cmd.add_argument(
        "--transition",
        choices=("auto", "renoising", "sde"),
        default="auto",
        help="the kernel between denoising steps: re-noise the one-step prediction (exact for "
        "a timestep-distilled model such as schnell) or the stochastic sampler (a flow such as "
        "dev); auto picks by the model's guidance embedding (default: %(default)s)",
    )
    cmd.add_argument("--seed", type=int, default=0, help="PRNG seed (default: %(default)s)")
    cmd.add_argument(
        "--axes-dim",
        type=int,
        nargs=3,
        default=None,
        help="the transformer's RoPE widths if its head dim is not 128 (default: %(default)s)",
    )
    cmd.add_argument(
        "--all-devices",
        action="store_true",
        help="shard the particles over every device (psijax.smc.particle_mesh())",
    )
    cmd.set_defaults(run=_flux, check=_check_flux)


def _check_flux(args: argparse.Namespace) -> None:
    for name in ("transformer", "autoencoder", "prompts", "clip", "aesthetic_head"):
        path = getattr(args, name)
        if path is not None and not os.path.exists(path):
            raise SystemExit(f"psijax: --{name.replace('_', '-')} {path}: no such file or folder")
    if args.reward == "aesthetic" and args.aesthetic_head is None:
        raise SystemExit("psijax: --reward aesthetic needs --aesthetic-head (LAION's head file)")
    from psijax.align import SAMPLERS

    if args.method not in SAMPLERS:
        raise SystemExit(f"psijax: --method {args.method}: choose from {', '.join(SAMPLERS)}")
    if not args.alpha > 0:
        raise SystemExit("psijax: --alpha must be > 0")
    for name in ("nfe_budget", "steps", "particles", "particle_chunk"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"psijax: --{name.replace('_', '-')} must be >= 1")
    if any(s < 16 or s % 16 for s in args.size):
        raise SystemExit(f"psijax: --size {args.size[0]} {args.size[1]}: multiples of 16 please")


def _flux(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from psijax.experiments import flux_images as fi

    os.makedirs(args.out, exist_ok=True)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    start = time.perf_counter()
    setup = fi.load(
        args.transformer,
        args.autoencoder,
        args.prompts,
        args.reward,
        clip=args.clip,
        aesthetic_head=args.aesthetic_head,
        dtype=dtype,
        axes_dim=None if args.axes_dim is None else tuple(args.axes_dim),
    )
    load_s = time.perf_counter() - start
    prompts = args.prompt or list(setup.embeddings.prompts)
    prompts = [int(p) if p.isdigit() else p for p in prompts] if args.prompt else prompts
    options = fi.ImageOptions(
        height=args.size[0],
        width=args.size[1],
        dtype=dtype,
        remat=not args.no_remat,
        particle_chunk=args.particle_chunk,
        guidance=args.guidance,
        transition=args.transition,
    )
    mesh = None
    if args.all_devices:
        from psijax.smc import particle_mesh

        mesh = particle_mesh()
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc=f"flux {args.method}", unit="prompt")
    runs, rows = [], []
    for i, prompt in enumerate(prompts):
        text = setup.embeddings.prompts[setup.embeddings.index(prompt)]
        out = fi.run(
            jax.random.key(args.seed),
            setup,
            prompt,
            method=args.method,
            alpha=args.alpha,
            nfe_budget=args.nfe_budget,
            num_particles=args.particles,
            num_steps=args.steps,
            options=options,
            mesh=mesh,
        )
        result, order = out["result"], out["order"]
        rewards = np.asarray(result.rewards, np.float64)
        log_w = np.asarray(result.log_weights, np.float64)
        figure = os.path.join(args.out, f"flux_{i}.png")
        fi.save_grid(
            out["images"][order],
            rewards[order],
            log_w[order],
            figure,
            title=f"{args.method}, {args.reward}: {text}",
        )
        runs.append(
            {
                "prompt": text,
                "figure": os.path.abspath(figure),
                "nfe": int(result.nfe),
                "log_normalizer": float(result.log_normalizer),
                "ess": float(
                    np.exp(2 * np.logaddexp.reduce(log_w) - np.logaddexp.reduce(2 * log_w))
                )
                if np.isfinite(log_w).any()
                else 0.0,
                "rewards": rewards.tolist(),
                "log_weights": log_w.tolist(),
                "best_first": order.tolist(),
                "seconds": out["seconds"],
            }
        )
        rows += [
            {
                "prompt": text,
                "particle": int(j),
                "rank": int(r),
                "reward": rewards[j],
                "log_weight": log_w[j],
            }
            for r, j in enumerate(order)
        ]
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    config = {
        k: getattr(args, k)
        for k in (
            "transformer",
            "autoencoder",
            "prompts",
            "clip",
            "aesthetic_head",
            "reward",
            "method",
            "alpha",
            "nfe_budget",
            "particles",
            "steps",
            "size",
            "dtype",
            "no_remat",
            "particle_chunk",
            "guidance",
            "transition",
            "seed",
            "all_devices",
        )
    }
    record = {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "transition": fi.transition(setup, options),
        "load_seconds": load_s,
        "seconds": time.perf_counter() - start,
        "config": config,
        "runs": runs,
    }
    records.write_json(record, os.path.join(args.out, "flux.json"))
    records.write_csv(rows, os.path.join(args.out, "flux.csv"))
    for name in [r["figure"] for r in runs] + ["flux.json", "flux.csv"]:
        print(os.path.abspath(os.path.join(args.out, name)))
    return 0


def _add_flux_prompts(commands) -> None:
    cmd = commands.add_parser(
        "flux-prompts",
        formatter_class=_Formatter,
        help="run FLUX's text encoders on prompts once, into the file psijax flux reads",
        description=(
            "T5 and CLIP-L on each prompt as diffusers' FluxPipeline.encode_prompt runs them "
            "(needs pip install 'psijax[prompts]'); optionally a full CLIP model's projected text "
            "embeddings for the CLIP-score reward. Writes prompts.safetensors into --out."
        ),
    )
    _add_common_arguments(cmd, "psijax-flux-prompts")
    cmd.add_argument("prompts", nargs="+", help="the prompts (default: %(default)s; required)")
    cmd.add_argument(
        "--pipeline",
        default=None,
        help="a FLUX pipeline folder with text_encoder(_2)/ and tokenizer(_2)/ "
        "(default: %(default)s: give --t5 and --clip)",
    )
    cmd.add_argument("--t5", default=None, help="T5 encoder folder (default: %(default)s)")
    cmd.add_argument("--clip", default=None, help="CLIP-L text model folder (default: %(default)s)")
    cmd.add_argument(
        "--clip-score-model",
        default=None,
        help="a full CLIP model folder for the CLIP-score reward (default: %(default)s)",
    )
    cmd.add_argument(
        "--max-length",
        type=int,
        default=512,
        help="T5 tokens: 512 for dev, 256 for schnell (default: %(default)s)",
    )
    cmd.add_argument(
        "--device", default="cpu", help="torch device of the encoders (default: %(default)s)"
    )
    cmd.set_defaults(run=_flux_prompts, check=_check_flux_prompts)


def _check_flux_prompts(args: argparse.Namespace) -> None:
    if (args.pipeline is None) == (args.t5 is None and args.clip is None):
        raise SystemExit("psijax: give --pipeline, or --t5 and --clip")
    if args.pipeline is None and (args.t5 is None or args.clip is None):
        raise SystemExit("psijax: --t5 and --clip go together")
    for name in ("pipeline", "t5", "clip", "clip_score_model"):
        path = getattr(args, name)
        if path is not None and not os.path.isdir(path):
            raise SystemExit(f"psijax: --{name.replace('_', '-')} {path}: no such folder")
    if args.max_length < 1:
        raise SystemExit("psijax: --max-length must be >= 1")
    if len(set(args.prompts)) != len(args.prompts):
        raise SystemExit("psijax: a prompt is given twice")


def _flux_prompts(args: argparse.Namespace) -> int:
    from psijax.models.flux import prompts as fp

    os.makedirs(args.out, exist_ok=True)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(args.prompts), desc="text encoders", unit="prompt")

    def progress(done, total):
        if bar is not None:
            bar.update(done - bar.n)

    emb = fp.encode_prompts(
        args.prompts,
        pipeline=args.pipeline,
        t5=args.t5,
        clip=args.clip,
        clip_score_model=args.clip_score_model,
        max_length=args.max_length,
        device=args.device,
        progress=progress,
    )
    if bar is not None:
        bar.close()
    path = fp.save_prompt_embeddings(
        os.path.join(args.out, "prompts.safetensors"),
        emb.prompts,
        emb.t5,
        emb.clip_pooled,
        emb.clip_text_embeds,
        encoders=emb.encoders,
    )
    print(os.path.abspath(path))
    return 0


def _add_common_arguments(parser, out: str) -> None:
    """--out, --no-progress and --compilation-cache, on every command."""
    parser.add_argument(
        "--out",
        default=out,
        help="output folder, created if missing (default: ./%(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR",
        default=os.environ.get("PSIJAX_COMPILATION_CACHE"),
        help="persistent XLA compilation cache folder (jax_compilation_cache_dir): a second "
        "run with the same sizes skips most compilation (default: %(default)s, from "
        "$PSIJAX_COMPILATION_CACHE; None: off)",
    )


def _add_acceptance(commands) -> None:
    acc = commands.add_parser(
        "acceptance",
        formatter_class=_Formatter,
        help="pCNL vs pCN vs MALA acceptance across dimensions (about a minute on CPU)",
        description=(
            "Acceptance of pCN, pCNL, ULA (n/a) and BlackJAX MALA vs dimension on a conjugate "
            "Gaussian target. Writes a PNG, a CSV and a JSON into --out."
        ),
    )
    _add_common_arguments(acc, "psijax-acceptance")
    acc.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=list(ACCEPTANCE_DIMS),
        help="dimensions d of the target (default: %(default)s)",
    )
    acc.add_argument(
        "--step-sizes",
        type=float,
        nargs="+",
        default=list(ACCEPTANCE_STEP_SIZES),
        help="pCN/pCNL step sizes h in (0, 4); MALA and ULA run at ε = h/2 (default: %(default)s)",
    )
    acc.add_argument(
        "--chains", type=int, default=5, help="chains per sampler (default: %(default)s)"
    )
    acc.add_argument(
        "--steps", type=int, default=100, help="steps per chain (default: %(default)s)"
    )
    acc.add_argument(
        "--burn-in",
        type=int,
        default=25,
        help="first steps left out of the acceptance (default: %(default)s)",
    )
    acc.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    acc.set_defaults(run=_acceptance, check=_check_acceptance)


def _check_toy(args: argparse.Namespace) -> None:
    for name in ("budget", "steps", "seeds", "occupancy_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"psijax: --{name.replace('_', '-')} must be >= 1")
    from psijax.experiments.toy import MODELS, REFLOW_DATA

    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        raise SystemExit(
            f"psijax: --models must be a subset of {','.join(MODELS)}, got {bad or 'none'}"
        )
    from psijax.models.presets import TOY_PROBLEMS

    presets = _presets(args)
    unknown = [p for p in presets if p not in TOY_PROBLEMS]
    if unknown or not presets:
        raise SystemExit(
            f"psijax: --preset must name some of {', '.join(TOY_PROBLEMS)} or 'all', "
            f"got {unknown or 'none'}"
        )
    learned = [m for m in args.models if m in ("reflow", "distilled")]
    if learned and args.preset.strip() != "all":
        missing = [p for p in presets if p not in REFLOW_DATA]
        if missing:
            raise SystemExit(
                f"psijax: --preset {', '.join(missing)} has no {learned[0]} model; use "
                f"{', '.join(REFLOW_DATA)} or --models exact (or oracle)"
            )
    _demo_methods(args)  # checks --methods against --budget and --steps
    from psijax.models.presets import toy_problem

    dim = max(toy_problem(p).data.dim for p in presets)
    settings = len(presets) * len(args.models)
    _check_memory(
        toy_memory_bytes(args.budget, args.steps, dim, settings), f"--budget {args.budget}"
    )


def _check_bench(args: argparse.Namespace) -> None:
    from psijax.align import SAMPLERS

    for name in ("particles", "steps", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"psijax: --{name} must be >= 1")
    unknown = [m for m in _names(args.methods) if m not in SAMPLERS]
    if unknown:
        raise SystemExit(f"psijax: --methods must name samplers of {', '.join(SAMPLERS)}")
    needed = toy_memory_bytes(args.particles * args.steps, args.steps, 2)
    _check_memory(needed, f"--particles {args.particles}")
    if args.all_devices:
        from psijax.smc import particle_mesh
        from psijax.smc.sharding import check_divisible

        try:
            check_divisible(particle_mesh(), args.particles, "--particles", " with --all-devices")
        except ValueError as err:
            raise SystemExit(f"psijax: {err}") from err


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
    # the chains keep a few copies of their states at a time: as conservative as the toy's
    needed = BASE_BYTES + args.chains * max(args.dims) * BYTES_PER_COORDINATE
    _check_memory(needed, f"--dims {max(args.dims)}")


def build_parser() -> argparse.ArgumentParser:
    """The ``psijax`` argument parser: one sub-command per study (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="psijax", description="Inference-time reward alignment in JAX (Ψ-Sampler)."
    )
    parser.add_argument(
        "--version", action="version", version=f"psijax {_version()}", help="show the version"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_toy(
        commands,
        "demo",
        DEMO_PRESET,
        ",".join(DEMO_METHODS),
        "a few samplers at equal NFE on one 2D toy with an exact target (about a minute on CPU)",
    )
    _add_toy(
        commands,
        "toy",
        "all",
        "all",
        "the toy study: every sampler at equal NFE on every 2D toy (tens of minutes on CPU)",
    )
    _add_acceptance(commands)
    _add_digits(commands)
    _add_bench(commands)
    _add_discrete_toy(commands)
    _add_discrete_digits(commands)
    _add_discrete_words(commands)
    _add_flux(commands)
    _add_flux_prompts(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``psijax <command> [options]`` (``argv``: the arguments, default ``sys.argv[1:]``);
    the return value is the exit status."""
    args = build_parser().parse_args(argv)
    _check_out(args.out)
    args.check(args)
    if args.compilation_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", os.path.abspath(args.compilation_cache))
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
