"""Synthetic patient records with known truth, in the canonical tables (for tests,
benchmarks and the demo): simulate one patient, observe with noise on a schedule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from twinloop.calibrate.noise import NoiseModel
from twinloop.connect.timebase import clock_seconds, to_timestamps
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
    clock: float | None = None,
    y0: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(observations, doses, true values) of one patient with parameters ``params``, from
    the initial state ``y0`` (default the model's rule); ``clock``: seconds per model time
    unit (default the model's)."""
    seconds = clock_seconds(model, clock)
    t = np.asarray(observe_times, dtype=float)
    times = np.unique(np.r_[0.0, t])
    settings = SolverSettings(rtol=1e-7, atol=1e-8)
    traj = simulate(model, params, plan, times=times, settings=settings, progress=False, y0=y0)
    truth = traj[observable][0][np.searchsorted(times, t)]
    rng = np.random.default_rng(seed)
    values = noise.sample(truth, rng)
    obs = pd.DataFrame(
        {
            "subject_id": subject_id,
            "time": to_timestamps(t, origin, seconds),
            "variable": observable,
            "value": values,
            "unit": traj.units[observable],
            "code": code,
            "source": "synthetic",
        }
    )
    doses = dose_table(model, plan, [subject_id])
    doses["time"] = to_timestamps(doses["time"].to_numpy(), origin, seconds)
    return obs, doses, truth


def window(frame: pd.DataFrame, start: Any, end: Any) -> pd.DataFrame:
    """Rows with ``start < time <= end`` (timestamps)."""
    return frame[(frame["time"] > start) & (frame["time"] <= end)].reset_index(drop=True)
