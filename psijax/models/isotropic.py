r"""Gaussian mixtures with one isotropic covariance ``s²I``: the exact velocity in ``O(K·d)``.

:class:`psijax.models.gmm.GaussianMixture` handles any covariances with a Cholesky factor per
component and evaluation, ``O(K·d³)``: fine in 2 or 8 dimensions, not in 512. With every
covariance ``s²I`` the interpolant's component marginals are ``N((1 − t)μ_k, S_t I)`` with the
scalar ``S_t = (1 − t)²s² + t²``, and docs/algorithms.md §7 becomes

.. math::

    π_k ∝ w_k \exp\big(−‖x − (1 − t)μ_k‖² / 2S_t\big), \qquad
    v(x, t) = Σ_k π_k \Big(−μ_k + \frac{t − (1 − t)s²}{S_t}\,(x − (1 − t)μ_k)\Big),

finite at ``t = 0`` and ``t = 1``; ``x̂0 = x − t·v``. :attr:`IsotropicMixture.mixture` is the same
law as a :class:`~psijax.models.gmm.GaussianMixture`, for sampling and the exact reward tilts.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike

from psijax.models.gmm import GaussianMixture

__all__ = ["IsotropicMixture"]


@dataclasses.dataclass(frozen=True, eq=False)
class IsotropicMixture:
    """``Σ_k w_k N(μ_k, s² I)`` in ``d`` dimensions.

    Parameters
    ----------
    weights
        ``(K,)`` positive, normalised to sum to one.
    means
        ``(K, d)``.
    std
        ``s > 0``, shared by every component and coordinate.

    Stored as float32 NumPy; a ``ValueError`` names an invalid argument.
    """

    weights: np.ndarray
    means: np.ndarray
    std: float

    def __post_init__(self):
        weights = np.asarray(self.weights, np.float64)
        means = np.asarray(self.means, np.float64)
        if (
            weights.ndim != 1
            or weights.size < 1
            or not np.all(np.isfinite(weights) & (weights > 0))
        ):
            raise ValueError(f"`weights` must be a 1-D array of positive numbers, got {weights!r}.")
        if means.shape[:1] != weights.shape or means.ndim != 2 or not np.all(np.isfinite(means)):
            raise ValueError(
                f"`means` must be a finite array of shape ({weights.size}, d), got {means.shape}."
            )
        std = float(self.std)
        if not (np.isfinite(std) and std > 0):
            raise ValueError(f"`std` must be a finite number > 0, got {self.std!r}.")
        object.__setattr__(self, "weights", (weights / weights.sum()).astype(np.float32))
        object.__setattr__(self, "means", means.astype(np.float32))
        object.__setattr__(self, "std", std)

    @property
    def dim(self) -> int:
        """``d``."""
        return self.means.shape[1]

    @property
    def mixture(self) -> GaussianMixture:
        """The same law as a :class:`~psijax.models.gmm.GaussianMixture` (full covariances)."""
        covs = np.tile(self.std**2 * np.eye(self.dim, dtype=np.float32), (len(self.weights), 1, 1))
        return GaussianMixture(self.weights, self.means, covs)

    def velocity(self, x: ArrayLike, t: ArrayLike) -> Array:
        """The exact velocity ``v(x, t)`` (module docstring) on a single ``x`` of shape ``(d,)``."""
        x = jnp.asarray(x, jnp.float32)
        t = jnp.asarray(t, jnp.float32)
        means = jnp.asarray(self.means)
        s2 = self.std**2
        var = (1.0 - t) ** 2 * s2 + t**2
        diff = x - (1.0 - t) * means  # (K, d)
        logits = jnp.log(jnp.asarray(self.weights)) - 0.5 * jnp.sum(diff**2, axis=1) / var
        resp = jax.nn.softmax(logits)
        return resp @ (-means + ((t - (1.0 - t) * s2) / var) * diff)

    def tweedie(self, x: ArrayLike, t: ArrayLike) -> Array:
        """``x̂0 = E[x0 | x_t = x] = x − t·v(x, t)``."""
        return jnp.asarray(x, jnp.float32) - t * self.velocity(x, t)
