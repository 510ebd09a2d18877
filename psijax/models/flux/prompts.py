"""Prompt conditioning for FLUX: precomputed text states in one safetensors file.

The FLUX transformer is conditioned on two text encoders' outputs: T5-XXL's hidden states
``(Lt, 4096)`` (``Lt`` = 256 for schnell, 512 for dev) and CLIP-L's pooled vector ``(768,)``.
Running those encoders (about 5 B parameters) is a job for ``transformers`` once per prompt, not
for the sampler. So psijax splits it in two:

- :func:`encode_prompts` (needs the optional ``transformers`` extra; ``psijax flux-prompts`` on the
  command line) runs the encoders exactly as diffusers' ``FluxPipeline.encode_prompt`` does —
  CLIP's tokens padded to 77 and its ``pooler_output``, T5's padded to ``max_length`` and its
  last hidden state — and writes everything to one file with :func:`save_prompt_embeddings`;
- :func:`load_prompt_embeddings` reads that file back without torch, and
  :meth:`PromptEmbeddings.conditioning` makes the :class:`~.velocity.FluxConditioning` of one
  prompt for :func:`~.velocity.to_velocity_fn`.

The file holds ``t5`` ``(P, Lt, 4096)``, ``clip_pooled`` ``(P, 768)`` and, when a CLIP model with
a text projection was given, ``clip_text_embeds`` ``(P, D)`` for a CLIP-score reward; its
metadata holds the prompts (JSON) and the encoders' names.
"""

import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array
from safetensors import SafetensorError, safe_open

from psijax.models.flux import checkpoint
from psijax.models.flux.packing import image_ids
from psijax.models.flux.velocity import FluxConditioning, conditioning

__all__ = [
    "PromptEmbeddings",
    "save_prompt_embeddings",
    "load_prompt_embeddings",
    "encode_prompts",
    "CLIP_MAX_LENGTH",
]

#: CLIP-L's token count in FLUX's pipelines.
CLIP_MAX_LENGTH = 77
_PROMPTS_KEY = "psijax.prompts"
_ENCODERS_KEY = "psijax.encoders"


