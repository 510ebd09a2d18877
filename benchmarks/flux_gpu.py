"""FLUX port on an NVIDIA GPU: parity, speed and memory against diffusers on the same GPU.

The CPU comparisons are ``flux_forward.py`` and ``psi_flux.py``; this script is their GPU
counterpart, for machines where both jax and torch see a CUDA device.

1. **Parity at FLUX's width.** A model of FLUX's block shapes (hidden 3072 = 24 heads × 128,
   RoPE axes (16, 56, 56), context 4096, pooled 768, guidance embedding on, as FLUX-dev) with
   ``--depth`` double + ``--single`` single blocks, every parameter re-randomized as in
   ``flux_forward.diffusers_model``, at 1024² (a 64×64 grid = 4096 image tokens) + 512 text
   tokens, batch 1. Relative L2 errors of the output and of the input gradient of
   ``sum(out·w)`` against diffusers in float32 with TF32 off (the oracle): the port's reference
   path at ``jax.default_matmul_precision("highest")`` and at jax's default precision, the fast
   path in float32, and the fast path in bfloat16 with each attention; diffusers in bfloat16
   for scale.
2. **Speed** (medians after compilation, both frameworks synchronised around each call), in
   bfloat16 at the same size and batch 1 and 2: diffusers' forward under ``inference_mode``
   and its forward + input-gradient backward (PyTorch's fused scaled_dot_product_attention),
   against the port's jitted fast path with ``attention`` = ``cudnn`` | ``xla`` |
   ``recompute``, with and without per-block rematerialisation. Achieved TFLOP/s from the
   configuration's FLOP count. Compile time of each port variant.
3. **Memory**: the port's compiled ``memory_analysis()`` temp bytes against torch's peak
   allocation above the weights, per variant; and full-size FLUX-dev at 1024², compiled against
   abstract weights (never allocated).
4. **Ψ-Sampler end to end on the GPU**, the ``psi_flux.py`` setting (tiny64, 16×16 tokens, 5
   chains × (50 + 50) pCNL steps, then 20 particles × 25 SMC steps, float32): psijax (one
   ``jax.jit``) against the PyTorch peer of ``psi_flux.py`` (batched) on the same GPU.

Usage: python benchmarks/flux_gpu.py [--depth 2 --single 4] [--smoke]
Writes benchmarks/results/flux_gpu.{csv,md}. ``--smoke`` runs tiny sizes on whatever devices
exist (CPU included) to check the script, and writes nothing.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import psi_flux  # noqa: E402
from _common import machine, write_csv, write_text  # noqa: E402
from flux_forward import (  # noqa: E402
    analytic_flops,
    diffusers_model,
    diffusers_passes,
    make_inputs,
    port_fn,
    rel_l2,
)

from psijax.models import flux  # noqa: E402
from psijax.models.flux import FluxOptions, from_tensors, preset  # noqa: E402

GRID = (64, 64)  # packed tokens of a 1024² image
TEXT_TOKENS = 512
SMOKE_GRID, SMOKE_TEXT = (8, 6), 16
PORT_VARIANTS = {  # name -> (attention, remat)
    "cudnn": ("cudnn", False),
    "cudnn_remat": ("cudnn", True),
    "xla": ("xla", False),
    "recompute": ("recompute", False),
}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn, args, repeats: int, warmup: int = 2) -> float:
    """Median wall seconds of ``fn(*args)``, jax and torch work synchronised after each call."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
        sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def width_config(args) -> flux.FluxConfig:
    if args.smoke:
        return preset("tiny64").replace(guidance_embed=True)
    return preset("dev").replace(depth=args.depth, depth_single_blocks=args.single)


# ----------------------------------------------------------------------------------------------
# 1-3: parity, speed, memory at FLUX's width
# ----------------------------------------------------------------------------------------------
def inputs_for(config, grid, num_txt, batch, seed) -> dict:
    inputs = make_inputs(config, grid, num_txt, batch, seed)
    inputs["guidance"] = np.full((batch,), 3.5, np.float32)
    return inputs


