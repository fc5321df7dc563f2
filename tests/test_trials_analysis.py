"""twinloop.trials.analysis: the analysis plan, and analyses checked against peers and known truth.

The participant tables are drawn directly with numpy (tests/data/trials_data.py), so every effect,
and the null, is known. The fast numpy paths (batched OLS, log-rank, Efron Cox) are checked
against statsmodels and lifelines, and lifelines against statsmodels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from twinloop.errors import InputError
from twinloop.trials.analysis import AnalysisPlan, analyse, kaplan_meier, km_medians
from twinloop.trials.regression import designs, ols, ols_reference
from twinloop.trials.survival import cox_one, cox_reference, logrank_one, logrank_reference

sys.path.insert(0, str(Path(__file__).parent / "data"))
from trials_data import context, model_spec, participants

ALL = {
    "y": ["ancova", {"method": "ancova", "covariates": ["base", "sex"]}, {"method": "procova"}],
    "resp": [{"method": "logistic", "covariates": ["base"]}],
    "pfs": ["logrank", {"method": "cox", "covariates": ["base"]}],
}


def plan(methods=None, arms=("control", "treated"), **extra):
    raw = {"methods": methods, **extra} if methods is not None else (extra or None)
    return AnalysisPlan.parse("analysis", raw, context(arms))


# ---------------------------------------------------------------- the plan


def test_default_plan_is_the_unadjusted_analysis_of_every_endpoint():
    default = plan()
    assert default.alpha == 0.05 and default.primary == "y"
    assert {e: [m.method for m in ms] for e, ms in default.methods.items()} == {
        "y": ["ancova"],
        "resp": ["logistic"],
        "pfs": ["logrank"],
    }


def test_plan_round_trips_and_labels_repeated_methods():
    full = plan(ALL, alpha=0.01, primary="pfs")
    again = AnalysisPlan.parse("analysis", full.to_dict(), context())
    assert again == full and again.to_dict() == full.to_dict()
    assert [m.label for m in full.methods["y"]] == ["ancova()", "ancova(base+sex)", "procova"]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([1], r"analysis must be a mapping"),
        ({"alfa": 0.05}, r"analysis has unknown keys \['alfa'\]"),
        ({"alpha": 0.5}, r"analysis.alpha must be a number between 0 and 0.5.*got 0.5"),
        ({"alpha": True}, r"analysis.alpha must be a number"),
        ({"primary": "os"}, r"analysis.primary must name an endpoint.*got 'os'"),
        ({"primary": "pfs", "methods": {"y": ["ancova"]}}, r"analysis.primary is 'pfs', which analysis.methods"),
        ({"methods": {"os": ["cox"]}}, r"analysis.methods names 'os', which is not an endpoint"),
        ({"methods": {"pfs": ["logrank", {"method": "ancova"}]}}, r"analysis.methods.pfs\[1\].method is 'ancova'"),
        ({"methods": {"y": [{"method": "ancova", "covariats": []}]}}, r"methods.y\[0\] has unknown keys"),
        ({"methods": {"y": [{"method": "ancova", "covariates": ["weight"]}]}}, r"y\[0\].covariates\[0\] is 'weight'"),
        ({"methods": {"y": [{"method": "ancova", "covariates": "age"}]}}, r"y\[0\].covariates must be a list"),
        ({"methods": {"y": [{"method": "ancova", "covariates": ["age", "age"]}]}}, r"covariates\[1\] repeats 'age'"),
        ({"methods": {"y": ["ancova", {"method": "ancova"}]}}, r"analysis.methods.y\[1\] repeats the analysis"),
        ({"methods": {"y": [7]}}, r"analysis.methods.y\[0\] must be a mapping"),
        ({"methods": {"y": ["ancova"] * 21}}, r"analysis.methods.y must be a list of at most 20"),
    ],
)
def test_plan_refuses_bad_input_naming_the_field(raw, match):
    with pytest.raises(InputError, match=match):
        AnalysisPlan.parse("analysis", raw, context())


def test_a_binary_endpoint_holding_other_values_is_refused():
    table = participants(2, 20, seed=0)
    table.loc[3, "resp"] = 2.0
    with pytest.raises(InputError, match=r"binary endpoint 'resp' must hold 0\.0 or 1\.0"):
        analyse(table, plan({"resp": ["logistic"]}))


def test_procova_without_prognostic_scores_is_refused():
    table = participants(2, 20, seed=0).drop(columns="prognostic:y")
    with pytest.raises(InputError, match=r"prognostic:y.*with_prognostic"):
        analyse(table, plan({"y": ["procova"]}))


# ---------------------------------------------------------------- against peers


def _designs(table, columns):
    x = np.column_stack([np.ones(len(table)), table["arm"] != "control", *(table[c] for c in columns)])
    complete = table["y"].notna().to_numpy()
    used = [np.flatnonzero(complete & (table["replicate"] == r).to_numpy()) for r in table["replicate"].unique()]
    return designs(table["y"].to_numpy(float), x.astype(float), used, 1)


def test_batched_ols_equals_statsmodels_to_1e10():
    table = participants(40, 60, seed=3, effect=0.4, missing=0.1)
    table.loc[table["replicate"] == 5, "base"] = 1.0  # a constant covariate: dropped in that replicate
    table.loc[table["replicate"] == 6, "age"] = table["base"] * 2  # collinear: statsmodels' pseudo-inverse
    designs = _designs(table, ["base", "age"])
    fast, slow = ols(designs, 1, 0.05), ols_reference(designs, 1, 0.05)
    for name in ("estimate", "ci_low", "ci_high", "p_value"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=1e-10, atol=1e-10)


def test_unadjusted_ancova_is_the_two_sample_t_test():
    table = participants(20, 50, seed=4, effect=0.5)
    result = analyse(table, plan({"y": ["ancova"]}))
    for r, part in table.groupby("replicate"):
        t = stats.ttest_ind(part.loc[part.arm == "treated", "y"], part.loc[part.arm == "control", "y"])
        assert result["p_value"].iloc[r] == pytest.approx(t.pvalue, rel=1e-10)


def test_logistic_odds_ratio_equals_a_binomial_glm():
    import statsmodels.api as sm

    table = participants(5, 200, seed=5, log_or=0.7)
    result = analyse(table, plan({"resp": [{"method": "logistic", "covariates": ["base", "sex"]}]}))
    for r, part in table.groupby("replicate"):
        x = sm.add_constant(np.column_stack([part.arm == "treated", part.base, part.sex == "male"]).astype(float))
        glm = sm.GLM(part["resp"].to_numpy(), x, family=sm.families.Binomial()).fit()
        row = result.iloc[r]
        assert row["estimate"] == pytest.approx(np.exp(glm.params[1]), rel=1e-6)
        assert row["p_value"] == pytest.approx(glm.pvalues[1], rel=1e-5)
        assert row["ci_low"] == pytest.approx(np.exp(glm.conf_int()[1, 0]), rel=1e-6)


@pytest.mark.parametrize("scan_days", [None, 14.0])
def test_logrank_equals_lifelines_and_lifelines_equals_statsmodels(scan_days):
    from statsmodels.duration.survfunc import survdiff

    table = participants(4, 150, seed=6, log_hr=-0.4, scan_days=scan_days)
    for _, part in table.groupby("replicate"):
        time, event, treated = part.pfs.to_numpy(), part.pfs_event.to_numpy(), (part.arm == "treated").to_numpy()
        _, _, p = logrank_one(time, event, treated)
        lifelines_p = logrank_reference(time, event, treated)
        assert p == pytest.approx(lifelines_p, rel=1e-10)
        assert lifelines_p == pytest.approx(survdiff(time, event.astype(float), treated.astype(int))[1], rel=1e-8)


@pytest.mark.parametrize("scan_days", [None, 14.0])
def test_efron_cox_equals_lifelines_and_lifelines_equals_statsmodels(scan_days):
    from statsmodels.duration.hazard_regression import PHReg

    table = participants(3, 150, seed=7, log_hr=0.5, scan_days=scan_days)
    for _, part in table.groupby("replicate"):
        time, event = part.pfs.to_numpy(), part.pfs_event.to_numpy()
        x = np.column_stack([part.arm == "treated", part.base, part.sex == "male"]).astype(float)
        ours = cox_one(time, event, x)
        assert ours is not None
        coef, se = cox_reference(time, event, x)
        peer = PHReg(time, x, status=event.astype(float), ties="efron").fit()
        # lifelines stops its Newton steps at about 1e-7 whatever its precision option says
        np.testing.assert_allclose(ours[0], coef, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ours[1], se, rtol=1e-6)
        np.testing.assert_allclose(ours[0], peer.params, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ours[1], peer.bse, rtol=1e-7)
        np.testing.assert_allclose(coef, peer.params, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(se, peer.bse, rtol=1e-5)


# ---------------------------------------------------------------- known truth


def test_type_one_error_of_every_analysis_within_the_binomial_99_interval():
    replicates = 400
    table = participants(replicates, 120, seed=11, missing=0.05, scan_days=7.0)
    result = analyse(table, plan(ALL))
    low, high = stats.binom.interval(0.99, replicates, 0.05)
    rates = result.groupby("method")["reject"].sum()
    assert set(rates.index) == {"ancova()", "ancova(base+sex)", "procova", "logistic", "logrank", "cox"}
    assert rates.between(low, high).all(), rates.to_dict()
    assert result["estimate"].notna().all()


def test_confidence_intervals_cover_the_planted_effect():
    replicates = 400
    table = participants(replicates, 100, seed=12, effect=0.3, sd=2.0, log_hr=np.log(0.7))
    result = analyse(table, plan({"y": ["procova"], "pfs": [{"method": "cox", "covariates": ["base"]}]}))
    truth = {"procova": 0.3, "cox": 0.7}
    low, high = stats.binom.interval(0.99, replicates, 0.95)
    for method, value in truth.items():
        rows = result[result["method"] == method]
        covered = ((rows["ci_low"] < value) & (value < rows["ci_high"])).sum()
        assert low <= covered <= high, (method, covered)


def test_three_arms_compare_each_with_control_and_count_complete_cases():
    table = participants(3, 90, seed=13, arms=("placebo", "low", "high"), effect=1.0, missing=0.1)
    result = analyse(table, plan({"y": ["ancova"], "pfs": ["logrank"]}, arms=("placebo", "low", "high")))
    assert list(result["comparison"].unique()) == ["low vs placebo", "high vs placebo"]
    ancova = result[result["method"] == "ancova"]
    per_replicate = table.groupby("replicate")["y"].count().to_numpy()
    assert (ancova["n"].to_numpy() == np.repeat(per_replicate, 2)).all()
    assert (ancova["n"] + ancova["dropped"] == 90).all()
    assert (result.loc[result["method"] == "logrank", "n"] == 60).all()


def test_kaplan_meier_without_censoring_is_the_empirical_survival():
    table = participants(1, 80, seed=14)
    table["pfs_event"] = True
    curve = kaplan_meier(table, "pfs")
    control = table[table.arm == "control"].pfs.to_numpy()
    step = curve[curve.arm == "control"]
    for t, s in zip(step.time.iloc[1:], step.survival.iloc[1:], strict=True):
        assert s == pytest.approx((control > t).mean())
    assert step.at_risk.iloc[0] == len(control)
    assert ((step.ci_low <= step.survival) & (step.survival <= step.ci_high)).all()
    medians = km_medians(table, "pfs").set_index("arm")
    assert medians.loc["control", "median"] == pytest.approx(np.sort(control)[len(control) // 2 - 1])
    assert medians.loc["control", "ci_low"] <= medians.loc["control", "median"] <= medians.loc["control", "ci_high"]
    with pytest.raises(InputError, match="replicate 3"):
        kaplan_meier(table, "pfs", replicate=3)


SMALL_PROGNOSTIC = {"endpoint": "sld_log", "population": "default", "bank": 400, "features": ["sld_baseline", "age"]}


@pytest.fixture(scope="module")
def small_null_trial():
    """200 small tgi-claret trials (n = 60, followed to day 196) whose two arms get the same
    chemotherapy, with the twins' prognostic score of the log ratio (a bank of 400): the trial data
    and the analyses of every replicate (about 7 s)."""
    from twinloop.trials.procova import with_prognostic
    from twinloop.trials.run import run_trial

    spec = model_spec(null=True, n=60, seed=8, duration=196, prognostic=SMALL_PROGNOSTIC)
    data = with_prognostic(spec, run_trial(spec, replicates=200))
    return data, analyse(data.participants, spec)


def _assert_nominal_type_one_error(results):
    for (endpoint, method), rows in results.groupby(["endpoint", "method"]):
        low, high = stats.binom.interval(0.99, len(rows), 0.05)
        assert low <= rows["reject"].sum() <= high, (endpoint, method, rows["reject"].mean())
        assert rows["estimate"].isna().mean() < 0.01, (endpoint, method)


def test_type_one_error_on_small_model_based_null_trials(small_null_trial):
    """Every analysis, PROCOVA included, rejects at its nominal 5 % within the binomial 99 % interval of 200 trials."""
    results = small_null_trial[1]
    assert results.groupby(["endpoint", "method"]).size().to_dict() == {
        ("objective_response", "logistic"): 200,
        ("pfs", "cox"): 200,
        ("pfs", "logrank"): 200,
        ("sld_change", "ancova()"): 200,
        ("sld_change", "ancova(sld_baseline)"): 200,
        ("sld_log", "ancova()"): 200,
        ("sld_log", "ancova(sld_baseline)"): 200,
        ("sld_log", "procova"): 200,
    }
    _assert_nominal_type_one_error(results)


def test_tumour_size_log_ratio_is_near_normal_where_the_percent_change_is_skewed(small_null_trial):
    """The log ratio to baseline is the scale on which ANCOVA's normal theory holds for tumour size."""
    table = small_null_trial[0].participants
    assert abs(stats.skew(table["sld_log"].dropna())) < 0.5
    assert stats.skew(table["sld_change"].dropna()) > 5
    ratio = 1 + table["sld_change"] / 100  # the two endpoints are one measurement on two scales
    np.testing.assert_allclose(table["sld_log"], np.log(ratio.where(ratio > 0)), rtol=1e-9, equal_nan=True)


@pytest.mark.slow
def test_type_one_error_on_a_model_based_null_trial():
    """2,000 tgi-claret trials (n = 200) whose two arms get the same chemotherapy: every analysis, the
    PROCOVA-adjusted ANCOVA of the log ratio included, at its nominal 5 %."""
    from twinloop.trials.procova import with_prognostic
    from twinloop.trials.run import run_trial

    prognostic = {**SMALL_PROGNOSTIC, "bank": 4000}
    spec = model_spec(null=True, n=200, seed=5, prognostic=prognostic)
    data = with_prognostic(spec, run_trial(spec, replicates=2000))
    _assert_nominal_type_one_error(analyse(data.participants, spec))
