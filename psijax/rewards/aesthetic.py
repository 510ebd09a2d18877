"""The LAION aesthetic predictor: a linear head on CLIP ViT-L/14 image embeddings.

The paper's aesthetic-preference reward scores an image on LAION's 1–10 scale with the
"improved aesthetic predictor" (LAION, v2, ``sac+logos+ava1-l14-linearMSE``): the image's CLIP
ViT-L/14 embedding, scaled to unit length, through five Linear layers **without activations**
(768 → 1024 → 128 → 64 → 16 → 1; the dropout layers between them are inactive at inference).
Its checkpoint keys are ``layers.{0,2,4,6,7}.{weight,bias}``, the indices of the torch
``nn.Sequential`` that holds the dropouts.

:func:`aesthetic_score` is the whole reward on decoded images in ``[−1, 1]``: CLIP's
preprocessing (:func:`psijax.models.clip.preprocess`), the vision tower, the normalisation, the
head. :func:`aesthetic_reward` closes it over the two models as a pure function whose leaves are
the parameters (so it passes through ``jit`` as an argument, not as baked-in constants).
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from psijax._checks import check_int
from psijax._tree import static_partial
from psijax.models import _params
from psijax.models.clip import CLIPVision, preprocess
from psijax.models.flux import checkpoint
from psijax.models.flux.layers import Linear

__all__ = [
    "AestheticHead",
    "HEAD_WIDTHS",
    "load_aesthetic_head",
    "aesthetic_head_tensors",
    "aesthetic_score",
    "aesthetic_reward",
]

#: The widths of LAION's head after its input (768 for ViT-L/14).
HEAD_WIDTHS = (1024, 128, 64, 16, 1)
# Indices of the Linear layers in the torch nn.Sequential (dropouts at 1, 3 and 5).
_LINEAR_INDICES = (0, 2, 4, 6, 7)


class AestheticHead(nnx.Module):
    """LAION's aesthetic MLP (no activations) on a unit-length CLIP embedding.

    Parameters
    ----------
    input_size
        The CLIP embedding width (768 for ViT-L/14).
    rngs
        Random initialisation (the loader builds the module abstractly instead).
    """

    def __init__(self, input_size: int = 768, *, rngs: nnx.Rngs):
        self.input_size = check_int(input_size, "input_size")
        widths = (self.input_size, *HEAD_WIDTHS)
        layers: list = [None] * (_LINEAR_INDICES[-1] + 1)
        for i, index in enumerate(_LINEAR_INDICES):
            layers[index] = Linear(widths[i], widths[i + 1], rngs=rngs)
        self.layers = nnx.List(layers)

    def __call__(self, embedding: Array) -> Array:
        """Scores ``(...)`` of CLIP embeddings ``(..., input_size)`` (scaled to unit length)."""
        x = jnp.asarray(embedding, jnp.float32)
        if x.shape[-1:] != (self.input_size,):
            raise ValueError(
                f"`embedding` must have shape (..., {self.input_size}), got {x.shape}."
            )
        x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
        for layer in self.layers:
            if layer is not None:
                x = layer(x)
        return x[..., 0]


def _key(path) -> str:
    """The torch key of a parameter path: ``("layers", 0, "kernel")`` → ``layers.0.weight``."""
    name = ".".join(str(p) for p in path[:-1])
    return f"{name}.{'weight' if path[-1] == 'kernel' else 'bias'}"


def aesthetic_head_tensors(head: AestheticHead) -> dict[str, np.ndarray]:
    """The head's parameters under the torch checkpoint's keys (``layers.0.weight`` …)."""
    flat = nnx.to_flat_state(nnx.state(head, nnx.Param))
    return {
        _key(path): np.ascontiguousarray(
            np.asarray(_params.value(var)).T
            if path[-1] == "kernel"
            else np.asarray(_params.value(var))
        )
        for path, var in flat
    }


def _read(path: str) -> dict[str, Any]:
    if path.endswith((".pth", ".pt", ".bin")):
        try:
            import torch  # the optional `torch` extra; only for LAION's original .pth file
        except ImportError as e:
            raise ImportError(
                f"Reading {path!r} (a torch pickle) needs torch: pip install 'psijax[torch]', or "
                "convert it once to .safetensors."
            ) from e
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.detach().float().numpy() for k, v in state.items()}
    return checkpoint.read_tensors(path, host=True)


def load_aesthetic_head(path: str | os.PathLike, *, check_finite: bool = True) -> AestheticHead:
    """Load LAION's aesthetic head from ``.safetensors`` (or its original ``.pth``, with torch).

    The input width is read off ``layers.0.weight``; every key must be present with its shape
    (a ``ValueError`` names a missing, unexpected, mis-shaped or non-finite tensor).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such aesthetic-head file: {path!r}.")
    tensors = _read(path)
    if "layers.0.weight" not in tensors:
        raise ValueError(
            f"{path!r} is not LAION's aesthetic head: it has no `layers.0.weight` (keys: "
            f"{sorted(tensors)[:5]})."
        )
    input_size = int(np.shape(tensors["layers.0.weight"])[1])
    graphdef, state = nnx.split(nnx.eval_shape(lambda: AestheticHead(input_size, rngs=nnx.Rngs(0))))
    flat = tuple(nnx.to_flat_state(state))
    expected = {
        _key(p): tuple(
            _params.value(var).shape[::-1] if p[-1] == "kernel" else _params.value(var).shape
        )
        for p, var in flat
    }
    _params.check_keys(tensors, expected, "LAION's aesthetic head")
    if check_finite:
        _params.check_finite(tensors, expected)
    leaves = []
    for p, var in flat:
        value = np.asarray(tensors[_key(p)], np.float32)
        leaves.append((p, var.replace(value=jnp.asarray(value.T if p[-1] == "kernel" else value))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def aesthetic_score(
    clip: CLIPVision,
    head: AestheticHead,
    images: Array,
    *,
    dtype: Any = jnp.float32,
    remat: bool = False,
) -> Array:
    """LAION aesthetic scores ``(...)`` of images ``(..., 3, H, W)`` in ``[−1, 1]`` (float32)."""
    if head.input_size != clip.config.projection_dim:
        raise ValueError(
            f"The head reads {head.input_size}-wide embeddings, the CLIP tower makes "
            f"{clip.config.projection_dim}-wide ones."
        )
    pixels = preprocess(images, clip.config.image_size)
    return head(clip(pixels, dtype=dtype, remat=remat))


def _score(graphdefs, options, states, images):
    clip = nnx.merge(graphdefs[0], states[0])
    head = nnx.merge(graphdefs[1], states[1])
    return aesthetic_score(clip, head, images, **dict(options))


def aesthetic_reward(
    clip: CLIPVision, head: AestheticHead, *, dtype: Any = jnp.float32, remat: bool = False
):
    """``reward(images) → scores``: :func:`aesthetic_score` as a ``jax.tree_util.Partial``.

    Its leaves are the models' parameters, so the reward passes through ``jit`` and ``vmap`` as
    an argument. ``images`` may be one image ``(3, H, W)`` or a batch.
    """
    if not isinstance(clip, CLIPVision):
        raise TypeError(f"`clip` must be a CLIPVision, got {type(clip).__name__}.")
    if not isinstance(head, AestheticHead):
        raise TypeError(f"`head` must be an AestheticHead, got {type(head).__name__}.")
    if head.input_size != clip.config.projection_dim:
        raise ValueError(
            f"The head reads {head.input_size}-wide embeddings, the CLIP tower makes "
            f"{clip.config.projection_dim}-wide ones."
        )
    (g1, s1), (g2, s2) = nnx.split(clip), nnx.split(head)
    options = (("dtype", jnp.dtype(dtype)), ("remat", bool(remat)))
    fn = static_partial(_score, (g1, g2), options)
    return jax.tree_util.Partial(fn, (s1, s2))
