"""Parity of the Flax FLUX port with diffusers' ``FluxTransformer2DModel`` (the torch oracle).

Every weight is re-randomized (norm scales away from 1, non-zero biases) so that a swapped
q/k norm, a wrong (shift, scale) order or a wrong split cannot hide. Batch 2, a non-square
8×6 token grid, random times, random float ids; guidance on and off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from psijax.models.flux import FluxOptions, from_tensors, preset, scale_time  # noqa: E402
from tests.models._torch_oracle import rerandomize  # noqa: E402

# diffusers' own unit-test configuration, and the benchmark model.
CONFIGS = {"tiny": preset("tiny"), "tiny64": preset("tiny64")}
B, H, W, LT = 2, 8, 6, 7


@pytest.fixture(
    scope="module",
    params=[(n, g) for n in CONFIGS for g in (False, True)],
    ids=lambda p: f"{p[0]}-{'guidance' if p[1] else 'no_guidance'}",
)
def pair(request):
    """(torch model, our model, inputs as numpy) for one configuration."""
    name, guidance = request.param
    config = CONFIGS[name].replace(guidance_embed=guidance)
    torch.manual_seed(0)
    oracle = diffusers.FluxTransformer2DModel(**config.to_diffusers()).eval()
    rerandomize(oracle, len(name) + guidance)
    state = {k: v.detach().numpy().copy() for k, v in oracle.state_dict().items()}
    model = from_tensors(state, config)

    rng = np.random.default_rng(7)
    c = config.in_channels
    inputs = dict(
        img=rng.standard_normal((B, H * W, c), dtype=np.float32),
        txt=rng.standard_normal((B, LT, config.context_in_dim), dtype=np.float32),
        y=rng.standard_normal((B, config.vec_in_dim), dtype=np.float32),
        img_ids=(rng.uniform(0, 8, (H * W, 3))).astype(np.float32),
        txt_ids=(rng.uniform(0, 2, (LT, 3))).astype(np.float32),
        t=rng.uniform(0.05, 0.95, (B,)).astype(np.float32),
        guidance=np.full((B,), 3.5, np.float32) if guidance else None,
        weights=rng.standard_normal((B, H * W, c), dtype=np.float32),
    )
    return oracle, model, inputs


def _torch_forward(oracle, x, inputs):
    g = inputs["guidance"]
    return oracle(
        hidden_states=x,
        encoder_hidden_states=torch.from_numpy(inputs["txt"]),
        pooled_projections=torch.from_numpy(inputs["y"]),
        timestep=torch.from_numpy(inputs["t"]),
        img_ids=torch.from_numpy(inputs["img_ids"]),
        txt_ids=torch.from_numpy(inputs["txt_ids"]),
        guidance=None if g is None else torch.from_numpy(g),
        return_dict=False,
    )[0]


def _ours(model, inputs, options=None, img=None):
    i = inputs
    img = i["img"] if img is None else img
    options = FluxOptions() if options is None else options
    return model(
        img, i["img_ids"], i["txt"], i["txt_ids"], i["t"], i["y"], i["guidance"], options=options
    )


def _rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _expected(oracle, inputs):
    with torch.no_grad():
        return _torch_forward(oracle, torch.from_numpy(inputs["img"]), inputs).numpy()


def test_fp32_reference_and_fast_paths_match_diffusers(pair):
    oracle, model, inputs = pair
    expected = _expected(oracle, inputs)
    with jax.default_matmul_precision("highest"):
        ref, fast, dpa = jax.jit(
            lambda: (
                _ours(model, inputs, FluxOptions(path="reference")),
                _ours(model, inputs),
                _ours(model, inputs, FluxOptions(attention="xla")),
            )
        )()
    assert ref.dtype == fast.dtype == jnp.float32
    np.testing.assert_allclose(ref, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fast, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fast, ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dpa, ref, atol=1e-5, rtol=1e-5)
    # The outputs are not degenerate: they vary over tokens and samples by O(1).
    assert np.std(expected) > 0.1


def test_bf16_fast_path_is_close_to_the_fp32_oracle(pair):
    oracle, model, inputs = pair
    expected = _expected(oracle, inputs)
    out = jax.jit(lambda: _ours(model, inputs, FluxOptions(dtype=jnp.bfloat16)))()
    assert out.dtype == jnp.float32
    error = _rel_l2(out, expected)
    # bf16 is exercised (not silently float32) and within the gate.
    assert 1e-4 < error < 3e-2


@pytest.mark.parametrize(
    "pair", [("tiny", False), ("tiny64", True)], indirect=True, ids=["tiny", "tiny64-guidance"]
)
def test_input_gradient_matches_torch_autograd(pair):
    oracle, model, inputs = pair
    x = torch.from_numpy(inputs["img"]).requires_grad_(True)
    (_torch_forward(oracle, x, inputs) * torch.from_numpy(inputs["weights"])).sum().backward()
    expected = x.grad.numpy()

    def grad(options):
        def scalar(img):
            return jnp.sum(_ours(model, inputs, options, img=img) * inputs["weights"])

        return jax.grad(scalar)(inputs["img"])

    with jax.default_matmul_precision("highest"):
        ref, fast, remat, dpa = jax.jit(
            lambda: tuple(
                grad(o)
                for o in (
                    FluxOptions(path="reference"),
                    FluxOptions(),
                    FluxOptions(remat=True),
                    FluxOptions(attention="xla", remat=True),
                )
            )
        )()
    scale = np.abs(expected).max()
    for name, g in {"reference": ref, "fast": fast, "remat": remat, "xla": dpa}.items():
        np.testing.assert_allclose(g, expected, atol=1e-4 * scale, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(remat, fast, atol=1e-6 * scale, rtol=1e-6)


def test_bf16_timestep_rounding_matches_torch():
    t = np.array([0.0, 0.123456, 0.5, 0.987654, 1.0], np.float32)
    expected = (torch.from_numpy(t).to(torch.bfloat16) * 1000).float().numpy()
    np.testing.assert_array_equal(scale_time(t, bf16=True), expected)
    np.testing.assert_allclose(scale_time(t), 1000 * t, rtol=1e-7)
    # The rounding is real: 1000·t moves by up to half a bf16 ulp (4 at 1000).
    assert np.max(np.abs(expected - 1000 * t)) > 0.1
