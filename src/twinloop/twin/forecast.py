"""Ensemble forecasts, their quantiles, and their scores once observations arrive."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from twinloop.connect.timebase import clock_seconds
from twinloop.errors import InputError

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


MAX_FORECAST_BYTES = 2 << 30  # the members' trajectories a forecast may hold in memory
MAX_HORIZON_HOURS = 24 * 365 * 100  # a century: every forecast time stays a pandas timestamp


def _size(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def horizon_steps(
    model: Any, members: int, hours: float, every: float | None, *, clock: float | None = None
) -> tuple[float, float]:
    """``(length, step)`` of a forecast over ``hours`` in model time (``clock``: seconds per
    model time unit, default the model's); :class:`InputError` for a horizon that is not
    a finite number > 0, or one whose members' trajectories would need more than
    :data:`MAX_FORECAST_BYTES` (the message gives the largest horizon accepted)."""
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not math.isfinite(hours) or hours <= 0:
        raise InputError(f"The forecast horizon (--hours) must be a finite number of hours > 0; got {hours}.")
    unit = clock_seconds(model, clock)
    length = hours * 3600.0 / unit
    step = every or (5.0 if model.time_unit == "min" else length / 96.0)
    if not math.isfinite(step) or step <= 0:
        raise InputError(f"The forecast output step must be a finite number > 0; got every={every}.")
    per_point = 8.0 * max(members, 1) * (len(model.states) + 2 * len(model.observables))
    need = length / step * per_point
    if need > MAX_FORECAST_BYTES or hours > MAX_HORIZON_HOURS:
        largest = min(MAX_FORECAST_BYTES / per_point * step * unit / 3600.0, MAX_HORIZON_HOURS)
        raise InputError(
            f"A forecast over {hours:g} hours (--hours) would need {_size(need)} for {members} members at "
            f"{step:g} {model.time_unit} steps; the largest horizon accepted is {math.floor(largest):g} hours "
            f"({_size(MAX_FORECAST_BYTES)}). Forecast a shorter horizon."
        )
    return length, step


def predictive_draws(members: np.ndarray, sd: np.ndarray, lower: Any, rng: np.random.Generator) -> np.ndarray:
    """One noisy draw per member value: Gaussian noise of ``sd``, truncated below at the
    observable's ``lower`` bound (0 for a concentration: never a negative glucose).
    Readings are then clipped to the instrument's range by the caller (``NoiseModel.read``).

    Every value gets a plain Gaussian draw; only the few that fall below ``lower`` are
    drawn again from the truncated tail by inverting its CDF (together: exactly the
    truncated normal, at a fraction of the cost of inverting the CDF everywhere)."""
    sd = np.maximum(sd, 1e-12)
    draws = members + sd * rng.standard_normal(members.shape)
    below = np.flatnonzero(draws < lower)
    if below.size:
        m, s = members.flat[below], np.broadcast_to(sd, members.shape).flat[below]
        low = np.broadcast_to(lower, members.shape).flat[below]
        floor = special.ndtr((low - m) / s)
        u = floor + (1.0 - floor) * rng.random(below.size)
        draws.flat[below] = m + s * special.ndtri(np.clip(u, 1e-12, 1.0 - 1e-12))
    return np.where(np.isfinite(members), np.maximum(draws, lower), np.nan)


@dataclass
class Forecast:
    """Member trajectories ``(N, T, O)`` of the observables: ``members`` without and
    ``predictive`` with observation noise; ``times`` are UTC timestamps."""

    twin_id: str
    version: int
    times: pd.DatetimeIndex
    observables: tuple[str, ...]
    units: tuple[str, ...]
    members: np.ndarray
    predictive: np.ndarray
    id: str = ""
    scores: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, tuple[float, float]] = field(default_factory=dict)  # observable -> (additive, proportional)
    lower: dict[str, float] = field(default_factory=dict)  # observable -> physical lower bound (default none)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # observable -> instrument's range
    solver: dict[str, Any] = field(default_factory=dict)  # the engine path that ran and its self-check

    @property
    def ensemble_size(self) -> int:
        return int(self.members.shape[0])

    @cached_property
    def span_ns(self) -> tuple[int, int]:
        """First and last time, UTC nanoseconds."""
        ns = self.times.as_unit("ns").asi8
        return int(ns[0]), int(ns[-1])

    def quantiles(self, q: tuple[float, ...] = QUANTILES) -> pd.DataFrame:
        """One row per time and observable: the predictive quantiles and the ensemble size."""
        qs = np.nanquantile(self.predictive, q, axis=0)  # (Q, T, O)
        rows = []
        for o, name in enumerate(self.observables):
            frame = pd.DataFrame({f"q{round(p * 100):02d}": qs[i, :, o] for i, p in enumerate(q)})
            frame.insert(0, "unit", self.units[o])
            frame.insert(0, "variable", name)
            frame.insert(0, "time", self.times)
            frame["mean"] = np.nanmean(self.predictive[:, :, o], axis=0)
            frame["ensemble_size"] = self.ensemble_size
            rows.append(frame)
        return pd.concat(rows, ignore_index=True)

    def at(self, variable: str, times: pd.Series) -> np.ndarray:
        """Predictive ensemble ``(N, len(times))`` of ``variable``: member trajectories
        interpolated linearly in time, plus observation noise drawn at those times
        (seeded by the forecast id); NaN outside the forecast span."""
        o = self.observables.index(variable)
        grid = self.times.as_unit("ns").asi8.astype(np.float64)
        when = (
            pd.to_datetime(pd.Series(times), utc=True)
            .astype("datetime64[ns, UTC]")
            .astype("int64")
            .to_numpy(dtype=np.float64)
        )
        out = np.full((self.ensemble_size, when.size), np.nan)
        inside = (when >= grid[0]) & (when <= grid[-1])
        for j in np.flatnonzero(inside):
            out[:, j] = [np.interp(when[j], grid, member) for member in self.members[:, :, o]]
        additive, proportional = self.noise.get(variable, (0.0, 0.0))
        rng = np.random.default_rng(list(self.id.encode()) or 0)
        sd = np.sqrt(additive**2 + (proportional * np.nan_to_num(out)) ** 2)
        draws = predictive_draws(out, sd, self.lower.get(variable, -np.inf), rng)
        return np.clip(draws, *self.ranges.get(variable, (-np.inf, np.inf)))

    def score(self, observations: pd.DataFrame) -> dict[str, Any]:
        """CRPS (scoringrules), 50 % and 90 % interval coverage and the rank histogram of
        the observations that fall inside this forecast's span; accumulated in ``scores``."""
        import scoringrules as sr  # its numba kernels compile when imported: only when scoring

        acc: dict[str, Any] = self.scores or {
            "n": 0,
            "crps_sum": 0.0,
            "in50": 0,
            "in90": 0,
            "ranks": [0] * (min(self.ensemble_size, 20) + 1),
        }
        for variable, rows in observations.groupby("variable"):
            if variable not in self.observables:
                continue
            ens = self.at(str(variable), rows["time"])
            y = np.clip(rows["value"].to_numpy(dtype=float), *self.ranges.get(str(variable), (-np.inf, np.inf)))
            ok = np.all(np.isfinite(ens), axis=0)
            if not ok.any():
                continue
            ens, y = ens[:, ok], y[ok]
            crps = np.asarray(sr.crps_ensemble(y, ens.T))
            q05, q25, q75, q95 = np.quantile(ens, [0.05, 0.25, 0.75, 0.95], axis=0)
            bins = len(acc["ranks"]) - 1
            ranks = np.floor((ens < y).mean(axis=0) * bins + 0.5 / self.ensemble_size).astype(int).clip(0, bins)
            acc["n"] += int(y.size)
            acc["crps_sum"] += float(crps.sum())
            acc["in50"] += int(((y >= q25) & (y <= q75)).sum())
            acc["in90"] += int(((y >= q05) & (y <= q95)).sum())
            for r in ranks:
                acc["ranks"][int(r)] += 1
        if acc["n"]:
            acc["crps"] = acc["crps_sum"] / acc["n"]
            acc["coverage50"] = acc["in50"] / acc["n"]
            acc["coverage90"] = acc["in90"] / acc["n"]
        self.scores = acc
        return acc

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            members=self.members,
            predictive=self.predictive,
            times=self.times.as_unit("ns").asi8,
            noise=np.array(json.dumps(self.noise)),
            lower=np.array(json.dumps(self.lower)),
            ranges=np.array(json.dumps({k: [float(a), float(b)] for k, (a, b) in self.ranges.items()})),
            solver=np.array(json.dumps(self.solver)),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(
        cls,
        raw: bytes,
        *,
        twin_id: str,
        version: int,
        observables: tuple[str, ...],
        units: tuple[str, ...],
        id: str = "",
        scores: dict[str, Any] | None = None,
    ) -> Forecast:
        with np.load(io.BytesIO(raw)) as data:
            times = pd.DatetimeIndex(pd.to_datetime(data["times"], utc=True))
            noise = {k: tuple(v) for k, v in json.loads(str(data["noise"])).items()}
            lower = json.loads(str(data["lower"])) if "lower" in data.files else {}
            ranges = json.loads(str(data["ranges"])) if "ranges" in data.files else {}
            solver = json.loads(str(data["solver"])) if "solver" in data.files else {}
            return cls(
                twin_id,
                version,
                times,
                observables,
                units,
                data["members"],
                data["predictive"],
                id,
                scores or {},
                noise,
                lower,
                {k: (float(a), float(b)) for k, (a, b) in ranges.items()},
                solver,
            )
