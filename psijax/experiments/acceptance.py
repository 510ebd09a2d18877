"""Acceptance rate versus dimension and step size: pCN, pCNL, ULA and BlackJAX MALA.

The Ψ-Sampler paper's ablation, on a target with an exact answer: the conjugate Gaussian of
:mod:`psijax.models.conjugate` (reference ``N(0, I_d)``, likelihood on 3 orthonormal directions,
noise 0.7), whose ``Φ`` depends on a bounded number of directions — the regime where
Crank–Nicolson proposals keep a dimension-free acceptance and MALA's collapses.

Step sizes: pCN/pCNL take the paper's ``h``. MALA and ULA take ``ε = h/2``, the Langevin step
with the same drift and noise to first order (``ρ ≈ 1 − h/2``, ``β ≈ √h``), so one row compares
the kernels at matching local moves. ULA has no accept/reject: its acceptance is reported as
``nan`` ("n/a").
"""

from typing import Callable, Iterable

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import psijax
from psijax.models.conjugate import make_conjugate

__all__ = ["KERNELS", "sampler_for", "acceptance_vs_dimension", "format_markdown", "plot"]

KERNELS = ("pcn", "pcnl", "ula", "mala")


_MODULES = {"pcn": psijax.pcn, "pcnl": psijax.pcnl, "ula": psijax.ula, "mala": blackjax.mala}


def sampler_for(name: str) -> tuple[Callable, Callable, float]:
    """``(init, kernel, step_scale)`` of sampler ``name``: it runs at ``step_scale · h``."""
    if name not in _MODULES:
        raise ValueError(f"`sampler` must be one of {KERNELS}, got {name!r}.")
    api = _MODULES[name]
    return api.init, api.build_kernel(), (1.0 if name in ("pcn", "pcnl") else 0.5)


def _mean_acceptance(name, logdensity_fn, step_size, rng_key, dim, num_chains, num_steps, burn_in):
    """Mean acceptance over chains and the steps after ``burn_in``, with its standard error."""
    init, kernel, scale = sampler_for(name)
    acceptance = np.asarray(
        _run_chains(init, kernel, logdensity_fn, dim, num_chains, num_steps)(
            rng_key, jnp.float32(scale * step_size)
        )[burn_in:],
        np.float64,
    )
    per_chain = acceptance.mean(axis=0)  # chains are independent: SE from their spread
    se = per_chain.std(ddof=1) / np.sqrt(num_chains) if num_chains > 1 else np.nan
    return float(per_chain.mean()), float(se)


def _run_chains(init, kernel, logdensity_fn, dim, num_chains, num_steps):
    """A jitted runner ``(rng_key, step_size) -> acceptance (steps, chains)``.

    The step size is a traced argument, so one compilation serves every ``h`` of a sweep.
    """

    @jax.jit
    def run(rng_key, step_size):
        key_init, key_run = jax.random.split(rng_key)
        positions = jax.random.normal(key_init, (num_chains, dim))
        states = jax.vmap(init, in_axes=(0, None))(positions, logdensity_fn)

        def body(states, key):
            keys = jax.random.split(key, num_chains)
            states, info = jax.vmap(kernel, in_axes=(0, 0, None, None))(
                keys, states, logdensity_fn, step_size
            )
            return states, info.acceptance_rate

        return jax.lax.scan(body, states, jax.random.split(key_run, num_steps))[1]

    return run


def acceptance_vs_dimension(
    dims: Iterable[int] = (2, 16, 256, 4096, 65536),
    step_sizes: Iterable[float] = (0.05, 0.5, 2.0),
    samplers: Iterable[str] = KERNELS,
    *,
    num_chains: int = 5,
    num_steps: int = 200,
    burn_in: int = 50,
    seed: int = 0,
    progress: bool = False,
) -> list[dict]:
    """Mean acceptance of each sampler on the conjugate target, for every (dim, h).

    Returns one row per (sampler, dim, step_size): ``{"sampler", "dim", "step_size",
    "acceptance", "acceptance_se"}``; ULA's acceptance is ``nan``. Chains start at ``N(0, I)``
    draws; ``burn_in`` steps are discarded.
    """
    dims, step_sizes, samplers = list(dims), list(step_sizes), list(samplers)
    for name in samplers:
        if name not in KERNELS:
            raise ValueError(f"`samplers` entries must be in {KERNELS}, got {name!r}.")
    if not 0 <= burn_in < num_steps:
        raise ValueError(f"need 0 <= burn_in < num_steps, got {burn_in}, {num_steps}.")
    grid = [(d, h, s) for d in dims for s in samplers for h in step_sizes]
    if progress:
        from tqdm.auto import tqdm

        grid = tqdm(grid, desc="acceptance vs dimension")
    rows = []
    key = jax.random.key(seed)
    targets = {dim: make_conjugate(dim, seed=seed) for dim in dims}
    for dim, h, name in grid:
        if name == "ula":
            acc, se = float("nan"), float("nan")
        else:
            run_key = jax.random.fold_in(jax.random.fold_in(key, dim), int(1000 * h))
            acc, se = _mean_acceptance(
                name, targets[dim].logdensity, h, run_key, dim, num_chains, num_steps, burn_in
            )
        rows.append(
            {"sampler": name, "dim": dim, "step_size": h, "acceptance": acc, "acceptance_se": se}
        )
    return rows


def format_markdown(rows: list[dict]) -> str:
    """A table: one line per (sampler, h), one column per dimension, ``acc ± se``."""
    dims = sorted({r["dim"] for r in rows})
    lines = [
        "| sampler | h | " + " | ".join(f"d={d:,}" for d in dims) + " |",
        "|---|---|" + "---|" * len(dims),
    ]
    keys = sorted({(r["sampler"], r["step_size"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for name, h in keys:
        cells = []
        for d in dims:
            (r,) = [r for r in rows if (r["sampler"], r["step_size"], r["dim"]) == (name, h, d)]
            acc, se = r["acceptance"], r["acceptance_se"]
            cells.append("n/a" if np.isnan(acc) else f"{acc:.3f} ± {se:.3f}")
        lines.append(f"| {name} | {h:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Acceptance vs dimension, one panel per step size, one line per sampler (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step_sizes = sorted({r["step_size"] for r in rows})
    fig, axes = plt.subplots(1, len(step_sizes), figsize=(4 * len(step_sizes), 3.2), sharey=True)
    for ax, h in zip(np.atleast_1d(axes), step_sizes, strict=True):
        for name in KERNELS:
            sel = sorted(
                (r for r in rows if r["sampler"] == name and r["step_size"] == h),
                key=lambda r: r["dim"],
            )
            if not sel or all(np.isnan(r["acceptance"]) for r in sel):
                continue
            ax.errorbar(
                [r["dim"] for r in sel],
                [r["acceptance"] for r in sel],
                yerr=[r["acceptance_se"] for r in sel],
                marker="o",
                label=name if name != "mala" else "mala (blackjax, ε=h/2)",
            )
        ax.set_xscale("log", base=2)
        ax.set_title(f"h = {h:g}")
        ax.set_xlabel("dimension d")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("mean acceptance")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def __getattr__(name: str):
    if name == "SAMPLERS":  # 0.1's name of KERNELS
        from psijax._deprecation import deprecated

        deprecated("psijax.experiments.acceptance.SAMPLERS", "KERNELS")
        return KERNELS
    raise AttributeError(f"module 'psijax.experiments.acceptance' has no attribute {name!r}")
