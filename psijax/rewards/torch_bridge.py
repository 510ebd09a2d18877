"""Use a PyTorch reward (a detector, ImageReward, anything a user already has) from JAX.

:func:`from_torch` wraps a torch callable ``fn(x) → scores`` — a batch ``(B, *event_shape)`` in,
``(B,)`` out, each score depending on its own sample only (a model in ``eval()`` mode) — into a
JAX function that works under ``jit``, ``vmap`` and ``grad``:

- the values come from ``jax.pure_callback``, which hands the callback host arrays; any leading
  axes (a ``vmap``, several particles) are flattened into torch's batch axis, so one torch call
  serves the whole batch;
- the gradient is a ``jax.custom_vjp``. Its forward pass computes the scores and, in the same
  torch call, the gradient of their sum (because each score depends only on its own sample, that
  is every score's gradient at once); the backward pass multiplies it by the cotangent. One torch
  forward and one backward per gradient, as in torch itself.

Data movement. Inside ``jit`` the callback receives numpy arrays in host memory; torch reads them
without a copy (``torch.from_numpy``) when it runs on the CPU, and copies them to ``device``
otherwise. Called eagerly on concrete JAX arrays that live on the torch device (both on the same
GPU, or both on the CPU), the bridge passes them through DLPack without a copy. Under ``jit`` on
a GPU, JAX's callbacks always go through host memory, which costs two transfers per call.

torch is an optional dependency (the ``torch`` extra); this module imports it only when a
bridge is built. NaN or inf scores pass through unchanged, so a sampler gives that particle zero
weight (its NaN rule) rather than a plausible number.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = ["from_torch"]


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "psijax.rewards.from_torch needs PyTorch: pip install 'psijax[torch]'."
        ) from e
    return torch


def from_torch(
    fn: Callable,
    event_shape: tuple[int, ...],
    *,
    device: Any = None,
    dtype: Any = None,
) -> Callable[[Array], Array]:
    """A JAX reward ``reward(x) → scores`` that calls the torch callable ``fn``.

    Parameters
    ----------
    fn
        ``fn(x: torch.Tensor (B, *event_shape)) → torch.Tensor (B,)`` (or ``(B, 1)``),
        differentiable in ``x`` by torch autograd, each score a function of its own sample
        (put the model in ``eval()`` mode and wrap nothing that mixes the batch).
    event_shape
        The shape of one sample, e.g. ``(3, 512, 512)``; ``reward`` takes ``(..., *event_shape)``
        and returns ``(...)`` float32 scores.
    device
        The torch device ``fn`` runs on (default: the CPU).
    dtype
        The torch dtype of ``fn``'s input (default ``torch.float32``); the scores and the
        gradient return as float32.

    Returns
    -------
    A function of one array, usable under ``jit``, ``vmap`` and ``grad`` (reverse mode; forward
    mode is not defined for a callback).
    """
    torch = _torch()
    if not callable(fn):
        raise TypeError(f"`fn` must be a callable torch function, got {type(fn).__name__}.")
    try:
        event_shape = tuple(int(d) for d in event_shape)
    except TypeError as e:
        raise TypeError(f"`event_shape` must be a tuple of ints, got {event_shape!r}.") from e
    if any(d < 1 for d in event_shape):
        raise ValueError(f"`event_shape` must hold positive sizes, got {event_shape}.")
    device = torch.device("cpu" if device is None else device)
    torch_dtype = torch.float32 if dtype is None else dtype
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch dtype, got {dtype!r}.")
    n = len(event_shape)

    def to_torch(x) -> "torch.Tensor":
        if isinstance(x, jax.Array) and _same_device(x, device):
            t = torch.from_dlpack(x)  # zero-copy: the same memory, read by torch
        else:
            t = torch.from_numpy(np.asarray(x))
        return t.to(device=device, dtype=torch_dtype)

    def scores(t):
        out = fn(t)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"`fn` must return a torch.Tensor, got {type(out).__name__}.")
        if out.shape not in ((t.shape[0],), (t.shape[0], 1)):
            raise ValueError(
                f"`fn` must return one score per sample, shape ({t.shape[0]},), got "
                f"{tuple(out.shape)}."
            )
        return out.reshape(t.shape[0])

    def host_value(x):
        lead = x.shape[: x.ndim - n]
        t = to_torch(x).reshape(-1, *event_shape)
        with torch.no_grad():
            y = scores(t)
        return y.detach().to("cpu", torch.float32).numpy().reshape(lead)

    def host_value_and_grad(x):
        lead = x.shape[: x.ndim - n]
        t = to_torch(x).reshape(-1, *event_shape).detach().requires_grad_(True)
        with torch.enable_grad():
            y = scores(t)
            (g,) = torch.autograd.grad(y.sum(), t)
        y = y.detach().to("cpu", torch.float32).numpy().reshape(lead)
        g = g.detach().to("cpu", torch.float32).numpy().reshape(x.shape)
        return y, g

    def check(x):
        x = jnp.asarray(x)
        if x.shape[x.ndim - n :] != event_shape or x.ndim < n:
            raise ValueError(f"The reward takes (..., {event_shape}) arrays, got {x.shape}.")
        return x.astype(jnp.float32), x.shape[: x.ndim - n]

    def value(x):
        x, lead = check(x)
        if not isinstance(x, jax.core.Tracer):
            return jnp.asarray(host_value(x))
        spec = jax.ShapeDtypeStruct(lead, jnp.float32)
        return jax.pure_callback(host_value, spec, x, vmap_method="expand_dims")

    @jax.custom_vjp
    def reward(x):
        return value(x)

    def forward(x):
        x, lead = check(x)
        if not isinstance(x, jax.core.Tracer):
            y, g = host_value_and_grad(x)
            return jnp.asarray(y), jnp.asarray(g)
        specs = (
            jax.ShapeDtypeStruct(lead, jnp.float32),
            jax.ShapeDtypeStruct(x.shape, jnp.float32),
        )
        y, g = jax.pure_callback(host_value_and_grad, specs, x, vmap_method="expand_dims")
        return y, g

    def backward(g, cotangent):
        return (cotangent.reshape(cotangent.shape + (1,) * n) * g,)

    reward.defvjp(forward, backward)
    return reward


def _same_device(x: Array, device) -> bool:
    """Whether the concrete ``x`` lives on the torch ``device`` (so DLPack shares its memory)."""
    try:
        (d,) = x.devices()
    except ValueError:  # sharded over several devices
        return False
    if device.type == "cpu":
        return d.platform == "cpu"
    return device.type == "cuda" and d.platform == "gpu" and d.id == (device.index or 0)
