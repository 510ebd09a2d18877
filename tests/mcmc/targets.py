"""Targets with exact answers for the kernel tests, and a jitted chain runner.

``ConjugateGaussian`` lives in :mod:`psijax.models.conjugate` (the benchmarks use it too).
"""

import jax
import jax.numpy as jnp

from psijax.models.conjugate import ConjugateGaussian, make_conjugate  # noqa: F401


def run_chains(algorithm, positions, num_steps: int, seed: int = 0):
    """Run vmapped chains from ``positions`` (leading chain axis) under one jit.

    Returns the final states and the per-step mean acceptance rate.
    """
    num_chains = jax.tree.leaves(positions)[0].shape[0]

    @jax.jit
    def run(key, positions):
        states = jax.vmap(algorithm.init)(positions)

        def body(states, key):
            states, info = jax.vmap(algorithm.step)(jax.random.split(key, num_chains), states)
            return states, jnp.mean(info.acceptance_rate)

        return jax.lax.scan(body, states, jax.random.split(key, num_steps))

    return run(jax.random.key(seed), positions)
