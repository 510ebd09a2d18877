"""Toy data mixtures, rewards and their exact tilted targets.

Data mixtures (:class:`~psijax.models.gmm.GaussianMixture`):

- :func:`six_modes`: the 2D toy of the experiments — six equal-weight modes on a circle of
  radius 4, isotropic std 0.5. Neighbouring means are 4 apart (8 std), so modes are distinct and
  a sampler's mode occupancy is unambiguous, and the noise ``N(0, I)`` at the centre of the ring
  is equally far from every mode. The preset quadratic reward (centre (2, 0), α = 2) is broad
  relative to the mode spacing, so the tilted target keeps mass on three modes (0.74, 0.125,
  0.125) and essentially none on the other three: collapsing onto the dominant mode, or
  spreading over all six, both show in the mode occupancy.
- :func:`unequal_six_modes`: the same ring with weights 0.30 … 0.05; the preset reward favours
  the two rarest modes, so the target's mass lies where the prior has little.
- :func:`anisotropic_modes`: a 2 × 3 grid of elongated, rotated Gaussians (std 0.8 × 0.25).
- :func:`high_dim_modes`: six modes in ``d = 8`` along seeded orthonormal directions, with
  random SPD covariances and unequal weights.

Rewards are functions of a single ``x`` (:func:`quadratic_reward`, :func:`mixture_log_reward`);
:func:`toy_problem` pairs a mixture with a reward and ``α`` and returns the exact tilted target
``p* ∝ p·exp(r/α)`` and ``log Z``. For any 2D reward, :func:`grid_target` computes the target
on a grid (float64 quadrature) and :func:`sample_grid_target` draws from it.
"""

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey

from psijax.models.gmm import GaussianMixture

__all__ = [
    "TOY_PROBLEMS",
    "GridTarget",
    "ToyProblem",
    "anisotropic_modes",
    "grid_target",
    "high_dim_modes",
    "mixture_log_reward",
    "quadratic_reward",
    "sample_grid_target",
    "six_modes",
    "toy_problem",
    "unequal_six_modes",
]


# -- data mixtures --------------------------------------------------------------------------------
def _ring(num_modes: int, radius: float) -> np.ndarray:
    angle = 2 * np.pi * np.arange(num_modes) / num_modes
    return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def six_modes(radius: float = 4.0, std: float = 0.5) -> GaussianMixture:
    """Six equal-weight modes ``N(μ_k, std² I)``, ``μ_k = radius·(cos 2πk/6, sin 2πk/6)``."""
    return GaussianMixture(
        np.full(6, 1 / 6), _ring(6, radius), np.tile(std**2 * np.eye(2), (6, 1, 1))
    )


def unequal_six_modes() -> GaussianMixture:
    """:func:`six_modes` with weights ``(0.30, 0.25, 0.20, 0.12, 0.08, 0.05)``."""
    weights = np.array([0.30, 0.25, 0.20, 0.12, 0.08, 0.05])
    return GaussianMixture(weights, _ring(6, 4.0), np.tile(0.25 * np.eye(2), (6, 1, 1)))


def anisotropic_modes() -> GaussianMixture:
    """Six equal-weight modes on the grid ``{−3, 0, 3} × {−2, 2}``, elongated and rotated.

    Component ``k`` has std 0.8 along the direction at angle ``πk/6`` and 0.25 across it.
    """
    means = np.array([[x, y] for y in (-2.0, 2.0) for x in (-3.0, 0.0, 3.0)])
    angle = np.pi * np.arange(6) / 6
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], 1).reshape(
        6, 2, 2
    )
    covs = rot @ np.diag([0.8**2, 0.25**2]) @ rot.transpose(0, 2, 1)
    return GaussianMixture(np.full(6, 1 / 6), means, covs)


def high_dim_modes(dim: int = 8, seed: int = 0) -> GaussianMixture:
    """Six modes in ``dim ≥ 6`` dimensions with weights ``∝ (1, 1, 2, 2, 3, 3)``.

    Means ``4·q_k`` along seeded random orthonormal directions ``q_k`` (every pair 4√2 apart);
    covariances ``Q_k diag(λ_k) Q_kᵀ`` with random rotations ``Q_k`` and ``λ_k ∈ [0.1, 0.5]``.
    """
    if dim < 6:
        raise ValueError(f"`dim` must be >= 6, got {dim}.")
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.standard_normal((dim, 6)))
    q, _ = np.linalg.qr(rng.standard_normal((6, dim, dim)))
    covs = q @ (rng.uniform(0.1, 0.5, (6, dim))[:, :, None] * q.transpose(0, 2, 1))
    covs = 0.5 * (covs + covs.transpose(0, 2, 1))
    weights = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    return GaussianMixture(weights / weights.sum(), 4.0 * directions.T, covs)


