"""Result files of the studies: strict JSON and CSV rows (written by the CLI and benchmarks)."""

import csv
import json
import math

__all__ = ["json_safe", "write_json", "write_csv"]


def json_safe(value):
    """``value`` with NaN/inf as ``None`` and NumPy/JAX scalars as Python numbers, recursively
    through dicts, lists and tuples: strict JSON (``allow_nan=False``) accepts it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(record: dict, path: str) -> None:
    """``record`` as indented strict JSON (:func:`json_safe`) at ``path``."""
    with open(path, "w") as f:
        json.dump(json_safe(record), f, indent=1, allow_nan=False)


def write_csv(rows: list[dict], path: str) -> None:
    """``rows`` as CSV at ``path``; the columns are the union of the rows' keys in first-seen
    order (a row without a column leaves it empty)."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
