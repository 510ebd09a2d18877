"""The optax training loop shared by the learned models: all steps in one ``lax.scan``."""

from typing import Callable

import jax
import optax
from blackjax.types import Array, ArrayTree, PRNGKey


def fit(
    loss_fn: Callable[[ArrayTree, PRNGKey], Array],
    params: ArrayTree,
    optimizer: optax.GradientTransformation,
    rng_key: PRNGKey,
    num_steps: int,
) -> tuple[ArrayTree, Array]:
    """Minimise ``loss_fn(params, key)`` by ``optimizer`` for ``num_steps`` steps.

    Step ``i`` gets key ``i`` of ``jax.random.split(rng_key, num_steps)`` (its minibatch and
    noise derive from it). One jitted ``lax.scan``. Returns ``(params, losses per step)``.
    """

    def step(carry, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    keys = jax.random.split(rng_key, num_steps)
    run = jax.jit(lambda params, keys: jax.lax.scan(step, (params, optimizer.init(params)), keys))
    (params, _), losses = run(params, keys)
    return params, losses
