"""Image rewards in JAX: pure, differentiable functions of decoded image batches.

- :mod:`.aesthetic`: LAION's aesthetic predictor on CLIP ViT-L/14 embeddings (the paper's
  aesthetic-preference reward).
- :mod:`.clip_score`: ``100 · cos`` between CLIP's image and (precomputed) text embeddings.
- :mod:`.torch_bridge`: :func:`from_torch`, any PyTorch reward as a JAX function (``jit``,
  ``vmap``, ``grad``), torch being an optional extra.

Models they read (the CLIP vision tower, the FLUX autoencoder) live in :mod:`psijax.models`;
rewards know nothing of sampling.
"""

from psijax.rewards.aesthetic import (
    AestheticHead,
    aesthetic_reward,
    aesthetic_score,
    load_aesthetic_head,
)
from psijax.rewards.clip_score import clip_score, clip_score_reward
from psijax.rewards.torch_bridge import from_torch

__all__ = [
    "AestheticHead",
    "aesthetic_reward",
    "aesthetic_score",
    "clip_score",
    "clip_score_reward",
    "from_torch",
    "load_aesthetic_head",
]
