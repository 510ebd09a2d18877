"""A conjugate Gaussian target: reference ``N(0, I_d)`` times a likelihood on a few directions.

``y = A x + σ ε`` with ``A`` of shape ``(k, d)``: the log-likelihood depends on ``k`` directions
only, the regime where pCN/pCNL acceptance is dimension-free. With ``M = σ² I_k + A Aᵀ``
(Woodbury),

    posterior mean = Aᵀ M⁻¹ y,    posterior cov = I − Aᵀ M⁻¹ A,    Z = N(y; 0, M),

so the moments of any projection ``uᵀx`` and the normaliser are exact in any dimension
without forming a ``d × d`` matrix. Exact quantities are computed in float64 NumPy; the
log-densities are JAX functions of a single position (float32).
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["ConjugateGaussian", "make_conjugate"]


class ConjugateGaussian(NamedTuple):
    """Likelihood ``N(y; A x, σ² I)`` on the directions ``A`` (rows), prior ``N(0, I)``."""

    directions: np.ndarray
    observations: np.ndarray
    noise_sd: float

    @property
    def dim(self) -> int:
        """``d``, the dimension of a sample."""
        return self.directions.shape[1]

    def loglikelihood(self, x):
        """``−‖A x − y‖² / (2σ²)`` (unnormalised)."""
        a = jnp.asarray(self.directions, jnp.float32)
        resid = a @ x - jnp.asarray(self.observations, jnp.float32)
        return -0.5 * jnp.sum(resid**2) / self.noise_sd**2

    def normalized_loglikelihood(self, x):
        """``log N(y; A x, σ² I)``: its integral against ``N(0, I)`` is :meth:`log_normalizer`."""
        k = self.directions.shape[0]
        return self.loglikelihood(x) - 0.5 * k * np.log(2 * np.pi * self.noise_sd**2)

    def logdensity(self, x):
        """Full unnormalised log-density ``−½‖x‖² + log L(x)``, the input the kernels take."""
        return -0.5 * jnp.sum(x**2) + self.loglikelihood(x)

    def _m(self) -> np.ndarray:
        a = self.directions
        return self.noise_sd**2 * np.eye(a.shape[0]) + a @ a.T

    def projection_moments(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact posterior mean and variance of ``uᵀx`` for each row of ``u`` (shape (n, d))."""
        a, y = self.directions, self.observations
        m_inv = np.linalg.inv(self._m())
        au = a @ np.atleast_2d(u).T
        mean = au.T @ m_inv @ y
        var = np.sum(np.atleast_2d(u) ** 2, axis=1) - np.einsum("kn,kl,ln->n", au, m_inv, au)
        return mean, var

    def log_normalizer(self) -> float:
        """``log Z = log ∫ N(x; 0, I)·N(y; A x, σ² I) dx = log N(y; 0, M)``."""
        m = self._m()
        _, logdet = np.linalg.slogdet(m)
        quad = self.observations @ np.linalg.solve(m, self.observations)
        return float(-0.5 * (m.shape[0] * np.log(2 * np.pi) + logdet + quad))


def make_conjugate(
    dim: int, num_directions: int = 3, noise_sd: float = 0.7, seed: int = 0
) -> ConjugateGaussian:
    """Random orthonormal directions (``min(k, d)`` of them) and ``y`` drawn from the model.

    ``y`` is drawn from its marginal ``N(0, (1 + σ²) I_k)`` with a generator of its own, so for
    a given ``seed`` the observations — and hence the posterior along the directions — are the
    same in every dimension: only ``d`` changes between targets of a dimension sweep.
    """
    if dim < 1 or num_directions < 1:
        raise ValueError(f"`dim` and `num_directions` must be >= 1, got {dim}, {num_directions}.")
    if not noise_sd > 0:
        raise ValueError(f"`noise_sd` must be > 0, got {noise_sd!r}.")
    k = min(num_directions, dim)
    q, _ = np.linalg.qr(np.random.default_rng([seed, dim]).standard_normal((dim, k)))
    y = np.sqrt(1.0 + noise_sd**2) * np.random.default_rng(seed).standard_normal(k)
    return ConjugateGaussian(q.T, y, float(noise_sd))
