"""Shared helpers of the benchmark scripts: machine description, timing, output files."""
import csv
import os
import platform
import statistics
import time

import jax

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> str:
    """One line naming the machine the numbers were measured on."""
    devices = jax.devices()
    kind = devices[0].device_kind if devices else "?"
    cpu = platform.processor() or platform.machine()
    return (
        f"{jax.default_backend()} ({kind} ×{len(devices)}), {os.cpu_count()} host cores ({cpu}), "
        f"jax {jax.__version__}, python {platform.python_version()}"
    )


def median_time(fn, *args, repeats: int = 30, warmup: int = 3) -> float:
    """Median wall time of ``fn(*args)`` in seconds, after compilation, outputs blocked on."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_csv(rows: list[dict], name: str) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_text(text: str, name: str) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w") as f:
        f.write(text)
    return path
