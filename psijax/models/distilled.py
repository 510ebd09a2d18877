r"""A learned distilled toy model: an MLP that predicts the exact flow map from every noisy point.

A timestep-distilled model (FLUX-schnell, consistency models) predicts the end of its flow in
one step from any noisy point of the interpolant. The toy analog trained here: draw
``x0 ~ p_0`` (a 2D mixture of :mod:`psijax.models.presets`), ``z ~ N(0, I)``, ``t ~ U(0, 1)``
(a quarter of the draws at ``t = 1``, where Ψ-Sampler reads the one-step prediction), put
``x_t = (1 − t)x0 + t z``, solve the mixture's exact ODE from ``(x_t, t)`` to 0 (diffrax) and
regress the **average velocity** onto it:

.. math::

    \min_θ\ E\,\big\|u_θ(x_t, t) − (x_t − Φ_t(x_t))/t\big\|^2 ,

so that the model's one-step prediction is ``x̂0 = x − t·u_θ(x, t) ≈ Φ_t(x)`` (Tweedie's form:
every predictor and sampler of psijax reads it as a velocity). The kernel that keeps such a
model's distribution is the re-noising kernel :class:`psijax.flows.distilled.Renoising`, not
the stochastic sampler of :mod:`psijax.flows.sde`.

It differs from the reflowed model of :mod:`psijax.models.reflow`, which is trained on straight
lines from ``x1`` to ``Φ_1(x1)`` and so predicts the flow map only on its own coupling's
marginals, not on the interpolant's, where re-noising puts the particles. The network is the
same MLP (:func:`psijax.models.reflow.mlp_velocity`), wider and deeper.
:func:`psijax.flows.ode.distilled_velocity` is the oracle this model approximates.
"""

import os
from typing import Callable

import jax
import jax.numpy as jnp
from blackjax.types import Array, PRNGKey

from psijax.models.reflow import ReflowConfig, fit_mlp, load_params, mlp_velocity, velocity_fn

__all__ = [
    "DISTILLED_CONFIG",
    "SHIPPED",
    "make_targets",
    "train_distilled",
    "weights_path",
    "load_distilled",
]

DISTILLED_CONFIG = ReflowConfig(
    width=256, depth=4, num_pairs=65_536, num_train_steps=8_000, batch_size=512
)
"""Architecture and training of the shipped models (the reflow MLP, wider and deeper: the flow
map at every ``t`` is a harder function than at ``t = 1`` alone)."""
#: The shipped distilled models: data mixture name (a function of :mod:`psijax.models.presets`)
#: -> sha256 of ``weights/distilled_<name>.safetensors`` (checked on every load).
SHIPPED = {
    "six_modes": "fe19204da225d81e02d254157eca257063669ac047f193395ad7bb286ec031be",
    "unequal_six_modes": "c8150c89897cdb1c0ba8db54883a8e8966aec70b16c83f3382effb89e7552d1c",
}
T_ONE_FRACTION = 0.25
"""Share of the training points at ``t = 1`` (Ψ-Sampler's one-step prediction)."""
T_MIN = 1e-3
"""Smallest training time: the target divides by ``t``."""
_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def make_targets(
    rng_key: PRNGKey, sample_fn: Callable, flow_map: Callable, num_pairs: int, dim: int
) -> tuple[Array, Array, Array]:
    """``(x_t, t, Φ_t(x_t))`` for ``num_pairs`` points of the interpolant.

    ``sample_fn(key, n) -> (n, dim)`` draws the data; ``flow_map(x, t) -> x0`` maps one point
    to the end of the flow (the exact ODE). ``t ~ U(T_MIN, 1)``, with :data:`T_ONE_FRACTION`
    of the points at ``t = 1``.
    """
    k_data, k_noise, k_time, k_one = jax.random.split(rng_key, 4)
    x0 = sample_fn(k_data, num_pairs)
    z = jax.random.normal(k_noise, (num_pairs, dim), jnp.float32)
    t = jax.random.uniform(k_time, (num_pairs,), jnp.float32, T_MIN, 1.0)
    t = jnp.where(jax.random.uniform(k_one, (num_pairs,)) < T_ONE_FRACTION, 1.0, t)
    xt = (1.0 - t)[:, None] * x0 + t[:, None] * z
    return xt, t, jax.jit(jax.vmap(flow_map))(xt, t)


def train_distilled(
    rng_key: PRNGKey,
    sample_fn: Callable,
    flow_map: Callable,
    config: ReflowConfig = DISTILLED_CONFIG,
) -> tuple[dict, Array]:
    """Train the distilled MLP (module docstring); returns its parameters and the loss trace.

    One ``jit``-compiled ``lax.scan`` of optax Adam steps with a cosine learning-rate decay over
    the targets of :func:`make_targets`; deterministic given ``rng_key``.
    """
    key_targets, key_init, key_train = jax.random.split(rng_key, 3)
    xt, t, x0 = make_targets(key_targets, sample_fn, flow_map, config.num_pairs, config.dim)
    target = (xt - x0) / t[:, None]

    def loss_fn(params, key):
        idx = jax.random.randint(key, (config.batch_size,), 0, config.num_pairs)
        u = jax.vmap(mlp_velocity, in_axes=(None, 0, 0, None))(
            params, xt[idx], t[idx], config.num_frequencies
        )
        return jnp.mean(jnp.sum((u - target[idx]) ** 2, axis=-1))

    return fit_mlp(key_init, key_train, loss_fn, config)


def weights_path(name: str) -> str:
    """Path of the shipped weights ``weights/distilled_<name>.safetensors`` (``name`` in
    :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"`name` must be one of {tuple(SHIPPED)}, got {name!r}.")
    return os.path.join(_WEIGHTS, f"distilled_{name}.safetensors")


def load_distilled(name: str) -> tuple[Callable, dict, ReflowConfig]:
    """A shipped distilled model of the 2D mixture ``presets.<name>()``, ``name`` in
    :data:`SHIPPED`: ``(velocity_fn, params, config)``, the file's sha256 checked.

    Each was trained by ``benchmarks/train_distilled.py --data <name> --seed 0`` (the run is in
    ``benchmarks/results/distilled_<name>.md``). Use it with
    ``RewardProblem(..., transition=Renoising())``.

    Raises
    ------
    ValueError
        For an unknown ``name`` or a file that fails its integrity check.
    """
    params, config = load_params(weights_path(name), SHIPPED[name])
    return velocity_fn(params, config), params, config
