"""Read and write flat ``{name: array}`` tensor dicts as safetensors, without torch.

:func:`read_tensors` accepts what a user downloads for FLUX:

- a single ``.safetensors`` file (BFL's ``flux1-dev.safetensors``);
- a directory holding a ``*.safetensors.index.json`` (the Hugging Face sharded format,
  ``{"metadata": {...}, "weight_map": {name: shard_file}}``), whose shards are all read and
  checked against the map;
- a directory holding exactly one ``.safetensors`` file;
- a diffusers pipeline root, whose transformer lives in its ``transformer/`` subfolder.

:func:`write_tensors` writes one file or an index plus shards in the same format, so converted
weights can be saved once and loaded quickly later. bfloat16 is read and written natively
(safetensors' numpy and flax backends use ``ml_dtypes``); the round trip is bit-exact.
"""

import glob
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

__all__ = ["read_tensors", "write_tensors", "total_bytes", "INDEX_NAME"]

#: Name of the index :func:`write_tensors` writes next to its shards.
INDEX_NAME = "model.safetensors.index.json"

_SUFFIX = ".safetensors"
_INDEX_SUFFIX = ".safetensors.index.json"


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def read_tensors(
    path: str | os.PathLike, dtype: Any = None, *, host: bool = False
) -> dict[str, jax.Array]:
    """Load every tensor of a safetensors checkpoint (one file or a sharded directory).

    Parameters
    ----------
    path
        A ``.safetensors`` file, a ``*.safetensors.index.json`` file, a directory with an
        index or exactly one ``.safetensors`` file, or a diffusers pipeline root (read from
        its ``transformer/`` subfolder).
    dtype
        If given, floating-point tensors are cast to it (e.g. ``jnp.bfloat16``) as they
        are loaded; integer and boolean tensors are kept.
    host
        Return numpy arrays (bfloat16 via ``ml_dtypes``) in host memory instead of jax
        arrays on the default device — for rearranging a large checkpoint before one
        transfer.

    Returns
    -------
    ``{name: array}`` sorted by name, dtypes as stored (bfloat16 included) unless cast.

    Raises
    ------
    FileNotFoundError
        ``path`` or a shard listed in the index does not exist, or a
        directory holds no checkpoint.
    ValueError
        A file that is not a valid (or is a truncated) safetensors file, a malformed
        index, shards that disagree with their index, a tensor name in two shards, or a
        directory with several ``.safetensors`` files and no index.
    """
    cast = _check_dtype(dtype)
    framework = "numpy" if host else "flax"
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such checkpoint file or directory: {path!r}.")
    if os.path.isdir(path):
        path = _resolve_dir(path)
    if path.endswith(".json"):
        tensors = _read_sharded(path, cast, framework)
    else:
        tensors = _read_file(path, cast, framework)
    return dict(sorted(tensors.items()))


def _check_dtype(dtype):
    if dtype is None:
        return None
    try:
        dtype = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype!r}.") from e
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`dtype` must be a floating dtype, got {dtype}.")
    return dtype


def _resolve_dir(directory: str) -> str:
    """The index or the single file to read in ``directory``."""
    indexes = sorted(glob.glob(os.path.join(glob.escape(directory), "*" + _INDEX_SUFFIX)))
    if len(indexes) > 1:
        names = [os.path.basename(p) for p in indexes]
        raise ValueError(f"{directory!r} holds several safetensors indexes {names}: pass one.")
    if indexes:
        return indexes[0]
    files = sorted(glob.glob(os.path.join(glob.escape(directory), "*" + _SUFFIX)))
    transformer = os.path.join(directory, "transformer")
    pipeline_root = os.path.exists(os.path.join(directory, "model_index.json"))
    if os.path.isdir(transformer) and (pipeline_root or not files):
        return _resolve_dir(transformer)
    if len(files) == 1:
        return files[0]
    if files:
        names = [os.path.basename(p) for p in files]
        raise ValueError(
            f"{directory!r} holds several .safetensors files {names} and no "
            f"'*{_INDEX_SUFFIX}' saying which belong together: pass the file to read."
        )
    raise FileNotFoundError(
        f"No '*{_SUFFIX}' file, '*{_INDEX_SUFFIX}' or 'transformer/' subfolder in {directory!r}."
    )


def _read_file(path: str, cast, framework: str) -> dict[str, jax.Array]:
    try:
        with safe_open(path, framework=framework) as f:
            return {k: _cast(f.get_tensor(k), cast) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"{path!r} is not a valid safetensors file: {e}") from e


def _cast(x: jax.Array, dtype) -> jax.Array:
    if dtype is None or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(dtype)


