"""Loading and saving FLUX weights (:mod:`psijax.models.flux.weights`), without torch.

The models are ``tiny``-sized with every parameter re-randomized (biases and norm scales away
from 0 and 1), so a dropped, swapped or mis-oriented tensor cannot hide. Parameters are compared
bitwise; forward passes go through ONE jitted function of the parameters, so a loaded model
must give exactly the original output.

Speed (CPU): eager ops compile once per shape, so the round-trip configs share ``CFG``'s shapes;
the torch-free load of a bfloat16 file needs a fresh interpreter (a jax import, ~3 s), which runs
in the background from the first test on and is collected by the last one.
"""

import functools
import json
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open

from psijax.models.flux import (
    Flux,
    FluxConfig,
    FluxOptions,
    bfl_keys,
    checkpoint,
    convert,
    from_tensors,
    infer_config,
    load_weights,
    preset,
    save_weights,
    to_bfl,
)

CFG = preset("tiny", guidance_embed=True)  # the model saved and loaded below
AXES = CFG.axes_dim  # head dim 16: RoPE widths cannot be inferred
# Same shapes as CFG, so that the eager ops of `to_bfl` compile once for all of them.
ROUND_TRIP_CONFIGS = {
    "guidance": CFG,
    "no_guidance": preset("tiny"),
    "no_qkv_bias": preset("tiny", qkv_bias=False),
}
KEY = "double_blocks.0.img_attn.norm.key_norm.scale"
_keys = functools.cache(bfl_keys)  # for building inputs; FluxConfig is hashable


