"""Gaussian data, affine velocity, quadratic reward: the discretized samplers in closed form.

Data ``x0 ~ N(μ, Σ)`` in ``d`` dimensions. Under the interpolant ``x_t = (1 − t)x0 + t x1``
(``x1 ~ N(0, I)``, t = 1 noise, t = 0 data) the marginal is ``N((1 − t)μ, S_t)`` with
``S_t = (1 − t)²Σ + t²I``, and the exact velocity is affine in ``x``:

.. math::

    v(x, t) = K_t x + k_t, \\qquad K_t = (tI − (1 − t)Σ)\\,S_t^{-1}, \\qquad
    k_t = −μ − (1 − t) K_t μ

(``K_t`` is symmetric: ``Σ`` and ``S_t`` commute). The stochastic step of
:func:`psijax.flows.sde.transition_from_velocity` from ``t`` to ``t' < t``
(``Δ = t − t'``, ``h = ½ g(t)²/t``),

.. math::

    μ(x) = x + Δ\\,[−v − h\\,(x + (1 − t) v)], \\qquad σ = g(t)\\sqrt{Δ},

is then linear-Gaussian, ``x' = A x + b + σ z`` with

.. math::

    A = (1 − Δh)\\,I − Δ(1 + (1 − t)h)\\,K_t, \\qquad b = −Δ(1 + (1 − t)h)\\,k_t .

Started from ``x_{t_0} ~ N(m_0, C_0)`` (default ``N(0, I)``), the law of the untwisted chain
along a grid ``t_0 > t_1 > … > t_T`` stays Gaussian:

.. math::

    m_{i+1} = A_i m_i + b_i, \\qquad C_{i+1} = A_i C_i A_i^T + σ_i^2 I .

``g ≡ 0`` gives the Euler ODE push-forward; as the steps shrink, ``N(m_T, C_T) → N(μ, Σ)`` at
rate ``O(1/T)`` (Euler–Maruyama has weak order one).

**Quadratic reward.** With ``r(x) = −½(x − c)ᵀQ(x − c)`` (``Q`` symmetric PSD), strength
``α > 0`` and ``P = Q/α = BBᵀ`` (eigendecomposition; ``P`` may be singular), for
``x ~ N(m, C)`` and ``M = I + BᵀCB``, ``u = Bᵀ(m − c)``:

.. math::

    \\log E[e^{r(x)/α}] = −\\tfrac12 \\log|M| − \\tfrac12 u^T M^{-1} u,

    N(m, C)\\,e^{r/α} / Z = N\\big(m − CBM^{-1}u,\\; C − CBM^{-1}B^TC\\big)

(Woodbury; nothing is inverted but ``M ⪰ I``, so a singular ``C`` or ``P`` is fine). With
``(m, C) = (m_T, C_T)`` this is ``Z_disc``, the normalizer an SMC over the discretized chain
estimates (the untwisted kernel ``p`` is the reference path measure of every proposal and
tempering schedule, so the final target is the same for all of them); with ``(m, C) = (μ, Σ)``
it is the continuous-time ``Z`` (:meth:`psijax.models.gmm.GaussianMixture.tilt_quadratic` of a
one-component mixture).

**The distilled model and the re-noising kernel.** With ``distilled=True`` the velocity is the
one of the ideal distilled model, whose one-step prediction is the exact flow map
``x − t·u(x, t) = Φ_t(x)``. For Gaussian data the flow map is affine,
``Φ_t(x) = μ + M_t (x − (1 − t)μ)`` with ``M_t = Σ^{1/2} S_t^{-1/2}``, so

.. math::

    u(x, t) = C_t\\,(x − (1 − t)μ) − μ, \\qquad C_t = (I − M_t)/t,

written per eigenvalue ``s`` of ``Σ`` as ``(t(1 + s) − 2s) / (√D(√D + √s))`` with
``D = (1 − t)²s + t²`` (finite at ``t = 0``, where it is ``−1``). Both velocities have the form
``v = K_t(x − (1 − t)μ) − μ``. The re-noising kernel of
:class:`psijax.flows.distilled.Renoising` is linear-Gaussian for either:
``x' = (1 − t')[(I − tK_t)x − t k_t] + t'z``; on the distilled model it keeps every marginal
``N((1 − t)μ, S_t)`` exactly, on any grid (the tests check it against these recursions).

Exact answers are float64 NumPy. The diffusion's ``g(t)`` and ``g(t)²/t`` are evaluated on
float64 times (a diffusion written with ``jax.numpy`` then computes in float32 unless x64 is
on). :meth:`LinearGaussianFlow.velocity` is the JAX model (float32, or float64 under x64).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike

from psijax.flows.distilled import Renoising
from psijax.flows.sde import Diffusion, check_diffusion, check_grid
from psijax.models.gmm import GaussianMixture

__all__ = ["LinearGaussianFlow", "gaussian_tilt"]


@dataclasses.dataclass(frozen=True, eq=False)
class LinearGaussianFlow:
    """Data ``N(mean, cov)`` under the rectified-flow interpolant; exact discretized samplers.

    Parameters
    ----------
    mean
        ``μ``, shape ``(d,)``.
    cov
        ``Σ``, shape ``(d, d)``, symmetric positive definite.
    distilled
        ``False`` (default): the exact velocity of a model trained on independent (noise, data)
        pairs, ``v = E[x1 − x0 | x_t]``. ``True``: the ideal distilled model, whose one-step
        prediction ``x − t·u`` is the flow map ``Φ_t`` (module docstring); the kernel that keeps
        its marginals is :class:`psijax.flows.distilled.Renoising`.

    Stored as float64 NumPy; a ``ValueError`` names an invalid argument.
    """

    mean: np.ndarray
    cov: np.ndarray
    distilled: bool = False

    def __post_init__(self):
        mean = np.asarray(self.mean, np.float64)
        if mean.ndim != 1 or mean.shape[0] < 1 or not np.all(np.isfinite(mean)):
            raise ValueError(f"`mean` must be a finite array of shape (d,), got {self.mean!r}.")
        cov = _symmetric(self.cov, "cov", mean.shape[0])
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError("`cov` must be positive definite.") from None
        if not isinstance(self.distilled, (bool, np.bool_)):
            raise TypeError(f"`distilled` must be a bool, got {self.distilled!r}.")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "_eigh", np.linalg.eigh(cov))

    @property
    def dim(self) -> int:
        """``d``, the dimension of a sample."""
        return self.mean.shape[0]

    # -- the model ---------------------------------------------------------------------------
    @property
    def mixture(self) -> GaussianMixture:
        """The data as a one-component :class:`GaussianMixture` (exact velocity/Tweedie/score)."""
        return GaussianMixture(np.ones(1), self.mean[None], self.cov[None])

    def velocity(self, x: ArrayLike, t: ArrayLike) -> Array:
        """The JAX velocity ``v(x, t) = K_t x + k_t`` on a single ``x`` of shape ``(d,)``: the
        exact one, or the distilled model's ``u = C_t(x − (1 − t)μ) − μ`` (float32, or float64
        under x64)."""
        if not self.distilled:
            return self.mixture.velocity(x, t)
        x = jnp.asarray(x)
        dtype = jnp.result_type(jnp.float32, x.dtype)
        values, vectors = (jnp.asarray(a, dtype) for a in self._eigh)
        mean, t = jnp.asarray(self.mean, dtype), jnp.asarray(t, dtype)
        coef = _distilled_coefficient(values, t, jnp)
        return vectors @ (coef * (vectors.T @ (x.astype(dtype) - (1.0 - t) * mean))) - mean

    def flow_map(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """``(M_t, c_t)`` with ``Φ_t(x) = M_t x + c_t``: the exact flow map from ``t`` to 0 of
        either model (the ODE of the exact velocity), ``M_t = Σ^{1/2} S_t^{-1/2}``,
        ``c_t = μ − (1 − t)M_tμ``. Float64."""
        t = float(t)
        values, vectors = self._eigh
        ratio = np.sqrt(values / ((1.0 - t) ** 2 * values + t**2))
        m_mat = (vectors * ratio) @ vectors.T
        return m_mat, self.mean - (1.0 - t) * m_mat @ self.mean

    def marginal(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(1 − t)μ`` and covariance ``S_t = (1 − t)²Σ + t²I`` of ``x_t``."""
        t = float(t)
        return (1.0 - t) * self.mean, (1.0 - t) ** 2 * self.cov + t**2 * np.eye(self.dim)

    def velocity_coefficients(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """``(K_t, k_t)`` with ``v(x, t) = K_t x + k_t`` (the distilled model's when
        ``distilled``), float64."""
        t = float(t)
        if self.distilled:
            values, vectors = self._eigh
            k_mat = (vectors * _distilled_coefficient(values, t, np)) @ vectors.T
        else:
            _, s = self.marginal(t)
            k_mat = np.linalg.solve(s, t * np.eye(self.dim) - (1.0 - t) * self.cov).T
        return k_mat, -self.mean - (1.0 - t) * k_mat @ self.mean

    def step_coefficients(
        self, t: float, t_next: float, diffusion: Diffusion | Renoising
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """``(A, b, σ)`` of the untwisted step ``x' = A x + b + σ z`` from ``t`` to ``t_next``.

        For a :class:`~psijax.flows.sde.Diffusion`:

        .. math::

            A = (1 − Δh) I − Δ(1 + (1 − t)h) K_t, \\quad b = −Δ(1 + (1 − t)h) k_t, \\quad
            σ = g(t)\\sqrt{Δ}

        with ``Δ = t − t'`` and ``h = ½ g(t)²/t`` (the diffusion's ``squared_over_time``):
        :func:`psijax.flows.sde.transition_from_velocity` applied to the affine velocity. For
        :class:`~psijax.flows.distilled.Renoising`: ``A = (1 − t')(I − tK_t)``,
        ``b = −(1 − t')t k_t``, ``σ = t'``. Requires ``0 ≤ t_next < t ≤ 1``.
        """
        t, t_next = float(t), float(t_next)
        if not 0.0 < t <= 1.0:
            raise ValueError(f"`t` must lie in (0, 1], got {t!r}.")
        if not 0.0 <= t_next < t:
            raise ValueError(f"`t_next` must lie in [0, t), got t_next={t_next!r}, t={t!r}.")
        k_mat, k_vec = self.velocity_coefficients(t)
        if isinstance(diffusion, Renoising):
            keep = 1.0 - t_next
            return keep * (np.eye(self.dim) - t * k_mat), -keep * t * k_vec, t_next
        g, g2_over_t = _diffusion_at(diffusion, t)
        delta, h = t - t_next, 0.5 * g2_over_t
        scale = delta * (1.0 + (1.0 - t) * h)
        a = (1.0 - delta * h) * np.eye(self.dim) - scale * k_mat
        return a, -scale * k_vec, g * np.sqrt(delta)

    # -- the discretized chain ---------------------------------------------------------------
    def discretized_marginals(
        self,
        grid: ArrayLike,
        diffusion: Diffusion,
        init_mean: ArrayLike | None = None,
        init_cov: ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Means ``(T + 1, d)`` and covariances ``(T + 1, d, d)`` of ``x`` at every grid time.

        ``x_{t_0} ~ N(init_mean, init_cov)`` (default ``N(0, I)``) and the untwisted kernel of
        :meth:`step_coefficients` along ``grid``: ``m ← A m + b``, ``C ← A C Aᵀ + σ² I``. The
        grid is taken at its own precision (a float32 grid gives the float32 times that
        :func:`psijax.flows.sde.sample` uses), the arithmetic is float64. ``init_cov`` may be
        singular (PSD).
        """
        times = _checked_grid(grid)
        d = self.dim
        m = np.zeros(d) if init_mean is None else np.asarray(init_mean, np.float64)
        if m.shape != (d,) or not np.all(np.isfinite(m)):
            raise ValueError(f"`init_mean` must be a finite array of shape ({d},).")
        c = np.eye(d) if init_cov is None else _psd(init_cov, "init_cov", d)
        means, covs = [m], [c]
        for t, t_next in zip(times[:-1], times[1:], strict=True):
            a, b, sigma = self.step_coefficients(t, t_next, diffusion)
            m = a @ m + b
            c = a @ c @ a.T + sigma**2 * np.eye(d)
            c = 0.5 * (c + c.T)
            means.append(m)
            covs.append(c)
        return np.stack(means), np.stack(covs)

    def discretized_log_normalizer(
        self,
        grid: ArrayLike,
        diffusion: Diffusion,
        center: ArrayLike,
        precision: ArrayLike,
        alpha: float,
        init_mean: ArrayLike | None = None,
        init_cov: ArrayLike | None = None,
    ) -> float:
        """``log Z_disc = log E[exp(r(x_T)/α)]`` under the discretized chain's final marginal.

        ``r(x) = −½(x − c)ᵀQ(x − c)`` with ``c = center``, ``Q = precision`` (PSD).
        """
        return self.tilted_final_distribution(
            grid, diffusion, center, precision, alpha, init_mean, init_cov
        )[2]

    def tilted_final_distribution(
        self,
        grid: ArrayLike,
        diffusion: Diffusion,
        center: ArrayLike,
        precision: ArrayLike,
        alpha: float,
        init_mean: ArrayLike | None = None,
        init_cov: ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Mean, covariance and ``log Z_disc`` of ``N(m_T, C_T)·exp(r/α) / Z_disc``.

        The law of a perfectly weighted SMC's output over the discretized chain: compare particle
        moments with it.
        """
        means, covs = self.discretized_marginals(grid, diffusion, init_mean, init_cov)
        return gaussian_tilt(means[-1], covs[-1], center, precision, alpha)

    # -- continuous time ---------------------------------------------------------------------
    def continuous_log_normalizer(
        self, center: ArrayLike, precision: ArrayLike, alpha: float
    ) -> float:
        """``log Z = log E_{N(μ, Σ)}[exp(r/α)]``, the exact-model (continuous-time) value."""
        return gaussian_tilt(self.mean, self.cov, center, precision, alpha)[2]

    def tilted_distribution(
        self, center: ArrayLike, precision: ArrayLike, alpha: float
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Mean, covariance and ``log Z`` of the exact target ``N(μ, Σ)·exp(r/α) / Z``."""
        return gaussian_tilt(self.mean, self.cov, center, precision, alpha)


def gaussian_tilt(
    mean: ArrayLike, cov: ArrayLike, center: ArrayLike, precision: ArrayLike, alpha: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """``N(m, C)·exp(r/α)`` for ``r(x) = −½(x − c)ᵀQ(x − c)``: mean, covariance, ``log Z``.

    With ``P = Q/α = BBᵀ``, ``M = I + BᵀCB`` and ``u = Bᵀ(m − c)``:

    .. math::

        \\log Z = −\\tfrac12 \\log|M| − \\tfrac12 u^T M^{-1} u, \\quad
        m' = m − CBM^{-1}u, \\quad C' = C − CBM^{-1}B^TC .

    ``C`` and ``Q`` need only be PSD. Float64 NumPy.
    """
    m = np.asarray(mean, np.float64)
    d = m.shape[0]
    c_mat = _psd(cov, "cov", d)
    center = np.asarray(center, np.float64)
    if center.shape != (d,) or not np.all(np.isfinite(center)):
        raise ValueError(f"`center` must be a finite array of shape ({d},).")
    q = _psd(precision, "precision", d)
    alpha_value = np.asarray(alpha, np.float64)
    if alpha_value.shape != () or not (np.isfinite(alpha_value) and alpha_value > 0):
        raise ValueError(f"`alpha` must be a finite scalar > 0, got {alpha!r}.")
    lam, vec = np.linalg.eigh(q / float(alpha_value))
    factor = vec * np.sqrt(np.clip(lam, 0.0, None))
    cb = c_mat @ factor
    chol = np.linalg.cholesky(np.eye(d) + factor.T @ cb)
    u = factor.T @ (m - center)
    w = np.linalg.solve(chol, u)
    log_z = -np.sum(np.log(np.diag(chol))) - 0.5 * w @ w
    f = np.linalg.solve(chol, cb.T)  # L⁻¹ BᵀC, so CBM⁻¹BᵀC = fᵀf
    new_cov = c_mat - f.T @ f
    new_mean = m - f.T @ w
    return new_mean, 0.5 * (new_cov + new_cov.T), float(log_z)


# -- private helpers ------------------------------------------------------------------------------
def _symmetric(value, name, d) -> np.ndarray:
    a = np.asarray(value, np.float64)
    if a.shape != (d, d):
        raise ValueError(f"`{name}` must have shape ({d}, {d}), got {a.shape}.")
    scale = max(float(np.max(np.abs(a))), 1e-300)
    if not np.all(np.isfinite(a)) or np.any(np.abs(a - a.T) > 1e-8 * scale):
        raise ValueError(f"`{name}` must be finite and symmetric.")
    return 0.5 * (a + a.T)


def _psd(value, name, d) -> np.ndarray:
    a = _symmetric(value, name, d)
    if np.min(np.linalg.eigvalsh(a)) < -1e-10 * max(float(np.max(np.abs(a))), 1e-300):
        raise ValueError(f"`{name}` must be positive semi-definite.")
    return a


def _checked_grid(grid) -> np.ndarray:
    try:
        times = np.asarray(grid, np.float64)
    except (TypeError, ValueError):
        raise ValueError("`grid` must be a 1-D array of times.") from None
    check_grid(times)  # 1-D, >= 2 times, strictly decreasing in [0, 1] (NaN fails too)
    return times


def _distilled_coefficient(values, t, xp):
    """``(1 − √(s/D))/t`` per eigenvalue ``s`` of ``Σ``, ``D = (1 − t)²s + t²``, written so that
    it is finite at ``t = 0`` (where it is ``−1``); ``xp`` is ``numpy`` or ``jax.numpy``."""
    root = xp.sqrt((1.0 - t) ** 2 * values + t**2)
    return (t * (1.0 + values) - 2.0 * values) / (root * (root + xp.sqrt(values)))


def _diffusion_at(diffusion, t) -> tuple[float, float]:
    if not isinstance(check_diffusion(diffusion), Diffusion):
        raise TypeError(
            "`diffusion` must be a Diffusion or Renoising here (the kernels with closed forms), "
            f"got {type(diffusion).__name__}."
        )
    g = float(np.asarray(diffusion.coefficient(np.float64(t)), np.float64))
    g2_over_t = float(np.asarray(diffusion.squared_over_time(np.float64(t)), np.float64))
    if not (np.isfinite(g) and g >= 0 and np.isfinite(g2_over_t) and g2_over_t >= 0):
        raise ValueError(f"`diffusion` must give finite g(t) >= 0 and g(t)²/t >= 0 at t={t}.")
    return g, g2_over_t
