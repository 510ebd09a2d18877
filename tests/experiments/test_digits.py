"""The digits study's own logic: rewards and held-out metrics on drawn images, task checks,
equal-NFE sizes of the flow-map initial stage, weighted evaluation, references, the hacking
check and the ``psijax digits`` command."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psijax import align, cli
from psijax.experiments import digits as dx
from psijax.experiments import digits_report
from psijax.experiments.methods import parse_method
from psijax.flows.distilled import Renoising
from psijax.models import digits


@pytest.fixture(scope="module")
def models():
    return dx.load_models("reflow")


def _rect(rows, cols, extra=()):
    """A blank image (−1) with full ink (+1) on rows × cols and at the ``extra`` pixels."""
    image = -np.ones((1, 8, 8), np.float32)
    image[0, rows[0] : rows[1], cols[0] : cols[1]] = 1.0
    for r, c in extra:
        image[0, r, c] = 1.0
    return image


def test_layout_reward_and_iou_on_drawn_images():
    images = np.stack([_rect((0, 8), (2, 5)), _rect((0, 8), (2, 5), [(7, 7)]), -np.ones((1, 8, 8))])
    narrow, left = dx.make_task("layout", "narrow"), dx.make_task("layout", "left")
    # ink 1 on the 24 pixels of columns 2-4: narrow box = exactly them; left box has 40 pixels
    np.testing.assert_allclose(dx.layout_reward(images, narrow.param), [1.0, 1 - 1 / 40, 0.0])
    np.testing.assert_allclose(dx.layout_reward(images, left.param), [0.6, 0.6 - 1 / 24, 0.0])
    boxes, found = dx.ink_bounding_box(images)
    np.testing.assert_array_equal(boxes[:2], [[0, 8, 2, 5], [0, 8, 2, 8]])
    np.testing.assert_array_equal(found, [True, True, False])
    # the stray pixel at (7, 7) stretches the box to columns 2-7: IoU 24/48 with narrow
    np.testing.assert_allclose(dx.box_iou(images, narrow.box), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(dx.box_iou(images, left.box), [0.6, 24 / 64, 0.0], rtol=1e-6)
    # a pixel at exactly the threshold (0) is not ink
    half = _rect((0, 8), (2, 5), [])
    half[0, 0, 7] = 0.0
    np.testing.assert_allclose(dx.box_iou(half[None], narrow.box), [1.0])


def test_nearest_data_distance(models):
    data = models.data
    np.testing.assert_allclose(dx.nearest_data_distance(data[:5], data), 0.0, atol=1e-5)
    moved = data[:3] + 0.1
    exact = ((moved.reshape(3, 1, 64) - data.reshape(1, -1, 64)) ** 2).mean(-1).min(-1)
    np.testing.assert_allclose(dx.nearest_data_distance(moved, data), exact, rtol=1e-4)


def test_make_task_checks_name_its_argument():
    assert dx.make_task("class", "7").param == 7 and dx.make_task("class", 7).alpha == 0.1
    task = dx.make_task("layout", (1, 7, 2, 6), alpha=0.2)
    assert task.box == (1, 7, 2, 6) and task.param.sum() == 24 and task.alpha == 0.2
    for args, match in [
        (("color", 1), "`task`"),
        (("class", 10), "digit 0-9"),
        (("class", True), "digit 0-9"),
        (("layout", "top"), "one of"),
        (("layout", (0, 9, 0, 4)), "row0 < row1 <= 8"),
        (("layout", (0, 8, 0, 8)), "whole image"),
        (("class", 3, 0.0), "`alpha`"),
        (("class", 3, math.inf), "`alpha`"),
    ]:
        with pytest.raises(ValueError, match=match):
            dx.make_task(*args)


def test_euler_flow_map_is_the_euler_solve():
    """On v(x, t) = x each Euler step from t to t − t/K multiplies x by 1 − t/K."""
    predictor = dx.euler_flow_map(2)
    x0, nfe = predictor(lambda x, t: x, jnp.ones(3), 0.8)
    np.testing.assert_allclose(x0, (1 - 0.4) ** 2 * np.ones(3), rtol=1e-6)
    assert int(nfe) == 2
    with pytest.raises(ValueError, match="`flow_map_steps`"):
        dx.euler_flow_map(0)


def test_flow_map_initial_stage_spends_the_budget(models):
    """psi_sampler[flow_map] with 4-step Euler predictions: chains shortened 4-fold so the run
    spends exactly the budget, and the rows are the evaluation of the returned particles."""
    method = parse_method("psi_sampler[flow_map]")
    options = dx.method_options(method, 1000, 25, 0.1, 4)
    assert options["nfe_budget"] == 1000 and options["predictor"].nfe_per_call == 4
    stage = dataclasses.replace(align.psi_sampler.init, predictor=options["predictor"])
    num_particles, sized = align.budget_layout(stage, 1000, 25)
    assert (sized.num_kept, sized.burn_in, num_particles) == (12, 12, 20)
    # B = 240, T = 12: 5 chains × (3 + 2 + 1) states × 4 evaluations = 120, then 10 particles
    # × 12 steps
    task = dx.make_task("class", 4)
    out = dx.run_method(models, [task], method, budget=240, num_steps=12, seeds=1)
    (row,) = out.rows
    assert row["nfe"] == 240 and row["num_particles"] == 10
    tokens, weights = out.particles["4"]
    log_w = np.log(np.maximum(weights, 1e-300))
    reward = jax.vmap(dx.seen_reward(models, "class", 4))(jnp.asarray(tokens))
    again = dx.evaluate(models, task, tokens, log_w, reward)
    for name in ("reward", "heldout", "best_reward", "ess"):
        np.testing.assert_allclose(row[name], again[name], rtol=1e-4, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="too small"):
        dx.method_options(method, 100, 4, 0.1, 4)
    with pytest.raises(ValueError, match=r"num_particles=25 > num_chains\*num_kept=10"):
        dx.method_options(method, 200, 4, 0.1, 4)


def test_runs_take_the_kernel_of_the_model(models):
    """``transition=Renoising()`` reaches the problem every sampler runs: the run completes with
    finite numbers, and its program differs from the stochastic sampler's."""
    task = dx.make_task("class", 4)
    problem = dx.make_problem(models, "class", 4, 0.1, Renoising())
    assert isinstance(problem.transition, Renoising)
    (row,) = dx.run_method(
        models, [task], "tds", budget=12, num_steps=3, seeds=1, transition=Renoising()
    ).rows
    assert np.isfinite(row["reward"]) and np.isfinite(row["nn_dist"]) and row["nfe"] == 12
    key = jax.random.key(0)
    programs = {
        str(jax.make_jaxpr(lambda k, p=p: align.tds(k, p, num_particles=2, num_steps=3))(key))
        for p in (problem, dx.make_problem(models, "class", 4, 0.1))
    }
    assert len(programs) == 2


