"""BFL <-> diffusers FLUX checkpoint conversion on tiny diffusers transformers.

Conversion moves values without arithmetic, so every comparison is exact (bitwise, dtype
included) except the torch check of the final layer's (shift, scale) order, which recomputes
a LayerNorm modulation in float32 two ways (tolerance 1e-5 for float32 round-off).
"""

import functools

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from psijax.models.flux import convert
from psijax.models.flux.convert import (
    BFL,
    DIFFUSERS,
    PREFIX,
    bfl_to_diffusers,
    detect_layout,
    diffusers_to_bfl,
    strip_prefix,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

HIDDEN = 32  # 2 heads of 16


@functools.cache
def tiny_model(guidance: bool = True, num_double: int = 2, num_single: int = 2):
    """A tiny ``FluxTransformer2DModel`` with every parameter re-randomized (fixed seed)."""
    torch.manual_seed(0)
    model = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=num_double,
        num_single_layers=num_single,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),
        guidance_embeds=guidance,
    )
    # Default norm scales are all ones and biases zeros: a swapped q/k norm or a misplaced
    # bias would go unnoticed. Matrices ~ N(0, 1/fan_in), norm scales 1 + 0.2 N, biases 0.1 N.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return model.eval()


def tiny_state(guidance: bool = True, num_double: int = 2, num_single: int = 2):
    """The tiny model's state dict as float32 numpy arrays (a fresh dict each call)."""
    model = tiny_model(guidance, num_double, num_single)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def expected_bfl_keys(num_double: int, num_single: int, guidance: bool) -> set[str]:
    """The BFL tensor names of a FLUX transformer, listed from BFL's module structure."""

    def linear(module):
        return [f"{module}.weight", f"{module}.bias"]

    keys = linear("img_in") + linear("txt_in")
    for embedder in ["time_in", "vector_in"] + (["guidance_in"] if guidance else []):
        keys += linear(f"{embedder}.in_layer") + linear(f"{embedder}.out_layer")
    for i in range(num_double):
        for stream in ("img", "txt"):
            b = f"double_blocks.{i}.{stream}"
            keys += linear(f"{b}_mod.lin") + linear(f"{b}_attn.qkv") + linear(f"{b}_attn.proj")
            keys += linear(f"{b}_mlp.0") + linear(f"{b}_mlp.2")
            keys += [f"{b}_attn.norm.query_norm.scale", f"{b}_attn.norm.key_norm.scale"]
    for i in range(num_single):
        b = f"single_blocks.{i}"
        keys += linear(f"{b}.linear1") + linear(f"{b}.linear2") + linear(f"{b}.modulation.lin")
        keys += [f"{b}.norm.query_norm.scale", f"{b}.norm.key_norm.scale"]
    keys += linear("final_layer.adaLN_modulation.1") + linear("final_layer.linear")
    assert len(keys) == len(set(keys))
    return set(keys)


def assert_bitwise_equal(a, b, name=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, name
    assert a.tobytes() == b.tobytes(), name


# ----------------------------------------------------------------------------------------------
# Layout detection and prefix
# ----------------------------------------------------------------------------------------------
def test_expected_key_counts_match_the_published_checkpoints():
    assert len(expected_bfl_keys(19, 38, guidance=True)) == 780  # flux1-dev
    assert len(expected_bfl_keys(19, 38, guidance=False)) == 776  # flux1-schnell


@pytest.mark.parametrize("guidance", [True, False])
def test_detect_layout(guidance):
    state = tiny_state(guidance)
    assert detect_layout(state) == DIFFUSERS
    assert detect_layout(diffusers_to_bfl(state).keys()) == BFL
    assert detect_layout(["img_in.weight", "single_blocks.0.linear1.weight"]) == BFL
    assert detect_layout(["x_embedder.weight"]) == DIFFUSERS


def test_detect_layout_errors():
    with pytest.raises(ValueError, match=r"double_blocks\.0\.img_attn\.qkv\.weight.*'foo\.bar'"):
        detect_layout(["foo.bar", "baz"])
    with pytest.raises(ValueError, match="strip_prefix"):
        detect_layout([PREFIX + "img_in.weight"])
    with pytest.raises(ValueError, match="both"):
        detect_layout(["img_in.weight", "x_embedder.weight"])


def test_strip_prefix():
    plain = {"img_in.weight": np.zeros(2), "img_in.bias": np.ones(2)}
    prefixed = {PREFIX + k: v for k, v in plain.items()}
    assert strip_prefix(prefixed).keys() == plain.keys()
    assert strip_prefix(prefixed)["img_in.bias"] is plain["img_in.bias"]
    assert strip_prefix(plain) == plain
    mixed = {PREFIX + "img_in.weight": np.zeros(2), "img_in.bias": np.ones(2)}
    with pytest.raises(ValueError, match=r"model\.diffusion_model\.img_in\.weight.*'img_in\.bias'"):
        strip_prefix(mixed)


# ----------------------------------------------------------------------------------------------
# Round trip and values
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "guidance, num_double, num_single", [(True, 2, 2), (False, 2, 2), (True, 0, 1), (False, 1, 0)]
)
def test_round_trip_is_exact_and_complete(guidance, num_double, num_single):
    state = tiny_state(guidance, num_double, num_single)
    assert len(state) == 16 + 4 * guidance + 32 * num_double + 14 * num_single
    bfl = diffusers_to_bfl(state)
    assert set(bfl) == expected_bfl_keys(num_double, num_single, guidance)
    back = bfl_to_diffusers(bfl)
    assert set(back) == set(state)
    for k in state:
        assert_bitwise_equal(back[k], state[k], k)
    assert isinstance(bfl["img_in.weight"], np.ndarray)


