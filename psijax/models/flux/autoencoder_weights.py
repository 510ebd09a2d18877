"""Loading and saving the FLUX autoencoder (:class:`~.autoencoder.AutoencoderKL`), without torch.

Two layouts of the same tensors are in circulation:

- **BFL** (``ae.safetensors`` of FLUX.1, the original latent-diffusion names; also found with a
  ``vae.`` or ``first_stage_model.`` prefix inside single-file checkpoints):
  ``encoder.down.{i}.block.{j}.conv1``, ``encoder.down.{i}.downsample.conv``,
  ``encoder.mid.block_1``, ``encoder.mid.attn_1.q`` (a 1×1 convolution, weight ``(C, C, 1, 1)``),
  ``decoder.up.{i}.upsample.conv``, ``decoder.norm_out``. The decoder's levels are numbered by
  resolution: ``decoder.up.0`` is applied last.
- **diffusers** (``AutoencoderKL``'s ``vae/diffusion_pytorch_model.safetensors`` with its
  ``config.json``): ``encoder.down_blocks.{i}.resnets.{j}``, ``downsamplers.0``,
  ``mid_block.resnets.{0,1}``, ``mid_block.attentions.0.to_q`` (a Linear, weight ``(C, C)``),
  ``conv_shortcut`` for BFL's ``nin_shortcut``, ``conv_norm_out``; the decoder's
  ``up_blocks.{j}`` in the order applied, so ``up_blocks.j`` is BFL's ``up.{n−1−j}``.

:func:`load_autoencoder` reads either (a BFL file, a diffusers ``vae/`` folder or a pipeline
root holding one), detects which, converts diffusers names to BFL's by rules that depend on no
width or depth (tiny test models convert like the real one), takes the configuration from the
diffusers ``config.json`` or infers it from the shapes, and requires the tensors to be exactly
the model's: a missing, unexpected, mis-shaped, non-floating or (unless ``check_finite=False``)
non-finite tensor is a ``ValueError`` naming its key. :func:`save_autoencoder` writes either
layout back; the round trip is bit-exact.
"""

import functools
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open

from psijax.models import _params
from psijax.models.flux import checkpoint
from psijax.models.flux.autoencoder import AutoencoderConfig, AutoencoderKL
from psijax.models.flux.convert import BFL, DIFFUSERS

__all__ = [
    "PREFIXES",
    "bfl_keys",
    "to_bfl",
    "detect_layout",
    "diffusers_to_bfl",
    "bfl_to_diffusers",
    "infer_config",
    "config_from_diffusers",
    "config_to_diffusers",
    "from_tensors",
    "load_autoencoder",
    "save_autoencoder",
]

#: Prefixes stripped from every key when all keys of a checkpoint carry one.
PREFIXES = ("first_stage_model.", "vae.")

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_CONFIG_NAME = "config.json"
_DIFFUSERS_FILE = "diffusion_pytorch_model.safetensors"
# the safetensors metadata entry where save_autoencoder keeps the config of a BFL-layout file
_METADATA_KEY = "psijax.autoencoder_config"


# ----------------------------------------------------------------------------------------------
# The model's parameters as BFL tensors
# ----------------------------------------------------------------------------------------------
def _bfl_name(path) -> str:
    parts = [str(p) for p in path]
    parts[-1] = _LEAF[parts[-1]]
    return ".".join(parts)


def _torch_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    if leaf != "kernel":
        return tuple(shape)
    if len(shape) == 4:  # conv (k, k, in, out) ← torch (out, in, k, k)
        return (shape[3], shape[2], shape[0], shape[1])
    return (shape[1], shape[0], 1, 1)  # attention projection: BFL's 1×1 convolution


def _to_torch(value, leaf: str):
    if leaf != "kernel":
        return value
    if value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    return value.T[:, :, None, None]


def _from_torch(value, leaf: str, ndim: int):
    if leaf != "kernel":
        return value
    if ndim == 4:
        return value.transpose(2, 3, 1, 0)
    return value[:, :, 0, 0].T


