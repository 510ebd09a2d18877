"""Reading and writing safetensors checkpoints (single files, sharded directories, diffusers
roots) without torch. Every round trip is compared bitwise, dtype included."""

import json
import os

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from psijax.models.flux.checkpoint import INDEX_NAME, read_tensors, total_bytes, write_tensors


def sample_tensors():
    rng = np.random.default_rng(0)
    return {
        "b.weight": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32),
        "a.bias": jnp.asarray(rng.standard_normal(16), jnp.bfloat16),
        "c.scale": jnp.asarray(rng.standard_normal((4, 3, 2)), jnp.bfloat16),
        "d.index": jnp.arange(5, dtype=jnp.int32),
        "e.scalar": jnp.asarray(0.5, jnp.float32),
    }


def assert_same(read, written):
    assert list(read) == sorted(written)
    for k, v in written.items():
        a, b = np.asarray(read[k]), np.asarray(v)
        assert a.dtype == b.dtype and a.shape == b.shape, k
        assert a.tobytes() == b.tobytes(), k


def test_single_file_round_trip(tmp_path):
    tensors = sample_tensors()
    path = tmp_path / "sub" / "model.safetensors"
    assert write_tensors(tensors, path, metadata={"format": "bfl"}) == [str(path)]
    read = read_tensors(path)
    assert_same(read, tensors)
    assert read["a.bias"].dtype == jnp.bfloat16 and read["b.weight"].dtype == jnp.float32
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"format": "bfl"}
        assert list(f.keys()) == sorted(tensors)


def test_numpy_bfloat16_input(tmp_path):
    tensors = {"w": np.linspace(-1, 1, 12, dtype=np.float32).astype(ml_dtypes.bfloat16)}
    write_tensors(tensors, tmp_path / "w.safetensors")
    assert_same(read_tensors(tmp_path / "w.safetensors"), tensors)


def test_sharded_round_trip(tmp_path):
    tensors = sample_tensors()
    written = write_tensors(tensors, tmp_path / "ckpt", max_shard_bytes=256, metadata={"k": "v"})
    shards = [os.path.basename(p) for p in written[:-1]]
    assert written[-1] == str(tmp_path / "ckpt" / INDEX_NAME)
    n = len(shards)
    assert n >= 3
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((tmp_path / "ckpt" / INDEX_NAME).read_text())
    assert index["metadata"] == {"k": "v", "total_size": total_bytes(tensors)}
    assert total_bytes(tensors) == 16 * 8 * 4 + 16 * 2 + 24 * 2 + 5 * 4 + 4
    assert sorted(index["weight_map"]) == sorted(tensors)
    assert set(index["weight_map"].values()) == set(shards)
    for shard in shards:  # only a lone over-sized tensor may exceed the limit
        part = read_tensors(tmp_path / "ckpt" / shard)
        assert total_bytes(part) <= 256 or len(part) == 1
    assert_same(read_tensors(tmp_path / "ckpt"), tensors)
    assert_same(read_tensors(tmp_path / "ckpt" / INDEX_NAME), tensors)


def test_unsharded_directory(tmp_path):
    tensors = sample_tensors()
    written = write_tensors(tensors, tmp_path / "ckpt")
    assert [os.path.basename(p) for p in written] == [
        "model-00001-of-00001.safetensors",
        INDEX_NAME,
    ]
    assert_same(read_tensors(tmp_path / "ckpt"), tensors)


def test_directory_with_one_file(tmp_path):
    tensors = sample_tensors()
    write_tensors(tensors, tmp_path / "flux1-dev.safetensors")
    (tmp_path / "README.md").write_text("not a checkpoint")
    assert_same(read_tensors(tmp_path), tensors)


@pytest.mark.parametrize("pipeline_root", [True, False])
def test_diffusers_root_reads_transformer_subfolder(tmp_path, pipeline_root):
    tensors = sample_tensors()
    write_tensors(tensors, tmp_path / "transformer", max_shard_bytes=300)
    if pipeline_root:  # like the BFL repo: its own single file and the diffusers folders
        (tmp_path / "model_index.json").write_text("{}")
        write_tensors({"other": jnp.zeros(2)}, tmp_path / "ae.safetensors")
        write_tensors({"other": jnp.zeros(2)}, tmp_path / "flux1-dev.safetensors")
    assert_same(read_tensors(tmp_path), tensors)


