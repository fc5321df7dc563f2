"""Synthetic external control arms: the section's validation, entropy balancing to the target
means, unbiased effects from a correctly specified pool, and flags for a shifted one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trials_claret import claret_trial
from twinloop.errors import InputError
from twinloop.trials.context import SpecContext
from twinloop.trials.external import ExternalControlSpec, entropy_weights, propensity, weigh_external

CTX = SpecContext(
    model_id="tgi-claret",
    arms=("control", "new"),
    control_arm="control",
    covariates=("group", "age", "sex"),
    baselines=("sld_baseline",),
    endpoints={"y": "continuous", "resp": "binary", "pfs": "time_to_event"},
)


def _spec(**extra: object) -> ExternalControlSpec:
    raw = {"n": 1000, "covariates": ["age", "sex", "sld_baseline"], **extra}
    return ExternalControlSpec.parse("external_control", raw, CTX)


def test_section_parses_and_round_trips() -> None:
    spec = _spec(method="propensity", target="experimental", max_smd=0.2, seed=3)
    assert (spec.n, spec.method, spec.target, spec.max_smd, spec.seed) == (1000, "propensity", "experimental", 0.2, 3)
    assert (spec.control_arm, spec.arms, spec.min_ess) == ("control", ("control", "new"), 50)
    assert ExternalControlSpec.parse("external_control", spec.to_dict(), CTX) == spec
    default = ExternalControlSpec.parse("external_control", {}, CTX)
    assert default.covariates == ("age", "sex", "sld_baseline") and default.method == "entropy"
    assert ExternalControlSpec.parse("external_control", None, CTX).to_dict() is None


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("fitted.yaml", r"external_control must be a mapping"),
        ({"pool": 3}, r"external_control: unknown key\(s\) \['pool'\]"),
        ({"n": 5}, r"external_control.n must be an integer from 20"),
        ({"method": "matching"}, r"external_control.method is 'matching'; expected one of \['entropy', 'propensity'\]"),
        ({"target": "control"}, r"external_control.target is 'control'; expected one of \['trial', 'experimental'\]"),
        ({"covariates": ["bmi"]}, r"external_control.covariates\[0\] is 'bmi'"),
        ({"covariates": []}, r"external_control.covariates must be a non-empty list"),
        ({"max_smd": 0}, r"external_control.max_smd must be a number in \(0, 2\]"),
        ({"max_smd": "0.1"}, r"external_control.max_smd must be a number"),
        ({"min_ess": 0}, r"external_control.min_ess must be an integer from 1"),
        ({"population": {"model": "t1d-uva-padova"}}, r"external_control.population"),
    ],
)
def test_section_refuses_bad_input(raw: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        ExternalControlSpec.parse("external_control", raw, CTX)


def _people(n: int, rng: np.random.Generator, age_mean: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": "all",
            "age": rng.normal(age_mean, 10, n),
            "sex": rng.choice(["female", "male"], n, p=[0.45, 0.55]),
            "sld_baseline": rng.lognormal(np.log(90), 0.4, n),
        }
    )


def _outcomes(frame: pd.DataFrame, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    """A control-arm outcome linear in the covariates (plus ``shift``) and a binary response."""
    frame = frame.copy()
    lin = 0.3 * (frame["age"] - 60) + 5.0 * (frame["sex"] == "male") + 0.2 * (frame["sld_baseline"] - 90)
    frame["y"] = lin + shift + rng.normal(0, 5, len(frame))
    frame["resp"] = (rng.random(len(frame)) < 1 / (1 + np.exp(-lin / 10))).astype(float)
    frame["simulation_failed"] = False
    return frame


def _trial(reps: int, n: int, rng: np.random.Generator, effect: float, age_mean: float = 68.0) -> pd.DataFrame:
    parts = []
    for r in range(reps):
        part = _outcomes(_people(n, rng, age_mean), rng)
        part["arm"] = np.where(np.arange(n) % 2 == 0, "control", "new")
        part.loc[part["arm"] == "new", "y"] += effect
        part.insert(0, "replicate", r)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _pool(n: int, rng: np.random.Generator, age_mean: float = 60.0, shift: float = 0.0) -> pd.DataFrame:
    pool = _outcomes(_people(n, rng, age_mean), rng, shift)
    pool.insert(0, "subject_id", [f"ext{i:05d}" for i in range(n)])
    return pool


def test_entropy_weights_reproduce_the_target_means() -> None:
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(2000, 3)) * [10, 1, 0.4] + [60, 0, 4.5]
    target = np.array([66.0, 0.3, 4.6])
    w, gap = entropy_weights(pool, target)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    assert gap <= 1e-6 and np.abs(w @ pool - target).max() <= 1e-6 * pool.std(axis=0).max()
    # a target outside the pool's convex hull cannot be reached: the gap says so
    assert entropy_weights(pool, np.array([200.0, 0.0, 4.5]))[1] > 1e-3


def test_propensity_reports_separation() -> None:
    rng = np.random.default_rng(2)
    pool, target = rng.normal(0, 1, (300, 1)), rng.normal(10, 1, (100, 1))
    assert not propensity(pool, target)[2]
    assert propensity(pool, rng.normal(0.3, 1, (100, 1)))[2]


@pytest.mark.parametrize("method", ["entropy", "propensity"])
def test_correct_pool_gives_an_unbiased_effect(method: str) -> None:
    """Thirty independent trials (older than the pool: weighting is needed), each against its
    own pool from the same population: the effect is unbiased, the CI covers it, and the bias
    against the randomized control is zero within Monte Carlo error; the unweighted
    comparison is biased (the check can fail)."""
    rng = np.random.default_rng(3)
    spec = _spec(method=method)
    effects, biases, naive, covered = [], [], [], []
    for _ in range(30):
        trial, pool = _trial(1, 200, rng, effect=-4.0), _pool(1000, rng)
        ext = weigh_external(spec, trial, pool)
        row = ext.effects.query("endpoint == 'y'").iloc[0]
        effects.append(row["estimate"])
        covered.append(row["ci_low"] <= -4.0 <= row["ci_high"])
        biases.append(ext.bias.query("endpoint == 'y'")["estimate"].iloc[0])
        naive.append(trial.query("arm == 'new'")["y"].mean() - pool["y"].mean())
    effects_, biases_ = np.array(effects), np.array(biases)
    assert abs(effects_.mean() + 4.0) < 3 * effects_.std(ddof=1) / np.sqrt(30)
    assert abs(biases_.mean()) < 3 * biases_.std(ddof=1) / np.sqrt(30)
    assert np.mean(covered) >= 0.85
    assert np.mean(naive) + 4.0 > 1.5  # the pool is younger: without weights the effect is off by ~2.4
    assert ext.effects["comparison"].iloc[0] == "new vs external control"
    assert set(ext.effects["endpoint"]) == {"y", "resp"} and (ext.effects["measure"] == "difference").all()
    assert set(ext.to_frames()) == {"pool", "weights", "balance", "diagnostics", "effects", "bias", "flags"}
    assert ext.flags == []
    after = ext.balance["smd_after"].abs().max()
    assert after < 1e-5 if method == "entropy" else after < 0.1
    assert ext.balance["smd_before"].abs().max() > 0.5


def test_shifted_pools_are_flagged() -> None:
    rng = np.random.default_rng(4)
    trial = _trial(3, 200, rng, effect=-4.0)
    # covariates beyond overlap: the pool is 35 years younger than the trial
    far = weigh_external(_spec(), trial, _pool(1000, rng, age_mean=33.0))
    text = " ".join(far.flags)
    assert "Poor overlap" in text and "Low effective sample size" in text
    assert not far.diagnostics["converged"].all() or "Imbalance after weighting" in text
    # a shift the covariates cannot explain: balanced, but biased against the randomized control
    shifted = weigh_external(_spec(), trial, _pool(1000, rng, shift=6.0))
    assert (shifted.diagnostics["overlap"] > 0.9).all() and shifted.diagnostics["converged"].all()
    assert any(f.startswith("Bias against the randomized control on 'y'") for f in shifted.flags)
    assert shifted.bias.query("endpoint == 'y'")["ci_low"].min() > 0
    # the same pool without the shift raises nothing
    assert weigh_external(_spec(), trial, _pool(1000, rng)).flags == []


def test_the_experimental_arm_can_be_the_target() -> None:
    rng = np.random.default_rng(6)
    trial = _trial(1, 200, rng, effect=-4.0)
    trial.loc[trial["arm"] == "new", "age"] += 5.0  # an unlucky randomization: the new arm is older
    ext = weigh_external(_spec(target="experimental"), trial, _pool(1000, rng))
    assert ext.diagnostics["n_target"].iloc[0] == 100 and ext.diagnostics["target"].iloc[0] == "experimental"
    pool = ext.pool.set_index("subject_id")
    weights = ext.weights.set_index("subject_id")["weight"]
    older = trial.loc[trial["arm"] == "new", "age"].mean()
    assert float(weights @ pool.loc[weights.index, "age"]) == pytest.approx(older, abs=1e-4)


def test_weighting_refuses_missing_columns() -> None:
    rng = np.random.default_rng(5)
    trial, pool = _trial(1, 40, rng, effect=0.0), _pool(100, rng)
    with pytest.raises(InputError, match=r"external pool lack the column\(s\) \['sld_baseline'\]"):
        weigh_external(_spec(), trial, pool.drop(columns="sld_baseline"))
    with pytest.raises(InputError, match=r"no external_control section"):
        weigh_external(ExternalControlSpec.parse("external_control", None, CTX), trial, pool)


TRIAL = claret_trial("external-check", {"low": 800, "high": 1600}, seed=5, eligibility=["age <= 75"])
TRIAL["endpoints"]["shrunk"] = {"kind": "response", "of": "sld_126", "below": 60}


def _claret_population(age_mean: float = 63.0, kl: float | None = None) -> dict[str, object]:
    """tgi-claret's default population (its YAML), with the mean age or the typical KL changed."""
    from pathlib import Path

    from twinloop.cohort.spec import load_yaml
    from twinloop.models import registry

    raw = load_yaml(Path(registry.__file__).parent / "tgi_claret.population.yaml")
    raw["covariates"]["age"]["mean"] = age_mean
    if kl is not None:
        raw["typical"]["KL"] = kl
    raw.pop("model")
    return raw


