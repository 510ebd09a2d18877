r"""The masked-diffusion state: tokens, one-hots, forward masking and the denoiser's carry-over
(docs/algorithms.md §10.1).

A sequence of length ``L`` over ``V`` real tokens ``0 … V−1`` is an int32 array ``x``; the mask
is the extra id ``m = V``, so a one-hot has width ``S = V + 1``. A **relaxed one-hot** ``E`` is
any real ``(L, S)`` matrix: denoisers and rewards take it, so that gradients w.r.t. ``E`` exist
(the first-order proposal's). Forward masking, per position independently:

.. math::

    q(x_t^l \mid x_0^l) = α_t\,1[x_t^l = x_0^l] + (1 − α_t)\,1[x_t^l = m].

A denoiser gives logits ``ℓ(E, t) ∈ ℝ^{L×S}``; its distribution ``μ`` puts no mass on the mask
(the mask logit is ignored: ``−∞``) and **carries over** the unmasked positions: ``μ_l = e(x^l)``
where ``x^l ≠ m``. On a relaxed one-hot the carry-over is continuous,

.. math::

    μ(E)_l = c_l(E)\,\mathrm{softmax}(ℓ_l) + (1 − e_m) ⊙ E_l,\qquad
    c_l(E) = 1 − \sum_{v ≠ m} E_{l,v},

which equals the hard rule at a one-hot and keeps the gradient at unmasked positions (with a
hard ``where`` it would be lost).
"""

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "one_hot",
    "is_masked",
    "all_masked",
    "mask",
    "forward_log_prob",
    "real_logits",
    "carry_over",
    "denoiser_probs",
    "denoiser_log_probs",
    "as_float",
]


def one_hot(x: ArrayLike, vocab_size: int, dtype=jnp.float32) -> Array:
    """``e(x)``: the ``(…, L, V + 1)`` one-hot of tokens ``x`` (the mask ``V`` last)."""
    return jax.nn.one_hot(x, vocab_size + 1, dtype=dtype)


def is_masked(x: ArrayLike, vocab_size: int) -> Array:
    """Boolean array: where ``x`` holds the mask id ``V``."""
    return jnp.asarray(x) == vocab_size


def all_masked(length: int, vocab_size: int) -> Array:
    """``m^L``: the ``(L,)`` int32 state at ``t = 1``."""
    return jnp.full((length,), vocab_size, jnp.int32)


def mask(rng_key: PRNGKey, x: ArrayLike, alpha: ArrayLike, vocab_size: int) -> Array:
    """A draw of the forward process: each position of ``x`` kept with probability ``α``,
    masked otherwise (already masked positions stay masked)."""
    x = jnp.asarray(x)
    keep = jax.random.uniform(rng_key, x.shape) < alpha
    return jnp.where(keep, x, vocab_size).astype(x.dtype)


def forward_log_prob(
    x_t: ArrayLike, x_s: ArrayLike, alpha_t: ArrayLike, alpha_s: ArrayLike, vocab_size: int
) -> Array:
    r"""``log q(x_t | x_s)``: the forward process from ``s`` to a later ``t`` (``α_t ≤ α_s``).

    Per position: a masked ``x_s^l`` stays masked; a token stays with probability ``α_t/α_s``
    and is masked with ``1 − α_t/α_s``; any other move has probability 0.
    """
    x_t, x_s = jnp.asarray(x_t), jnp.asarray(x_s)
    keep = as_float(alpha_t) / as_float(alpha_s)
    masked_s = x_s == vocab_size
    log_p = jnp.where(
        masked_s,
        jnp.where(x_t == vocab_size, 0.0, -jnp.inf),
        jnp.where(
            x_t == x_s, jnp.log(keep), jnp.where(x_t == vocab_size, jnp.log1p(-keep), -jnp.inf)
        ),
    )
    return jnp.sum(log_p)


def real_logits(logits: ArrayLike) -> Array:
    """Float32 logits with the mask column set to ``−∞`` (the denoiser never predicts a mask)."""
    logits = as_float(logits)
    return logits.at[..., -1].set(-jnp.inf)


def carry_over(y: ArrayLike, soft_one_hot: ArrayLike) -> Array:
    r"""``c(E)⊙y + (1 − e_m)⊙E``: rows ``y`` (predictions or sampled completions, no mass on
    the mask) with the unmasked positions of ``E`` carried over continuously (module
    docstring); at a one-hot ``E``, ``y`` where masked and ``E`` elsewhere."""
    e = as_float(soft_one_hot)
    keep = 1.0 - jnp.sum(e[..., :-1], axis=-1, keepdims=True)
    return keep * y + e.at[..., -1].set(0.0)


def denoiser_probs(logits: ArrayLike, soft_one_hot: ArrayLike) -> Array:
    r"""``μ(E)``: the denoiser's ``(L, S)`` probabilities with the continuous carry-over
    (module docstring); differentiable in ``E`` and in the logits."""
    return carry_over(jax.nn.softmax(real_logits(logits), axis=-1), soft_one_hot)


def denoiser_log_probs(logits: ArrayLike, x: ArrayLike, vocab_size: int) -> Array:
    r"""``log μ``: the ``(L, S)`` log-probabilities of the denoiser at the state ``x`` with the
    hard carry-over (``log e(x^l)`` at unmasked positions, ``log_softmax`` of the real logits at
    masked ones); the mask column is ``−∞``."""
    log_mu = jax.nn.log_softmax(real_logits(logits), axis=-1)
    carried = jnp.log(one_hot(x, vocab_size))
    return jnp.where(is_masked(x, vocab_size)[..., None], log_mu, carried)


def as_float(value: ArrayLike) -> Array:
    """``value`` as a floating array of at least float32 (bf16 is promoted; float64 kept)."""
    value = jnp.asarray(value)
    return value.astype(jnp.promote_types(value.dtype, jnp.float32))
