"""The closed loop against its peer: simglucose 0.2.11 running its own controllers.

The reference (``tests/data/simglucose_closed_loop.csv.gz``, made by
``tests/data/make_simglucose_closed_loop.py``) is simglucose's closed loop of its 30
published patients over 24 h with three meals, a noise-free GuardianRT sensor, the
Insulet pump and simglucose's ``BBController`` or ``PIDController(P=0.001, I=1e-5,
D=0.001, target=140)``. twinloop's loop, with its own JAX controllers, must follow it
within 0.5 mg/dL at every minute.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop.control import ClosedLoopResult, Patients, Scenario, basal_bolus, closed_loop, pid

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "simglucose_closed_loop.csv.gz"
TOLERANCE_MG_DL = 0.5
# one rounding step of the Insulet pump (0.05 pmol/min): a rate on a rounding boundary
# may go either way when the CGM differs in its eighth digit
PUMP_STEP_U_PER_MIN = 0.05 / 6000
# in each age group, the patient farthest from simglucose over both controllers (all 30: the slow set)
FAST_PATIENTS = ["adolescent#008", "adult#003", "child#007"]
SCENARIO = Scenario(days=1, meals=((420, 50), (720, 70), (1140, 80)), noise=False, rescue=None)
CONTROLLERS = {"bb": basal_bolus, "pid": lambda: pid(P=0.001, I=0.00001, D=0.001, target=140)}


@cache
def reference() -> pd.DataFrame:
    return pd.read_csv(REFERENCE)


def run(model: tl.models.Model, controller: str, names: list[str]) -> ClosedLoopResult:
    return closed_loop(model, Patients.published(model, names), CONTROLLERS[controller](), SCENARIO, accurate=True)


def differences(result: ClosedLoopResult, table: pd.DataFrame) -> pd.DataFrame:
    """Per patient: the largest absolute differences from simglucose over the day."""
    rows = []
    for i, name in enumerate(result.ids):
        ref = table[table["patient"] == name].sort_values("minute")
        steps = ref.dropna(subset=["cgm_mg_dl"])
        assert len(ref) == result.bg.shape[1] and len(steps) == result.cgm_seen.shape[1]
        rows.append(
            {
                "patient": name,
                "plasma": np.max(np.abs(result.bg[i] - ref["plasma_glucose_mg_dl"].to_numpy())),
                "subcutaneous": np.max(np.abs(result.sg[i] - ref["subcutaneous_glucose_mg_dl"].to_numpy())),
                "cgm_seen": np.max(np.abs(result.cgm_seen[i] - steps["cgm_mg_dl"].to_numpy())),
                "insulin": np.max(np.abs(result.insulin[i] - ref["insulin_U_per_min"].to_numpy())),
            }
        )
    return pd.DataFrame(rows).set_index("patient")


def assert_matches(result: ClosedLoopResult, table: pd.DataFrame) -> pd.DataFrame:
    assert not result.failed.any()
    diffs = differences(result, table)
    glucose = diffs[["plasma", "subcutaneous", "cgm_seen"]]
    assert (glucose <= TOLERANCE_MG_DL).all().all(), glucose.sort_values("plasma").tail()
    assert (diffs["insulin"] <= PUMP_STEP_U_PER_MIN * 1.001).all(), diffs.sort_values("insulin").tail()
    return diffs


def test_reference_is_simglucose_closed_loop_of_30_patients_and_two_controllers():
    table = reference()
    assert len(table) == 2 * 30 * 1440
    assert set(table["controller"]) == {"bb", "pid"} and table["patient"].nunique() == 30
    runs = table.groupby(["controller", "patient"])
    assert (runs["carbs_g"].sum() == 200).all()
    assert (runs["cgm_mg_dl"].count() == 1440 // 5).all()
    # the basal-bolus controller boluses at meals; PID never boluses and moves its basal rate
    assert (table[table["controller"] == "bb"].groupby("patient")["bolus_U_per_min"].max() > 0.1).all()
    assert (table[table["controller"] == "pid"]["bolus_U_per_min"].dropna() == 0).all()
    assert (
        table[table["controller"] == "pid"].groupby("patient")["basal_U_per_min"].agg(lambda s: s.max() - s.min())
        > 0.01
    ).all()


def test_the_half_mg_dl_tolerance_tells_the_two_controllers_apart():
    """The comparison is not vacuous: the two controllers' days differ far beyond the tolerance."""
    bg = reference().pivot_table(index=["patient", "minute"], columns="controller", values="plasma_glucose_mg_dl")
    gap = (bg["bb"] - bg["pid"]).abs().groupby("patient").max()
    assert (gap > 20 * TOLERANCE_MG_DL).all(), gap.sort_values().head()


@pytest.mark.parametrize("controller", ["bb", "pid"])
def test_closed_loop_matches_simglucose_on_one_patient_of_each_age_group(t1d, controller):
    table = reference()
    table = table[table["controller"] == controller]
    assert_matches(run(t1d, controller, FAST_PATIENTS), table)


@pytest.mark.slow
@pytest.mark.parametrize("controller", ["bb", "pid"])
def test_closed_loop_matches_simglucose_on_all_30_patients(t1d, controller):
    table = reference()
    table = table[table["controller"] == controller]
    names = sorted(table["patient"].unique())
    assert len(names) == 30
    diffs = assert_matches(run(t1d, controller, names), table)
    print(f"\n{controller}: largest differences over 30 patients\n{diffs.max().to_string()}")


def load_maker():
    spec = importlib.util.spec_from_file_location("make_closed_loop", DATA / "make_simglucose_closed_loop.py")
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("simglucose") is None, reason="simglucose (dev dependency) missing")
def test_reference_file_is_what_simglucose_produces_today():
    """Run simglucose live for one patient under PID: the cached reference is the peer's output."""
    live = load_maker().simulate_patient("child#004", "pid")
    cached = reference()
    cached = cached[(cached["patient"] == "child#004") & (cached["controller"] == "pid")].reset_index(drop=True)
    pd.testing.assert_frame_equal(live, cached, check_exact=False, rtol=1e-8, atol=1e-10, check_dtype=False)