def test_dtype_cast(tmp_path):
    tensors = sample_tensors()
    write_tensors(tensors, tmp_path / "m.safetensors")
    read = read_tensors(tmp_path / "m.safetensors", dtype=jnp.bfloat16)
    assert read["b.weight"].dtype == jnp.bfloat16
    assert read["d.index"].dtype == jnp.int32
    assert np.array_equal(np.asarray(read["b.weight"]), np.asarray(tensors["b.weight"], "bfloat16"))
    assert read_tensors(tmp_path / "m.safetensors", dtype="float32")["a.bias"].dtype == np.float32
    with pytest.raises(ValueError, match="`dtype`"):
        read_tensors(tmp_path / "m.safetensors", dtype=jnp.int8)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_tensors(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="No '\\*.safetensors' file"):
        read_tensors(tmp_path)


def test_missing_shard_is_named(tmp_path):
    written = write_tensors(sample_tensors(), tmp_path, max_shard_bytes=256)
    os.remove(written[1])
    name = os.path.basename(written[1])
    with pytest.raises(FileNotFoundError, match=rf"{name}.*{INDEX_NAME}"):
        read_tensors(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_file_is_named(tmp_path, keep):
    path = tmp_path / "broken.safetensors"
    write_tensors(sample_tensors(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="broken.safetensors"):
        read_tensors(path)
    with pytest.raises(ValueError, match="broken.safetensors"):
        read_tensors(tmp_path)


def test_truncated_shard_is_named(tmp_path):
    written = write_tensors(sample_tensors(), tmp_path, max_shard_bytes=256)
    with open(written[0], "r+b") as f:
        f.truncate(os.path.getsize(written[0]) - 3)
    with pytest.raises(ValueError, match=os.path.basename(written[0])):
        read_tensors(tmp_path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"PK\x03\x04 certainly not safetensors")
    with pytest.raises(ValueError, match="weights.safetensors"):
        read_tensors(path)


def test_several_files_without_index(tmp_path):
    write_tensors({"x": jnp.zeros(2)}, tmp_path / "one.safetensors")
    write_tensors({"y": jnp.zeros(2)}, tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"one\.safetensors.*two\.safetensors"):
        read_tensors(tmp_path)


def _edit_index(directory, edit):
    path = directory / INDEX_NAME
    index = json.loads(path.read_text())
    edit(index["weight_map"])
    path.write_text(json.dumps(index))


def test_index_and_shards_must_agree(tmp_path):
    tensors = sample_tensors()
    write_tensors(tensors, tmp_path, max_shard_bytes=256)
    _edit_index(tmp_path, lambda m: m.pop("c.scale"))
    with pytest.raises(ValueError, match=r"'c\.scale'.*not listed"):
        read_tensors(tmp_path)

    write_tensors(tensors, tmp_path, max_shard_bytes=256)
    _edit_index(tmp_path, lambda m: m.update({"z.extra": m["a.bias"]}))
    with pytest.raises(ValueError, match=r"'z\.extra'.*missing from shard 'model-00001"):
        read_tensors(tmp_path)

    write_tensors(tensors, tmp_path, max_shard_bytes=256)
    (tmp_path / INDEX_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=INDEX_NAME):
        read_tensors(tmp_path)


def test_duplicate_tensor_across_shards(tmp_path):
    write_tensors({"a": jnp.zeros(2), "b": jnp.ones(2)}, tmp_path / "model-1.safetensors")
    write_tensors({"b": jnp.ones(2)}, tmp_path / "model-2.safetensors")
    weight_map = {"a": "model-1.safetensors", "b": "model-2.safetensors"}
    (tmp_path / "x.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match=r"'b' appears in two shards"):
        read_tensors(tmp_path)


def test_write_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="`max_shard_bytes`"):
        write_tensors(sample_tensors(), tmp_path, max_shard_bytes=0)
    with pytest.raises(ValueError, match="`max_shard_bytes`"):
        write_tensors(sample_tensors(), tmp_path / "a.safetensors", max_shard_bytes=10)
    with pytest.raises(TypeError, match="`metadata`"):
        write_tensors(sample_tensors(), tmp_path, metadata={"n": 1})
    with pytest.raises(TypeError, match="`tensors`"):
        write_tensors([jnp.zeros(2)], tmp_path)
