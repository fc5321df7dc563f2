"""Validation of a core against references it was not built from.

Closed-form solutions where the model has one under a simple regimen (Stein,
Claret after an IV dose, one-compartment PK), and for the UVA/Padova core the
stored simglucose trajectories (the peer implementation), when the reference file
is present (``tests/data/simglucose_reference.csv.gz`` in a checkout, or
``TWINLOOP_SIMGLUCOSE_REFERENCE``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.simulate import simulate
from twinloop.simulate.engine import SolverSettings

TIGHT = SolverSettings(rtol=1e-9, atol=1e-9)


def _run(model: Model, p: dict[str, float], plan: Inputs, times: np.ndarray, name: str) -> np.ndarray:
    params = np.array([[p[n] for n in model.parameter_names]])
    return simulate(model, params, plan, times=times, settings=TIGHT, progress=False)[name][0]


def _defaults(model: Model) -> dict[str, float]:
    return dict(zip(model.parameter_names, map(float, model.default_parameters), strict=True))


def _stein(model: Model) -> tuple[np.ndarray, np.ndarray]:
    p, t = _defaults(model), np.linspace(0.0, 730.0, 74)
    exact = p["y0"] * (np.exp(-p["d"] * t) + np.exp(p["g"] * t) - 1.0)
    return _run(model, p, Inputs(), t, model.observables[0].name), exact


def _claret(model: Model) -> tuple[np.ndarray, np.ndarray]:
    p, t, dose = _defaults(model), np.linspace(0.0, 200.0, 101), 2000.0
    k = p["CL"] / p["V"]
    kill = p["KD"] * k * dose * (1 - np.exp(-(k + p["lam"]) * t)) / (k + p["lam"])
    exact = p["y0"] * np.exp(p["KL"] * t - kill)
    return _run(model, p, Inputs.bolus("dose_iv", [(0.0, dose)]), t, "sum_of_diameters"), exact


def _pk_one(model: Model) -> tuple[np.ndarray, np.ndarray]:
    p, t, dose = _defaults(model), np.linspace(0.0, 48.0, 97), 100.0
    exact = dose / p["V"] * np.exp(-p["CL"] / p["V"] * t)
    return _run(model, p, Inputs.bolus("dose_iv", [(0.0, dose)]), t, model.observables[0].name), exact


CLOSED_FORMS: dict[str, tuple[str, Callable[[Model], tuple[np.ndarray, np.ndarray]]]] = {
    "tgi-stein": ("closed form y0 (exp(-d t) + exp(g t) - 1)", _stein),
    "tgi-claret": ("closed form after an IV bolus (exposure integrated analytically)", _claret),
    "pk-one-compartment": ("closed form D/V exp(-CL/V t) after an IV bolus", _pk_one),
}


def simglucose_reference() -> Path | None:
    configured = os.environ.get("TWINLOOP_SIMGLUCOSE_REFERENCE")
    for candidate in (configured, "tests/data/simglucose_reference.csv.gz"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def validate(model: Model) -> list[dict[str, Any]]:
    """Each available reference comparison for ``model``: the reference, the error, pass/fail."""
    out = []
    if model.id in CLOSED_FORMS:
        name, compare = CLOSED_FORMS[model.id]
        got, exact = compare(model)
        error = float(np.max(np.abs(got - exact) / np.abs(exact)))
        out.append({"reference": name, "max_relative_error": error, "tolerance": 1e-6, "passed": error < 1e-6})
    if model.id == "t1d-uva-padova" and (path := simglucose_reference()) is not None:
        out.append(_simglucose(model, path))
    return out


def replay_record(model: Model, table: Any, patients: int | None = None) -> Any:
    """Replay each patient's recorded insulin and meals (a simglucose record: minutes 0..1439)
    open-loop through the engine; one trajectory per patient, in the record's order."""
    from twinloop.models import t1d_uva_padova

    names = list(dict.fromkeys(table["patient"]))[:patients]
    plans, params = [], []
    for name in names:
        rows = table[table["patient"] == name]
        minutes = np.append(rows["minute"].to_numpy(float), 1440.0)  # add the closing minute 1440
        insulin = np.append(rows["insulin_U_per_min"].to_numpy(), np.nan)
        carbs = np.append(rows["carbs_g"].to_numpy(), np.nan)
        plans.append(t1d_uva_padova.recorded_inputs(minutes, insulin, carbs))
        params.append(model.preset(name))
    return simulate(model, np.stack(params), plans, times=np.arange(0.0, 1440.0), patient_ids=names, progress=False)


def _simglucose(model: Model, path: Path, patients: int = 5) -> dict[str, Any]:
    """The engine replaying simglucose's recorded insulin and meals: max glucose difference (mg/dL)."""
    import pandas as pd

    table = pd.read_csv(path)
    names = list(dict.fromkeys(table["patient"]))[:patients]
    traj = replay_record(model, table, patients)
    worst = 0.0
    for i, name in enumerate(names):
        ref = table[table["patient"] == name]["plasma_glucose_mg_dl"].to_numpy()
        worst = max(worst, float(np.max(np.abs(traj["plasma_glucose"][i] - ref))))
    return {"reference": f"simglucose 0.2.11, {len(names)} patients over 24 h with meals (mg/dL)",
            "max_abs_error_mg_dl": worst, "max_relative_error": worst / 100.0, "tolerance": 0.5,
            "passed": worst < 0.5}  # fmt: skip