# -- rewards --------------------------------------------------------------------------------------
def quadratic_reward(center: ArrayLike, precision: ArrayLike) -> Callable[[Array], Array]:
    """``r(x) = −½ (x − c)ᵀ A (x − c)`` on a single ``x`` (``A`` symmetric PSD).

    Its exact tilt is :meth:`GaussianMixture.tilt_quadratic` with the same ``c``, ``A``.
    """
    center = jnp.asarray(center, jnp.float32)
    precision = jnp.asarray(precision, jnp.float32)
    if precision.shape != center.shape * 2:
        raise ValueError(f"`precision` must have shape {center.shape * 2}, got {precision.shape}.")

    def reward(x):
        diff = x - center
        return -0.5 * diff @ (precision @ diff)

    return reward


def mixture_log_reward(q: GaussianMixture, alpha: float) -> Callable[[Array], Array]:
    """``r(x) = α·log q(x)``, so that ``exp(r/α) = q``: its exact tilt is ``p.tilt_mixture(q)``."""
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0, got {alpha!r}.")
    return lambda x: alpha * q.log_prob(x)


# -- toy problems ---------------------------------------------------------------------------------
class ToyProblem(NamedTuple):
    """A data mixture, a reward ``r`` on a single ``x``, ``α``, the exact target and ``log Z``.

    ``exact_target ∝ data·exp(r/α)`` and ``log_Z = log E_data[exp(r/α)]``.
    """

    name: str
    data: GaussianMixture
    reward_fn: Callable[[Array], Array]
    alpha: float
    exact_target: GaussianMixture
    log_Z: Array


def _quadratic_problem(name, data, center, precision, alpha):
    # Compiled once rather than dispatched op by op (eager dispatch of the tilt is slow on CPU).
    target, log_z = jax.jit(GaussianMixture.tilt_quadratic)(data, center, precision, alpha)
    return ToyProblem(name, data, quadratic_reward(center, precision), alpha, target, log_z)


def _mixture_problem(name, data, q, alpha):
    target, log_z = jax.jit(GaussianMixture.tilt_mixture)(data, q)
    return ToyProblem(name, data, mixture_log_reward(q, alpha), alpha, target, log_z)


def _six_modes_mixture():
    # q: modes 0 and 2 of the ring, weights 0.6 / 0.4, std 1: two non-adjacent modes.
    q = GaussianMixture(np.array([0.6, 0.4]), _ring(6, 4.0)[[0, 2]], np.tile(np.eye(2), (2, 1, 1)))
    return _mixture_problem("six_modes_mixture", six_modes(), q, 1.0)


def _high_dim_mixture():
    data = high_dim_modes()
    q = GaussianMixture(
        np.array([0.5, 0.5]), np.asarray(data.means)[[0, 5]], np.tile(np.eye(8), (2, 1, 1))
    )
    return _mixture_problem("high_dim_mixture", data, q, 1.0)


_BUILDERS = {
    # Reward centred at (2, 0): mode 0 (distance 2) gets 0.74 of the mass, its neighbours 1 and
    # 5 0.125 each, the far modes 2, 3, 4 under 0.01 together.
    "six_modes_quadratic": lambda: _quadratic_problem(
        "six_modes_quadratic", six_modes(), np.array([2.0, 0.0]), np.eye(2), 2.0
    ),
    # Mass on modes 0 and 2 only (non-adjacent: a sampler must cross mode 1's valley).
    "six_modes_mixture": _six_modes_mixture,
    # The reward favours the rarest modes: prior weight 0.05 + 0.08, target weight 0.98.
    "unequal_rare_modes": lambda: _quadratic_problem(
        "unequal_rare_modes", unequal_six_modes(), np.array([1.0, -4.0]), np.eye(2), 2.0
    ),
    # A reward on the first coordinate only (singular precision): the right column (x = 3)
    # gets 0.97 of the mass, the middle one 0.03, the left one none.
    "anisotropic_coordinate": lambda: _quadratic_problem(
        "anisotropic_coordinate",
        anisotropic_modes(),
        np.array([3.0, 0.0]),
        np.diag([1.0, 0.0]),
        1.0,
    ),
    # d = 8: mass 0.25 on mode 0 and 0.75 on mode 5 (prior weights 1/12 and 1/4), none elsewhere.
    "high_dim_mixture": _high_dim_mixture,
}
TOY_PROBLEMS = tuple(_BUILDERS)
"""Names accepted by :func:`toy_problem`."""


def toy_problem(name: str) -> ToyProblem:
    """The preset ``name`` (one of :data:`TOY_PROBLEMS`) with its exact tilted target."""
    if name not in _BUILDERS:
        raise ValueError(f"`name` must be one of {TOY_PROBLEMS}, got {name!r}.")
    return _BUILDERS[name]()


