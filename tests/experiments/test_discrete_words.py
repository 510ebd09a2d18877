"""The masked-diffusion words study at a small size (the full study is
benchmarks/discrete_words.py): the seen reward, the held-out judge, realism, equal-budget runs,
the references, the hacking check and the tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax.align.discrete import FirstOrder
from psijax.discrete.masking import one_hot
from psijax.experiments import discrete_study as ds
from psijax.experiments import discrete_words as dw
from psijax.models import masked_words as mw


@pytest.fixture(scope="module")
def models():
    return dw.load_models()


@pytest.fixture(scope="module")
def pool(models):
    return ds.unguided_pool(models, 64, num_steps=8)


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[:], i
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
    return row[-1]


def test_tasks_and_the_seen_reward(models):
    with pytest.raises(ValueError, match="`name` must be one of"):
        dw.make_task("rhyme")
    with pytest.raises(ValueError, match="one letter a-z"):
        dw.make_task("letter", "qu")
    with pytest.raises(ValueError, match="must be 'any'"):
        dw.make_task("word", "q")
    with pytest.raises(ValueError, match="`alpha` must be finite and > 0"):
        dw.make_task("word", alpha=0.0)
    e = one_hot(jnp.asarray(mw.encode(["quiet", "house"])), mw.VOCAB)
    word = jax.vmap(models.reward("word", -1))(e)
    np.testing.assert_allclose(word, mw.log_p_word(models.classifier, e), rtol=1e-6)
    q = dw.make_task("letter", "q")
    letter = jax.vmap(models.reward("letter", q.param))(e)
    # the letter term: 0 for a sequence with a q, log δ = −LETTER_PENALTY without one
    np.testing.assert_allclose(letter - word, [0.0, -dw.LETTER_PENALTY], atol=1e-5)
    grad = jax.grad(models.reward("letter", q.param))(e[1])
    assert bool(jnp.all(jnp.isfinite(grad))) and float(grad[:, 16].sum()) > 0  # more q helps
    problem = ds.make_problem(models, "letter", q.param, 0.25)
    np.testing.assert_allclose(problem.reward(e[1]), 4.0 * letter[1], rtol=1e-5)


def test_nearest_edit_distance_is_exact(models):
    rng = np.random.default_rng(0)
    vocab = [w for w in mw.load_words("gcide")[::400]]
    index = dw._index(vocab)
    queries = ["", "a", "qqqqzz", "abcdefghijkl"] + [
        "".join(rng.choice(list("etaoinshrdlu"), size=rng.integers(3, 12))) for _ in range(12)
    ]
    for word in queries + vocab[:3]:
        want = min(_levenshtein(word, v) for v in vocab)
        assert dw.nearest_edit_distance(word, index) == want, word


def test_evaluate_scores_words_and_ignores_zero_weight_particles(models):
    task = dw.make_task("letter", "q")
    tokens = mw.encode(["quiet", "qoqoqo", "house", "cat"])
    tokens = np.concatenate([tokens, np.full((1, 12), 99)])  # garbage with zero weight
    log_w = np.log([0.4, 0.3, 0.2, 0.1, 1e-300]) * np.array([1, 1, 1, 1, np.inf])
    got = dw.evaluate(models, task, tokens, log_w)
    # web2 has "quiet" (with a q); "qoqoqo" is in neither list; the others lack a q
    assert ("quiet" in models.judge, "qoqoqo" in models.judge) == (True, False)
    assert got["heldout"] == pytest.approx(0.4)
    dist = [dw.nearest_edit_distance(w, models.train) for w in ("quiet", "qoqoqo")]
    assert dist[0] == 0 and dist[1] >= 1
    assert got["nn_dist"] == pytest.approx(0.3 * dist[1], abs=1e-9)
    assert got["novel"] == pytest.approx(0.4 * ("quiet" not in models.train.words))
    assert got["ess"] == pytest.approx(1 / (0.16 + 0.09 + 0.04 + 0.01))
    # every weight zero (or NaN from a model): an ESS of 0 and no plausible score
    empty = dw.evaluate(models, task, tokens, np.full(5, -np.inf))
    assert empty["ess"] == 0.0 and empty["best_reward"] == -np.inf
    assert all(np.isnan(empty[k]) for k in ("heldout", "nn_dist", "best_heldout", "novel"))


def test_equal_budget_runs_align_towards_the_letter(models, pool):
    tasks = [dw.make_task("letter", c) for c in ("q", "z")]
    # the tilt clipped: unclipped, the sharp word classifier's gradient turns whole sequences
    # into one letter (benchmarks/results/discrete_words.md)
    clipped = {"proposal": FirstOrder(clip=3.0)}
    out = ds.run_method(
        models, tasks, "smc_first_order", 8, betas=(0.25,), seeds=2, num_steps=8,
        options=clipped, label="clipped",
    )  # fmt: skip
    assert {r["method"] for r in out.rows} == {"clipped"}
    assert len(out.rows) == 4 and set(out.particles) == {("q", 0.25), ("z", 0.25)}
    for row in out.rows:
        assert row["token_set"] == "words" and row["nfe"] + row["reward_calls"] <= row["budget"]
        assert set(ds.METRICS) <= set(row) and 0.0 <= row["novel"] <= row["heldout"] <= 1.0
    unguided = ds.reference_rows(models, tasks[0], pool, betas=(0.25,), chunk=8, seeds=4)
    base = np.mean([r["reward"] for r in unguided if r["method"] == "model (unguided)"])
    # unguided sequences rarely hold a q (a 5 nats cost, ×4 at β = 0.25): the runs far above
    assert min(r["best_reward"] for r in out.rows) > base + 2.0
    target = [r for r in unguided if r["method"] == "target (IS)"][0]
    assert 1.0 <= target["ess"] <= 64


def test_hacking_check_study_and_tables(models, pool):
    task = dw.make_task("word")
    rows = ds.hacking_check(models, task, pool[:16], steps=(10, 40))
    assert [r["steps"] for r in rows] == [0, 10, 40]
    assert rows[2]["reward_relaxed"] > rows[0]["reward_relaxed"]
    assert all(0.0 <= r["seen_accepts"] <= 1.0 and r["nn_dist"] >= 0 for r in rows)
    tasks = [dw.make_task("letter", "x")]
    with pytest.raises(ValueError, match="variants\\['bad'\\]"):
        ds.run_study(models, tasks, (), variants={"bad": ("smc_nothing", {})})
    rows, first, _ = ds.run_study(
        models, tasks, ("best_of_n",), particles=(2,), betas={"letter": (1.0,)},
        seeds=2, pool_size=8, variants={"reverse (a variant)": ("smc_reverse", {})},
    )  # fmt: skip
    summary = ds.summarize(rows, metrics=(*ds.METRICS, "novel"))
    assert {e["method"] for e in summary} == {
        "model (unguided)",
        "target (IS)",
        "best_of_n",
        "reverse (a variant)",
    }
    assert ("letter", "x", 1.0, "reverse (a variant)", 2) in first
    assert all("novel_se" in e for e in summary)
    table = dw.sample_table(models, first, "letter", 1.0, 2)
    assert table.splitlines()[0] == "| method | letter = x |"
    assert table.count("\n") == 3