@functools.lru_cache(maxsize=8)
def _abstract(config: AutoencoderConfig):
    """``(graphdef, flat parameter state)`` of a model with ``config``, shapes only (cached)."""
    model = nnx.eval_shape(lambda: AutoencoderKL(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    return graphdef, tuple(nnx.to_flat_state(state))


def bfl_keys(config: AutoencoderConfig) -> dict[str, tuple[int, ...]]:
    """The BFL state-dict keys of an autoencoder with ``config`` and their torch shapes."""
    return {
        _bfl_name(path): _torch_shape(_params.value(var).shape, path[-1])
        for path, var in _abstract(config)[1]
    }


def to_bfl(model: AutoencoderKL) -> dict[str, np.ndarray]:
    """The parameters as a BFL-layout state dict: numpy arrays, torch layout, same dtypes."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {
        _bfl_name(path): np.ascontiguousarray(_to_torch(np.asarray(_params.value(var)), path[-1]))
        for path, var in flat
    }


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------
def _strip_prefix(tensors: Mapping[str, Any]) -> dict[str, Any]:
    for prefix in PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items()}
    return dict(tensors)


def detect_layout(keys) -> str:
    """``"bfl"`` or ``"diffusers"``, from the names of the encoder's or decoder's first level."""
    keys = list(keys)
    if any(re.match(r"(en|de)coder\.(down|up)\.\d+\.", k) for k in keys):
        return BFL
    if any(re.match(r"(en|de)coder\.(down|up)_blocks\.\d+\.", k) for k in keys):
        return DIFFUSERS
    raise ValueError(
        "Not an autoencoder checkpoint: no key starts with `encoder.down.0.` / `decoder.up.0.` "
        f"(BFL) or `encoder.down_blocks.0.` / `decoder.up_blocks.0.` (diffusers); found "
        f"{_params.some(sorted(keys))}."
    )


# (diffusers, BFL) renames inside a residual block, an attention layer and at the top of a half.
_RESNET = (("conv_shortcut", "nin_shortcut"),)
_ATTENTION = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)
# diffusers' attention names before version 0.14, read but never written
_ATTENTION_LEGACY = (
    ("query", "q"),
    ("key", "k"),
    ("value", "v"),
    ("proj_attn", "proj_out"),
)
_HALF = (("conv_norm_out", "norm_out"),)


def _levels(keys, half: str, name: str) -> int:
    pattern = re.compile(rf"{half}\.{name}\.(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _rename(rest: str, table) -> str:
    for old, new in table:
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def _diffusers_name(key: str, up_levels: int) -> str | None:
    """The BFL name of the diffusers ``key``, or ``None`` if it is not an autoencoder tensor."""
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    m = re.match(r"(encoder|decoder)\.(.*)$", key)
    if m is None:
        return None
    half, rest = m.groups()
    if m := re.match(
        r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)$", rest
    ):
        kind, level, part, index, tail = m.groups()
        level = int(level) if kind == "down" else up_levels - 1 - int(level)
        if part == "resnets":
            return f"{half}.{kind}.{level}.block.{index}.{_rename(tail, _RESNET)}"
        if index != "0":
            return None
        return f"{half}.{kind}.{level}.{'downsample' if kind == 'down' else 'upsample'}.{tail}"
    if m := re.match(r"mid_block\.resnets\.([01])\.(.*)$", rest):
        return f"{half}.mid.block_{int(m.group(1)) + 1}.{_rename(m.group(2), _RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)$", rest):
        return f"{half}.mid.attn_1.{_rename(m.group(1), _ATTENTION + _ATTENTION_LEGACY)}"
    if rest.startswith(("conv_in.", "conv_out.", "conv_norm_out.")):
        return f"{half}.{_rename(rest, _HALF)}"
    return None


def _is_attention_weight(bfl_key: str) -> bool:
    return bool(re.search(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$", bfl_key))


def diffusers_to_bfl(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a diffusers-layout autoencoder state dict to BFL's (values moved, not copied).

    Attention projections become 1×1 convolution weights ``(C, C, 1, 1)``. A key that is not
    part of an autoencoder is a ``ValueError`` naming it.
    """
    up_levels = _levels(tensors, "decoder", "up_blocks")
    out, unknown = {}, []
    for key, value in tensors.items():
        name = _diffusers_name(key, up_levels)
        if name is None:
            unknown.append(key)
            continue
        if _is_attention_weight(name) and np.ndim(value) == 2:
            value = value[:, :, None, None]
        if name in out:
            raise ValueError(
                f"Two diffusers tensors map to the BFL name `{name}` (one is `{key}`)."
            )
        out[name] = value
    if unknown:
        raise ValueError(
            f"The diffusers checkpoint has {len(unknown)} tensor(s) that are not part of an "
            f"AutoencoderKL: {_params.some(sorted(unknown))}."
        )
    return out


def bfl_to_diffusers(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a BFL-layout autoencoder state dict to diffusers' (the inverse of
    :func:`diffusers_to_bfl`; attention projections become Linear weights ``(C, C)``)."""
    up_levels = _levels(tensors, "decoder", "up")
    inverse = {}
    for key, value in tensors.items():
        name = _bfl_to_diffusers_name(key, up_levels)
        if name is None:
            raise ValueError(f"`{key}` is not a tensor of a BFL-layout autoencoder.")
        if _is_attention_weight(key) and np.ndim(value) == 4:
            value = value[:, :, 0, 0]
        inverse[name] = value
    return inverse


def _bfl_to_diffusers_name(key: str, up_levels: int) -> str | None:
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    m = re.match(r"(encoder|decoder)\.(.*)$", key)
    if m is None:
        return None
    half, rest = m.groups()
    if m := re.match(r"(down|up)\.(\d+)\.(block\.(\d+)|downsample|upsample)\.(.*)$", rest):
        kind, level, part, index, tail = m.groups()
        level = int(level) if kind == "down" else up_levels - 1 - int(level)
        if index is not None:
            return (
                f"{half}.{kind}_blocks.{level}.resnets.{index}.{_rename(tail, _inverse(_RESNET))}"
            )
        return f"{half}.{kind}_blocks.{level}.{kind}samplers.0.{tail}"
    if m := re.match(r"mid\.block_([12])\.(.*)$", rest):
        tail = _rename(m.group(2), _inverse(_RESNET))
        return f"{half}.mid_block.resnets.{int(m.group(1)) - 1}.{tail}"
    if m := re.match(r"mid\.attn_1\.(.*)$", rest):
        return f"{half}.mid_block.attentions.0.{_rename(m.group(1), _inverse(_ATTENTION))}"
    if rest.startswith(("conv_in.", "conv_out.", "norm_out.")):
        return f"{half}.{_rename(rest, _inverse(_HALF))}"
    return None


def _inverse(table):
    return tuple((new, old) for old, new in table)


def _to_bfl_layout(tensors: Mapping[str, Any]) -> dict[str, Any]:
    tensors = _strip_prefix(tensors)
    if detect_layout(tensors) == DIFFUSERS:
        return diffusers_to_bfl(tensors)
    return tensors


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------
def infer_config(
    tensors: Mapping[str, Any],
    *,
    norm_num_groups: int | None = None,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
) -> AutoencoderConfig:
    """The :class:`AutoencoderConfig` of a BFL-layout state dict, read off its shapes.

    Three numbers are not stored in a checkpoint's tensors. ``norm_num_groups`` defaults to 32
    (every released autoencoder of this family). The latent normalisation defaults to FLUX's
    for a 16-channel latent; for any other latent width, pass ``scaling_factor`` and
    ``shift_factor`` (or a config), since a wrong normalisation would decode without error.
    """

    def shape(key):
        if key not in tensors:
            raise ValueError(f"Cannot infer the autoencoder config: the checkpoint has no `{key}`.")
        return tuple(np.shape(tensors[key]))

    levels = _levels(tensors, "decoder", "up")
    if not levels:
        raise ValueError("Cannot infer the autoencoder config: no `decoder.up.{i}` tensors.")
    widths = tuple(shape(f"decoder.up.{i}.block.0.conv2.weight")[0] for i in range(levels))
    blocks = _levels(tensors, "encoder.down.0", "block")
    latent = shape("decoder.conv_in.weight")[1]
    if latent != 16 and (scaling_factor is None or shift_factor is None):
        raise ValueError(
            f"This autoencoder has {latent} latent channels, not FLUX's 16: pass its "
            "`scaling_factor` and `shift_factor` (or a `config`)."
        )
    defaults = AutoencoderConfig()
    return AutoencoderConfig(
        in_channels=shape("encoder.conv_in.weight")[1],
        out_channels=shape("decoder.conv_out.weight")[0],
        latent_channels=latent,
        block_out_channels=widths,
        layers_per_block=blocks,
        norm_num_groups=32 if norm_num_groups is None else norm_num_groups,
        mid_block_add_attention="decoder.mid.attn_1.q.weight" in tensors,
        use_quant_conv="quant_conv.weight" in tensors,
        use_post_quant_conv="post_quant_conv.weight" in tensors,
        scaling_factor=defaults.scaling_factor if scaling_factor is None else scaling_factor,
        shift_factor=defaults.shift_factor if shift_factor is None else shift_factor,
    )


_DIFFUSERS_FIELDS = (
    "in_channels",
    "out_channels",
    "latent_channels",
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "mid_block_add_attention",
    "use_quant_conv",
    "use_post_quant_conv",
    "scaling_factor",
    "shift_factor",
)


def config_from_diffusers(config: Mapping[str, Any]) -> AutoencoderConfig:
    """The :class:`AutoencoderConfig` of a diffusers ``AutoencoderKL`` ``config.json`` dict.

    Missing fields take diffusers' defaults (quant convolutions on, scale 0.18215, no shift).
    An architecture this port does not implement (another activation or block type, a
    latents-mean normalisation) is a ``ValueError`` naming the field.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"`config` must be a mapping (config.json), got {type(config).__name__}.")
    name = config.get("_class_name", "AutoencoderKL")
    if name != "AutoencoderKL":
        raise ValueError(f"config.json describes a {name!r}, not an 'AutoencoderKL'.")
    widths = tuple(config.get("block_out_channels", (64,)))
    checks = {
        "act_fn": ("silu",),
        "down_block_types": (("DownEncoderBlock2D",) * len(widths),),
        "up_block_types": (("UpDecoderBlock2D",) * len(widths),),
        "latents_mean": (None,),
        "latents_std": (None,),
    }
    for field, allowed in checks.items():
        value = config.get(field, allowed[0])
        value = tuple(value) if isinstance(value, list) else value
        if value not in allowed:
            raise ValueError(
                f"config.json's `{field}` = {value!r} is not supported (only {allowed[0]!r})."
            )
    values = {
        "in_channels": config.get("in_channels", 3),
        "out_channels": config.get("out_channels", 3),
        "latent_channels": config.get("latent_channels", 4),
        "block_out_channels": widths,
        "layers_per_block": config.get("layers_per_block", 1),
        "norm_num_groups": config.get("norm_num_groups", 32),
        "mid_block_add_attention": config.get("mid_block_add_attention", True),
        "use_quant_conv": config.get("use_quant_conv", True),
        "use_post_quant_conv": config.get("use_post_quant_conv", True),
        "scaling_factor": config.get("scaling_factor", 0.18215),
        "shift_factor": config.get("shift_factor") or 0.0,
    }
    return AutoencoderConfig(**values)


def config_to_diffusers(config: AutoencoderConfig) -> dict[str, Any]:
    """The diffusers ``config.json`` dict of ``config`` (:func:`config_from_diffusers` reads it)."""
    values = {f: getattr(config, f) for f in _DIFFUSERS_FIELDS}
    values["block_out_channels"] = list(config.block_out_channels)
    n = len(config.block_out_channels)
    return {
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "force_upcast": True,
        **values,
    }


# ----------------------------------------------------------------------------------------------
# Loading and saving
# ----------------------------------------------------------------------------------------------
def from_tensors(
    tensors: Mapping[str, Any],
    config: AutoencoderConfig | None = None,
    *,
    dtype: Any = None,
    check_finite: bool = True,
) -> AutoencoderKL:
    """An :class:`AutoencoderKL` holding ``tensors`` (either layout, optionally prefixed).

    ``config`` defaults to :func:`infer_config`; ``dtype`` casts the parameters (default: keep
    the checkpoint's dtypes). The tensors must be exactly the model's (see the module
    docstring); a ``ValueError`` names every offending key.
    """
    tensors = _to_bfl_layout(tensors)
    if config is None:
        config = infer_config(tensors)
    elif not isinstance(config, AutoencoderConfig):
        raise TypeError(
            f"`config` must be an AutoencoderConfig or None, got {type(config).__name__}."
        )
    expected = bfl_keys(config)
    _params.check_keys(tensors, expected, f"the autoencoder {config}")
    if check_finite:
        _params.check_finite(tensors, expected)
    graphdef, flat = _abstract(config)
    leaves = []
    for path, var in flat:
        value = tensors[_bfl_name(path)]
        xp = np if isinstance(value, np.ndarray) else jnp
        value = _from_torch(xp.asarray(value), path[-1], _params.value(var).ndim)
        leaves.append((path, var.replace(value=jnp.asarray(value, dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _resolve(path: str) -> tuple[str, dict | None]:
    """The weights file or folder to read at ``path`` and the config stored with it: the
    diffusers ``config.json`` beside it, or the one :func:`save_autoencoder` puts in a BFL
    file's metadata."""
    if os.path.isdir(path):
        vae = os.path.join(path, "vae")
        if os.path.isdir(vae) and not os.path.isfile(os.path.join(path, _CONFIG_NAME)):
            path = vae
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    config_path = os.path.join(folder, _CONFIG_NAME)
    if not os.path.isfile(config_path):
        stored = _metadata(path).get(_METADATA_KEY) if os.path.isfile(path) else None
        return path, None if stored is None else json.loads(stored)
    try:
        with open(config_path) as f:
            config = json.load(f)
    except ValueError as e:
        raise ValueError(f"{config_path!r} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{config_path!r} must hold a JSON object.")
    return path, config


def _metadata(path: str) -> dict[str, str]:
    try:
        with safe_open(path, framework="numpy") as f:
            return f.metadata() or {}
    except SafetensorError as e:
        raise ValueError(f"{path!r} is not a valid safetensors file: {e}") from e


def load_autoencoder(
    path: str | os.PathLike,
    config: AutoencoderConfig | None = None,
    *,
    dtype: Any = None,
    check_finite: bool = True,
    norm_num_groups: int | None = None,
) -> AutoencoderKL:
    """Load a FLUX (or any KL) autoencoder from a BFL file or a diffusers folder.

    Parameters
    ----------
    path
        BFL's ``ae.safetensors`` (or any single file, prefixed keys included); a diffusers
        ``vae/`` folder (its ``config.json`` and one ``.safetensors`` file); or a diffusers
        pipeline root holding ``vae/``.
    config
        The architecture. Default: the diffusers ``config.json`` beside the weights, or the
        config :func:`save_autoencoder` stores in a BFL file's metadata; else inferred from
        the shapes (:func:`infer_config`).
    dtype
        Cast the parameters (e.g. ``jnp.bfloat16``); default keeps the file's dtypes.
    check_finite
        Reject a tensor holding NaN or inf (default).
    norm_num_groups
        GroupNorm groups when the config is inferred from shapes (default 32).

    Raises
    ------
    FileNotFoundError
        No such file or folder, or a folder without weights.
    ValueError
        A corrupted file, an unsupported config, or tensors that do not match the model (each
        missing, unexpected, mis-shaped or non-floating key is named).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such autoencoder file or folder: {path!r}.")
    path, found = _resolve(path)
    tensors = _to_bfl_layout(checkpoint.read_tensors(path, host=True))
    if config is None:
        if found is not None:
            config = config_from_diffusers(found)
            if norm_num_groups is not None and norm_num_groups != config.norm_num_groups:
                raise ValueError(
                    f"`norm_num_groups` {norm_num_groups} contradicts config.json's "
                    f"{config.norm_num_groups}."
                )
        else:
            config = infer_config(tensors, norm_num_groups=norm_num_groups)
    return from_tensors(tensors, config, dtype=dtype, check_finite=check_finite)


def save_autoencoder(
    model: AutoencoderKL, path: str | os.PathLike, *, layout: str = BFL
) -> list[str]:
    """Save ``model`` in BFL's layout (one ``.safetensors`` file) or diffusers' (a folder).

    The BFL file keeps the config in its safetensors metadata (BFL's own file has none), so
    :func:`load_autoencoder` needs no config to read it back. ``layout="diffusers"`` writes
    ``path/config.json`` and ``path/diffusion_pytorch_model.safetensors``, the ``vae/`` folder
    diffusers' ``AutoencoderKL.from_pretrained`` reads. Returns the files written.
    """
    if not isinstance(model, AutoencoderKL):
        raise TypeError(f"`model` must be an AutoencoderKL, got {type(model).__name__}.")
    path = os.fspath(path)
    tensors = to_bfl(model)
    if layout == BFL:
        if not path.endswith(".safetensors"):
            raise ValueError(
                f"The BFL layout is one file: `path` must end in .safetensors, got {path!r}."
            )
        config = json.dumps(config_to_diffusers(model.config))
        return checkpoint.write_tensors(tensors, path, metadata={_METADATA_KEY: config})
    if layout != DIFFUSERS:
        raise ValueError(f"`layout` must be {BFL!r} or {DIFFUSERS!r}, got {layout!r}.")
    os.makedirs(path, exist_ok=True)
    config_path = os.path.join(path, _CONFIG_NAME)
    with open(config_path, "w") as f:
        json.dump(config_to_diffusers(model.config), f, indent=2)
        f.write("\n")
    files = checkpoint.write_tensors(bfl_to_diffusers(tensors), os.path.join(path, _DIFFUSERS_FILE))
    return [config_path, *files]
