"""A Flax NNX port of the FLUX.1 rectified-flow transformer (BFL), equal to the reference.

- :mod:`.config`: :class:`FluxConfig` and the presets ``schnell``, ``dev``, ``tiny``, ``tiny64``.
- :mod:`.layers`: the layers, named after BFL's checkpoint keys.
- :mod:`.model`: :class:`Flux`, with a reference and a fast path (:class:`FluxOptions`).
- :mod:`.packing`: 2×2 packing of VAE latents, ids, VAE constants, the time grid.
- :mod:`.convert` / :mod:`.checkpoint` / :mod:`.weights`: BFL ⇄ diffusers names, safetensors
  files without torch, loading into and saving from a model.
- :mod:`.velocity`: :func:`to_velocity_fn`, the model as a velocity field for the samplers.
- :mod:`.autoencoder` / :mod:`.autoencoder_weights`: the FLUX autoencoder
  (:class:`AutoencoderKL`: latents to images and back) and its BFL / diffusers checkpoints
  (:func:`load_autoencoder`, :func:`save_autoencoder`).
"""

from psijax.models.flux import (
    autoencoder,
    autoencoder_weights,
    checkpoint,
    convert,
    layers,
    packing,
    weights,
)
from psijax.models.flux.autoencoder import (
    AUTOENCODER_PRESETS,
    AutoencoderConfig,
    AutoencoderKL,
    autoencoder_preset,
)
from psijax.models.flux.autoencoder_weights import load_autoencoder, save_autoencoder
from psijax.models.flux.config import PRESETS, FluxConfig, preset
from psijax.models.flux.model import Flux, FluxOptions, Prepared, scale_time
from psijax.models.flux.packing import (
    VAE_SCALE,
    VAE_SHIFT,
    denormalize_latent,
    image_ids,
    latent_shape,
    normalize_latent,
    num_tokens,
    pack,
    text_ids,
    time_grid,
    unpack,
)
from psijax.models.flux.velocity import FluxConditioning, conditioning, to_velocity_fn
from psijax.models.flux.weights import (
    bfl_keys,
    from_tensors,
    infer_config,
    load_weights,
    save_weights,
    to_bfl,
)

__all__ = [
    "AUTOENCODER_PRESETS",
    "AutoencoderConfig",
    "AutoencoderKL",
    "autoencoder",
    "autoencoder_preset",
    "autoencoder_weights",
    "load_autoencoder",
    "save_autoencoder",
    "PRESETS",
    "VAE_SCALE",
    "VAE_SHIFT",
    "Flux",
    "FluxConditioning",
    "FluxConfig",
    "FluxOptions",
    "Prepared",
    "bfl_keys",
    "checkpoint",
    "conditioning",
    "convert",
    "denormalize_latent",
    "from_tensors",
    "image_ids",
    "infer_config",
    "latent_shape",
    "layers",
    "load_weights",
    "normalize_latent",
    "num_tokens",
    "pack",
    "packing",
    "preset",
    "save_weights",
    "scale_time",
    "text_ids",
    "time_grid",
    "to_bfl",
    "to_velocity_fn",
    "unpack",
    "weights",
]
