r"""Exact answers by enumeration for small masked-diffusion models (docs/algorithms.md §10.6).

Over all ``K = (V + 1)^L`` partially masked states (:func:`enumerate_states`, base ``S = V + 1``
digits, position 0 the most significant), a reverse step is a ``K × K`` matrix of
log-probabilities ``log p(x' | x)`` (:func:`kernel_log_matrix`), and dynamic programmes give

* the **T-step sampler's marginal** ``P^T`` by the forward pass from ``m^L`` (or a prompt),
  ``P_{i+1}(x') = Σ_x P_i(x) p_i(x' | x)`` (:func:`forward`, :func:`sampler_marginal`);
* the **soft values** ``V*_T = e^{r/β}``, ``V*_i(x) = Σ_{x'} p_i(x' | x) V*_{i+1}(x')`` by the
  backward pass (:func:`backward`), the optimal twists: ``Z = V*_0(m^L)``, the locally
  optimal proposal ``q*_i(x' | x) ∝ p_i(x' | x) V*_{i+1}(x')``;
* the tilted target ``π = P^T e^{r/β} / Z`` (:func:`tilted_target`).

The passes take any ``log_matrix(i) -> (K, K)``: a product target ``p_a^γ p_b^{1−γ}`` is
``γ A_i + (1 − γ) B_i`` of two kernels' matrices. Everything is in log space; under
``jax_enable_x64`` the arithmetic is float64. Cost ``O(T K² L)``: 4,225 states (the 64 × 64
grid) take seconds; ``(V + 1)^L`` beyond ~10⁴ is out of reach.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.types import Array, ArrayLike

from psijax._checks import check_int
from psijax.discrete.kernels import Kernel, check_kernel
from psijax.discrete.masking import one_hot
from psijax.discrete.sampling import check_one_token_steps, initial_state, sampler_grid, step_table

__all__ = [
    "enumerate_states",
    "state_index",
    "is_data_state",
    "kernel_log_matrix",
    "forward",
    "backward",
    "sampler_marginal",
    "tilted_target",
    "data_table",
    "terminal_log_values",
]

MAX_STATES = 20_000


def enumerate_states(length: int, vocab_size: int) -> Array:
    """All ``(V + 1)^L`` states as a ``(K, L)`` int32 array, state ``k`` having the base-``S``
    digits of ``k`` (:func:`state_index` inverts it). ``ValueError`` beyond 20,000 states."""
    length, vocab_size = check_int(length, "length"), check_int(vocab_size, "vocab_size")
    num_classes = vocab_size + 1
    if num_classes**length > MAX_STATES:
        raise ValueError(
            f"enumeration of (V + 1)^L = {num_classes}^{length} states exceeds {MAX_STATES:,}."
        )
    digits = np.indices((num_classes,) * length).reshape(length, -1).T
    return jnp.asarray(digits, jnp.int32)


def state_index(x: ArrayLike, vocab_size: int) -> Array:
    """The index in :func:`enumerate_states` of the state(s) ``x`` (``(…, L)`` → ``(…)``)."""
    x = jnp.asarray(x)
    weights = (vocab_size + 1) ** jnp.arange(x.shape[-1] - 1, -1, -1)
    return jnp.sum(x * weights, axis=-1).astype(jnp.int32)


def is_data_state(states: ArrayLike, vocab_size: int) -> Array:
    """``(K,)`` booleans: the states with no mask left."""
    return jnp.all(jnp.asarray(states) < vocab_size, axis=-1)


def kernel_log_matrix(
    logits_fn: Callable,
    kernel: Kernel,
    states: ArrayLike,
    t: ArrayLike,
    alpha_t: ArrayLike,
    alpha_s: ArrayLike,
    vocab_size: int,
    frozen: ArrayLike | None = None,
) -> Array:
    """The ``(K, K)`` matrix ``log p(x_b | x_a)`` of one reverse step over ``states``."""
    states = jnp.asarray(states)

    def row(x):
        _, table = step_table(logits_fn, kernel, x, t, alpha_t, alpha_s, vocab_size, frozen)
        return jax.vmap(kernel.log_prob, in_axes=(None, None, 0))(table, x, states)

    return jax.lax.map(row, states, batch_size=256)


def forward(log_matrix: Callable, num_steps: int, log_initial: ArrayLike) -> Array:
    """``log P_T`` from ``log P_0``: ``log P_{i+1} = logsumexp_x(log P_i + log_matrix(i))``."""

    def body(log_p, i):
        return jax.nn.logsumexp(log_p[:, None] + log_matrix(i), axis=0).astype(log_p.dtype), None

    log_p, _ = jax.lax.scan(body, _widest(log_initial), jnp.arange(num_steps))
    return log_p


def backward(log_matrix: Callable, num_steps: int, log_terminal: ArrayLike) -> Array:
    """``(T + 1, K)`` log soft values: ``log V_T`` = ``log_terminal`` and
    ``log V_i = logsumexp_{x'}(log_matrix(i) + log V_{i+1})``."""

    def body(log_v, i):
        new = jax.nn.logsumexp(log_matrix(i) + log_v[None, :], axis=1).astype(log_v.dtype)
        return new, new

    log_terminal = _widest(log_terminal)
    _, history = jax.lax.scan(body, log_terminal, jnp.arange(num_steps), reverse=True)
    return jnp.concatenate([history, log_terminal[None]], axis=0)


def sampler_marginal(
    logits_fn: Callable,
    length: int,
    vocab_size: int,
    *,
    num_steps: int,
    kernel: Kernel | str = "mdlm",
    schedule="linear",
    grid: ArrayLike | None = None,
    prompt: ArrayLike | None = None,
) -> tuple[Array, Callable]:
    r"""The exact distribution ``log P^T`` over :func:`enumerate_states` of the sampler of
    :func:`psijax.discrete.sampling.sample` with the same arguments, and its ``log_matrix``.

    Returns ``(log_p, log_matrix)``: ``(K,)`` log-probabilities (``−∞`` on states with a mask)
    and the step matrices ``log_matrix(i)`` for :func:`backward`.
    """
    kernel = check_kernel(kernel)
    times, alpha = sampler_grid(num_steps, schedule, grid)
    start, frozen = initial_state(length, vocab_size, prompt)
    check_one_token_steps(kernel, times.shape[0] - 1, int(length - np.sum(np.asarray(frozen))))
    states = enumerate_states(length, vocab_size)
    dtype = jnp.result_type(float)
    times, alpha = jnp.asarray(times, dtype), jnp.asarray(alpha, dtype)

    def log_matrix(i):
        return kernel_log_matrix(
            logits_fn, kernel, states, times[i], alpha[i], alpha[i + 1], vocab_size, frozen
        )

    start_index = state_index(start, vocab_size)
    log_initial = jnp.where(jnp.arange(states.shape[0]) == start_index, 0.0, -jnp.inf)
    log_p = forward(log_matrix, times.shape[0] - 1, log_initial.astype(dtype))
    return log_p, log_matrix


def tilted_target(log_p: ArrayLike, log_terminal: ArrayLike) -> tuple[Array, Array]:
    """``(log π, log Z)`` with ``π ∝ P e^{log_terminal}``, ``Z = Σ P e^{log_terminal}``."""
    joint = jnp.asarray(log_p) + jnp.where(jnp.isfinite(log_p), jnp.asarray(log_terminal), 0.0)
    log_z = jax.nn.logsumexp(joint)
    return joint - log_z, log_z


def data_table(values: ArrayLike, length: int, vocab_size: int) -> Array:
    """Values over :func:`enumerate_states` restricted to the data states, as a ``(V,) * L``
    array (entry ``[x^0, …, x^{L−1}]``)."""
    grid = jnp.asarray(values).reshape((vocab_size + 1,) * length)
    return grid[(slice(0, vocab_size),) * length]


def terminal_log_values(reward_fn: Callable, states: ArrayLike, vocab_size: int, beta) -> Array:
    """``r(e(x))/β`` at the data states, ``−∞`` at the others (``V*_T``)."""
    states = jnp.asarray(states)
    rewards = jax.vmap(lambda x: reward_fn(one_hot(x, vocab_size)))(states)
    return jnp.where(is_data_state(states, vocab_size), rewards / beta, -jnp.inf)


def _widest(values: ArrayLike) -> Array:
    """``values`` in the default float type (float64 under ``jax_enable_x64``) or wider."""
    values = jnp.asarray(values)
    return values.astype(jnp.promote_types(values.dtype, jnp.result_type(float)))