def test_fused_tensors_are_row_concatenations():
    state = tiny_state()
    bfl = diffusers_to_bfl(state)
    for p in ("weight", "bias"):
        for i in range(2):
            d, s = f"transformer_blocks.{i}.attn.", f"single_transformer_blocks.{i}."
            img = [state[f"{d}to_{x}.{p}"] for x in "qkv"]
            txt = [state[f"{d}add_{x}_proj.{p}"] for x in "qkv"]
            single = [state[f"{s}attn.to_{x}.{p}"] for x in "qkv"] + [state[f"{s}proj_mlp.{p}"]]
            assert_bitwise_equal(bfl[f"double_blocks.{i}.img_attn.qkv.{p}"], np.concatenate(img))
            assert_bitwise_equal(bfl[f"double_blocks.{i}.txt_attn.qkv.{p}"], np.concatenate(txt))
            assert_bitwise_equal(bfl[f"single_blocks.{i}.linear1.{p}"], np.concatenate(single))
    assert bfl["single_blocks.0.linear1.weight"].shape == (3 * HIDDEN + 4 * HIDDEN, HIDDEN)
    # Norms are not interchangeable (re-randomized): check a few against their sources.
    pairs = {
        "double_blocks.1.img_attn.norm.key_norm.scale": "transformer_blocks.1.attn.norm_k.weight",
        "double_blocks.1.txt_attn.norm.query_norm.scale": (
            "transformer_blocks.1.attn.norm_added_q.weight"
        ),
        "single_blocks.1.norm.query_norm.scale": "single_transformer_blocks.1.attn.norm_q.weight",
        "double_blocks.0.txt_attn.proj.weight": "transformer_blocks.0.attn.to_add_out.weight",
        "double_blocks.0.txt_mlp.2.bias": "transformer_blocks.0.ff_context.net.2.bias",
        "guidance_in.out_layer.weight": "time_text_embed.guidance_embedder.linear_2.weight",
        "vector_in.in_layer.bias": "time_text_embed.text_embedder.linear_1.bias",
    }
    for b, d in pairs.items():
        assert_bitwise_equal(bfl[b], state[d], b)


def test_final_layer_halves_are_swapped():
    state = tiny_state()
    bfl = diffusers_to_bfl(state)
    for p in ("weight", "bias"):
        scale, shift = np.split(state[f"norm_out.linear.{p}"], 2)
        expected = np.concatenate([shift, scale])
        assert_bitwise_equal(bfl[f"final_layer.adaLN_modulation.1.{p}"], expected)


def test_final_layer_matches_diffusers_norm_out():
    """BFL's last layer, ``(1 + scale)·LN(x) + shift`` with ``shift, scale = split(W silu(vec)
    + b)``, run on the converted weights reproduces diffusers' ``norm_out``."""
    model = tiny_model()
    bfl = diffusers_to_bfl(tiny_state())
    weight = torch.from_numpy(bfl["final_layer.adaLN_modulation.1.weight"])
    bias = torch.from_numpy(bfl["final_layer.adaLN_modulation.1.bias"])
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, HIDDEN, generator=gen)
    vec = torch.randn(2, HIDDEN, generator=gen)
    with torch.no_grad():
        expected = model.norm_out(x, vec)
        shift, scale = torch.chunk(torch.nn.functional.silu(vec) @ weight.T + bias, 2, dim=-1)
        normed = torch.nn.functional.layer_norm(x, (HIDDEN,), eps=1e-6)
        ours = (1 + scale[:, None]) * normed + shift[:, None]
        swapped = (1 + shift[:, None]) * normed + scale[:, None]
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)
    assert not np.allclose(swapped.numpy(), expected.numpy(), atol=1e-2)  # the test can fail


