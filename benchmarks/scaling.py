"""Scaling: cost per particle-step of the SMC against the number of particles, the dimension and
the number of devices.

The sampler is TDS (:func:`psijax.align.tds`: twisted proposal, systematic resampling at every
step, so every step moves particles across devices) on exact Gaussian-mixture models, T = 10
steps, jitted, median of interleaved calls after compilation. The cost per particle-step is
``time / (N·T)``.

* **N sweep**: the 2D six-mode toy (``six_modes_quadratic``), ``N = 2^4 … 2^16``;
* **dimension sweep**: isotropic Gaussian data ``N(1, s²I)`` in ``d`` dimensions with its exact
  velocity and the reward ``−½‖x0‖²`` (both ``O(d)`` per particle, so the sampler's own
  arithmetic shows),
  ``N = 256``, ``d = 2, 8, …, 2^13``;
* **devices**: each point on one device (``mesh=None``) and on 8 devices
  (``mesh=psijax.smc.particle_mesh()``). The script asks XLA for 8 host-platform devices
  before JAX starts (``--xla_force_host_platform_device_count=8``) unless ``XLA_FLAGS`` already
  sets a count. On a CPU machine the 8 devices are emulated and share the host's cores, so the
  8-device column measures the partitioning's overhead, not a speed-up; on 8 accelerators the
  same script measures the real one.

How the cost grows is fitted as a power law ``time ∝ N^a`` (``d^a``) over the upper half of each
sweep and reported with the tables.

Writes benchmarks/results/scaling.{csv,md,png}.
Usage: python benchmarks/scaling.py [--quick] [--max-log2n 16] [--steps 10]
"""

import argparse
import os
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved_median_times, machine, write_csv, write_text  # noqa: E402

from psijax import align  # noqa: E402
from psijax.experiments.toy import exact_problem  # noqa: E402
from psijax.smc import particle_mesh  # noqa: E402


def isotropic(dim: int, scale: float = 0.5) -> align.RewardProblem:
    """Data ``N(1, s²I)`` in ``d`` dimensions, its exact velocity and the reward ``−½‖x0‖²``:
    both ``O(d)`` per particle, so the sampler's own cost shows."""

    def velocity(x, t):
        c = (1.0 - t) * scale**2 / ((1.0 - t) ** 2 * scale**2 + t**2)
        x0 = 1.0 + c * (x - (1.0 - t))  # E[x0 | x_t]
        return (x - x0) / t

    def reward(x0):
        return -0.5 * jnp.sum(x0**2)

    return align.RewardProblem(velocity, reward, (dim,), 1.0)


def time_point(problem, n: int, steps: int, meshes: dict, budget_s: float) -> dict:
    """Median seconds of one jitted TDS run per mesh label."""
    fns = {}
    for label, mesh in meshes.items():
        run = jax.jit(
            lambda key, mesh=mesh: (
                align.tds(key, problem, num_particles=n, num_steps=steps, mesh=mesh).samples
            )
        )
        fns[label] = (run, (jax.random.key(0),))
    return interleaved_median_times(fns, repeats=20, warmup=2, budget_s=budget_s)


def power_law(xs, ys) -> float:
    """Slope of ``log y`` on ``log x`` over the upper half of the points."""
    xs, ys = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    half = len(xs) // 2
    return float(np.polyfit(xs[half:], ys[half:], 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N up to 2^10, d up to 2^9")
    parser.add_argument("--max-log2n", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    max_log2n = 10 if args.quick else args.max_log2n
    dims = [2**k for k in range(1, 11 if args.quick else 15, 2)]
    meshes = {"1 device": None, f"{jax.device_count()} devices": particle_mesh()}
    steps = args.steps

    rows = []
    toy = exact_problem("six_modes_quadratic")
    sweeps = [("N", 2**k, 2, toy) for k in range(4, max_log2n + 1)]
    sweeps += [("d", 256, d, isotropic(d)) for d in dims]
    for sweep, n, dim, problem in sweeps:
        times = time_point(problem, n, steps, meshes, budget_s=10.0)
        for label, seconds in times.items():
            rows.append(
                {
                    "sweep": sweep,
                    "devices": label,
                    "N": n,
                    "d": dim,
                    "seconds": seconds,
                    "us_per_particle_step": 1e6 * seconds / (n * steps),
                }
            )
            print(f"{sweep} N={n:6d} d={dim:4d} {label:10s} {seconds * 1e3:9.2f} ms", flush=True)

    write_csv(rows, "scaling.csv")
    write_text(report(rows, meshes, steps), "scaling.md")
    plot(rows, meshes)


def report(rows, meshes, steps) -> str:
    lines = [
        "# Scaling: cost per particle-step",
        "",
        f"Machine: {machine()}.",
        f"TDS (resampling at every step), T = {steps}, jitted; median wall time after compilation.",
        "",
        "On a CPU the 8 devices are emulated (`--xla_force_host_platform_device_count=8`) and "
        "share the host's cores: that column measures the partitioning's overhead (device "
        "threads synchronised at every collective, the particles all-gathered at every "
        "resampling), not a speed-up.",
        "",
    ]
    for sweep, title, key in (("N", "Particles (2D six-mode toy)", "N"), ("d", "Dimension", "d")):
        sub = [r for r in rows if r["sweep"] == sweep]
        values = sorted({r[key] for r in sub})
        lines += [
            f"## {title}",
            "",
            f"| {key} | "
            + " | ".join(f"{label}: ms / µs per particle-step" for label in meshes)
            + " |",
            "|---|" + "---|" * len(meshes),
        ]
        for v in values:
            cells = [
                f"{r['seconds'] * 1e3:.2f} / {r['us_per_particle_step']:.3f}"
                for label in meshes
                for r in sub
                if r[key] == v and r["devices"] == label
            ]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
        for label in meshes:
            pts = [(r[key], r["seconds"]) for r in sub if r["devices"] == label]
            a = power_law(*zip(*pts, strict=True))
            lines.append(f"- {label}: time ∝ {key}^{a:.2f} over the upper half of the sweep.")
        lines.append("")
    return "\n".join(lines)


def plot(rows, meshes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _common import RESULTS

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, sweep, key in ((axes[0], "N", "N"), (axes[1], "d", "d")):
        for label in meshes:
            pts = [
                (r[key], r["us_per_particle_step"])
                for r in rows
                if r["sweep"] == sweep and r["devices"] == label
            ]
            ax.loglog(*zip(*pts, strict=True), "o-", label=label)
        ax.set_xlabel(key)
        ax.set_ylabel("µs per particle-step")
        ax.legend()
    axes[0].set_title("2D toy, particles")
    axes[1].set_title("N = 256, dimension")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "scaling.png"), dpi=100)


if __name__ == "__main__":
    main()
