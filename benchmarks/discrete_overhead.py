"""Discrete SMC overhead: one first-order SMC step against the model passes it needs, and memory.

Speed (the target of docs/algorithms.md §10.8): with a small masked-diffusion transformer
(:data:`psijax.models.masked_transformer.SMALL`: L = 64, V = 17, width 128, 4 blocks, random
seeded weights) and N = 16 particles, one SMC step with the first-order proposal and the
log-mean-exp twist over φ = 4 completions costs at most 1.15× the batched pass it needs: the
value and gradient, w.r.t. the one-hot, of the denoiser followed by the φ reward calls, written
here in plain JAX (``vmap(value_and_grad(E ↦ log mean_j exp(κ r(y_j(E)))))`` with
straight-through Gumbel-softmax completions ``y_j``). The reward is a random MLP 64 → 128 → 128
→ 1 on the grey-level image ``E[:, :V]·levels``. The SMC makes T such passes for T steps (one
at t = 1, one after every move but the last, whose weight is the exact reward), so
ratio = time(run_discrete_smc, T steps) / (T × time(pass)); a second estimate, the slope
(time(2T) − time(T)) / T per step over the pass, removes the fixed costs; a third divides by
T passes run in one ``lax.scan`` over T distinct partially masked inputs (XLA:CPU runs the
pass faster inside a loop body than as a jitted call of its own, so this is the stricter
denominator). Medians after
compilation, the calls interleaved; ESS thresholds 1.0 (resample every step) and 0.5.

Memory: the same SMC compiled abstractly (nothing is allocated) for L = 1,024, V = 50,258,
N = 16, T = 4, with a transformer of width 128 and 2 blocks and a linear reward on the one-hot,
reporting XLA's temporary buffer size (``compiled.memory_analysis()``) in GiB and in units of
one ``(N, L, V + 1)`` float32 array (3.07 GiB): the particles carry the denoiser's
log-probabilities and, for the first-order proposal, the twist gradient, each ``N·L·S`` floats.
Rows: the reverse proposal, the first-order one (dense, and ``top_k = 64``), unchunked and with
``particle_chunk`` 4 and 1.

Writes benchmarks/results/discrete_overhead.{csv,md}.
Usage: python benchmarks/discrete_overhead.py [--quick] [--skip-memory]
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved_median_times, machine, write_csv, write_text  # noqa: E402

from psijax.align import discrete as d  # noqa: E402
from psijax.models import masked_transformer as mt  # noqa: E402

TARGET = 1.15
NUM_SAMPLES = 4  # φ
BETA = 0.1


def _reward(vocab_size: int, seed: int = 1):
    """A random MLP on the grey-level image of a (soft) one-hot."""
    keys = jax.random.split(jax.random.key(seed), 3)
    sizes = [(64, 128), (128, 128), (128, 1)]
    weights = [jax.random.normal(k, s) / np.sqrt(s[0]) for k, s in zip(keys, sizes, strict=True)]
    levels = jnp.linspace(-1.0, 1.0, vocab_size)

    def reward(e):
        h = e[:, :-1] @ levels
        for w in weights[:-1]:
            h = jnp.tanh(h @ w)
        return (h @ weights[-1])[0]

    return reward


def _pass(logits_fn, reward, vocab_size, kappa):
    """The reference: value and gradient of the twist of one particle, in plain JAX."""

    def value(e, key, t):
        logits = logits_fn(e, t).at[:, -1].set(-jnp.inf)
        noise = jax.random.gumbel(key, (NUM_SAMPLES,) + logits.shape)
        perturbed = logits[None] + noise
        soft = jax.nn.softmax(perturbed, axis=-1)
        hard = jax.nn.one_hot(jnp.argmax(perturbed, axis=-1), vocab_size + 1)
        y = hard + soft - jax.lax.stop_gradient(soft)
        keep = 1.0 - jnp.sum(e[:, :-1], axis=-1, keepdims=True)
        y = keep * y + e.at[:, -1].set(0.0)
        values = jax.vmap(reward)(y)
        return jax.nn.logsumexp(kappa * values) - jnp.log(NUM_SAMPLES)

    batched = jax.vmap(jax.value_and_grad(value), in_axes=(0, 0, None))

    def looped(es, keys, t):
        """``T`` passes in one ``lax.scan`` (each at its own inputs: nothing to hoist)."""

        def body(total, xs):
            values, grads = batched(*xs, t)
            return total + jnp.sum(values) + jnp.sum(grads), None

        return jax.lax.scan(body, jnp.zeros(()), (es, keys))[0]

    return jax.jit(batched), jax.jit(looped)


def measure_speed(args) -> list[dict]:
    config = mt.SMALL if not args.quick else mt.MaskedTransformerConfig(16, 5, width=32, depth=1)
    model = mt.MaskedTransformer(config, rngs=nnx.Rngs(args.seed))
    logits_fn = mt.logits_fn(model)
    length, vocab = config.length, config.vocab_size
    reward = _reward(vocab) if length == 64 else (lambda e: jnp.mean(e[:, 0]))
    problem = d.DiscreteProblem(logits_fn, reward, length, vocab, beta=BETA)
    n, steps = args.particles, args.steps
    ref, ref_loop = _pass(logits_fn, reward, vocab, 1.0 / BETA)
    mask = jnp.full((n, length), vocab)
    e = jax.nn.one_hot(mask, vocab + 1)
    keys = jax.random.split(jax.random.key(0), n)
    # T partially masked states (a fraction i/T of random tokens masked at pass i)
    key_x, key_m, key_k = jax.random.split(jax.random.key(2), 3)
    tokens = jax.random.randint(key_x, (steps, n, length), 0, vocab)
    frac = (jnp.arange(steps) / steps)[:, None, None]
    partial = jnp.where(jax.random.uniform(key_m, tokens.shape) < frac, vocab, tokens)
    es = jax.nn.one_hot(partial, vocab + 1)
    loop_keys = jax.random.split(key_k, (steps, n))

    def smc(num_steps, threshold):
        def run(key):
            result = d.run_discrete_smc(
                key,
                problem,
                num_particles=n,
                num_steps=num_steps,
                twist=d.LogMeanExp(NUM_SAMPLES),
                proposal=d.FirstOrder(),
                ess_threshold=threshold,
            )
            return result.samples, result.log_weights, result.log_normalizer

        return jax.jit(run)

    fns = {
        "pass": (ref, (e, keys, jnp.float32(0.5))),
        "T passes": (ref_loop, (es, loop_keys, jnp.float32(0.5))),
    }
    for threshold in (1.0, 0.5):
        for num_steps in (steps, 2 * steps):
            fns[f"smc κ={threshold} T={num_steps}"] = (
                smc(num_steps, threshold),
                (jax.random.key(1),),
            )
    times = interleaved_median_times(fns, repeats=args.repeats, budget_s=args.budget)
    rows = []
    for threshold in (1.0, 0.5):
        t1, t2 = times[f"smc κ={threshold} T={steps}"], times[f"smc κ={threshold} T={2 * steps}"]
        rows.append(
            dict(
                ess_threshold=threshold,
                particles=n,
                steps=steps,
                pass_ms=1e3 * times["pass"],
                loop_pass_ms=1e3 * times["T passes"] / steps,
                smc_ms=1e3 * t1,
                smc_2T_ms=1e3 * t2,
                ratio=t1 / (steps * times["pass"]),
                ratio_slope=(t2 - t1) / (steps * times["pass"]),
                ratio_loop=t1 / times["T passes"],
            )
        )
    return rows


MEMORY_ROWS = (
    ("reverse", d.Reverse(), None),
    ("reverse", d.Reverse(), 1),
    ("first-order", d.FirstOrder(), None),
    ("first-order", d.FirstOrder(), 4),
    ("first-order", d.FirstOrder(), 1),
    ("first-order top_k=64", d.FirstOrder(top_k=64), None),
    ("first-order top_k=64", d.FirstOrder(top_k=64), 4),
    ("first-order top_k=64", d.FirstOrder(top_k=64), 1),
)


def measure_memory(length=1024, vocab=50258, n=16) -> list[dict]:
    config = mt.MaskedTransformerConfig(length, vocab, width=128, depth=2, num_heads=4)
    graphdef, state = nnx.split(
        nnx.eval_shape(lambda: mt.MaskedTransformer(config, rngs=nnx.Rngs(0)))
    )
    weight = jax.ShapeDtypeStruct((vocab + 1,), jnp.float32)
    unit = n * length * (vocab + 1) * 4
    rows = []

    def peak(compiled):
        stats = compiled.memory_analysis()
        return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes

    def reference(state, weight, keys):
        model = nnx.merge(graphdef, state)
        batched, _ = _pass(mt.logits_fn(model), lambda e: jnp.mean(e @ weight), vocab, 1 / BETA)
        e = jax.nn.one_hot(jnp.full((n, length), vocab), vocab + 1)
        return batched(e, keys, jnp.float32(0.5))

    start = time.perf_counter()
    keys = jax.random.split(jax.random.key(0), n)
    total = peak(jax.jit(reference).lower(state, weight, keys).compile())
    rows.append(
        dict(
            proposal="(the batched pass alone)",
            particle_chunk="none",
            peak_gib=total / 2**30,
            nls_units=total / unit,
            fits_16gb=total <= 16e9,
            compile_s=time.perf_counter() - start,
        )
    )
    for name, proposal, chunk in MEMORY_ROWS:

        def run(state, weight, key, proposal=proposal, chunk=chunk):
            model = nnx.merge(graphdef, state)
            problem = d.DiscreteProblem(
                mt.logits_fn(model), lambda e: jnp.mean(e @ weight), length, vocab, beta=BETA
            )
            result = d.run_discrete_smc(
                key,
                problem,
                num_particles=n,
                num_steps=4,
                twist=d.LogMeanExp(NUM_SAMPLES),
                proposal=proposal,
                particle_chunk=chunk,
            )
            return result.samples, result.log_weights, result.log_normalizer

        start = time.perf_counter()
        compiled = jax.jit(run).lower(state, weight, jax.random.key(0)).compile()
        temp = peak(compiled)
        rows.append(
            dict(
                proposal=name,
                particle_chunk="none" if chunk is None else chunk,
                peak_gib=temp / 2**30,
                nls_units=temp / unit,
                fits_16gb=temp <= 16e9,
                compile_s=time.perf_counter() - start,
            )
        )
        print(rows[-1], flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model, for tests")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--particles", type=int, default=16, help="N")
    parser.add_argument("--steps", type=int, default=16, help="T (and 2T for the slope)")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--budget", type=float, default=120.0, help="timing budget (s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    header = f"Machine: {machine()}\n"
    print(header, flush=True)
    speed = measure_speed(args)
    text = "# Discrete SMC overhead: first-order step vs its model passes, and memory\n\n" + header
    length = 16 if args.quick else 64
    text += f"\n## Speed (L = {length}, N = {args.particles}, φ = {NUM_SAMPLES})\n\n"
    text += _table(speed) + "\n\n"
    for row in speed:
        worst = max(row["ratio"], row["ratio_slope"], row["ratio_loop"])
        verdict = "PASS" if worst <= TARGET else "FAIL"
        text += (
            f"- {verdict} κ = {row['ess_threshold']}: step / pass = {row['ratio']:.3f} (total over "
            f"T), {row['ratio_slope']:.3f} (slope), {row['ratio_loop']:.3f} (against T passes in "
            f"one scan); target ≤ {TARGET}\n"
        )
    rows = [dict(kind="speed", **r) for r in speed]
    if not args.skip_memory and not args.quick:
        memory = measure_memory()
        text += "\n## Memory (compiled abstractly: L = 1,024, V = 50,258, N = 16, T = 4, φ = 4)\n\n"
        text += _table(memory) + "\n\n"
        text += (
            "- The unit is one (N, L, V + 1) float32 array, 3.07 GiB. Peak = XLA's temporary, "
            "argument and output buffers.\n"
        )
        rows += [dict(kind="memory", **r) for r in memory]
    print(text)
    if not args.quick:
        write_csv(rows, "discrete_overhead.csv")
        write_text(text, "discrete_overhead.md")


if __name__ == "__main__":
    main()
