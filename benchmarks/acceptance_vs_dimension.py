"""Acceptance vs dimension and step size (the Ψ-Sampler ablation), and the pCNL kernel overhead.

Part 1 — acceptance of pCN, pCNL, ULA (n/a: no accept step) and BlackJAX MALA for
d ∈ {2, 16, 256, 4096, 65536} and h ∈ {0.05, 0.5, 2.0} on the conjugate target of
``psijax.models.conjugate`` (see ``psijax.experiments.acceptance`` for the set-up).

Part 2 — overhead of one pCNL step at d = 65,536 with 5 vmapped chains (the paper's chain count),
as ratios of medians after compilation:
  * pCNL step / one ``jax.value_and_grad`` of the log-density (the physical limit is 1.0: the
    step must evaluate the log-density and its gradient once), and
  * pCNL step / BlackJAX MALA step (same work: one value-and-grad, one Gaussian draw).
Measured for three log-densities of increasing cost: the conjugate target (three projections —
nearly free, so the ratio shows the kernel's own arithmetic and RNG) and two MLP rewards
``log π(x) = −½‖x‖² + w₂ᵀ tanh(W₁ x / √d)`` of width 64 and 512, standing in for a model
evaluation; and with JAX's default threefry key and the ``rbg`` key.

Writes benchmarks/results/acceptance_vs_dimension.{csv,md,png} and kernel_overhead.{csv,md}.
Usage: python benchmarks/acceptance_vs_dimension.py [--quick]
"""
import argparse
import os
import sys

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, median_time, write_csv, write_text  # noqa: E402

import psijax  # noqa: E402
from psijax.experiments import acceptance  # noqa: E402
from psijax.models.conjugate import make_conjugate  # noqa: E402


def mlp_logdensity(dim: int, width: int, seed: int = 0):
    """``−½‖x‖² + w₂ᵀ tanh(W₁ x / √d)``: a reward through a small network."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    w1 = jax.random.normal(k1, (width, dim)) / np.sqrt(dim)
    w2 = jax.random.normal(k2, (width,)) / np.sqrt(width)

    def logdensity(x):
        return -0.5 * jnp.sum(x**2) + w2 @ jnp.tanh(w1 @ x)

    return logdensity


def overhead_rows(dim: int, num_chains: int, repeats: int) -> list[dict]:
    rows = []
    targets = {
        "conjugate (3 directions)": make_conjugate(dim).logdensity,
        "mlp reward, width 64": mlp_logdensity(dim, 64),
        "mlp reward, width 512": mlp_logdensity(dim, 512),
    }
    h = 0.5
    pcnl_kernel = psijax.pcnl.build_kernel()
    mala_kernel = blackjax.mala.build_kernel()
    for name, logdensity in targets.items():
        for impl in ("threefry2x32", "rbg"):
            keys = jax.random.split(jax.random.key(0, impl=impl), num_chains)
            positions = jax.random.normal(jax.random.key(1), (num_chains, dim))
            pcnl_states = jax.vmap(psijax.pcnl.init, in_axes=(0, None))(positions, logdensity)
            mala_states = jax.vmap(blackjax.mala.init, in_axes=(0, None))(positions, logdensity)

            value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(logdensity)))
            pcnl_step = jax.jit(
                jax.vmap(lambda k, s: pcnl_kernel(k, s, logdensity, h))
            )
            mala_step = jax.jit(jax.vmap(lambda k, s: mala_kernel(k, s, logdensity, h / 2)))

            t_vg = median_time(value_and_grad, positions, repeats=repeats)
            t_pcnl = median_time(pcnl_step, keys, pcnl_states, repeats=repeats)
            t_mala = median_time(mala_step, keys, mala_states, repeats=repeats)
            rows.append(
                {
                    "logdensity": name,
                    "key": impl,
                    "dim": dim,
                    "chains": num_chains,
                    "value_and_grad_ms": round(1e3 * t_vg, 3),
                    "pcnl_step_ms": round(1e3 * t_pcnl, 3),
                    "mala_step_ms": round(1e3 * t_mala, 3),
                    "pcnl_over_value_and_grad": round(t_pcnl / t_vg, 3),
                    "pcnl_over_mala": round(t_pcnl / t_mala, 3),
                }
            )
            print(rows[-1], flush=True)
    return rows


def overhead_markdown(rows: list[dict]) -> str:
    lines = [
        "| log-density | key | value_and_grad (ms) | pCNL step (ms) | MALA step (ms) "
        "| pCNL / value_and_grad | pCNL / MALA |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['logdensity']} | {r['key']} | {r['value_and_grad_ms']:.3f} | "
            f"{r['pcnl_step_ms']:.3f} | {r['mala_step_ms']:.3f} | "
            f"{r['pcnl_over_value_and_grad']:.3f} | {r['pcnl_over_mala']:.3f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--skip-acceptance", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    header = f"Machine: {machine()}\n"
    print(header)

    if not args.skip_acceptance:
        rows = acceptance.acceptance_vs_dimension(
            num_chains=5 if args.quick else 20,
            num_steps=150 if args.quick else 400,
            burn_in=50 if args.quick else 100,
            progress=True,
        )
        write_csv(rows, "acceptance_vs_dimension.csv")
        table = acceptance.format_markdown(rows)
        write_text(
            "# Acceptance vs dimension (conjugate target, 3 likelihood directions)\n\n"
            + header
            + "\nMALA and ULA run at ε = h/2 (matching Langevin step); mean ± standard error "
            "over independent chains.\n\n"
            + table
            + "\n",
            "acceptance_vs_dimension.md",
        )
        acceptance.plot(rows, os.path.join(RESULTS, "acceptance_vs_dimension.png"))
        print(table)

    if not args.skip_overhead:
        rows = overhead_rows(65536, 5, repeats=20 if args.quick else 100)
        write_csv(rows, "kernel_overhead.csv")
        table = overhead_markdown(rows)
        write_text(
            "# pCNL kernel overhead (d = 65,536, 5 vmapped chains, h = 0.5)\n\n"
            + header
            + "\nMedians after compilation. Physical limit of pCNL / value_and_grad: 1.0.\n\n"
            + table
            + "\n",
            "kernel_overhead.md",
        )
        print(table)


if __name__ == "__main__":
    main()
