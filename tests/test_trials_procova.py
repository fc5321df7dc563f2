"""PROCOVA prognostic scores: the section's validation, the kernel twin and the regression
against analytic conditional means, and the variance reduction 1 - rho^2 with a preserved
type-I error on replicated trials whose truth is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from trials_claret import claret_trial
from twinloop.errors import InputError
from twinloop.trials.context import SpecContext
from twinloop.trials.procova import (
    PrognosticSpec,
    procova_summary,
    regression_predict,
    score_from_bank,
    twin_posterior,
)

CTX = SpecContext(
    model_id="tgi-claret",
    arms=("three-weekly", "weekly"),
    control_arm="three-weekly",
    covariates=("group", "age", "sex", "weight"),
    baselines=("sld_baseline",),
    endpoints={"sld_change": "continuous", "objective_response": "binary", "pfs": "time_to_event"},
    protocols={"ct": "sum_of_diameters"},
)


def _section(**extra: object) -> dict[str, object]:
    return {"endpoint": "sld_change", "bank": 500, "features": ["sld_baseline", "age"], **extra}


def test_section_parses_and_round_trips(tmp_path) -> None:
    spec = PrognosticSpec.parse("prognostic", _section(method="regression", seed=4), CTX)
    assert (spec.endpoint, spec.bank, spec.features, spec.method, spec.seed) == (
        "sld_change",
        500,
        ("sld_baseline", "age"),
        "regression",
        4,
    )
    assert spec.control_arm == "three-weekly" and spec.min_ess == 50
    again = PrognosticSpec.parse("prognostic", spec.to_dict(), CTX)
    assert again == spec and again.to_dict() == spec.to_dict()
    assert spec.to_dict()["population"] == "default"
    assert PrognosticSpec.parse("prognostic", None, CTX).to_dict() is None
    # a population file beside the spec; the expanded population is what to_dict records
    (tmp_path / "prior.yaml").write_text(
        "model: tgi-claret\nname: historic\ntypical: {y0: 60.0, KL: 0.002, KD: 5.8e-05, lam: 0.006}\nomega: {y0: 0.1}\n"
    )
    ctx = SpecContext(**{**CTX.__dict__, "base_dir": tmp_path})
    fitted = PrognosticSpec.parse("prognostic", _section(population="prior.yaml"), ctx)
    assert fitted.population is not None and fitted.population.name == "historic"
    assert PrognosticSpec.parse("prognostic", fitted.to_dict(), CTX).population_hash == fitted.population_hash


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([1], r"prognostic must be a mapping"),
        (_section(banks=10), r"prognostic: unknown key\(s\) \['banks'\]"),
        (_section(endpoint="pfs"), r"prognostic.endpoint is 'pfs'; expected a continuous endpoint"),
        (_section(endpoint=None), r"prognostic.endpoint is None"),
        (_section(features=["tumour"]), r"prognostic.features\[0\] is 'tumour'; expected one of"),
        (_section(features=["age", "age"]), r"prognostic.features\[1\]: 'age' is listed twice"),
        (_section(features="age"), r"prognostic.features must be a non-empty list"),
        (_section(method="knn"), r"prognostic.method is 'knn'; expected one of \['twin', 'regression'\]"),
        (_section(bank=10), r"prognostic.bank must be an integer from 100"),
        (_section(bank=True), r"prognostic.bank must be an integer"),
        (_section(min_ess=400), r"prognostic.min_ess must be an integer from 1 to 250"),
        (_section(seed=-1), r"prognostic.seed must be an integer from 0"),
        (_section(population=3), r"prognostic.population: .*'default', a population YAML path"),
        (_section(population="../up.yaml"), r"prognostic.population is '../up.yaml', which leads outside"),
        (_section(population="nothere.yaml"), r"prognostic.population is 'nothere.yaml', but .* is not a file"),
        (_section(population={"typical": {"y0": -1}}), r"prognostic.population: "),
    ],
)
def test_section_refuses_bad_input(raw: object, match: str, tmp_path) -> None:
    ctx = SpecContext(**{**CTX.__dict__, "base_dir": tmp_path})
    with pytest.raises(InputError, match=match):
        PrognosticSpec.parse("prognostic", raw, ctx)


def _linear_bank(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, I2), y = 2 x1 - x2 + N(0, 0.5^2): E[y | x] = 2 x1 - x2, E[y | x1] = 2 x1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, 2))
    return x, 2 * x[:, 0] - x[:, 1] + rng.normal(0, 0.5, m)


def test_twin_posterior_recovers_the_conditional_mean() -> None:
    bank_x, bank_y = _linear_bank(3000, 1)
    x = np.random.default_rng(2).normal(size=(300, 2))
    pred, ess = twin_posterior(bank_x, bank_y, x, min_ess=50)
    truth = 2 * x[:, 0] - x[:, 1]
    rmse = np.sqrt(np.mean((pred - truth) ** 2))
    prior_only = np.sqrt(np.mean((bank_y.mean() - truth) ** 2))
    assert rmse < 0.25 < 2.0 < prior_only
    assert ess.min() >= 50 and np.median(ess) < 60  # the bandwidth keeps the ESS at the target
    # a missing feature is marginalized: the prediction is E[y | x1] = 2 x1
    x[:, 1] = np.nan
    pred, ess = twin_posterior(bank_x, bank_y, x, min_ess=50)
    assert np.sqrt(np.mean((pred - 2 * x[:, 0]) ** 2)) < 0.25 and ess.min() >= 50


def test_regression_recovers_the_conditional_mean() -> None:
    bank_x, bank_y = _linear_bank(2000, 3)
    x = np.random.default_rng(4).normal(size=(300, 2))
    pred = regression_predict(bank_x, bank_y, x, seed=0)
    assert np.sqrt(np.mean((pred - (2 * x[:, 0] - x[:, 1])) ** 2)) < 0.35


def test_scores_use_only_the_features_and_encode_categories() -> None:
    """A bank with a categorical feature: the score follows sex and sld_baseline, and changing a
    participant's outcome or arm does not change it."""
    rng = np.random.default_rng(5)
    m = 1500
    bank = pd.DataFrame({"sex": rng.choice(["female", "male"], m), "sld_baseline": rng.normal(90, 20, m)})
    bank["sld_change"] = 0.5 * (bank["sld_baseline"] - 90) + np.where(bank["sex"] == "male", 10.0, 0.0)
    bank.loc[:20, "sld_change"] = np.nan  # dropouts are left out of the bank
    people = pd.DataFrame({"sex": ["female", "male", "male"], "sld_baseline": [90.0, 90.0, 110.0], "arm": "weekly"})
    people["sld_change"] = [100.0, -100.0, 0.0]
    spec = PrognosticSpec.parse("prognostic", _section(features=["sex", "sld_baseline"]), CTX)
    scores, ess = score_from_bank(spec, bank, people)
    assert scores == pytest.approx([0.0, 10.0, 20.0], abs=2.0) and ess.min() >= 50
    people[["sld_change", "arm"]] = [[0.0, "three-weekly"]] * 3
    assert score_from_bank(spec, bank, people)[0] == pytest.approx(scores)
    with pytest.raises(InputError, match=r"lack the column\(s\) \['sex'\]"):
        score_from_bank(spec, bank.drop(columns="sex"), people)


