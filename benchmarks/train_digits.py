"""Train the digits models shipped in ``psijax/models/weights/`` and report how good they are.

Reproducible from ``--seed`` on a CPU (about 15 minutes on 2 cores):

1. Data: scikit-learn's 1,797 digits (``digits.load_digits``), a fixed permutation: the first
   1,500 train the classifiers, the other 297 test them. The flows train on all 1,797.
2. Classifiers (``digits_classifiers``): the seen MLP (key ``seed + 1``) and the held-out CNN
   (key ``seed + 2``); test accuracy of each.
3. Flow: ``digits.train`` (rectified flow, class dropout 0.1, key ``seed + 3``). Samples by
   the diffrax flow map ``Φ_1`` per class; the held-out CNN's accuracy on them (chance: 0.1) and
   its class histogram of unconditional samples.
4. Reflow: ``NUM_PAIRS`` pairs ``(x1, Φ_1(x1; c))`` of the flow, classes uniform over the ten
   digits and the null class, then ``digits.train(..., noise=x1)`` (key ``seed + 4``).
   Straightness: the one-step prediction ``x̂0 = x1 − v(x1, 1)`` against the model's own
   flow-map sample, as a mean squared distance per pixel, for the flow and the reflow; and the
   held-out accuracy of one-step samples.
5. ``digits_samples.png``: per class, data, flow samples, flow one-step, reflow one-step.

``--write-weights`` writes ``psijax/models/weights/digits_{flow,reflow,mlp,cnn}.safetensors`` and
prints their sha256 (paste into ``digits.SHIPPED``). Writes ``benchmarks/results/train_digits.md``.
Usage: python benchmarks/train_digits.py [--seed 0] [--write-weights] [--quick]
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, write_text  # noqa: E402

from psijax.experiments import digits as dx  # noqa: E402
from psijax.models import digits, module_io  # noqa: E402
from psijax.models import digits_classifiers as dc  # noqa: E402

NUM_TRAIN = 1_500
NUM_PAIRS = 4_096
SAMPLES_PER_CLASS = 50
TOLERANCE = 1e-3  # of the flow-map solves (pixels in [-1, 1])


def flow_samples(model, key, labels):
    """``(x1, Φ_1(x1; label))`` per label, the batch solved as one ODE at ``TOLERANCE``
    (:func:`psijax.experiments.digits.flow_samples`)."""
    x1, x0, nfe = dx.flow_samples(model, key, labels, TOLERANCE)
    print(f"  flow map of {len(labels)} samples: {nfe} batched evaluations", flush=True)
    return x1, x0


def one_step(model, x1, labels):
    """``x1 − v(x1, 1)`` per sample, batched."""
    labels = jnp.asarray(labels)
    v = model(x1, jnp.ones((x1.shape[0],)), labels)
    return x1 - v


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-weights", action="store_true")
    parser.add_argument("--quick", action="store_true", help="few steps, to check the script")
    args = parser.parse_args()
    quick = args.quick
    flow_config = digits.TrainConfig(num_steps=200) if quick else digits.TrainConfig()
    clf_config = dc.ClassifierConfig(num_steps=200) if quick else dc.ClassifierConfig()
    num_pairs = 512 if quick else NUM_PAIRS
    lines = [
        f"# Digits models: training and quality (seed {args.seed})\n",
        f"Machine: {machine()}\n",
    ]
    log = []

    def report(text):
        print(text, flush=True)
        log.append(text)

    images, labels = digits.load_digits()
    perm = np.random.default_rng(args.seed).permutation(len(images))
    train, test = perm[:NUM_TRAIN], perm[NUM_TRAIN:]
    models = {}
    for kind, offset in (("mlp", 1), ("cnn", 2)):
        start = time.perf_counter()
        key = jax.random.key(args.seed + offset)
        models[kind], _ = jax.block_until_ready(
            dc.train_classifier(kind, key, images[train], labels[train], clf_config)
        )
        acc = dc.accuracy(models[kind], images[test], labels[test])
        report(
            f"- classifier `{kind}`: test accuracy {acc:.3f} on {len(test)} held-out images "
            f"({time.perf_counter() - start:.1f} s)"
        )

    start = time.perf_counter()
    flow, losses = jax.block_until_ready(
        digits.train(jax.random.key(args.seed + 3), images, labels, flow_config)
    )
    report(
        f"- flow: {flow_config.num_steps} steps in {time.perf_counter() - start:.1f} s, "
        f"final loss {float(losses[-200:].mean()):.4f}"
    )
    models["flow"] = flow
    cnn = models["cnn"]
    class_labels = np.repeat(np.arange(10), SAMPLES_PER_CLASS)
    x1, x0 = flow_samples(flow, jax.random.key(args.seed + 10), class_labels)
    acc = dc.accuracy(cnn, digits.to_images(x0), class_labels)
    report(f"- flow samples (Φ_1, {len(class_labels)} conditional): held-out accuracy {acc:.3f}")
    _, x0_unc = flow_samples(flow, jax.random.key(args.seed + 11), np.full(500, digits.NULL_CLASS))
    hist = np.bincount(np.asarray(jnp.argmax(cnn(digits.to_images(x0_unc)), -1)), minlength=10)
    report(f"- unconditional samples (500): held-out class histogram {hist.tolist()}")

    start = time.perf_counter()
    pair_labels = np.random.default_rng(args.seed + 4).integers(0, digits.NULL_CLASS + 1, num_pairs)
    px1, px0 = jax.block_until_ready(
        flow_samples(flow, jax.random.key(args.seed + 12), pair_labels)
    )
    report(f"- reflow pairs: {num_pairs} flow-map solves in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    reflow, losses = jax.block_until_ready(
        digits.train(
            jax.random.key(args.seed + 4), digits.to_images(px0), pair_labels, flow_config, px1
        )
    )
    report(
        f"- reflow: {flow_config.num_steps} steps in {time.perf_counter() - start:.1f} s, "
        f"final loss {float(losses[-200:].mean()):.4f}"
    )
    models["reflow"] = reflow
    grid = {"data": None}
    for name, model in (("flow", flow), ("reflow", reflow)):
        ode_x1, ode_x0 = flow_samples(model, jax.random.key(args.seed + 13), class_labels)
        step = one_step(model, ode_x1, class_labels)
        dist = float(jnp.mean((step - ode_x0) ** 2))
        acc_step = dc.accuracy(cnn, digits.to_images(step), class_labels)
        acc_ode = dc.accuracy(cnn, digits.to_images(ode_x0), class_labels)
        report(
            f"- {name}: one-step vs flow-map sample, mean squared distance per pixel {dist:.4f} "
            f"(data variance {float(images.var()):.4f}); held-out accuracy one-step "
            f"{acc_step:.3f}, flow map {acc_ode:.3f}"
        )
        grid[f"{name} Φ_1"] = ode_x0
        grid[f"{name} one step"] = step
    lines += log
    write_grid(images, labels, grid, class_labels)
    lines.append("\n![samples](digits_samples.png)\n")
    if args.write_weights:
        for name, model in models.items():
            sha = module_io.save_module(model, digits.weights_path(name))
            lines.append(f"- `digits_{name}.safetensors`: sha256 `{sha}`")
            print(f'"{name}": "{sha}",')
    lines.append(f"\nCommand: `python benchmarks/train_digits.py {' '.join(sys.argv[1:])}`\n")
    if not quick:
        write_text("\n".join(lines), "train_digits.md")


def write_grid(images, labels, grid, class_labels, per_class: int = 4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(grid)
    fig, axes = plt.subplots(10, per_class * len(names), figsize=(1.0 * per_class * len(names), 10))
    for c in range(10):
        for j, name in enumerate(names):
            if grid[name] is None:
                picks = images[labels == c][:per_class, 0]
            else:
                picks = np.asarray(digits.to_images(grid[name][class_labels == c][:per_class]))[
                    :, 0
                ]
            for k in range(per_class):
                ax = axes[c, j * per_class + k]
                ax.imshow(picks[k], cmap="gray_r", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0 and k == 0:
                    ax.set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "digits_samples.png"), dpi=60)
    plt.close(fig)


if __name__ == "__main__":
    main()
