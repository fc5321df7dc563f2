"""Observation protocols: when a quantity is measured, with what error, and which
measurements go missing.

A protocol turns simulated trajectories (the truth) into the observations a study
would record, in the canonical long table ``subject_id, time, variable, value, unit,
code, source``:

* schedule: a regular grid (CGM every 5 min) or visits (scans every 6-8 weeks) with
  per-patient jitter, on the simulation's time grid;
* error: additive, proportional, combined, or a CGM sensor's (Johnson-SU noise of
  :mod:`twinloop.models.t1d_cgm`), floored and capped at the measurable range;
* missingness: MCAR with probability ``p``; MAR with a logistic probability in the
  previous observed value of the patient (observed data only);
* dropout: an exponential time to dropout per patient; no observation after it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.models.t1d_cgm import CGMSensor, sensors
from twinloop.products.limits import MAX_EVENTS

ERROR_KINDS = ("none", "additive", "proportional", "combined", "cgm")

# LOINC codes of the observables the built-in models produce.
LOINC = {
    "subcutaneous_glucose": "99504-3",  # Glucose [Mass/volume] in Interstitial fluid
    "plasma_glucose": "2345-7",  # Glucose [Mass/volume] in Serum or Plasma
    "sum_of_diameters": "21889-1",  # Size Tumor
    "concentration": "",
}


def _num(where: str, raw: Mapping[str, Any], key: str, default: float | None = None, positive: bool = False) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}.{key} must be a number; got {value!r}.")
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0) or number < 0:
        raise InputError(f"{where}.{key} must be {'> 0' if positive else '>= 0'} and finite; got {value!r}.")
    return number


def _keys(where: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse keys outside ``allowed``, naming the key path and the accepted keys."""
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; accepted: {sorted(allowed)}.")


