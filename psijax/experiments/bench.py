"""Wall-clock timing of the samplers on a toy problem (``psijax bench``).

For each named sampler of :data:`psijax.align.SAMPLERS`, one jitted call at a fixed size: the
compilation time (the first call, minus a run), the median run time after compilation, the
NFE, and the time per particle-step and per model evaluation. Optionally on every device
(``mesh``, :mod:`psijax.smc.sharding`). The problem is the exact six-mode toy of
:mod:`psijax.models.presets` (2D), whose velocity is cheap: the numbers measure the samplers'
own cost, not a network's. ``benchmarks/sampler_overhead.py`` and ``benchmarks/scaling.py``
are the careful versions (interleaved medians, model-pass ratios, size sweeps).
"""

import statistics
import time
from typing import Callable

__all__ = ["DEFAULT_METHODS", "median_seconds", "time_samplers"]

DEFAULT_METHODS = ("psi_sampler", "tds", "das", "fk_steering", "top_k_smc", "dps", "best_of_n")
"""Methods timed by default: Ψ-Sampler and one of each kind of baseline (a constant of a module
that loads JAX only when it times something, so that ``psijax bench --help`` stays fast)."""


def median_seconds(fn: Callable, *args, repeats: int = 10) -> float:
    """Median wall time of ``fn(*args)`` (blocked until ready) over ``repeats`` calls."""
    import jax

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_samplers(
    methods=DEFAULT_METHODS,
    *,
    preset: str = "six_modes_quadratic",
    num_particles: int = 64,
    num_steps: int = 25,
    all_devices: bool = False,
    repeats: int = 10,
    progress: bool = False,
) -> list[dict]:
    """Time each sampler in ``methods`` once compiled; one row per method.

    Rows: ``method``, ``devices``, ``num_particles``, ``num_steps``, ``nfe``, ``compile_s``,
    ``run_s`` (median), ``us_per_particle_step`` and ``us_per_nfe``. Chain-start samplers run
    their default chains (5, the paper's), padded to the device count on a mesh.
    ``ValueError`` for an unknown method or a particle count the devices do not divide.
    """
    import jax

    from psijax import align
    from psijax.experiments.toy import exact_problem
    from psijax.smc.sharding import particle_mesh

    unknown = [m for m in methods if m not in align.SAMPLERS]
    if unknown:
        raise ValueError(f"`methods` must be names of psijax.align.SAMPLERS, got {unknown}.")
    problem = exact_problem(preset)
    mesh = particle_mesh() if all_devices else None
    devices = 1 if mesh is None else mesh.size
    rows = []
    iterator = methods
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(methods, desc="bench", unit="method")
    for name in iterator:
        options = {"num_particles": num_particles, "num_steps": num_steps, "mesh": mesh}
        sampler = jax.jit(lambda key, name=name, o=options: align.SAMPLERS[name](key, problem, **o))
        key = jax.random.key(0)
        start = time.perf_counter()
        result = jax.block_until_ready(sampler(key))
        first = time.perf_counter() - start
        run = median_seconds(sampler, key, repeats=repeats)
        nfe = int(result.nfe)
        rows.append(
            {
                "method": name,
                "devices": devices,
                "num_particles": num_particles,
                "num_steps": num_steps,
                "nfe": nfe,
                "compile_s": max(first - run, 0.0),
                "run_s": run,
                "us_per_particle_step": 1e6 * run / (num_particles * num_steps),
                "us_per_nfe": 1e6 * run / max(nfe, 1),
            }
        )
    return rows
