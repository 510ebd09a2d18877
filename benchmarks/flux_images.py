"""Decoded images and image rewards: speed against torch, full-size memory, the GPU run.

1. **Speed on this CPU** (medians after compilation, the calls interleaved): decode + LAION
   aesthetic reward, forward and forward + backward (the gradient w.r.t. the latent, what every
   guided sampler step needs), psijax (one ``jax.jit``, the parameters passed as arguments)
   against diffusers' ``AutoencoderKL`` + transformers' ``CLIPVisionModelWithProjection`` + the
   head in torch, on the same weights, inputs and cores. Two sizes: ``tiny`` (the tests'
   autoencoder and CLIP at 64²) and ``mid`` (FLUX's own autoencoder at 128², CLIP ViT-B/32).
   The relative L2 error of the rewards and of the gradients against torch comes with the times.
2. **Memory at full size**, compiled on this CPU against abstract weights (never allocated):
   FLUX-schnell + FLUX's autoencoder + CLIP ViT-L/14 + the head, one reward-and-gradient pass of
   the Tweedie prediction (``RewardProblem.potential_and_grad`` mapped over the particles: the
   step of both Ψ-Sampler stages, built by ``psijax.experiments.flux_images.problem``) for 5
   chains and for 20 particles at 512² (with and without remat) and 1,024² (with remat), and
   with ``particle_chunk``. XLA:CPU computes bf16 dots in float32 and converts each bf16 weight to a
   float32 copy, which it counts as temporary memory; so the fit on a GPU is judged from the
   float32 compile's temporaries (activations in float32, at least as large as bf16's) plus
   the bf16 weights.
3. ``--gpu``: one Ψ-Sampler run at the paper's budget (1,000 NFE: 5 chains × 100 pCNL steps,
   then 20 particles × 25 SMC steps) at 512² with the aesthetic reward, through
   ``psijax.experiments.flux_images.run`` (bf16, remat), on full-size models with random weights
   (the same programs and cost as the real ones) or on real files (``--transformer``
   ``--autoencoder`` ``--clip`` ``--aesthetic-head`` ``--prompts``). It times a first prompt
   (compilation included) and a second one (the compiled program reused) and reads the device's
   peak memory. Target: at most 2 minutes per prompt on one H100-class GPU.

Usage: python benchmarks/flux_images.py [--quick] [--no-memory] [--gpu] [--smoke]
Writes benchmarks/results/flux_images.{csv,md} (``--gpu``: flux_images_gpu.{csv,md}).
``--smoke`` runs tiny sizes of every section on whatever devices exist and writes nothing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    interleaved_median_times,
    machine,
    matmul_flops,
    write_csv,
    write_text,
)

from psijax.experiments import flux_images as fi  # noqa: E402
from psijax.models import clip  # noqa: E402
from psijax.models.flux import (  # noqa: E402
    AutoencoderKL,
    Flux,
    autoencoder_preset,
    checkpoint,
    preset,
)
from psijax.models.flux import autoencoder_weights as aw  # noqa: E402
from psijax.models.flux.prompts import PromptEmbeddings  # noqa: E402
from psijax.rewards import AestheticHead, aesthetic_reward, load_aesthetic_head  # noqa: E402
from psijax.rewards.aesthetic import HEAD_WIDTHS  # noqa: E402
from psijax.smc.sharding import map_particles  # noqa: E402

BATCH = 2
GIB = 2**30
SPEED_SETUPS = {  # name -> (autoencoder preset, CLIP preset, image side)
    "tiny": ("tiny", "tiny", 64),
    "mid": ("flux", "vit_b32", 128),
}
CLIP_FIELDS = (
    "hidden_size intermediate_size projection_dim num_hidden_layers num_attention_heads "
    "image_size patch_size hidden_act layer_norm_eps"
).split()


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ----------------------------------------------------------------------------------------------
# 1. Speed against torch
# ----------------------------------------------------------------------------------------------
def torch_models(ae_config, clip_config, seed: int):
    """diffusers' autoencoder, transformers' CLIP tower and LAION's head (default inits)."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(seed)
    kwargs = aw.config_to_diffusers(ae_config)
    kwargs.pop("_class_name")
    vae = diffusers.AutoencoderKL(**kwargs).eval()
    hf = transformers.CLIPVisionConfig(**{f: getattr(clip_config, f) for f in CLIP_FIELDS})
    tower = transformers.CLIPVisionModelWithProjection(hf).eval()
    nn = torch.nn
    w = (clip_config.projection_dim, *HEAD_WIDTHS)
    head = nn.Sequential(  # LAION's layout: dropouts between the first four Linear layers
        nn.Linear(w[0], w[1]),
        nn.Dropout(0.2),
        nn.Linear(w[1], w[2]),
        nn.Dropout(0.2),
        nn.Linear(w[2], w[3]),
        nn.Dropout(0.1),
        nn.Linear(w[3], w[4]),
        nn.Linear(w[4], w[5]),
    ).eval()
    return vae, tower, head


