r"""The discrete reward-alignment problem: a masked denoiser, a reward, ``β``, a prompt.

The target (docs/algorithms.md §10.3) is ``π(x) ∝ P_θ(x)·exp(r(x)/β)`` over sequences
``x ∈ {0 … V−1}^L``, with ``P_θ`` the marginal of the sampler's own ``T`` reverse steps. The
denoiser and the reward act on a **single relaxed one-hot** ``E ∈ ℝ^{L×(V+1)}`` (mask id ``V``
in the last column), so that gradients w.r.t. ``E`` exist; the samplers vmap over particles.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import ArrayLike

from psijax._checks import check_int, check_real
from psijax.discrete.sampling import initial_state

__all__ = ["DiscreteProblem", "check_discrete_problem"]


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteProblem:
    r"""A discrete alignment problem ``π(x) ∝ P_θ(x)·exp(r(x)/β)``.

    Parameters
    ----------
    logits_fn
        ``logits_fn(E, t) -> (L, V + 1)``: the denoiser's logits on a single relaxed one-hot
        ``E`` of shape ``(L, V + 1)`` at time ``t`` (its embedding must be ``E·W``, not a table
        lookup, for the gradient proposals). The mask logit is ignored (``−∞``) and unmasked
        positions are carried over by the samplers.
    reward_fn
        ``r(E)``, a scalar reward on a single (relaxed) one-hot, differentiable in ``E`` for the
        first-order proposal (a reward that is not differentiable has zero gradient there: the
        first-order proposal is then the reverse one); ``None`` for ``r ≡ 0`` (product and
        temperature targets).
    length, vocab_size
        ``L >= 1`` and ``V >= 1`` (the mask id is ``V``).
    beta
        ``β > 0``: the tilt's temperature (smaller is sharper).
    prompt
        ``None``, or an ``(L,)`` int array of ids in ``[0, V]``: its tokens ``< V`` are fixed
        in every sample, the mask id ``V`` marks the positions to sample.

    Raises
    ------
    TypeError, ValueError
        Naming the invalid argument, before anything runs: ``logits_fn`` and ``reward_fn`` are
        checked once with :func:`jax.eval_shape`.

    """

    logits_fn: Callable
    reward_fn: Callable | None
    length: int
    vocab_size: int
    beta: float = 1.0
    prompt: ArrayLike | None = None

    def __post_init__(self):
        if not callable(self.logits_fn):
            raise TypeError("`logits_fn` must be a callable (E, t) -> logits of shape (L, V + 1).")
        if self.reward_fn is not None and not callable(self.reward_fn):
            raise TypeError("`reward_fn` must be a callable E -> scalar reward, or None.")
        object.__setattr__(self, "length", check_int(self.length, "length"))
        object.__setattr__(self, "vocab_size", check_int(self.vocab_size, "vocab_size"))
        object.__setattr__(self, "beta", check_real(self.beta, "beta", gt=0.0, concrete=True))
        start, frozen = initial_state(self.length, self.vocab_size, self.prompt)
        if bool(np.all(np.asarray(frozen))):
            raise ValueError("`prompt` fixes every position: there is nothing to sample.")
        object.__setattr__(self, "_start", start)
        object.__setattr__(self, "_frozen", frozen)
        self._check_shapes()

    @property
    def num_classes(self) -> int:
        """``S = V + 1``."""
        return self.vocab_size + 1

    @property
    def start(self):
        """The ``(L,)`` int32 state at ``t = 1`` (the prompt, or all masked)."""
        return self._start

    @property
    def frozen(self):
        """``(L,)`` booleans: the prompt's fixed positions."""
        return self._frozen

    @property
    def num_free(self) -> int:
        """The number of positions to sample."""
        return int(self.length - np.sum(np.asarray(self._frozen)))

    def reward(self, soft_one_hot: ArrayLike):
        """``r(E)`` (0 without a reward)."""
        if self.reward_fn is None:
            return jnp.zeros((), jnp.float32)
        return self.reward_fn(soft_one_hot)

    def _check_shapes(self) -> None:
        shape = (self.length, self.num_classes)
        e = jax.ShapeDtypeStruct(shape, jnp.float32)
        t = jax.ShapeDtypeStruct((), jnp.float32)
        out = _shape_of(self.logits_fn, "logits_fn", e, t)
        if getattr(out, "shape", None) != shape or not jnp.issubdtype(out.dtype, jnp.floating):
            raise ValueError(
                f"`logits_fn(E, t)` must return floating logits of shape {shape} (L, V + 1) for "
                f"E of shape {shape}, got {_describe(out)}."
            )
        if self.reward_fn is not None:
            out = _shape_of(self.reward_fn, "reward_fn", e)
            if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
                raise ValueError(
                    f"`reward_fn(E)` must return a floating scalar for E of shape {shape}, got "
                    f"{_describe(out)}."
                )


def check_discrete_problem(problem) -> DiscreteProblem:
    """``problem`` when it is a :class:`DiscreteProblem`; ``TypeError`` otherwise."""
    if not isinstance(problem, DiscreteProblem):
        raise TypeError(
            f"`problem` must be a psijax.align.discrete.DiscreteProblem, got "
            f"{type(problem).__name__}."
        )
    return problem


def _shape_of(fn, name, *args):
    try:
        return jax.eval_shape(fn, *args)
    except Exception as error:  # the user's function failed on the documented input
        shapes = ", ".join(f"{a.shape} {a.dtype}" for a in args)
        raise ValueError(f"`{name}` failed on inputs of shape {shapes}: {error}") from error


def _describe(out) -> str:
    shape = getattr(out, "shape", None)
    return f"{out.dtype} {shape}" if shape is not None else type(out).__name__