def random_tensors(config: FluxConfig, seed: int) -> dict[str, np.ndarray]:
    """A BFL state dict: weights ~ N(0, 1/fan_in), norm scales 1 + 0.2·N, biases 0.1·N."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in _keys(config).items():
        x = rng.standard_normal(shape, dtype=np.float32)
        if key.endswith(".bias"):
            out[key] = 0.1 * x
        elif len(shape) == 1:
            out[key] = 1 + 0.2 * x
        else:
            out[key] = x / np.float32(np.sqrt(shape[1]))
    return out


def params(model) -> list[tuple[tuple, jax.Array]]:
    return [(path, var[...]) for path, var in nnx.to_flat_state(nnx.state(model))]


def assert_same_params(a, b, dtype=None):
    pa, pb = params(a), params(b)
    assert [p for p, _ in pa] == [p for p, _ in pb]
    for (path, x), (_, y) in zip(pa, pb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert dtype is None or x.dtype == dtype, path
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), path


@pytest.fixture(scope="module")
def tensors():
    return random_tensors(CFG, seed=0)


@pytest.fixture(scope="module")
def model(tensors):
    return from_tensors(tensors, CFG)


@pytest.fixture(scope="module")
def forward(model):
    """``forward(m)``: the output of ``m`` (same structure as ``model``), one compilation."""
    graphdef = nnx.graphdef(model)
    rng = np.random.default_rng(1)
    b, lt, h, w = 2, 3, 3, 2
    inputs = dict(
        img=rng.standard_normal((b, h * w, CFG.in_channels), dtype=np.float32),
        img_ids=rng.uniform(0, 4, (h * w, 3)).astype(np.float32),
        txt=rng.standard_normal((b, lt, CFG.context_in_dim), dtype=np.float32),
        txt_ids=rng.uniform(0, 2, (lt, 3)).astype(np.float32),
        timesteps=np.array([0.3, 0.8], np.float32),
        y=rng.standard_normal((b, CFG.vec_in_dim), dtype=np.float32),
        guidance=np.array([3.5, 1.0], np.float32),
    )
    fn = jax.jit(
        lambda state: nnx.merge(graphdef, state)(**inputs, options=FluxOptions(path="reference"))
    )

    def forward(m):
        assert nnx.graphdef(m) == graphdef
        return fn(nnx.state(m))

    return forward


@pytest.fixture(scope="module")
def expected(model, forward):
    out = forward(model)
    assert out.shape == (2, 6, CFG.out_channels) and np.std(np.asarray(out)) > 0.1
    return out


@pytest.fixture(scope="module")
def bfl_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("bfl") / "flux.safetensors"
    save_weights(model, path)
    return path


def write(tmp_path, tensors, name="ckpt.safetensors"):
    path = tmp_path / name
    checkpoint.write_tensors(tensors, path)
    return path


# ------------------------------------------------------------------------------------------
# bfloat16, without torch (first: the fixture starts the background interpreter)
# ------------------------------------------------------------------------------------------
_NO_TORCH = """
import sys
import jax.numpy as jnp
from flax import nnx
from psijax.models.flux import load_weights
m = load_weights(sys.argv[1], axes_dim={axes!r})
dtypes = {{v[...].dtype for _, v in nnx.to_flat_state(nnx.state(m))}}
assert dtypes == {{jnp.dtype(jnp.bfloat16)}}, dtypes
assert "torch" not in sys.modules, "load_weights imported torch"
print("ok")
"""


@pytest.fixture(scope="module")
def bf16(tensors, tmp_path_factory):
    """``(bf16 model, its file, a fresh interpreter loading the file in the background)``."""
    # `model` cast to bfloat16; from the numpy tensors (no eager compiles), as `from_tensors(
    # to_bfl(model), ...)` would (the round trip is tested bit-exact below).
    m16 = from_tensors(tensors, CFG, dtype=jnp.bfloat16)
    path = tmp_path_factory.mktemp("bf16") / "flux-bf16.safetensors"
    save_weights(m16, path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _NO_TORCH.format(axes=AXES), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    yield m16, path, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def _header_dtypes(path) -> set[str]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def test_bfloat16_model_saves_bfloat16_tensors(bf16, model):
    m16, path, _ = bf16
    for (p, x), (_, y) in zip(params(m16), params(model), strict=True):
        assert x.dtype == jnp.bfloat16, p
        assert np.asarray(x).tobytes() == np.asarray(y).astype(jnp.bfloat16).tobytes(), p
    assert _header_dtypes(path) == {"BF16"}


def test_bfloat16_loads_as_bfloat16_or_cast(bf16):
    m16, path, _ = bf16
    assert_same_params(load_weights(path, axes_dim=AXES), m16, dtype=jnp.bfloat16)
    as_f32 = load_weights(path, CFG, dtype=jnp.float32)
    for (p, x), (_, y) in zip(params(as_f32), params(m16), strict=True):
        assert x.dtype == jnp.float32, p
        np.testing.assert_array_equal(x, np.asarray(y).astype(np.float32), err_msg=str(p))


# ------------------------------------------------------------------------------------------
# to_bfl / from_tensors / bfl_keys
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ROUND_TRIP_CONFIGS)
def test_round_trip_is_bit_exact(name):
    config = ROUND_TRIP_CONFIGS[name]
    source = random_tensors(config, seed=len(name))
    m = from_tensors(source, config)
    assert m.config == config
    out = to_bfl(m)
    expected_keys = bfl_keys(config)
    assert set(out) == set(expected_keys) == set(source)
    assert ("double_blocks.0.img_attn.qkv.bias" in out) == config.qkv_bias
    assert ("guidance_in.in_layer.weight" in out) == config.guidance_embed
    for key, value in out.items():
        assert value.shape == expected_keys[key], key
        assert np.asarray(value).tobytes() == source[key].tobytes(), key
    assert_same_params(from_tensors(out, config), m, dtype=jnp.float32)
    # The shapes alone give the config back.
    assert infer_config(out, axes_dim=config.axes_dim) == config


def test_from_tensors_places_torch_weights_transposed_per_block():
    config = preset("tiny", qkv_bias=False, depth=2, depth_single_blocks=2)
    source = random_tensors(config, seed=3)
    m = from_tensors(source, config)
    get = lambda param: np.asarray(param[...])  # noqa: E731  (numpy indexing: no compiles)
    np.testing.assert_array_equal(get(m.img_in.kernel), source["img_in.weight"].T)
    np.testing.assert_array_equal(
        get(m.final_layer.adaLN_modulation.layers[1].bias),
        source["final_layer.adaLN_modulation.1.bias"],
    )
    for i in range(2):
        np.testing.assert_array_equal(
            get(m.double_blocks.img_attn.qkv.kernel)[i],
            source[f"double_blocks.{i}.img_attn.qkv.weight"].T,
        )
        np.testing.assert_array_equal(
            get(m.double_blocks.txt_mlp.layers[2].kernel)[i],
            source[f"double_blocks.{i}.txt_mlp.2.weight"].T,
        )
        np.testing.assert_array_equal(
            get(m.single_blocks.norm.key_norm.scale)[i],
            source[f"single_blocks.{i}.norm.key_norm.scale"],
        )
    assert m.double_blocks.img_attn.qkv.bias is None
    assert infer_config(source, axes_dim=config.axes_dim) == config


def test_bfl_keys_of_the_released_models():
    schnell, dev = bfl_keys(preset("schnell")), bfl_keys(preset("dev"))
    assert (len(schnell), len(dev)) == (776, 780)
    assert set(dev) - set(schnell) == {
        f"guidance_in.{layer}.{p}"
        for layer in ("in_layer", "out_layer")
        for p in ("weight", "bias")
    }
    assert dev["img_in.weight"] == (3072, 64)
    assert dev["txt_in.weight"] == (3072, 4096)
    assert dev["double_blocks.18.img_attn.qkv.weight"] == (3 * 3072, 3072)
    assert dev["double_blocks.18.img_mod.lin.weight"] == (6 * 3072, 3072)
    assert dev["single_blocks.37.linear1.weight"] == (3 * 3072 + 4 * 3072, 3072)
    assert dev["single_blocks.37.linear2.weight"] == (3072, 3072 + 4 * 3072)
    assert dev["single_blocks.37.norm.query_norm.scale"] == (128,)
    assert dev["final_layer.adaLN_modulation.1.weight"] == (2 * 3072, 3072)
    assert "double_blocks.19.img_attn.qkv.weight" not in dev
    assert "single_blocks.38.linear1.weight" not in dev

    def count(keys):
        return sum(int(np.prod(s)) for s in keys.values())

    assert round(count(dev) / 1e9, 2) == 11.90 and round(count(schnell) / 1e9, 2) == 11.89


# ------------------------------------------------------------------------------------------
# infer_config
# ------------------------------------------------------------------------------------------
def test_infer_config_needs_axes_dim_unless_head_dim_is_128(tensors):
    assert infer_config(tensors, axes_dim=AXES) == CFG
    with pytest.raises(ValueError, match="axes_dim"):
        infer_config(tensors)
    with pytest.raises(ValueError, match="axes_dim"):
        from_tensors(tensors)
    assert from_tensors(tensors, axes_dim=AXES).config == CFG


@pytest.mark.parametrize("name", ["schnell", "dev"])
def test_infer_config_of_a_head_dim_128_checkpoint(name):
    config = preset(name, hidden_size=256, num_heads=2, depth=1, depth_single_blocks=1)
    zeros = {k: np.broadcast_to(np.float32(0), s) for k, s in bfl_keys(config).items()}
    inferred = infer_config(zeros)
    assert inferred == config
    assert inferred.axes_dim == (16, 56, 56) and inferred.head_dim == 128
    assert inferred.guidance_embed == (name == "dev")
    assert (inferred.in_channels, inferred.vec_in_dim, inferred.context_in_dim) == (64, 768, 4096)


# ------------------------------------------------------------------------------------------
# save_weights + load_weights, every layout
# ------------------------------------------------------------------------------------------
def _save(kind, model, directory):
    if kind == "bfl_file":
        path = directory / "flux1-tiny.safetensors"
        save_weights(model, path)
        with safe_open(str(path), framework="flax") as f:
            assert set(f.keys()) == set(bfl_keys(CFG))
    elif kind == "bfl_prefixed":
        path = directory / "flux1-tiny-prefixed.safetensors"
        checkpoint.write_tensors({convert.PREFIX + k: v for k, v in to_bfl(model).items()}, path)
    elif kind == "diffusers_sharded":
        path = directory / "sharded"
        save_weights(model, path, layout="diffusers", max_shard_bytes=16_000)
    else:  # a diffusers pipeline root
        path = directory / "pipeline"
        save_weights(model, path / "transformer", layout="diffusers", max_shard_bytes=16_000)
        (path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    if kind.startswith("diffusers") or kind == "pipeline":
        shard_dir = path / "transformer" if kind == "pipeline" else path
        shards = sorted(p.name for p in shard_dir.glob("*.safetensors"))
        assert len(shards) >= 3
        index = json.loads((shard_dir / checkpoint.INDEX_NAME).read_text())
        assert set(index["weight_map"].values()) == set(shards)
        assert "transformer_blocks.0.attn.to_q.weight" in index["weight_map"]
        assert "norm_out.linear.weight" in index["weight_map"]
        assert not any(k.startswith("double_blocks") for k in index["weight_map"])
    return path


@pytest.mark.parametrize("kind", ["bfl_file", "bfl_prefixed", "diffusers_sharded", "pipeline"])
def test_save_and_load_give_the_same_model(kind, model, forward, expected, tmp_path):
    path = _save(kind, model, tmp_path)
    loaded = load_weights(path, axes_dim=AXES)
    assert loaded.config == CFG
    assert_same_params(loaded, model, dtype=jnp.float32)
    assert jnp.array_equal(forward(loaded), expected)
    if kind == "bfl_file":  # an explicit config reads the same
        assert_same_params(load_weights(path, CFG), model)


# ------------------------------------------------------------------------------------------
# Errors name the key (never a silent random init)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [None, CFG], ids=["inferred", "explicit"])
def test_missing_tensor_is_named(tensors, tmp_path, config):
    broken = {k: v for k, v in tensors.items() if k != KEY}
    with pytest.raises(ValueError, match="missing 1 tensor") as info:
        load_weights(write(tmp_path, broken), config, axes_dim=AXES)
    assert KEY in str(info.value)


def test_missing_diffusers_tensor_is_named(tensors, tmp_path):
    diffusers = convert.bfl_to_diffusers(tensors)
    del diffusers["transformer_blocks.0.attn.to_k.weight"]
    with pytest.raises(ValueError, match=r"transformer_blocks\.0\.attn\.to_k\.weight"):
        load_weights(write(tmp_path, diffusers), CFG)


def test_unexpected_tensor_is_named(tensors, tmp_path):
    extra = "double_blocks.0.img_attn.lora_up.weight"
    with pytest.raises(ValueError, match="unexpected 1 tensor") as info:
        load_weights(write(tmp_path, {**tensors, extra: np.zeros((2, 2), np.float32)}), CFG)
    assert extra in str(info.value)
    # The same in the diffusers layout (caught by the conversion).
    extra = "transformer_blocks.0.attn.lora_up.weight"
    diffusers = {**convert.bfl_to_diffusers(tensors), extra: np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match="unexpected") as info:
        load_weights(write(tmp_path, diffusers, "d.safetensors"), CFG)
    assert extra in str(info.value)


@pytest.mark.parametrize(
    "key, shape, config",
    [(KEY, (17,), None), ("txt_in.weight", (32, 40), CFG)],
    ids=["inferred", "explicit"],
)
def test_mis_shaped_tensor_is_named_with_both_shapes(tensors, tmp_path, key, shape, config):
    broken = {**tensors, key: np.zeros(shape, np.float32)}
    with pytest.raises(ValueError) as info:
        load_weights(write(tmp_path, broken), config, axes_dim=AXES)
    message = str(info.value)
    assert key in message
    assert str(shape) in message and str(tensors[key].shape) in message


def test_integer_tensor_is_rejected_by_key(tensors, tmp_path):
    """An int32 tensor would load as an int32 parameter and run on truncated weights."""
    broken = {**tensors, KEY: np.round(tensors[KEY] * 10).astype(np.int32)}
    with pytest.raises(ValueError, match=r"floating") as info:
        load_weights(write(tmp_path, broken), CFG)
    assert KEY in str(info.value) and "int32" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_tensor_is_rejected_unless_asked(tensors, tmp_path, bad):
    broken = {**tensors, KEY: tensors[KEY].copy()}
    broken[KEY][3] = bad
    path = write(tmp_path, broken)
    with pytest.raises(ValueError, match=r"non-finite .*1 of 16 values.*check_finite=False") as e:
        load_weights(path, CFG)
    assert KEY in str(e.value)
    with pytest.raises(ValueError, match=KEY.replace(".", r"\.")):
        from_tensors({k: jnp.asarray(v) for k, v in broken.items()}, CFG)  # device arrays too
    loaded = load_weights(path, CFG, check_finite=False)  # the caller opted out
    assert not np.all(np.isfinite(np.asarray(to_bfl(loaded)[KEY])))


def test_wrong_config_names_a_missing_key(bfl_file):
    with pytest.raises(ValueError, match=r"missing .*`double_blocks\.1\."):
        load_weights(bfl_file, CFG.replace(depth=2))
    with pytest.raises(ValueError, match=r"guidance_in\.in_layer\.weight"):
        load_weights(bfl_file, CFG.replace(guidance_embed=False))


@pytest.mark.parametrize("keep", [100, -10], ids=["header", "data"])
def test_truncated_file_is_named(bfl_file, tmp_path, keep):
    data = bfl_file.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError) as info:
        load_weights(path, CFG)
    assert str(path) in str(info.value)


def test_missing_path_unknown_layout_and_bad_config(bfl_file, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path)  # an empty directory
    unrelated = write(tmp_path, {"encoder.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match="layout"):
        load_weights(unrelated)
    with pytest.raises(TypeError, match="FluxConfig"):
        load_weights(bfl_file, {"depth": 1})
    with pytest.raises(TypeError, match="FluxConfig"):
        load_weights(bfl_file, "tiny")


def test_save_rejects_an_unknown_layout(model, tmp_path):
    path = tmp_path / "flux.onnx"
    with pytest.raises(ValueError, match="onnx"):
        save_weights(model, path, layout="onnx")
    assert not path.exists()


# ------------------------------------------------------------------------------------------
# The weights are the file's, not a random init
# ------------------------------------------------------------------------------------------
def test_loading_twice_gives_the_same_weights(model, bfl_file):
    a, b = load_weights(bfl_file, axes_dim=AXES), load_weights(bfl_file, axes_dim=AXES)
    assert_same_params(a, b)
    assert_same_params(a, model)


def test_models_from_other_rngs_seeds_differ(model, forward, expected):
    """So the equalities above are meaningful: other weights give other outputs."""
    inits = [Flux(CFG, rngs=nnx.Rngs(seed)) for seed in (0, 1)]
    kernels = [np.asarray(m.double_blocks.img_attn.qkv.kernel[...]) for m in (*inits, model)]
    assert not np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[0], kernels[2])
    # A model initialised by `Flux` (not by `from_tensors`) round-trips too.
    assert_same_params(from_tensors(to_bfl(inits[1]), CFG), inits[1])
    outputs = [np.asarray(forward(m)) for m in inits]
    assert not np.allclose(outputs[0], outputs[1], atol=1e-3)
    for out in outputs:
        assert not np.allclose(out, expected, atol=1e-3)


def test_load_weights_does_not_import_torch(bf16):
    """Last: collects the fresh interpreter started by the ``bf16`` fixture (asserts inside)."""
    _, _, proc = bf16
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and out.strip() == "ok", err