def reference_outputs(config, tensors, grid, num_txt, args, tmp) -> None:
    """Torch worker: diffusers' output and input gradient at batch 1, fp32 (TF32 off) and bf16."""
    print("\n== parity: diffusers outputs", flush=True)
    device = torch_device()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    inputs = inputs_for(config, grid, num_txt, 1, args.seed + 7)
    arrays = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model = diffusers_on(config, tensors, device, dtype)
        passes = diffusers_passes(model, inputs, device, dtype)
        fwd, fwd_bwd = passes["inference_mode"], passes["fwd_bwd"]
        x = torch.from_numpy(inputs["img"]).to(device, dtype)
        arrays[f"{name}_out"] = fwd(x).float().cpu().numpy()
        arrays[f"{name}_grad"] = fwd_bwd(x).float().cpu().numpy()
        del model
    np.savez(os.path.join(tmp, "reference.npz"), **arrays)


def parity(config, tensors, grid, num_txt, args, tmp) -> list[dict]:
    """JAX worker: the port's paths against the torch worker's float32 oracle."""
    print("\n== parity (batch 1)", flush=True)
    path = os.path.join(tmp, "reference.npz")
    if not os.path.exists(path):
        print("no diffusers outputs (the torch worker failed): parity skipped", flush=True)
        return []
    ref = np.load(path)
    inputs = inputs_for(config, grid, num_txt, 1, args.seed + 7)
    rows = []

    def row(name, out, grad):
        rows.append(
            {
                "section": "parity",
                "variant": name,
                "out_rel_l2": rel_l2(out, ref["float32_out"]),
                "grad_rel_l2": rel_l2(grad, ref["float32_grad"]),
                "finite": bool(np.isfinite(out).all() and np.isfinite(grad).all()),
            }
        )
        print(rows[-1], flush=True)

    row("diffusers bf16 (its own timestep rounding)", ref["bfloat16_out"], ref["bfloat16_grad"])
    img = jnp.asarray(inputs["img"])
    cases = [
        ("port reference fp32, precision highest", jnp.float32, FluxOptions(path="reference"), 1),
        ("port reference fp32, default precision", jnp.float32, FluxOptions(path="reference"), 0),
        ("port fast fp32, recompute, precision highest", jnp.float32, FluxOptions(), 1),
        ("port fast fp32, recompute, default precision", jnp.float32, FluxOptions(), 0),
    ]
    for name, (attention, remat) in PORT_VARIANTS.items():
        if not remat and (attention != "cudnn" or jax.default_backend() == "gpu"):
            options = FluxOptions(dtype=jnp.bfloat16, attention=attention)
            cases.append((f"port fast bf16, {name}", jnp.bfloat16, options, 0))
    cases.append(
        (
            "port fast bf16, recompute, bf16 timesteps",
            jnp.bfloat16,
            FluxOptions(dtype=jnp.bfloat16, bf16_timesteps=True),
            0,
        )
    )
    states = {}
    for name, dtype, options, highest in cases:
        if dtype not in states:
            states.clear()  # one copy of the weights on the device at a time
            states[dtype] = nnx.split(from_tensors(tensors, config, dtype=dtype))
        graphdef, state = states[dtype]
        context = jax.default_matmul_precision("highest") if highest else contextlib.nullcontext()
        with context:
            out = jax.jit(port_fn(graphdef, inputs, options, False))(state, img)
            grad = jax.jit(port_fn(graphdef, inputs, options, True))(state, img)
        row(name, np.asarray(out, np.float32), np.asarray(grad, np.float32))
    return rows


def speed_row(batch, implementation, backward, seconds, flops, compile_s, memory_bytes) -> dict:
    row = {
        "section": "speed",
        "batch": batch,
        "implementation": implementation,
        "pass": "fwd+bwd" if backward else "fwd",
        "ms": 1e3 * seconds,
        "tflops": (3 if backward else 1) * flops / seconds / 1e12,
        "compile_s": compile_s,
        "memory_gib": memory_bytes / 2**30,
    }
    print(row, flush=True)
    return row


