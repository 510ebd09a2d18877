"""Small masked-diffusion problems with every exact answer (shared by the discrete tests).

``L = 4`` positions, ``V = 3`` tokens (256 partially masked states): an HMM or a mixture of
products with its exact denoiser, the chain-coupled quadratic reward of docs/algorithms.md
§10.6 (smooth in the one-hot) and the exact ``P^T``, soft values, ``π`` and ``Z`` of the
dynamic programme (:mod:`psijax.discrete.exact`), computed in float64.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from psijax.align.discrete import DiscreteProblem
from psijax.discrete import exact
from psijax.models.masked_toys import HMM, MixtureOfProducts

L, V = 4, 3


class Toy(NamedTuple):
    problem: DiscreteProblem
    num_steps: int
    log_target: np.ndarray  # (K,) over exact.enumerate_states
    log_z: float
    log_values: np.ndarray  # (T + 1, K)
    log_marginal: np.ndarray


def quadratic_reward(coupling: float = 0.5, seed: int = 5):
    """``r(E) = Σ_l ⟨w_l, E_l⟩ + Σ_l E_lᵀ J E_{l+1}`` (mask column of ``w`` zero)."""
    w = jax.random.normal(jax.random.key(seed), (L, V + 1)).at[:, -1].set(0.0)
    j = coupling * jax.random.normal(jax.random.key(seed + 1), (V + 1, V + 1))
    j = j.at[-1].set(0.0).at[:, -1].set(0.0)

    def reward(e):
        return jnp.sum(w * e) + jnp.einsum("ls,st,lt->", e[:-1], j, e[1:])

    return reward


@functools.cache
def toy(
    model: str = "hmm",
    coupling: float = 0.0,
    beta: float = 1.0,
    num_steps: int = 4,
    kernel: str = "mdlm",
) -> Toy:
    if model == "hmm":
        m = HMM.random(jax.random.key(1), 2, L, V)
    else:
        m = MixtureOfProducts.random(jax.random.key(2), 2, L, V, 1.0)
    reward = quadratic_reward(coupling)
    problem = DiscreteProblem(m.logits, reward, L, V, beta=beta)
    with jax.enable_x64(True):
        log_p, log_matrix = exact.sampler_marginal(
            m.logits, L, V, num_steps=num_steps, kernel=kernel
        )
        states = exact.enumerate_states(L, V)
        terminal = exact.terminal_log_values(reward, states, V, beta)
        log_pi, log_z = exact.tilted_target(log_p, terminal)
        log_values = exact.backward(log_matrix, num_steps, terminal)
    return Toy(
        problem,
        num_steps,
        np.asarray(log_pi),
        float(log_z),
        np.asarray(log_values),
        np.asarray(log_p),
    )
