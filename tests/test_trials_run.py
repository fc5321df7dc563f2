"""Running a trial: screening and eligibility, CONSORT flow, randomization, the baseline
scan shared with the trial's observations, potential outcomes, reproducibility whatever the
chunking, a run-in, and a tiny closed-loop T1D trial with two controllers."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from twinloop.errors import InputError
from twinloop.trials.run import TrialData, randomization_seed, run_trial, simulate_participants
from twinloop.trials.spec import TrialSpec

sys.path.insert(0, str(Path(__file__).parent / "data"))
from trials_data import BASELINE_SLD, RECIST_ENDPOINTS, ct_protocol, size_change

CHEMO = {"kind": "chemotherapy", "cycle_days": 21, "days_on": 1, "n_cycles": 6}
SPEC: dict[str, Any] = {
    "name": "nsclc-test",
    "model": "tgi-claret",
    "eligibility": ["sld_baseline >= 40", "age <= 75"],
    "n": 12,
    "replicates": 3,
    "seed": 4,
    "duration": 252,
    "resolution": 1,
    "chunk_size": 10,
    "randomization": {"kind": "block", "block_size": 4},
    "arms": {"low": {**CHEMO, "dose_mg": 400}, "high": {**CHEMO, "dose_mg": 1600}},
    "observations": [ct_protocol(0.002)],
    "baseline": BASELINE_SLD,
    "endpoints": {"sld_change": size_change(126, [100, 150]), **RECIST_ENDPOINTS},
}
ENDPOINTS = ["sld_change", "objective_response", "pfs"]


def trial_spec(**changes: Any) -> TrialSpec:
    raw = copy.deepcopy(SPEC)
    raw.update(changes)
    return TrialSpec.from_dict(raw)


@pytest.fixture(scope="module")
def data() -> TrialData:
    return run_trial(trial_spec(), potential_outcomes=True, keep_observations=True)


def test_flow_is_consistent(data: TrialData) -> None:
    flow, spec = data.flow, data.spec
    assert list(flow["replicate"]) == [0, 1, 2]
    assert (flow["screened"] >= flow["eligible"]).all() and (flow["eligible"] >= flow["randomized"]).all()
    assert (flow["randomized"] == spec.n).all() and flow["screened"].sum() > 3 * spec.n  # some were excluded
    arms = flow[["randomized:low", "randomized:high"]].sum(axis=1)
    assert (arms == flow["randomized"]).all()
    for arm in spec.arms:
        assert (flow[f"completed:{arm}"] <= flow[f"randomized:{arm}"]).all()
    assert (flow["analysed"] <= flow["randomized"]).all()
    counts = data.participants.groupby("replicate")["order"].agg(["count", "min", "max"])
    assert (counts["count"] == spec.n).all() and (counts["min"] == 0).all() and (counts["max"] == spec.n - 1).all()
    assert data.participants["subject_id"].is_unique


def test_every_participant_is_eligible(data: TrialData) -> None:
    p = data.participants
    assert (p["sld_baseline"] >= 40).all() and (p["age"] <= 75).all()
    ordered = p["subject_id"].str.slice(2).astype(int)
    assert ordered.is_monotonic_increasing  # eligible candidates fill the replicates in draw order
    assert list(p.columns[:6]) == ["replicate", "order", "subject_id", "arm", "stratum", "group"]
    for name in (*ENDPOINTS, "pfs_event", "simulation_failed", "sex", "weight"):
        assert name in p.columns


def test_arms_follow_the_randomization(data: TrialData) -> None:
    p = data.participants
    table = p.drop(columns=["arm", "stratum", *ENDPOINTS, "pfs_event", "simulation_failed"])
    again = data.spec.randomization.assign(table, list(data.spec.arms), randomization_seed(data.spec.seed))
    assert list(again) == list(p["arm"])
    blocks = p.assign(block=p["order"] // 4, low=p["arm"] == "low").groupby(["replicate", "block"])["low"].sum()
    assert (blocks == 2).all()  # permuted blocks of 4, 1:1


def test_the_baseline_scan_is_the_trials_day_0_scan(data: TrialData) -> None:
    assert data.observations is not None
    day0 = data.observations[data.observations["time"] == 0.0].set_index("subject_id")["value"]
    baseline = data.participants.set_index("subject_id")["sld_baseline"]
    assert np.array_equal(day0.loc[baseline.index].to_numpy(), baseline.to_numpy())
    # the scans that follow carry measurement error: they differ from the truth's smooth path
    later = data.observations[data.observations["time"] > 0]
    assert later.groupby("subject_id").size().max() >= 3


def test_observed_endpoints_are_the_potential_outcomes_of_the_assigned_arm(data: TrialData) -> None:
    p, truth = data.participants, data.truth
    assert list(truth["subject_id"]) == list(p["subject_id"])
    for name in (*ENDPOINTS, "pfs_event"):
        own = np.where(p["arm"] == "low", truth[f"{name}@low"], truth[f"{name}@high"]).astype(float)
        assert np.array_equal(own, p[name].to_numpy(dtype=float), equal_nan=True), name
    # four times the dose shrinks tumours more (the potential outcomes differ, in the right direction)
    assert np.nanmean(truth["sld_change@high"] - truth["sld_change@low"]) < -5.0
    assert {"CL", "KD", "y0"} <= set(truth.columns)


def test_same_seed_same_frames_whatever_the_chunk_size(data: TrialData) -> None:
    again = run_trial(trial_spec(chunk_size=1000))
    pd.testing.assert_frame_equal(again.participants, data.participants)
    pd.testing.assert_frame_equal(again.flow, data.flow)
    assert again.lineage["spec_hash"] != data.lineage["spec_hash"]  # chunk_size is part of the spec
    engine = data.lineage["engine"]  # tgi-claret declares no fast path: auto keeps it accurate, and says why
    assert engine["paths"] == ["accurate"] and engine["settings"]["path"] == "auto"
    assert "declares no fast path" in engine["check"]["reason"]


def test_identical_arms_have_identical_potential_outcomes() -> None:
    arms = {"a": {**CHEMO, "dose_mg": 800}, "b": {**CHEMO, "dose_mg": 800}}
    data = run_trial(trial_spec(arms=arms, eligibility=[]), n=8, replicates=1, potential_outcomes=True)
    for name in (*ENDPOINTS, "pfs_event"):
        assert np.array_equal(data.truth[f"{name}@a"], data.truth[f"{name}@b"], equal_nan=True), name
    assert (data.flow["screened"] == 8).all()


def test_too_few_eligible_is_refused_with_the_reason() -> None:
    spec = trial_spec(eligibility=["age <= 75", "sld_baseline >= 400"], max_screened=600)
    with pytest.raises(InputError, match=r"Only 0 of the 36 .* among the 600 candidates.*eligibility\[1\]"):
        run_trial(spec)


def test_an_eligibility_criterion_must_be_a_condition() -> None:
    with pytest.raises(InputError, match=r"eligibility\[0\] is 'age \+ 1', which gives float64 values"):
        run_trial(trial_spec(eligibility=["age + 1"]))


def test_a_run_in_gives_the_baseline() -> None:
    baseline = {"sld_baseline": {"observation": "ct", "summary": "first"},
                "sld_run_in": {"observation": "ct", "summary": "last", "window": [0, 42]}}  # fmt: skip
    spec = trial_spec(baseline=baseline, eligibility=["sld_run_in >= 20"], run_in={"arm": "high", "duration": 42})
    data = run_trial(spec.with_(n=6, replicates=1), keep_observations=True)
    p = data.participants
    assert (p["sld_run_in"] >= 20).all() and (p["sld_run_in"] != p["sld_baseline"]).all()
    assert data.observations is not None
    day0 = data.observations[data.observations["time"] == 0.0].set_index("subject_id")["value"]
    trial_day0 = day0.loc[p["subject_id"]].to_numpy()
    # the randomized period starts again from the initial state: its day-0 scan measures the same tumour as
    # the run-in's first scan, with its own measurement error
    assert not np.array_equal(trial_day0, p["sld_baseline"].to_numpy())
    assert np.allclose(trial_day0, p["sld_baseline"], rtol=0.3)


def test_simulate_participants_measures_a_given_cohort() -> None:
    spec = trial_spec()
    cohort = spec.population.sample(6, seed=1)
    frame = simulate_participants(spec, cohort, ["low", "high"] * 3, seed=2)
    assert list(frame["subject_id"]) == cohort.ids and list(frame["arm"]) == ["low", "high"] * 3
    assert {"sld_baseline", *ENDPOINTS, "simulation_failed", "age"} <= set(frame.columns)
    again = simulate_participants(spec, cohort, ["low", "high"] * 3, seed=2)
    pd.testing.assert_frame_equal(frame, again)
    with pytest.raises(InputError, match="arm must name one of the arms"):
        simulate_participants(spec, cohort, ["low"], seed=2)


MEALS = [[420, 50], [720, 70], [1140, 80]]
T1D: dict[str, Any] = {
    "name": "t1d-controllers",
    "model": "t1d-uva-padova",
    "condition": {"group": ["adolescent"]},
    "n": 8,
    "seed": 2,
    "duration": 1440,
    "resolution": 5,
    "arms": {"bb": {"kind": "basal_bolus", "meals": MEALS}, "pid": {"kind": "basal_bolus", "meals": MEALS}},
    "control": {"bb": {"controller": "basal-bolus"},
                "pid": {"controller": {"name": "pid", "P": 0.001, "I": 1.0e-5, "D": 0.001}}},
    "observations": [{"name": "cgm", "observable": "subcutaneous_glucose", "schedule": {"every": 5},
                      "error": {"kind": "cgm", "sensor": "GuardianRT"}}],
    "endpoints": {"tir": {"kind": "measure", "observation": "cgm", "summary": "between", "range": [70, 180],
                          "window": [0, 1440]}},
}  # fmt: skip


def test_a_t1d_trial_of_two_controllers_gives_time_in_range() -> None:
    data = run_trial(TrialSpec.from_dict(T1D), potential_outcomes=True)
    p = data.participants
    assert len(p) == 8 and set(p["arm"]) == {"bb", "pid"}
    assert p["tir"].between(0, 100).all() and p["tir"].std() > 0
    assert not p["simulation_failed"].any()
    # a participant's closed loop does not depend on who else is in the arm: observed == potential outcome
    own = np.where(p["arm"] == "bb", data.truth["tir@bb"], data.truth["tir@pid"])
    assert np.array_equal(own, p["tir"].to_numpy())
    assert not np.array_equal(data.truth["tir@bb"], data.truth["tir@pid"])
