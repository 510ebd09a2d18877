"""Acceptance vs dimension and step size (the Ψ-Sampler ablation), and the pCNL kernel overhead.

Part 1 — acceptance of pCN, pCNL, ULA (n/a: no accept step) and BlackJAX MALA for
d ∈ {2, 16, 256, 4096, 65536} and h ∈ {0.05, 0.5, 2.0} on the conjugate target of
``psijax.models.conjugate`` (see ``psijax.experiments.acceptance`` for the set-up).

Part 2 — overhead of one pCNL step at d = 65,536 with 5 vmapped chains (the paper's chain count),
as ratios of medians after compilation:
  * pCNL step / one ``jax.value_and_grad`` of the log-density (the physical limit is 1.0: the
    step must evaluate the log-density and its gradient once), and
  * pCNL step / BlackJAX MALA step (same work: one value-and-grad, one Gaussian draw).
Measured for four log-densities of increasing cost: the conjugate target (three projections —
nearly free, so the ratio shows the kernel's own arithmetic and the Gaussian draw) and MLP
rewards ``log π(x) = −½‖x‖² + w₂ᵀ tanh(W₁ x / √d)`` of width 64, 512 and 2048 (134M weights),
standing in for a model evaluation: the kernel's own cost is fixed, so the ratio to
value_and_grad falls toward 1 as the model grows. Everything is timed per step inside a
10-step ``lax.scan`` (a step as used in a chain, keeping the acceptance rates; value_and_grad
and the draw likewise); a single jitted call that also returns the full info (the proposal)
is listed beside it. Every ratio also has the unavoidable ``N(0, I)`` draw of the same size as
a second reference, since on CPU threefry dominates the
cost of a step when the log-density is cheap. All functions are timed interleaved.

Writes benchmarks/results/acceptance_vs_dimension.{csv,md,png} and kernel_overhead.{csv,md}.
Usage: python benchmarks/acceptance_vs_dimension.py [--quick]
"""

import argparse
import functools
import os
import sys

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    RESULTS,
    interleaved_median_times,
    machine,
    write_csv,
    write_text,
)

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


SCAN_STEPS = 10


def _chain_runner(kernel, logdensity, step_size):
    """``SCAN_STEPS`` vmapped steps in one ``lax.scan``, keeping only the acceptance rates —
    how a step is used in a chain (XLA drops the parts of the info nobody reads)."""

    def run(keys, states):
        def body(states, keys):
            states, info = jax.vmap(lambda k, s: kernel(k, s, logdensity, step_size))(keys, states)
            return states, info.acceptance_rate

        step_keys = jax.vmap(lambda k: jax.random.split(k, SCAN_STEPS), out_axes=1)(keys)
        return jax.lax.scan(body, states, step_keys)

    return jax.jit(run)


def _value_and_grad_runner(logdensity):
    """``SCAN_STEPS`` vmapped ``value_and_grad`` calls in one ``lax.scan``, each at a new point
    (``x ← x + 10⁻⁶ ∇``, so nothing is hoisted out of the loop): the reference of the chains."""
    value_and_grad = jax.vmap(jax.value_and_grad(logdensity))

    def run(positions):
        def body(x, _):
            value, grad = value_and_grad(x)
            return x + 1e-6 * grad, value

        return jax.lax.scan(body, positions, length=SCAN_STEPS)

    return jax.jit(run)


def _noise_runner(dim):
    """``SCAN_STEPS`` vmapped ``N(0, I_d)`` draws in one ``lax.scan`` (threefry, as the chains)."""

    def run(keys):
        def body(acc, keys):
            noise = jax.vmap(lambda k: jax.random.normal(k, (dim,)))(keys)
            return acc + noise[:, 0], None

        step_keys = jax.vmap(lambda k: jax.random.split(k, SCAN_STEPS), out_axes=1)(keys)
        return jax.lax.scan(body, jnp.zeros(keys.shape[0]), step_keys)

    return jax.jit(run)


