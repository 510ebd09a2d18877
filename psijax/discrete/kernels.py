r"""Reverse kernels of masked diffusion, one interface (docs/algorithms.md §10.2).

A kernel of step ``t → s`` (``s < t``) is described by a **log-table** ``K ∈ [−∞, 0]^{L×S}``,
built from the state ``x``, the denoiser's log-probabilities ``log μ`` (with carry-over:
:func:`psijax.discrete.masking.denoiser_log_probs`) and ``α_t``, ``α_s``:

* a **factorised** kernel (``joint = False``; :class:`MDLM`, :class:`ReMDM`) draws every
  position independently, row ``l`` of ``exp K`` being the law of ``x'^l``, and
  ``log p(x' | x) = Σ_l K[l, x'^l]``;
* a **joint** kernel (``joint = True``; :class:`OneToken`) changes exactly one position:
  ``exp K`` is one law over the pairs ``(l, v)`` and ``log p(x' | x) = K[l, v]`` for the
  position ``l`` that changed to ``v``.

Every sampler of psijax needs only :meth:`Kernel.table`, :meth:`Kernel.sample`,
:meth:`Kernel.log_prob` and :meth:`Kernel.tilt` (multiply the kernel by ``exp δ_{l,v}`` and
renormalise: the first-order proposal), so another kernel (uniform noise, say) joins by
defining them.

**MDLM** (``η = 0`` of ReMDM). An unmasked position stays (``log p = 0``). A masked one stays
masked with probability ``(1 − α_s)/(1 − α_t)`` and becomes ``v`` with probability
``(α_s − α_t)/(1 − α_t)·μ_{l,v}``; at ``α_s = 1`` every mask is filled.

**ReMDM** (remasking). An unmasked token is remasked with probability ``σ``, where
``σ_max = min(1, (1 − α_s)/α_t)`` and ``σ = η σ_max`` (``"rescale"``, ``η ∈ [0, 1]``) or
``min(η, σ_max)`` (``"cap"``, ``η ≥ 0``); a masked position becomes ``v`` with probability
``(α_s − (1 − σ)α_t)/(1 − α_t)·μ_{l,v}`` and stays masked with ``(1 − α_s − σα_t)/(1 − α_t)``.
These keep the forward marginals ``q(x_s | x_0)`` of an exact denoiser.

**One token per step** (``T = L`` steps). A masked position is chosen uniformly and drawn from
``μ_l``: ``K[l, v] = −log M + log μ_{l,v}`` with ``M`` the number of masked positions. With an
exact denoiser it samples the data distribution exactly, whatever its correlations (the
any-order autoregressive factorisation); the schedule plays no part.
"""

import dataclasses

import jax
import jax.numpy as jnp
from blackjax.types import Array, ArrayLike, PRNGKey

from psijax._checks import check_choice, check_real
from psijax.discrete.masking import as_float, forward_log_prob, is_masked, one_hot

__all__ = ["Kernel", "MDLM", "ReMDM", "OneToken", "KERNELS", "check_kernel"]


