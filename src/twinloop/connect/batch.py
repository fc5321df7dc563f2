"""Harmonize a small batch of new rows (one sync's) without pandas' per-call overhead.

:func:`batch_rows` checks the rows of an already-canonical batch (UTC ``datetime64[ns]``
times (any resolution), float values, clean strings, codes known, units already the wanted ones) in plain
Python and returns them as :class:`Rows` (columns as arrays, no table built), whose
:meth:`Rows.frame` is the table :func:`~twinloop.connect.ingest.harmonize` would give
(:func:`harmonize_batch`). It returns ``None`` for anything else (a row to reject, a unit
to convert, another dtype), and the caller then takes the full path, so errors and
conversions are exactly the full path's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from twinloop.connect.codes import CodeMap
from twinloop.connect.schema import DOSE_COLUMNS, DOSE_KINDS, OBSERVATION_COLUMNS, empty_doses, empty_observations
from twinloop.connect.timebase import time_ns
from twinloop.connect.units import parse_unit
from twinloop.errors import InputError

UTC_NS = "datetime64[ns, UTC]"
NUMERIC = ("value", "amount", "duration")


@dataclass(frozen=True)
class Rows:
    """Canonical rows as columns: UTC nanoseconds ``ns`` and one array per other column of
    ``columns`` (floats for numbers, objects for strings); ``table``: the rows' table when
    the full harmonization built one (kept as it is, dtypes included).

    Example: ``rows.take(rows.data["subject_id"] == "p001").frame()``.
    """

    columns: tuple[str, ...]
    ns: np.ndarray
    data: Mapping[str, np.ndarray]
    table: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(self.ns.size)

    def take(self, which: np.ndarray) -> Rows:
        """The rows where the boolean mask ``which`` holds."""
        table = None if self.table is None else self.table[which]
        return Rows(self.columns, self.ns[which], {c: v[which] for c, v in self.data.items()}, table)

    def frame(self) -> pd.DataFrame:
        """The rows as a canonical table."""
        return self.table if self.table is not None else build_frame(self.columns, self.ns, self.data)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: tuple[str, ...]) -> Rows:
        """The rows of a canonical table (kept as their ``table``; a column it lacks reads as missing)."""

        def column(c: str) -> np.ndarray:
            if c not in frame.columns:
                return np.full(len(frame), np.nan if c in NUMERIC else None)
            return frame[c].to_numpy(dtype=np.float64 if c in NUMERIC else object)

        return cls(columns, time_ns(frame["time"]), {c: column(c) for c in columns if c != "time"}, frame)


def build_frame(columns: tuple[str, ...], ns: np.ndarray, data: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The canonical table of columns (``ns``: UTC nanoseconds), as harmonization builds it."""

    def column(c: str) -> Any:
        if c == "time":
            return pd.DatetimeIndex(ns, tz="UTC")
        return data[c].astype(np.float64) if c in NUMERIC else data[c].tolist()

    return pd.DataFrame({c: column(c) for c in columns})


@lru_cache(maxsize=1)
def _codes() -> CodeMap:
    return CodeMap()


@lru_cache(maxsize=1)
def _no_doses() -> pd.DataFrame:
    from twinloop.connect.ingest import harmonize

    return harmonize(empty_observations(), empty_doses()).doses


def _clean(values: list[Any], *, empty_ok: bool) -> bool:
    return all(isinstance(v, str) and v == v.strip() and (empty_ok or v) for v in values)


def _readable(unit: str) -> bool:
    try:
        parse_unit(unit)
    except InputError:
        return False
    return True


def _times(frame: pd.DataFrame) -> np.ndarray | None:
    dtype = str(frame["time"].dtype)
    if not (dtype.startswith("datetime64[") and dtype.endswith(", UTC]")):
        return None
    ns = np.asarray(frame["time"].astype(pd.DatetimeTZDtype("ns", "UTC")).array.asi8)
    return None if np.any(ns == np.iinfo(np.int64).min) else ns