# -- any 2D reward on a grid ----------------------------------------------------------------------
class GridTarget(NamedTuple):
    """``p*(x) ∝ p(x)·exp(r(x)/α)`` tabulated on a regular 2D grid.

    xs, ys
        Grid coordinates, shapes ``(nx,)`` and ``(ny,)``.
    log_density
        ``log p*(xs[i], ys[j])`` at ``[i, j]`` (``'ij'`` indexing), normalized so that
        ``Σ_ij exp(log_density)·cell_area = 1``.
    log_Z
        ``log ∫ p(x) exp(r(x)/α) dx`` by quadrature (``log E_p[exp(r/α)]`` if ``p`` is normalized).
    cell_area
        ``Δx·Δy``.
    boundary_mass
        Fraction of the target's grid mass on the outermost ring of points; the quadrature is
        only trustworthy when it is negligible (the extent covers the target).
    """

    xs: np.ndarray
    ys: np.ndarray
    log_density: np.ndarray
    log_Z: float
    cell_area: float
    boundary_mass: float


def grid_target(
    log_prob_fn: Callable[[Array], Array],
    reward_fn: Callable[[Array], Array],
    alpha: float,
    extent: float | tuple[float, float, float, float] = 8.0,
    num_points: int = 256,
) -> GridTarget:
    """Tabulate ``p·exp(r/α)`` on a grid and normalize it by quadrature.

    ``extent`` is ``L`` for ``[−L, L]²`` or ``(xmin, xmax, ymin, ymax)``; ``num_points`` per
    axis. With ``f = log p + r/α`` evaluated (float32, vmapped) at the grid points ``x_ij``,

        log Z ≈ log Σ_ij exp(f(x_ij))·Δx·Δy        (float64 log-sum-exp),

    the trapezoid rule for an integrand that vanishes at the edges: for smooth integrands its
    error decays exponentially in ``(feature width / Δx)²`` (about ``exp(−2π²σ²/Δx²)`` for a
    Gaussian of std σ), so a few points per std already give ``log Z`` to float32 accuracy.
    """
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0, got {alpha!r}.")
    if np.ndim(extent) == 0:
        extent = (-float(extent), float(extent), -float(extent), float(extent))
    xmin, xmax, ymin, ymax = (float(e) for e in extent)
    if not (xmin < xmax and ymin < ymax):
        raise ValueError(f"`extent` must satisfy xmin < xmax and ymin < ymax, got {extent}.")
    if num_points < 3:
        raise ValueError(f"`num_points` must be >= 3, got {num_points}.")
    xs, ys = np.linspace(xmin, xmax, num_points), np.linspace(ymin, ymax, num_points)
    points = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
    f = jax.jit(jax.vmap(lambda x: log_prob_fn(x) + reward_fn(x) / alpha))
    log_unnorm = np.asarray(f(jnp.asarray(points, jnp.float32)), np.float64)
    log_unnorm = log_unnorm.reshape(num_points, num_points)
    if not np.all(np.isfinite(log_unnorm) | (log_unnorm == -np.inf)):
        raise ValueError("`log_prob_fn` and `reward_fn` must be finite or −inf on the grid.")
    cell_area = (xs[1] - xs[0]) * (ys[1] - ys[0])
    peak = np.max(log_unnorm)
    log_z = peak + math.log(np.sum(np.exp(log_unnorm - peak)) * cell_area)
    log_density = log_unnorm - log_z
    mass = np.exp(log_density) * cell_area
    interior = mass[1:-1, 1:-1].sum()
    return GridTarget(xs, ys, log_density, float(log_z), float(cell_area), float(1.0 - interior))


def sample_grid_target(rng_key: PRNGKey, grid: GridTarget, n: int) -> Array:
    """``n`` draws ``(n, 2)``: a grid point with probability ``exp(log_density)·cell_area``
    (inverse CDF), then a uniform offset within its cell (``±Δ/2``, mean zero, variance
    ``Δ²/12`` per axis)."""
    cdf = np.cumsum(np.exp(grid.log_density.reshape(-1)) * grid.cell_area)
    spacing = np.array([grid.xs[1] - grid.xs[0], grid.ys[1] - grid.ys[0]])
    args = (jnp.asarray(a, jnp.float32) for a in (cdf / cdf[-1], grid.xs, grid.ys, spacing))
    return _sample_cells(rng_key, *args, n)


@functools.partial(jax.jit, static_argnums=5)
def _sample_cells(rng_key, cdf, xs, ys, spacing, n):
    key_cell, key_jitter = jax.random.split(rng_key)
    u = jax.random.uniform(key_cell, (n,), jnp.float32)
    cell = jnp.clip(jnp.searchsorted(cdf, u), 0, cdf.size - 1)
    i, j = jnp.divmod(cell, ys.size)
    jitter = jax.random.uniform(key_jitter, (n, 2), minval=-0.5, maxval=0.5) * spacing
    return jnp.stack([xs[i], ys[j]], axis=1) + jitter
