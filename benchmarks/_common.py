"""Shared helpers of the benchmark scripts: machine description, timing, output files."""

import os
import platform
import statistics
import tempfile
import time

import jax
import numpy as np

from psijax.experiments import records
from psijax.models import module_io
from psijax.models.flux.checkpoint import read_tensors

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the architecture when it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {platform.machine()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine the numbers were measured on (CPU model included: float
    rounding, and so trained weights, can differ between CPU models)."""
    devices = jax.devices()
    kind = devices[0].device_kind if devices else "?"
    cpu = _cpu_model()
    return (
        f"{jax.default_backend()} ({kind} ×{len(devices)}), {os.cpu_count()} host cores ({cpu}), "
        f"jax {jax.__version__}, python {platform.python_version()}"
    )


def interleaved_median_times(
    fns: dict, repeats: int = 100, warmup: int = 3, budget_s: float = 60.0
) -> dict:
    """Median wall time (s) of each ``name -> (fn, args)``, the calls interleaved round by round.

    Interleaving spreads machine noise (other processes, frequency changes) evenly over the
    functions compared, so their ratios are steadier than those of back-to-back medians. The
    number of rounds is ``repeats``, reduced (to no fewer than 5) to fit ``budget_s``.
    """
    start = time.perf_counter()
    for fn, args in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    round_s = (time.perf_counter() - start) / warmup
    repeats = max(5, min(repeats, int(budget_s / max(round_s, 1e-9))))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, args) in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def with_cpu_time(fn, log: list):
    """``fn`` that blocks on its result and appends the process CPU time it took to ``log``."""

    def timed(*args):
        start = time.process_time()
        out = jax.block_until_ready(fn(*args))
        log.append(time.process_time() - start)
        return out

    return timed


def write_csv(rows: list[dict], name: str) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    records.write_csv(rows, path)
    return path


def write_text(text: str, name: str) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def write_or_check(model, path: str, expected: str | None, write: bool) -> str:
    """With ``write``, save ``model`` to ``path`` and return its sha256; otherwise the sha256
    of the file it would be, and whether that is ``expected`` (the shipped file bit for bit)."""
    if write:
        found = module_io.save_module(model, path)
        print(f"wrote {path}: sha256 {found}")
        return found
    with tempfile.TemporaryDirectory() as folder:
        found = module_io.save_module(model, os.path.join(folder, "m.safetensors"))
    if found == expected:
        return f"{found} (the shipped file)"
    return f"{found} (NOT the shipped file{_difference(model, path)})"


def _difference(model, path: str) -> str:
    """How far ``model``'s parameters are from the shipped file's: the largest absolute
    difference and its tensor, and the median over tensors of each tensor's largest one."""
    if not os.path.isfile(path):
        return ""
    new = module_io.module_tensors(model)
    old = read_tensors(path, host=True)
    if set(new) != set(old):
        return "; other tensor names"
    gaps = {
        k: float(np.max(np.abs(np.asarray(new[k], np.float64) - np.asarray(old[k], np.float64))))
        for k in new
    }
    worst = max(gaps, key=gaps.get)
    median = statistics.median(gaps.values())
    return (
        f"; largest |Δ| {gaps[worst]:.2g} in `{worst}`, median over tensors {median:.2g}, "
        f"{sum(v > 0 for v in gaps.values())} of {len(gaps)} tensors differ"
    )


def matmul_flops(closed_jaxpr) -> float:
    """Floating-point operations of the matrix products and convolutions of a traced program,
    counting every iteration of a ``scan`` (XLA's cost analysis counts a loop's body once) and
    every branch of a ``cond`` at its largest. Elementwise work is left out: it is a few percent
    of a transformer's or a convolutional network's total. A ``while`` loop, whose trip count is
    not static, is a ``ValueError``."""

    def count(jaxpr) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                (lhs_contract, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                size = float(np.prod([lhs[d] for d in lhs_contract]))
                total += 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * size
            elif name == "conv_general_dilated":
                rhs = eqn.invars[1].aval.shape
                spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
                per_output = np.prod([rhs[d] for d in spec[1:]])
                total += 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * float(per_output)
            elif name == "while":
                raise ValueError("a while loop has no static trip count")
            elif name == "cond":
                total += max(count(b.jaxpr) for b in eqn.params["branches"])
            else:
                times = float(eqn.params.get("length", 1)) if name == "scan" else 1.0
                for value in eqn.params.values():
                    if hasattr(value, "eqns") or hasattr(value, "jaxpr"):  # (closed) jaxprs
                        total += times * count(getattr(value, "jaxpr", value))
        return total

    return count(closed_jaxpr.jaxpr)
