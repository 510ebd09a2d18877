"""``psijax flux`` end to end on CPU: a tiny random FLUX transformer, autoencoder, CLIP tower and
aesthetic head written by the test, one prompt; the figure, JSON and CSV appear, and a second
run with the same seed gives the same numbers."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from psijax.cli import main
from psijax.models import clip, flux
from psijax.models.flux import checkpoint
from psijax.models.flux.prompts import save_prompt_embeddings
from psijax.rewards import AestheticHead
from psijax.rewards.aesthetic import aesthetic_head_tensors

# Every XLA compilation of this process (jax's monitoring event of a backend compile).
COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **_: (
        COMPILES.append(secs) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux_files")
    config = flux.preset("tiny64")
    flux.save_weights(flux.Flux(config, rngs=nnx.Rngs(0)), root / "transformer.safetensors")
    ae = flux.AutoencoderKL(flux.autoencoder_preset("tiny"), rngs=nnx.Rngs(1))
    flux.save_autoencoder(ae, root / "ae.safetensors")
    tower_config = clip.CLIP_PRESETS["tiny"]
    tower = clip.CLIPVision(tower_config, rngs=nnx.Rngs(2))
    (root / "clip").mkdir()
    checkpoint.write_tensors(clip.to_tensors(tower), root / "clip" / "model.safetensors")
    fields = {f: getattr(tower_config, f) for f in tower_config.__dataclass_fields__}
    (root / "clip" / "config.json").write_text(json.dumps(fields))
    head = AestheticHead(tower_config.projection_dim, rngs=nnx.Rngs(3))
    checkpoint.write_tensors(aesthetic_head_tensors(head), root / "head.safetensors")
    rng = np.random.default_rng(0)
    save_prompt_embeddings(
        root / "prompts.safetensors",
        ["a cat", "a dog"],
        rng.standard_normal((2, 5, config.context_in_dim)),
        rng.standard_normal((2, config.vec_in_dim)),
    )
    return root, config


def _run(files, out, *extra, prompts=("a dog",)):
    root, config = files
    argv = [
        "flux",
        "--transformer", str(root / "transformer.safetensors"),
        "--autoencoder", str(root / "ae.safetensors"),
        "--prompts", str(root / "prompts.safetensors"),
        "--clip", str(root / "clip"),
        "--aesthetic-head", str(root / "head.safetensors"),
        "--prompt", *prompts,
        "--method", "tds",
        "--particles", "4",
        "--steps", "2",
        "--size", "16", "32",
        "--dtype", "float32",
        "--particle-chunk", "2",
        "--axes-dim", *map(str, config.axes_dim),
        "--out", str(out),
        "--no-progress",
        *extra,
    ]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "flux.json").read_text())


def test_flux_command_writes_images_and_numbers_and_is_deterministic(files, tmp_path):
    # the second run reads the first's programs from the compilation cache (seconds, not a minute)
    cache = ("--compilation-cache", str(tmp_path / "cache"))
    first = _run(files, tmp_path / "a", *cache)
    for name in ("flux_0.png", "flux.json", "flux.csv"):
        assert os.path.getsize(tmp_path / "a" / name) > 0
    (run,) = first["runs"]
    assert first["transition"] == "renoising"  # tiny64 embeds no guidance: schnell-like
    assert run["prompt"] == "a dog" and len(run["rewards"]) == 4
    assert np.all(np.isfinite(run["rewards"])) and run["nfe"] > 0
    assert sorted(run["best_first"]) == [0, 1, 2, 3]
    # both prompts now: the program is compiled once for all of them (the conditioning is an
    # argument), and the dog's numbers are the first run's
    after_first = len(COMPILES)
    second = _run(files, tmp_path / "b", *cache, prompts=("a cat", "a dog"))
    assert [r["prompt"] for r in second["runs"]] == ["a cat", "a dog"]
    assert second["runs"][1]["rewards"] == run["rewards"]
    assert second["runs"][1]["log_weights"] == run["log_weights"]
    assert second["runs"][0]["rewards"] != run["rewards"]
    assert COMPILES[after_first:] == []  # nothing compiled again, for either prompt


def test_flux_command_refuses_bad_options_before_loading(files, tmp_path, capsys):
    root, _ = files
    base = [
        "flux", "--transformer", str(root / "transformer.safetensors"),
        "--autoencoder", str(root / "ae.safetensors"),
        "--prompts", str(root / "prompts.safetensors"),
        "--clip", str(root / "clip"), "--out", str(tmp_path),
    ]  # fmt: skip
    for extra, message in (
        ([], "needs --aesthetic-head"),
        (["--aesthetic-head", str(root / "nowhere")], "no such file"),
        (["--reward", "clip_score", "--method", "nope"], "--method nope"),
        (["--reward", "clip_score", "--size", "24", "32"], "multiples of 16"),
    ):
        with pytest.raises(SystemExit, match=message):
            main(base + extra)


def test_the_kernel_follows_the_model_kind(files):
    """Schnell-like models (no guidance embedding) re-noise, dev-like ones take the SDE, unless
    the options say otherwise; the problem carries the kernel, so every sampler uses it."""
    from psijax.experiments import flux_images as fi
    from psijax.flows.distilled import Renoising

    embeddings = fi.load_prompt_embeddings(str(files[0] / "prompts.safetensors"))
    for guidance_embed, auto in ((False, "renoising"), (True, "sde")):
        config = flux.preset("tiny64", guidance_embed=guidance_embed)
        model = flux.Flux(config, rngs=nnx.Rngs(0))
        ae = flux.AutoencoderKL(flux.autoencoder_preset("tiny"), rngs=nnx.Rngs(1))
        tower = clip.CLIPVision(clip.CLIP_PRESETS["tiny"], rngs=nnx.Rngs(2))
        setup = fi.FluxSetup(
            model, ae, embeddings, "aesthetic", tower, AestheticHead(16, rngs=nnx.Rngs(3))
        )
        for name, expected in (("auto", auto), ("renoising", "renoising"), ("sde", "sde")):
            options = fi.ImageOptions(
                16, 32, transition=name, guidance=3.5 if guidance_embed else None
            )
            assert fi.transition(setup, options) == expected
            kernel = fi.problem(setup, 0, 0.1, options).transition
            assert isinstance(kernel, Renoising) if expected == "renoising" else kernel is None
    with pytest.raises(ValueError, match="transition"):
        fi.ImageOptions(transition="ode")
