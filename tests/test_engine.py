"""The engine against closed-form pharmacokinetics, and its contract (chunks, failures, errors)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import twinloop as tl
from twinloop.errors import InputError
from twinloop.simulate import SimulationWarning, simulate_chunks
from twinloop.simulate.engine import observable_function

IV_TIMES = (0.0, 8.0, 16.0, 24.0)


def analytic_concentration(t, CL, V, ka, iv_mg, infusion, oral):
    """Superposition of the textbook one-compartment solutions (right-continuous at doses)."""
    k = CL / V
    c = np.zeros_like(t)
    for td in IV_TIMES:
        c += np.where(t >= td, iv_mg / V * np.exp(-k * (t - td)), 0.0)
    start, duration, rate = infusion
    during = rate / (k * V) * (1 - np.exp(-k * np.clip(t - start, 0, None)))
    after = rate / (k * V) * (1 - np.exp(-k * duration)) * np.exp(-k * (t - start - duration))
    c += np.where(t < start, 0.0, np.where(t <= start + duration, during, after))
    td, dose = oral
    tau = np.clip(t - td, 0, None)
    c += np.where(t >= td, dose * ka / (V * (ka - k)) * (np.exp(-k * tau) - np.exp(-ka * tau)), 0.0)
    return c


def regimen(iv_mg, infusion, oral):
    start, duration, rate = infusion
    return (
        tl.Inputs.bolus("dose_iv", [(t, iv_mg) for t in IV_TIMES])
        + tl.Inputs.infusion("infusion", start, duration, rate)
        + tl.Inputs.bolus("dose_oral", [oral])
    )


PATIENTS = [  # CL, V, ka, iv dose, (infusion start, duration, rate), (oral time, dose)
    (5.0, 50.0, 1.0, 100.0, (10.0, 4.0, 25.0), (30.0, 200.0)),
    (2.0, 20.0, 0.4, 50.0, (3.5, 10.0, 5.0), (12.25, 80.0)),
    (12.0, 80.0, 2.5, 300.0, (20.0, 0.5, 100.0), (40.0, 500.0)),
]
TIMES = np.unique(np.concatenate([np.linspace(0, 48, 97), [8.0, 12.25, 13.5, 20.5]]))


@pytest.mark.parametrize("backend", ["batched", "diffrax"])
@pytest.mark.parametrize(("rtol", "max_rel_error"), [(1e-6, 1e-4), (1e-9, 1e-7)])
def test_repeated_boluses_infusion_and_oral_dose_match_closed_form(pk, backend, rtol, max_rel_error):
    params = np.array([[cl, v, ka] for cl, v, ka, *_ in PATIENTS])
    plans = [regimen(iv, inf, oral) for *_, iv, inf, oral in PATIENTS]
    settings = tl.SolverSettings(backend=backend, rtol=rtol, atol=rtol * 1e-3)
    traj = tl.simulate(pk, params, plans, times=TIMES, settings=settings, progress=False)
    for i, (cl, v, ka, iv, inf, oral) in enumerate(PATIENTS):
        expected = analytic_concentration(TIMES, cl, v, ka, iv, inf, oral)
        error = np.abs(traj["concentration"][i] - expected) / np.max(expected)
        assert error.max() < max_rel_error, (i, error.max())
    # right-continuous at a dose: the value at t = 8 h already contains the second dose
    i8 = int(np.searchsorted(TIMES, 8.0))
    assert traj["concentration"][0, i8] > traj["concentration"][0, i8 - 1] + 1.5


def test_no_step_straddles_an_input_change(pk):
    # A 1-minute infusion in a 48-h run: a solver that is not told about it would step over it.
    plan = tl.Inputs.infusion("infusion", 17.3, 1 / 60, 600.0)
    traj = tl.simulate(pk, pk.default_parameters, plan, times=[0.0, 48.0], progress=False)
    expected = analytic_concentration(np.array([48.0]), 5.0, 50.0, 1.0, 0.0, (17.3, 1 / 60, 600.0), (0.0, 0.0))
    assert traj["concentration"][0, -1] == pytest.approx(expected[0], rel=1e-5)


def test_chunks_give_the_same_result_as_one_batch(pk):
    rng = np.random.default_rng(0)
    params = pk.default_parameters * np.exp(rng.normal(0, 0.3, size=(23, 3)))
    plan = regimen(100.0, (10.0, 4.0, 25.0), (30.0, 200.0))
    whole = tl.simulate(pk, params, plan, times=TIMES, chunk_size=100, progress=False)
    chunked = tl.simulate(pk, params, plan, times=TIMES, chunk_size=5, progress=False)
    np.testing.assert_array_equal(whole.observables, chunked.observables)
    assert chunked.patient_ids == whole.patient_ids
    assert [len(c.patient_ids) for c in simulate_chunks(pk, params, plan, times=TIMES, chunk_size=5)] == [5] * 4 + [3]


def test_failed_patient_is_reported_by_id_and_the_rest_complete(t1d):
    good = t1d.preset("adult#001")
    bad = good.copy()
    bad[t1d.parameter_names.index("kabs")] = 1e9  # absurdly fast absorption: step size collapses
    plan = tl.models.t1d_uva_padova.basal_bolus(t1d.param_map(good), [(60.0, 50.0)], t_end=240.0)
    settings = tl.SolverSettings(max_steps=50)
    with pytest.warns(SimulationWarning, match="1 of 2 patients failed"):
        traj = tl.simulate(
            t1d, np.stack([good, bad]), plan, times=np.arange(0.0, 241.0, 5.0),
            patient_ids=["ok", "broken"], settings=settings, progress=False,
        )  # fmt: skip
    assert list(traj.failures) == ["broken"]
    assert "maximum number of steps" in traj.failures["broken"]
    assert np.all(np.isfinite(traj["plasma_glucose"][0]))


def test_trajectories_convert_with_units_and_model_version(t1d, tmp_path):
    p = t1d.preset("child#003")
    plan = tl.models.t1d_uva_padova.basal_bolus(t1d.param_map(p), [(30.0, 20.0)], t_end=120.0)
    traj = tl.simulate(t1d, p, plan, times=np.arange(0.0, 121.0, 30.0), save="all", progress=False)
    wide = traj.to_dataframe("wide")
    assert list(wide.columns[:5]) == ["patient", "time", "plasma_glucose", "subcutaneous_glucose", "plasma_insulin"]
    assert wide.attrs["units"]["plasma_glucose"] == "mg/dL" and wide.attrs["model_version"] == t1d.version
    long = traj.to_dataframe("long")
    assert len(long) == 5 * (3 + 14)
    row = long[(long.variable == "glucose_plasma") & (long.time == 0.0)].iloc[0]
    assert row.unit == "mg/kg" and row.value == pytest.approx(t1d.param_map(p)["Gpb"])
    path = traj.to_parquet(tmp_path / "traj.parquet")
    meta = pq.read_schema(path).metadata[b"twinloop"]
    assert b'"model_id": "t1d-uva-padova"' in meta
    pd.testing.assert_frame_equal(pd.read_parquet(path), wide, check_like=True)
    ds = traj.to_xarray()
    assert ds["plasma_glucose"].attrs["units"] == "mg/dL" and ds.attrs["model_id"] == t1d.id
    np.testing.assert_array_equal(ds["plasma_insulin"].values, traj["plasma_insulin"])


def test_same_inputs_give_identical_outputs(t1d):
    plan = tl.models.t1d_uva_padova.basal_bolus(t1d.param_map(t1d.default_parameters), [(60.0, 40.0)], t_end=300.0)
    a = tl.simulate(t1d, t1d.default_parameters, plan, times=np.arange(0.0, 301.0), progress=False)
    b = tl.simulate(t1d, t1d.default_parameters, plan, times=np.arange(0.0, 301.0), progress=False)
    np.testing.assert_array_equal(a.observables, b.observables)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"params": np.ones((2, 5))}, r"params must have shape \(n_patients, 3\)"),
        ({"params": np.array([5.0, np.nan, 1.0])}, "non-finite value"),
        ({"times": [0.0]}, "at least two output times"),
        ({"times": [0.0, 2.0, 1.0]}, "strictly increasing"),
        ({"inputs": tl.Inputs.rate("insulin", 0, 1, 1.0)}, "has no input 'insulin'"),
        ({"inputs": tl.Inputs.bolus("infusion", [(1.0, 5.0)])}, "is a rate input; it was given as a bolus"),
        ({"inputs": [tl.Inputs(), tl.Inputs()]}, "Got 2 input plans for 1 patients"),
        ({"patient_ids": ["a", "b"]}, "patient_ids has 2 entries for 1 patients"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(pk, kwargs, message):
    args = {"params": pk.default_parameters, "inputs": tl.Inputs(), "times": [0.0, 1.0], **kwargs}
    with pytest.raises(tl.InputError, match=message):
        tl.simulate(pk, args.pop("params"), args.pop("inputs"), progress=False, **args)


def test_bad_solver_settings_are_refused():
    with pytest.raises(tl.InputError, match="Unknown solver 'rk99' for the batched backend"):
        tl.SolverSettings(solver="rk99")
    with pytest.raises(tl.InputError, match="Tolerances must be > 0"):
        tl.SolverSettings(rtol=0.0)
    with pytest.raises(tl.InputError, match="Unknown backend"):
        tl.SolverSettings(backend="scipy")  # type: ignore[arg-type]


# --- initial states per patient (y0) ----------------------------------------------------
@pytest.mark.parametrize(
    ("backend", "clock"), [("batched", "patient"), ("batched", "interval"), ("diffrax", "patient")]
)
def test_y0_per_patient_matches_the_closed_form_from_those_states(pk, backend, clock):
    """An oral PK patient started with drug already in the depot and the central
    compartment (no dose): the Bateman solution from that state, per patient."""
    params = np.tile(pk.default_parameters, (3, 1))
    y0 = np.array([[100.0, 0.0], [0.0, 50.0], [40.0, 20.0]])
    settings = tl.SolverSettings(backend=backend, clock=clock, rtol=1e-10, atol=1e-10)
    traj = tl.simulate(pk, params, tl.Inputs(), times=TIMES, y0=y0, save="all", settings=settings, progress=False)
    p = pk.param_map(pk.default_parameters)
    ka, ke = p["ka"], p["CL"] / p["V"]
    depot = y0[:, [0]] * np.exp(-ka * TIMES)
    absorbed = y0[:, [0]] * ka / (ka - ke) * (np.exp(-ke * TIMES) - np.exp(-ka * TIMES))
    central = y0[:, [1]] * np.exp(-ke * TIMES) + absorbed
    np.testing.assert_allclose(traj.states[:, :, 0], depot, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(traj.states[:, :, 1], central, rtol=1e-6, atol=1e-9)


def test_one_y0_is_shared_and_observable_function_takes_it(pk):
    x0 = np.array([0.0, 80.0])
    shared = tl.simulate(pk, np.tile(pk.default_parameters, (2, 1)), tl.Inputs(), times=TIMES, y0=x0, progress=False)
    assert np.allclose(shared.observables[0], shared.observables[1])
    fn = observable_function(pk, tl.Inputs(), TIMES, y0=x0)
    np.testing.assert_allclose(np.asarray(fn(pk.default_parameters)), shared.observables[0], rtol=1e-9)
    own = tl.simulate(pk, pk.default_parameters, tl.Inputs(), times=TIMES, progress=False)
    assert not np.allclose(own.observables[0], shared.observables[0])  # the model's rule starts empty


@pytest.mark.parametrize(
    ("y0", "message"),
    [
        (np.zeros(3), r"y0 must be one state vector \(2,\) or one per patient \(2, 2\)"),
        (np.full((2, 2), np.nan), "non-finite"),
    ],
)
def test_bad_y0_is_refused(pk, y0, message):
    with pytest.raises(InputError, match=message):
        tl.simulate(pk, np.tile(pk.default_parameters, (2, 1)), tl.Inputs(), times=TIMES, y0=y0, progress=False)
