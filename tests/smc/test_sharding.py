"""The particle axis over a device mesh: 8 emulated CPU devices give the single-device result.

The multi-device checks run in one subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set before JAX starts,
and this process has already started it with one device). The subprocess compiles each sampler
twice (without and with the mesh) at small sizes and reports JSON; the tests read it.
The results agree within float32 rounding (the same operations run, block-wise; XLA may fuse
or order the partitioned arithmetic differently).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from psijax.smc import sharding

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from psijax import align
    from psijax.experiments.toy import exact_problem
    from psijax.smc import particle_mesh, sharding

    problem = exact_problem("six_modes_quadratic")
    mesh = particle_mesh()
    import time
    out = {"devices": jax.device_count(), "seconds": {}}
    runs = {
        # pCNL chains under shard_map, then resampling across devices at every step (κ = 1)
        "psi_sampler": dict(num_particles=16, num_chains=8, burn_in=3, num_kept=4,
                            ess_threshold=1.0),
        # the default 5 chains on 8 devices: padded with 3 discarded chains (also adapting h)
        "psi_5_chains": dict(num_particles=16, burn_in=3, num_kept=4),
        "psi_5_adapted": dict(num_particles=16, burn_in=3, num_kept=4, adapt=True),
        "top_k_smc": dict(num_particles=8, num_candidates=24),
        # BlackJAX's tempered loop, partitioned by jit from the sharded particles
        "tempered_smc": dict(num_particles=16, num_mcmc_steps=2),
        "freedom": dict(num_particles=8, num_repeats=1),
        "best_of_n": dict(num_particles=8),
    }
    for name, options in runs.items():
        start = time.perf_counter()
        sampler = align.SAMPLERS["psi_sampler" if name.startswith("psi") else name]
        one, many = (
            jax.jit(lambda key, m=m: sampler(key, problem, num_steps=4, mesh=m, **options))(
                jax.random.key(7)
            )
            for m in (None, mesh)
        )
        out[name] = {
            "samples": [np.asarray(one.samples).tolist(), np.asarray(many.samples).tolist()],
            "log_weights": [np.asarray(one.log_weights).tolist(),
                            np.asarray(many.log_weights).tolist()],
            "log_normalizer": [float(one.log_normalizer), float(many.log_normalizer)],
            "nfe": [int(one.nfe), int(many.nfe)],
            "init": [None if r.info.init is None else
                     [np.asarray(r.info.init.acceptance_rate).tolist(),
                      float(r.info.init.step_size)] for r in (one, many)],
            "sharded": not many.samples.sharding.is_fully_replicated,
            "devices": len(many.samples.sharding.device_set),
        }
        out["seconds"][name] = time.perf_counter() - start
    # eager (no jit) use with a mesh: best-of-N again, unjitted
    eager = align.best_of_n(jax.random.key(7), problem, num_steps=4, mesh=mesh, **runs["best_of_n"])
    out["eager"] = np.asarray(eager.samples).tolist()
    def device_of_each_particle(m):
        where = lambda x: jax.lax.axis_index(m.axis_names) + 0 * x[0].astype(jnp.int32)
        return np.asarray(sharding.map_particles(where, m)(jnp.ones((16, 3)))).tolist()

    grid = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(2, 4), ("hosts", "local"))
    out["blocks"] = {"line": device_of_each_particle(mesh), "grid": device_of_each_particle(grid)}
    errors = {}
    for label, call in {
        "smc": lambda: align.psi_sampler(jax.random.key(0), problem, num_particles=20,
                                         num_chains=8, mesh=mesh),
        "candidates": lambda: align.top_k_smc(jax.random.key(0), problem, num_particles=8,
                                              num_candidates=20, mesh=mesh),
        "guided": lambda: align.dps(jax.random.key(0), problem, num_particles=12, mesh=mesh),
        "budget": lambda: align.tds(jax.random.key(0), problem, nfe_budget=100, num_steps=5,
                                    mesh=mesh),
    }.items():
        try:
            call()
            errors[label] = None
        except ValueError as e:
            errors[label] = str(e)
    out["errors"] = errors
    json.dump(out, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = {**os.environ, "XLA_FLAGS": flags.strip()}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "name",
    [
        "psi_sampler",
        "psi_5_chains",
        "psi_5_adapted",
        "top_k_smc",
        "tempered_smc",
        "freedom",
        "best_of_n",
    ],
)
def test_eight_devices_give_the_single_device_result(eight_devices, name):
    """Samples, log-weights and ``log Ẑ`` agree to float32 rounding (1e-5: XLA may fuse or
    order the partitioned arithmetic differently, measured ≤ 3e-7); the result is spread over
    all 8 devices. The default 5 chains run on 8 devices padded with discarded chains (whose
    states, acceptance and NFE are not reported), so the NFE is the 1-device one too."""
    assert eight_devices["devices"] == 8
    run = eight_devices[name]
    one, many = (np.asarray(s) for s in run["samples"])
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-5)
    w1, w8 = (np.asarray(w) for w in run["log_weights"])
    np.testing.assert_array_equal(np.isfinite(w1), np.isfinite(w8))
    np.testing.assert_allclose(w1[np.isfinite(w1)], w8[np.isfinite(w8)], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(*run["log_normalizer"], rtol=1e-5, atol=1e-5, equal_nan=True)
    assert run["nfe"][0] == run["nfe"][1]
    if run["init"][0] is not None:  # acceptance of each (real) chain and the (adapted) step
        (acc1, h1), (acc8, h8) = run["init"]
        assert len(acc1) == len(acc8)
        np.testing.assert_allclose(acc1, acc8, rtol=1e-5, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(h1, h8, rtol=1e-5, equal_nan=True)
    assert run["sharded"] and run["devices"] == 8
    assert not np.all(one == one[:1])  # the particles differ: equality is not trivial


def test_eager_use_with_a_mesh_matches(eight_devices):
    single = np.asarray(eight_devices["best_of_n"]["samples"][0])
    np.testing.assert_allclose(eight_devices["eager"], single, rtol=1e-5, atol=1e-5)


def test_each_device_evaluates_its_own_contiguous_block(eight_devices):
    """16 particles on 8 devices: particles 2d, 2d + 1 on device d; a 2 × 4 mesh flattens its
    axes into one particle axis in row-major order."""
    blocks = eight_devices["blocks"]
    assert blocks["line"] == np.repeat(np.arange(8), 2).tolist()
    assert blocks["grid"] == np.repeat(np.arange(8), 2).tolist()


@pytest.mark.parametrize(
    "label, fragment",
    [
        ("smc", "`num_particles`=20 must be a multiple of the mesh's 8 devices"),
        ("candidates", "`num_candidates`=20 must be a multiple of the mesh's 8 devices"),
        ("guided", "`num_particles`=12 must be a multiple of the mesh's 8 devices"),
        ("budget", "`num_particles`=20 (from nfe_budget=100) must be a multiple"),
    ],
)
def test_indivisible_counts_are_rejected_by_name(eight_devices, label, fragment):
    assert fragment in eight_devices["errors"][label]


# ----------------------------------------------------------------------------------------------
# In-process (one device)
# ----------------------------------------------------------------------------------------------
def test_check_divisible_suggests_the_nearest_multiples():
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("particles",))
    sharding.check_divisible(mesh, 7, "num_particles")  # one device divides everything
    sharding.check_divisible(None, 7, "num_particles")

    class FakeMesh:  # check_divisible reads only `.size`
        size = 8

    with pytest.raises(ValueError, match=r"`num_chains`=20 .* use 16 or 24"):
        sharding.check_divisible(FakeMesh(), 20, "num_chains")
    with pytest.raises(ValueError, match=r"`num_particles`=5 .* use 8,"):
        sharding.check_divisible(FakeMesh(), 5, "num_particles")


def test_a_mesh_of_the_wrong_type_is_a_type_error():
    from psijax import align
    from psijax.experiments.toy import exact_problem

    problem = exact_problem("six_modes_quadratic")
    with pytest.raises(TypeError, match="`mesh` must be a jax.sharding.Mesh"):
        align.tds(jax.random.key(0), problem, num_particles=4, mesh=jax.devices())


def test_map_particles_is_vmap_without_a_mesh_and_on_one_device():
    def fn(x, t):
        return jnp.sin(x) * t, jnp.sum(x)

    x = jnp.arange(12.0).reshape(4, 3)
    expected = jax.vmap(fn, in_axes=(0, None))(x, 2.0)
    for mesh in (None, sharding.particle_mesh(jax.devices()[:1])):
        got = sharding.map_particles(fn, mesh, in_axes=(0, None))(x, 2.0)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="`in_axes` has 1 entries for 2 arguments"):
        sharding.map_particles(fn, sharding.particle_mesh(), in_axes=(0,))(x, 2.0)


@pytest.mark.parametrize("chunk", [1, 3, 7, 20])
def test_map_particles_in_chunks_equals_vmap(chunk):
    """``chunk`` runs the particles a few at a time (a remainder too) with the same results;
    arguments with axis ``None`` are shared."""
    x = jnp.arange(7.0 * 3).reshape(7, 3)
    w = jnp.array([1.0, -2.0, 0.5])
    fn = lambda a, b, c: (jnp.tanh(a * b).sum(), a * c)  # noqa: E731
    expected = jax.vmap(fn, in_axes=(0, None, 0))(x, w, x + 1)
    out = jax.jit(sharding.map_particles(fn, None, (0, None, 0), chunk))(x, w, x + 1)
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (
        "while"
        in jax.jit(sharding.map_particles(fn, None, (0, None, 0), 3)).lower(x, w, x + 1).as_text()
    )
