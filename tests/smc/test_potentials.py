"""The Feynman–Kac potentials over log-twists (``psijax.smc.potentials``).

For every potential the product of the potentials along a path is ``e^{s_T}`` (the last one
divides by the earlier ones), whatever the intermediate log-twists; each applies its own
statistic in between.
"""

import numpy as np
import pytest

from psijax.smc import potentials

S = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)  # s_0 … s_5, 5 particles


def _path(potential):
    log_g, path = potential.init(S[0])
    applied = [log_g]
    for i in range(1, S.shape[0]):
        log_g, path = potential.update(path, S[i], final=i == S.shape[0] - 1)
        applied.append(log_g)
    return np.stack(applied)


@pytest.mark.parametrize("name", sorted(potentials.POTENTIALS))
def test_product_of_the_potentials_is_the_final_tilt(name):
    applied = _path(potentials.POTENTIALS[name]())
    np.testing.assert_allclose(applied.sum(0), S[-1], rtol=1e-5, atol=1e-5)


def test_each_potential_applies_its_statistic():
    np.testing.assert_allclose(_path(potentials.Difference())[1:-1], np.diff(S, axis=0)[:-1])
    np.testing.assert_allclose(
        _path(potentials.Max())[1:-1], np.maximum.accumulate(S, axis=0)[1:-1]
    )
    np.testing.assert_allclose(_path(potentials.Sum())[1:-1], np.cumsum(S, axis=0)[1:-1], rtol=1e-5)
    np.testing.assert_allclose(_path(potentials.Current())[1:-1], S[1:-1])
