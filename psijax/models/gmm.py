"""Gaussian-mixture data with exact flow quantities and exact reward tilts.

``p_0(x) = Σ_k w_k N(x; μ_k, Σ_k)`` in any dimension ``d``. Under the interpolant
``x_t = (1 − t)·x0 + t·x1`` (``x1 ~ N(0, I)``, t = 1 noise, t = 0 data) component ``k`` has

    x_t | k ~ N(m_k, S_k),      m_k = (1 − t)·μ_k,      S_k = (1 − t)²·Σ_k + t²·I,

and, with responsibilities ``π_k(x, t) ∝ w_k N(x; m_k, S_k)`` and ``y_k = S_k⁻¹(x − m_k)``,

    x̂0(x, t) = E[x0 | x_t = x]      = Σ_k π_k (μ_k + (1 − t)·Σ_k y_k)
    v(x, t)  = E[x1 − x0 | x_t = x] = Σ_k π_k (−μ_k + (t·I − (1 − t)·Σ_k) y_k)
    s(x, t)  = ∇ log p_t(x)         = −Σ_k π_k y_k.

These per-component forms are finite on the closed interval ``t ∈ [0, 1]``, unlike
``(x − x̂0)/t``. All solves use Cholesky factors. Rewards ``r(x) = −½(x − c)ᵀA(x − c)``
(:meth:`GaussianMixture.tilt_quadratic`) and ``r = α·log q`` with ``q`` another mixture
(:meth:`GaussianMixture.tilt_mixture`) tilt the mixture in closed form, with the exact
``log Z = log E_p[exp(r/α)]``. Arithmetic is float32 (float64 when the inputs are and x64 is on).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey
from jax.scipy.linalg import solve_triangular

from psijax._checks import check_real, concrete_value

__all__ = ["GaussianMixture", "WEIGHT_TOLERANCE"]

WEIGHT_TOLERANCE = 1e-4
"""Largest accepted ``|Σ_k w_k − 1|``; weights within it are renormalized to sum to one."""


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """``p(x) = Σ_k w_k N(x; μ_k, Σ_k)``, a JAX pytree (it passes through ``jit``/``vmap``).

    Parameters
    ----------
    weights
        ``(K,)`` non-negative, summing to one within :data:`WEIGHT_TOLERANCE` (then renormalized).
    means
        ``(K, d)``.
    covs
        ``(K, d, d)`` symmetric positive definite.

    Values are validated when they are concrete (shapes always); a ``ValueError`` names the
    offending argument. Every method acts on a **single** point ``x`` of shape ``(d,)``.
    """

    weights: Array
    means: Array
    covs: Array

    def __post_init__(self):
        for name, value in zip(
            ("weights", "means", "covs"), _validated(*self.tree_flatten()[0]), strict=True
        ):
            object.__setattr__(self, name, value)

    # -- pytree -------------------------------------------------------------------------------
    def tree_flatten(self):
        """Pytree protocol: the leaves ``(weights, means, covs)``, no static data."""
        return (self.weights, self.means, self.covs), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        """Pytree protocol: rebuild from the leaves without re-validating them (they may be
        tracers)."""
        return _unchecked(*children)

    # -- shape and moments --------------------------------------------------------------------
    @property
    def num_components(self) -> int:
        """``K``, the number of components."""
        return self.weights.shape[0]

    @property
    def dim(self) -> int:
        """``d``, the dimension of a sample."""
        return self.means.shape[1]

    def mean(self) -> Array:
        """``E[x] = Σ_k w_k μ_k``."""
        return self.weights @ self.means

    def covariance(self) -> Array:
        """``Cov[x] = Σ_k w_k (Σ_k + μ_k μ_kᵀ) − E[x] E[x]ᵀ``."""
        second = jnp.einsum("k,kij->ij", self.weights, self.covs)
        centred = self.means - self.mean()
        return second + jnp.einsum("k,ki,kj->ij", self.weights, centred, centred)

    # -- density and sampling -----------------------------------------------------------------
    def component_log_probs(self, x: ArrayLike) -> Array:
        """``log w_k + log N(x; μ_k, Σ_k)`` for each ``k``, shape ``(K,)``."""
        logpdf, _ = _gaussian_terms(jnp.asarray(x, self.means.dtype), self.means, self.covs)
        return jnp.log(self.weights) + logpdf

    def log_prob(self, x: ArrayLike) -> Array:
        """``log p(x) = logsumexp_k (log w_k + log N(x; μ_k, Σ_k))``."""
        return jax.nn.logsumexp(self.component_log_probs(x))

    def sample(self, rng_key: PRNGKey, n: int) -> Array:
        """``n`` draws ``(n, d)``: ``k ~ Cat(w)``, ``x = μ_k + L_k z``, ``L_k L_kᵀ = Σ_k``.

        Every factor is applied to every draw and the draw's own column kept: memory
        ``K·n·d``, never the ``n·d²`` of gathering a factor per draw."""
        key_k, key_z = jax.random.split(rng_key)
        k = jax.random.categorical(key_k, jnp.log(self.weights), shape=(n,))
        z = jax.random.normal(key_z, (n, self.dim), self.means.dtype)
        chol = jnp.linalg.cholesky(self.covs)
        scaled = jnp.einsum("kij,nj->kni", chol, z)
        return self.means[k] + jnp.take_along_axis(scaled, k[None, :, None], axis=0)[0]

    def nearest_component(self, x: ArrayLike) -> Array:
        """Index of the component with the highest responsibility at ``t = 0``.

        ``argmax_k w_k N(x; μ_k, Σ_k)``: the Bayes assignment of ``x`` to a mode. With equal
        weights and equal isotropic covariances it is the nearest mean; otherwise it accounts
        for the weights and shapes (a point between an elongated and a round mode goes to the
        one that explains it better, not to the closer mean).
        """
        return jnp.argmax(self.component_log_probs(x))

    # -- flow quantities ----------------------------------------------------------------------
    def marginal(self, t: ArrayLike) -> "GaussianMixture":
        """The law of ``x_t``: weights ``w_k``, means ``(1 − t)μ_k``, covs ``(1 − t)²Σ_k + t²I``."""
        t = jnp.asarray(t, self.means.dtype)
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        return _unchecked(self.weights, (1 - t) * self.means, (1 - t) ** 2 * self.covs + t**2 * eye)

    def responsibilities(self, x: ArrayLike, t: ArrayLike) -> Array:
        """``π_k(x, t) = w_k N(x; m_k, S_k) / Σ_j w_j N(x; m_j, S_j)`` (log-sum-exp), ``(K,)``."""
        log_resp, _ = self._posterior_terms(x, t)
        return jnp.exp(log_resp)

    def tweedie(self, x: ArrayLike, t: ArrayLike) -> Array:
        """``x̂0 = E[x0 | x_t = x] = Σ_k π_k (μ_k + (1 − t) Σ_k S_k⁻¹ (x − m_k))``."""
        t = jnp.asarray(t, self.means.dtype)
        resp, y = self._posterior(x, t)
        cond = self.means + (1 - t) * jnp.einsum("kij,kj->ki", self.covs, y)
        return resp @ cond

    def velocity(self, x: ArrayLike, t: ArrayLike) -> Array:
        """``v = E[x1 − x0 | x_t = x] = Σ_k π_k (−μ_k + (t I − (1 − t) Σ_k) S_k⁻¹ (x − m_k))``.

        Equal to ``(x − x̂0)/t`` for ``t > 0`` and finite at ``t = 0`` and ``t = 1``.
        """
        t = jnp.asarray(t, self.means.dtype)
        resp, y = self._posterior(x, t)
        cond = -self.means + t * y - (1 - t) * jnp.einsum("kij,kj->ki", self.covs, y)
        return resp @ cond

    def score(self, x: ArrayLike, t: ArrayLike) -> Array:
        """``s = ∇ log p_t(x) = −Σ_k π_k S_k⁻¹ (x − m_k)``."""
        resp, y = self._posterior(x, t)
        return -(resp @ y)

    def _posterior_terms(self, x, t):
        """Log-responsibilities ``log π_k`` and ``y_k = S_k⁻¹(x − m_k)`` at time ``t``."""
        x = jnp.asarray(x, self.means.dtype)
        marg = self.marginal(t)
        logpdf, y = _gaussian_terms(x, marg.means, marg.covs)
        log_joint = jnp.log(self.weights) + logpdf
        return log_joint - jax.nn.logsumexp(log_joint), y

    def _posterior(self, x, t):
        log_resp, y = self._posterior_terms(x, t)
        return jnp.exp(log_resp), y

    # -- exact tilts --------------------------------------------------------------------------
    def tilt_quadratic(
        self, center: ArrayLike, precision: ArrayLike, alpha: ArrayLike
    ) -> tuple["GaussianMixture", Array]:
        """Exact ``p*(x) ∝ p(x)·exp(r(x)/α)`` for ``r(x) = −½(x − c)ᵀA(x − c)``.

        With ``P = A/α`` (symmetric PSD, possibly singular) each component becomes

            Σ'_k = (Σ_k⁻¹ + P)⁻¹,     μ'_k = Σ'_k(Σ_k⁻¹μ_k + P c),
            w'_k ∝ w_k |I + Σ_k P|^{-1/2} exp(−½ (μ_k − c)ᵀ P (I + Σ_k P)⁻¹ (μ_k − c)),

        and ``log Z = log Σ_k w'_k (unnormalized) = log E_p[exp(r/α)]``. ``A`` is never inverted:
        with ``P = B Bᵀ`` (eigendecomposition), ``P(I + ΣP)⁻¹ = B(I + BᵀΣB)⁻¹Bᵀ`` and
        ``Σ' = L(I + LᵀPL)⁻¹Lᵀ`` (``LLᵀ = Σ``), both through Cholesky factors of matrices
        ``⪰ I``; a reward on a single coordinate works.

        Parameters
        ----------
        center
            ``c``, shape ``(d,)``.
        precision
            ``A``, shape ``(d, d)``, symmetric positive semi-definite.
        alpha
            ``α > 0``.

        Returns
        -------
        tilted
            The mixture ``p*`` (same number of components).
        log_Z
            ``log E_p[exp(r/α)]``.
        """
        dtype = self.means.dtype
        center = jnp.asarray(center, dtype)
        precision = jnp.asarray(precision, dtype)
        _check_tilt(center, precision, alpha, self.dim)
        lam, vec = jnp.linalg.eigh(0.5 * (precision + precision.T) / alpha)
        factor = vec * jnp.sqrt(jnp.clip(lam, 0.0))
        means, covs, log_factor = jax.vmap(_tilt_component, (0, 0, None, None))(
            self.means, self.covs, center, factor
        )
        return _reweighted(jnp.log(self.weights) + log_factor, means, covs)

    def tilt_mixture(self, other: "GaussianMixture") -> tuple["GaussianMixture", Array]:
        """Exact tilt by ``r = α·log q`` with ``q = Σ_l u_l N(ν_l, Λ_l)``: ``p* ∝ p·q``.

        Component ``(k, l)`` (index ``k·L + l``) is the normalized product of Gaussians,

            Σ'_kl = (Σ_k⁻¹ + Λ_l⁻¹)⁻¹,    μ'_kl = Σ'_kl(Σ_k⁻¹μ_k + Λ_l⁻¹ν_l),
            w'_kl ∝ w_k u_l N(μ_k; ν_l, Σ_k + Λ_l),

        and ``log Z = log Σ_kl w_k u_l N(μ_k; ν_l, Σ_k + Λ_l) = log E_p[q(x)]``. Each ``(k, l)``
        is :meth:`tilt_quadratic`'s component update with ``c = ν_l``, ``P = Λ_l⁻¹ = BBᵀ``,
        ``B = L_Λ⁻ᵀ``, plus ``log u_l − ½ log|2πΛ_l|``. ``α`` cancels.

        Parameters
        ----------
        other
            ``q``, a mixture of ``L`` components in the same dimension.

        Returns
        -------
        tilted
            ``p·q / Z`` with ``K·L`` components.
        log_Z
            ``log E_p[q(x)]``.
        """
        if other.dim != self.dim:
            raise ValueError(f"`other` must have dimension {self.dim}, got {other.dim}.")
        dtype = self.means.dtype
        chol = jnp.linalg.cholesky(jnp.asarray(other.covs, dtype))
        eye = jnp.eye(self.dim, dtype=dtype)
        factors = jax.vmap(lambda c: solve_triangular(c, eye, lower=True).T)(chol)
        log_norm = (
            jnp.log(jnp.asarray(other.weights, dtype))
            - jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
            - 0.5 * self.dim * math.log(2 * math.pi)
        )
        pair = jax.vmap(jax.vmap(_tilt_component, (None, None, 0, 0)), (0, 0, None, None))
        means, covs, log_factor = pair(
            self.means, self.covs, jnp.asarray(other.means, dtype), factors
        )
        log_w = jnp.log(self.weights)[:, None] + log_norm[None, :] + log_factor
        k = self.num_components * other.num_components
        return _reweighted(
            log_w.reshape(k), means.reshape(k, self.dim), covs.reshape(k, *covs.shape[2:])
        )


# -- private helpers ------------------------------------------------------------------------------
def _unchecked(weights, means, covs) -> GaussianMixture:
    """Build without validation (pytree unflattening, results of exact operations)."""
    gm = object.__new__(GaussianMixture)
    for name, value in zip(("weights", "means", "covs"), (weights, means, covs), strict=True):
        object.__setattr__(gm, name, value)
    return gm


def _is_concrete(*values) -> bool:
    return all(concrete_value(v) is not None for v in values)


def _validated(weights, means, covs):
    """Shape checks always; value checks on concrete inputs; cast to the sampler dtype."""
    weights, means, covs = (jnp.asarray(v) for v in (weights, means, covs))
    if weights.ndim != 1 or weights.shape[0] < 1:
        raise ValueError(f"`weights` must have shape (K,) with K >= 1, got {weights.shape}.")
    k = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != k or means.shape[1] < 1:
        raise ValueError(f"`means` must have shape ({k}, d), got {means.shape}.")
    d = means.shape[1]
    if covs.shape != (k, d, d):
        raise ValueError(f"`covs` must have shape {(k, d, d)}, got {covs.shape}.")
    dtype = jnp.result_type(jnp.float32, weights.dtype, means.dtype, covs.dtype)
    if _is_concrete(weights, means, covs):
        w, m, c = (np.asarray(v, np.float64) for v in (weights, means, covs))
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"`weights` must be finite and non-negative, got {w}.")
        if abs(w.sum() - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"`weights` must sum to 1 (±{WEIGHT_TOLERANCE}), got {w.sum()}.")
        weights = w / w.sum()
        if not np.all(np.isfinite(m)):
            raise ValueError("`means` must be finite.")
        scale = np.max(np.abs(c), axis=(1, 2), keepdims=True)
        if not np.all(np.isfinite(c)) or np.any(np.abs(c - c.swapaxes(1, 2)) > 1e-5 * scale):
            raise ValueError("`covs` must be finite and symmetric.")
        try:
            np.linalg.cholesky(0.5 * (c + c.swapaxes(1, 2)))
        except np.linalg.LinAlgError:
            raise ValueError("`covs` must be positive definite.") from None
    return tuple(jnp.asarray(v, dtype) for v in (weights, means, covs))


def _check_tilt(center, precision, alpha, d):
    if center.shape != (d,):
        raise ValueError(f"`center` must have shape ({d},), got {center.shape}.")
    if precision.shape != (d, d):
        raise ValueError(f"`precision` must have shape ({d}, {d}), got {precision.shape}.")
    if not _is_concrete(precision, alpha):
        return
    check_real(alpha, "alpha", gt=0.0, scalar=False)
    a = np.asarray(precision, np.float64)
    scale = max(np.max(np.abs(a)), 1e-30)
    if not np.all(np.isfinite(a)) or np.any(np.abs(a - a.T) > 1e-5 * scale):
        raise ValueError("`precision` must be finite and symmetric.")
    if np.min(np.linalg.eigvalsh(a)) < -1e-5 * scale:
        raise ValueError("`precision` must be positive semi-definite.")


def _gaussian_terms(x, means, covs):
    """``log N(x; m_k, S_k)`` and ``S_k⁻¹(x − m_k)`` for each component, by Cholesky."""
    chol = jnp.linalg.cholesky(covs)
    diff = x - means
    z = jax.vmap(lambda c, r: solve_triangular(c, r, lower=True))(chol, diff)
    y = jax.vmap(lambda c, r: solve_triangular(c, r, lower=True, trans="T"))(chol, z)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    logpdf = -0.5 * jnp.sum(z**2, axis=1) - half_logdet - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    return logpdf, y


def _tilt_component(mean, cov, center, factor):
    """One Gaussian ``N(μ, Σ)`` times ``exp(−½(x − c)ᵀP(x − c))``, ``P = B Bᵀ``.

    Returns ``μ' = μ − Σ'P(μ − c)``, ``Σ' = L M⁻¹ Lᵀ`` with ``M = I + LᵀPL`` (so ``Σ' ≻ 0``),
    and ``log ∫ N(x; μ, Σ) exp(−½(x − c)ᵀP(x − c)) dx = −½ log|M| − ½ ‖C_N⁻¹ Bᵀ(μ − c)‖²`` with
    ``C_N C_Nᵀ = I + BᵀΣB`` (``|M| = |I + BᵀΣB| = |I + ΣP|``, Sylvester).
    """
    eye = jnp.eye(mean.shape[0], dtype=mean.dtype)
    chol = jnp.linalg.cholesky(cov)
    g = chol.T @ factor
    chol_m = jnp.linalg.cholesky(eye + g @ g.T)
    chol_n = jnp.linalg.cholesky(eye + g.T @ g)
    f = solve_triangular(chol_m, chol.T, lower=True)
    new_cov = f.T @ f
    delta = mean - center
    new_mean = mean - new_cov @ (factor @ (factor.T @ delta))
    u = solve_triangular(chol_n, factor.T @ delta, lower=True)
    log_factor = -jnp.sum(jnp.log(jnp.diagonal(chol_m))) - 0.5 * jnp.sum(u**2)
    return new_mean, new_cov, log_factor


def _reweighted(log_w, means, covs):
    log_z = jax.nn.logsumexp(log_w)
    return _unchecked(jnp.exp(log_w - log_z), means, covs), log_z
