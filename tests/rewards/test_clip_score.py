"""The CLIP-score reward against transformers' ``CLIPModel`` (image and text features)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from psijax.models import clip  # noqa: E402
from psijax.rewards import clip_score_reward  # noqa: E402

CONFIG = clip.CLIP_PRESETS["tiny"]


def _features(out):
    return getattr(out, "pooler_output", out)  # transformers 5: an output object; 4: a tensor


def test_clip_score_matches_transformers(tmp_path):
    fields = (
        "hidden_size intermediate_size projection_dim num_hidden_layers num_attention_heads "
        "image_size patch_size hidden_act layer_norm_eps"
    ).split()
    torch.manual_seed(0)
    model = transformers.CLIPModel(
        transformers.CLIPConfig(
            vision_config={f: getattr(CONFIG, f) for f in fields},
            text_config=dict(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                vocab_size=40,
            ),
            projection_dim=CONFIG.projection_dim,
        )
    ).eval()
    model.save_pretrained(tmp_path / "clip")
    tower = clip.load_clip_vision(tmp_path / "clip")
    ids = torch.tensor([[1, 5, 7, 2]])
    with torch.no_grad():
        text = _features(model.get_text_features(input_ids=ids))[0].numpy()
    size = CONFIG.image_size
    images = np.random.default_rng(0).uniform(-1, 1, (3, 3, size, size)).astype(np.float32)
    x = torch.from_numpy(images).requires_grad_(True)
    mean = torch.tensor(clip.CLIP_MEAN)[:, None, None]
    std = torch.tensor(clip.CLIP_STD)[:, None, None]
    feats = _features(model.get_image_features(pixel_values=((x + 1) / 2 - mean) / std))
    t = torch.from_numpy(text)
    want = 100 * (feats / feats.norm(dim=-1, keepdim=True)) @ (t / t.norm())
    want.sum().backward()
    reward = clip_score_reward(tower, text)
    np.testing.assert_allclose(jax.jit(reward)(images), want.detach().numpy(), atol=1e-3)
    grad = jax.grad(lambda i: jnp.sum(reward(i)))(images)
    np.testing.assert_allclose(grad, x.grad.numpy(), atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="text_embed"):
        clip_score_reward(tower, text[:-1])