def test_evaluate_weights_and_ignores_zero_weight_particles(models):
    task = dx.make_task("class", 0)
    data, labels = digits.load_digits()
    zero, one = data[labels == 0][:1], data[labels == 1][:1]
    tokens = digits.to_tokens(jnp.asarray(np.concatenate([zero, one, one])))
    tokens = tokens.at[2].set(jnp.nan)
    log_w = jnp.log(jnp.array([0.25, 0.75, 0.0]))
    rewards = jnp.array([-0.1, -5.0, 7.0])  # the zero-weight particle's reward must not win
    out = dx.evaluate(models, task, tokens, log_w, rewards)
    assert out["reward"] == pytest.approx(0.25 * -0.1 + 0.75 * -5.0)
    assert out["heldout"] == pytest.approx(0.25)  # the CNN says 0 only for the first image
    assert out["best_reward"] == pytest.approx(-0.1) and out["best_heldout"] == 1.0
    assert out["nn_dist"] == pytest.approx(0.0, abs=1e-5)
    assert out["ess"] == pytest.approx(1 / (0.25**2 + 0.75**2), rel=1e-5)


def test_reference_rows_weight_the_pool_by_the_tilt(models):
    task = dx.make_task("layout", "right")
    pool = digits.to_tokens(jnp.asarray(models.data[:64]))
    rows, particles = dx.reference_rows(models, task, pool, budget=100, chunk=16, seeds=4)
    assert [r["method"] for r in rows] == ["model (unguided)"] * 4 + ["target (IS)"]
    r = np.asarray(dx.layout_reward(models.data[:64], task.param))
    w = np.exp((r - r.max()) / task.alpha)
    w /= w.sum()
    assert rows[-1]["reward"] == pytest.approx(float(np.sum(w * r)), rel=1e-4)
    assert rows[-1]["ess"] == pytest.approx(float(1 / np.sum(w**2)), rel=1e-3)
    assert rows[1]["reward"] == pytest.approx(float(r[16:32].mean()), rel=1e-5)
    np.testing.assert_allclose(particles["target (IS)"][1], w, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="`pool`"):
        dx.reference_rows(models, task, pool, budget=100, chunk=16, seeds=5)


