r"""Proposals of the discrete SMC (docs/algorithms.md §10.5).

A proposal draws ``x' ~ q(· | x)`` for one particle and returns ``log q(x' | x)``; the SMC adds
``log p̃(x' | x)`` of the target (:mod:`psijax.align.discrete.targets`), so the weights are
exact whatever the proposal, and a better proposal only lowers their variance.

* :class:`Reverse`: ``q`` = the target's reverse table (the model's kernel; for a product
  target its locally optimal ``p_a^γ p_b^{1−γ}``). "SMC-base"; FK steering uses it.
* :class:`FirstOrder` ("SMC-grad"): ``q̃(x'^l = v | x) ∝ p(x'^l = v | x)·exp(δ_{l,v})`` with
  ``δ_{l,v} = g_{l,v} − g_{l,x^l}``, ``g = ∇_E ρ_{i+1}`` at ``e(x)`` (the twist's gradient at
  the next level's ``κ``: :func:`psijax.align.discrete.twists.evaluate`), i.e. the
  first-order change of the next twist when position ``l`` becomes ``v``; optionally clipped
  to ``[−c, c]``. ``injection="kernel"``: ``δ`` is added to the kernel's log-table over all
  ``S`` classes (it changes whether and what unmasks); ``"denoiser"``: to the denoiser's
  log-probabilities (``μ ← softmax(log μ + δ)`` at masked positions; the unmask rate stays).
  Same support as ``p``. ``top_k=k`` keeps only the ``k`` largest ``δ_{l,v}`` over the real
  tokens of each position (the rest 0: those tokens keep the model's probabilities); the SMC
  then stores ``2·k + 1`` numbers per position instead of ``S``, which bounds the memory of a
  large vocabulary (docs/algorithms.md §10.8). It is another proposal, not an approximation
  of the weights: they stay exact.
* :class:`Amortised` ("SMC-amot"): the reverse kernel of a second denoiser ``logits_fn``
  (trained by :mod:`psijax.align.discrete.amortised`), one extra denoiser call per move; the
  weights stay the corrected ``p̃/q`` ones, so the target is ``P_θ e^{r/β}``, not the second
  model's tilt.
* :class:`LocallyOptimal`: ``q*(x' | x) ∝ p̃(x' | x)·e^{ρ_{i+1}(x')}`` by enumerating every
  state (``(V + 1)^L`` of them; tests and toys): the twist is evaluated at all states once per
  step (``K`` denoiser calls, counted), then ``log G = log Σ_{x'} p̃ e^{ρ_{i+1}} − ρ_i(x)``
  does not depend on ``x'``. With the exact twist every weight is 1 and ``Ẑ = Z``.
"""

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.types import Array

from psijax._checks import check_choice, check_int, check_real
from psijax.discrete.masking import denoiser_log_probs, is_masked, one_hot

__all__ = [
    "Move",
    "Proposal",
    "Reverse",
    "FirstOrder",
    "Amortised",
    "LocallyOptimal",
    "check_proposal",
]


class Move(NamedTuple):
    """What a proposal sees of one particle and its step.

    x
        ``(L,)`` tokens at level ``i``.
    log_mu
        ``(L, S)`` carry-over log-probabilities of the problem's denoiser at ``x``.
    table
        The target's reverse log-table (what :class:`Reverse` draws from).
    grad
        What :meth:`Proposal.compact` kept of ``∇_E ρ_{i+1}`` at ``e(x)``, or ``None``.
    t, alpha_t, alpha_s
        The step's time and schedule values.
    """

    x: Array
    log_mu: Array
    table: Array
    grad: object
    t: Array
    alpha_t: Array
    alpha_s: Array


class Proposal:
    """Base of the proposals: ``__call__(rng_key, move, kernel, frozen, aux, log_kernel) ->
    (x', log q)``, by default a draw from :meth:`table` (a subclass of a kernel-table proposal
    defines only that); ``log_kernel(x')`` is the target's ``log p̃(x' | x)`` (for proposals
    that need it: :class:`LocallyOptimal`, which overrides ``__call__``)."""

    needs_grad: bool = False
    extra_nfe: int = 0

    def compact(self, grad: Array, x: Array):
        """What the SMC stores of the ``(L, S)`` twist gradient at ``x`` (for the proposals that
        need it; the gradient itself unless overridden)."""
        return grad

    def prepare(self, next_log_twist: Callable, states: Array | None):
        """Per-step work shared by the particles (``None`` unless overridden)."""
        return None

    def table(self, move: Move, kernel, frozen) -> Array:
        """The proposal's log-table at the particle (the target's reverse table unless
        overridden)."""
        return move.table

    def __call__(self, rng_key, move, kernel, frozen, aux=None, log_kernel=None):
        """Draw ``x'`` from :meth:`table` and return it with ``log q(x' | x)``."""
        table = self.table(move, kernel, frozen)
        x_next = kernel.sample(rng_key, table, move.x)
        return x_next, kernel.log_prob(table, move.x, x_next)


