"""A twin judged on data it was not built from: identify on a record's first days,
forecast the next ones from the recorded inputs, and score the forecast against
what happened, beside the naive baselines a twin must beat.

Baselines: ``repeat_previous_day`` (the last day's observations, shifted by 24 h: a
point forecast, scored by its error; its CRPS is its absolute error),
``last_value`` (the last observation carried forward, a point forecast too) and
``prior_only`` (the population prior's members run through the same inputs, with the
declared sensor noise: what the twin knows before seeing the patient).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.twin.patient import PatientTwin


@dataclass(frozen=True)
class Score:
    """One forecaster's scores over the held-out span."""

    rmse_truth: float  # of the central forecast against the true values (nan without truth)
    rmse_observed: float  # of the central forecast against the observations
    coverage50: float  # share of observations inside the 50 % predictive interval (nan: point forecast)
    coverage90: float
    crps: float  # mean CRPS against the observations (absolute error for a point forecast)
    n: int
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


@dataclass
class HeldoutCheck:
    """Scores of the twin and the baselines, and the twin's identification diagnostics."""

    scores: dict[str, Score]
    identification: dict[str, Any] = field(default_factory=dict)
    forecast: pd.DataFrame | None = None  # time, observed, truth, twin median, q05, q95, smallest draw

    def to_dict(self) -> dict[str, Any]:
        return {"scores": {k: v.to_dict() for k, v in self.scores.items()}, "identification": self.identification}


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))) if ok.any() else float("nan")


def _ensemble_score(
    predictive: np.ndarray, central: np.ndarray, y: np.ndarray, truth: np.ndarray | None, wall: float
) -> Score:
    import scoringrules as sr

    q05, q25, q75, q95 = np.quantile(predictive, [0.05, 0.25, 0.75, 0.95], axis=0)
    return Score(
        rmse_truth=_rmse(central, truth) if truth is not None else float("nan"),
        rmse_observed=_rmse(central, y),
        coverage50=float(np.mean((y >= q25) & (y <= q75))),
        coverage90=float(np.mean((y >= q05) & (y <= q95))),
        crps=float(np.mean(sr.crps_ensemble(y, predictive.T))),
        n=int(y.size),
        wall_s=wall,
    )


def repeat_previous_day(history: pd.DataFrame, times: pd.Series, variable: str) -> np.ndarray:
    """The observation 24 h before each of ``times`` (nearest within 5 min), else NaN."""
    past = history[history["variable"] == variable].sort_values("time")
    shifted = pd.DataFrame({"time": past["time"] + pd.Timedelta(days=1), "value": past["value"].to_numpy()})
    target = pd.DataFrame({"time": pd.to_datetime(pd.Series(times), utc=True).to_numpy()}).sort_values("time")
    shifted["time"] = shifted["time"].astype(target["time"].dtype)
    merged = pd.merge_asof(target, shifted, on="time", direction="nearest", tolerance=pd.Timedelta(minutes=5))
    return merged["value"].to_numpy(dtype=float)


def _point_score(forecast: np.ndarray, y: np.ndarray, truth: np.ndarray | None) -> Score:
    """Scores of a point forecast (NaN where it has none): its CRPS is its absolute error."""
    ok = np.isfinite(forecast)
    return Score(
        rmse_truth=_rmse(forecast, truth) if truth is not None else float("nan"),
        rmse_observed=_rmse(forecast, y),
        coverage50=float("nan"),
        coverage90=float("nan"),
        crps=float(np.mean(np.abs(forecast[ok] - y[ok]))) if ok.any() else float("nan"),
        n=int(ok.sum()),
    )


def heldout_check(
    model: Any,
    observations: pd.DataFrame,
    doses: pd.DataFrame,
    *,
    split: pd.Timestamp,
    hours: float = 24.0,
    prior: Any,
    truth: pd.DataFrame | None = None,
    known: Mapping[str, float] | None = None,
    variable: str | None = None,
    **create: Any,
) -> HeldoutCheck:
    """Identify a twin on ``observations`` before ``split``, forecast ``hours`` after it
    from the recorded ``doses``, and score it and the baselines on what was observed.

    Arguments:
        truth: optional true values (``time``, ``value``) at the held-out times, e.g. a
            simulator's noise-free glucose, for the RMSE against truth.
        variable: the observable scored (default: the one observed most often).
        create: further keyword arguments of :meth:`PatientTwin.create` (method, config...).
    """
    split = pd.Timestamp(split)
    train = observations[observations["time"] < split]
    held = observations[(observations["time"] >= split) & (observations["time"] < split + pd.Timedelta(hours=hours))]
    if train.empty or held.empty:
        raise InputError(f"The split {split} leaves no observations before it or none in the {hours} h after it.")
    variable = variable or str(held["variable"].value_counts().index[0])
    held = held[held["variable"] == variable].sort_values("time")
    y = held["value"].to_numpy(dtype=float)
    true = None
    if truth is not None:
        lookup = truth.set_index(pd.to_datetime(truth["time"], utc=True))["value"]
        true = lookup.reindex(pd.to_datetime(held["time"], utc=True)).to_numpy(dtype=float)
    scores: dict[str, Score] = {}
    identification: dict[str, Any] = {}
    frame = pd.DataFrame({"time": held["time"].to_numpy(), "observed": y, "truth": true})
    methods: tuple[tuple[str, Any], ...] = (("twin", create.pop("method", "laplace")), ("prior_only", "prior"))
    for name, method in methods:
        t0 = time.perf_counter()
        twin = PatientTwin.create(model, train, doses, prior=prior, known=known, method=method, **create)
        wall = time.perf_counter() - t0
        hours_ahead = (held["time"].max() - twin.now).total_seconds() / 3600.0 + 0.1
        fc = twin.forecast(hours=hours_ahead, store=False)
        predictive = fc.at(variable, held["time"])
        o = fc.observables.index(variable)
        grid = fc.times.as_unit("ns").asi8.astype(np.float64)
        when = pd.to_datetime(held["time"], utc=True).astype("datetime64[ns, UTC]").astype("int64").to_numpy(np.float64)
        central = np.interp(when, grid, np.median(fc.members[:, :, o], axis=0))
        sensor = twin.config.noise_model(variable, twin.model)
        shown = sensor.read(y)  # every forecaster is scored on the instrument's scale: a "LOW" is its limit
        scores[name] = _ensemble_score(predictive, central, shown, true, wall)
        if name == "twin":
            identification = {"calibration": twin.calibration, "noise": twin.config.noise}
            frame["twin_median"] = central
            frame["twin_q05"], frame["twin_q95"] = np.quantile(predictive, [0.05, 0.95], axis=0)
            frame["twin_min"] = np.min(predictive, axis=0)
    repeat = sensor.read(repeat_previous_day(train, held["time"], variable))
    scores["repeat_previous_day"] = _point_score(repeat, shown, true)
    seen = train[train["variable"] == variable].sort_values("time")["value"]
    last = np.full(y.size, float(seen.iloc[-1]) if not seen.empty else np.nan)
    scores["last_value"] = _point_score(sensor.read(last), shown, true)
    return HeldoutCheck(scores, identification, frame)
