"""The digits models: data, packing, shipped weights (integrity, output checksum), classifiers,
samples recognised by the held-out classifier, and Ψ-Sampler raising the seen reward."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from psijax import align
from psijax.experiments.digits import flow_samples
from psijax.models import digits, module_io
from psijax.models import digits_classifiers as dc


@pytest.fixture(scope="module")
def data():
    return digits.load_digits()


@pytest.fixture(scope="module")
def shipped():
    return {name: digits.load(name) for name in ("flow", "reflow", "mlp", "cnn")}


def _flow_map_samples(model, key, labels):
    return flow_samples(model, key, labels)[1]


def test_data_are_scaled_digits(data):
    images, labels = data
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and np.bincount(labels).min() >= 170
    # sklearn's first image, first row: pixel values 0 0 5 13 9 1 0 0 (of 16) → v/8 − 1
    np.testing.assert_array_equal(images[0, 0, 0], np.array([0, 0, 5, 13, 9, 1, 0, 0]) / 8 - 1)
    assert images.min() == -1.0 and images.max() == 1.0


def test_tokens_are_flux_packing_and_invert(data):
    images = jnp.asarray(data[0][:5])
    tokens = digits.to_tokens(images)
    assert tokens.shape == (5, 16, 4)
    # token i·4 + j holds the 2×2 patch at rows 2i, 2i+1 and columns 2j, 2j+1 (row-major)
    np.testing.assert_array_equal(tokens[:, 1 * 4 + 2], images[:, 0, 2:4, 4:6].reshape(5, 4))
    np.testing.assert_array_equal(digits.to_images(tokens), images)


def test_shipped_outputs_match_the_stored_checksum(shipped):
    """Loading reproduces the outputs recorded when the weights were written."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 16, 4)), jnp.float32)
    t = jnp.array([0.2, 0.5, 0.9])
    labels = jnp.array([3, 7, digits.NULL_CLASS])
    images = digits.to_images(x)
    sums = {
        "flow": float(jnp.sum(shipped["flow"](x, t, labels))),
        "reflow": float(jnp.sum(shipped["reflow"](x, t, labels))),
        "mlp": float(jnp.sum(dc.log_probs(shipped["mlp"], images))),
        "cnn": float(jnp.sum(dc.log_probs(shipped["cnn"], images))),
    }
    for name, value in CHECKSUMS.items():
        np.testing.assert_allclose(sums[name], value, rtol=1e-4, err_msg=name)


def test_corrupted_or_mismatched_files_are_refused(shipped, tmp_path):
    copy = tmp_path / "flow.safetensors"
    shutil.copy(digits.weights_path("flow"), copy)
    with open(copy, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="sha256"):
        module_io.load_module(lambda: digits.DigitsFlow(nnx.Rngs(0)), copy, digits.SHIPPED["flow"])
    # a classifier file read as a flow: every flow tensor missing, every classifier one unexpected
    with pytest.raises(ValueError, match="missing .*unexpected"):
        module_io.load_module(lambda: digits.DigitsFlow(nnx.Rngs(0)), digits.weights_path("mlp"))
    with pytest.raises(ValueError, match="`name`"):
        digits.weights_path("vae")


def test_mismatched_shapes_name_the_tensor(tmp_path):
    path = tmp_path / "mlp.safetensors"
    module_io.save_module(dc.MLPClassifier(nnx.Rngs(0)), path)

    class Wider(nnx.Module):
        def __init__(self, rngs):
            self.hidden1 = nnx.Linear(64, 256, rngs=rngs)
            self.hidden2 = nnx.Linear(128, 128, rngs=rngs)
            self.out = nnx.Linear(128, 10, rngs=rngs)

    with pytest.raises(
        ValueError, match=r"'hidden1.bias' has shape \(128,\), the module expects \(256,\)"
    ):
        module_io.load_module(lambda: Wider(nnx.Rngs(0)), path)


def test_classifiers_are_accurate_on_held_out_images(shipped, data):
    """Both were trained on the first 1,500 images of the seed-0 permutation."""
    images, labels = data
    test = np.random.default_rng(0).permutation(len(images))[1500:]
    for name in ("mlp", "cnn"):
        assert dc.accuracy(shipped[name], images[test], labels[test]) >= 0.95, name


def test_conditional_samples_are_recognised_by_the_held_out_classifier(shipped):
    """Flow-map samples of each class, scored by the CNN the flow never saw: the accuracy is
    far above chance (0.1): the gate is chance + 10 binomial standard errors."""
    labels = np.repeat(np.arange(10), 20)
    for name in ("flow", "reflow"):
        x0 = _flow_map_samples(shipped[name], jax.random.key(1), labels)
        acc = dc.accuracy(shipped["cnn"], digits.to_images(x0), labels)
        assert acc > 0.1 + 10 * np.sqrt(0.1 * 0.9 / len(labels)), (name, acc)