@dataclasses.dataclass(frozen=True)
class Reverse(Proposal):
    """``q`` = the target's reverse kernel (module docstring)."""


@dataclasses.dataclass(frozen=True)
class FirstOrder(Proposal):
    """The first-order (gradient) proposal (module docstring).

    Parameters
    ----------
    injection
        ``"kernel"`` or ``"denoiser"``.
    clip
        ``None`` or ``c > 0``: ``δ`` clipped to ``[−c, c]``.
    """

    injection: str = "kernel"
    clip: float | None = None
    top_k: int | None = None
    needs_grad = True

    def __post_init__(self):
        check_choice(self.injection, "injection", ("kernel", "denoiser"))
        if self.clip is not None:
            check_real(self.clip, "clip", gt=0.0)
        if self.top_k is not None:
            check_int(self.top_k, "top_k")

    def compact(self, grad, x):
        """``δ = g − g_{x^l}`` (unclipped); with ``top_k``: ``(values, ids)`` of its ``k``
        largest real-token entries per position and the mask column ``δ_{l,m}``."""
        delta = grad - jnp.take_along_axis(grad, x[:, None], axis=-1)
        if self.top_k is None:
            return delta
        k = min(self.top_k, delta.shape[-1] - 1)
        values, ids = jax.lax.top_k(delta[:, :-1], k)
        return values, ids.astype(jnp.int32), delta[:, -1]

    def tilt(self, move: Move) -> Array:
        """``δ_{l,v}`` (clipped), dense ``(L, S)``."""
        delta = move.grad
        if self.top_k is not None:
            values, ids, mask_column = delta
            rows = jnp.arange(values.shape[0])[:, None]
            delta = jnp.zeros_like(move.log_mu).at[rows, ids].set(values)
            delta = delta.at[:, -1].set(mask_column)
        if self.clip is not None:
            delta = jnp.clip(delta, -self.clip, self.clip)
        return delta

    def table(self, move: Move, kernel, frozen) -> Array:
        """The proposal's log-table."""
        delta = self.tilt(move)
        if self.injection == "kernel":
            return kernel.tilt(move.table, delta)
        vocab_size = move.log_mu.shape[-1] - 1
        tilted = jax.nn.log_softmax(move.log_mu + delta.at[:, -1].set(0.0), axis=-1)
        log_mu = jnp.where(is_masked(move.x, vocab_size)[:, None], tilted, move.log_mu)
        return kernel.frozen_table(move.x, log_mu, move.alpha_t, move.alpha_s, frozen)


@dataclasses.dataclass(frozen=True, eq=False)
class Amortised(Proposal):
    """The reverse kernel of a second denoiser ``logits_fn(E, t)`` (module docstring)."""

    logits_fn: Callable
    extra_nfe = 1

    def __post_init__(self):
        if not callable(self.logits_fn):
            raise TypeError("`logits_fn` of Amortised must be a callable (E, t) -> logits.")

    def table(self, move: Move, kernel, frozen) -> Array:
        """The second denoiser's kernel at ``x``."""
        vocab_size = move.log_mu.shape[-1] - 1
        logits = self.logits_fn(one_hot(move.x, vocab_size), move.t)
        log_mu = denoiser_log_probs(logits, move.x, vocab_size)
        log_mu = jnp.where(jnp.isnan(log_mu), move.log_mu, log_mu)  # a NaN row: the base model's
        return kernel.frozen_table(move.x, log_mu, move.alpha_t, move.alpha_s, frozen)


@dataclasses.dataclass(frozen=True)
class LocallyOptimal(Proposal):
    """``q* ∝ p̃·e^{ρ_{i+1}}`` by enumeration (module docstring)."""

    enumerates = True

    def prepare(self, next_log_twist, states):
        """``ρ_{i+1}`` at every state (``(K,)``)."""
        return next_log_twist(states)

    def __call__(self, rng_key, move, kernel, frozen, aux=None, log_kernel=None):
        """Draw from ``q*`` over the enumerated states; ``log q* = log p̃ + ρ − log Σ``."""
        states, log_twists = aux
        log_p = jax.vmap(log_kernel)(states)
        joint = jnp.where(jnp.isfinite(log_p), log_p + log_twists, -jnp.inf)
        norm = jax.nn.logsumexp(joint)
        pick = jax.random.categorical(rng_key, joint)
        return states[pick], joint[pick] - norm


def check_proposal(proposal) -> Proposal:
    """``proposal`` when it is a :class:`Proposal`; ``TypeError`` otherwise."""
    if not isinstance(proposal, Proposal):
        raise TypeError(
            "`proposal` must be a psijax.align.discrete proposal (Reverse(), FirstOrder(), "
            f"Amortised(logits_fn), LocallyOptimal()), got {proposal!r}."
        )
    return proposal