def ours_from_torch(vae, tower, head, ae_config, clip_config, folder: str):
    """The same three models in psijax, from the torch weights."""
    numpy = lambda m: {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}  # noqa: E731
    ae = aw.from_tensors(numpy(vae), ae_config)
    ours_tower = clip.from_tensors(numpy(tower), clip_config)
    path = os.path.join(folder, "head.safetensors")
    checkpoint.write_tensors({"layers." + k: v for k, v in numpy(head).items()}, path)
    return ae, ours_tower, load_aesthetic_head(path)


def torch_reward_fn(vae, tower, head, image_size: int):
    """``reward(z)`` in torch: decode, resize as CLIPImageProcessor (short side, bicubic with
    antialiasing, centre crop), normalise, embed, score."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(clip.CLIP_MEAN)[:, None, None]
    std = torch.tensor(clip.CLIP_STD)[:, None, None]

    def reward(z):
        x = (vae.decode(z, return_dict=False)[0] + 1) / 2
        h, w = x.shape[-2:]
        if (h, w) != (image_size, image_size):
            short = min(h, w)
            size = (
                image_size if h == short else int(image_size * h / w),
                image_size if w == short else int(image_size * w / h),
            )
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
            top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
            x = x[..., top : top + image_size, left : left + image_size]
        emb = tower(pixel_values=(x - mean) / std).image_embeds
        return head(emb / emb.norm(dim=-1, keepdim=True))[:, 0]

    return reward


def speed(names, args) -> list[dict]:
    import torch

    rows = []
    for name in names:
        ae_name, clip_name, side = SPEED_SETUPS[name]
        ae_config, clip_config = autoencoder_preset(ae_name), clip.CLIP_PRESETS[clip_name]
        print(f"\n== speed: {name} ({ae_name} autoencoder, CLIP {clip_name}, {side}²)", flush=True)
        vae, tower, head = torch_models(ae_config, clip_config, args.seed)
        with tempfile.TemporaryDirectory() as folder:
            ae, ours_tower, ours_head = ours_from_torch(
                vae, tower, head, ae_config, clip_config, folder
            )
        f = ae_config.downsample_factor
        shape = (BATCH, ae_config.latent_channels, side // f, side // f)
        z = np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)

        graphdef, state = nnx.split(ae)
        reward = aesthetic_reward(ours_tower, ours_head)

        def forward(state, reward, z, graphdef=graphdef):
            return reward(nnx.merge(graphdef, state).decode(z))

        def total(z, state, reward, forward=forward):
            return jnp.sum(forward(state, reward, z))

        port_fwd = jax.jit(forward)
        port_grad = jax.jit(jax.value_and_grad(total))
        torch_reward = torch_reward_fn(vae, tower, head, clip_config.image_size)
        zt = torch.from_numpy(z)

        def torch_fwd(zt, torch_reward=torch_reward):
            with torch.inference_mode():
                return torch_reward(zt)

        def torch_grad(zt, torch_reward=torch_reward):
            x = zt.clone().requires_grad_(True)
            torch_reward(x).sum().backward()
            return x.grad

        zj = jnp.asarray(z)
        start = time.perf_counter()
        r_ours = np.asarray(port_fwd(state, reward, zj))
        compile_fwd = time.perf_counter() - start
        start = time.perf_counter()
        _, g_ours = port_grad(zj, state, reward)
        g_ours = np.asarray(g_ours)
        compile_grad = time.perf_counter() - start
        r_torch, g_torch = torch_fwd(zt).numpy(), torch_grad(zt).numpy()
        times = interleaved_median_times(
            {
                "torch_fwd": (torch_fwd, (zt,)),
                "port_fwd": (port_fwd, (state, reward, zj)),
                "torch_fwd_bwd": (torch_grad, (zt,)),
                "port_fwd_bwd": (port_grad, (zj, state, reward)),
            },
            repeats=args.repeats,
            budget_s=args.budget,
        )
        for kind in ("fwd", "fwd_bwd"):
            row = {
                "section": "speed",
                "setup": name,
                "autoencoder": ae_name,
                "clip": clip_name,
                "image": f"{side}x{side}",
                "batch": BATCH,
                "pass": kind.replace("_", "+"),
                "torch_ms": 1e3 * times[f"torch_{kind}"],
                "port_ms": 1e3 * times[f"port_{kind}"],
                "port_over_torch": times[f"port_{kind}"] / times[f"torch_{kind}"],
                "port_compile_s": compile_fwd if kind == "fwd" else compile_grad,
                "rel_l2_reward": rel_l2(r_ours, r_torch),
                "rel_l2_grad": rel_l2(g_ours, g_torch) if kind == "fwd_bwd" else float("nan"),
                "torch_threads": torch.get_num_threads(),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# 2. Memory at full size, against abstract weights
# ----------------------------------------------------------------------------------------------
def abstract_setup(param_dtype, smoke: bool):
    """FLUX-schnell, FLUX's autoencoder, CLIP ViT-L/14 and the head as (graphdef, abstract
    state) pairs (weights in ``param_dtype``, the head's in float32; nothing allocated), one
    prompt's embeddings, the autoencoder's config and the four models' constructors."""
    if smoke:
        cfg = preset("tiny64")
        ae_cfg, clip_cfg = autoencoder_preset("tiny"), clip.CLIP_PRESETS["tiny"]
        text_tokens = 8
    else:
        cfg = preset("schnell")
        ae_cfg, clip_cfg = autoencoder_preset("flux"), clip.CLIP_PRESETS["vit_l14"]
        text_tokens = 256  # schnell's T5 length
    makers = (
        lambda: Flux(cfg, rngs=nnx.Rngs(0), param_dtype=param_dtype),
        lambda: AutoencoderKL(ae_cfg, rngs=nnx.Rngs(0)),
        lambda: clip.CLIPVision(clip_cfg, rngs=nnx.Rngs(0)),
        lambda: AestheticHead(clip_cfg.projection_dim, rngs=nnx.Rngs(0)),
    )
    parts = []
    for i, make in enumerate(makers):
        graphdef, state = nnx.split(nnx.eval_shape(make))
        if i in (1, 2):  # the autoencoder and CLIP in the run's dtype too; the head stays fp32
            state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, param_dtype), state)
        parts.append((graphdef, state))
    embeddings = PromptEmbeddings(
        ("prompt",),
        np.zeros((1, text_tokens, cfg.context_in_dim), np.float32),
        np.zeros((1, cfg.vec_in_dim), np.float32),
    )
    return parts, embeddings, ae_cfg, makers


