"""Populations, designs, edge cases, virtual-population selection and sensitivity,
each checked against a distribution or closed form it must reproduce."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from SALib.test_functions import Ishigami
from scipy.stats import ks_2samp, norm

import twinloop as tl
from twinloop.cohort import LowAcceptanceWarning, Population
from twinloop.cohort import sensitivity as sa
from twinloop.cohort.designs import design
from twinloop.cohort.selection import select_vpop
from twinloop.models import t1d_uva_padova as t1d
from twinloop.models.t1d_population import GROUPS as T1D_GROUPS
from twinloop.models.t1d_population import fit_table as t1d_fit_table

RANGE = {"parameter": "y0", "covariate": "weight", "kind": "range"}


def stein_pop(**extra: object) -> Population:
    spec = {
        "model": "tgi-stein",
        "covariates": {"weight": {"distribution": "lognormal", "median": 70, "cv": 0.25, "unit": "kg"}},
        "typical": {"g": 0.001, "d": 0.005, "y0": 80.0},
        "omega": {"names": ["g", "d"], "matrix": [[0.25, 0.16], [0.16, 0.16]]},
        "effects": [{"parameter": "y0", "covariate": "weight", "kind": "power", "reference": 70, "exponent": 0.5}],
    }
    spec.update(extra)
    return Population.from_dict(spec)


def test_nlme_sampling_recovers_typical_values_covariance_and_covariate_effect() -> None:
    cohort = stein_pop().sample(20_000, seed=1)
    logs = np.log(np.stack([cohort.parameter("g"), cohort.parameter("d")], axis=1))
    np.testing.assert_allclose(logs.mean(axis=0), np.log([0.001, 0.005]), atol=0.015)
    np.testing.assert_allclose(np.cov(logs.T), [[0.25, 0.16], [0.16, 0.16]], atol=0.012)
    weight = cohort.covariates["weight"].to_numpy()
    slope = np.polyfit(np.log(weight / 70), np.log(cohort.parameter("y0") / 80), 1)[0]
    assert slope == pytest.approx(0.5, abs=1e-9)  # y0 has no random effect: the effect is exact
    assert cohort.acceptance_rate == 1.0


def test_rejection_sampling_acceptance_matches_the_constraint_probability() -> None:
    # P(log(2)/g < 500) = P(log g > log(log2/500)) under log g ~ N(log 0.001, 0.25)
    pop = stein_pop(constraints=[{"expression": "log(2) / g", "upper": 500.0, "name": "doubling"}])
    cohort = pop.sample(5000, seed=2)
    expected = 1 - norm.cdf((math.log(math.log(2) / 500) - math.log(0.001)) / 0.5)
    assert np.all(np.log(2) / cohort.parameter("g") <= 500)
    assert cohort.acceptance_rate == pytest.approx(expected, abs=0.02)


def test_low_acceptance_warns_and_impossible_constraints_fail() -> None:
    pop = stein_pop(constraints=[{"expression": "g", "upper": 0.00022}])  # about 0.1 % of draws
    with pytest.warns(LowAcceptanceWarning, match="acceptance rate"):
        pop.sample(5, seed=0)
    impossible = stein_pop(constraints=[{"expression": "g", "lower": 1.0}])
    with pytest.raises(tl.InputError, match="relax the constraints"):
        impossible.sample(10, seed=0, max_draws=5000)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, "unknown keys"),
        ({"covariates": {"age": {"distribution": "gamma"}}}, "covariates.age.distribution"),
        ({"omega": {"names": ["g"], "matrix": [[-1.0]]}}, "positive semi-definite"),
        ({"omega": {"names": ["k1"], "matrix": [[0.1]]}}, "no typical value"),
        ({"typical": {"g": -1}}, "typical.g must be > 0"),
        ({"effects": [{"parameter": "g", "covariate": "height", "kind": "power", "exponent": 1}]}, "height"),
        ({"constraints": [{"expression": "foo > 1"}]}, None),
        ({"effects": [{**RANGE, "inside": 2}]}, "lower, upper or both"),
        ({"effects": [{**RANGE, "lower": 9, "upper": 1}]}, "below"),
        ({"effects": [{**RANGE, "lower": 1, "outside": -1}]}, ">= 0"),
        ({"effects": [{**RANGE, "lower": 1, "exponent": 1}]}, "unknown"),
    ],
)
def test_bad_population_specs_name_the_field(change: dict, message: str | None) -> None:
    if message is None:  # an unknown name inside an expression fails when it is evaluated
        with pytest.raises(tl.InputError, match="unknown name"):
            stein_pop(**change).sample(3, seed=0)
        return
    with pytest.raises(tl.InputError, match=message):
        stein_pop(**change)


def test_range_effect_applies_its_factor_inside_the_covariate_range_only() -> None:
    effect = {"parameter": "y0", "covariate": "marker", "kind": "range", "lower": 0.6, "upper": 1.0, "outside": 0.25}
    pop = stein_pop(
        covariates={"marker": {"distribution": "uniform", "low": 0.0, "high": 2.0}},
        effects=[effect],
    )
    cohort = pop.sample(4000, seed=4)
    marker, y0 = cohort.covariates["marker"].to_numpy(dtype=float), cohort.parameter("y0")
    inside = (marker >= 0.6) & (marker <= 1.0)
    assert inside.mean() == pytest.approx(0.2, abs=0.02)  # uniform(0, 2): P(0.6 <= x <= 1) = 0.2
    np.testing.assert_allclose(y0[inside], 80.0)  # y0 has no random effect: the factor is exact
    np.testing.assert_allclose(y0[~inside], 20.0)
    again = Population.from_dict(pop.to_dict())
    assert again.effects[0].to_dict() == {**effect, "inside": 1.0}
    np.testing.assert_array_equal(again.sample(50, seed=3).parameters, pop.sample(50, seed=3).parameters)


def test_population_yaml_round_trip(tmp_path: Path) -> None:
    import yaml

    pop = stein_pop()
    path = tmp_path / "pop.yaml"
    path.write_text(yaml.safe_dump(pop.to_dict()))
    again = Population.from_yaml(path)
    assert again.content_hash() == pop.content_hash()
    np.testing.assert_array_equal(again.sample(50, seed=3).parameters, pop.sample(50, seed=3).parameters)
    with pytest.raises(tl.InputError, match="does not exist"):
        Population.from_yaml(tmp_path / "missing.yaml")


def test_t1d_steady_state_rule_reproduces_every_published_patient() -> None:
    for name, p in t1d.patients().items():
        derived = t1d.steady_state_parameters({**p, "EGPb": t1d.basal_production(p)})
        for key, value in derived.items():
            assert value == pytest.approx(p[key], rel=1e-6), (name, key)


def test_t1d_default_population_matches_the_published_patients_and_starts_at_steady_state() -> None:
    pop = Population.default("t1d-uva-padova")
    cohort = pop.sample(30_000, seed=5)
    _, table, group = t1d_fit_table()
    for g, name in enumerate(T1D_GROUPS):
        rows = cohort.groups == name
        for param in ("BW", "Vmx", "kabs", "Gpb"):
            published = np.exp(np.log(table[param][group == g]).mean())
            sampled = np.exp(np.log(cohort.parameter(param)[rows]).mean())
            assert sampled == pytest.approx(published, rel=0.08), (name, param)
    model = tl.models.get("t1d-uva-padova")
    few = cohort[:200]
    basal = tl.Inputs.rate("insulin", 0.0, 360.0, t1d.basal_rate_U_per_min(few.param_map()))
    traj = tl.simulate(model, few.parameters, basal, times=np.arange(0, 361, 30.0), progress=False)
    drift = np.abs(traj["plasma_glucose"] - traj["plasma_glucose"][:, :1]).max()
    assert drift < 0.05  # mg/dL over 6 h: every sampled patient is at its own steady state


def test_output_constraints_hold_for_every_sampled_patient() -> None:
    pop = Population.from_dict({"model": "t1d-uva-padova", "extends": "default",
                                "output_constraints": [{"observable": "plasma_glucose", "statistic": "min",
                                                        "lower": 60.0}]})  # fmt: skip
    cohort = pop.sample(40, seed=9)
    model = tl.models.get("t1d-uva-padova")
    plan, t_end = model.standard_scenario(cohort.param_map())
    traj = tl.simulate(model, cohort.parameters, plan, times=np.linspace(0, t_end, 289), progress=False)
    assert traj["plasma_glucose"].min() >= 60.0
    assert cohort.acceptance_rate < 1.0  # the constraint did reject some candidates


def test_edge_case_region_has_the_conditional_distribution() -> None:
    pop = stein_pop()
    rare = pop.condition(g={"quantile": [0.0, 0.05]})
    cohort = rare.sample(3000, seed=11)
    reference = pop.sample(200_000, seed=12)
    threshold = rare.regions[0].upper
    inside = reference.parameter("g") <= threshold
    assert cohort.parameter("g").max() <= threshold
    assert cohort.acceptance_rate == pytest.approx(0.05, abs=0.01)
    for name in ("d", "y0"):
        assert ks_2samp(cohort.parameter(name), reference.parameter(name)[inside]).pvalue > 0.001, name
    # closed form: E[log d | log g in its lowest 5 %] = mu_d + rho * sd_d * (-phi(z)/0.05)
    rho, sd_d = 0.16 / math.sqrt(0.25 * 0.16), 0.4
    expected = math.log(0.005) + rho * sd_d * (-norm.pdf(norm.ppf(0.05)) / 0.05)
    assert np.log(cohort.parameter("d")).mean() == pytest.approx(expected, abs=0.02)


def test_children_with_a_high_carbohydrate_ratio() -> None:
    pop = Population.default("t1d-uva-padova")
    region = pop.condition(group=["child"], carb_ratio={"quantile": [0.8, 1.0]}, reference_n=50_000)
    cohort = region.sample(1000, seed=4)
    assert set(cohort.groups) == {"child"}
    reference = pop.sample(100_000, seed=13)
    lower = region.regions[-1].lower
    inside = (reference.groups == "child") & (reference.covariates["carb_ratio"].to_numpy() >= lower)
    assert cohort.covariates["carb_ratio"].min() >= lower
    for name in ("BW", "Vmx"):
        assert ks_2samp(cohort.parameter(name), reference.parameter(name)[inside]).pvalue > 0.001, name


def test_sobol_and_lhs_designs_fill_the_bounds() -> None:
    model = tl.models.get("tgi-stein")
    sob = design(model, 256, kind="sobol", vary=["g", "d"], seed=1)
    lhs = design(model, 100, kind="lhs", vary=["g"], seed=1)
    g = model.parameters[model.parameter_names.index("g")]
    assert sob[:, 1].min() >= g.lower and sob[:, 1].max() <= g.upper
    np.testing.assert_array_equal(sob[:, 0], 90.0)  # y0 keeps its default
    strata = np.floor((np.log(lhs[:, 1]) - math.log(g.lower)) / (math.log(g.upper) - math.log(g.lower)) * 100)
    assert sorted(strata.astype(int)) == list(range(100))  # one point per stratum on the log scale
    with pytest.raises(tl.InputError, match="not parameters"):
        design(model, 8, vary=["nope"])


def test_vpop_selection_matches_a_target_distribution() -> None:
    rng = np.random.default_rng(0)
    plausible = 90.0 * np.exp(rng.normal(0, 0.6, 20_000))
    target = 60.0 * np.exp(rng.normal(0, 0.35, 500))
    result = select_vpop(plausible, target, seed=1, log=True)
    assert result.ks_statistic_before > 0.3
    assert result.ks_statistic < 0.07 and result.ks_pvalue > 0.05
    assert np.median(plausible[result.selected]) == pytest.approx(60.0, rel=0.08)
    assert result.n > 1000


def test_sobol_indices_of_the_ishigami_function() -> None:
    problem = sa.problem_from_bounds({f"x{i}": (-math.pi, math.pi) for i in (1, 2, 3)})
    result = sa.sobol(Ishigami.evaluate, problem, n=4096, seed=1)
    # analytic (a=7, b=0.1): S1 = 0.3139, 0.4424, 0; ST = 0.5576, 0.4424, 0.2437
    np.testing.assert_allclose(result.indices["S1"], [0.3139, 0.4424, 0.0], atol=0.04)
    np.testing.assert_allclose(result.indices["ST"], [0.5576, 0.4424, 0.2437], atol=0.04)
    assert result.n_evaluations == 4096 * 5


def test_morris_elementary_effects_of_a_linear_function() -> None:
    problem = sa.problem_from_bounds({"a": (0, 1), "b": (0, 1), "c": (0, 1)})
    result = sa.morris(lambda x: 3 * x[:, 0] + x[:, 1], problem, trajectories=20, seed=1)
    np.testing.assert_allclose(result.indices["mu_star"], [3.0, 1.0, 0.0], atol=1e-9)
    assert result.ranking() == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("model_id", "vary", "observable", "stat", "t_end"),
    [
        ("tgi-claret", ["KL", "KD", "lam", "y0"], "sum_of_diameters", "final", 84.0),
        ("tgi-stein", ["g", "d", "y0"], "sum_of_diameters", "final", 365.0),
        ("tgi-simeoni", ["lambda0", "lambda1", "k1", "k2"], "tumour_weight", "final", 30.0),
        ("t1d-uva-padova", ["kabs", "kmax", "Vmx", "p2u"], "plasma_glucose", "mean", 1440.0),
    ],
)
def test_sobol_runs_on_each_built_in_model(model_id: str, vary: list, observable: str, stat: str, t_end: float) -> None:
    model = tl.models.get(model_id)
    pop = Population.default(model_id)
    problem = sa.problem_from_population(pop, vary)
    base = pop.sample(1, seed=0).parameters[0]
    plan = (lambda p: model.standard_scenario(p)[0]) if model_id == "t1d-uva-padova" else model.standard_scenario({})[0]
    outcome = sa.simulated_outcome(model, plan, np.linspace(0, t_end, 49), observable, stat)
    result = sa.sobol(outcome, problem, n=64, model=model, base=base, seed=2)
    assert np.all(np.isfinite(result.indices["ST"]))
    assert result.indices["ST"].max() > 0.1  # some parameter matters


@pytest.mark.parametrize("model_id", ["pk-one-compartment", "pk-two-compartment"])
def test_sobol_on_the_pk_models_over_parameter_bounds(model_id: str) -> None:
    model = tl.models.get(model_id)
    plan = tl.Inputs.bolus("dose_iv", [(0.0, 100.0)])
    problem = sa.problem_from_bounds({"CL": (2.0, 10.0), "V": (20.0, 80.0)})
    outcome = sa.simulated_outcome(model, plan, np.linspace(0, 24, 25), "concentration", "mean")
    result = sa.sobol(outcome, problem, n=128, model=model, seed=3)
    # the mean concentration over 24 h after an IV bolus depends on both CL and V
    assert result.indices.loc["CL", "ST"] > 0.05 and result.indices.loc["V", "ST"] > 0.05
