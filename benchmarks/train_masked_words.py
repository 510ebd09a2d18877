"""Train the masked-diffusion words model and its seen classifier, shipped in
``psijax/models/weights/``, and judge them.

Reproducible from ``--seed`` on a CPU (``psijax.models.masked_words``):

1. Data: the ``gcide`` words (3–12 letters) as 12-token sequences (``masked_words.encode``).
2. Denoiser: ``masked_words.train`` (MDLM loss, ``masked_words.TRAIN``, key ``seed + 1``);
   the last 200 steps' mean loss (a bound on the negative log-likelihood per position).
3. Seen classifier: ``masked_words.train_classifier`` (key ``seed + 2``) on the words against
   ``NON_WORDS`` strings of ``non_words(seed + 3, …)`` and those of ``MODEL_NEGATIVES``
   samples of the new denoiser (MDLM kernel, 16 steps, key ``seed + 6``) that are not
   ``gcide`` words. Judged on strings it never saw: ``web2`` words that are not ``gcide``
   words (real words: its acceptance rate), fresh non-words (``non_words(seed + 4, …)``, in
   neither list), and the fresh unguided samples of 4 (acceptance of the valid and of the
   other samples; the held-out validity of the 5 % it scores highest).
4. Unguided samples: ``SAMPLES`` sequences from the one-token sampler (12 steps, one position
   per step), key ``seed + 5``: the share well formed, memorised (a training word), valid by
   the held-out judge (a ``web2`` word), novel and valid (``web2`` but not ``gcide``); the
   seen classifier's acceptance; the length histogram and the letter frequencies against the
   data's (total variation); the edit distance to the nearest training word; and the exact
   marginals ``μ(· | all masked)`` against the data's per-position frequencies.

``--write-weights`` writes ``psijax/models/weights/{masked_words,words_classifier}.safetensors``
and prints their sha256 (paste into ``masked_words.SHIPPED`` and ``masked_words.CLASSIFIER``);
without it the script says whether it rewrote the shipped files bit for bit. Writes
``benchmarks/results/train_masked_words.md``.
``--classifier-only`` loads the shipped denoiser instead of training it (the same file: the
training is reproducible) and retrains the classifier only.
Usage: python benchmarks/train_masked_words.py [--seed 0] [--write-weights] [--quick]
       [--classifier-only]
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_or_check, write_text  # noqa: E402

from psijax.discrete.masking import one_hot  # noqa: E402
from psijax.discrete.sampling import sample  # noqa: E402
from psijax.experiments import discrete_words as dw  # noqa: E402
from psijax.models import masked_transformer as mt  # noqa: E402
from psijax.models import masked_words as mw  # noqa: E402

SAMPLES = 2_000
NON_WORDS = 50_000  # strings made from the list (masked_words.non_words)
MODEL_NEGATIVES = 50_000  # the denoiser's own samples, of which the non-words are negatives
SAMPLER_STEPS = 16  # the MDLM steps of the study (discrete_words.NUM_STEPS)


def own_samples(model, count: int, seed: int) -> np.ndarray:
    """``count`` samples of the trained denoiser (MDLM kernel, the study's steps)."""
    logits_fn = mt.logits_fn(model)

    @jax.jit
    def draw(keys):
        def one(key):
            return sample(key, logits_fn, mw.LENGTH, mw.VOCAB, num_steps=SAMPLER_STEPS)

        return jax.lax.map(one, keys, batch_size=256)

    return np.asarray(draw(jax.random.split(jax.random.key(seed), count)))


def tv(a: np.ndarray, b: np.ndarray) -> float:
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def accepts(model, strings) -> float:
    e = one_hot(jnp.asarray(mw.encode_non_words(strings)), mw.VOCAB)
    return float(jnp.mean(mw.log_p_word(model, e) > jnp.log(0.5)))


def judge(model, classifier, words, web2, key) -> dict:
    logits_fn = mt.logits_fn(model)
    draw = jax.jit(
        jax.vmap(
            lambda k: sample(
                k, logits_fn, mw.LENGTH, mw.VOCAB, num_steps=mw.LENGTH, kernel="one_token"
            )
        )
    )
    start = time.perf_counter()
    samples = np.asarray(draw(jax.random.split(key, SAMPLES)))
    sample_s = time.perf_counter() - start
    decoded = mw.decode(samples)
    gcide = set(words)
    formed = [w for w in decoded if w is not None]
    index = dw._index(words)
    dist = np.asarray([dw.nearest_edit_distance(s, index) for s in mw.letters(samples)])
    e = one_hot(jnp.asarray(samples), mw.VOCAB)
    scores = np.asarray(mw.log_p_word(classifier, e))
    seen = scores > np.log(0.5)
    lengths = lambda ws: np.bincount([len(w) for w in ws], minlength=mw.LENGTH + 1)  # noqa: E731
    letters = lambda ws: np.bincount(  # noqa: E731
        [ord(c) - 97 for w in ws for c in w], minlength=26
    )
    data = mw.encode(words)
    freq = np.stack([np.bincount(data[:, i], minlength=mw.VOCAB) for i in range(mw.LENGTH)])
    freq = freq / len(words)
    masked = jnp.full((mw.LENGTH,), mw.VOCAB)
    exact = jax.nn.softmax(logits_fn(jax.nn.one_hot(masked, mw.VOCAB + 1), 1.0)[:, :-1], -1)
    in_web2 = np.asarray([w is not None and w in web2 for w in decoded])
    return dict(
        sample_s=sample_s,
        well_formed=len(formed) / SAMPLES,
        memorised=float(np.mean([w is not None and w in gcide for w in decoded])),
        valid=float(in_web2.mean()),
        novel_valid=float(
            np.mean([w is not None and w in web2 and w not in gcide for w in decoded])
        ),
        seen_accepts=float(seen.mean()),
        seen_accepts_valid=float(seen[in_web2].mean()),
        seen_accepts_invalid=float(seen[~in_web2].mean()),
        top_valid=float(in_web2[np.argsort(-scores)[: SAMPLES // 20]].mean()),
        length_tv=tv(lengths(formed), lengths(words)),
        letter_tv=tv(letters(formed), letters(words)),
        nn_median=float(np.median(dist)),
        nn_mean=float(dist.mean()),
        nn_hist=np.bincount(np.minimum(dist, 4), minlength=5).tolist(),
        marginal_max_error=float(np.abs(np.asarray(exact) - freq).max()),
        examples=[w if w is not None else "(malformed)" for w in decoded[:24]],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=mw.TRAIN.num_steps)
    parser.add_argument("--write-weights", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a few steps, for a smoke test")
    parser.add_argument(
        "--classifier-only",
        action="store_true",
        help="load the shipped denoiser (sha-checked) instead of training it: the same file, "
        "seven minutes sooner",
    )
    args = parser.parse_args()
    header = f"Machine: {machine()}\n"
    print(header, flush=True)
    words, web2 = mw.load_words("gcide"), frozenset(mw.load_words("web2"))
    tokens = mw.encode(words)
    config = mw.TRAIN._replace(num_steps=20 if args.quick else args.steps)
    start = time.perf_counter()
    if args.classifier_only:
        model, losses = mw.load(), np.full(200, np.nan)
    else:
        model, losses = mw.train(jax.random.key(args.seed + 1), tokens, config)
        losses = np.asarray(jax.block_until_ready(losses))
    train_s = time.perf_counter() - start
    print(f"denoiser: {config.num_steps} steps in {train_s:.0f} s, loss {losses[-200:].mean():.4f}")

    start = time.perf_counter()
    made = mw.non_words(args.seed + 3, words, NON_WORDS)
    drawn = own_samples(model, 200 if args.quick else MODEL_NEGATIVES, args.seed + 6)
    gcide = set(words)
    own = drawn[[w is None or w not in gcide for w in mw.decode(drawn)]]
    negatives = np.concatenate([mw.encode_non_words(made), own])
    negatives_s = time.perf_counter() - start
    cconfig = mw.ClassifierConfig()
    if args.quick:
        cconfig = cconfig._replace(num_steps=20)
    start = time.perf_counter()
    classifier, closses = mw.train_classifier(
        jax.random.key(args.seed + 2), tokens, negatives, cconfig
    )
    closses = np.asarray(jax.block_until_ready(closses))
    classifier_s = time.perf_counter() - start
    unseen_words = sorted(web2 - set(words))
    seen_negatives = set(made)
    fresh = [
        s
        for s in mw.non_words(args.seed + 4, words, 20_000)
        if s.replace("_", "") not in web2 and s not in seen_negatives
    ]
    report = judge(model, classifier, words, web2, jax.random.key(args.seed + 5))
    print(report, flush=True)
    sha = {}
    if not args.quick and not args.classifier_only:
        sha["masked_words"] = write_or_check(
            model, mw.weights_path(), mw.SHIPPED, args.write_weights
        )
    if not args.quick:
        sha["words_classifier"] = write_or_check(
            classifier, mw.classifier_path(), mw.CLASSIFIER, args.write_weights
        )
    r = report
    text = "# Masked-diffusion words model: training and unguided quality\n\n" + header
    text += f"\nseed {args.seed}; {len(words):,} `gcide` words (3–12 letters), "
    text += f"{len(web2):,} `web2` words (the held-out judge).\n\n"
    text += "## Denoiser\n\n"
    if args.classifier_only:
        text += "- the shipped denoiser (`--classifier-only`)\n\n"
    else:
        text += f"- training: {config.num_steps} steps of {config.batch_size} in {train_s:.0f} s; "
        text += f"final MDLM loss {losses[-200:].mean():.4f} nats per position (last 200 steps)\n\n"
    text += "## Seen classifier\n\n"
    text += f"- negatives: {len(made):,} strings made from the list and {len(own):,} of the "
    text += f"denoiser's {len(drawn):,} own samples ({SAMPLER_STEPS} MDLM steps) that are not "
    text += f"training words, in {negatives_s:.0f} s; "
    text += f"{cconfig.num_steps} steps in {classifier_s:.0f} s; final loss "
    text += f"{closses[-200:].mean():.4f}\n"
    text += f"- accepts {accepts(classifier, unseen_words):.3f} of the {len(unseen_words):,} "
    text += "`web2` words it never saw (not in `gcide`), and "
    text += f"{accepts(classifier, fresh):.3f} of {len(fresh):,} fresh non-words (in neither "
    text += "list)\n\n"
    text += f"## {SAMPLES} unguided samples (one-token sampler, 12 steps)\n\n"
    text += f"- well formed {r['well_formed']:.3f}; a training word (memorised) "
    text += f"{r['memorised']:.3f}; a `web2` word (held-out valid) {r['valid']:.3f}; "
    text += f"novel and valid (`web2`, not `gcide`) {r['novel_valid']:.3f}\n"
    text += f"- the seen classifier accepts {r['seen_accepts']:.3f} of them: "
    text += f"{r['seen_accepts_valid']:.3f} of the valid ones, {r['seen_accepts_invalid']:.3f} "
    text += f"of the others; {r['top_valid']:.3f} of the 5 % it scores highest are valid\n"
    text += f"- length histogram TV to the data's {r['length_tv']:.3f}; letter frequencies TV "
    text += f"{r['letter_tv']:.3f}\n"
    text += f"- edit distance to the nearest training word: mean {r['nn_mean']:.2f}, median "
    text += f"{r['nn_median']:.0f}; histogram 0/1/2/3/≥4: {r['nn_hist']}\n"
    text += "- exact marginals μ(· | all masked) against the data's per-position frequencies: "
    text += f"max error {r['marginal_max_error']:.4f}\n"
    text += f"- sampling {SAMPLES}: {r['sample_s']:.1f} s\n"
    text += f"- first samples: {', '.join(r['examples'])}\n\n"
    if sha:
        text += "sha256: " + ", ".join(f"{k} {v}" for k, v in sha.items()) + "\n"
    print(text)
    if not args.quick:
        write_text(text, "train_masked_words.md")


if __name__ == "__main__":
    main()