def _external_trial(reps: int, n: int, pool: int, population: object) -> tuple[object, object]:
    from twinloop.trials.run import run_trial
    from twinloop.trials.spec import TrialSpec

    section = {"population": population, "n": pool, "covariates": ["age", "sex", "weight", "sld_baseline"]}
    spec = TrialSpec.from_dict({**TRIAL, "n": n, "replicates": reps, "external_control": section})
    return spec, run_trial(spec, potential_outcomes=True)


@pytest.mark.parametrize(("reps", "pool"), [pytest.param(2, 600), pytest.param(40, 4000, marks=pytest.mark.slow)])
def test_model_external_control_from_the_trials_population(reps: int, pool: int) -> None:
    """tgi-claret: an external arm from the trial's own population (correctly specified): the
    effect of the high dose matches the potential outcomes, the bias CI covers 0, no flags."""
    from twinloop.trials.external import external_control

    spec, data = _external_trial(reps, 120, pool, "default")
    ext = external_control(spec, data)  # type: ignore[arg-type]
    assert ext.flags == []
    assert (ext.pool["age"] <= 75).all() and len(ext.pool) < pool  # the trial's eligibility applies
    truth = data.truth  # type: ignore[attr-defined]
    effect = float((truth["sld_126@high"] - truth["sld_126@low"]).mean())
    rows = ext.effects.query("endpoint == 'sld_126'")
    assert ((rows["ci_low"] <= effect) & (effect <= rows["ci_high"])).mean() >= (0.5 if reps < 10 else 0.85)
    bias = ext.bias.query("endpoint == 'sld_126'")
    assert ((bias["ci_low"] <= 0) & (bias["ci_high"] >= 0)).mean() >= (0.5 if reps < 10 else 0.85)
    assert set(ext.effects["endpoint"]) == {"sld_126", "shrunk"}
    assert (ext.diagnostics["converged"] & (ext.balance["smd_after"].abs().max() < 1e-5)).all()


def test_model_external_control_from_shifted_populations_is_flagged() -> None:
    """Pools 35 years younger (beyond overlap) or growing twice as fast (a shift the
    covariates cannot explain) are flagged by the diagnostics."""
    from twinloop.trials.external import external_control

    spec, data = _external_trial(1, 120, 600, _claret_population(age_mean=28.0))
    text = " ".join(external_control(spec, data).flags)  # type: ignore[arg-type]
    assert "Poor overlap" in text or "Low effective sample size" in text
    spec, data = _external_trial(1, 120, 600, _claret_population(kl=2 * 0.002142857142857143))
    flags = external_control(spec, data).flags  # type: ignore[arg-type]
    assert any(f.startswith("Bias against the randomized control on 'sld_126'") for f in flags)
