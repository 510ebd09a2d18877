"""The discrete toy study at a small size: rows, summary, table and figure (the full study is
benchmarks/discrete_toy.py)."""

import numpy as np

from psijax.experiments import discrete_toy as dt


def test_study_rows_and_report(tmp_path):
    toy = dt.make_toy("ring8", "diagonal", num_steps=3)
    rows, first, timings = dt.run_study(
        [toy], ("best_of_n", "smc_first_order", "exact"), (4,), seeds=2
    )
    assert len(rows) == 6 and len(timings) == 3
    exact = [r for r in rows if r["method"] == "exact"]
    np.testing.assert_allclose([r["log_z_hat"] for r in exact], toy.log_z, atol=1e-4)
    assert all(0.0 <= r["tv"] <= 1.0 and r["unique"] >= 1 for r in rows)
    best = [r for r in rows if r["method"] == "best_of_n"][0]
    grad = [r for r in rows if r["method"] == "smc_first_order"][0]
    assert best["nfe_budget"] == grad["nfe_budget"]  # equal NFE
    assert best["num_particles"] > grad["num_particles"]  # a gradient costs more
    summary = dt.summarize(rows)
    assert "| exact |" in dt.format_markdown(summary)
    dt.plot([toy], first, 4, str(tmp_path / "toy.png"))
    assert (tmp_path / "toy.png").stat().st_size > 1000
