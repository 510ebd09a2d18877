"""Every ```python block of the README runs on its own, as written, in a fresh interpreter.

A block that cannot run here (a 12 B checkpoint, a GPU) is marked by the HTML comment
``<!-- no-run: reason -->`` on the line before its fence; only those are skipped, and they are
listed (:func:`test_only_the_marked_blocks_are_skipped`). A few blocks get a check of what they
computed appended (``CHECKS``), run in the same interpreter after the block.
"""

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(
    r"(?:<!-- no-run: (?P<reason>.*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S
)
NO_RUN = {
    "with real weights": "FLUX.1-schnell",
    "with the real flux, clip and aesthetic weights": "ae.safetensors",
}
"""The blocks expected to be skipped (a phrase of the text before the block: a phrase of the
reason), so that a new ``no-run`` mark is a decision made here too."""
CHECKS = {
    "adapt.run": "assert 0.0 < float(params['step_size']) < 4.0",
    "tilt_quadratic": "assert float(log_z) < 0 and x0_map.shape == (1000, 2) and (nfe > 0).all()",
    "adaptive_tempered_smc": "assert abs(float(state.particles[:, 0].mean()) - 0.8) < 0.1",
    "particle_mesh()": (
        "from jax.sharding import PartitionSpec as P\n"
        "assert sharded.samples.sharding.spec == (P('particles') if mesh.size > 1 else P())"
    ),
    "feynman_kac.run": "assert str(state.particles.dtype) == 'int32'",
    "aesthetic_reward(tower": (
        "assert images.shape == (2, 3, 16, 16)\n"
        "assert jax.jit(jax.vmap(reward_fn))(tokens).shape == (2,)"
    ),
}


def _blocks():
    """``(line, language, code, no-run reason or None, the 300 characters before it)``."""
    text = README.read_text()
    return [
        (text[: m.start()].count("\n") + 1, m["lang"], m["code"], m["reason"], text[: m.start()])
        for m in FENCE.finditer(text)
    ]


PYTHON = [b for b in _blocks() if b[1] == "python"]


def test_code_blocks_are_python_bash_or_bibtex():
    """A ```py or unlabelled block would silently escape the runs below."""
    assert {lang for _, lang, *_ in _blocks()} <= {"python", "bash", "bibtex"}
    assert len(PYTHON) >= 10


def test_only_the_marked_blocks_are_skipped():
    skipped = [(before[-300:], reason) for _, _, _, reason, before in PYTHON if reason]
    assert len(skipped) == len(NO_RUN)
    for context, reason in NO_RUN.items():
        assert any(context in b.lower() and reason in r for b, r in skipped), (context, skipped)


@pytest.mark.parametrize(
    "line, code, reason", [(b[0], b[2], b[3]) for b in PYTHON], ids=[f"line{b[0]}" for b in PYTHON]
)
def test_readme_block_runs_on_its_own(line, code, reason, tmp_path):
    if reason:
        pytest.skip(f"README line {line}: no-run: {reason}")
    checks = [check for key, check in CHECKS.items() if key in code]
    script = code + "\n" + "\n".join(checks) + "\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, f"README line {line}:\n{done.stderr[-3000:]}"


def test_every_check_applies_to_a_block():
    for key in CHECKS:
        assert any(key in code for _, _, code, reason, _ in PYTHON if not reason), key
