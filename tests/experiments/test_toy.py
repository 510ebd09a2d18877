"""The toy alignment study's own logic: equal-NFE sizes, aggregation, exact mode weights."""

import math

import jax
import numpy as np
import pytest

from psijax.align import SAMPLERS
from psijax.experiments import toy, toy_report
from psijax.models import presets, reflow


@pytest.mark.parametrize(
    "name, expected",
    [
        ("smc", {"nfe_budget": 1000}),
        ("psi_sampler", {"nfe_budget": 1000}),
        ("dps", {"nfe_budget": 1000}),
        ("best_of_n", {"nfe_budget": 1000}),
        ("freedom", {"nfe_budget": 1000}),
        ("tempered_smc", {"num_particles": 20}),
        (
            "psi_sampler[flow_map]",
            {"num_particles": 20, "predictor": toy.FLOW_MAP, "num_kept": 49, "burn_in": 50},
        ),
        (
            "top_k_smc[flow_map]",
            {"num_particles": 20, "predictor": toy.FLOW_MAP, "num_candidates": 500},
        ),
        ("tempered_smc[flow_map]", {"num_particles": 20, "predictor": toy.FLOW_MAP}),
    ],
)
def test_equal_nfe_sizes_of_the_paper_layout(name, expected):
    """Every sampler takes the budget itself; the stages whose cost is not known in advance
    (tempered SMC, the adaptive flow map) get the Tweedie layout of ``nfe_budget``."""
    options = toy.sampler_options(toy.parse_method(name), 1000, 25, flow_map=toy.FLOW_MAP)
    assert options == expected


def test_budgets_are_spent_exactly():
    """``nfe_budget`` spends exactly the budget with the Tweedie predictor (the layout given to
    the flow-map variants is the same); FreeDoM's ``N·(T + K·W)`` fits in it."""
    setting = toy.build_setting(
        "six_modes_mixture", "exact", jax.random.key(0), reference_size=50, occupancy_size=1000
    )
    problem = toy.make_problem(setting)
    budget, steps = 230, 5

    def nfe(name, options):
        run = jax.jit(
            lambda key: SAMPLERS[name](key, problem, num_steps=steps, **options).nfe,
            compiler_options=toy.FAST_COMPILE,
        )
        return int(run(jax.random.key(1)))

    method = toy.parse_method("psi_sampler[flow_map]")
    options = toy.sampler_options(method, budget, steps, flow_map=toy.FLOW_MAP)
    del options["predictor"]  # the Tweedie version of the flow-map variant's layout
    assert nfe("psi_sampler", options) == budget  # 5 chains × 23, then 23 particles × 5 steps
    assert nfe("psi_sampler", {"nfe_budget": budget}) == budget
    spent = nfe("freedom", {"nfe_budget": budget})
    per_particle = steps + 3 * 2  # grid 1, .8, .6, .4, .2: t = .6 and .4 in the window
    assert spent == (budget // per_particle) * per_particle
    assert 0 <= budget - spent < per_particle


def test_parse_method_rejects_unknown_names_and_misplaced_suffixes():
    assert toy.parse_method("tempered_smc[flow_map]") == toy.Method(
        "tempered_smc[flow_map]", "tempered_smc", True
    )
    with pytest.warns(DeprecationWarning, match="tempered_smc"):
        assert toy.parse_method("tempered") == toy.Method("tempered_smc", "tempered_smc")
    with pytest.raises(ValueError, match="initial stage"):
        toy.parse_method("dps[flow_map]")
    with pytest.raises(ValueError, match="initial stage"):
        toy.parse_method("smc[flow_map]")
    with pytest.raises(ValueError, match="method must be one of"):
        toy.parse_method("hmc")
    with pytest.raises(ValueError, match="too small"):
        toy.sampler_options(toy.parse_method("smc"), 10, 25)
    with pytest.raises(ValueError, match="flow-map predictor"):
        toy.sampler_options(toy.parse_method("psi_sampler[flow_map]"), 1000, 25)


def test_mean_and_se_and_aggregate_on_known_numbers():
    mean, se = toy_report.mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 3) / 2)  # sd(ddof=1)/√n
    assert math.isnan(toy_report.mean_and_se([7.0])[1])
    rows = [
        {"preset": "p", "model": m, "budget": 10, "method": "a", "seed": s, "x": v}
        for m, values in (("exact", [1.0, 3.0]), ("reflow", [2.0, 2.0, 5.0]))
        for s, v in enumerate(values)
    ]
    summary = toy_report.aggregate(rows, ("x",))
    assert [(r["model"], r["seeds"]) for r in summary] == [("exact", 2), ("reflow", 3)]
    assert summary[0]["x"] == 2.0 and summary[0]["x_se"] == pytest.approx(1.0)
    assert summary[1]["x"] == 3.0 and summary[1]["x_se"] == pytest.approx(1.0)