class Kernel:
    """Base of the reverse kernels (module docstring); subclasses define :meth:`table`."""

    joint: bool = False

    def table(
        self, x: ArrayLike, log_mu: ArrayLike, alpha_t: ArrayLike, alpha_s: ArrayLike
    ) -> Array:
        """The ``(L, S)`` log-table of the step ``t → s`` at state ``x``."""
        raise NotImplementedError

    def forward_log_prob(
        self,
        x: ArrayLike,
        x_next: ArrayLike,
        alpha_t: ArrayLike,
        alpha_s: ArrayLike,
        vocab_size: int,
        frozen: ArrayLike | None = None,
    ) -> Array:
        """``log q(x | x')``: the forward (noising) kernel this reverse kernel inverts, from
        ``x'`` at time ``s`` back to ``x`` at the noisier ``t``, the positions ``frozen``
        excluded (temperature targets need it). Factorised kernels: the masking process
        (:func:`psijax.discrete.masking.forward_log_prob`)."""
        x, x_next = _unfrozen(x, x_next, vocab_size, frozen)
        return forward_log_prob(x, x_next, alpha_t, alpha_s, vocab_size)

    def freeze(self, table: ArrayLike, x: ArrayLike, frozen: ArrayLike) -> Array:
        """The table with the positions ``frozen`` (``(L,)`` bool) kept as they are in ``x``."""
        table = jnp.asarray(table)
        keep = -jnp.inf if self.joint else jnp.log(one_hot(x, table.shape[-1] - 1))
        return jnp.where(jnp.asarray(frozen)[:, None], keep, table)

    def frozen_table(
        self,
        x: ArrayLike,
        log_mu: ArrayLike,
        alpha_t: ArrayLike,
        alpha_s: ArrayLike,
        frozen: ArrayLike,
    ) -> Array:
        """:meth:`table` with the positions ``frozen`` kept (:meth:`freeze`): the step's
        log-table under a prompt."""
        return self.freeze(self.table(x, log_mu, alpha_t, alpha_s), x, frozen)

    def tilt(self, table: ArrayLike, delta: ArrayLike) -> Array:
        r"""``log`` of ``exp(K + δ)`` renormalised (per row, or over all pairs when ``joint``):
        the kernel multiplied by ``exp δ`` on its own support."""
        logits = jnp.asarray(table) + as_float(delta)
        axis = (-2, -1) if self.joint else -1
        norm = jax.nn.logsumexp(logits, axis=axis, keepdims=True)
        return jnp.where(jnp.isfinite(norm), logits - norm, -jnp.inf)

    def sample(self, rng_key: PRNGKey, table: ArrayLike, x: ArrayLike) -> Array:
        """A draw ``x' ~ p(· | x)`` of the kernel with log-table ``table`` (int32)."""
        table, x = jnp.asarray(table), jnp.asarray(x)
        if not self.joint:
            return jax.random.categorical(rng_key, table, axis=-1).astype(jnp.int32)
        flat = table.reshape(-1)
        pick = jax.random.categorical(rng_key, flat)
        position, token = jnp.divmod(pick, table.shape[-1])
        moved = x.at[position].set(token.astype(x.dtype))
        return jnp.where(jnp.any(jnp.isfinite(flat)), moved, x).astype(jnp.int32)

    def log_prob(self, table: ArrayLike, x: ArrayLike, x_next: ArrayLike) -> Array:
        """``log p(x' | x)`` of the kernel with log-table ``table``."""
        table, x, x_next = jnp.asarray(table), jnp.asarray(x), jnp.asarray(x_next)
        entries = jnp.take_along_axis(table, x_next[:, None], axis=-1)[:, 0]
        if not self.joint:
            return jnp.sum(entries)
        changed = x_next != x
        count = jnp.sum(changed)
        chosen = jnp.sum(jnp.where(changed, entries, 0.0))
        stuck = jnp.where(jnp.any(jnp.isfinite(table)), -jnp.inf, 0.0)  # no mask left: x' = x
        return jnp.where(count == 1, chosen, jnp.where(count == 0, stuck, -jnp.inf))


@dataclasses.dataclass(frozen=True)
class ReMDM(Kernel):
    """The ReMDM remasking kernel (module docstring); ``eta = 0`` is MDLM.

    Parameters
    ----------
    eta
        ``η ≥ 0`` (``≤ 1`` with ``"rescale"``).
    mode
        ``"rescale"`` (``σ = η σ_max``) or ``"cap"`` (``σ = min(η, σ_max)``).

    """

    eta: float = 0.0
    mode: str = "rescale"

    def __post_init__(self):
        check_choice(self.mode, "mode", ("rescale", "cap"))
        upper = 1.0 if self.mode == "rescale" else None
        check_real(self.eta, "eta", ge=0.0, le=upper)

    def remask_probability(self, alpha_t: ArrayLike, alpha_s: ArrayLike) -> Array:
        """``σ`` of the step ``t → s``."""
        alpha_t, alpha_s = as_float(alpha_t), as_float(alpha_s)
        sigma_max = jnp.minimum(1.0, (1.0 - alpha_s) / jnp.where(alpha_t > 0, alpha_t, 1.0))
        sigma_max = jnp.where(alpha_t > 0, sigma_max, 1.0)
        if self.mode == "rescale":
            return self.eta * sigma_max
        return jnp.minimum(self.eta, sigma_max)

    def table(self, x, log_mu, alpha_t, alpha_s):
        """The log-table (module docstring)."""
        x, log_mu = jnp.asarray(x), as_float(log_mu)
        alpha_t, alpha_s = as_float(alpha_t), as_float(alpha_s)
        vocab_size = log_mu.shape[-1] - 1
        sigma = self.remask_probability(alpha_t, alpha_s) if self.eta else 0.0
        denominator = 1.0 - alpha_t
        safe = jnp.where(denominator > 0, denominator, 1.0)
        unmask = jnp.where(denominator > 0, (alpha_s - (1.0 - sigma) * alpha_t) / safe, 1.0)
        stay = jnp.where(denominator > 0, (1.0 - alpha_s - sigma * alpha_t) / safe, 0.0)
        unmask, stay = jnp.clip(unmask, 0.0, 1.0), jnp.clip(stay, 0.0, 1.0)
        masked_row = (jnp.log(unmask) + log_mu).at[..., -1].set(jnp.log(stay))
        token = one_hot(x, vocab_size)
        kept_row = jnp.log(token * (1.0 - sigma)).at[..., -1].set(jnp.log(sigma))
        return jnp.where(is_masked(x, vocab_size)[..., None], masked_row, kept_row)


