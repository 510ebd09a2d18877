"""LAION's aesthetic reward: the head against its torch layout, the whole reward against
transformers' CLIP + the torch head (values and image gradients), and the pure-function form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from psijax.models import clip  # noqa: E402
from psijax.models.flux import checkpoint  # noqa: E402
from psijax.rewards import aesthetic  # noqa: E402

CONFIG = clip.CLIP_PRESETS["tiny"]


def _torch_head(input_size: int, seed: int):
    torch.manual_seed(seed)
    nn = torch.nn
    w = (input_size, *aesthetic.HEAD_WIDTHS)
    # LAION's nn.Sequential: Linear, Dropout(0.2), Linear, Dropout(0.2), Linear, Dropout(0.1),
    # Linear, Linear.
    head = nn.Sequential(
        nn.Linear(w[0], w[1]),
        nn.Dropout(0.2),
        nn.Linear(w[1], w[2]),
        nn.Dropout(0.2),
        nn.Linear(w[2], w[3]),
        nn.Dropout(0.1),
        nn.Linear(w[3], w[4]),
        nn.Linear(w[4], w[5]),
    )
    return head.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(0)
    hf = transformers.CLIPVisionConfig(
        **{
            f: getattr(CONFIG, f)
            for f in (
                "hidden_size intermediate_size projection_dim num_hidden_layers "
                "num_attention_heads image_size patch_size hidden_act layer_norm_eps"
            ).split()
        }
    )
    tower = transformers.CLIPVisionModelWithProjection(hf).eval()
    head = _torch_head(CONFIG.projection_dim, seed=1)
    torch.save({"layers." + k: v for k, v in head.state_dict().items()}, tmp / "head.pth")
    checkpoint.write_tensors(
        {"layers." + k: v.numpy() for k, v in head.state_dict().items()}, tmp / "head.safetensors"
    )
    tower.save_pretrained(tmp / "clip")
    ours = clip.load_clip_vision(tmp / "clip")
    return tower, head, ours, tmp


def test_head_loads_from_pth_and_safetensors_and_matches_torch(models):
    _, head, _, tmp = models
    emb = np.random.default_rng(0).standard_normal((5, CONFIG.projection_dim)).astype(np.float32)
    x = torch.from_numpy(emb)
    with torch.no_grad():
        want = head(x / x.norm(dim=-1, keepdim=True))[:, 0].numpy()
    for name in ("head.pth", "head.safetensors"):
        ours = aesthetic.load_aesthetic_head(tmp / name)
        np.testing.assert_allclose(ours(emb), want, atol=1e-5, rtol=1e-5)
    again = aesthetic.aesthetic_head_tensors(ours)
    for key, value in head.state_dict().items():
        np.testing.assert_array_equal(again["layers." + key], value.numpy())


def test_reward_and_its_image_gradient_match_torch(models):
    tower, head, ours, tmp = models
    ours_head = aesthetic.load_aesthetic_head(tmp / "head.safetensors")
    rng = np.random.default_rng(1)
    size = CONFIG.image_size
    images = rng.uniform(-1, 1, (3, 3, size, size)).astype(np.float32)
    x = torch.from_numpy(images).requires_grad_(True)
    mean = torch.tensor(clip.CLIP_MEAN)[:, None, None]
    std = torch.tensor(clip.CLIP_STD)[:, None, None]
    emb = tower(pixel_values=((x + 1) / 2 - mean) / std).image_embeds
    want = head(emb / emb.norm(dim=-1, keepdim=True))[:, 0]
    want.sum().backward()
    reward = aesthetic.aesthetic_reward(ours, ours_head)
    got = jax.jit(lambda r, i: r(i))(reward, images)
    np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-4, rtol=1e-4)
    grad = jax.grad(lambda i: jnp.sum(reward(i)))(images)
    np.testing.assert_allclose(grad, x.grad.numpy(), atol=1e-4, rtol=1e-4)
    # One image at a time under vmap, and a non-square image bigger than CLIP's input.
    np.testing.assert_allclose(jax.jit(jax.vmap(reward))(images), got, atol=1e-5, rtol=1e-5)
    wide = rng.uniform(-1, 1, (2, 3, 2 * size, 3 * size)).astype(np.float32)
    assert reward(wide).shape == (2,)


def test_a_nan_image_scores_nan_not_a_number(models):
    _, _, ours, tmp = models
    reward = aesthetic.aesthetic_reward(ours, aesthetic.load_aesthetic_head(tmp / "head.pth"))
    images = np.zeros((2, 3, CONFIG.image_size, CONFIG.image_size), np.float32)
    images[1, 0, 3, 3] = np.nan
    scores = np.asarray(reward(images))
    assert np.isfinite(scores[0]) and np.isnan(scores[1])


def test_mismatched_parts_are_refused(models, tmp_path):
    _, _, ours, tmp = models
    with pytest.raises(ValueError, match="wide embeddings"):
        aesthetic.aesthetic_reward(
            ours, aesthetic.AestheticHead(8, rngs=__import__("flax").nnx.Rngs(0))
        )
    bad = tmp_path / "bad.safetensors"
    checkpoint.write_tensors({"fc.weight": np.zeros((2, 2), np.float32)}, bad)
    with pytest.raises(ValueError, match="not LAION's aesthetic head"):
        aesthetic.load_aesthetic_head(bad)
    tensors = checkpoint.read_tensors(tmp / "head.safetensors", host=True)
    del tensors["layers.7.bias"]
    checkpoint.write_tensors(tensors, bad)
    with pytest.raises(ValueError, match=r"missing 1 tensor.*layers\.7\.bias"):
        aesthetic.load_aesthetic_head(bad)
