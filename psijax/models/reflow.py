"""A reflowed (straightened) toy velocity field: the toy analog of timestep-distilled FLUX-schnell.

For an exact flow model the one-step prediction ``x̂0(x1, 1) = E[x0]`` is a constant, so the
reward-aware initial posterior of Ψ-Sampler collapses to the prior (docs/algorithms.md §3).
FLUX-schnell works because it is distilled: its one-step prediction is a sharp, ``x1``-dependent
image. The toy
analog is *reflow* (Liu et al. 2023, "Flow straight and fast"): draw ``x1 ~ N(0, I)``, push it
through the exact flow map ``x0 = Φ_1(x1)`` of a data model, and train a velocity field by
rectified flow on the **coupled** pairs,

    min_θ  E_{t ~ U(0,1), (x0, x1)} ‖ v_θ((1 − t)·x0 + t·x1, t) − (x1 − x0) ‖²,

whose paths are (nearly) straight lines from ``x1`` to ``Φ_1(x1)``. Then the one-step Tweedie
prediction ``x̂0 = x1 − v_θ(x1, 1)`` is already a sample of the data, for 1 NFE.

The network is a small MLP on ``[x, time features]`` written as a pure function of a parameter
pytree (optax-style), so it composes with ``jit``, ``vmap`` and ``grad`` like any velocity field.
"""

import hashlib
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "ReflowConfig",
    "init_mlp",
    "mlp_velocity",
    "velocity_fn",
    "make_pairs",
    "train_reflow",
    "fit_mlp",
    "straightness",
    "save_params",
    "load_params",
    "load_reflow",
    "load_six_modes",
    "weights_path",
    "SHIPPED",
    "SIX_MODES_SHA256",
]

#: sha256 of the shipped ``weights/reflow_six_modes.safetensors`` (checked on every load).
SIX_MODES_SHA256 = "ee8f0596cdd9a5bdacd4dbce3fe55287881f50676603b60b378b9ca60020cfe1"
#: The shipped reflow models: data mixture name (a function of :mod:`psijax.models.presets`)
#: -> sha256 of ``weights/reflow_<name>.safetensors`` (checked on every load).
SHIPPED = {
    "six_modes": SIX_MODES_SHA256,
    "unequal_six_modes": "a67ec51a5412d1d6ee15a572fb59aa632878fffdf24d90a069ae96bdd7e9c3fe",
}
_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


class ReflowConfig(NamedTuple):
    """Architecture and training settings of the reflowed MLP velocity field."""

    dim: int = 2
    width: int = 128
    depth: int = 3
    num_frequencies: int = 8
    num_pairs: int = 16_384
    num_train_steps: int = 3_000
    batch_size: int = 512
    learning_rate: float = 2e-3


def _time_features(t: ArrayLike, num_frequencies: int) -> Array:
    """``[t, sin(πkt), cos(πkt)]_{k=1..K}``: half periods, so ``t = 0`` and ``t = 1`` (where the
    one-step prediction is read) get clearly different features."""
    t = jnp.asarray(t, jnp.float32)
    k = jnp.arange(1, num_frequencies + 1, dtype=jnp.float32)
    angles = jnp.pi * k * t
    return jnp.concatenate([t[None], jnp.sin(angles), jnp.cos(angles)])


