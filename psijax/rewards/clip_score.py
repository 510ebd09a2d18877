"""The CLIP score of an image for a prompt: ``100 · cos(image embedding, text embedding)``.

The text embedding is computed once per prompt by the CLIP model's text tower and projection
(``psijax flux-prompts --clip-score-model``, stored as ``clip_text_embeds`` in the
prompt-embeddings file of :mod:`psijax.models.flux.prompts`); the image side is
:class:`psijax.models.clip.CLIPVision` of the **same** CLIP model after its preprocessing. The
usual metric clips negative scores to 0; the reward does not, so its gradient never vanishes.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from psijax._tree import static_partial
from psijax.models.clip import CLIPVision, preprocess

__all__ = ["clip_score", "clip_score_reward"]


def clip_score(
    tower: CLIPVision,
    text_embed: Array,
    images: Array,
    *,
    dtype: Any = jnp.float32,
    remat: bool = False,
) -> Array:
    """``100 · cos`` ``(...)`` between images ``(..., 3, H, W)`` in ``[−1, 1]`` and one text
    embedding ``(projection_dim,)``."""
    text = jnp.asarray(text_embed, jnp.float32)
    if text.shape != (tower.config.projection_dim,):
        raise ValueError(
            f"`text_embed` must have shape ({tower.config.projection_dim},) (the CLIP model's "
            f"projection), got {text.shape}."
        )
    image = tower(preprocess(images, tower.config.image_size), dtype=dtype, remat=remat)
    image = image / jnp.linalg.norm(image, axis=-1, keepdims=True)
    return 100.0 * image @ (text / jnp.linalg.norm(text))


def _score(graphdef, options, state, text_embed, images):
    return clip_score(nnx.merge(graphdef, state), text_embed, images, **dict(options))


def clip_score_reward(
    tower: CLIPVision, text_embed: Array, *, dtype: Any = jnp.float32, remat: bool = False
):
    """``reward(images) → scores``: :func:`clip_score` for one prompt as a
    ``jax.tree_util.Partial`` (the parameters and the text embedding are its leaves)."""
    if not isinstance(tower, CLIPVision):
        raise TypeError(f"`tower` must be a CLIPVision, got {type(tower).__name__}.")
    text = jnp.asarray(text_embed, jnp.float32)
    if text.shape != (tower.config.projection_dim,):
        raise ValueError(
            f"`text_embed` must have shape ({tower.config.projection_dim},), got {text.shape}."
        )
    graphdef, state = nnx.split(tower)
    options = (("dtype", jnp.dtype(dtype)), ("remat", bool(remat)))
    return jax.tree_util.Partial(static_partial(_score, graphdef, options), state, text)