def _floats(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    if frame[column].dtype != np.float64:
        return None
    values = frame[column].to_numpy()
    return values if np.all(np.isfinite(values)) else None


def _observations(frame: pd.DataFrame, units: Mapping[str, str]) -> Rows | None:
    if not set(OBSERVATION_COLUMNS[:5]) <= set(frame.columns):
        return None
    ns, value = _times(frame), _floats(frame, "value")
    if ns is None or value is None:
        return None
    n = len(frame)
    cols = {c: frame[c].tolist() if c in frame.columns else [""] * n for c in OBSERVATION_COLUMNS if c != "time"}
    if not all(_clean(cols[c], empty_ok=False) for c in ("subject_id", "variable", "unit")):
        return None
    if not (_clean(cols["code"], empty_ok=True) and _clean(cols["source"], empty_ok=True)):
        return None
    codes = _codes()
    variable = [codes.variable_of(c) or v for c, v in zip(cols["code"], cols["variable"], strict=True)]
    for v, u in set(zip(variable, cols["unit"], strict=True)):
        if v not in units or units[v] != u or not _readable(u):
            return None
    code = [c or codes.code_of(v) for c, v in zip(cols["code"], variable, strict=True)]
    rows = _kept(list(zip(cols["subject_id"], ns.tolist(), variable, value.tolist(), cols["unit"], strict=True)))
    order = sorted(rows, key=lambda i: (cols["subject_id"][i], int(ns[i]), variable[i]))
    strings = {**cols, "variable": variable, "code": code}
    data = {c: _objects([strings[c][i] for i in order]) for c in ("subject_id", "variable", "unit", "code", "source")}
    return Rows(OBSERVATION_COLUMNS, ns[order], {**data, "value": value[order]})


def _doses(frame: pd.DataFrame, units: Mapping[str, str]) -> Rows | None:
    if not {"subject_id", "time", "input", "amount", "unit"} <= set(frame.columns):
        return None
    n = len(frame)
    ns, amount = _times(frame), _floats(frame, "amount")
    duration = _floats(frame, "duration") if "duration" in frame.columns else np.zeros(n)
    if ns is None or amount is None or duration is None or np.any(amount < 0) or np.any(duration < 0):
        return None
    cols = {c: frame[c].tolist() for c in ("subject_id", "input", "unit")}
    cols["kind"] = frame["kind"].tolist() if "kind" in frame.columns else ["bolus"] * n
    if not all(_clean(v, empty_ok=False) for v in cols.values()):
        return None
    if any(k not in DOSE_KINDS or (k == "rate" and not d > 0) for k, d in zip(cols["kind"], duration, strict=True)):
        return None
    for name, unit in set(zip(cols["input"], cols["unit"], strict=True)):
        if units.get(name) not in (None, unit) or not _readable(unit):
            return None
    keys = zip(
        cols["subject_id"],
        ns.tolist(),
        cols["input"],
        cols["kind"],
        amount.tolist(),
        duration.tolist(),
        cols["unit"],
        strict=True,
    )
    rows = _kept(list(keys))
    order = sorted(rows, key=lambda i: (cols["subject_id"][i], int(ns[i]), cols["input"][i]))
    out = {c: _objects([cols[c][i] for i in order]) for c in ("subject_id", "input", "kind", "unit")}
    data = {**out, "amount": amount[order], "duration": duration[order].astype(np.float64)}
    return Rows(DOSE_COLUMNS, ns[order], data)


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _kept(keys: list[tuple[Any, ...]]) -> list[int]:
    """Positions of the first occurrence of each key (``drop_duplicates``)."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept


@lru_cache(maxsize=1)
def no_dose_rows() -> Rows:
    """No doses, as :class:`Rows` (their table: harmonize's empty dose table)."""
    return Rows.from_frame(_no_doses(), DOSE_COLUMNS)


def batch_rows(
    observations: pd.DataFrame, doses: pd.DataFrame | None, units: Mapping[str, str]
) -> tuple[Rows, Rows] | None:
    """The rows of ``(observations, doses)`` as ``harmonize(..., units=units)`` keeps them,
    for a clean batch whose variables are all in ``units`` (already in those units), else ``None``."""
    if observations.empty or (doses is not None and doses.empty):
        return None
    obs = _observations(observations, units)
    if obs is None:
        return None
    dose = no_dose_rows() if doses is None else _doses(doses, units)
    return None if dose is None else (obs, dose)


def harmonize_batch(
    observations: pd.DataFrame, doses: pd.DataFrame | None, units: Mapping[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """``(observations, doses)`` as ``harmonize(..., units=units)`` gives them for a clean
    batch (see :func:`batch_rows`), else ``None``."""
    rows = batch_rows(observations, doses, units)
    if rows is None:
        return None
    return rows[0].frame(), (_no_doses().copy() if doses is None else rows[1].frame())
