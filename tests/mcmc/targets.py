"""Targets with exact answers for the kernel tests.

``ConjugateGaussian``: reference ``N(0, I_d)`` times a Gaussian likelihood on ``k`` directions,
``y = A x + σ ε``. The posterior is Gaussian; by Woodbury, with ``M = σ² I_k + A Aᵀ``,

    mean = Aᵀ M⁻¹ y,      cov = I − Aᵀ M⁻¹ A,      Z = N(y; 0, M).

Moments of projections ``uᵀx`` are therefore exact in any dimension without a ``d × d`` matrix.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ConjugateGaussian(NamedTuple):
    directions: np.ndarray  # (k, d), float64
    observations: np.ndarray  # (k,)
    noise_sd: float

    @property
    def dim(self) -> int:
        return self.directions.shape[1]

    def loglikelihood(self, x):
        a = jnp.asarray(self.directions, jnp.float32)
        resid = a @ x - jnp.asarray(self.observations, jnp.float32)
        return -0.5 * jnp.sum(resid**2) / self.noise_sd**2

    def logdensity(self, x):
        """Full log-density (unnormalised): ``log N(x; 0, I) + log L(x)``."""
        return -0.5 * jnp.sum(x**2) + self.loglikelihood(x)

    def _m(self):
        a = self.directions
        return self.noise_sd**2 * np.eye(a.shape[0]) + a @ a.T

    def projection_moments(self, u: np.ndarray):
        """Exact posterior mean and variance of ``uᵀx`` for each row of ``u`` (n, d)."""
        a, y = self.directions, self.observations
        m_inv = np.linalg.inv(self._m())
        au = a @ u.T  # (k, n)
        mean = au.T @ m_inv @ y
        var = np.sum(u * u, axis=1) - np.einsum("kn,kl,ln->n", au, m_inv, au)
        return mean, var

    def log_normalizer(self) -> float:
        """``log Z = log ∫ N(x; 0, I) L(x) dx`` with ``L`` the normalised Gaussian likelihood."""
        m = self._m()
        k = m.shape[0]
        _, logdet = np.linalg.slogdet(m)
        quad = self.observations @ np.linalg.solve(m, self.observations)
        return float(-0.5 * (k * np.log(2 * np.pi) + logdet + quad))

    def normalized_loglikelihood(self, x):
        """``log N(y; A x, σ² I)`` — the likelihood whose integral against N(0, I) is ``Z``."""
        k = self.directions.shape[0]
        const = -0.5 * k * np.log(2 * np.pi * self.noise_sd**2)
        return self.loglikelihood(x) + const


def make_conjugate(dim: int, num_directions: int = 3, noise_sd: float = 0.7, seed: int = 0):
    """Random orthonormal likelihood directions and observations drawn from the model."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, num_directions)))
    directions = q.T[:num_directions] if dim >= num_directions else q.T
    truth = rng.standard_normal(dim)
    y = directions @ truth + noise_sd * rng.standard_normal(directions.shape[0])
    return ConjugateGaussian(directions, y, float(noise_sd))


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
