"""The ``psijax`` command line and the acceptance study behind ``psijax demo``."""

import csv
import json

import numpy as np
import pytest

from psijax.cli import main
from psijax.experiments import acceptance


def test_demo_writes_results_and_shows_dimension_robustness(tmp_path, capsys):
    """A small demo run writes CSV/JSON/PNG; pCNL keeps its acceptance as d grows, MALA does not."""
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path),
            "--dims",
            "8",
            "16384",
            "--steps",
            "60",
            "--burn-in",
            "10",
            "--chains",
            "4",
            "--no-progress",
        ]
    )
    assert code == 0
    rows = json.loads((tmp_path / "acceptance_vs_dimension.json").read_text())["rows"]
    with open(tmp_path / "acceptance_vs_dimension.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(rows) == len(csv_rows) == 2 * 4  # two dims × four samplers
    assert (tmp_path / "acceptance_vs_dimension.png").stat().st_size > 10_000
    acc = {(r["sampler"], r["dim"]): r["acceptance"] for r in rows}
    assert abs(acc["pcnl", 16384] - acc["pcnl", 8]) < 0.1
    assert acc["mala", 8] > 0.5 and acc["mala", 16384] < 0.05
    assert acc["ula", 8] is None or np.isnan(acc["ula", 8])  # n/a: ULA has no accept step
    out = capsys.readouterr().out
    assert "| pcnl | 0.5 |" in out and "n/a" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--chains", "0"],
        ["demo", "--steps", "10", "--burn-in", "10"],
        ["demo", "--step-sizes", "-1"],
        ["demo", "--dims", "0"],
    ],
)
def test_demo_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit, match="psijax: --"):
        main(argv)


def test_study_rejects_unknown_sampler():
    with pytest.raises(ValueError, match="samplers"):
        acceptance.acceptance_vs_dimension(dims=(2,), samplers=("hmc",))