@pytest.mark.parametrize("preset", ["six_modes_mixture", "unequal_rare_modes"])
def test_exact_mode_occupancy_matches_the_closed_form_weights(preset):
    """Sampled nearest-mode occupancy vs the tilted target's component weights, each component
    assigned to the data mode nearest its mean. Gate: 5 binomial standard errors plus 2e-3 for
    the mass a component puts nearer another mode (its mean is ≥ 1.2 of its std ≈ 0.45 from a
    boundary only for components of weight < 0.002)."""
    problem = presets.toy_problem(preset)
    modes, target = np.asarray(problem.data.means), problem.exact_target
    n = 100_000
    occupancy = toy.exact_mode_occupancy(target, modes, jax.random.key(3), n)
    means = np.asarray(target.means)
    nearest = np.argmin(((means[:, None, :] - modes[None]) ** 2).sum(-1), axis=1)
    closed = np.bincount(nearest, weights=np.asarray(target.weights), minlength=len(modes))
    gate = 5 * np.sqrt(closed * (1 - closed) / n) + 2e-3
    np.testing.assert_array_less(np.abs(occupancy - closed), gate)
    assert occupancy.sum() == pytest.approx(1.0, abs=1e-6)  # float32 within 4096-draw chunks


def test_evaluate_scores_weighted_and_one_hot_particle_sets():
    setting = toy.build_setting(
        "six_modes_mixture", "exact", jax.random.key(0), reference_size=500, occupancy_size=20_000
    )
    x = setting.toy.exact_target.sample(jax.random.key(5), 200)
    rewards = jax.vmap(setting.toy.reward_fn)(x)
    uniform = np.full(200, -np.log(200.0))
    m = toy.evaluate(setting, x, uniform, rewards)
    assert m["ess"] == pytest.approx(200, rel=1e-4)
    assert m["reward"] == pytest.approx(float(np.mean(rewards)), rel=1e-5)
    assert m["mode_tv"] < 0.1 and 0 <= m["mmd_fixed"] < 0.02
    # best-of-N: one sample carries all the weight; the others may be NaN
    one_hot = np.where(np.arange(200) == 3, 0.0, -np.inf)
    x_nan = np.asarray(x).copy()
    x_nan[10] = np.nan
    m1 = toy.evaluate(setting, x_nan, one_hot, np.where(np.arange(200) == 10, np.nan, rewards))
    assert m1["ess"] == pytest.approx(1.0) and m1["reward"] == pytest.approx(float(rewards[3]))
    assert all(math.isfinite(v) for v in m1.values()) and m1["mmd_fixed"] > m["mmd_fixed"]


def test_markdown_table_lists_every_method_with_mean_and_se():
    setting = toy.build_setting(
        "six_modes_mixture", "exact", jax.random.key(0), reference_size=50, occupancy_size=1000
    )
    row = {k: 1.0 for k in toy.METRICS} | {f"{k}_se": 0.01 for k in toy.METRICS}
    keys = {"preset": "six_modes_mixture", "model": "exact", "budget": 1000}
    summary = [keys | row | {"method": m} for m in ("psi_sampler", "smc")]
    summary[1]["mode_tv"], summary[1]["mode_tv_se"] = 0.4012861, 1.9e-8
    text = toy_report.format_markdown(summary, [setting])
    assert "| psi_sampler | 1.000 ± 0.010 |" in text and "| smc |" in text
    assert "0.4013 ± 0.0000 |" in text  # a vanishing SE does not print nine digits


def test_shipped_reflow_models_load_by_name():
    velocity, _, config = reflow.load_reflow("unequal_six_modes")
    assert config.dim == 2 and velocity(np.zeros(2, np.float32), 1.0).shape == (2,)
    assert reflow.load_six_modes()[2] == reflow.load_reflow("six_modes")[2]
    with pytest.raises(ValueError, match="must be one of"):
        reflow.load_reflow("nine_modes")


def test_smc_limit_of_the_distilled_models_is_at_the_iid_floor():
    """The N → ∞ limit of every SMC (IS of 2,000 draws of the 4-step re-noising sampler) on the
    rare-mode preset with the learned and the oracle distilled models scores like i.i.d. exact
    target draws of its ESS (a z-gate on the fixed-bandwidth MMD² over 12 such sets); the
    reflowed model with the stochastic sampler, the limit the paper's setting had, does not
    (benchmarks/results/toy_gmm.md: MMD² 0.106)."""
    key = jax.random.key(1)
    limits = {}
    for model in ("distilled", "oracle", "reflow"):
        setting = toy.build_setting("unequal_rare_modes", model, key, occupancy_size=20_000)
        limits[model] = toy.sampler_target_row(setting, budget=0, num_steps=4, num_samples=2000)
    ess = int(limits["distilled"]["ess"])
    assert 100 < ess < 200
    floor = [r["mmd_fixed"] for r in toy.reference_rows(setting, ess, budget=0, seeds=12)]
    mean, sd = np.mean(floor), np.std(floor, ddof=1)
    for model in ("distilled", "oracle"):
        assert abs(limits[model]["mmd_fixed"] - mean) / sd < 4.5, (model, limits[model], mean, sd)
    assert (limits["reflow"]["mmd_fixed"] - mean) / sd > 4.5
    assert limits["distilled"]["nfe"] != limits["distilled"]["nfe"]  # NaN: not a method's cost
