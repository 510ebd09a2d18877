"""1 and 8 emulated devices give the same discrete particles (a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, as in tests/smc/test_sharding.py)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from psijax.align import discrete as d
    from psijax.smc import particle_mesh
    from tests.align.discrete.toys import toy

    problem = toy(coupling=0.5).problem
    mesh = particle_mesh()
    out = {"devices": jax.device_count()}
    runs = {
        "smc_first_order": dict(twist=d.Mean(2)),
        "fk_steering": {},
        "smc_reverse": dict(kernel="one_token", annealing=d.annealing(4, 0.5)),
    }
    for name, options in runs.items():
        sampler = d.DISCRETE_SAMPLERS[name]
        one, many = (
            jax.jit(lambda k, m=m: sampler(k, problem, num_particles=16, num_steps=4, mesh=m,
                                           **options))(jax.random.key(3))
            for m in (None, mesh)
        )
        out[name] = {
            "samples": [np.asarray(r.samples).tolist() for r in (one, many)],
            "log_weights": [np.asarray(r.log_weights).tolist() for r in (one, many)],
            "log_normalizer": [float(r.log_normalizer) for r in (one, many)],
            "devices": len(many.samples.sharding.device_set),
        }
    json.dump(out, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = {**os.environ, "XLA_FLAGS": flags.strip()}
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", ["smc_first_order", "fk_steering", "smc_reverse"])
def test_eight_devices_give_the_single_device_particles(eight_devices, name):
    """The tokens are equal; weights and ``log Ẑ`` agree to float32 rounding (1e-5)."""
    assert eight_devices["devices"] == 8
    run = eight_devices[name]
    one, many = (np.asarray(s) for s in run["samples"])
    np.testing.assert_array_equal(one, many)
    w1, w8 = (np.asarray(w) for w in run["log_weights"])
    np.testing.assert_allclose(w1, w8, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(*run["log_normalizer"], rtol=1e-5, atol=1e-5)
    assert run["devices"] == 8
    assert len(np.unique(one, axis=0)) > 1
