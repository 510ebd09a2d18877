"""The ``psijax`` command line: ``demo`` / ``toy`` (the toy alignment study), ``acceptance``,
``bench`` and the options every command shares (``digits`` is tested in tests/experiments)."""

import csv
import json
import math

import numpy as np
import pytest

from psijax.cli import main
from psijax.experiments import acceptance


def test_demo_writes_figure_table_and_json(tmp_path, capsys):
    """A tiny demo (1 seed, 2 methods, B = 200, both models) writes a PNG, a markdown table with
    every requested method per model and finite numbers, and strict JSON."""
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path),
            "--seeds",
            "1",
            "--methods",
            "psi_sampler,smc",
            "--budget",
            "200",
            "--occupancy-size",
            "20000",
            "--no-progress",
        ]
    )
    assert code == 0
    assert (tmp_path / "toy_six_modes_mixture.png").stat().st_size > 10_000
    table = (tmp_path / "toy.md").read_text()
    for model in ("exact", "reflow"):
        assert f"### six_modes_mixture · {model} model · B = 200 NFE" in table
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    body = [line for line in lines if not line.startswith("| method")]
    names = ["psi_sampler", "smc", "exact target (iid)", "SMC limit (IS)"]
    assert sorted(line.split(" | ")[0][2:] for line in body) == sorted(names * 2)
    for line in body:
        cells = [c.strip() for c in line.strip("| ").split(" | ")]
        if cells[0] == "SMC limit (IS)":
            assert cells[1] == "n/a"  # NFE: not a sampler run
            cells = cells[1:]
        assert all(math.isfinite(float(c.split(" ± ")[0])) for c in cells[1:]), line

    record = json.loads((tmp_path / "toy.json").read_text())  # strict: NaN written as null
    summary = record["summary"]
    assert {(r["model"], r["method"]) for r in summary} == {
        (m, k) for m in ("exact", "reflow") for k in names
    }
    for r in summary:
        if r["method"] in ("psi_sampler", "smc"):
            assert r["nfe"] == 200 and r["seeds"] == 1 and r["nfe_se"] is None
            assert 0 <= r["mode_tv"] <= 1 and r["mmd_fixed"] >= 0
    assert record["config"]["methods"] == ["psi_sampler", "smc"]
    out = capsys.readouterr().out
    assert "| psi_sampler |" in out
    # where it wrote, as absolute paths, and how to read the tables (also in the markdown)
    for name in ("toy_six_modes_mixture.png", "toy.md", "toy.json", "toy.csv"):
        assert str((tmp_path / name).resolve()) in out
    for text in ("`exact target (iid)`", "`SMC limit (IS)`", "standard error", "Lower is better"):
        assert text in out and text in table
    assert "Ψ-Sampler (six_modes_mixture, exact model) ranks" in table
    assert "Tweedie" in table


@pytest.mark.parametrize(
    "argv, match",
    [
        (["demo", "--seeds", "0"], "--seeds"),
        (["demo", "--methods", "hmc"], "--methods"),
        (["demo", "--methods", "psi_sampler", "--budget", "10"], "too small"),
        (["demo", "--models", "exact,teacher"], "--models"),
        (["demo", "--preset", "anisotropic_coordinate"], "no reflow model"),
        (["acceptance", "--chains", "0"], "--chains"),
        (["acceptance", "--steps", "10", "--burn-in", "10"], "--burn-in"),
        (["acceptance", "--step-sizes", "-1"], "--step-sizes"),
        (["acceptance", "--dims", "0"], "--dims"),
        (["toy", "--preset", "nonesuch"], "--preset must name some of"),
        (["bench", "--methods", "hmc"], "--methods must name samplers"),
        (["bench", "--particles", "0"], "--particles must be >= 1"),
    ],
)
def test_cli_rejects_bad_arguments(argv, match):
    with pytest.raises(SystemExit, match=f"psijax: .*{match}"):
        main(argv)