def overhead_rows(dim: int, num_chains: int, repeats: int) -> list[dict]:
    rows = []
    targets = {
        "conjugate (3 directions)": make_conjugate(dim).logdensity,
        "mlp reward, width 64": mlp_logdensity(dim, 64),
        "mlp reward, width 512": mlp_logdensity(dim, 512),
        "mlp reward, width 2048": mlp_logdensity(dim, 2048),
    }
    h = 0.5
    pcnl_kernel = psijax.pcnl.build_kernel()
    mala_kernel = blackjax.mala.build_kernel()
    keys = jax.random.split(jax.random.key(0), num_chains)
    positions = jax.random.normal(jax.random.key(1), (num_chains, dim))
    for name, logdensity in targets.items():
        pcnl_states = jax.vmap(psijax.pcnl.init, in_axes=(0, None))(positions, logdensity)
        mala_states = jax.vmap(blackjax.mala.init, in_axes=(0, None))(positions, logdensity)
        fns = {
            "value_and_grad": (_value_and_grad_runner(logdensity), (positions,)),
            "noise": (_noise_runner(dim), (keys,)),
            "pcnl_chain": (_chain_runner(pcnl_kernel, logdensity, h), (keys, pcnl_states)),
            "mala_chain": (_chain_runner(mala_kernel, logdensity, h / 2), (keys, mala_states)),
            "pcnl_step_full_info": (
                jax.jit(
                    jax.vmap(functools.partial(pcnl_kernel, logdensity_fn=logdensity, step_size=h))
                ),
                (keys, pcnl_states),
            ),
        }
        t = interleaved_median_times(fns, repeats=repeats)
        t = {name: v / (1 if name.endswith("full_info") else SCAN_STEPS) for name, v in t.items()}
        pcnl, mala = t["pcnl_chain"], t["mala_chain"]
        rows.append(
            {
                "logdensity": name,
                "dim": dim,
                "chains": num_chains,
                "value_and_grad_ms": round(1e3 * t["value_and_grad"], 3),
                "noise_ms": round(1e3 * t["noise"], 3),
                "pcnl_step_ms": round(1e3 * pcnl, 3),
                "mala_step_ms": round(1e3 * mala, 3),
                "pcnl_step_full_info_ms": round(1e3 * t["pcnl_step_full_info"], 3),
                "pcnl_over_value_and_grad": round(pcnl / t["value_and_grad"], 3),
                "pcnl_over_value_and_grad_plus_noise": round(
                    pcnl / (t["value_and_grad"] + t["noise"]), 3
                ),
                "pcnl_over_mala": round(pcnl / mala, 3),
            }
        )
        print(rows[-1], flush=True)
    return rows


def overhead_markdown(rows: list[dict]) -> str:
    lines = [
        "| log-density | value_and_grad (ms) | N(0, I) draw (ms) | pCNL step (ms) | MALA step (ms) "
        "| pCNL / value_and_grad | pCNL / (value_and_grad + draw) | pCNL / MALA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['logdensity']} | {r['value_and_grad_ms']:.3f} | {r['noise_ms']:.3f} | "
            f"{r['pcnl_step_ms']:.3f} | {r['mala_step_ms']:.3f} | "
            f"{r['pcnl_over_value_and_grad']:.3f} | "
            f"{r['pcnl_over_value_and_grad_plus_noise']:.3f} | {r['pcnl_over_mala']:.3f} |"
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
            "over independent chains. At d = 2 the likelihood has only 2 directions "
            "(k = min(3, d)), hence its different values.\n\n" + table + "\n",
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
            + "\nMedians after compilation, interleaved. Physical limit of pCNL / value_and_grad:"
            " 1.0 (with the Gaussian draw: pCNL / (value_and_grad + draw) = 1.0). Steps timed"
            " inside a 10-step lax.scan.\n\n" + table + "\n",
            "kernel_overhead.md",
        )
        print(table)


if __name__ == "__main__":
    main()