@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_bfloat16_and_array_kind_are_kept(kind):
    state = {k: v.astype(ml_dtypes.bfloat16) for k, v in tiny_state().items()}
    if kind == "jax":
        state = {k: jnp.asarray(v) for k, v in state.items()}
    bfl = diffusers_to_bfl(state)
    back = bfl_to_diffusers(bfl)
    array_type = np.ndarray if kind == "numpy" else jnp.ndarray
    for tensors in (bfl, back):
        for k, v in tensors.items():
            assert isinstance(v, array_type), k
            assert v.dtype == jnp.bfloat16, k
    for k in state:
        assert_bitwise_equal(back[k], state[k], k)


def test_convert_helper():
    state = tiny_state(guidance=False)
    prefixed = {PREFIX + k: v for k, v in diffusers_to_bfl(state).items()}
    back = convert.convert(prefixed, DIFFUSERS)
    assert set(back) == set(state)
    assert set(convert.convert(state)) == expected_bfl_keys(2, 2, guidance=False)
    assert convert.convert(back, DIFFUSERS).keys() == back.keys()
    with pytest.raises(ValueError, match="`layout`"):
        convert.convert(state, "comfy")


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------
def test_unexpected_key_is_reported():
    state = tiny_state()
    state["transformer_blocks.0.attn.lora_A.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"1 unexpected.*transformer_blocks\.0\.attn\.lora_A"):
        diffusers_to_bfl(state)
    bfl = diffusers_to_bfl(tiny_state())
    bfl["double_blocks.0.img_attn.qkv.extra"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"double_blocks\.0\.img_attn\.qkv\.extra"):
        bfl_to_diffusers(bfl)
    prefixed = {PREFIX + k: v for k, v in tiny_state().items()}
    with pytest.raises(ValueError, match="strip_prefix"):
        diffusers_to_bfl(prefixed)


def test_incomplete_group_names_the_missing_key():
    state = tiny_state()
    del state["transformer_blocks.1.attn.to_v.weight"]
    with pytest.raises(ValueError, match=r"'transformer_blocks\.1\.attn\.to_v\.weight'"):
        diffusers_to_bfl(state)
    state = tiny_state()
    del state["single_transformer_blocks.0.proj_mlp.bias"]
    with pytest.raises(ValueError, match=r"single_transformer_blocks\.0\.proj_mlp\.bias"):
        diffusers_to_bfl(state)
    bfl = diffusers_to_bfl(tiny_state())
    del bfl["single_blocks.1.linear2.weight"]
    with pytest.raises(ValueError, match=r"single_blocks\.1\.linear2\.weight"):
        bfl_to_diffusers(bfl)


def test_mismatched_shapes_and_dtypes_are_reported():
    state = tiny_state()
    state["transformer_blocks.0.attn.to_k.weight"] = np.zeros((HIDDEN, 8), np.float32)
    with pytest.raises(ValueError, match=r"shapes.*transformer_blocks\.0\.attn\.to_k\.weight"):
        diffusers_to_bfl(state)
    state = tiny_state()
    state["single_transformer_blocks.0.proj_mlp.bias"] = np.zeros(7, np.float64)
    with pytest.raises(ValueError, match=r"dtypes.*proj_mlp\.bias"):
        diffusers_to_bfl(state)
    bfl = diffusers_to_bfl(tiny_state())
    bfl["single_blocks.0.linear1.bias"] = bfl["single_blocks.0.linear1.bias"][:-1]
    with pytest.raises(ValueError, match=r"single_blocks\.0\.linear1\.bias.*rows"):
        bfl_to_diffusers(bfl)
    bfl = diffusers_to_bfl(tiny_state())
    bfl["double_blocks.0.img_attn.qkv.bias"] = bfl["double_blocks.0.img_attn.qkv.bias"][:-1]
    with pytest.raises(ValueError, match=r"double_blocks\.0\.img_attn\.qkv\.bias.*multiple of 3"):
        bfl_to_diffusers(bfl)


def test_gap_in_block_indices_is_reported():
    state = {k: v for k, v in tiny_state().items() if not k.startswith("transformer_blocks.0.")}
    with pytest.raises(ValueError, match=r"transformer_blocks\.0\b"):
        diffusers_to_bfl(state)
    bfl = diffusers_to_bfl(tiny_state())
    bfl = {k: v for k, v in bfl.items() if not k.startswith("single_blocks.0.")}
    with pytest.raises(ValueError, match=r"single_blocks\.0\b"):
        bfl_to_diffusers(bfl)


def test_bad_arguments():
    with pytest.raises(TypeError, match="`tensors`"):
        diffusers_to_bfl([("x_embedder.weight", np.zeros((2, 2)))])
    with pytest.raises(TypeError, match="keys must be str"):
        bfl_to_diffusers({0: np.zeros(2)})
