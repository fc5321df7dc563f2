"""Synthetic patient records with known truth, in the canonical tables (for tests,
benchmarks and the demo): simulate one patient, observe with noise on a schedule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from twinloop.calibrate.noise import NoiseModel
from twinloop.connect.timebase import to_timestamps
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.products.treatments import dose_table
from twinloop.simulate.engine import SolverSettings, simulate

ORIGIN = pd.Timestamp("2026-01-05T00:00:00Z")


def synthetic_record(
    model: Model,
    params: np.ndarray,
    plan: Inputs,
    observe_times: np.ndarray,
    *,
    observable: str,
    noise: NoiseModel,
    seed: int = 0,
    subject_id: str = "p001",
    origin: pd.Timestamp = ORIGIN,
    code: str = "",
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(observations, doses, true values) of one patient with parameters ``params``."""
    t = np.asarray(observe_times, dtype=float)
    times = np.unique(np.r_[0.0, t])
    traj = simulate(model, params, plan, times=times, settings=SolverSettings(rtol=1e-7, atol=1e-8), progress=False)
    truth = traj[observable][0][np.searchsorted(times, t)]
    rng = np.random.default_rng(seed)
    values = noise.sample(truth, rng)
    obs = pd.DataFrame(
        {
            "subject_id": subject_id,
            "time": to_timestamps(t, origin, model.time_unit),
            "variable": observable,
            "value": values,
            "unit": traj.units[observable],
            "code": code,
            "source": "synthetic",
        }
    )
    doses = dose_table(model, plan, [subject_id])
    doses["time"] = to_timestamps(doses["time"].to_numpy(), origin, model.time_unit)
    return obs, doses, truth


def window(frame: pd.DataFrame, start: Any, end: Any) -> pd.DataFrame:
    """Rows with ``start < time <= end`` (timestamps)."""
    return frame[(frame["time"] > start) & (frame["time"] <= end)].reset_index(drop=True)
