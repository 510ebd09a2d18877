r"""The unguided masked-diffusion sampler: ``T`` steps from ``m^L`` (docs/algorithms.md §10.2).

Step ``i`` goes from ``t_i`` to ``t_{i+1}``: one denoiser call ``ℓ(e(x), t_i)``, the
carry-over log-probabilities ``log μ``
(:func:`psijax.discrete.masking.denoiser_log_probs`), the kernel's log-table and a draw
(:mod:`psijax.discrete.kernels`). The steps run in ``lax.scan``; the function acts on a single
sequence, so ``jax.vmap`` over keys gives a batch. The marginal of ``x_T`` is the **T-step
sampler's** distribution ``P^T`` (several positions unmasked in one step are drawn
independently given ``x``), which equals the data distribution of an exact denoiser only for
the one-token kernel (:func:`psijax.discrete.exact.sampler_marginal` computes it on toys).

A **prompt** is a partially masked state: its unmasked positions are frozen (never remasked,
never changed) and the sampler fills the others.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike, PRNGKey

from psijax._checks import check_int, concrete_value
from psijax.discrete.kernels import Kernel, OneToken, check_kernel
from psijax.discrete.masking import denoiser_log_probs, one_hot
from psijax.discrete.schedules import alphas, time_grid

__all__ = ["step_table", "sampler_grid", "initial_state", "sample"]


def step_table(
    logits_fn: Callable,
    kernel: Kernel,
    x: ArrayLike,
    t: ArrayLike,
    alpha_t: ArrayLike,
    alpha_s: ArrayLike,
    vocab_size: int,
    frozen: ArrayLike | None = None,
) -> tuple[Array, Array]:
    """``(log_mu, table)`` at state ``x``: one call of ``logits_fn(e(x), t)``, the carry-over
    log-probabilities and the kernel's log-table of the step ``t → s`` (positions ``frozen``
    kept)."""
    x = jnp.asarray(x)
    log_mu = denoiser_log_probs(logits_fn(one_hot(x, vocab_size), t), x, vocab_size)
    table = kernel.table(x, log_mu, alpha_t, alpha_s)
    if frozen is not None:
        table = kernel.freeze(table, x, frozen)
    return log_mu, table


def sampler_grid(
    num_steps: int, schedule="linear", grid: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(times, α)``: the grid (uniform with ``num_steps`` steps unless ``grid`` is given) and
    the schedule's values on it (:func:`psijax.discrete.schedules.alphas`), float64."""
    times = time_grid(num_steps) if grid is None else concrete_value(grid, np.float64)
    if times is None:
        raise ValueError("`grid` must be concrete (not traced).")
    return times, alphas(schedule, times)


def initial_state(length: int, vocab_size: int, prompt: ArrayLike | None = None):
    """``(x_0, frozen)``: the state at ``t = 1`` and the frozen positions (NumPy arrays, so
    that they stay concrete under ``jit``).

    Without a prompt, ``m^L`` and no frozen position. A ``prompt`` is an ``(L,)`` array of ids
    in ``[0, V]``: its tokens ``< V`` are fixed, the mask id ``V`` marks the free positions.
    Raises ``ValueError`` for another shape or an id out of range (concrete prompts).
    """
    length = check_int(length, "length")
    vocab_size = check_int(vocab_size, "vocab_size")
    if prompt is None:
        return np.full((length,), vocab_size, np.int32), np.zeros((length,), bool)
    values = concrete_value(prompt)
    if values is None:
        raise ValueError("`prompt` must be concrete (not traced).")
    if values.shape != (length,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"`prompt` must be an int array of shape ({length},), got "
            f"{values.dtype} {values.shape}."
        )
    if np.any(values < 0) or np.any(values > vocab_size):
        raise ValueError(
            f"`prompt` token ids must lie in [0, {vocab_size}] ({vocab_size} = mask: a free "
            f"position), got values in [{values.min()}, {values.max()}]."
        )
    x = values.astype(np.int32)
    return x, x != vocab_size


def sample(
    rng_key: PRNGKey,
    logits_fn: Callable,
    length: int,
    vocab_size: int,
    *,
    num_steps: int,
    kernel: Kernel | str = "mdlm",
    schedule="linear",
    grid: ArrayLike | None = None,
    prompt: ArrayLike | None = None,
) -> Array:
    r"""One sequence from the unguided sampler (module docstring).

    Parameters
    ----------
    rng_key
        PRNG key.
    logits_fn
        ``logits_fn(E, t) -> (L, V + 1)`` on a single relaxed one-hot ``E`` of shape
        ``(L, V + 1)``.
    length, vocab_size
        ``L`` and ``V`` (the mask id is ``V``).
    num_steps
        ``T``; the one-token kernel needs ``T`` = the number of free positions.
    kernel
        A :class:`~psijax.discrete.kernels.Kernel` or a name of ``KERNELS``.
    schedule, grid
        The schedule (:mod:`psijax.discrete.schedules`) and optionally a concrete grid.
    prompt
        ``None`` or an ``(L,)`` partially masked state whose tokens are kept
        (:func:`initial_state`).

    Returns
    -------
    Array
        ``(L,)`` int32 tokens in ``[0, V)``.

    """
    kernel = check_kernel(kernel)
    times, alpha = sampler_grid(num_steps, schedule, grid)
    x, frozen = initial_state(length, vocab_size, prompt)
    check_one_token_steps(kernel, times.shape[0] - 1, int(length - np.sum(np.asarray(frozen))))
    times, alpha = jnp.asarray(times, jnp.float32), jnp.asarray(alpha, jnp.float32)

    def body(x, inputs):
        key, t, a_t, a_s = inputs
        _, table = step_table(logits_fn, kernel, x, t, a_t, a_s, vocab_size, frozen)
        return kernel.sample(key, table, x), None

    keys = jax.random.split(rng_key, times.shape[0] - 1)
    x, _ = jax.lax.scan(body, x, (keys, times[:-1], alpha[:-1], alpha[1:]))
    return x


def check_one_token_steps(kernel: Kernel, num_steps: int, num_free: int) -> None:
    """``ValueError`` unless the one-token kernel gets one step per free position."""
    if isinstance(kernel, OneToken) and num_steps != num_free:
        raise ValueError(
            f"the one-token kernel unmasks one position per step: `num_steps` must equal the "
            f"number of free positions, {num_free}, got {num_steps}."
        )