def _trials(reps: int, n: int, rho: float, effect: float, seed: int) -> pd.DataFrame:
    """Replicated two-arm trials: outcome = rho u + sqrt(1 - rho^2) e (+ effect), score = u."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(reps, n))
    arm = np.where(rng.permuted(np.tile(np.arange(n) % 2, (reps, 1)), axis=1) == 1, "new", "control")
    y = rho * u + np.sqrt(1 - rho**2) * rng.normal(size=(reps, n)) + effect * (arm == "new")
    return pd.DataFrame(
        {"replicate": np.repeat(np.arange(reps), n), "arm": arm.ravel(), "y": y.ravel(), "prognostic:y": u.ravel()}
    )


def test_variance_reduction_matches_one_minus_rho_squared() -> None:
    summary = procova_summary(_trials(300, 120, 0.7, 0.3, 6), "y", "control")
    assert summary["rho"] == pytest.approx(0.7, abs=0.02)
    assert summary["predicted_variance_ratio"] == pytest.approx(0.51, abs=0.03)
    low, high = summary["observed_variance_ratio_ci"]
    assert low < summary["predicted_variance_ratio"] < high  # within Monte Carlo error
    assert summary["se2_ratio"] == pytest.approx(summary["predicted_variance_ratio"], rel=0.05)
    assert summary["equivalent_n"] == pytest.approx(120 * (1 - summary["rho"] ** 2))
    assert summary["saving"] == pytest.approx(120 - summary["equivalent_n"])
    (comp,) = summary["comparisons"]
    assert comp["comparison"] == "new vs control"
    assert comp["estimate_adjusted"] == pytest.approx(0.3, abs=0.02)  # unbiased
    assert comp["rejection_adjusted"] > comp["rejection_unadjusted"]  # more power


def _binomial_99(reps: int, p: float = 0.05) -> tuple[float, float]:
    return stats.binom.ppf(0.005, reps, p) / reps, stats.binom.ppf(0.995, reps, p) / reps


@pytest.mark.parametrize("reps", [pytest.param(400), pytest.param(2000, marks=pytest.mark.slow)])
def test_procova_type_one_error_is_nominal(reps: int) -> None:
    summary = procova_summary(_trials(reps, 80, 0.6, 0.0, 7), "y", "control")
    low, high = _binomial_99(reps)
    (comp,) = summary["comparisons"]
    assert low <= comp["rejection_adjusted"] <= high
    assert low <= comp["rejection_unadjusted"] <= high


def test_summary_refuses_missing_columns() -> None:
    frame = _trials(2, 10, 0.5, 0.0, 8)
    with pytest.raises(InputError, match=r"lack the column\(s\) \['prognostic:z'\]"):
        procova_summary(frame.rename(columns={"y": "z"}), "z", "control")
    with pytest.raises(InputError, match=r"control arm 'placebo'"):
        procova_summary(frame, "y", "placebo")


# two identical schedules (a null comparison) and a doubled dose
TRIAL = claret_trial("procova-check", {"low": 800, "low-again": 800, "high": 1600}, seed=4)


def _model_trial(reps: int, n: int, bank: int, method: str = "twin"):  # type: ignore[no-untyped-def]
    from twinloop.trials.run import run_trial
    from twinloop.trials.spec import TrialSpec

    features = ["sld_baseline", "age", "weight"]
    prognostic = {"endpoint": "sld_126", "bank": bank, "features": features, "method": method}
    spec = TrialSpec.from_dict({**TRIAL, "n": n, "replicates": reps, "prognostic": prognostic})
    return spec, run_trial(spec, potential_outcomes=True)


@pytest.mark.parametrize(
    ("reps", "n", "bank"), [pytest.param(60, 45, 500), pytest.param(2000, 60, 4000, marks=pytest.mark.slow)]
)
def test_model_trial_variance_falls_by_one_minus_rho_squared(reps: int, n: int, bank: int) -> None:
    """tgi-claret, tumour size at week 18: the twins' bank is simulated from the default
    population; the score adjusts the ANCOVA. Checked against the potential outcomes (the
    true effect) and the binomial interval of the null comparison."""
    from twinloop.trials.procova import with_prognostic

    spec, data = _model_trial(reps, n, bank)
    data = with_prognostic(spec, data)
    assert data.lineage["prognostic"]["ess"]["min"] >= 50
    assert data.participants["prognostic:sld_126"].notna().all()
    summary = procova_summary(data.participants, "sld_126", "low")
    assert summary["rho"] > 0.4  # baseline size, age and weight predict the size at week 18
    by_name = {c["comparison"]: c for c in summary["comparisons"]}
    for comp in by_name.values():  # within 3 Monte Carlo SEs (the bootstrap CI's half-width / 1.96)
        low, high = comp["variance_ratio_ci"]
        assert abs(comp["variance_ratio"] - summary["predicted_variance_ratio"]) < 3 * (high - low) / (2 * 1.96)
        assert comp["se2_ratio"] == pytest.approx(summary["predicted_variance_ratio"], abs=0.1)
    truth = data.truth
    effect = float((truth["sld_126@high"] - truth["sld_126@low"]).mean())
    high = by_name["high vs low"]
    assert abs(high["estimate_adjusted"] - effect) < 3 * high["se_adjusted"] / np.sqrt(reps)  # unbiased
    low_rate, high_rate = _binomial_99(reps)
    assert low_rate <= by_name["low-again vs low"]["rejection_adjusted"] <= high_rate


def test_model_scores_ignore_outcome_and_arm() -> None:
    """The score of a participant is the same whatever their arm or outcome (regression twin)."""
    from twinloop.trials.procova import prognostic_scores

    spec, data = _model_trial(1, 30, 300, method="regression")
    scores = prognostic_scores(spec, data.participants)
    shuffled = data.participants.assign(arm="high", sld_126=0.0)
    np.testing.assert_allclose(prognostic_scores(spec, shuffled), scores)
    assert np.corrcoef(scores, data.participants["sld_baseline"])[0, 1] > 0.5
