"""Train the masked-diffusion digits models shipped in ``psijax/models/weights/`` and judge them.

Reproducible from ``--seed`` on a CPU (``psijax.models.masked_digits``). For each token set
(``binary``: V = 2, ``grey``: V = 17):

1. Data: scikit-learn's 1,797 digits as 64-token sequences (``masked_digits.to_tokens``).
2. Training: ``masked_digits.train`` (MDLM loss, linear schedule, Adam with cosine decay, key
   ``seed + 1`` for binary, ``seed + 2`` for grey); the last 200 steps' mean loss (a bound on
   the negative log-likelihood per token, in nats).
3. Unguided samples: ``SAMPLES`` sequences from the one-token sampler (64 steps, one position
   per step: exact for a consistent denoiser), key ``seed + 3``. Measured:
   - the held-out CNN's (``digits.load("cnn")``) class histogram of the samples, against the
     data's, as a total-variation distance, and its mean confidence;
   - nearest-neighbour distance (RMS per pixel) of each sample to the training images, against
     the leave-one-out distance of the data to itself; the share of exact copies;
   - binary only: the model's exact per-pixel marginals, the denoiser at the all-masked state
     ``μ(· | m^64)``, and the samples' pixel frequencies, both against the data's frequencies.
4. ``masked_digits_samples.png``: a grid of samples per token set (not committed).

``--classifiers`` instead asks whether the digits classifiers need retraining for binarised
images: it trains the seen MLP (key ``seed + 11``) and the held-out CNN (key ``seed + 12``) of
``digits_classifiers`` on them, with the split of ``benchmarks/train_digits.py`` (a fixed
permutation: 1,500 train, 297 test), with the default settings and with stronger pixel noise
and weight decay, and reports their test accuracy beside that of the shipped classifiers on the
same binarised images (writes ``benchmarks/results/train_masked_digits_classifiers.md``). The
stronger settings, ``masked_digits.BINARY_CLASSIFIERS``, give the classifiers shipped for the
binary token set: ``--classifiers --write-weights`` writes
``psijax/models/weights/digits_{mlp,cnn}_binary.safetensors`` (paste the printed sha256 into
``masked_digits.CLASSIFIERS``); without ``--write-weights`` it says whether the retrained
classifiers are the shipped files bit for bit.

``--write-weights`` writes ``psijax/models/weights/masked_digits_{binary,grey}.safetensors`` and
prints their sha256 (paste into ``masked_digits.SHIPPED``); without it the script says whether
it rewrote the shipped files bit for bit, and if not, how far the weights are from them. It does
on the CPU that trained them; another CPU model rounds differently and gives the same models to
float rounding (measured in the results' notes). Writes
``benchmarks/results/train_masked_digits.md``.
Usage: python benchmarks/train_masked_digits.py [--seed 0] [--write-weights] [--quick]
       [--classifiers]
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, write_or_check, write_text  # noqa: E402

from psijax.discrete.sampling import sample  # noqa: E402
from psijax.models import digits  # noqa: E402
from psijax.models import digits_classifiers as dc  # noqa: E402
from psijax.models import masked_digits as md  # noqa: E402
from psijax.models import masked_transformer as mt  # noqa: E402

SAMPLES = 500
NUM_TRAIN = 1_500  # the classifiers' split, as in benchmarks/train_digits.py


def nearest_distances(a: np.ndarray, b: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
    """RMS-per-pixel distance of each row of ``a`` to its nearest row of ``b``."""
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).mean(-1)
    if leave_one_out:
        np.fill_diagonal(d2, np.inf)
    return np.sqrt(d2.min(1))


def judge(model, token_set: str, tokens: np.ndarray, images: np.ndarray, labels, key) -> dict:
    vocab = md.TOKEN_SETS[token_set]
    logits_fn = mt.logits_fn(model)
    draw = jax.jit(
        jax.vmap(
            lambda k: sample(
                k, logits_fn, md.LENGTH, vocab, num_steps=md.LENGTH, kernel="one_token"
            )
        )
    )
    start = time.perf_counter()
    samples = np.asarray(draw(jax.random.split(key, SAMPLES)))
    sample_s = time.perf_counter() - start
    sample_images = np.asarray(md.tokens_to_images(samples, token_set))
    data_images = np.asarray(md.tokens_to_images(tokens, token_set))
    cnn = digits.load("cnn")
    probs = np.exp(np.asarray(dc.log_probs(cnn, sample_images)))
    hist = np.bincount(probs.argmax(1), minlength=10) / SAMPLES
    data_hist = np.bincount(np.asarray(labels), minlength=10) / len(labels)
    flat_s, flat_d = sample_images.reshape(SAMPLES, -1), data_images.reshape(len(tokens), -1)
    nn = nearest_distances(flat_s, flat_d)
    nn_data = nearest_distances(flat_d, flat_d, leave_one_out=True)
    out = dict(
        token_set=token_set,
        sample_s=sample_s,
        class_hist=np.round(hist, 3).tolist(),
        class_tv=float(0.5 * np.abs(hist - data_hist).sum()),
        cnn_confidence=float(probs.max(1).mean()),
        nn_median=float(np.median(nn)),
        nn_data_median=float(np.median(nn_data)),
        copies=float(np.mean(nn == 0.0)),
        data_copies=float(np.mean(nn_data == 0.0)),
    )
    if vocab == 2:
        mask = jnp.full((md.LENGTH,), vocab)
        logits = logits_fn(jax.nn.one_hot(mask, vocab + 1), jnp.float32(1.0))
        exact = np.asarray(jax.nn.softmax(logits[:, :vocab], axis=-1)[:, 1])
        freq = tokens.mean(0)
        out.update(
            marginal_max_error=float(np.abs(exact - freq).max()),
            marginal_mean_error=float(np.abs(exact - freq).mean()),
            sample_freq_max_error=float(np.abs(samples.mean(0) - freq).max()),
            sample_freq_noise=float(np.sqrt(freq * (1 - freq) / SAMPLES).max()),
        )
    return out, samples


def train_classifiers(args, images, labels, header: str) -> None:
    """The classifiers retrained on binarised images (module docstring)."""
    perm = np.random.default_rng(args.seed).permutation(len(images))
    train, test = perm[:NUM_TRAIN], perm[NUM_TRAIN:]
    binary = np.asarray(md.tokens_to_images(md.to_tokens(images, "binary"), "binary"))
    steps = 50 if args.quick else dc.ClassifierConfig().num_steps
    text = "# Digits classifiers on binarised images\n\n" + header + "\n"
    sha = {}
    for offset, kind in ((11, "mlp"), (12, "cnn")):
        shipped = md.BINARY_CLASSIFIERS[kind]
        configs = {
            "default": dc.ClassifierConfig(num_steps=steps),
            f"noise {shipped.noise}, weight decay {shipped.weight_decay}; shipped": shipped,
        }
        acc = dc.accuracy(digits.load(kind), binary[test], labels[test])
        text += f"- `{kind}` trained on grey images (shipped for `grey`): {acc:.3f}\n"
        for name, config in configs.items():
            start = time.perf_counter()
            key = jax.random.key(args.seed + offset)
            model, _ = jax.block_until_ready(
                dc.train_classifier(
                    kind, key, binary[train], labels[train], config._replace(num_steps=steps)
                )
            )
            acc = dc.accuracy(model, binary[test], labels[test])
            text += (
                f"- `{kind}` trained on binarised images ({name}): {acc:.3f} "
                f"({time.perf_counter() - start:.0f} s)\n"
            )
        if not args.quick:  # the last one is the shipped configuration
            path = md.classifier_path(kind, "binary")
            sha[kind] = write_or_check(model, path, md.CLASSIFIERS.get(kind), args.write_weights)
    text += (
        f"\nTest accuracy on the {len(test)} binarised test images (standard error about "
        f"{np.sqrt(0.96 * 0.04 / len(test)):.3f} at 0.96). The shipped binary classifiers "
        "(`masked_digits.classifier(kind, 'binary')`), sha256:\n\n"
    )
    text += "".join(f"- `{kind}`: {value}\n" for kind, value in sha.items())
    print(text)
    if not args.quick:
        write_text(text, "train_masked_digits_classifiers.md")


def plot(samples: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), 16, figsize=(16, 1.1 * len(samples)), squeeze=False)
    for row, (token_set, s) in enumerate(samples.items()):
        images = np.asarray(md.tokens_to_images(s[:16], token_set))
        for col in range(16):
            axes[row, col].imshow(images[col, 0], cmap="gray_r", vmin=-1, vmax=1)
            axes[row, col].axis("off")
        axes[row, 0].set_title(token_set, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=md.TrainConfig().num_steps)
    parser.add_argument("--write-weights", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a few steps, for a smoke test")
    parser.add_argument("--token-sets", nargs="+", default=list(md.TOKEN_SETS))
    parser.add_argument("--classifiers", action="store_true", help="the binary classifiers")
    args = parser.parse_args()
    header = f"Machine: {machine()}\n"
    print(header, flush=True)
    images, labels = digits.load_digits()
    if args.classifiers:
        train_classifiers(args, images, labels, header)
        return
    config = md.TrainConfig(num_steps=20 if args.quick else args.steps)
    lines, all_samples, sha = [], {}, {}
    for offset, token_set in enumerate(args.token_sets, start=1):
        tokens = np.asarray(md.to_tokens(images, token_set))
        start = time.perf_counter()
        model, losses = md.train(jax.random.key(args.seed + offset), tokens, token_set, config)
        losses = np.asarray(jax.block_until_ready(losses))
        train_s = time.perf_counter() - start
        final = float(losses[-200:].mean())
        print(f"{token_set}: {config.num_steps} steps in {train_s:.0f} s, loss {final:.4f}")
        report, samples = judge(
            model, token_set, tokens, images, labels, jax.random.key(args.seed + 3)
        )
        report.update(train_s=train_s, steps=config.num_steps, final_loss=final)
        print(report, flush=True)
        lines.append(report)
        all_samples[token_set] = samples
        if not args.quick:
            path = md.weights_path(token_set)
            sha[token_set] = write_or_check(
                model, path, md.SHIPPED.get(token_set), args.write_weights
            )
    text = "# Masked-diffusion digits models: training and unguided quality\n\n" + header
    text += f"\nseed {args.seed}; {SAMPLES} one-token samples (64 steps) per model.\n\n"
    for r in lines:
        text += f"## {r['token_set']} (V = {md.TOKEN_SETS[r['token_set']]})\n\n"
        text += f"- training: {r['steps']} steps in {r['train_s']:.0f} s; final MDLM loss "
        text += f"{r['final_loss']:.4f} nats per token (mean of the last 200 steps)\n"
        text += f"- held-out CNN class histogram of the samples: {r['class_hist']}; TV to the "
        text += f"data's {r['class_tv']:.3f}; mean CNN confidence {r['cnn_confidence']:.3f}\n"
        text += "- nearest-neighbour distance to the data (RMS per pixel, median): "
        text += f"{r['nn_median']:.3f}, against {r['nn_data_median']:.3f} for the data to "
        text += f"itself (leave one out); exact copies {r['copies']:.3f} "
        text += f"(data: {r['data_copies']:.3f})\n"
        if "marginal_max_error" in r:
            text += "- exact per-pixel marginals μ(· | all masked) against the data's "
            text += f"frequencies: max error {r['marginal_max_error']:.4f}, mean "
            text += f"{r['marginal_mean_error']:.4f}; the samples' frequencies: max error "
            text += f"{r['sample_freq_max_error']:.4f} (sampling noise up to "
            text += f"{r['sample_freq_noise']:.4f})\n"
        text += f"- sampling {SAMPLES} sequences: {r['sample_s']:.1f} s\n\n"
    if sha:
        text += "sha256: " + ", ".join(f"{k} {v}" for k, v in sha.items()) + "\n"
    print(text)
    if not args.quick:
        write_text(text, "train_masked_digits.md")
        plot(all_samples, os.path.join(RESULTS, "masked_digits_samples.png"))


if __name__ == "__main__":
    main()