def torch_speed(config, tensors, grid, num_txt, args) -> list[dict]:
    """Torch worker: diffusers in bf16, forward (inference_mode) and forward+backward."""
    device = torch_device()
    model = diffusers_on(config, tensors, device, torch.bfloat16)
    rows = []
    for batch in args.batches:
        print(f"\n== speed, diffusers bf16, batch {batch}", flush=True)
        inputs = inputs_for(config, grid, num_txt, batch, args.seed + batch)
        flops = analytic_flops(config, grid[0] * grid[1], num_txt, batch)["total"]
        x = torch.from_numpy(inputs["img"]).to(device, torch.bfloat16)
        passes = diffusers_passes(model, inputs, device, torch.bfloat16)
        for backward, fn in enumerate((passes["inference_mode"], passes["fwd_bwd"])):
            cuda = device == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if cuda else 0
            seconds = median_time(fn, (x,), args.repeats)
            peak = torch.cuda.max_memory_allocated() - base if cuda else math.nan
            rows.append(speed_row(batch, "diffusers", backward, seconds, flops, math.nan, peak))
    return rows


def port_speed(config, tensors, grid, num_txt, args) -> list[dict]:
    """JAX worker: the port's fast path in bf16 with each attention, with and without remat."""
    graphdef, state = nnx.split(from_tensors(tensors, config, dtype=jnp.bfloat16))
    rows = []
    for batch in args.batches:
        print(f"\n== speed, port bf16, batch {batch}", flush=True)
        inputs = inputs_for(config, grid, num_txt, batch, args.seed + batch)
        flops = analytic_flops(config, grid[0] * grid[1], num_txt, batch)["total"]
        img = jnp.asarray(inputs["img"])
        for name, (attention, remat) in PORT_VARIANTS.items():
            if attention == "cudnn" and jax.default_backend() != "gpu":
                continue
            options = FluxOptions(dtype=jnp.bfloat16, attention=attention, remat=remat)
            for backward in (False, True) if not remat else (True,):
                start = time.perf_counter()
                compiled = jax.jit(port_fn(graphdef, inputs, options, backward)).lower(state, img)
                compiled = compiled.compile()
                compile_s = time.perf_counter() - start
                try:
                    seconds = median_time(compiled, (state, img), args.repeats)
                except jax.errors.JaxRuntimeError as error:  # out of memory: recorded as such
                    print(f"port {name}, batch {batch}: {str(error)[:120]}", flush=True)
                    seconds = math.inf
                temp = compiled.memory_analysis().temp_size_in_bytes
                rows.append(
                    speed_row(batch, f"port {name}", backward, seconds, flops, compile_s, temp)
                )
    return rows


