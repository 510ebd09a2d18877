"""Gaussian data ``x0 ~ N(m, s² I)`` under the interpolant: every quantity in closed form.

With ``x_t = (1 − t)x0 + t x1`` the marginal is ``N((1 − t)m, S(t) I)``, ``S = (1 − t)²s² + t²``,
and ``(x0, x1, x_t)`` are jointly Gaussian with ``Cov(x0, x_t) = (1 − t)s²``, ``Cov(x1, x_t) = t``,
so by Gaussian regression

    E[x0 | x_t = x] = m + (1 − t)s²/S · (x − (1 − t)m),     E[x1 | x_t = x] = t/S · (x − (1 − t)m)

and ``v = E[x1 − x0 | x_t] = −m + k(t)(x − (1 − t)m)`` with ``k = (t − (1 − t)s²)/S``. The ODE
map is affine: ``x_t = (1 − t)m + √S(t)·ξ`` along a path with fixed ``ξ`` solves
``dx/dt = −m + (S'/2S)(x − (1 − t)m)`` and ``S'/2S = k``, so

    Φ_t(x) = m + s/√S(t) · (x − (1 − t)m),     Φ_1(x1) = m + s·x1.

Because the velocity is affine in x, every sampler step is affine-Gaussian per coordinate and
the exact moments of the *discretised* samplers are propagated here in float64.
"""

import numpy as np


class GaussianData:
    def __init__(self, mean, scale):
        self.m = np.asarray(mean, np.float64)
        self.s = float(scale)

    # ---- closed forms (float64 numpy; also valid on jax arrays) ----
    def var(self, t):
        return (1.0 - t) ** 2 * self.s**2 + t**2

    def k(self, t):
        return (t - (1.0 - t) * self.s**2) / self.var(t)

    def velocity(self, x, t):
        return -self.m + self.k(t) * (x - (1.0 - t) * self.m)

    def jax_velocity(self):
        import jax.numpy as jnp

        m, s2 = jnp.asarray(self.m, jnp.float32), self.s**2

        def velocity_fn(x, t):
            var = (1.0 - t) ** 2 * s2 + t**2
            return -m + (t - (1.0 - t) * s2) / var * (x - (1.0 - t) * m)

        return velocity_fn

    def x0_mean(self, x, t):
        return self.m + (1.0 - t) * self.s**2 / self.var(t) * (x - (1.0 - t) * self.m)

    def x1_mean(self, x, t):
        return t / self.var(t) * (x - (1.0 - t) * self.m)

    def flow_map(self, x, t):
        return self.m + self.s / np.sqrt(self.var(t)) * (x - (1.0 - t) * self.m)

    # ---- exact moments of the discretised samplers, from N(mean, var) at grid[0] ----
    def euler_moments(self, grid, mean=None, var=1.0):
        grid = np.asarray(grid, np.float64)
        mean = np.zeros_like(self.m) if mean is None else mean
        for t, t_next in zip(grid[:-1], grid[1:], strict=True):
            a = 1.0 - (t - t_next) * self.k(t)  # x' = x − Δ v = a x + c
            c = (t - t_next) * (self.m + self.k(t) * (1.0 - t) * self.m)
            mean, var = a * mean + c, a * a * var
        return mean, var

    def sde_moments(self, grid, g2_over_t, mean=None, var=1.0):
        """``x' = x + Δ[−v − ½(g²/t)(x + (1 − t)v)] + g√Δ z`` with ``g² = t·(g²/t)``."""
        grid = np.asarray(grid, np.float64)
        mean = np.zeros_like(self.m) if mean is None else mean
        for t, t_next in zip(grid[:-1], grid[1:], strict=True):
            d, h, k = t - t_next, 0.5 * g2_over_t(t), self.k(t)
            v0 = -self.m - k * (1.0 - t) * self.m  # v = k x + v0
            a = 1.0 + d * (-k - h * (1.0 + (1.0 - t) * k))
            c = d * (-v0 - h * (1.0 - t) * v0)
            mean, var = a * mean + c, a * a * var + 2.0 * h * t * d
        return mean, var


def moment_z(samples, mean, var):
    """z-scores of the per-coordinate sample mean and variance of Gaussian draws.

    ``z_mean = (m̂ − m)/√(v/n)`` and ``z_var = (v̂ − v)/(v√(2/(n − 1)))`` (the variance of the
    unbiased sample variance of Gaussian data; every sampler here has Gaussian output).
    """
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean) / np.sqrt(var / n)
    z_var = (samples.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    return z_mean, z_var
