"""Validation of the canonical tables every patient record passes through.

The tables themselves (columns, dtypes, empty tables) are defined once in
:mod:`twinloop._schema`; they are re-exported here. ``time`` is an absolute UTC timestamp.

Validation never repairs silently: a row that breaks a rule is moved to the list of
rejected records with the rule it broke; the caller decides whether any rejection
aborts the whole batch (it does in :func:`twinloop.connect.ingest`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twinloop._schema import DOSE_COLUMNS as DOSE_COLUMNS
from twinloop._schema import DOSE_KINDS as DOSE_KINDS
from twinloop._schema import OBSERVATION_COLUMNS as OBSERVATION_COLUMNS
from twinloop._schema import empty_doses as empty_doses
from twinloop._schema import empty_observations as empty_observations
from twinloop.errors import DataError

# The timestamps pandas can hold (nanoseconds since 1970 in 64 bits).
TIME_RANGE = ("1677-09-22", "2262-04-11")
TIME_RULE = (
    f"time could not be read as a timestamp between {TIME_RANGE[0]} and {TIME_RANGE[1]} "
    "(use ISO 8601, e.g. 2026-01-05T08:00:00Z)"
)


@dataclass(frozen=True)
class Rejected:
    """One record that was not accepted, where it came from, and why."""

    source: str
    record: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "record": self.record, "reason": self.reason}


# a number with no date in it (``12345``, ``1.7e9``): a count from an unstated epoch, never read as a time
BARE_NUMBER = r"\s*[-+]?(?:\d[\d_]*)?(?:\.\d*)?(?:[eE][-+]?\d+)?\s*"


def utc_times(values: Any) -> pd.Series:
    """Parse timestamps to UTC; naive times are read as UTC. Unparseable ones, bare
    numbers (a count from an unstated epoch) and times outside pandas' range
    (:data:`TIME_RANGE`) become NaT."""
    raw = pd.Series(values)
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    text = pd.Series(
        [v.isoformat() if hasattr(v, "isoformat") else "" if v is None else str(v) for v in raw],
        index=raw.index,
        dtype=object,
    )
    bare = text.str.fullmatch(BARE_NUMBER).fillna(False).astype(bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(text.where(~bare, ""), errors="coerce", utc=True, format="mixed")
    low, high = (pd.Timestamp(t, tz="UTC") for t in TIME_RANGE)
    parsed = parsed.where((parsed >= low) & (parsed <= high))
    return parsed.astype("datetime64[ns, UTC]")


def numbers(values: pd.Series) -> pd.Series:
    """A column as float64: numbers and numeric text; anything else (booleans included) NaN."""
    text = values.map(lambda v: "" if isinstance(v, bool) or v is None else str(v).strip())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.to_numeric(text, errors="coerce").astype(np.float64)


def _describe(row: Mapping[str, Any], columns: tuple[str, ...]) -> str:
    return ", ".join(f"{c}={row.get(c)!r}" for c in columns if c in row)


def _split(frame: pd.DataFrame, bad: pd.Series, reasons: pd.Series, columns: tuple[str, ...]) -> list[Rejected]:
    rows = frame[bad]
    source = rows["source"] if "source" in rows else pd.Series("", index=rows.index)
    return [Rejected(str(source[i]), _describe(rows.loc[i].to_dict(), columns), str(reasons[i])) for i in rows.index]


def validate_observations(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Rejected]]:
    """Check the canonical observation columns row by row.

    Returns the accepted rows (times as UTC timestamps, values as float) and the
    rejected ones with their reason: a missing subject, an unparseable time, a
    non-numeric or non-finite value, or a missing variable or unit.
    """
    missing = [c for c in ("subject_id", "time", "variable", "value", "unit") if c not in frame.columns]
    if missing:
        raise DataError(
            f"The observation table lacks the columns {missing}; the canonical columns are "
            f"{list(OBSERVATION_COLUMNS)} (code and source are optional)."
        )
    out = frame.copy()
    for col in ("code", "source"):
        if col not in out.columns:
            out[col] = ""
    out = out.reset_index(drop=True)
    raw_time, raw_value = out["time"].copy(), out["value"].copy()
    out["time"] = utc_times(out["time"]).to_numpy()
    out["value"] = numbers(out["value"])
    for col in ("subject_id", "variable", "unit", "code", "source"):
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str).str.strip()
    reasons = pd.Series("", index=out.index, dtype=object)
    rules = [
        (out["subject_id"] == "", "subject_id is empty; every observation needs the patient it belongs to"),
        (out["time"].isna(), TIME_RULE),
        (~np.isfinite(out["value"].to_numpy(dtype=float)), "value is not a finite number"),
        (
            (out["variable"] == "") & (out["code"] == ""),
            "variable and code are empty; give the observable name or a LOINC code",
        ),
        (out["unit"] == "", "unit is empty; give a UCUM unit such as mg/dL"),
    ]
    for bad, why in reversed(rules):  # the first rule a row breaks is the reason shown
        reasons[bad] = why
    bad = reasons != ""
    shown = out.assign(time=raw_time, value=raw_value)
    rejected = _split(shown, bad, reasons, OBSERVATION_COLUMNS)
    return out.loc[~bad, list(OBSERVATION_COLUMNS)].reset_index(drop=True), rejected


def validate_doses(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Rejected]]:
    """Check the canonical dose columns row by row (see the module docstring)."""
    missing = [c for c in ("subject_id", "time", "input", "amount", "unit") if c not in frame.columns]
    if missing:
        raise DataError(f"The dose table lacks the columns {missing}; the canonical columns are {list(DOSE_COLUMNS)}.")
    out = frame.copy().reset_index(drop=True)
    if "kind" not in out.columns:
        out["kind"] = "bolus"
    if "duration" not in out.columns:
        out["duration"] = 0.0
    raw_time, raw_amount = out["time"].copy(), out["amount"].copy()
    out["time"] = utc_times(out["time"]).to_numpy()
    out["amount"] = numbers(out["amount"])
    out["duration"] = numbers(out["duration"])
    for col in ("subject_id", "input", "kind", "unit"):
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str).str.strip()
    reasons = pd.Series("", index=out.index, dtype=object)
    amount = out["amount"].to_numpy(dtype=float)
    duration = out["duration"].to_numpy(dtype=float)
    rules = [
        (out["subject_id"] == "", "subject_id is empty"),
        (out["time"].isna(), TIME_RULE),
        (~np.isfinite(amount) | (amount < 0), "amount must be a finite number >= 0"),
        (~np.isfinite(duration) | (duration < 0), "duration must be a finite number of minutes >= 0"),
        (~out["kind"].isin(DOSE_KINDS), f"kind must be one of {list(DOSE_KINDS)}"),
        ((out["kind"] == "rate") & ~(duration > 0), "a rate needs a duration > 0"),
        (out["input"] == "", "input is empty; name the model input (e.g. insulin, carbs, dose_iv)"),
        (out["unit"] == "", "unit is empty"),
    ]
    for bad, why in reversed(rules):
        reasons[bad] = why
    bad = reasons != ""
    rejected = _split(out.assign(time=raw_time, amount=raw_amount, source="doses"), bad, reasons, DOSE_COLUMNS)
    return out.loc[~bad, list(DOSE_COLUMNS)].reset_index(drop=True), rejected
