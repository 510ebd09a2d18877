"""A newcomer's first hour with the ``psijax`` command: no silently wrong answer and no raw
traceback for bad input (a budget beyond the machine's memory, an ``--out`` that cannot be
written, scikit-learn missing), ``--version``, a fast ``--help`` whose every option shows its
default, and tables that say how to read them. None of these runs a study."""

import argparse
import pathlib
import subprocess
import sys
import time

import pytest

from psijax import cli
from psijax.cli import build_parser, main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices


# -- --help and --version ------------------------------------------------------------------------
def test_help_does_not_import_jax_and_is_fast():
    """Building the parser and printing ``psijax --help`` loads neither JAX nor BlackJAX (the
    method names of a subcommand's help are filled in only when that help is shown)."""
    script = (
        "import sys, time; t = time.perf_counter(); from psijax.cli import build_parser; "
        "build_parser().format_help(); print(time.perf_counter() - t, "
        "sorted(m for m in ('jax', 'blackjax') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out[1:] == ["[]"], out
    assert float(out[0]) < 1.0  # measured: 0.05 s (loaded machine margin)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "psijax.cli", "--help"], check=True, timeout=60,
                   capture_output=True)  # fmt: skip
    assert time.perf_counter() - start < 5.0  # interpreter start included; measured 0.1 s


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from importlib import metadata

    assert capsys.readouterr().out.strip() == f"psijax {metadata.version('psijax')}"


def test_every_option_of_every_command_has_help_showing_its_default():
    for name, sub in _subcommands(build_parser()).items():
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            option = f"{name} {action.option_strings}"
            assert action.help, f"{option} has no help"
            if isinstance(action, argparse._StoreTrueAction):
                continue  # a flag: its default is "off"
            shows = "%(default)s" in action.help
            shows |= action.default is None and "(default: " in action.help
            assert shows, f"{option}'s help does not show its default: {action.help!r}"


def test_subcommand_help_lists_the_methods(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "psi_sampler" in text and "{methods}" not in text


# -- memory ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--budget", "1000000000"],
        ["toy", "--budget", "1000000000", "--models", "exact"],
        ["bench", "--particles", "100000000"],
        ["acceptance", "--dims", "16", "10000000000"],
    ],
)
def test_a_run_beyond_the_machines_memory_is_refused_before_it_starts(argv, monkeypatch):
    monkeypatch.setattr(cli, "available_memory", lambda: 16 * 10**9)
    start = time.perf_counter()
    with pytest.raises(SystemExit, match=r"psijax: --\S+ \d+: needs about [\d.]+ GB .*has 16.0 GB"):
        main(argv + ["--no-progress"])
    assert time.perf_counter() - start < 30  # nothing ran (measured: about 2 s)


def test_memory_estimate_is_conservative_and_lets_the_defaults_run():
    """At B = 1e9 the demo died at 72 GB; the estimate must exceed that. The default demo
    (B = 1000, two settings) must fit a small laptop."""
    big = cli.toy_memory_bytes(10**9, 25, 2, num_settings=2)
    assert big > 72e9
    assert cli.toy_memory_bytes(1000, 25, 2, num_settings=2) < 4e9
    assert cli.digits_memory_bytes(1000, 25, 512) < 4e9


def test_available_memory_falls_back(monkeypatch):
    assert cli.available_memory() is None or cli.available_memory() > 10**8

    def broken(name):
        raise ValueError(name)

    monkeypatch.setattr(cli.os, "sysconf", broken)
    fallback = cli.available_memory()  # /proc/meminfo where there is one
    assert fallback is None or fallback > 10**8
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    assert cli.available_memory() is None
    cli._check_memory(10**15, "--budget 1")  # unknown memory: no refusal


# -- --out ----------------------------------------------------------------------------------------
def test_out_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    with pytest.raises(SystemExit, match=f"psijax: --out {path}: is a file, not a folder"):
        main(["demo", "--out", str(path)])
    with pytest.raises(SystemExit, match=f"psijax: --out {path}/sub: {path} is a file"):
        main(["bench", "--out", str(path / "sub")])
    assert path.read_text() == "keep me"


def test_out_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", denied)
    with pytest.raises(SystemExit, match="psijax: --out .*: cannot write there.*Permission denied"):
        main(["acceptance", "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


def test_default_out_folders_are_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for name, sub in _subcommands(build_parser()).items():
        (out,) = [a.default for a in sub._actions if "--out" in a.option_strings]
        assert f"{out}/" in ignored, name


# -- digits without scikit-learn -------------------------------------------------------------------
def test_digits_without_sklearn_says_how_to_install_it(monkeypatch):
    for name in ("sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, name, None)  # `import sklearn` now fails
    with pytest.raises(
        SystemExit, match=r'psijax digits: .*scikit-learn.*pip install -e "\.\[digits\]"'
    ):
        main(["digits", "--no-progress"])
    from psijax.models import digits

    with pytest.raises(ImportError, match=r"pip install scikit-learn") as info:
        digits.load_digits()
    assert "\n" not in str(info.value)


def test_readme_lists_the_digits_extra():
    assert '`pip install -e ".[digits]"`' in (ROOT / "README.md").read_text()


# -- how to read the toy tables --------------------------------------------------------------------
def test_toy_notes_explain_the_rows_the_errors_and_psi_samplers_rank():
    from psijax.experiments import toy_report

    def row(method, n, tv, model="exact"):
        keys = {"preset": "p", "model": model, "budget": 1000, "method": method}
        return keys | {"num_particles": n, "mode_tv": tv}

    summary = [row("exact target (iid)", 40, 0.05), row("SMC limit (IS)", 10_000, 0.01)]
    summary += [row("smc", 40, 0.1), row("psi_sampler", 20, 0.2), row("das", 40, 0.08)]
    notes = toy_report.format_notes(summary)
    for text in ("`exact target (iid)`", "`SMC limit (IS)`", "standard error", "Lower is better"):
        assert text in notes
    assert "ranks 3 of 3 on mode TV (0.200), with 20 SMC particles against 40" in notes
    assert "Tweedie" in notes and "pCN chains" in notes
    summary[3]["mode_tv"] = 0.01
    assert "ranks 1 of 3" in toy_report.format_notes(summary)
    assert "psi" not in toy_report.format_notes(summary[:3]).lower()