class PromptEmbeddings(NamedTuple):
    """The precomputed text conditioning of ``P`` prompts.

    Attributes
    ----------
    prompts
        The prompts, in file order.
    t5
        T5 hidden states ``(P, Lt, 4096)`` (float32).
    clip_pooled
        CLIP-L pooled vectors ``(P, 768)`` (float32).
    clip_text_embeds
        Projected CLIP text embeddings ``(P, D)`` for a CLIP-score reward, or ``None``.
    encoders
        The encoders' names or paths, as recorded when the file was written.
    """

    prompts: tuple[str, ...]
    t5: Array
    clip_pooled: Array
    clip_text_embeds: Array | None = None
    encoders: dict | None = None

    def index(self, prompt: str | int) -> int:
        """The row of ``prompt`` (its text or its index)."""
        if isinstance(prompt, (int, np.integer)) and not isinstance(prompt, bool):
            if not 0 <= prompt < len(self.prompts):
                raise ValueError(
                    f"`prompt` index must be in [0, {len(self.prompts) - 1}], got {prompt}."
                )
            return int(prompt)
        if prompt not in self.prompts:
            raise ValueError(f"Prompt {prompt!r} is not in the file; it holds {self.prompts}.")
        return self.prompts.index(prompt)

    def conditioning(
        self,
        prompt: str | int,
        image_height: int,
        image_width: int,
        *,
        guidance=None,
        downsample_factor: int = 8,
    ) -> FluxConditioning:
        """The :class:`FluxConditioning` of one prompt at ``image_height × image_width`` pixels.

        The sizes must be multiples of ``2 · downsample_factor`` (the autoencoder's factor, 8
        for FLUX's, times the 2×2 packing); ``guidance`` is FLUX-dev's distilled guidance scale.
        """
        i = self.index(prompt)
        step = 2 * downsample_factor
        for name, size in (("image_height", image_height), ("image_width", image_width)):
            if isinstance(size, bool) or not isinstance(size, int) or size < step or size % step:
                raise ValueError(f"`{name}` must be a positive multiple of {step}, got {size!r}.")
        f = downsample_factor
        ids = image_ids(image_height // f, image_width // f)  # the latent's size
        return conditioning(self.t5[i], self.clip_pooled[i], ids, guidance=guidance)


def save_prompt_embeddings(
    path: str | os.PathLike,
    prompts: Sequence[str],
    t5,
    clip_pooled,
    clip_text_embeds=None,
    *,
    encoders: dict | None = None,
) -> str:
    """Write the text conditioning of ``prompts`` to one ``.safetensors`` file; returns its path.

    ``t5`` ``(P, Lt, C)``, ``clip_pooled`` ``(P, D)``, ``clip_text_embeds`` ``(P, E)`` or ``None``;
    every array finite, ``P = len(prompts)``.
    """
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise ValueError(f"`path` must end in .safetensors, got {path!r}.")
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError("`prompts` must be a non-empty sequence of strings.")
    if len(set(prompts)) != len(prompts):
        raise ValueError("`prompts` holds a prompt twice.")
    arrays = {"t5": (t5, 3), "clip_pooled": (clip_pooled, 2)}
    if clip_text_embeds is not None:
        arrays["clip_text_embeds"] = (clip_text_embeds, 2)
    tensors = {}
    for name, (value, ndim) in arrays.items():
        value = np.asarray(value, np.float32)
        if value.ndim != ndim or value.shape[0] != len(prompts):
            raise ValueError(
                f"`{name}` must have {ndim} axes and one row per prompt ({len(prompts)}), got "
                f"shape {value.shape}."
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"`{name}` holds NaN or inf.")
        tensors[name] = value
    metadata = {_PROMPTS_KEY: json.dumps(prompts), _ENCODERS_KEY: json.dumps(encoders or {})}
    checkpoint.write_tensors(tensors, path, metadata=metadata)
    return path


def load_prompt_embeddings(path: str | os.PathLike) -> PromptEmbeddings:
    """Read a file written by :func:`save_prompt_embeddings` (or ``psijax flux-prompts``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such prompt-embeddings file: {path!r}.")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
    except SafetensorError as e:
        raise ValueError(f"{path!r} is not a valid safetensors file: {e}") from e
    if _PROMPTS_KEY not in metadata:
        raise ValueError(
            f"{path!r} is not a prompt-embeddings file (no {_PROMPTS_KEY!r} in its metadata); "
            "write one with `psijax flux-prompts`."
        )
    prompts = tuple(json.loads(metadata[_PROMPTS_KEY]))
    tensors = checkpoint.read_tensors(path, host=True)
    missing = sorted({"t5", "clip_pooled"} - set(tensors))
    if missing:
        raise ValueError(f"{path!r} lacks the tensors {missing}.")
    for name, value in tensors.items():
        if value.shape[0] != len(prompts):
            raise ValueError(
                f"{path!r}: `{name}` has {value.shape[0]} rows for {len(prompts)} prompts."
            )
    extra = tensors.get("clip_text_embeds")
    return PromptEmbeddings(
        prompts=prompts,
        t5=jnp.asarray(tensors["t5"], jnp.float32),
        clip_pooled=jnp.asarray(tensors["clip_pooled"], jnp.float32),
        clip_text_embeds=None if extra is None else jnp.asarray(extra, jnp.float32),
        encoders=json.loads(metadata.get(_ENCODERS_KEY, "{}")),
    )


# ----------------------------------------------------------------------------------------------
# Running the text encoders (the optional `transformers` extra)
# ----------------------------------------------------------------------------------------------
def _pipeline_parts(root: str) -> dict[str, str]:
    parts = {
        "clip": os.path.join(root, "text_encoder"),
        "clip_tokenizer": os.path.join(root, "tokenizer"),
        "t5": os.path.join(root, "text_encoder_2"),
        "t5_tokenizer": os.path.join(root, "tokenizer_2"),
    }
    missing = [os.path.basename(p) for p in parts.values() if not os.path.isdir(p)]
    if missing:
        raise FileNotFoundError(f"{root!r} is not a FLUX pipeline folder: it lacks {missing}.")
    return parts


def encode_prompts(
    prompts: Sequence[str],
    *,
    pipeline: str | None = None,
    t5: str | None = None,
    clip: str | None = None,
    clip_score_model: str | None = None,
    max_length: int = 512,
    batch_size: int = 8,
    device: str = "cpu",
    progress: Any = None,
) -> PromptEmbeddings:
    """Run FLUX's text encoders on ``prompts`` as diffusers' ``FluxPipeline.encode_prompt`` does.

    Parameters
    ----------
    prompts
        The prompts.
    pipeline
        A diffusers FLUX pipeline folder (``text_encoder/``, ``tokenizer/``,
        ``text_encoder_2/``, ``tokenizer_2/``); or give ``t5`` and ``clip``.
    t5, clip
        Folders of T5's encoder and CLIP-L's text model, each with its tokenizer files.
    clip_score_model
        Optionally a full CLIP model folder (with ``text_projection``): its projected text
        embeddings are stored for a CLIP-score reward.
    max_length
        T5's token count (512 for FLUX-dev, 256 for schnell).
    batch_size, device
        How the encoders run (torch device string).
    progress
        Optional callable ``progress(done, total)``.
    """
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ImportError(
            "encode_prompts runs the text encoders with transformers: "
            "pip install 'psijax[prompts]'."
        ) from e
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError("`prompts` must be a non-empty sequence of strings.")
    if pipeline is not None:
        if t5 is not None or clip is not None:
            raise ValueError("Give `pipeline`, or `t5` and `clip`, not both.")
        parts = _pipeline_parts(pipeline)
    elif t5 is None or clip is None:
        raise ValueError("Give `pipeline` (a FLUX pipeline folder), or both `t5` and `clip`.")
    else:
        parts = {"clip": clip, "clip_tokenizer": clip, "t5": t5, "t5_tokenizer": t5}
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"`max_length` must be a positive int, got {max_length!r}.")

    load = dict(torch_dtype=torch.float32)
    clip_tok = transformers.AutoTokenizer.from_pretrained(parts["clip_tokenizer"])
    clip_model = transformers.CLIPTextModel.from_pretrained(parts["clip"], **load).to(device).eval()
    t5_tok = transformers.AutoTokenizer.from_pretrained(parts["t5_tokenizer"])
    t5_model = transformers.T5EncoderModel.from_pretrained(parts["t5"], **load).to(device).eval()
    scorer = None
    if clip_score_model is not None:
        scorer_tok = transformers.AutoTokenizer.from_pretrained(clip_score_model)
        scorer = transformers.CLIPModel.from_pretrained(clip_score_model, **load).to(device).eval()

    rows = {"t5": [], "clip_pooled": [], "clip_text_embeds": []}
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            ids = clip_tok(
                batch,
                padding="max_length",
                max_length=CLIP_MAX_LENGTH,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            rows["clip_pooled"].append(clip_model(ids, output_hidden_states=False).pooler_output)
            ids = t5_tok(
                batch,
                padding="max_length",
                max_length=max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            rows["t5"].append(t5_model(ids, output_hidden_states=False)[0])
            if scorer is not None:
                tokens = scorer_tok(batch, padding=True, truncation=True, return_tensors="pt")
                features = scorer.get_text_features(**tokens.to(device))
                # transformers 5 returns an output whose pooler_output is projected; 4 a tensor
                rows["clip_text_embeds"].append(getattr(features, "pooler_output", features))
            if progress is not None:
                progress(min(start + batch_size, len(prompts)), len(prompts))
    out = {k: torch.cat(v).float().cpu().numpy() for k, v in rows.items() if v}
    encoders = {"t5": parts["t5"], "clip": parts["clip"], "max_length": max_length}
    if clip_score_model is not None:
        encoders["clip_score_model"] = clip_score_model
    return PromptEmbeddings(
        prompts=tuple(prompts),
        t5=jnp.asarray(out["t5"]),
        clip_pooled=jnp.asarray(out["clip_pooled"]),
        clip_text_embeds=None if scorer is None else jnp.asarray(out["clip_text_embeds"]),
        encoders=encoders,
    )
