r"""Masked-diffusion models with exact denoisers (docs/algorithms.md §10.6); no sampling here.

Each model is a distribution ``p`` over ``{0 … V−1}^L`` with its **exact denoiser**: the
conditional of each masked position given the unmasked ones, written so that it takes a
relaxed one-hot ``E ∈ ℝ^{L×(V+1)}`` (the mask in the last column) and is differentiable in it.
An observation enters through a per-position likelihood factor which, at a one-hot, is
``1[x^l = u]`` for an unmasked token ``u`` and ``1`` for a mask:

* :class:`MixtureOfProducts` ``p(x) = Σ_c π_c Π_l θ_{c,l}(x^l)``: posterior
  ``log w_c = log π_c + Σ_l Σ_{v<V} E_{l,v} log θ_{c,l,v}``, ``μ_{l,v} = Σ_c w_c θ_{c,l,v}``;
* :class:`HMM` (hidden chain ``z``, initial ``π``, transitions ``A``, emissions ``B``): factor
  ``f_l(h) = Σ_{v<V} E_{l,v} B_{h,v} + E_{l,m}``, forward–backward gives ``P(z_l | obs)`` and
  ``μ_{l,v} = Σ_h P(z_l = h | obs) B_{h,v}``;
* :class:`JointTable` (any ``p`` given as a ``V^L`` table): factor ``f_l(u) = E_{l,u} + E_{l,m}``,
  ``μ_{l,v} ∝ Σ_{x: x^l = v} p(x) Π_{k≠l} f_k(x^k)``; :func:`grid_mixture` makes the discretised
  2-D Gaussian mixtures (:func:`gmm1`: 3 × 3 means on ``{−4, 0, 4}²``; :func:`ring8`: 8 means at
  radius 4; covariance ``0.3·I``; 64 points per axis on ``[−6, 6]``).

``logits(E, t)`` returns ``log μ`` with the mask logit ``−∞`` (``t`` is unused: an exact masked
denoiser does not depend on time); the samplers apply the carry-over.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey

__all__ = ["MixtureOfProducts", "HMM", "JointTable", "grid_mixture", "gmm1", "ring8"]


def _with_mask_column(log_mu: Array) -> Array:
    pad = jnp.full(log_mu.shape[:-1] + (1,), -jnp.inf, log_mu.dtype)
    return jnp.concatenate([log_mu, pad], axis=-1)


@dataclasses.dataclass(frozen=True)
class MixtureOfProducts:
    """``p(x) = Σ_c π_c Π_l θ_{c,l}(x^l)`` (module docstring).

    log_weights
        ``(C,)`` ``log π`` (normalised on use).
    log_theta
        ``(C, L, V)`` per-component, per-position log-probabilities (normalised on use).
    """

    log_weights: ArrayLike
    log_theta: ArrayLike

    @classmethod
    def random(
        cls,
        rng_key: PRNGKey,
        num_components: int,
        length: int,
        vocab_size: int,
        concentration: float = 0.5,
    ) -> "MixtureOfProducts":
        """Components ``θ_{c,l} ~ Dirichlet(concentration)`` and weights ``~ Dirichlet(1)``."""
        k1, k2 = jax.random.split(rng_key)
        theta = jax.random.dirichlet(
            k1, jnp.full((vocab_size,), concentration), (num_components, length)
        )
        weights = jax.random.dirichlet(k2, jnp.ones((num_components,)))
        return cls(jnp.log(weights), jnp.log(theta))

    @property
    def _log_pi(self):
        return jax.nn.log_softmax(jnp.asarray(self.log_weights))

    @property
    def _log_theta(self):
        return jax.nn.log_softmax(jnp.asarray(self.log_theta), axis=-1)

    def logits(self, soft_one_hot: ArrayLike, t: ArrayLike = None) -> Array:
        """``log μ`` of the exact denoiser, ``(L, V + 1)``, mask logit ``−∞``."""
        e = jnp.asarray(soft_one_hot)[..., :-1]
        log_theta = self._log_theta
        log_w = jax.nn.log_softmax(self._log_pi + jnp.einsum("lv,clv->c", e, log_theta))
        return _with_mask_column(jax.nn.logsumexp(log_w[:, None, None] + log_theta, axis=0))

    def log_prob(self, x: ArrayLike) -> Array:
        """``log p(x)`` of a sequence ``(L,)`` of tokens."""
        picked = jnp.take_along_axis(self._log_theta, jnp.asarray(x)[None, :, None], axis=-1)
        return jax.nn.logsumexp(self._log_pi + jnp.sum(picked[..., 0], axis=-1))

    def sample(self, rng_key: PRNGKey, num_samples: int) -> Array:
        """``(n, L)`` int32 draws."""
        k1, k2 = jax.random.split(rng_key)
        c = jax.random.categorical(k1, self._log_pi, shape=(num_samples,))
        return jax.random.categorical(k2, self._log_theta[c], axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class HMM:
    """A hidden Markov model (module docstring).

    log_initial
        ``(H,)`` ``log π``.
    log_transition
        ``(H, H)`` ``log A`` (rows: from).
    log_emission
        ``(H, V)`` ``log B``.
    length
        ``L``.
    """

    log_initial: ArrayLike
    log_transition: ArrayLike
    log_emission: ArrayLike
    length: int

    @classmethod
    def random(
        cls,
        rng_key: PRNGKey,
        num_hidden: int,
        length: int,
        vocab_size: int,
        concentration: float = 0.5,
    ) -> "HMM":
        """Dirichlet(``concentration``) transition and emission rows, Dirichlet(1) start."""
        k1, k2, k3 = jax.random.split(rng_key, 3)
        a = jax.random.dirichlet(k1, jnp.full((num_hidden,), concentration), (num_hidden,))
        b = jax.random.dirichlet(k2, jnp.full((vocab_size,), concentration), (num_hidden,))
        pi = jax.random.dirichlet(k3, jnp.ones((num_hidden,)))
        return cls(jnp.log(pi), jnp.log(a), jnp.log(b), length)

    def _normalised(self):
        return (
            jax.nn.log_softmax(jnp.asarray(self.log_initial)),
            jax.nn.log_softmax(jnp.asarray(self.log_transition), axis=-1),
            jax.nn.log_softmax(jnp.asarray(self.log_emission), axis=-1),
        )

    def _forward_backward(self, log_factors: Array) -> Array:
        """``(L, H)`` log-posteriors of ``z_l`` given per-position log-factors ``(L, H)``."""
        log_pi, log_a, _ = self._normalised()

        def fwd(carry, f):
            new = jax.nn.logsumexp(carry[:, None] + log_a, axis=0) + f
            return new, new

        first = log_pi + log_factors[0]
        _, rest = jax.lax.scan(fwd, first, log_factors[1:])
        alpha = jnp.concatenate([first[None], rest])

        def bwd(carry, f):
            new = jax.nn.logsumexp(log_a + (f + carry)[None, :], axis=1)
            return new, new

        last = jnp.zeros_like(
            log_factors[0]
        )  # (derived from the input: a scan carry under shard_map)
        _, beta = jax.lax.scan(bwd, last, log_factors[1:], reverse=True)
        beta = jnp.concatenate([beta, last[None]])
        return jax.nn.log_softmax(alpha + beta, axis=-1)

    def logits(self, soft_one_hot: ArrayLike, t: ArrayLike = None) -> Array:
        """``log μ`` of the exact denoiser, ``(L, V + 1)``, mask logit ``−∞``."""
        e = jnp.asarray(soft_one_hot)
        _, _, log_b = self._normalised()
        factors = e[:, :-1] @ jnp.exp(log_b).T + e[:, -1:]
        log_post = self._forward_backward(jnp.log(factors))
        return _with_mask_column(jax.nn.logsumexp(log_post[:, :, None] + log_b[None], axis=1))

    def log_prob(self, x: ArrayLike) -> Array:
        """``log p(x)`` by the forward algorithm."""
        log_pi, log_a, log_b = self._normalised()
        emit = log_b[:, jnp.asarray(x)].T  # (L, H)

        def fwd(carry, f):
            return jax.nn.logsumexp(carry[:, None] + log_a, axis=0) + f, None

        last, _ = jax.lax.scan(fwd, log_pi + emit[0], emit[1:])
        return jax.nn.logsumexp(last)

    def sample(self, rng_key: PRNGKey, num_samples: int) -> Array:
        """``(n, L)`` int32 draws."""
        log_pi, log_a, log_b = self._normalised()

        def one(key):
            keys = jax.random.split(key, 2 * self.length)
            z = jax.random.categorical(keys[0], log_pi)
            xs = []
            for pos in range(self.length):
                if pos:
                    z = jax.random.categorical(keys[2 * pos], log_a[z])
                xs.append(jax.random.categorical(keys[2 * pos + 1], log_b[z]))
            return jnp.stack(xs).astype(jnp.int32)

        return jax.vmap(one)(jax.random.split(rng_key, num_samples))


@dataclasses.dataclass(frozen=True)
class JointTable:
    """Any distribution over ``V^L`` given as a table (module docstring).

    log_p
        ``(V,) * L`` log-probabilities (normalised on use).
    points
        Optional ``(V,)`` coordinates of the tokens (the grid of :func:`grid_mixture`).
    """

    log_p: ArrayLike
    points: ArrayLike | None = None

    @property
    def length(self) -> int:
        """``L``."""
        return jnp.ndim(self.log_p)

    @property
    def vocab_size(self) -> int:
        """``V``."""
        return jnp.shape(self.log_p)[0]

    def probs(self) -> Array:
        """The normalised table ``p``."""
        log_p = jnp.asarray(self.log_p)
        return jnp.exp(log_p - jax.nn.logsumexp(log_p))

    def logits(self, soft_one_hot: ArrayLike, t: ArrayLike = None) -> Array:
        """``log μ`` of the exact denoiser, ``(L, V + 1)``, mask logit ``−∞``."""
        e = jnp.asarray(soft_one_hot)
        factors = e[:, :-1] + e[:, -1:]  # (L, V)
        p = self.probs()
        rows = []
        for pos in range(self.length):
            weighted = p
            for k in range(self.length):
                if k != pos:
                    shape = [1] * self.length
                    shape[k] = -1
                    weighted = weighted * factors[k].reshape(shape)
            axes = tuple(k for k in range(self.length) if k != pos)
            rows.append(jnp.sum(weighted, axis=axes))
        mu = jnp.stack(rows)
        return _with_mask_column(jnp.log(mu / jnp.sum(mu, axis=-1, keepdims=True)))

    def log_prob(self, x: ArrayLike) -> Array:
        """``log p(x)``."""
        log_p = jnp.asarray(self.log_p)
        return log_p[tuple(jnp.asarray(x))] - jax.nn.logsumexp(log_p)

    def sample(self, rng_key: PRNGKey, num_samples: int) -> Array:
        """``(n, L)`` int32 draws."""
        log_p = jnp.asarray(self.log_p)
        flat = jax.random.categorical(rng_key, log_p.reshape(-1), shape=(num_samples,))
        return jnp.stack(jnp.unravel_index(flat, log_p.shape), axis=-1).astype(jnp.int32)


def grid_mixture(
    means: ArrayLike,
    variance: float = 0.3,
    num_points: int = 64,
    domain: tuple[float, float] = (-6.0, 6.0),
    weights: ArrayLike | None = None,
) -> JointTable:
    """A 2-D Gaussian mixture with isotropic covariance ``variance·I`` evaluated on the grid
    ``linspace(*domain, num_points)²`` and normalised over it (``L = 2``, ``V = num_points``)."""
    means = np.asarray(means, np.float64)
    points = np.linspace(domain[0], domain[1], num_points)
    w = np.full(len(means), 1.0 / len(means)) if weights is None else np.asarray(weights, float)
    gx, gy = np.meshgrid(points, points, indexing="ij")
    sq = (gx[..., None] - means[:, 0]) ** 2 + (gy[..., None] - means[:, 1]) ** 2
    log_comp = np.log(w) - sq / (2.0 * variance)
    top = log_comp.max(axis=-1, keepdims=True)
    log_p = (top + np.log(np.exp(log_comp - top).sum(axis=-1, keepdims=True)))[..., 0]
    log_p -= np.log(np.exp(log_p - log_p.max()).sum()) + log_p.max()
    return JointTable(jnp.asarray(log_p, jnp.float32), jnp.asarray(points, jnp.float32))


def gmm1(num_points: int = 64) -> JointTable:
    """GMM1: 3 × 3 means on ``{−4, 0, 4}²``, covariance ``0.3·I``, on ``[−6, 6]²``."""
    axis = np.array([-4.0, 0.0, 4.0])
    means = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return grid_mixture(means, 0.3, num_points)


def ring8(num_points: int = 64, radius: float = 4.0) -> JointTable:
    """Eight means evenly on the circle of radius 4, covariance ``0.3·I``, on ``[−6, 6]²``."""
    angles = 2.0 * np.pi * np.arange(8) / 8
    return grid_mixture(radius * np.stack([np.cos(angles), np.sin(angles)], -1), 0.3, num_points)