def test_acceptance_writes_results_and_shows_dimension_robustness(tmp_path, capsys):
    """A small acceptance run writes CSV/JSON/PNG; pCNL keeps its acceptance as d grows, MALA
    does not."""
    code = main(
        [
            "acceptance",
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


def test_study_rejects_unknown_sampler():
    with pytest.raises(ValueError, match="samplers"):
        acceptance.acceptance_vs_dimension(dims=(2,), samplers=("hmc",))


@pytest.mark.parametrize(
    "command", ["demo", "toy", "acceptance", "digits", "bench", "discrete-toy"]
)
def test_every_command_has_help_with_the_common_options(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--no-progress", "--compilation-cache"):
        assert option in text


def test_bench_times_samplers_and_fills_the_compilation_cache(tmp_path, capsys):
    """Two methods at a tiny size, on a mesh of every device: the rows are consistent (NFE =
    N·T, times positive, µs per particle-step = run / (N·T)), the files are written, and the
    persistent compilation cache receives the compiled programs."""
    cache = tmp_path / "cache"
    argv = ["bench", "--methods", "tds,dps", "--particles", "8", "--steps", "4"]
    argv += ["--repeats", "2", "--out", str(tmp_path), "--no-progress", "--all-devices"]
    assert main(argv + ["--compilation-cache", str(cache)]) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["method"]: r for r in record["rows"]}
    assert set(rows) == {"tds", "dps"}
    assert rows["tds"]["nfe"] == 8 * 4 and rows["dps"]["nfe"] == 8 * 4
    for r in rows.values():
        assert r["run_s"] > 0 and r["compile_s"] >= 0
        assert r["us_per_particle_step"] == pytest.approx(1e6 * r["run_s"] / 32)
    with open(tmp_path / "bench.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["tds", "dps"]
    assert (tmp_path / "bench.png").stat().st_size > 5_000
    assert any(cache.iterdir())
    out = capsys.readouterr().out
    # NFE per particle-step and µs per NFE beside µs per particle-step: the NFE differ
    assert "| method | NFE | NFE / particle-step |" in out and "| µs / NFE |" in out
    assert "| tds | 32 | 1.00 |" in out
    tds = rows["tds"]
    assert out.split("| tds |")[1].split("\n")[0].rstrip(" |").endswith(f"{tds['us_per_nfe']:.2f}")


def test_toy_runs_several_presets_and_writes_csv(tmp_path):
    """``--preset all`` is the default of ``psijax toy``; here two presets, one without a reflow
    model, exact model only: a figure per preset, and CSV rows = JSON rows."""
    presets = "six_modes_quadratic,anisotropic_coordinate"
    argv = ["toy", "--preset", presets, "--models", "exact", "--methods", "tds", "--seeds", "1"]
    argv += ["--budget", "100", "--steps", "5", "--occupancy-size", "2000"]
    assert main(argv + ["--out", str(tmp_path), "--no-progress"]) == 0
    for preset in presets.split(","):
        assert (tmp_path / f"toy_{preset}.png").stat().st_size > 5_000
    record = json.loads((tmp_path / "toy.json").read_text())
    assert record["config"]["presets"] == presets.split(",")
    with open(tmp_path / "toy.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(record["rows"])
    assert {r["preset"] for r in rows} == set(presets.split(","))


def test_discrete_toy_writes_figure_table_json_and_csv(tmp_path, capsys):
    """A tiny discrete study (ring8, 3 steps, 2 seeds, 2 methods): the files exist, the exact
    row has E[Ẑ]/Z = 1, and bad names are refused in one line."""
    argv = [
        "discrete-toy",
        "--toys",
        "ring8",
        "--steps",
        "3",
        "--seeds",
        "2",
        "--particles",
        "4",
        "--methods",
        "best_of_n,exact",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    for ext in ("png", "md", "json", "csv"):
        assert (tmp_path / f"discrete_toy.{ext}").stat().st_size > 100
    record = json.loads((tmp_path / "discrete_toy.json").read_text())
    exact = [e for e in record["summary"] if e["method"] == "exact"]
    assert exact and abs(exact[0]["z_ratio"] - 1.0) < 1e-3
    assert "| best_of_n |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--methods smc_magic: choose from"):
        main(argv[:-5] + ["--methods", "smc_magic", "--out", str(tmp_path)])


def test_discrete_digits_writes_grids_table_json_and_csv(tmp_path, capsys):
    """A tiny masked-digits study (binary, one digit, best-of-N and SMC): the files exist, the
    rows carry the held-out score beside realism, and bad values are refused in one line."""
    argv = [
        "discrete-digits",
        "--tasks",
        "class",
        "--class-targets",
        "4",
        "--class-betas",
        "0.5",
        "--methods",
        "best_of_n,smc_reverse",
        "--particles",
        "2",
        "--seeds",
        "2",
        "--pool-size",
        "16",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    for name in (
        "discrete_digits_class.png",
        *(f"discrete_digits.{e}" for e in ("md", "json", "csv")),
    ):
        assert (tmp_path / name).stat().st_size > 100
    record = json.loads((tmp_path / "discrete_digits.json").read_text())
    methods = {e["method"] for e in record["summary"]}
    assert methods == {"model (unguided)", "target (IS)", "best_of_n", "smc_reverse"}
    assert all(0.0 <= r["heldout"] <= 1.0 and r["nn_dist"] >= 0.0 for r in record["rows"])
    assert "| binary | class | all | 0.5 | 2 | smc_reverse |" in capsys.readouterr().out
    for option, value, message in (
        ("--class-targets", "12", "--class-targets 12: `target` of the class task"),
        ("--class-betas", "0", "--class-betas"),
        ("--methods", "smc_magic", "--methods smc_magic: choose from"),
        ("--pool-size", "3", "--pool-size 3: must be >= seeds"),
    ):
        i = argv.index(option)
        with pytest.raises(SystemExit, match=message):
            main(argv[: i + 1] + [value] + argv[i + 2 :])


def test_discrete_words_writes_grids_table_json_and_csv(tmp_path, capsys):
    """A tiny masked-words study (one letter, best-of-N and the clipped first-order SMC): the
    files exist, the rows carry the held-out score, realism and the novel share, and bad values
    are refused."""
    argv = [
        "discrete-words",
        "--tasks",
        "letter",
        "--letters",
        "z",
        "--letter-betas",
        "0.5",
        "--methods",
        "best_of_n",
        "--first-order-clip",
        "3",
        "--particles",
        "2",
        "--seeds",
        "2",
        "--pool-size",
        "16",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    for name in (
        "discrete_words_letter.png",
        *(f"discrete_words.{e}" for e in ("md", "json", "csv")),
    ):
        assert (tmp_path / name).stat().st_size > 100
    record = json.loads((tmp_path / "discrete_words.json").read_text())
    assert record["model"] == "words" and record["steps"] == 16
    assert all(0.0 <= r["novel"] <= r["heldout"] <= 1.0 for r in record["rows"])
    assert all(r["nn_dist"] >= 0.0 for r in record["rows"])
    out = capsys.readouterr().out
    assert "| words | letter | all | 0.5 | 2 | smc_first_order (clip 3) |" in out
    for option, value, message in (
        ("--first-order-clip", "0", "--first-order-clip \\[0.0\\]: each C must be finite"),
        ("--letters", "qu", "--letters qu: `target` of the letter task"),
        ("--letter-betas", "-1", "--letter-betas"),
        ("--tasks", "rhyme", "--tasks rhyme: choose from word, letter"),
    ):
        i = argv.index(option)
        with pytest.raises(SystemExit, match=message):
            main(argv[: i + 1] + [value] + argv[i + 2 :])