@dataclasses.dataclass(frozen=True)
class MDLM(ReMDM):
    """The MDLM ancestral kernel (module docstring): ReMDM with ``η = 0``."""

    def __post_init__(self):
        if self.eta != 0.0:
            raise ValueError(f"MDLM has no remasking (`eta` = 0); use ReMDM(eta={self.eta}).")


@dataclasses.dataclass(frozen=True)
class OneToken(Kernel):
    """One masked position, chosen uniformly, unmasked per step (module docstring)."""

    joint = True

    def table(self, x, log_mu, alpha_t=None, alpha_s=None):
        """``K[l, v] = −log M + log μ_{l,v}`` at masked ``l`` and real ``v``, else ``−∞``."""
        x, log_mu = jnp.asarray(x), as_float(log_mu)
        masked = is_masked(x, log_mu.shape[-1] - 1)
        count = jnp.sum(masked)
        entries = log_mu.at[..., -1].set(-jnp.inf) - jnp.log(jnp.maximum(count, 1))
        return jnp.where(masked[:, None], entries, -jnp.inf)

    def forward_log_prob(self, x, x_next, alpha_t, alpha_s, vocab_size, frozen=None):
        """``log q(x | x')`` of the forward process that masks one of the unmasked (free)
        positions of ``x'`` uniformly: ``−log #unmasked(x')`` when ``x`` is ``x'`` with one
        token masked."""
        x, x_next = _unfrozen(x, x_next, vocab_size, frozen)
        changed = x != x_next
        count = jnp.sum(changed)
        unmasked = jnp.sum(x_next != vocab_size)
        masked_one = jnp.all(jnp.where(changed, x == vocab_size, True))
        one = jnp.where(
            masked_one, -jnp.log(jnp.maximum(unmasked, 1).astype(jnp.float32)), -jnp.inf
        )
        return jnp.where(count == 1, one, jnp.where((count == 0) & (unmasked == 0), 0.0, -jnp.inf))


def _unfrozen(x, x_next, vocab_size, frozen):
    """``x`` and ``x'`` with the frozen positions set to the mask (they contribute ``log 1``)."""
    x, x_next = jnp.asarray(x), jnp.asarray(x_next)
    if frozen is None:
        return x, x_next
    return jnp.where(frozen, vocab_size, x), jnp.where(frozen, vocab_size, x_next)


KERNELS = {"mdlm": MDLM, "remdm": ReMDM, "one_token": OneToken}


def check_kernel(kernel) -> Kernel:
    """``kernel`` when it is a :class:`Kernel` (a name of ``KERNELS`` is made with defaults)."""
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(
                f"`kernel` must be one of {tuple(KERNELS)} or a Kernel, got {kernel!r}."
            )
        return KERNELS[kernel]()
    if not isinstance(kernel, Kernel):
        raise TypeError(
            f"`kernel` must be a psijax.discrete.kernels.Kernel (MDLM(), ReMDM(eta), OneToken()) "
            f"or one of {tuple(KERNELS)}, got {kernel!r}."
        )
    return kernel
