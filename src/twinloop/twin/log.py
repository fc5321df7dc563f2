"""A twin's log of everything it has seen (its observations, its doses), kept so that a
sync's work grows with the new rows, not with the history.

The rows are held as growable arrays (UTC nanoseconds, model times, one array per column;
a sync's rows add no Python object the garbage collector tracks), and the table is built
from them only when someone reads it (tables from the full harmonization are kept as they
are, so the table's dtypes are those of the rows logged). Deduplication checks a
key set (built once, on the first batch that overlaps the logged times, then kept up to
date); the doses active at a time come from their end times kept sorted (a binary
search), in log order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twinloop.connect.batch import NUMERIC, Rows, build_frame
from twinloop.connect.schema import DOSE_COLUMNS, OBSERVATION_COLUMNS
from twinloop.connect.timebase import unit_seconds

OBSERVATION_KEY = ("variable", "value")  # with the time: what makes an observation a duplicate
DOSE_KEY = ("input", "amount")
DOSE_FIELDS = ("input", "kind", "amount", "duration", "unit")


class _Column:
    """A growable 1-D array (amortized O(1) appends)."""

    def __init__(self, dtype: Any) -> None:
        self._data = np.empty(16, dtype=dtype)
        self._n = 0

    def extend(self, values: np.ndarray) -> None:
        end = self._n + len(values)
        if end > self._data.size:
            grown = np.empty(max(end, 2 * self._data.size), dtype=self._data.dtype)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n : end] = values
        self._n = end

    @property
    def values(self) -> np.ndarray:
        return self._data[: self._n]


@dataclass(frozen=True)
class Readings:
    """Observations as arrays (model times, variables, values), in log order."""

    t: np.ndarray
    variable: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return int(self.t.size)

    def take(self, which: np.ndarray) -> Readings:
        return Readings(self.t[which], self.variable[which], self.value[which])


class RecordLog:
    """An append-only canonical table (observations or doses) with its model times.

    Arguments:
        frame: the rows logged so far.
        columns: the table's columns.
        key: the two columns that, with the time, make a row a duplicate.
        model_time: timestamps -> model time (the twin's).
        time_unit: the model's time unit, or seconds per model time unit, for doses (their
            end times: a duration is in minutes); ``None`` for observations.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        columns: tuple[str, ...],
        key: tuple[str, str],
        model_time: Callable[[Any], np.ndarray],
        time_unit: str | float | None = None,
    ) -> None:
        self._empty = frame.iloc[:0]
        self._parts: list[pd.DataFrame] = []
        self._framed = 0  # rows already in ``_parts``
        self._columns = columns
        self._key = key
        self._time_unit = time_unit
        self._ns = _Column(np.int64)
        self._t = _Column(np.float64)
        self._arrays = {c: _Column(np.float64 if c in NUMERIC else object) for c in columns if c != "time"}
        self._keys: set[tuple[Any, ...]] | None = None
        self._latest = np.iinfo(np.int64).min
        self._end_sorted = np.zeros(0)
        self._end_order = np.zeros(0, dtype=np.int64)
        if not frame.empty:
            self.append(Rows.from_frame(frame, columns), model_time(frame["time"]))

    @classmethod
    def observations(cls, frame: pd.DataFrame, model_time: Callable[[Any], np.ndarray]) -> RecordLog:
        return cls(frame, OBSERVATION_COLUMNS, OBSERVATION_KEY, model_time)

    @classmethod
    def doses(cls, frame: pd.DataFrame, model_time: Callable[[Any], np.ndarray], time_unit: str | float) -> RecordLog:
        return cls(frame, DOSE_COLUMNS, DOSE_KEY, model_time, time_unit)

    def __len__(self) -> int:
        return self._t.values.size

    @property
    def frame(self) -> pd.DataFrame:
        """The whole table, in the order the rows were logged."""
        self._flush()
        if not self._parts:
            return self._empty
        if len(self._parts) > 1:
            self._parts = [pd.concat(self._parts, ignore_index=True)]
        return self._parts[0]

    def _flush(self) -> None:
        """Build the table of the rows logged as arrays only."""
        n = len(self)
        if self._framed < n:
            data = {c: a.values[self._framed :] for c, a in self._arrays.items()}
            self._parts.append(build_frame(self._columns, self._ns.values[self._framed :], data))
            self._framed = n

    @property
    def times(self) -> np.ndarray:
        """Every row's model time, in log order."""
        return self._t.values

    def append(self, rows: Rows, t: np.ndarray) -> None:
        """Log ``rows`` (whose model times are ``t``)."""
        if len(rows) == 0:
            return
        start = len(self)
        if rows.table is not None:  # a table of the full harmonization: kept, dtypes and all
            self._flush()
            self._parts.append(rows.table.copy())
        self._ns.extend(rows.ns)
        self._t.extend(t)
        for c, column in self._arrays.items():
            column.extend(rows.data[c])
        if rows.table is not None:
            self._framed = len(self)
        self._latest = max(self._latest, int(rows.ns.max()))
        if self._keys is not None:
            self._keys.update(self._key_tuples(start))
        if self._time_unit is not None:
            self._index_ends(start)

    def _key_tuples(self, start: int = 0) -> Any:
        a, b = (self._arrays[c].values[start:].tolist() for c in self._key)
        return zip(self._ns.values[start:].tolist(), a, b, strict=True)

    def fresh(self, rows: Rows) -> np.ndarray:
        """Which of ``rows`` are not logged yet (no logged row with the same time and key)."""
        ns = rows.ns
        if ns.size == 0 or int(ns.min()) > self._latest:
            return np.ones(ns.size, dtype=bool)
        if self._keys is None:
            self._keys = set(self._key_tuples())
        a, b = (rows.data[c].tolist() for c in self._key)
        return np.array([k not in self._keys for k in zip(ns.tolist(), a, b, strict=True)], dtype=bool)

    # --- observations --------------------------------------------------------------
    def readings(self, lo: float, hi: float = np.inf) -> Readings:
        """Logged observations with ``lo < t <= hi`` (model time, 1e-9 tolerance), in log order."""
        t = self.times
        which = (t > lo + 1e-9) & (t <= hi + 1e-9) if np.isfinite(hi) else t > lo + 1e-9
        return Readings(t[which], self._arrays["variable"].values[which], self._arrays["value"].values[which])

    # --- doses ---------------------------------------------------------------------
    def _index_ends(self, start: int) -> None:
        assert self._time_unit is not None
        seconds = unit_seconds(self._time_unit)
        ends = self._t.values[start:] + self._arrays["duration"].values[start:] * 60.0 / seconds
        order = np.argsort(ends, kind="stable")
        at = np.searchsorted(self._end_sorted, ends[order], side="right")
        self._end_sorted = np.insert(self._end_sorted, at, ends[order])
        self._end_order = np.insert(self._end_order, at, start + order)

    def active(self, start: float) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
        """The doses still acting at ``start`` (ending after it): their model times and
        ``(input, kind, amount, duration, unit)`` rows, in log order."""
        first = np.searchsorted(self._end_sorted, start - 1e-9, side="right")
        which = np.sort(self._end_order[first:])
        rows = zip(*(self._arrays[c].values[which].tolist() for c in DOSE_FIELDS), strict=True)
        return self._t.values[which], list(rows)