def _mapping_or_empty(where: str, raw: Any, example: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be a mapping such as {example}; got {raw!r}.")
    return raw


@dataclass(frozen=True)
class Schedule:
    """Measurement times: every ``every`` from ``start`` to ``end`` (model time units),
    or the listed ``visits``; each time shifted by a uniform jitter in ``[-jitter, jitter]``
    rounded to ``resolution`` (per patient), kept in order and within the span."""

    every: float | None = None
    start: float = 0.0
    end: float | None = None
    visits: tuple[float, ...] = ()
    jitter: float = 0.0

    @classmethod
    def parse(cls, where: str, raw: Any) -> Schedule:
        if not isinstance(raw, Mapping):
            raise InputError(f"{where} must be a mapping such as {{every: 5}} or {{visits: [0, 42, 84]}}.")
        if "visits" in raw:
            _keys(where, raw, {"visits", "jitter"})
            visits = raw["visits"]
            if not isinstance(visits, list) or not visits or len(visits) > MAX_EVENTS:
                raise InputError(
                    f"{where}.visits must be a list of 1 to {MAX_EVENTS} times such as [0, 42, 84]; got {visits!r}."
                )
            times = tuple(sorted(_num(where, {f"visits[{i}]": v}, f"visits[{i}]") for i, v in enumerate(visits)))
            return cls(visits=times, jitter=_num(where, raw, "jitter", 0.0))
        _keys(where, raw, {"every", "start", "end", "jitter"})
        start = _num(where, raw, "start", 0.0)
        end = _num(where, raw, "end") if raw.get("end") is not None else None
        if end is not None and end < start:
            raise InputError(f"{where}.end ({end:g}) must not be before {where}.start ({start:g}).")
        return cls(
            every=_num(where, raw, "every", None, positive=True),
            start=start,
            end=end,
            jitter=_num(where, raw, "jitter", 0.0),
        )

    def count(self, end: float) -> float:
        """How many nominal times fall in ``[0, end]`` (without building them)."""
        if self.visits:
            return float(len(self.visits))
        assert self.every is not None
        stop = min(end, self.end) if self.end is not None else end
        return max(0.0, (stop - self.start) / self.every + 1.0)

    def nominal(self, end: float) -> np.ndarray:
        if self.visits:
            return np.array([v for v in self.visits if v <= end])
        stop = min(end, self.end) if self.end is not None else end
        assert self.every is not None
        return self.start + self.every * np.arange(math.floor((stop - self.start) / self.every + 1e-9) + 1)

    def per_patient(self, n: int, grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(n, k)`` indices into ``grid`` (the simulation's output times)."""
        nominal = self.nominal(float(grid[-1]))
        times = np.broadcast_to(nominal, (n, nominal.size)).copy()
        if self.jitter > 0:
            times = times + rng.uniform(-self.jitter, self.jitter, size=times.shape)
            times[:, 0] = nominal[0]  # the baseline visit is not moved
            times = np.sort(np.clip(times, grid[0], grid[-1]), axis=1)
        idx = np.clip(np.searchsorted(grid, times - 1e-9), 0, grid.size - 1)
        below = np.clip(idx - 1, 0, grid.size - 1)
        nearer = np.abs(grid[below] - times) < np.abs(grid[idx] - times)
        return np.where(nearer, below, idx)


def _signed(where: str, value: Any) -> float:
    """A finite number of either sign."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where} must be a number; got {value!r}.")
    if not math.isfinite(value):
        raise InputError(f"{where} must be finite; got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class ErrorModel:
    """Measurement error: ``none``, ``additive`` (``sd``), ``proportional`` (``cv``),
    ``combined`` (both) or ``cgm`` (a sensor's noise, ``sensor``)."""

    kind: str = "none"
    sd: float = 0.0
    cv: float = 0.0
    sensor: str = "GuardianRT"
    lower: float = 0.0
    upper: float = math.inf

    @classmethod
    def parse(cls, where: str, raw: Any) -> ErrorModel:
        raw = raw or {"kind": "none"}
        if not isinstance(raw, Mapping) or raw.get("kind") not in ERROR_KINDS:
            raise InputError(f"{where}.kind must be one of {', '.join(ERROR_KINDS)}; got {raw!r}.")
        _keys(where, raw, {"kind", "sd", "cv", "sensor", "lower", "upper"})
        sensor = raw.get("sensor", "GuardianRT")
        if not isinstance(sensor, str) or sensor not in sensors():
            raise InputError(f"{where}.sensor is {sensor!r}; known CGM sensors: {', '.join(sensors())}.")
        lower = _num(where, raw, "lower", 0.0)
        upper = _num(where, raw, "upper") if raw.get("upper") is not None else math.inf
        if not upper > lower:
            raise InputError(f"{where}.upper ({upper:g}) must be above {where}.lower ({lower:g}).")
        return cls(str(raw["kind"]), _num(where, raw, "sd", 0.0), _num(where, raw, "cv", 0.0), sensor, lower, upper)

    def apply(self, truth: np.ndarray, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "cgm":
            sensor = CGMSensor(self.sensor, noise=True)
            # a continuous noise path per patient, evaluated at the sensor's times
            path = sensor.errors(truth.shape[0], times, int(rng.integers(2**31)))
            spec = sensor.spec
            return np.clip(truth + path, spec.min_mg_dl, spec.max_mg_dl)
        sd = self.sd if self.kind in ("additive", "combined") else 0.0
        cv = self.cv if self.kind in ("proportional", "combined") else 0.0
        noisy = truth * (1.0 + cv * rng.standard_normal(truth.shape)) + sd * rng.standard_normal(truth.shape)
        return np.clip(noisy, self.lower, self.upper) if self.kind != "none" else truth


@dataclass(frozen=True)
class Missingness:
    """MCAR probability ``mcar``; MAR probability ``sigmoid(mar_intercept +
    mar_slope * previous observed value)`` when ``mar_slope`` or ``mar_intercept`` is set."""

    mcar: float = 0.0
    mar_intercept: float | None = None
    mar_slope: float = 0.0

    @classmethod
    def parse(cls, where: str, raw: Any) -> Missingness:
        raw = _mapping_or_empty(where, raw, "{mcar: 0.02}")
        _keys(where, raw, {"mcar", "mar"})
        mcar = _num(where, raw, "mcar", 0.0)
        if mcar >= 1:
            raise InputError(f"{where}.mcar must be below 1; got {mcar}.")
        mar = _mapping_or_empty(f"{where}.mar", raw.get("mar"), "{intercept: -3, slope: 0.01}")
        _keys(f"{where}.mar", mar, {"intercept", "slope"})
        intercept = _signed(f"{where}.mar.intercept", mar["intercept"]) if "intercept" in mar else None
        return cls(mcar, intercept, _signed(f"{where}.mar.slope", mar.get("slope", 0.0)))

    def observed(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A boolean mask of the recorded measurements."""
        keep = rng.uniform(size=values.shape) >= self.mcar
        if self.mar_intercept is not None:
            u = rng.uniform(size=values.shape)
            last = np.full(values.shape[0], np.nan)
            for k in range(values.shape[1]):
                logit = self.mar_intercept + self.mar_slope * np.nan_to_num(last, nan=0.0)
                p_missing = np.where(np.isnan(last), 0.0, 1.0 / (1.0 + np.exp(-logit)))
                keep[:, k] &= u[:, k] >= p_missing
                last = np.where(keep[:, k], values[:, k], last)
        return keep


@dataclass(frozen=True)
class ObservationProtocol:
    """How one observable becomes recorded observations."""

    name: str
    observable: str
    schedule: Schedule
    error: ErrorModel = field(default_factory=ErrorModel)
    missing: Missingness = field(default_factory=Missingness)
    dropout_hazard: float = 0.0  # per model time unit
    variable: str = ""
    code: str = ""

    @classmethod
    def parse(cls, i: int, raw: Any) -> ObservationProtocol:
        where = f"observations[{i}]"
        if not isinstance(raw, Mapping):
            raise InputError(f"{where} must be a mapping with name, observable and schedule.")
        unknown = sorted(
            set(raw) - {"name", "observable", "schedule", "error", "missing", "dropout", "variable", "code"}
        )
        if unknown:
            raise InputError(
                f"{where} has unknown keys {unknown}; accepted: "
                "['code', 'dropout', 'error', 'missing', 'name', 'observable', 'schedule', 'variable']."
            )
        for key in ("name", "observable", "schedule"):
            if key not in raw:
                raise InputError(f"{where} needs '{key}'.")
        for key in ("name", "observable"):
            if not isinstance(raw[key], str) or not raw[key].strip():
                raise InputError(f"{where}.{key} must be a non-empty name; got {raw[key]!r}.")
        dropout = _mapping_or_empty(f"{where}.dropout", raw.get("dropout"), "{hazard: 0.001}")
        _keys(f"{where}.dropout", dropout, {"hazard"})
        for key in ("variable", "code"):
            if key in raw and not isinstance(raw[key], str):
                raise InputError(f"{where}.{key} must be text; got {raw[key]!r}.")
        return cls(
            name=str(raw["name"]),
            observable=str(raw["observable"]),
            schedule=Schedule.parse(f"{where}.schedule", raw["schedule"]),
            error=ErrorModel.parse(f"{where}.error", raw.get("error")),
            missing=Missingness.parse(f"{where}.missing", raw.get("missing")),
            dropout_hazard=_num(f"{where}.dropout", dropout, "hazard", 0.0),
            variable=str(raw.get("variable", raw["observable"])),
            code=str(raw.get("code", LOINC.get(str(raw["observable"]), ""))),
        )

    def observe(
        self,
        ids: list[str],
        grid: np.ndarray,
        truth: np.ndarray,
        unit: str,
        rng: np.random.Generator,
        dropout_times: np.ndarray,
    ) -> pd.DataFrame:
        """Observations of ``truth`` ``(n, len(grid))`` as a canonical long table with
        model time in ``time`` (the product converts it to timestamps)."""
        idx = self.schedule.per_patient(len(ids), grid, rng)
        times = grid[idx]
        true_values = np.take_along_axis(truth, idx, axis=1)
        values = self.error.apply(true_values, times[0], rng)  # a CGM path runs on the nominal times
        keep = self.missing.observed(values, rng) & (times <= dropout_times[:, None]) & np.isfinite(values)
        rows, cols = np.nonzero(keep)  # patient-major, then time: already in table order
        n_rows = rows.size

        def constant(text: str) -> Any:
            return pd.Categorical.from_codes(np.zeros(n_rows, dtype=np.int8), dtype=pd.CategoricalDtype([text]))

        return pd.DataFrame(
            {
                "subject_id": pd.Categorical.from_codes(rows.astype(np.int32), dtype=pd.CategoricalDtype(list(ids))),
                "time": times[rows, cols],
                "variable": constant(self.variable),
                "value": values[rows, cols],
                "unit": constant(unit),
                "code": constant(self.code),
                "source": constant(f"synthetic:{self.name}"),
            }
        )
