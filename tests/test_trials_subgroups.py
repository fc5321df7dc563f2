"""Subgroups: the section's validation, forest-plot effects against closed forms, and Virtual
Twins recovering a planted subgroup (an effect only where a biomarker lies in a range) while
reporting nothing beyond the false-discovery rate under a homogeneous effect."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as t_dist

import twinloop as tl
from subgroup_cases import CTX, covariates, in_region, model_based, operating, recovered, trial
from twinloop.trials._subgroup_fit import heterogeneity_p
from twinloop.trials.subgroups import SubgroupSpec, subgroup_analysis, subgroup_effects, virtual_twins


def parse(raw: object) -> SubgroupSpec:
    return SubgroupSpec.parse("subgroups", raw, CTX)


def test_the_section_takes_defaults_and_round_trips() -> None:
    spec = parse({"prespecified": {"elderly": "age >= 65"}, "discover": {"fdr": 0.05}})
    assert (spec.endpoint, spec.kind, spec.arm, spec.control_arm) == ("y", "continuous", "drug", "control")
    assert spec.discover is not None and (spec.discover.max_depth, spec.discover.fdr) == (2, 0.05)
    assert parse(spec.to_dict()) == spec
    assert parse({"endpoint": "response", "arm": "other"}).measure == "risk_difference"
    absent = parse(None)
    assert absent.endpoint is None and absent.to_dict() is None and parse(absent.to_dict()) == absent
    assert parse({"discover": None}).discover is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1], r"subgroups must be a mapping"),
        ({"colour": 1}, r"subgroups has unknown keys \['colour'\]"),
        ({"endpoint": "pfs"}, r"subgroups.endpoint is 'pfs'.*time-to-event endpoints are not supported"),
        ({"arm": "control"}, r"subgroups.arm is 'control'; expected an arm other than the control arm"),
        ({"prespecified": {"x": "weight > 70"}}, r"subgroups.prespecified.x .*\['weight'\], which are not covariates"),
        ({"prespecified": {"x": "age + 1"}}, r"subgroups.prespecified.x is 'age \+ 1': expected a condition"),
        ({"prespecified": {"x": "__import__('os')"}}, r"subgroups.prespecified.x .*calling __import__ is not allowed"),
        ({"prespecified": ["age > 1"]}, r"subgroups.prespecified must map labels to conditions"),
        ({"discover": {"max_depth": 5}}, r"subgroups.discover.max_depth must be a whole number from 1 to 4; got 5"),
        ({"discover": {"trees": True}}, r"subgroups.discover.trees must be a whole number"),
        ({"discover": {"fdr": 1.5}}, r"subgroups.discover.fdr must be a number above 0 and below 1; got 1.5"),
        ({"discover": {"min_fraction": 0.6}}, r"subgroups.discover.min_fraction .* at most 0.5; got 0.6"),
        ({"discover": {"method": "cart"}}, r"subgroups.discover.method is 'cart'; expected one of \['virtual-twins'\]"),
        ({"discover": {"splits": 0.5}}, r"subgroups.discover has unknown keys \['splits'\]"),
        ({"discover": "yes"}, r"subgroups.discover must be a mapping"),
    ],
)
def test_bad_sections_name_the_field(raw: object, message: str) -> None:
    with pytest.raises(tl.InputError, match=message):
        parse(raw)


def test_forest_rows_match_the_closed_forms() -> None:
    """Difference in means with the unequal-variance (Welch) standard error and t quantiles
    (n - 2 degrees of freedom), and the interaction as the difference of the differences
    inside and outside (n - 4)."""
    data = trial(400, 1.0, seed=5)
    spec = parse({"prespecified": {"marker": "biomarker >= 0.6 and biomarker <= 1.0", "women": "sex == 'female'"}})
    rows = subgroup_effects(data, spec).set_index("label")
    assert list(rows["kind"]) == ["overall", "prespecified", "prespecified"]

    def diff(y: pd.Series, arm: pd.Series) -> tuple[float, float]:
        a, b = y[arm == "drug"], y[arm == "control"]
        return a.mean() - b.mean(), math.sqrt(a.var() / len(a) + b.var() / len(b))

    inside = in_region(data)
    est, se = diff(data["y"][inside], data["arm"][inside])
    row = rows.loc["marker"]
    assert row["n"] == inside.sum()
    assert row["estimate"] == pytest.approx(est, rel=1e-10)
    half = t_dist.ppf(0.975, inside.sum() - 2) * se
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((est - half, est + half), rel=1e-6)
    out_est, out_se = diff(data["y"][~inside], data["arm"][~inside])
    z = (est - out_est) / math.hypot(se, out_se)
    assert row["interaction_p"] == pytest.approx(2 * t_dist.sf(abs(z), len(data) - 4), rel=1e-6)
    assert rows.loc["overall", "estimate"] == pytest.approx(diff(data["y"], data["arm"])[0], rel=1e-10)
    # the global test over a partition in two is the interaction test (F = t squared)
    treat = (data["arm"] == "drug").to_numpy(dtype=int)
    global_p = heterogeneity_p(data["y"].to_numpy(), treat, [inside, ~inside])
    assert global_p == pytest.approx(row["interaction_p"], rel=1e-8)
    binary = subgroup_effects(data, parse({"endpoint": "response"})).iloc[0]
    drug, control = data["response"][data["arm"] == "drug"], data["response"][data["arm"] == "control"]
    assert binary["measure"] == "risk_difference"
    assert binary["estimate"] == pytest.approx(drug.mean() - control.mean(), rel=1e-10)


def test_virtual_twins_recovers_a_planted_subgroup_honestly() -> None:
    spec = parse({"endpoint": "y", "discover": {"trees": 100}})
    reference = covariates(20_000, np.random.default_rng(0))
    data = trial(1000, 2.0, seed=11, replicates=3)
    results = [virtual_twins(data, spec, replicate=r, seed=r) for r in range(3)]
    hits = [recovered(result, 2.0, reference) for result in results]
    assert sum(hit for hit, _ in hits) >= 2, hits
    first = results[0]
    assert first.n_discovery + first.n_estimation == 1000 and first.excluded == 0
    assert set(first.individual.columns) == {"subject_id", "arm", "z"} and len(first.individual) == first.n_discovery
    # honest: nobody in the discovery half is in the estimation half's estimates
    assert first.candidates["n"].max() <= first.n_estimation
    again = virtual_twins(data, spec, replicate=0, seed=0)
    pd.testing.assert_frame_equal(again.candidates, first.candidates)


def test_virtual_twins_reports_nothing_under_a_homogeneous_effect() -> None:
    figures = operating(4, 600, 0.0, homogeneous=0.5, trees=100, seed=12)
    assert figures["any_reported"] <= 0.25, figures


@pytest.mark.slow
def test_planted_subgroup_recovery_and_false_discoveries_over_200_replicates() -> None:
    planted = operating(200, 1000, 2.0, seed=100)
    assert planted["recovered"] >= 0.7, planted
    null = operating(200, 600, 0.0, homogeneous=0.5, seed=300)
    fdr = null["fdr"]
    assert null["any_reported"] <= fdr + 2.326 * math.sqrt(fdr * (1 - fdr) / 200), null  # one-sided 99 %


def test_binary_endpoint_and_the_forest_of_all_kinds() -> None:
    spec = parse({"endpoint": "response", "prespecified": {"women": "sex == 'female'"}, "discover": {"trees": 100}})
    data = trial(1000, 2.0, seed=13)
    forest = subgroup_analysis(data, spec, seed=1)
    assert list(forest["kind"])[:2] == ["overall", "prespecified"]
    discovered = forest[forest["kind"] == "discovered"]
    assert len(discovered) and set(forest["measure"]) == {"risk_difference"}
    best = discovered.sort_values("estimate").iloc[-1]
    assert "biomarker" in best["rule"] and best["estimate"] > 0.3  # 0.8 - 0.25 inside the region
    assert best["ci_low"] <= 0.55 <= best["ci_high"]


def test_misuse_is_refused_with_a_clear_message() -> None:
    data = trial(40, 1.0, seed=1)
    with pytest.raises(tl.InputError, match="no subgroups section"):
        virtual_twins(data, parse(None), seed=0)
    with pytest.raises(tl.InputError, match="no discover settings"):
        virtual_twins(data, parse({"endpoint": "y"}), seed=0)
    with pytest.raises(tl.InputError, match=r"replicate is 3"):
        subgroup_effects(data, parse({"endpoint": "y"}), replicate=3)
    with pytest.raises(tl.InputError, match=r"lack the column\(s\) \['biomarker'\]"):
        subgroup_effects(data.drop(columns="biomarker"), parse({"endpoint": "y"}))
    with pytest.raises(tl.InputError, match="needs at least 5 per arm"):
        virtual_twins(data.head(16), parse({"endpoint": "y", "discover": {}}), seed=0)
    with pytest.raises(tl.InputError, match=r"\[.weight.\], which are not covariates"):
        subgroup_effects(data, parse({"endpoint": "y"}), {"bad": "weight > 1"})


@pytest.mark.slow
def test_a_planted_subgroup_of_a_tgi_claret_trial_is_recovered() -> None:
    """Chemotherapy against none, the drug acting only where a biomarker lies in [0.6, 1.0]
    (a range covariate effect of the population); truth from the potential outcomes."""
    figures = model_based(20, 800, seed=1)
    assert figures["true_effect_inside"] < -40 < -5 < figures["true_effect_outside"], figures
    assert figures["recovered"] >= 0.7, figures