def test_hacking_check_raises_the_seen_reward_and_leaves_the_data(models):
    """Pixel ascent on the seen reward from data images: the seen reward and the distance to
    the data grow with the radius, and unconstrained ascent convinces the seen MLP fully."""
    data, labels = digits.load_digits()
    task = dx.make_task("class", 4)
    start = data[labels != 4][:16]
    rows, images = dx.hacking_check(models, task, start, radii=(0.25, 2.0), num_steps=60)
    rewards = [r["reward"] for r in rows]
    assert rewards[0] < rewards[1] < rewards[2] and rewards[2] > -0.05
    assert rows[0]["nn_dist"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["nn_dist"] < rows[1]["nn_dist"] < rows[2]["nn_dist"]
    assert rows[0]["seen_accuracy"] == 0.0 and rows[2]["seen_accuracy"] == 1.0
    assert np.max(np.abs(images[0.25] - start)) <= 0.25 + 1e-6
    table = digits_report.format_hacking(rows, "class", 4)
    assert "| start |" in table and "| 0.25 |" in table


def test_digits_cli_writes_grid_table_and_metrics(tmp_path):
    argv = ["digits", "--task", "layout", "--target", "left,1:7:2:6", "--method", "best_of_n"]
    argv += ["--budget", "40", "--steps", "4", "--seeds", "2", "--pool-size", "24"]
    argv += ["--no-progress", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    record = json.loads((tmp_path / "digits_layout.json").read_text())
    assert record["config"]["targets"] == ["left", "(1, 7, 2, 6)"]
    methods = [r["method"] for r in record["rows"]]
    assert methods.count("best_of_n") == 4 and methods.count("target (IS)") == 2
    for row in record["rows"]:
        if row["method"] == "best_of_n":  # one kept sample: its weighted mean is its own score
            assert row["nfe"] == 40 and row["num_particles"] == 10
            assert row["reward"] == pytest.approx(row["best_reward"])
            assert row["heldout"] == pytest.approx(row["best_heldout"])
    (summary,) = [r for r in record["summary"]["per_task"] if r["method"] == "best_of_n"]
    per_target = [r for r in record["summary"]["per_target"] if r["method"] == "best_of_n"]
    assert summary["reward"] == pytest.approx(np.mean([r["reward"] for r in per_target]))
    assert (tmp_path / "digits_layout.png").stat().st_size > 1000
    assert "| best_of_n |" in (tmp_path / "digits_layout.md").read_text()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--target", "11"], "--target/--alpha: .*digit 0-9"),
        (["--task", "layout", "--target", "1:7:2"], "--target/--alpha: .*row0 < row1"),
        (["--method", "hmc"], "--method/--budget"),
        (["--budget", "10", "--method", "psi_sampler[flow_map]"], "--method/--budget"),
        (["--model", "vae"], "--model"),
        (["--pool-size", "10"], "--pool-size"),
    ],
)
def test_digits_cli_rejects_bad_arguments(argv, match):
    with pytest.raises(SystemExit, match=match):
        cli.main(["digits", *argv])