def full_size_memory(args) -> list[dict]:
    """JAX worker: FLUX-dev at 1024², batch 1, fwd+bwd, compiled against abstract bf16 weights."""
    print("\n== full-size FLUX-dev memory (abstract weights)", flush=True)
    cfg = preset("dev")
    num_img, num_txt = GRID[0] * GRID[1], TEXT_TOKENS
    spec = jax.ShapeDtypeStruct
    graphdef, state = nnx.split(
        nnx.eval_shape(lambda: flux.Flux(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16))
    )
    rows = []
    for name, (attention, remat) in PORT_VARIANTS.items():
        if attention == "cudnn" and jax.default_backend() != "gpu":
            continue
        options = FluxOptions(dtype=jnp.bfloat16, attention=attention, remat=remat)

        def grad(state, img, txt, y, t, guidance, img_ids, txt_ids, options=options):
            def scalar(img):
                model = nnx.merge(graphdef, state)
                return jnp.sum(model(img, img_ids, txt, txt_ids, t, y, guidance, options=options))

            return jax.grad(scalar)(img)

        start = time.perf_counter()
        shapes = [
            ((1, num_img, cfg.in_channels),),
            ((1, num_txt, cfg.context_in_dim),),
            ((1, cfg.vec_in_dim),),
            ((1,),),
            ((1,),),
            ((num_img, 3),),
            ((num_txt, 3),),
        ]
        args_spec = [spec(shape, jnp.float32) for (shape,) in shapes]
        compiled = jax.jit(grad).lower(state, *args_spec).compile()
        m = compiled.memory_analysis()
        rows.append(
            {
                "section": "full_memory",
                "implementation": f"port {name}",
                "pass": "fwd+bwd",
                "compile_s": time.perf_counter() - start,
                "memory_gib": m.temp_size_in_bytes / 2**30,
                "argument_gib": m.argument_size_in_bytes / 2**30,
            }
        )
        print(rows[-1], flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# 4: Ψ-Sampler end to end
# ----------------------------------------------------------------------------------------------
def psi_layout(args) -> dict:
    return psi_flux.LAYOUTS["quick" if args.smoke else "paper"]


def psi_row(name, median_s, compile_s, stats, layout) -> dict:
    # model calls one after another: the chains' first state and steps, then the SMC's steps
    sequential = 1 + layout["burn_in"] + layout["num_kept"] + layout["num_steps"]
    row = {
        "section": "psi",
        "implementation": name,
        "median_s": median_s,
        "compile_s": compile_s,
        "nfe": stats["nfe"],
        "acceptance": stats["acceptance"],
        "reward_weighted_mean": stats["reward_weighted_mean"],
        "ms_per_call": 1e3 * median_s / sequential,
    }
    print(row, flush=True)
    return row


def psi_psijax(args) -> list[dict]:
    """JAX worker: ``jit(psi_sampler)`` on the psi_flux.py problem."""
    print("\n== Ψ-Sampler end to end, psijax", flush=True)
    layout = psi_layout(args)
    _, model, cond, target, event_shape = psi_flux.build(args.seed)
    velocity_fn = flux.to_velocity_fn(model, cond)
    r = psi_flux.psijax_row(
        velocity_fn, jnp.asarray(target), event_shape, layout, args.psi_repeats, args.seed
    )
    return [psi_row("psijax (one jax.jit)", r["median_s"], r["compile_s"], r, layout)]


def psi_torch(args) -> list[dict]:
    """Torch worker: the batched PyTorch peer of psi_flux.py on the same problem and weights."""
    print("\n== Ψ-Sampler end to end, PyTorch peer", flush=True)
    device = torch_device()
    layout = psi_layout(args)
    config, model, cond, target, _ = psi_flux.build(args.seed)  # jax on the CPU here
    oracle = psi_flux.torch_model(config, model).to(device)
    peer = psi_flux.TorchPsiSampler(oracle, cond, target, batched=True, device=device)
    for n in (layout["num_chains"], layout["num_particles"]):  # warm-up
        peer.potential(torch.zeros((n, *target.shape), device=device), 0.5)
    runs = []
    for i in range(args.psi_repeats):
        sync()
        start = time.perf_counter()
        stats = peer.run(args.seed + 1000 + i, layout)
        sync()
        runs.append(time.perf_counter() - start)
        print(f"torch batched run {i}: {runs[-1]:.2f} s", flush=True)
    return [psi_row("PyTorch peer, batched", statistics.median(runs), math.nan, stats, layout)]


# ----------------------------------------------------------------------------------------------
# Weights and workers
# ----------------------------------------------------------------------------------------------
def torch_device() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    # With torch's cuDNN attention enabled, diffusers' bf16 backward failed on the H100 here
    # (torch 2.11 cu130: CUBLAS_STATUS_EXECUTION_FAILED after an illegal memory access); the
    # flash kernel works.
    torch.backends.cuda.enable_cudnn_sdp(False)
    return "cuda"


def weights(config, args) -> dict:
    """The re-randomized diffusers state dict (float32 numpy; built on the CPU, seeded)."""
    start = time.perf_counter()
    model = diffusers_model(config, args.seed)
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    print(f"weights of {config} built in {time.perf_counter() - start:.1f} s", flush=True)
    return tensors


def diffusers_on(config, tensors, device, dtype):
    import diffusers

    with torch.device("meta"):
        model = diffusers.FluxTransformer2DModel(**config.to_diffusers())
    state = {k: torch.from_numpy(v) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device, dtype).eval().requires_grad_(False)


def run_worker(args) -> list[dict]:
    """One framework per process: jax's and torch's CUDA libraries are not loaded together."""
    config = width_config(args)
    grid, num_txt = (SMOKE_GRID, SMOKE_TEXT) if args.smoke else (GRID, TEXT_TOKENS)
    parts = set(args.parts)
    tensors = weights(config, args) if parts & {"parity", "speed"} else None
    rows = []
    if args.worker == "torch":
        if "parity" in parts:
            reference_outputs(config, tensors, grid, num_txt, args, args.tmp)
        if "speed" in parts:
            rows += torch_speed(config, tensors, grid, num_txt, args)
        if "psi" in parts:
            rows += psi_torch(args)
    else:
        if "parity" in parts:
            rows += parity(config, tensors, grid, num_txt, args, args.tmp)
        if "speed" in parts:
            rows += port_speed(config, tensors, grid, num_txt, args)
        if "full" in parts and not args.smoke:
            rows += full_size_memory(args)
        if "psi" in parts:
            rows += psi_psijax(args)
    return rows


NOTES = (
    "Each framework runs in its own process (torch first, with jax on the CPU; then jax on the "
    "GPU, with torch on the CPU only to build the same seeded weights): loading both CUDA stacks "
    "into one process would let each one's libraries, allocator and threads affect the other's "
    "timings.",
    "Parity: one input (t ∈ [0.05, 0.95], guidance 3.5), the oracle is diffusers in float32 with "
    "TF32 off. 'Default precision' is jax's default on the GPU, where XLA runs float32 matmuls "
    "in TF32; 'precision highest' is `jax.default_matmul_precision('highest')` (the test suite "
    "sets it for the session). The 0.40 error of diffusers in bfloat16 is its rounding of "
    "1000·t and of the guidance to bfloat16 before the sinusoidal embedding; the port "
    "reproduces it with `bf16_timesteps=True` (same error to three digits) and avoids it by "
    "default.",
    "Speed: median of `--repeats` calls after two warm-ups, jax and torch synchronised around "
    "each call; the port jitted with the weights as arguments; diffusers eager (no "
    "torch.compile), forward under `inference_mode`, forward+backward = `autograd.grad` of "
    "sum(out·w) w.r.t. the input with frozen weights (the port: `jax.grad` of the same). "
    "torch's scaled_dot_product_attention runs its flash kernel: with its cuDNN kernel enabled "
    "the bf16 backward failed on this machine (CUBLAS_STATUS_EXECUTION_FAILED after an illegal "
    "memory access), so `torch_device()` disables it. TFLOP/s: FLOPs counted from the "
    "configuration (`flux_forward.analytic_flops`), forward+backward counted as 3× the forward.",
    "Memory: for the port, the compiled program's temp bytes (`memory_analysis()`); for torch, "
    "the peak allocation above the weights during the call. Full-size rows are compiled against "
    "abstract weights (`nnx.eval_shape`), never allocated.",
    "Ψ-Sampler: the `psi_flux.py` problem, layout and PyTorch peer (batched, float32), here on "
    "the GPU; 'ms per sequential model call' divides by the 126 calls that must run one after "
    "another (1 + 50 + 50 chain steps, 25 SMC steps).",
)


def markdown(rows: list[dict], header: str, config) -> str:
    parity_rows = [r for r in rows if r["section"] == "parity"]
    speed_rows = [r for r in rows if r["section"] == "speed"]
    full_rows = [r for r in rows if r["section"] == "full_memory"]
    psi_rows = [r for r in rows if r["section"] == "psi"]
    out = [
        "# FLUX port on a GPU: parity, speed and memory against diffusers\n",
        header + "\n",
        f"Model: FLUX-dev block shapes (hidden {config.hidden_size}, {config.num_heads} heads × "
        f"{config.head_dim}, MLP {config.mlp_hidden_dim}, guidance embedding) with "
        f"{config.depth} double + {config.depth_single_blocks} single blocks (FLUX has 19 + 38), "
        f"re-randomized weights; {GRID[0] * GRID[1]} image + {TEXT_TOKENS} text tokens (1024²).\n",
        "## Parity against diffusers fp32 (TF32 off), batch 1\n",
        "| variant | output rel. L2 | input-gradient rel. L2 | finite |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {r['variant']} | {r['out_rel_l2']:.2e} | {r['grad_rel_l2']:.2e} | {r['finite']} |"
        for r in parity_rows
    ]
    out += [
        "\n## Speed, bfloat16 (median after compilation)\n",
        "| batch | implementation | pass | ms | ratio to diffusers | TFLOP/s | compile (s) "
        "| temp / peak memory (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in speed_rows:
        torch_ms = next(
            s["ms"]
            for s in speed_rows
            if s["batch"] == r["batch"]
            and s["pass"] == r["pass"]
            and s["implementation"] == "diffusers"
        )
        compile_s = "—" if math.isnan(r["compile_s"]) else f"{r['compile_s']:.1f}"
        out.append(
            f"| {r['batch']} | {r['implementation']} | {r['pass']} | {r['ms']:.2f} "
            f"| **{r['ms'] / torch_ms:.2f}** | {r['tflops']:.0f} | {compile_s} "
            f"| {r['memory_gib']:.2f} |"
        )
    if full_rows:
        out += [
            "\n## Full-size FLUX-dev at 1024², batch 1, fwd+bwd (abstract bf16 weights)\n",
            "| variant | temp memory (GiB) | weights (GiB) | compile (s) |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {r['implementation']} | {r['memory_gib']:.2f} | {r['argument_gib']:.2f} "
            f"| {r['compile_s']:.1f} |"
            for r in full_rows
        ]
    if psi_rows:
        out += [
            "\n## Ψ-Sampler end to end (tiny64, 16×16 tokens, paper layout, float32)\n",
            "| implementation | median (s) | compile (s) | NFE | acceptance | weighted reward "
            "| ms per sequential model call |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in psi_rows:
            compile_s = "—" if math.isnan(r["compile_s"]) else f"{r['compile_s']:.1f}"
            out.append(
                f"| {r['implementation']} | {r['median_s']:.2f} | {compile_s} | {r['nfe']} "
                f"| {r['acceptance']:.2f} | {r['reward_weighted_mean']:.4f} "
                f"| {r['ms_per_call']:.1f} |"
            )
    out += ["\n## How it was measured\n", *(f"- {line}" for line in NOTES)]
    out.append(f"\nCommand: `python benchmarks/flux_gpu.py {' '.join(sys.argv[1:])}`.\n")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2, help="double blocks")
    parser.add_argument("--single", type=int, default=4, help="single blocks")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--psi-repeats", type=int, default=3)
    parser.add_argument("--parts", nargs="+", default=["parity", "speed", "full", "psi"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device, no files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=("torch", "jax"), help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.repeats, args.psi_repeats = [1], 2, 1
    if args.worker:
        if args.worker == "jax" and jax.default_backend() != "gpu" and not args.smoke:
            raise SystemExit(f"jax sees no GPU (backend {jax.default_backend()!r}).")
        rows = run_worker(args)
        if args.worker == "torch":
            where = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
            about = f"torch {torch.__version__} on {where}"
        else:
            about = machine()
        with open(os.path.join(args.tmp, f"{args.worker}.json"), "w") as f:
            json.dump({"rows": rows, "machine": about}, f)
        return
    if not (torch.cuda.is_available() or args.smoke):
        raise SystemExit("flux_gpu.py needs a CUDA GPU (--smoke runs it at tiny sizes anywhere).")
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for worker, env in (("torch", {"JAX_PLATFORMS": "cpu"}), ("jax", {})):
            command = [sys.executable, __file__, *sys.argv[1:], "--worker", worker, "--tmp", tmp]
            code = subprocess.run(command, env={**os.environ, **env}).returncode
            path = os.path.join(tmp, f"{worker}.json")
            if code or not os.path.exists(path):  # report what the other worker measured
                print(f"the {worker} worker failed (exit code {code})", flush=True)
                results[worker] = {"rows": [], "machine": f"{worker} worker failed"}
                continue
            with open(path) as f:
                results[worker] = json.load(f)
    rows = results["torch"]["rows"] + results["jax"]["rows"]
    header = f"Machine: {results['jax']['machine']}; {results['torch']['machine']}"
    text = markdown(rows, header, width_config(args))
    print(text)
    if not args.smoke:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        write_csv([{k: r.get(k, "") for k in keys} for r in rows], "flux_gpu.csv")
        write_text(text, "flux_gpu.md")


if __name__ == "__main__":
    main()
