"""Twin forecasts on the engine's fast path (issue 20).

The ensemble is drawn from the population prior (members far apart, as a young twin's
are) and run under the insulin and meals simglucose recorded for one of its patients
(``tests/data/simglucose_weeks.csv.gz``), data the twin's prior did not produce. From
one ensemble, the fast forecast of every member must agree with the accurate forecast
within the model's declared tolerance (not only the members the engine's self-check
re-ran), and the sync and the forecast must record the path that ran and its check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from data.simglucose_weeks import START, read_weeks
from twinloop.cohort import Population
from twinloop.twin import PatientTwin, TwinConfig
from twinloop.twin.config import FAST_SOLVER
from twinloop.twin.forecast import Forecast

DAY = pd.Timedelta(days=1)


def on_path(twin: PatientTwin, path: str) -> PatientTwin:
    twin.config = dataclasses.replace(twin.config, solver=dataclasses.replace(twin.config.solver, path=path))
    return twin


@pytest.fixture(scope="module")
def synced() -> dict:
    """A twin of simglucose's adult#004 from the prior on day 1, synced with the first
    hour of day 2 on the fast path; the doses of day 2 for its forecasts."""
    model = tl.models.get("t1d-uva-padova")
    week = read_weeks()["adult#004"]
    obs, doses = week.observations, week.doses
    first = obs["time"] < START + DAY
    twin = PatientTwin.create(
        model,
        obs[first],
        doses[doses["time"] < START + DAY],
        prior=Population.default(model),
        known={"BW": week.body_weight_kg},
        method="prior",
        config=TwinConfig(members=32, seed=0, solver=FAST_SOLVER),
    )
    hour = (obs["time"] >= START + DAY) & (obs["time"] < START + DAY + pd.Timedelta(hours=1))
    in_hour = (doses["time"] >= START + DAY) & (doses["time"] < START + DAY + pd.Timedelta(hours=1))
    report = twin.sync(obs[hour], doses[in_hour])
    later = (doses["time"] >= twin.now) & (doses["time"] < twin.now + DAY)
    return {"twin": twin, "report": report, "doses": doses[later]}


def test_the_twin_runs_on_the_fast_path_when_asked_and_records_it(synced: dict) -> None:
    twin, report = synced["twin"], synced["report"]
    assert TwinConfig().solver.path == "accurate"  # its forecasts are faster (bench_sync)
    assert report.solver["path"] == "fast" and report.solver["passed"] and not report.solver["fallback"]
    tolerance = twin.model.profile.fast.tolerance
    assert 0.0 < report.solver["max_error"]["subcutaneous_glucose"] <= tolerance["subcutaneous_glucose"]
    assert twin.innovations[-1]["solver"]["path"] == "fast"


def test_fast_forecast_agrees_with_the_accurate_one_for_every_member(synced: dict) -> None:
    twin = synced["twin"]
    fast = on_path(twin, "auto").forecast(24.0, synced["doses"], store=False)
    accurate = on_path(twin, "accurate").forecast(24.0, synced["doses"], store=False)
    on_path(twin, "auto")
    assert fast.solver["path"] == "fast" and fast.solver["passed"]
    assert accurate.solver == {"path": "accurate"}
    declared = twin.model.profile.fast
    for o, name in enumerate(twin.model.observable_names):
        gap = np.abs(fast.members[:, :, o] - accurate.members[:, :, o])
        if name in declared.tolerance:  # glucose: absolute, mg/dL
            assert gap.max() <= declared.tolerance[name], (name, gap.max())
        else:  # relative to each member's largest value
            scale = np.abs(accurate.members[:, :, o]).max(axis=1, keepdims=True)
            assert (gap / scale).max() <= declared.rtol, (name, (gap / scale).max())
    glucose = accurate.members[:, :, twin.model.observable_names.index("subcutaneous_glucose")]
    assert np.ptp(glucose.max(axis=1)) > 50.0  # the members do differ: a real ensemble, meals included
    again = Forecast.from_bytes(
        fast.to_bytes(), twin_id=fast.twin_id, version=fast.version, observables=fast.observables, units=fast.units
    )
    assert again.solver == fast.solver