def compile_pass(parts, embeddings, factor, side, n, options):
    """The compiled reward-and-gradient pass of ``n`` particles at ``side``² pixels, the
    seconds its compilation took and its matrix-product FLOPs (:func:`_common.matmul_flops`)."""
    graphdefs = [g for g, _ in parts]

    def step(states, xs, t):
        transformer, ae, tower, head = (
            nnx.merge(g, s) for g, s in zip(graphdefs, states, strict=True)
        )
        setup = fi.FluxSetup(transformer, ae, embeddings, "aesthetic", tower, head)
        problem = fi.problem(setup, 0, 0.1, options)
        fn = map_particles(problem.potential_and_grad, None, (0, None), problem.particle_chunk)
        return fn(xs, t)

    tokens = (side // (2 * factor)) ** 2  # the autoencoder's factor and the 2×2 packing
    spec = jax.ShapeDtypeStruct
    arguments = ([s for _, s in parts], spec((n, tokens, 64), jnp.float32), spec((), jnp.float32))
    start = time.perf_counter()
    compiled = jax.jit(step).lower(*arguments).compile()
    seconds = time.perf_counter() - start
    return compiled, seconds, matmul_flops(jax.make_jaxpr(step)(*arguments))


def memory_in_child(args) -> list[dict]:
    """:func:`memory` in a child process with LLVM's optimisations of the generated code off:
    the memory XLA reports comes from its buffer assignment, before code generation, and the
    full-size compiles take several times less."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "memory.json")
        flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        argv = [sys.executable, os.path.abspath(__file__), "--memory-worker", path]
        argv += ["--quick"] * args.quick + ["--smoke"] * args.smoke
        subprocess.run(argv, env={**os.environ, "XLA_FLAGS": flags.strip()}, check=True)
        with open(path) as f:
            return json.load(f)


def memory(args) -> list[dict]:
    print("\n== memory at full size (abstract weights)", flush=True)
    sides = (32, 64) if args.smoke else (512, 1024)
    small, large = sides
    cases = [  # weights/compute dtype, side, particles, remat, chunk
        *[(jnp.float32, small, n, r, None) for n in (5, 20) for r in (True, False)],
        (jnp.float32, small, 20, True, 5),
        (jnp.float32, large, 5, True, None),
        (jnp.float32, large, 20, True, None),
        (jnp.float32, large, 20, True, 5),
        (jnp.float32, large, 20, True, 1),
        (jnp.bfloat16, small, 20, True, None),
    ]
    if args.quick:
        cases = [c for c in cases if c[1] == sides[0] and c[3]]
    rows, cache = [], {}
    for dtype, side, n, remat, chunk in cases:
        if dtype not in cache:
            cache[dtype] = abstract_setup(dtype, args.smoke)
        parts, embeddings, ae_cfg, _ = cache[dtype]
        options = fi.ImageOptions(side, side, dtype=dtype, remat=remat, particle_chunk=chunk)
        compiled, seconds, flops = compile_pass(
            parts, embeddings, ae_cfg.downsample_factor, side, n, options
        )
        m = compiled.memory_analysis()
        weights_bf16 = sum(
            int(np.prod(s.shape)) * (4 if i == 3 else 2)
            for i, (_, state) in enumerate(parts)
            for s in jax.tree.leaves(state)
        )
        row = {
            "section": "memory",
            "dtype": jnp.dtype(dtype).name,
            "image": f"{side}x{side}",
            "particles": n,
            "remat": remat,
            "particle_chunk": chunk or "",
            "argument_gib": m.argument_size_in_bytes / GIB,
            "temp_gib": m.temp_size_in_bytes / GIB,
            "output_gib": m.output_size_in_bytes / GIB,
            # on a GPU: bf16 weights + at most the float32 compile's temporaries
            "gpu_estimate_gib": (weights_bf16 + m.temp_size_in_bytes + m.output_size_in_bytes) / GIB
            if dtype == jnp.float32
            else float("nan"),
            "compile_s": seconds,
            "gflop_per_particle": flops / n / 1e9,
        }
        print(row, flush=True)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# 3. The GPU run
# ----------------------------------------------------------------------------------------------
def random_setup(smoke: bool, seed: int) -> fi.FluxSetup:
    """Full-size models with random bf16 weights (the head in float32) made on the device, and
    two random prompts' embeddings (``smoke``: the tiny models)."""
    parts, embeddings, _, makers = abstract_setup(jnp.bfloat16, smoke)
    rng = np.random.default_rng(seed)
    embeddings = PromptEmbeddings(
        ("first prompt", "second prompt"),
        rng.standard_normal((2, *embeddings.t5.shape[1:])).astype(np.float32),
        rng.standard_normal((2, embeddings.clip_pooled.shape[1])).astype(np.float32),
    )
    modules = []
    for (graphdef, abstract), make in zip(parts, makers, strict=True):
        # each model's own initialisers, run on the device in one program, cast as in the run
        dtypes = [s.dtype for s in jax.tree.leaves(abstract)]
        state = jax.jit(
            lambda make=make, dtypes=dtypes: [
                v.astype(d) for v, d in zip(jax.tree.leaves(nnx.state(make())), dtypes, strict=True)
            ]
        )()
        modules.append(nnx.merge(graphdef, jax.tree.unflatten(jax.tree.structure(abstract), state)))
    transformer, ae, tower, head = modules
    return fi.FluxSetup(transformer, ae, embeddings, "aesthetic", tower, head)


def gpu(args) -> list[dict]:
    print("\n== Ψ-Sampler end to end, 1,000 NFE", flush=True)
    if args.transformer:
        setup = fi.load(
            args.transformer,
            args.autoencoder,
            args.prompts,
            "aesthetic",
            clip=args.clip,
            aesthetic_head=args.aesthetic_head,
            dtype=jnp.bfloat16,
        )
        weights = "the given files"
    else:
        setup = random_setup(args.smoke, args.seed)
        weights = "random (full-size shapes)" if not args.smoke else "random (tiny)"
    side = 32 if args.smoke else args.size
    budget = 40 if args.smoke else 1000
    steps = 4 if args.smoke else 25
    options = fi.ImageOptions(
        side, side, dtype=jnp.bfloat16, remat=True, particle_chunk=args.particle_chunk
    )
    rows = []
    for i in range(min(2, len(setup.embeddings.prompts))):
        out = fi.run(
            jax.random.key(args.seed + i),
            setup,
            i,
            method="psi_sampler",
            alpha=0.1,
            nfe_budget=budget,
            num_steps=steps,
            options=options,
        )
        stats = jax.devices()[0].memory_stats() or {}
        result = out["result"]
        row = {
            "section": "gpu",
            "prompt": i,
            "first_call": i == 0,
            "weights": weights,
            "image": f"{side}x{side}",
            "nfe": int(result.nfe),
            "particles": int(result.samples.shape[0]),
            "run_s": out["seconds"]["run"],
            "decode_s": out["seconds"]["decode"],
            "finite_rewards": int(np.isfinite(np.asarray(result.rewards)).sum()),
            "peak_gib": stats.get("peak_bytes_in_use", float("nan")) / GIB,
        }
        print(row, flush=True)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _f(x, spec=".3g") -> str:
    return "–" if isinstance(x, float) and x != x else format(x, spec)


def speed_table(rows) -> str:
    lines = [
        "| setup | image, batch | pass | torch ms | psijax ms | **psijax / torch** "
        "| psijax compile s | rel. L2 reward | rel. L2 gradient |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setup']} ({r['autoencoder']} AE, CLIP {r['clip']}) | {r['image']}, "
            f"{r['batch']} | {r['pass']} | {r['torch_ms']:.1f} | {r['port_ms']:.1f} | "
            f"**{r['port_over_torch']:.2f}** | {r['port_compile_s']:.1f} | "
            f"{_f(r['rel_l2_reward'], '.1e')} | {_f(r['rel_l2_grad'], '.1e')} |"
        )
    return "\n".join(lines)


def memory_table(rows) -> str:
    lines = [
        "| weights & compute | image | particles | remat | chunk | weights GiB | temp GiB "
        "| **GPU estimate GiB** | TFLOP / particle | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['image']} | {r['particles']} | {r['remat']} | "
            f"{r['particle_chunk'] or '–'} | {r['argument_gib']:.1f} | {r['temp_gib']:.1f} | "
            f"**{_f(r['gpu_estimate_gib'], '.1f')}** | "
            f"{_f(r.get('gflop_per_particle', float('nan')) / 1e3, '.2f')} | "
            f"{r['compile_s']:.0f} |"
        )
    return "\n".join(lines)


H100_BF16_TFLOPS = 989.0
"""Dense bf16 peak of an H100 SXM (and of an H200: the same chip), TFLOP/s."""


def compute_floor(rows, nfe: int = 1000, target_s: float = 120.0) -> str:
    """The GPU time the paper's budget needs at the chip's peak: ``nfe`` reward-and-gradient
    passes of one particle, with the matrix products' FLOPs of the traced pass (the same in
    float32 and bf16); with remat the forward is counted twice, as it runs."""
    per_image = {}
    for r in rows:
        if r["dtype"] == "float32" and not r["particle_chunk"] and r["particles"] == 20:
            per_image.setdefault(r["image"], {})[r["remat"]] = r["gflop_per_particle"] * 1e9
    lines = []
    for image, flops in per_image.items():
        peak = H100_BF16_TFLOPS * 1e12
        line = f"{image}: {flops[True] / 1e12:.1f} TFLOP per particle and pass with remat"
        if False in flops:
            line += f" ({flops[False] / 1e12:.1f} without)"
        seconds = nfe * flops[True] / peak
        line += (
            f", so {nfe:,} NFE take {seconds:.0f} s at the {H100_BF16_TFLOPS:.0f} TFLOP/s bf16 "
            f"peak of an H100 and {target_s:.0f} s need {100 * seconds / target_s:.0f} % of it"
        )
        lines.append(line)
    if not lines:
        return ""
    return (
        "Compute floor of one Ψ-Sampler run (every NFE is a forward and an input-gradient pass "
        "through transformer, decoder and CLIP; matrix products and convolutions only, every "
        "scanned block counted): " + "; ".join(lines) + "."
    )


def fit_summary(rows, gpu_gib: float = 80.0) -> str:
    """Which measured configurations fit one ``gpu_gib`` GPU by the estimate."""
    fits = [
        f"{r['image']} × {r['particles']}"
        + (f" (chunk {r['particle_chunk']})" if r["particle_chunk"] else "")
        + ("" if r["remat"] else " without remat")
        for r in rows
        if r["gpu_estimate_gib"] <= gpu_gib  # NaN (bf16 rows) compares False
    ]
    return (
        f"Fit one {gpu_gib:.0f} GB GPU by the estimate: "
        + ("; ".join(fits) if fits else "none")
        + ". Memory grows with the particles evaluated at once, so `particle_chunk` bounds it "
        "whatever N is."
    )


def gpu_table(rows) -> str:
    lines = [
        "| prompt | weights | image | NFE | particles | run s | decode s | finite rewards "
        "| peak GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        first = " (compilation included)" if r["first_call"] else " (compiled program reused)"
        lines.append(
            f"| {r['prompt']}{first} | {r['weights']} | {r['image']} | {r['nfe']} | "
            f"{r['particles']} | {r['run_s']:.1f} | {r['decode_s']:.1f} | "
            f"{r['finite_rewards']} | {_f(r['peak_gib'], '.1f')} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny speed rows, fewer compiles")
    parser.add_argument("--no-memory", action="store_true", help="skip the full-size compiles")
    parser.add_argument("--gpu", action="store_true", help="the end-to-end run (section 3)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, write nothing")
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds (at most)")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds per speed table")
    parser.add_argument("--size", type=int, default=512, help="--gpu image side")
    parser.add_argument("--particle-chunk", type=int, default=None, help="--gpu particle chunk")
    for name in ("transformer", "autoencoder", "clip", "aesthetic-head", "prompts"):
        parser.add_argument(f"--{name}", default=None, help=f"--gpu: a real {name} file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        with open(args.memory_worker, "w") as f:
            json.dump(memory(args), f)
        return
    if args.transformer and None in (
        args.autoencoder,
        args.clip,
        args.aesthetic_head,
        args.prompts,
    ):
        parser.error("--transformer needs --autoencoder, --clip, --aesthetic-head and --prompts")
    print(machine(), flush=True)
    header = f"Machine: {machine()}.\n\n"
    if args.gpu:
        rows = gpu(args)
        if args.smoke:
            return
        write_csv(rows, "flux_images_gpu.csv")
        worst = max(r["run_s"] + r["decode_s"] for r in rows[1:] or rows)
        text = (
            "# Ψ-Sampler on FLUX-schnell with the aesthetic reward, end to end on one GPU\n\n"
            + header
            + "`python benchmarks/flux_images.py --gpu`: `psijax.experiments.flux_images.run`, "
            "1,000 NFE (5 chains × 100 pCNL steps, then 20 particles × 25 SMC steps), bf16 with "
            "remat, FLUX-schnell + FLUX's autoencoder + CLIP ViT-L/14 + LAION's head.\n\n"
            + gpu_table(rows)
            + f"\n\nPer prompt once compiled: {worst:.0f} s (target ≤ 120 s).\n"
        )
        print(text)
        write_text(text, "flux_images_gpu.md")
        return
    names = ["tiny"] if (args.quick or args.smoke) else list(SPEED_SETUPS)
    if args.smoke:
        args.repeats, args.budget = 3, 5.0
    rows = speed(names, args)
    mem = [] if args.no_memory else memory_in_child(args)
    if args.smoke:
        return
    write_csv(rows + mem, "flux_images.csv")
    text = (
        "# Decode + image reward: psijax against diffusers/transformers; full-size memory\n\n"
        + header
        + "## Speed on this CPU (float32, medians after compilation, interleaved)\n\n"
        "Decode a latent with the autoencoder, score the image with LAION's aesthetic head on "
        "CLIP (resize, normalise, embed), forward alone and forward + backward to the latent. "
        f"Torch uses {rows[0]['torch_threads']} threads. With random weights the head's "
        "output is dominated by its last bias, so the rewards agree almost to the last bit; "
        "the gradient's column is the informative one.\n\n" + speed_table(rows)
    )
    if mem:
        text += (
            "\n\n## Memory at full size (XLA:CPU buffer assignment, abstract weights)\n\n"
            "One reward-and-gradient pass of the Tweedie prediction of N particles "
            "(`RewardProblem.potential_and_grad`, the step of both Ψ-Sampler stages): "
            "FLUX-schnell (19 + 38 blocks, 256 text tokens), FLUX's autoencoder, CLIP ViT-L/14, "
            "the aesthetic head. *weights*: the arguments; *temp*: activations and "
            "intermediates (compiled with LLVM's optimisations off, which do not change "
            "XLA's buffer assignment). XLA:CPU computes bf16 dots in float32 and keeps a "
            "float32 copy of each bf16 weight among its temporaries, so the bf16 rows "
            "overstate a GPU's needs; "
            "the GPU estimate is the float32 compile's temporaries and outputs plus the weights "
            "in bf16 (an upper bound: bf16 activations are at most as large).\n\n"
            + memory_table(mem)
            + "\n\n"
            + fit_summary(mem)
            + "\n\n"
            + compute_floor(mem)
            + "\n"
        )
    text += "\n" + json.dumps({"repeats": args.repeats, "seed": args.seed}) + "\n"
    print(text)
    write_text(text, "flux_images.md")


if __name__ == "__main__":
    main()
