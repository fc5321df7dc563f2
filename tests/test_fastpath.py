"""The engine's fast path: fixed-step RK4 against simglucose, closed forms and the accurate
path, its self-check, its fallback and its refusal, and the models it keeps away from."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from test_engine import PATIENTS, TIMES, analytic_concentration, regimen
from test_t1d_uva_padova import REFERENCE, max_differences
from twinloop.errors import SimulationError
from twinloop.govern.validation import replay
from twinloop.models import t1d_uva_padova as t1d_module
from twinloop.simulate.fastpath import FastPathWarning
from twinloop.simulate.fixed import bucket, schedule

FAST = tl.SolverSettings(path="fast")


@pytest.fixture(scope="module")
def simglucose_cases(t1d):
    table = pd.read_csv(REFERENCE)
    keep = sorted(table["patient"].unique())[::3]  # 10 of the 30 published patients
    table = table[table["patient"].isin(keep)]
    return table, t1d_module.simglucose_cases(table)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_the_fast_path_matches_simglucose_within_half_a_mg_dl(t1d, simglucose_cases, precision):
    """Peer data the project did not make: simglucose 0.2.11's own runs of published patients."""
    table, cases = simglucose_cases
    traj = replay(t1d, cases, dataclasses.replace(FAST, precision=precision))
    assert traj.settings["path"] == "fast" and traj.settings["precision"] == precision
    diffs = max_differences(traj, table)
    assert (diffs < 0.5).all().all(), diffs.sort_values("plasma").tail()
    accurate = replay(t1d, cases)
    gap = np.max(np.abs(traj["plasma_glucose"] - accurate["plasma_glucose"]))
    assert gap < 0.1, gap  # half-minute steps: far inside the declared 0.5 mg/dL
    assert traj.check["passed"] and traj.check["max_error"]["plasma_glucose"] <= gap + 1e-9
    assert traj.check["tolerance"]["plasma_glucose"] == ("absolute", 0.5)
    assert len(traj.check["patients"]) == 2 and set(traj.check["patients"]) <= set(traj.patient_ids)


def test_an_undeclared_model_gets_a_step_from_its_jacobian_and_matches_the_closed_form(pk):
    params = np.array([[cl, v, ka] for cl, v, ka, *_ in PATIENTS])
    plans = [regimen(iv, inf, oral) for *_, iv, inf, oral in PATIENTS]
    traj = tl.simulate(pk, params, plans, times=TIMES, settings=FAST, progress=False)
    assert traj.check["path"] == "fast" and "Jacobian" in traj.check["reason"]
    assert traj.check["step"] <= 1.0 / 2.5 + 1e-12  # 1 / the largest ka of the sample
    for i, (cl, v, ka, iv, inf, oral) in enumerate(PATIENTS):
        expected = analytic_concentration(TIMES, cl, v, ka, iv, inf, oral)
        assert np.max(np.abs(traj["concentration"][i] - expected)) / np.max(expected) < 1e-3
    auto = tl.simulate(pk, params, plans, times=TIMES, settings=tl.SolverSettings(path="auto"), progress=False)
    assert auto.settings["path"] == "accurate" and "declares no fast path" in auto.check["reason"]


def test_a_stiff_model_stays_on_the_accurate_path(pk):
    fast_absorption = np.array([[5.0, 50.0, 400.0]])  # ka = 400/h: a 0.25-h step is far outside RK4's region
    plan = regimen(100.0, (10.0, 4.0, 25.0), (30.0, 200.0))
    settings = dataclasses.replace(FAST, fixed_dt=0.25)
    traj = tl.simulate(pk, fast_absorption, plan, times=TIMES, settings=settings, progress=False)
    assert traj.settings["path"] == "accurate" and "stiff" in traj.check["reason"]
    assert traj.check["stiffness"] > 2.5
    declared = dataclasses.replace(
        pk, profile=dataclasses.replace(pk.profile, fast=tl.models.FastPath(step=0.1, stiff=True))
    )
    kept = tl.simulate(declared, pk.default_parameters, plan, times=TIMES, settings=FAST, progress=False)
    assert kept.settings["path"] == "accurate" and "declared stiff" in kept.check["reason"]


def _demanding(t1d: tl.models.Model) -> tl.models.Model:
    """The T1D model with a tolerance its fast path cannot meet at one-minute steps."""
    strict = tl.models.FastPath(step=1.0, tolerance={"plasma_glucose": 1e-6})
    return dataclasses.replace(t1d, profile=dataclasses.replace(t1d.profile, fast=strict))


def test_a_chunk_that_fails_its_check_falls_back_or_is_refused(t1d, simglucose_cases):
    _, cases = simglucose_cases
    model = _demanding(t1d)
    with pytest.warns(FastPathWarning, match="re-run on the accurate path"):
        traj = replay(model, cases[:4], FAST)
    assert not traj.check["passed"] and traj.check["fallback_chunks"] == [0]
    accurate = replay(t1d, cases[:4])
    np.testing.assert_allclose(traj.observables, accurate.observables, rtol=1e-12)
    with pytest.raises(SimulationError, match="refusing"):
        replay(model, cases[:4], dataclasses.replace(FAST, on_check_failure="refuse"))


def test_fast_results_do_not_depend_on_the_chunking(pk):
    rng = np.random.default_rng(0)
    params = pk.default_parameters * np.exp(rng.normal(0, 0.3, size=(23, 3)))
    plan = regimen(100.0, (10.0, 4.0, 25.0), (30.0, 200.0))
    settings = dataclasses.replace(FAST, fixed_dt=0.05)
    whole = tl.simulate(pk, params, plan, times=TIMES, settings=settings, chunk_size=100, progress=False)
    chunked = tl.simulate(pk, params, plan, times=TIMES, settings=settings, chunk_size=8, progress=False)
    np.testing.assert_allclose(whole.observables, chunked.observables, rtol=1e-12, atol=1e-12)
    assert chunked.check["chunks"] == 3 and len(chunked.check["patients"]) == 6 and chunked.check["passed"]


def test_the_schedule_cuts_every_interval_into_equal_steps_and_pads_to_a_bucket():
    grid = np.array([0.0, 1.0, 2.5, 2.75, 5.0])
    plan = schedule(grid, np.array([0, 2, 4]), 0.5)
    real = plan.h > 0
    assert plan.interval.size == bucket(2 + 3 + 1 + 5) and np.all(real)
    ends = np.flatnonzero(plan.ends)
    np.testing.assert_allclose((plan.t + plan.h)[ends], grid[1:])
    assert plan.slot[ends].tolist() == [plan.n_out, 1, plan.n_out, 2] and plan.first_slot == 0
    assert plan.uniform is None and schedule(np.arange(5.0), np.arange(5), 0.5).uniform == 0.5
    assert [bucket(n) for n in (3, 16, 17, 33, 1441)] == [16, 16, 17, 34, 1472]


def test_bad_fast_path_settings_are_refused():
    with pytest.raises(tl.errors.InputError, match="path must be"):
        tl.SolverSettings(path="quick")
    with pytest.raises(tl.errors.InputError, match="precision"):
        tl.SolverSettings(precision="float16")
    with pytest.raises(tl.errors.InputError, match="check_patients"):
        tl.SolverSettings(check_patients=0)
    with pytest.raises(tl.errors.ModelError, match="step"):
        tl.models.FastPath(step=0.0)
