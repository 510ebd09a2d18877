"""The Flax CLIP vision tower against transformers' ``CLIPVisionModelWithProjection``.

Tiny random configurations with every weight re-randomised (LayerNorm scales away from 1),
both activations; outputs and input gradients against torch; the public checkpoint layouts
(``save_pretrained`` of the vision model and of a full ``CLIPModel``); the differentiable
preprocessing against PIL's bicubic resize.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from psijax.models import clip  # noqa: E402
from tests.models._torch_oracle import rerandomize  # noqa: E402

CONFIGS = {
    "quick_gelu": clip.CLIP_PRESETS["tiny"],
    "gelu": clip.CLIPVisionConfig(
        hidden_size=24,
        intermediate_size=40,
        projection_dim=12,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    ),
}


def _hf_config(c: clip.CLIPVisionConfig):
    fields = (
        "hidden_size intermediate_size projection_dim num_hidden_layers num_attention_heads "
        "image_size patch_size num_channels hidden_act layer_norm_eps"
    ).split()
    return transformers.CLIPVisionConfig(**{f: getattr(c, f) for f in fields})


def _is_norm(name, p):
    return any(n in name for n in ("layernorm", "layer_norm", "layrnorm"))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request):
    config = CONFIGS[request.param]
    torch.manual_seed(0)
    oracle = transformers.CLIPVisionModelWithProjection(_hf_config(config)).eval()
    rerandomize(oracle, len(request.param), is_scale=_is_norm)
    state = {k: v.detach().numpy().copy() for k, v in oracle.state_dict().items()}
    model = clip.from_tensors(state, config)
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((2, 3, config.image_size, config.image_size)).astype(np.float32)
    return oracle, model, config, pixels


def test_embeddings_and_input_gradients_match_transformers(pair):
    oracle, model, config, pixels = pair
    x = torch.from_numpy(pixels).requires_grad_(True)
    want = oracle(pixel_values=x).image_embeds
    w = np.random.default_rng(1).standard_normal(want.shape).astype(np.float32)
    (want * torch.from_numpy(w)).sum().backward()
    got = jax.jit(lambda p: model(p))(pixels)
    assert got.shape == (2, config.projection_dim) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-4, rtol=1e-4)
    for remat in (False, True):
        grad = jax.grad(lambda p, r=remat: jnp.sum(model(p, remat=r) * w))(pixels)
        np.testing.assert_allclose(grad, x.grad.numpy(), atol=1e-4, rtol=1e-4)
    half = model(pixels, dtype=jnp.bfloat16)
    rel = np.linalg.norm(half - got) / np.linalg.norm(got)
    assert 1e-4 < rel < 3e-2


def test_the_public_layouts_load(pair, tmp_path):
    oracle, model, config, pixels = pair
    oracle.save_pretrained(tmp_path / "vision")
    from_vision = clip.load_clip_vision(tmp_path / "vision")
    assert from_vision.config == config
    # A full CLIPModel: the text tower's tensors are ignored, the vision ones are the same.
    full_config = transformers.CLIPConfig(
        vision_config=_hf_config(config).to_dict(),
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=50,
        ),
        projection_dim=config.projection_dim,
    )
    full = transformers.CLIPModel(full_config).eval()
    full.vision_model.load_state_dict(oracle.vision_model.state_dict())
    full.visual_projection.load_state_dict(oracle.visual_projection.state_dict())
    full.save_pretrained(tmp_path / "full")
    from_full = clip.load_clip_vision(tmp_path / "full")
    want = model(pixels)
    for other in (from_vision, from_full):
        np.testing.assert_array_equal(other(pixels), want)
    back = clip.to_tensors(model)
    for key, value in oracle.state_dict().items():
        if key.endswith("position_ids"):
            continue
        np.testing.assert_array_equal(back[key], value.numpy(), key)


def test_checkpoint_errors_name_the_key(pair, tmp_path):
    _, model, config, _ = pair
    tensors = clip.to_tensors(model)
    del tensors["vision_model.encoder.layers.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"missing 1 tensor.*layers\.1\.mlp\.fc2\.bias"):
        clip.from_tensors(tensors, config)
    tensors = clip.to_tensors(model)
    tensors["vision_model.embeddings.class_embedding"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"class_embedding. has shape"):
        clip.from_tensors(tensors, config)
    lone = tmp_path / "lone.safetensors"
    from psijax.models.flux import checkpoint

    checkpoint.write_tensors(clip.to_tensors(model), lone)
    with pytest.raises(ValueError, match="pass `config`"):
        clip.load_clip_vision(lone)
    np.testing.assert_array_equal(
        clip.load_clip_vision(lone, config)(np.zeros((3, config.image_size, config.image_size))),
        model(np.zeros((3, config.image_size, config.image_size))),
    )
    with pytest.raises(ValueError, match="pixel_values"):
        model(np.zeros((1, 3, config.image_size + 1, config.image_size)))
    with pytest.raises(ValueError, match="hidden_act"):
        clip.CLIPVisionConfig(hidden_act="relu")


def test_preprocess_matches_pil_bicubic_and_clip_normalisation():
    from PIL import Image

    rng = np.random.default_rng(2)
    # A smooth non-square image (a random image has content PIL's and JAX's edge rules see
    # differently only within a pixel of the border).
    h, w = 60, 84
    yy, xx = np.meshgrid(np.linspace(0, 3, h), np.linspace(0, 4, w), indexing="ij")
    image = np.stack([np.sin(yy + c) * np.cos(xx - c) for c in range(3)]).astype(np.float32)
    image += 0.05 * rng.standard_normal(image.shape).astype(np.float32)
    size = 32
    got = np.asarray(clip.preprocess(image, size))
    assert got.shape == (3, size, size)
    # PIL: short side to `size`, the long side int(size · w / h), bicubic (Keys, a = −0.5).
    new_w = int(size * w / h)
    unit = (image + 1) / 2
    resized = np.stack(
        [
            np.asarray(Image.fromarray(unit[c], mode="F").resize((new_w, size), Image.BICUBIC))
            for c in range(3)
        ]
    )
    left = (new_w - size) // 2
    crop = resized[:, :, left : left + size]
    mean = np.asarray(clip.CLIP_MEAN)[:, None, None]
    std = np.asarray(clip.CLIP_STD)[:, None, None]
    want = (crop - mean) / std
    inner = (slice(None), slice(2, -2), slice(2, -2))  # borders: PIL and JAX pad differently
    np.testing.assert_allclose(got[inner], want[inner], atol=2e-3)
    assert np.max(np.abs(got - want)) < 0.1
    # At the model's size only the normalisation is applied.
    square = image[:, :size, :size]
    np.testing.assert_allclose(
        clip.preprocess(square, size), ((square + 1) / 2 - mean) / std, rtol=1e-6, atol=1e-6
    )
