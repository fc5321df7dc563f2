"""The UVA/Padova core against its peer implementation, simglucose 0.2.11."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop.govern.validation import replay
from twinloop.models import t1d_uva_padova as t1d_module

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "simglucose_reference.csv.gz"
TOLERANCE_MG_DL = 0.5


def max_differences(traj: tl.Trajectories, table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for i, name in enumerate(traj.patient_ids):
        ref = table[table["patient"] == name]
        rows.append(
            {
                "patient": name,
                "plasma": np.max(np.abs(traj["plasma_glucose"][i] - ref["plasma_glucose_mg_dl"].to_numpy())),
                "subcutaneous": np.max(
                    np.abs(traj["subcutaneous_glucose"][i] - ref["subcutaneous_glucose_mg_dl"].to_numpy())
                ),
            }
        )
    return pd.DataFrame(rows).set_index("patient")


def test_all_30_patients_match_simglucose_within_half_a_mg_dl(t1d):
    table = pd.read_csv(REFERENCE)
    assert table["patient"].nunique() == 30 and len(table) == 30 * 1440
    traj = replay(t1d, t1d_module.simglucose_cases(table))
    assert not traj.failures
    diffs = max_differences(traj, table)
    assert (diffs < TOLERANCE_MG_DL).all().all(), diffs.sort_values("plasma").tail()
    # the reference is not trivial: every patient ate and got boluses, glucose moved
    assert (table.groupby("patient")["carbs_g"].sum() == 200).all()
    assert (table.groupby("patient")["plasma_glucose_mg_dl"].agg(np.ptp) > 20).all()


@pytest.mark.skipif(importlib.util.find_spec("simglucose") is None, reason="simglucose (dev dependency) missing")
def test_reference_file_is_what_simglucose_produces_today(t1d):
    """Run simglucose live for one patient: the cached reference is the peer's output."""
    spec = importlib.util.spec_from_file_location("make_reference", DATA / "make_simglucose_reference.py")
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    live = maker.simulate_patient("adolescent#007")
    live["minute"] = live["minute"].round().astype(int)
    cached = pd.read_csv(REFERENCE)
    cached = cached[cached["patient"] == "adolescent#007"].reset_index(drop=True)
    pd.testing.assert_frame_equal(live, cached, check_exact=False, rtol=1e-8, check_dtype=False)
    assert max_differences(replay(t1d, t1d_module.simglucose_cases(live)), live).max().max() < TOLERANCE_MG_DL


def test_patients_are_addressable_by_name(t1d):
    assert len(t1d.presets) == 30
    assert {"adult#001", "adolescent#010", "child#005"} <= set(t1d.presets)
    p = t1d.param_map(t1d.preset("adult#001"))
    assert p["BW"] == pytest.approx(102.32) and t1d_module.therapies()["adult#001"].carb_ratio_g_per_U == 10
    with pytest.raises(tl.InputError, match="Unknown patient 'adult#031'"):
        t1d.preset("adult#031")


def test_basal_insulin_keeps_every_patient_at_steady_state(t1d):
    names = list(t1d.presets)
    params = np.stack([t1d.preset(n) for n in names])
    plans = [
        tl.Inputs.rate("insulin", 0, 600, float(t1d_module.basal_rate_U_per_min(t1d.param_map(p)))) for p in params
    ]
    traj = tl.simulate(t1d, params, plans, times=[0.0, 600.0], progress=False)
    g = traj["plasma_glucose"]
    np.testing.assert_allclose(g[:, 1], g[:, 0], rtol=1e-6)


def test_meal_raises_and_insulin_lowers_glucose(t1d):
    p = t1d.preset("adult#004")
    basal = float(t1d_module.basal_rate_U_per_min(t1d.param_map(p)))
    times = np.arange(0.0, 361.0, 5.0)
    base = tl.Inputs.rate("insulin", 0, 360, basal)
    meal = base + tl.Inputs.meals([(30.0, 60.0)])
    bolus = meal + tl.Inputs.pulse("insulin", 30.0, 6.0)
    g = tl.simulate(t1d, np.stack([p, p, p]), [base, meal, bolus], times=times, progress=False)["plasma_glucose"]
    assert g[1].max() > g[0].max() + 40
    assert g[2].max() < g[1].max() - 10
