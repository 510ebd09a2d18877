"""The README's Python examples run as written (with the few names they assume defined)."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _namespace():
    def loglikelihood(x):
        return -2.0 * (x[0] - 1.0) ** 2

    return {
        "loglikelihood": loglikelihood,
        "initial_positions": jax.random.normal(jax.random.key(0), (5, 64)),
        "x0": jnp.zeros(3),
    }


def test_readme_examples_run():
    """Each python block runs after the ones before it (they build on each other)."""
    blocks = _blocks()
    assert len(blocks) >= 4
    ns = _namespace()
    step_sizes = []
    for block in blocks:
        block = block.replace("num_steps=300", "num_steps=30").replace(
            "num_steps=1_000", "num_steps=50"
        )
        block = block.replace("jnp.zeros(65_536)", "jnp.zeros(64)").replace("4000", "400")
        exec(compile(block, str(README), "exec"), ns)
        if "adapt.run" in block:
            step_sizes.append(float(ns["params"]["step_size"]))
    # Values the examples compute: a tuned step in (0, 4); a tilted mixture's normalizer.
    assert len(step_sizes) == 1 and 0.0 < step_sizes[0] < 4.0
    assert np.isfinite(float(ns["log_z"])) and float(ns["log_z"]) < 0.0
    assert ns["x0_map"].shape == (400, 2) and np.all(np.asarray(ns["nfe"]) > 0)
