"""FLUX packing, ids, sizes, VAE normalisation and time grids against diffusers' FluxPipeline.

Packing and ids are permutations / integer-valued floats: compared exactly. Time grids: the
diffusers scheduler shifts float32 sigmas in float32 while psijax shifts in float64 and rounds
once, so the two differ by a few float32 ulps of O(1) values; the gate is 1e-6 (~8 ulps at 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.flows.interpolant import flux_grid, uniform_grid
from psijax.models.flux import packing
from psijax.models.flux.packing import (
    VAE_SCALE,
    VAE_SHIFT,
    denormalize_latent,
    image_ids,
    latent_shape,
    normalize_latent,
    num_tokens,
    pack,
    text_ids,
    time_grid,
    unpack,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402

try:  # FluxPipeline's module imports transformers; the scheduler alone does not.
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline, calculate_shift
except ImportError as error:  # pragma: no cover - depends on the environment
    FluxPipeline = calculate_shift = None
    PIPELINE_MISSING = f"diffusers' FluxPipeline is not importable ({error})"
else:
    PIPELINE_MISSING = ""
needs_pipeline = pytest.mark.skipif(bool(PIPELINE_MISSING), reason=PIPELINE_MISSING)

# (leading dims, latent (C, H, W)): unbatched, batched, two leading dims; square, non-square,
# a single patch row / column.
CASES = [((), (16, 8, 8)), ((3,), (16, 16, 12)), ((2, 3), (4, 2, 6)), ((), (3, 6, 2))]


def random_latent(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# pack / unpack
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lead, shape", CASES)
def test_pack_unpack_inverse(lead, shape):
    c, hh, ww = shape
    z = random_latent(lead + shape)
    tokens = pack(z)
    assert tokens.shape == lead + ((hh // 2) * (ww // 2), 4 * c)
    assert tokens.dtype == jnp.float32
    np.testing.assert_array_equal(unpack(tokens, hh, ww), z)
    # and the other way round
    t = random_latent(tokens.shape, seed=1)
    np.testing.assert_array_equal(pack(unpack(t, hh, ww)), t)


def test_pack_channel_order():
    c, hh, ww = 3, 6, 4
    cc, yy, xx = np.meshgrid(np.arange(c), np.arange(hh), np.arange(ww), indexing="ij")
    z = 10000 * cc + 100 * yy + xx  # value encodes (c, y, x)
    tokens = np.asarray(pack(z))
    w = ww // 2
    for k in range(tokens.shape[0]):
        i, j = divmod(k, w)  # row-major patch grid
        for f in range(tokens.shape[1]):
            ch, rest = divmod(f, 4)  # (c, ph, pw), channel slowest
            ph, pw = divmod(rest, 2)
            assert tokens[k, f] == 10000 * ch + 100 * (2 * i + ph) + (2 * j + pw)


def test_pack_jit_vmap():
    z = random_latent((2, 16, 8, 12))
    np.testing.assert_array_equal(jax.jit(pack)(z), pack(z))
    np.testing.assert_array_equal(jax.vmap(pack)(z), pack(z))
    tokens = pack(z)
    unpack_fn = jax.jit(unpack, static_argnums=(1, 2))
    np.testing.assert_array_equal(unpack_fn(tokens, 8, 12), z)


@needs_pipeline
@pytest.mark.parametrize("shape", [(2, 16, 16, 12), (1, 16, 8, 8), (3, 4, 2, 6)])
def test_pack_unpack_match_diffusers(shape):
    b, c, hh, ww = shape
    z = random_latent(shape)
    ref = FluxPipeline._pack_latents(torch.from_numpy(z), b, c, hh, ww).numpy()
    np.testing.assert_array_equal(pack(z), ref)
    vae_scale_factor = 8  # diffusers' _unpack_latents takes pixel sizes
    back = FluxPipeline._unpack_latents(
        torch.from_numpy(ref), hh * vae_scale_factor, ww * vae_scale_factor, vae_scale_factor
    ).numpy()
    np.testing.assert_array_equal(unpack(ref, hh, ww), back)


# ----------------------------------------------------------------------------------------------
# ids
# ----------------------------------------------------------------------------------------------
@needs_pipeline
@pytest.mark.parametrize("hh, ww", [(8, 8), (16, 12), (2, 6), (128, 128)])
def test_image_ids_match_diffusers(hh, ww):
    ids = image_ids(hh, ww)
    ref = FluxPipeline._prepare_latent_image_ids(1, hh // 2, ww // 2, "cpu", torch.float32)
    assert ids.shape == ((hh // 2) * (ww // 2), 3) and ids.dtype == jnp.float32
    np.testing.assert_array_equal(ids, ref.numpy())


def test_image_ids_follow_packing():
    # The id of a token is the patch position that pack() puts there.
    hh, ww = 6, 10
    rows = np.repeat(np.arange(hh) // 2, ww).reshape(1, hh, ww)
    cols = np.tile(np.arange(ww) // 2, hh).reshape(1, hh, ww)
    pos = np.asarray(pack(np.concatenate([rows, cols])))  # (L, 8): each feature is constant
    np.testing.assert_array_equal(image_ids(hh, ww)[:, 1], pos[:, 0])
    np.testing.assert_array_equal(image_ids(hh, ww)[:, 2], pos[:, 4])
    np.testing.assert_array_equal(image_ids(hh, ww)[:, 0], 0.0)


def test_text_ids():
    ids = text_ids(512)
    assert ids.shape == (512, 3) and ids.dtype == jnp.float32
    np.testing.assert_array_equal(ids, 0.0)


# ----------------------------------------------------------------------------------------------
# sizes
# ----------------------------------------------------------------------------------------------
def test_sizes():
    assert latent_shape(1024, 1024) == (16, 128, 128)
    assert latent_shape(768, 1360) == (16, 96, 170)
    assert latent_shape(256, 512, channels=4) == (4, 32, 64)
    assert num_tokens(1024, 1024) == 4096
    assert num_tokens(512, 512) == 1024
    assert num_tokens(256, 256) == 256
    assert num_tokens(768, 1360) == 48 * 85
    # consistent with packing
    shape = latent_shape(48, 80)
    assert pack(np.zeros(shape, np.float32)).shape == (num_tokens(48, 80), 64)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError, match=r"\(16, 7, 8\)"):
        pack(np.zeros((16, 7, 8)))
    with pytest.raises(ValueError, match=r"\(2, 16, 8, 5\)"):
        pack(np.zeros((2, 16, 8, 5)))
    with pytest.raises(ValueError, match="shape"):
        pack(np.zeros((8, 8)))
    tokens = np.zeros((12, 64))
    with pytest.raises(ValueError, match="12 tokens"):
        unpack(tokens, 8, 8)
    with pytest.raises(ValueError, match="even"):
        unpack(tokens, 3, 8)
    with pytest.raises(TypeError, match="height"):  # a float is the wrong kind of size
        unpack(tokens, 6.0, 8)
    with pytest.raises(ValueError, match="divisible by 4"):
        unpack(np.zeros((12, 6)), 6, 8)
    with pytest.raises(ValueError, match="even"):
        image_ids(8, 5)
    with pytest.raises(ValueError, match="num_text_tokens"):
        text_ids(0)
    for h, w in [(1000, 1024), (1024, 1032), (8, 16)]:
        with pytest.raises(ValueError, match="multiples of 16"):
            latent_shape(h, w)
        with pytest.raises(ValueError, match="multiples of 16"):
            num_tokens(h, w)
    with pytest.raises(TypeError, match="num_tokens"):
        time_grid(4)
    with pytest.raises(TypeError, match="num_tokens"):
        time_grid(4, 256.0)
    with pytest.raises(ValueError, match="num_tokens"):
        time_grid(4, 0)
    with pytest.raises(ValueError, match="num_steps"):
        time_grid(0, 256)


# ----------------------------------------------------------------------------------------------
# VAE normalisation
# ----------------------------------------------------------------------------------------------
def test_vae_normalisation():
    assert (VAE_SHIFT, VAE_SCALE) == (0.1159, 0.3611)
    z = 3.0 * random_latent((2, 16, 8, 8))
    x = normalize_latent(z)
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(x, (z - 0.1159) * 0.3611, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(denormalize_latent(x), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(normalize_latent(denormalize_latent(z)), z, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# time grids vs diffusers' scheduler, set up as FluxPipeline.__call__ does
# ----------------------------------------------------------------------------------------------
DEV_SCHEDULER = dict(
    num_train_timesteps=1000,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    shift=3.0,
    time_shift_type="exponential",
)
SCHNELL_SCHEDULER = dict(num_train_timesteps=1000, use_dynamic_shifting=False, shift=1.0)


def pipeline_mu(config, image_seq_len):
    """μ as FluxPipeline.__call__ computes it from the scheduler config (linear in the length)."""
    args = (
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    if calculate_shift is not None:
        return calculate_shift(image_seq_len, *args)
    n0, n1, m0, m1 = args  # the same straight line, when the pipeline is not importable
    return m0 + (m1 - m0) * (image_seq_len - n0) / (n1 - n0)


def pipeline_sigmas(config, num_steps, image_seq_len):
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
    mu = pipeline_mu(scheduler.config, image_seq_len)
    scheduler.set_timesteps(sigmas=sigmas, mu=mu)
    return scheduler.sigmas.numpy()


@pytest.mark.parametrize("num_steps, tokens", [(4, 256), (28, 4096), (50, 1024), (1, 64)])
def test_time_grid_dev_matches_diffusers(num_steps, tokens):
    grid = time_grid(num_steps, tokens)
    ref = pipeline_sigmas(DEV_SCHEDULER, num_steps, tokens)
    assert grid.shape == (num_steps + 1,) and grid.dtype == jnp.float32
    assert grid[0] == 1.0 and grid[-1] == 0.0
    np.testing.assert_allclose(grid, ref, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(grid, flux_grid(num_steps, tokens))  # a dispatcher


@pytest.mark.parametrize("num_steps, tokens", [(1, 256), (4, 4096), (28, 1024)])
def test_time_grid_schnell_matches_diffusers(num_steps, tokens):
    grid = time_grid(num_steps, shift=False)
    ref = pipeline_sigmas(SCHNELL_SCHEDULER, num_steps, tokens)
    np.testing.assert_allclose(grid, ref, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(grid, uniform_grid(num_steps))
    np.testing.assert_array_equal(time_grid(num_steps, tokens, shift=False), grid)


def test_public_names():
    assert set(packing.__all__) <= set(dir(packing))