def init_mlp(rng_key: PRNGKey, config: ReflowConfig) -> dict:
    """Parameters ``{"w0", "b0", ..., "wL", "bL"}`` (LeCun-normal weights, zero biases; the
    last layer starts at zero so the initial velocity is 0)."""
    sizes = [config.dim + 1 + 2 * config.num_frequencies]
    sizes += [config.width] * config.depth + [config.dim]
    keys = jax.random.split(rng_key, len(sizes) - 1)
    params = {}
    for i, (key, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        scale = 0.0 if i == len(sizes) - 2 else 1.0 / np.sqrt(fan_in)
        params[f"w{i}"] = scale * jax.random.normal(key, (fan_in, fan_out), jnp.float32)
        params[f"b{i}"] = jnp.zeros((fan_out,), jnp.float32)
    return params


def mlp_velocity(params: dict, x: ArrayLike, t: ArrayLike, num_frequencies: int) -> Array:
    """``v_θ(x, t)`` for a single sample ``x`` of shape ``(d,)``."""
    depth = len(params) // 2
    h = jnp.concatenate([jnp.asarray(x, jnp.float32), _time_features(t, num_frequencies)])
    for i in range(depth):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < depth - 1:
            h = jax.nn.silu(h)
    return h


def velocity_fn(params: dict, config: ReflowConfig) -> Callable:
    """The pure single-sample ``velocity_fn(x, t)`` of a trained reflow model."""
    return lambda x, t: mlp_velocity(params, x, t, config.num_frequencies)


def make_pairs(rng_key: PRNGKey, flow_map: Callable, num_pairs: int, dim: int):
    """``(x1, Φ_1(x1))`` with ``x1 ~ N(0, I_d)``: the coupling reflow trains on.

    ``flow_map(x1) -> x0`` maps one noise sample to data (e.g. the exact ODE map of a mixture).
    """
    x1 = jax.random.normal(rng_key, (num_pairs, dim), jnp.float32)
    return x1, jax.jit(jax.vmap(flow_map))(x1)


def train_reflow(
    rng_key: PRNGKey, flow_map: Callable, config: ReflowConfig | None = None
) -> tuple[dict, Array]:
    """Train the reflowed velocity field on ``(x1, Φ_1(x1))`` pairs.

    Returns the parameters and the loss trace. One ``jit``-compiled ``lax.scan`` over optax Adam
    steps with a cosine learning-rate decay; deterministic given ``rng_key``.
    """
    config = ReflowConfig() if config is None else config
    key_pairs, key_init, key_train = jax.random.split(rng_key, 3)
    x1, x0 = make_pairs(key_pairs, flow_map, config.num_pairs, config.dim)

    def loss_fn(params, key):
        key_idx, key_t = jax.random.split(key)
        idx = jax.random.randint(key_idx, (config.batch_size,), 0, config.num_pairs)
        t = jax.random.uniform(key_t, (config.batch_size,))
        a, b = x0[idx], x1[idx]
        xt = (1.0 - t)[:, None] * a + t[:, None] * b
        v = jax.vmap(mlp_velocity, in_axes=(None, 0, 0, None))(
            params, xt, t, config.num_frequencies
        )
        return jnp.mean(jnp.sum((v - (b - a)) ** 2, axis=-1))

    return fit_mlp(key_init, key_train, loss_fn, config)


def fit_mlp(
    key_init: PRNGKey, key_train: PRNGKey, loss_fn: Callable, config: ReflowConfig
) -> tuple[dict, Array]:
    """Minimise ``loss_fn(params, key)`` over the MLP of ``config`` from :func:`init_mlp`:
    ``config.num_train_steps`` optax Adam steps with a cosine learning-rate decay, one
    ``jit``-compiled ``lax.scan`` (a fresh key per step). Returns the parameters and the loss
    trace."""
    optimizer = optax.adam(
        optax.cosine_decay_schedule(config.learning_rate, config.num_train_steps)
    )

    @jax.jit
    def train(params, key):
        def body(carry, key):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        keys = jax.random.split(key, config.num_train_steps)
        (params, _), losses = jax.lax.scan(body, (params, optimizer.init(params)), keys)
        return params, losses

    return train(init_mlp(key_init, config), key_train)


class Straightness(NamedTuple):
    """How straight a velocity field's paths are from ``t = 1``.

    one_step_vs_ode
        Mean ``‖(x1 − v(x1, 1)) − Φ_1(x1)‖``: one Euler step against the model's own ODE map.
    one_step_vs_target
        Mean ``‖(x1 − v(x1, 1)) − Φ*_1(x1)‖`` against a reference map (the exact data model).
    ode_vs_target
        Mean ``‖Φ_1(x1) − Φ*_1(x1)‖``.
    """

    one_step_vs_ode: float
    one_step_vs_target: float
    ode_vs_target: float


def straightness(
    velocity: Callable, model_flow_map: Callable, target_flow_map: Callable, x1: Array
) -> Straightness:
    """Distances between one-step, model-ODE and reference-ODE predictions over noise ``x1``."""
    one_step = x1 - jax.vmap(velocity, in_axes=(0, None))(x1, 1.0)
    ode = jax.vmap(model_flow_map)(x1)
    target = jax.vmap(target_flow_map)(x1)

    def dist(a, b):
        return float(jnp.mean(jnp.linalg.norm(a - b, axis=-1)))

    return Straightness(dist(one_step, ode), dist(one_step, target), dist(ode, target))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def save_params(params: dict, config: ReflowConfig, path: str) -> str:
    """Write the parameters and config to a safetensors file; returns its sha256."""
    from safetensors.numpy import save_file

    metadata = {k: str(v) for k, v in config._asdict().items()}
    save_file({k: np.asarray(v) for k, v in params.items()}, path, metadata=metadata)
    return _sha256(path)


def load_params(path: str, sha256: str | None = None) -> tuple[dict, ReflowConfig]:
    """Read a reflow model written by :func:`save_params`, checking its sha256 when given.

    Raises ``ValueError`` on a checksum mismatch or on a file whose tensors do not form the MLP
    its config describes (missing, unexpected or mis-shaped tensors are named).
    """
    from safetensors import safe_open

    if sha256 is not None and _sha256(path) != sha256:
        raise ValueError(f"integrity check failed for {os.path.basename(path)}: sha256 mismatch.")
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    fields = ReflowConfig._fields
    types = {k: type(v) for k, v in ReflowConfig()._asdict().items()}
    config = ReflowConfig(**{k: types[k](metadata[k]) for k in fields if k in metadata})
    expected = jax.eval_shape(lambda: init_mlp(jax.random.key(0), config))
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {unexpected}.")
    for name, spec in expected.items():
        if tensors[name].shape != spec.shape:
            raise ValueError(
                f"{path}: tensor {name!r} has shape {tensors[name].shape}, expected {spec.shape}."
            )
    return {k: jnp.asarray(v, jnp.float32) for k, v in tensors.items()}, config


def weights_path(name: str) -> str:
    """Path of the shipped weights ``weights/reflow_<name>.safetensors`` (``name`` in
    :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"`name` must be one of {tuple(SHIPPED)}, got {name!r}.")
    return os.path.join(_WEIGHTS, f"reflow_{name}.safetensors")


def load_reflow(name: str) -> tuple[Callable, dict, ReflowConfig]:
    """A shipped reflow model of the 2D mixture ``presets.<name>()``, ``name`` in :data:`SHIPPED`.

    ``"six_modes"`` (the equal-weight ring) and ``"unequal_six_modes"`` (weights 0.30 … 0.05,
    the data of the ``unequal_rare_modes`` preset). Each was trained by
    ``benchmarks/train_reflow.py --data <name> --seed 0`` (3,000 Adam steps on 16,384 exact
    flow-map pairs; the runs are in ``benchmarks/results/reflow_six_modes.md`` and
    ``benchmarks/results/reflow_unequal_six_modes.md``). Returns ``(velocity_fn, params,
    config)``; the file's sha256 is checked against :data:`SHIPPED`.

    Raises
    ------
    ValueError
        For an unknown ``name`` or a file that fails its integrity check.
    """
    params, config = load_params(weights_path(name), SHIPPED[name])
    return velocity_fn(params, config), params, config


def load_six_modes() -> tuple[Callable, dict, ReflowConfig]:
    """The shipped reflow model of the 2D six-mode preset: ``load_reflow("six_modes")``."""
    return load_reflow("six_modes")
