"""The T1D twin judged on data it was not built from: weeks made by simglucose itself
(random meals and snacks, basal-bolus with corrections, GuardianRT sensor noise; see
``tests/data/make_simglucose_weeks.py``). A twin is identified on days 1-6 with only
the body weight known, forecasts day 7 from the recorded insulin and meals, and must
beat "repeat day 6", the prior-only forecast and ReplayBG's twin (the peer's figures,
made by ``tests/data/replaybg_reference.py``), with honest 90 % intervals.

The fast variants of ``benchmarks/bench_twin_heldout.py`` (all 30 patients): one patient
in the default run (identification takes about a minute per patient), the three weeks of
the fixture in the slow run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from data.simglucose_weeks import START, read_weeks
from twinloop.cohort import Population
from twinloop.twin import TwinConfig
from twinloop.twin.heldout import HeldoutCheck, heldout_check, repeat_previous_day

REPLAYBG = Path(__file__).parent / "data" / "replaybg_day7.json"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("adult#004",), id="one-week"),
        pytest.param(("adolescent#003", "adult#004", "child#002"), id="three-weeks", marks=pytest.mark.slow),
    ],
)
def checks(request: pytest.FixtureRequest) -> dict[str, HeldoutCheck]:
    model = tl.models.get("t1d-uva-padova")
    prior = Population.default(model)
    weeks = read_weeks()
    return {
        name: heldout_check(
            model,
            week.observations,
            week.doses,
            split=START + pd.Timedelta(days=6),
            prior=prior,
            truth=week.truth,
            known={"BW": week.body_weight_kg},
            config=TwinConfig(members=200, seed=0),
        )
        for name, week in weeks.items()
        if name in request.param
    }


def test_the_twin_beats_every_baseline_on_each_held_out_day(checks: dict[str, HeldoutCheck]) -> None:
    for name, check in checks.items():
        s = check.scores
        twin = s["twin"].rmse_truth
        assert twin < 0.5 * s["repeat_previous_day"].rmse_truth, (name, twin, s["repeat_previous_day"])
        assert twin < 0.5 * s["prior_only"].rmse_truth, (name, twin, s["prior_only"])
        assert s["twin"].crps < 0.5 * s["prior_only"].crps, name
        # identification estimated the model error: near the sensor's own (~12 mg/dL here)
        scale = check.identification["calibration"]["error_scale"]["subcutaneous_glucose"]
        assert 0.8 < scale < 2.0, (name, scale)


def test_the_twin_beats_the_peer_replaybg(checks: dict[str, HeldoutCheck]) -> None:
    peer = json.loads(REPLAYBG.read_text())["patients"]
    ours = np.median([c.scores["twin"].rmse_truth for c in checks.values()])
    theirs = np.median([peer[name]["rmse_truth"] for name in checks])
    assert ours < theirs, (ours, theirs)


def test_pooled_90_percent_intervals_cover_the_cgm(checks: dict[str, HeldoutCheck]) -> None:
    n = sum(c.scores["twin"].n for c in checks.values())
    inside = sum(c.scores["twin"].coverage90 * c.scores["twin"].n for c in checks.values())
    assert n == len(checks) * 288
    assert 0.85 <= inside / n <= 0.95, inside / n


def test_nothing_leaves_the_physiological_box(checks: dict[str, HeldoutCheck]) -> None:
    model = tl.models.get("t1d-uva-padova")
    bounds = {p.name: (p.lower, p.upper) for p in model.parameters}
    for name, check in checks.items():
        frame = check.forecast
        assert frame is not None and (frame["twin_q05"] >= 0).all(), name
        summary = check.identification["calibration"]["summary"]  # over the members
        for i, parameter in enumerate(summary["parameter"]):
            lo, hi = bounds[parameter]
            assert lo <= summary["q05"][i] <= summary["q95"][i] <= hi, (name, parameter, summary)
        assert set(summary["parameter"]) == set(model.identifiable)


def test_repeat_previous_day_aligns_on_times() -> None:
    times = pd.date_range("2026-01-05", periods=4, freq="5min", tz="UTC")
    history = pd.DataFrame({"time": times, "variable": "g", "value": [1.0, 2.0, 3.0, 4.0]})
    later = pd.Series(times[[1, 3]] + pd.Timedelta(days=1))
    np.testing.assert_array_equal(repeat_previous_day(history, later, "g"), [2.0, 4.0])
    assert np.isnan(repeat_previous_day(history, pd.Series(times + pd.Timedelta(days=3)), "g")).all()
