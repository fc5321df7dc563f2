"""A twin's log: the fast batch path builds the very tables of the full harmonization, the
incremental log equals the old merge-and-concatenate log on a long mixed sequence, dose
windows equal the full scan's, and a sync validates only its new rows whatever the history."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop.calibrate import GaussianPrior, NoiseModel
from twinloop.connect import batch as fast
from twinloop.connect.ingest import harmonize
from twinloop.connect.schema import empty_doses
from twinloop.models import pk_one_compartment
from twinloop.twin import PatientTwin, TwinConfig, synthetic_record
from twinloop.twin.synthetic import ORIGIN

HOURS = np.arange(1.0, 121.0)  # a concentration every hour for five days


def _record() -> tuple[pd.DataFrame, pd.DataFrame]:
    model = tl.models.get(pk_one_compartment.ID)
    plan = tl.Inputs.bolus("dose_iv", [(float(d), 100.0) for d in range(0, 120, 12)]) + tl.Inputs.infusion(
        "infusion", 30.0, 6.0, 5.0
    )
    obs, doses, _ = synthetic_record(
        model, model.default_parameters, plan, HOURS, observable="concentration", noise=NoiseModel(0.05, 0.05), seed=3
    )
    return obs, doses


def _twin(obs: pd.DataFrame, doses: pd.DataFrame) -> PatientTwin:
    model = tl.models.get(pk_one_compartment.ID)
    prior = GaussianPrior(("CL", "V"), np.log([5.0, 50.0]), np.diag([0.1, 0.1]))
    return PatientTwin.create(
        model, obs.iloc[:6], doses, prior=prior, method="enkf", config=TwinConfig(members=16, seed=4), origin=ORIGIN
    )


def _batches(obs: pd.DataFrame, doses: pd.DataFrame) -> list[tuple[pd.DataFrame, pd.DataFrame | None]]:
    """Syncs of four hours each, with repeats, conflicting repeats, held-back (late) rows and doses."""
    out: list[tuple[pd.DataFrame, pd.DataFrame | None]] = []
    held = obs.iloc[:0]
    for k, start in enumerate(range(6, len(obs), 4)):
        part = obs.iloc[start : start + 4]
        if k % 3 == 1:  # the previous batch again, one reading changed (a conflicting duplicate)
            prev = obs.iloc[start - 4 : start]
            part = pd.concat([prev, prev.iloc[[0]].assign(value=prev["value"].iloc[0] * 1.5), part])
        if k % 5 == 2:  # the last reading arrives two syncs later
            held, part = part.iloc[-1:], part.iloc[:-1]
        elif k % 5 == 4:
            part = pd.concat([held, part])
        dose = doses.iloc[[k % len(doses)]] if k % 4 == 0 else None
        out.append((part, dose))
    return out


def _old_log(twin: PatientTwin, logged: tuple[pd.DataFrame, pd.DataFrame], obs: pd.DataFrame, doses: Any) -> Any:
    """The log as the former ``sync`` kept it: full harmonization, merge against the whole
    log, concatenation."""
    units = {o.name: o.unit for o in twin.model.observables}
    result = harmonize(obs, doses if doses is not None else empty_doses(), units=units)
    new, dose = result.observations.reset_index(drop=True), result.doses
    new = new[new["subject_id"] == twin.subject_id]
    key = ["time", "variable", "value"]
    seen = new.merge(logged[0][key].drop_duplicates(), on=key, how="left", indicator=True)
    new = new[(seen["_merge"] == "left_only").to_numpy()]
    if not dose.empty and not logged[1].empty:
        dkey = ["time", "input", "amount"]
        seen = dose.merge(logged[1][dkey].drop_duplicates(), on=dkey, how="left", indicator=True)
        dose = dose[(seen["_merge"] == "left_only").to_numpy()]
    o = pd.concat([logged[0], new], ignore_index=True) if not new.empty else logged[0]
    d = pd.concat([logged[1], dose], ignore_index=True) if not dose.empty else logged[1]
    return o, d


def test_the_incremental_log_equals_the_full_merge_on_a_long_mixed_sequence() -> None:
    obs, doses = _record()
    twin = _twin(obs, doses.iloc[:2])
    logged = (twin.observations.copy(), twin.doses.copy())
    reports = []
    for part, dose in _batches(obs, doses):
        logged = _old_log(twin, logged, part, dose)
        reports.append(twin.sync(part, dose))
        pd.testing.assert_frame_equal(twin.observations, logged[0])
        pd.testing.assert_frame_equal(twin.doses, logged[1])
        for start in (twin.ensemble.time - 30.0, twin.ensemble.time, twin.ensemble.time + 5.0):
            assert repr(twin.logged_inputs(start)) == repr(twin.window_inputs(twin.doses, start))
    assert sum(r.replayed for r in reports) > 0  # late rows rewound the twin
    assert len(twin.observations) == len(HOURS) + sum(1 for k in range(len(reports)) if k % 3 == 1)
    restored = PatientTwin.from_state_dict(twin.state_dict())
    pd.testing.assert_frame_equal(restored.observations, twin.observations)
    again = _batches(obs, doses)[-1]
    a, b = twin.sync(*again), restored.sync(*again)  # all duplicates: nothing new on either
    assert a.assimilated == b.assimilated == 0
    np.testing.assert_array_equal(twin.ensemble.states, restored.ensemble.states)


def test_the_fast_batch_path_builds_the_full_paths_tables() -> None:
    obs, doses = _record()
    units = {"concentration": "mg/L"}
    messy = pd.concat([obs.iloc[5:9], obs.iloc[[6]], obs.iloc[[2]]]).assign(subject_id=["b", "a", "a", "a", "a", "b"])
    for o, d in [(obs.iloc[:7], doses.iloc[:3]), (messy, pd.concat([doses, doses.iloc[[0]]])), (obs, None)]:
        got = fast.harmonize_batch(o, d, units)
        assert got is not None
        want = harmonize(o, d if d is not None else empty_doses(), units=units)
        pd.testing.assert_frame_equal(got[0], want.observations)
        pd.testing.assert_frame_equal(got[1], want.doses)


@pytest.mark.parametrize(
    "change",
    [
        {"unit": "ug/mL"},  # a conversion
        {"value": np.nan},  # a row to reject
        {"variable": " concentration"},  # a string to strip
        {"time": "2026-01-05T03:00:00Z"},  # a time to parse
    ],
)
def test_anything_unusual_takes_the_full_path(change: dict[str, Any]) -> None:
    obs, _ = _record()
    assert fast.harmonize_batch(obs.iloc[:3].assign(**change), None, {"concentration": "mg/L"}) is None


def test_a_sync_validates_and_converts_only_its_new_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    obs, doses = _record()
    twin = _twin(obs, doses)
    rows: list[int] = []
    checked = fast._observations

    def counting(frame: pd.DataFrame, units: Any) -> Any:
        rows.append(len(frame))
        return checked(frame, units)

    converted: list[int] = []
    model_time = twin.model_time_ns
    monkeypatch.setattr(fast, "_observations", counting)
    monkeypatch.setattr(twin, "model_time_ns", lambda ns: converted.append(len(ns)) or model_time(ns))
    for start in range(6, len(obs) - 4, 4):
        twin.sync(obs.iloc[start : start + 4])
    assert rows == [4] * len(rows) and len(rows) > 20  # the validator saw the new rows only
    assert set(converted) == {4}  # times converted: the new rows', never the log's


def test_a_sync_keeps_snapshots_unserialized_and_builds_no_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clean syncs neither serialize their snapshots nor build a table; saving does both once."""
    from twinloop.twin import log
    from twinloop.twin.ensemble import Ensemble
    from twinloop.twin.sync import SNAPSHOTS

    obs, doses = _record()
    twin = _twin(obs, doses)
    calls: dict[str, int] = {"to_bytes": 0, "build_frame": 0}

    def counted(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(Ensemble, "to_bytes", counted("to_bytes", Ensemble.to_bytes))
    monkeypatch.setattr(log, "build_frame", counted("build_frame", log.build_frame))
    for start in range(6, len(obs) - 4, 4):
        twin.sync(obs.iloc[start : start + 4])
    assert calls == {"to_bytes": 0, "build_frame": 0}
    assert len(twin.snapshots) == SNAPSHOTS
    assert not any(np.shares_memory(ens.states, twin.ensemble.states) for _, ens in twin.snapshots)
    restored = PatientTwin.from_state_dict(twin.state_dict())
    assert calls == {"to_bytes": 1 + SNAPSHOTS, "build_frame": 1}
    for (v, a), (w, b) in zip(twin.snapshots, restored.snapshots, strict=True):
        assert v == w and a.time == b.time
        np.testing.assert_array_equal(a.theta, b.theta)
        np.testing.assert_array_equal(a.states, b.states)


def test_a_dose_of_another_amount_at_the_same_time_is_logged_not_dropped() -> None:
    """Duplicates are the same time, input and amount: a corrected bolus of another amount
    at the same minute is a second dose, not a repeat of the first."""
    from twinloop.connect.batch import Rows
    from twinloop.connect.schema import DOSE_COLUMNS
    from twinloop.twin.log import RecordLog

    first = pd.DataFrame(
        {
            "subject": ["p"],
            "time": [ORIGIN + pd.Timedelta(hours=1)],
            "input": ["dose_iv"],
            "kind": ["bolus"],
            "amount": [5.0],
            "duration": [0.0],
            "unit": ["mg"],
        }
    )
    log = RecordLog.doses(first, lambda t: (pd.to_datetime(t) - ORIGIN).dt.total_seconds().to_numpy() / 3600, "h")

    def rows(frame: pd.DataFrame) -> Rows:
        return Rows.from_frame(frame, DOSE_COLUMNS)

    assert log.fresh(rows(first.assign(amount=3.0))).tolist() == [True]
    assert log.fresh(rows(first)).tolist() == [False]
    assert log.fresh(rows(first.assign(input="dose_oral"))).tolist() == [True]