def test_unconditional_samples_are_recognised_as_digits(shipped, data):
    """Unconditional reflow samples: the held-out CNN's class agrees with the label of the
    nearest data image (a classifier the flow never saw, of no architecture at all) far more
    often than on uniform-noise images, whose pixels also get confident but arbitrary classes.
    Gate: the agreement exceeds the noise's by 10 standard errors of the difference."""
    images, labels = data
    flat = images.reshape(len(images), 64)

    def agreement(x):
        x = np.asarray(x).reshape(-1, 64)
        d = (x**2).sum(1)[:, None] - 2 * x @ flat.T + (flat**2).sum(1)[None]
        cnn = np.asarray(dc.log_probs(shipped["cnn"], x.reshape(-1, 1, 8, 8))).argmax(1)
        return np.mean(cnn == labels[d.argmin(1)])

    n = 200
    samples = digits.to_images(_flow_map_samples(shipped["reflow"], jax.random.key(5), [10] * n))
    noise = jax.random.uniform(jax.random.key(1), (n, 1, 8, 8), minval=-1.0, maxval=1.0)
    a, b = agreement(samples), agreement(noise)
    se = np.sqrt((a * (1 - a) + b * (1 - b)) / n)
    assert a - b > 10 * se and a > 0.1 + 10 * np.sqrt(0.09 / n), (a, b)


def test_reflow_one_step_prediction_is_close_to_its_flow_map(shipped):
    """The reflowed model is nearly straight: x1 − v(x1, 1) is within a tenth of the data
    variance of its own flow-map sample, while the base flow's one-step prediction is not."""
    labels = np.repeat(np.arange(10), 10)
    distances = {}
    for name in ("flow", "reflow"):
        model = shipped[name]
        x1 = jax.random.normal(jax.random.key(2), (100, 16, 4))
        x0 = _flow_map_samples(model, jax.random.key(2), labels)
        step = x1 - model(x1, jnp.ones(100), jnp.asarray(labels))
        distances[name] = float(jnp.mean((step - x0) ** 2))
    variance = float(digits.load_digits()[0].var())
    assert distances["reflow"] < 0.1 * variance < distances["flow"], distances


def test_psi_sampler_raises_the_seen_reward(shipped):
    """Class reward log p_mlp(target | x̂0) on the unconditional reflow model: Ψ-Sampler's
    weighted mean reward beats the model's own samples on each of three fixed seeds."""
    target = 4
    model = shipped["reflow"]

    def reward(x0):
        return dc.log_probs(shipped["mlp"], digits.to_images(x0))[target]

    problem = align.RewardProblem(
        digits.velocity_fn(model, digits.NULL_CLASS), reward, event_shape=(16, 4), alpha=0.1
    )
    kw = dict(num_particles=8, num_steps=8, num_chains=4, burn_in=10, num_kept=10)
    run = jax.jit(jax.vmap(lambda key: align.psi_sampler(key, problem, **kw)))
    result = run(jax.random.split(jax.random.key(3), 3))
    weights = jax.nn.softmax(result.log_weights, axis=-1)
    aligned = np.asarray(jnp.sum(weights * result.rewards, axis=-1))
    x0 = _flow_map_samples(model, jax.random.key(4), np.full(24, digits.NULL_CLASS))
    plain = np.asarray(jax.vmap(reward)(x0)).reshape(3, 8).mean(axis=1)
    assert np.all(aligned > plain), (aligned, plain)


def test_bad_arguments_name_themselves(data):
    images, labels = data
    model = digits.DigitsFlow(nnx.Rngs(0))
    with pytest.raises(ValueError, match="`label`"):
        digits.conditioning(model, 11)
    with pytest.raises(ValueError, match="`config.class_dropout`"):
        digits.train(jax.random.key(0), images, labels, digits.TrainConfig(class_dropout=1.0))
    with pytest.raises(ValueError, match="same length"):
        digits.train(jax.random.key(0), images[:10], labels[:9])
    with pytest.raises(ValueError, match="`noise`"):
        digits.train(jax.random.key(0), images[:10], labels[:10], noise=jnp.zeros((10, 16, 3)))
    with pytest.raises(ValueError, match="`kind`"):
        dc.train_classifier("resnet", jax.random.key(0), images, labels)


def test_training_lowers_the_loss(data):
    images, labels = data
    config = digits.TrainConfig(num_steps=60, batch_size=64)
    _, losses = digits.train(jax.random.key(0), images, labels, config)
    assert float(jnp.mean(losses[-10:])) < 0.6 * float(jnp.mean(losses[:5]))


#: Sums of outputs on the fixed inputs of test_shipped_outputs_match_the_stored_checksum,
#: recorded when the shipped weights were written (benchmarks/train_digits.py, seed 0).
CHECKSUMS = {
    "flow": 118.71295928955078,
    "reflow": 121.21479797363281,
    "mlp": -300.3041076660156,
    "cnn": -538.7915649414062,
}
