"""``psijax._tree.static_partial``: Partials built from equal static parts share one tree
structure, so ``jit`` compiles once for all of them (the FLUX run's one compilation per
session); with a plain ``functools.partial`` it compiles for each."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from psijax._tree import static_partial


def _affine(options, scale, x):
    return options[0] * scale * x + options[1]


def _calls(make):
    """The values and the jit cache size after calling one jitted function on four Partials
    made by ``make`` from equal static parts (fresh tuples each time) and different leaves."""

    @jax.jit
    def apply(fn, x):
        return fn(x)

    values = [
        apply(jax.tree_util.Partial(make(_affine, (2.0, 1.0)), jnp.float32(s)), jnp.ones(3))
        for s in range(4)
    ]
    return values, apply._cache_size()


def test_equal_static_parts_compile_once_and_compute_the_same():
    values, size = _calls(static_partial)
    assert size == 1
    want = [2.0 * s + 1.0 for s in range(4)]
    np.testing.assert_allclose([float(v[0]) for v in values], want)
    plain_values, plain_size = _calls(functools.partial)
    assert plain_size == 4  # what static_partial avoids
    np.testing.assert_array_equal(np.asarray(values), np.asarray(plain_values))
    assert static_partial(_affine, (2.0, 1.0)) is static_partial(_affine, (2.0, 1.0))
    assert static_partial(_affine, (2.0, 3.0)) is not static_partial(_affine, (2.0, 1.0))
