"""The Flax FLUX autoencoder against diffusers' ``AutoencoderKL`` (the torch oracle).

Weights are re-randomised (GroupNorm scales away from 1, non-zero biases) so that a swapped
norm, a wrong shortcut or a mis-numbered decoder level cannot hide. Two configurations, both
with non-square images: FLUX-like (16 latent channels, no quant convolutions) and
Stable-Diffusion-like (4 latent channels, quant convolutions, three levels).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from psijax.models.flux import autoencoder_weights as aw  # noqa: E402
from psijax.models.flux import checkpoint, packing  # noqa: E402
from psijax.models.flux.autoencoder import AutoencoderConfig, AutoencoderKL  # noqa: E402
from tests.models._torch_oracle import rerandomize  # noqa: E402

CONFIGS = {
    "flux_like": (
        AutoencoderConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8),
        (16, 24),
    ),
    "sd_like": (
        AutoencoderConfig(
            latent_channels=4,
            block_out_channels=(16, 32, 32),
            layers_per_block=2,
            norm_num_groups=4,
            use_quant_conv=True,
            use_post_quant_conv=True,
            scaling_factor=0.18215,
            shift_factor=0.0,
        ),
        (24, 16),
    ),
}
BATCH = 2


def _diffusers_kwargs(config: AutoencoderConfig) -> dict:
    kwargs = aw.config_to_diffusers(config)
    kwargs.pop("_class_name")
    return kwargs


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request):
    """(torch oracle, our model, config, (H, W), inputs as numpy) for one configuration."""
    config, (height, width) = CONFIGS[request.param]
    torch.manual_seed(0)
    oracle = diffusers.AutoencoderKL(**_diffusers_kwargs(config)).eval()
    rerandomize(oracle, len(request.param))
    state = {k: v.detach().numpy().copy() for k, v in oracle.state_dict().items()}
    model = aw.from_tensors(state, config)
    rng = np.random.default_rng(3)
    f = config.downsample_factor
    inputs = dict(
        images=rng.uniform(-1, 1, (BATCH, 3, height, width)).astype(np.float32),
        latent=rng.standard_normal((BATCH, config.latent_channels, height // f, width // f)).astype(
            np.float32
        ),
        weights=rng.standard_normal((BATCH, 3, height, width)).astype(np.float32),
    )
    return oracle, model, config, (height, width), inputs


def _torch_decode(oracle, latent):
    latent = latent if isinstance(latent, torch.Tensor) else torch.from_numpy(latent)
    return oracle.decode(latent, return_dict=False)[0]


def _rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_fp32_decode_and_encode_match_diffusers(pair):
    oracle, model, _, _, inputs = pair
    with torch.no_grad():
        want = _torch_decode(oracle, inputs["latent"]).numpy()
        dist = oracle.encode(torch.from_numpy(inputs["images"])).latent_dist
    got = jax.jit(lambda z: model.decode(z))(inputs["latent"])
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    mean, logvar = jax.jit(lambda x: model.encode(x))(inputs["images"])
    np.testing.assert_allclose(mean, dist.mean.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logvar, dist.logvar.numpy(), atol=1e-4, rtol=1e-4)


def test_bf16_is_close_to_fp32(pair):
    _, model, _, _, inputs = pair
    for run in (
        lambda dt: model.decode(inputs["latent"], dtype=dt),
        lambda dt: model.encode(inputs["images"], dtype=dt)[0],
    ):
        full, half = run(jnp.float32), run(jnp.bfloat16)
        assert half.dtype == jnp.float32  # the output is float32 whatever the compute dtype
        assert 1e-4 < _rel_l2(half, full) < 3e-2  # bf16 really ran, and stayed close


def test_decoder_gradient_matches_torch_autograd(pair):
    oracle, model, _, _, inputs = pair
    z = torch.from_numpy(inputs["latent"]).requires_grad_(True)
    (_torch_decode(oracle, z) * torch.from_numpy(inputs["weights"])).sum().backward()

    def scalar(latent, remat):
        return jnp.sum(model.decode(latent, remat=remat) * inputs["weights"])

    for remat in (False, True):
        grad = jax.jit(jax.grad(lambda x, r=remat: scalar(x, r)))(inputs["latent"])
        np.testing.assert_allclose(grad, z.grad.numpy(), atol=2e-4, rtol=2e-4)


def test_encoder_gradient_matches_torch_autograd(pair):
    oracle, model, config, _, inputs = pair
    x = torch.from_numpy(inputs["images"]).requires_grad_(True)
    w = np.random.default_rng(5).standard_normal(inputs["latent"].shape).astype(np.float32)
    (oracle.encode(x).latent_dist.mean * torch.from_numpy(w)).sum().backward()
    grad = jax.grad(lambda i: jnp.sum(model.encode(i, remat=True)[0] * w))(inputs["images"])
    np.testing.assert_allclose(grad, x.grad.numpy(), atol=2e-4, rtol=2e-4)


def test_both_layouts_and_a_pipeline_root_load_to_the_same_model(pair, tmp_path):
    oracle, model, config, _, inputs = pair
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    # diffusers' own folder (save_pretrained: config.json + weights) loads without a config.
    vae_dir = tmp_path / "pipe" / "vae"
    oracle.save_pretrained(vae_dir, safe_serialization=True)
    from_diffusers = aw.load_autoencoder(vae_dir)
    assert from_diffusers.config == config
    from_root = aw.load_autoencoder(tmp_path / "pipe")
    # BFL's single file, checked against diffusers' own reading of that layout.
    bfl_file = tmp_path / "ae.safetensors"
    aw.save_autoencoder(model, bfl_file)
    bfl = checkpoint.read_tensors(bfl_file, host=True)
    back = convert_ldm_vae_checkpoint(bfl, _diffusers_kwargs(config))
    assert set(back) == set(oracle.state_dict())
    for key, value in oracle.state_dict().items():
        np.testing.assert_array_equal(np.reshape(back[key], value.shape), value.numpy(), key)
    assert aw.load_autoencoder(bfl_file).config == config  # the config kept in the metadata
    # BFL's own file has no metadata: the config then comes from the shapes.
    bare = tmp_path / "bare.safetensors"
    checkpoint.write_tensors(bfl, bare)
    if config.latent_channels == 16:
        from_bfl = aw.load_autoencoder(bare, norm_num_groups=config.norm_num_groups)
        assert from_bfl.config == config
    else:  # the normalisation is not in the tensors: it must be given
        with pytest.raises(ValueError, match="scaling_factor"):
            aw.load_autoencoder(bare, norm_num_groups=config.norm_num_groups)
        from_bfl = aw.load_autoencoder(bare, config)
    prefixed = tmp_path / "prefixed.safetensors"
    checkpoint.write_tensors({"vae." + k: v for k, v in bfl.items()}, prefixed)
    from_prefixed = aw.load_autoencoder(prefixed, config)
    want = model.decode(inputs["latent"])
    for other in (from_diffusers, from_root, from_bfl, from_prefixed):
        np.testing.assert_array_equal(other.decode(inputs["latent"]), want)


def test_saved_diffusers_folder_round_trips_and_diffusers_reads_it(pair, tmp_path):
    oracle, model, config, _, inputs = pair
    written = aw.save_autoencoder(model, tmp_path / "vae", layout="diffusers")
    assert [os.path.basename(p) for p in written] == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    reread = diffusers.AutoencoderKL.from_pretrained(tmp_path / "vae").eval()
    for key, value in oracle.state_dict().items():
        np.testing.assert_array_equal(reread.state_dict()[key].numpy(), value.numpy(), key)
    again = aw.to_bfl(aw.load_autoencoder(tmp_path / "vae"))
    for key, value in aw.to_bfl(model).items():
        np.testing.assert_array_equal(again[key], value, key)


def test_bfloat16_parameters_load_and_run(pair):
    _, model, config, _, inputs = pair
    half = aw.from_tensors(aw.to_bfl(model), config, dtype=jnp.bfloat16)
    assert all(
        v.dtype == jnp.bfloat16
        for v in jax.tree_util.tree_leaves(
            jax.tree_util.tree_map(lambda x: x, __import__("flax").nnx.state(half))
        )
    )
    out = half.decode(inputs["latent"], dtype=jnp.bfloat16)
    assert _rel_l2(out, model.decode(inputs["latent"])) < 3e-2


# ----------------------------------------------------------------------------------------------
# Errors: named keys and arguments, before anything runs
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flux_like():
    config = CONFIGS["flux_like"][0]
    model = AutoencoderKL(config, rngs=__import__("flax").nnx.Rngs(0))
    return model, aw.to_bfl(model)


def test_mismatched_tensors_are_named(flux_like):
    model, tensors = flux_like
    config = model.config
    missing = dict(tensors)
    del missing["decoder.up.0.block.1.conv2.weight"]
    with pytest.raises(ValueError, match=r"missing 1 tensor.*decoder\.up\.0\.block\.1\.conv2"):
        aw.from_tensors(missing, config)
    extra = dict(tensors, **{"decoder.up.0.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"unexpected 1 tensor.*decoder\.up\.0\.extra"):
        aw.from_tensors(extra, config)
    wrong = dict(tensors)
    wrong["encoder.mid.attn_1.q.weight"] = np.zeros((64, 32, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"encoder\.mid\.attn_1\.q\.weight. has shape"):
        aw.from_tensors(wrong, config)
    nan = dict(tensors)
    nan["decoder.conv_out.bias"] = np.full(3, np.nan, np.float32)
    with pytest.raises(ValueError, match=r"non-finite.*decoder\.conv_out\.bias"):
        aw.from_tensors(nan, config)
    integer = dict(tensors)
    integer["decoder.conv_out.bias"] = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match=r"decoder\.conv_out\.bias. is int32"):
        aw.from_tensors(integer, config)
    with pytest.raises(ValueError, match="Not an autoencoder checkpoint"):
        aw.from_tensors({"img_in.weight": np.zeros((2, 2), np.float32)})
    unknown = aw.bfl_to_diffusers(tensors)
    unknown["decoder.up_blocks.0.resnets.0.time_emb_proj.weight"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="time_emb_proj"):
        aw.from_tensors(unknown, config)
    with pytest.raises(TypeError, match="config"):
        aw.from_tensors(tensors, {"block_out_channels": (32, 64)})


def test_bad_files_and_configs_are_clear_errors(flux_like, tmp_path):
    model, tensors = flux_like
    path = tmp_path / "ae.safetensors"
    aw.save_autoencoder(model, path)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a valid safetensors"):
        aw.load_autoencoder(truncated)
    with pytest.raises(FileNotFoundError, match="No such autoencoder"):
        aw.load_autoencoder(tmp_path / "nowhere")
    # Without a stored config, the shapes cannot tell 8 groups from 32 (the default).
    bare = tmp_path / "bare.safetensors"
    checkpoint.write_tensors(tensors, bare)
    assert aw.load_autoencoder(bare).config.norm_num_groups == 32
    assert aw.load_autoencoder(bare, norm_num_groups=8).config == model.config
    with pytest.raises(ValueError, match="norm_num_groups"):  # 64 is not divisible by 48
        aw.load_autoencoder(bare, norm_num_groups=48)
    folder = tmp_path / "vae"
    aw.save_autoencoder(model, folder, layout="diffusers")
    config = json.loads((folder / "config.json").read_text())
    for field, value in (("act_fn", "relu"), ("latents_mean", [0.0] * 16)):
        (folder / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(ValueError, match=field):
            aw.load_autoencoder(folder)
    with pytest.raises(ValueError, match="layout"):
        aw.save_autoencoder(model, tmp_path / "x", layout="comfy")
    with pytest.raises(ValueError, match="must end in .safetensors"):
        aw.save_autoencoder(model, tmp_path / "x")


def test_bad_arguments_are_named(flux_like):
    model, _ = flux_like
    with pytest.raises(ValueError, match=r"`latent` must have shape \(\.\.\., 16, H, W\)"):
        model.decode(jnp.zeros((1, 4, 8, 8)))
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(jnp.zeros((1, 3, 9, 8)))
    with pytest.raises(TypeError, match="floating"):
        model.decode(jnp.zeros((1, 16, 4, 4), jnp.int32))
    with pytest.raises(ValueError, match="dtype"):
        model.decode(jnp.zeros((1, 16, 4, 4)), dtype=jnp.int8)
    with pytest.raises(ValueError, match="norm_num_groups"):
        AutoencoderConfig(block_out_channels=(30, 64), norm_num_groups=8)
    with pytest.raises(ValueError, match="scaling_factor"):
        AutoencoderConfig(scaling_factor=0.0)


def test_decode_tokens_unpacks_and_denormalizes(flux_like):
    model, _ = flux_like
    z = jax.random.normal(jax.random.key(1), (2, 16, 4, 6))
    tokens = packing.pack(model.normalize(z))
    assert tokens.shape == (2, 6, 64)
    got = model.decode_tokens(tokens, 8, 12)  # factor 2 here; FLUX's is 8
    np.testing.assert_allclose(got, model.decode(z), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(model.denormalize(model.normalize(z)), z, atol=1e-5)
    with pytest.raises(ValueError, match="image_height"):
        model.decode_tokens(tokens, 10, 12)


def test_leading_axes_and_vmap_agree(flux_like):
    model, _ = flux_like
    z = jax.random.normal(jax.random.key(0), (2, 3, 16, 4, 6))
    batched = model.decode(z)
    assert batched.shape == (2, 3, 3, 8, 12)
    mapped = jax.vmap(model.decode)(z)
    np.testing.assert_allclose(mapped, batched, atol=1e-5, rtol=1e-5)