def _read_sharded(index_path: str, cast, framework: str) -> dict[str, jax.Array]:
    try:
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{index_path!r} is not a safetensors index with a 'weight_map': {e!r}"
        ) from e
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index_path!r}: 'weight_map' must map tensor names to shard files.")
    directory = os.path.dirname(index_path)
    # Check the shards' headers against the map before loading any data.
    shards = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(directory, shard)
        if not os.path.isfile(shard_path):
            raise FileNotFoundError(f"Shard {shard!r} listed in {index_path!r} is missing.")
        shards[shard] = shard_path
    source = {}
    for shard, shard_path in shards.items():
        for name in _keys(shard_path):
            if name in source:
                raise ValueError(
                    f"Tensor {name!r} appears in two shards, {source[name]!r} and {shard!r}."
                )
            source[name] = shard
    for name, shard in source.items():
        if weight_map.get(name) != shard:
            listed = weight_map.get(name)
            where = f"listed under {listed!r}" if listed else "not listed"
            raise ValueError(
                f"Tensor {name!r} found in shard {shard!r} is {where} in {index_path!r}."
            )
    for name, shard in weight_map.items():
        if name not in source:
            raise ValueError(
                f"Tensor {name!r} listed in {index_path!r} is missing from shard {shard!r}."
            )
    tensors = {}
    for shard_path in shards.values():
        tensors.update(_read_file(shard_path, cast, framework))
    return tensors


def _keys(path: str) -> list[str]:
    try:
        with safe_open(path, framework="flax") as f:
            return list(f.keys())
    except SafetensorError as e:
        raise ValueError(f"{path!r} is not a valid safetensors file: {e}") from e


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def write_tensors(
    tensors: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    max_shard_bytes: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write ``{name: array}`` as one safetensors file or as shards plus an index.

    Tensors are written in sorted name order; arrays may be JAX or numpy (bfloat16 included).

    Parameters
    ----------
    tensors
        The flat dict to save.
    path
        A path ending in ``.safetensors`` writes that one file. Any other path is a
        directory (created if needed) that receives ``model-00001-of-0000N.safetensors``,
        ... and ``model.safetensors.index.json`` (``weight_map`` and
        ``metadata.total_size``), which :func:`read_tensors` reads back.
    max_shard_bytes
        The largest shard size in tensor bytes (directory output only); a
        tensor larger than that gets a shard of its own. ``None`` writes a single shard.
    metadata
        ``{str: str}`` stored in the header of every file written (and added to the
        index's ``metadata``).

    Returns
    -------
    The paths written: the file, or the shards followed by the index.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"`tensors` must be a mapping {{name: array}}, got {type(tensors)}.")
    bad = [k for k in tensors if not isinstance(k, str)]
    if bad:
        raise TypeError(f"`tensors` keys must be str, got {bad[0]!r}.")
    if max_shard_bytes is not None and (
        isinstance(max_shard_bytes, bool)
        or not isinstance(max_shard_bytes, (int, np.integer))
        or max_shard_bytes < 1
    ):
        raise ValueError(
            f"`max_shard_bytes` must be a positive int or None, got {max_shard_bytes!r}."
        )
    metadata = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"`metadata` must map str to str, got {metadata!r}.")
    path = os.fspath(path)
    names = sorted(tensors)

    if path.endswith(_SUFFIX):
        if max_shard_bytes is not None:
            raise ValueError(
                f"`max_shard_bytes` needs a directory `path`, got the file name {path!r}."
            )
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _write_file(tensors, names, path, metadata)
        return [path]

    shards = _plan_shards(tensors, names, max_shard_bytes)
    os.makedirs(path, exist_ok=True)
    written, weight_map = [], {}
    for i, shard in enumerate(shards):
        filename = f"model-{i + 1:05d}-of-{len(shards):05d}{_SUFFIX}"
        _write_file(tensors, shard, os.path.join(path, filename), metadata)
        written.append(os.path.join(path, filename))
        weight_map.update(dict.fromkeys(shard, filename))
    index = {"metadata": {**metadata, "total_size": total_bytes(tensors)}, "weight_map": weight_map}
    index_path = os.path.join(path, INDEX_NAME)
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    written.append(index_path)
    return written


def total_bytes(tensors: Mapping[str, Any]) -> int:
    """Total size in bytes of the arrays in ``tensors`` (as stored, without headers)."""
    return sum(_nbytes(x) for x in tensors.values())


def _nbytes(x) -> int:
    return int(np.prod(np.shape(x), dtype=np.int64)) * np.dtype(x.dtype).itemsize


def _plan_shards(tensors, names: list[str], max_shard_bytes: int | None) -> list[list[str]]:
    """Consecutive groups of names, each at most ``max_shard_bytes`` unless a lone tensor."""
    shards, size = [[]], 0
    for name in names:
        n = _nbytes(tensors[name])
        if max_shard_bytes is not None and shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def _write_file(tensors, names: list[str], path: str, metadata: dict[str, str]) -> None:
    # JAX arrays come to host memory one shard at a time; bfloat16 becomes ml_dtypes' bfloat16.
    # (Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.)
    arrays = {k: np.asarray(tensors[k], order="C") for k in names}
    save_file(arrays, path, metadata=metadata or None)
