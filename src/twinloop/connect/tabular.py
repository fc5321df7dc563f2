"""CSV readers: any table through a declared column map, and CGM/pump exports.

A column map (YAML or a mapping) says where each canonical field lives::

    subject_id: {column: patient}        # or {value: p001} for a one-patient file
    time: {column: timestamp, timezone: Europe/Paris}   # naive times are local to it (default UTC)
    observations:                        # wide columns, one variable each ...
      - {column: glucose, variable: subcutaneous_glucose, unit: mmol/L, code: 99504-3}
    long: {variable: test, value: result, unit: units, code: loinc}   # ... or a long table
    doses:
      - {column: bolus_units, input: insulin, unit: U}
      - {column: basal_u_per_h, input: insulin, kind: rate, unit: U/h}   # held until the next row
      - {column: carbs_g, input: carbs, unit: g}

Rows are not validated here: the result goes through :func:`twinloop.connect.ingest`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twinloop.connect.schema import (
    DOSE_COLUMNS,
    OBSERVATION_COLUMNS,
    TIME_RANGE,
    empty_doses,
    empty_observations,
    utc_times,
)
from twinloop.errors import DataError, DataWarning, InputError

_CGM_TIME = ("timestamp", "time", "datetime", "date", "device timestamp", "ts")
_CGM_GLUCOSE = ("glucose", "sgv", "glucose value", "cgm", "bg", "value")
_CGM_UNIT = ("unit", "units", "glucose unit")
_CGM_DOSES = {
    "insulin": ("bolus", "insulin", "bolus_u", "insulin_u"),
    "carbs": ("carbs", "cho", "carbohydrates", "carbs_g"),
}
_CGM_BASAL = ("basal", "basal_u_per_h", "basal rate")


@dataclass(frozen=True)
class ColumnMap:
    """Where the canonical fields are in a CSV file (see the module docstring)."""

    time: Mapping[str, Any]
    subject_id: Mapping[str, Any] = field(default_factory=lambda: {"value": "patient"})
    observations: tuple[Mapping[str, Any], ...] = ()
    long: Mapping[str, Any] | None = None
    doses: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "column map") -> ColumnMap:
        if not isinstance(raw, Mapping) or "time" not in raw:
            raise InputError(f"{where} must be a mapping with at least 'time: {{column: ...}}'; got {_brief(raw)}.")
        time = raw["time"] if isinstance(raw["time"], Mapping) else {"column": raw["time"]}
        _needs(time, ("column",), f"{where}: time", "{column: timestamp}")
        subject = raw.get("subject_id", {"value": "patient"})
        subject = subject if isinstance(subject, Mapping) else {"column": subject}
        if not ({"column", "value"} & set(subject)):
            raise InputError(f"{where}: subject_id needs 'column' or 'value'; got {_brief(subject)}.")
        obs, doses = _items(raw, "observations", where), _items(raw, "doses", where)
        for i, item in enumerate(obs):
            _needs(item, ("column", "variable"), f"{where}: observations[{i}]", "{column: glucose, variable: ...}")
            if "unit" not in item and "unit_column" not in item:
                raise InputError(f"{where}: observations[{i}] needs 'unit' or 'unit_column'; got {_brief(item)}.")
        for i, item in enumerate(doses):
            _needs(
                item, ("column", "input", "unit"), f"{where}: doses[{i}]", "{column: bolus, input: insulin, unit: U}"
            )
            if "duration_min" in item and not isinstance(item["duration_min"], int | float):
                raise InputError(f"{where}: doses[{i}].duration_min must be a number of minutes; got {_brief(item)}.")
        long = raw.get("long")
        if long is not None:
            _needs(long, ("value", "unit"), f"{where}: long", "{variable: test, value: result, unit: units}")
        if not obs and not long and not doses:
            raise InputError(f"{where} maps no observations ('observations' or 'long') and no 'doses'.")
        return cls(time=time, subject_id=subject, observations=obs, long=long, doses=doses)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ColumnMap:
        from twinloop._yaml import load_yaml

        return cls.from_dict(load_yaml(path, "a column map (YAML)"), str(path))


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _items(raw: Mapping[str, Any], key: str, where: str) -> tuple[Mapping[str, Any], ...]:
    items = raw.get(key) or ()
    if not isinstance(items, list | tuple):
        raise InputError(f"{where}: {key} must be a list of mappings; got {_brief(items)}.")
    return tuple(items)


def _needs(item: Any, keys: tuple[str, ...], where: str, example: str) -> None:
    """``item`` is a mapping with ``keys``, each a plain value (a column name, a unit...)."""
    if not isinstance(item, Mapping) or not set(keys) <= set(item):
        raise InputError(f"{where} needs {', '.join(map(repr, keys))} (e.g. {example}); got {_brief(item)}.")
    for key, value in item.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InputError(f"{where}.{key} must be a name or a number; got {_brief(value)}.")


def _read_table(path: Path, what: str) -> pd.DataFrame:
    """Every cell of a CSV file as text; :class:`DataError` saying what is wrong with it."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{what} {path.name} is not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x}); save it as UTF-8 CSV."
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} {path.name} is empty; it needs a header row and data rows.") from None
    except (OSError, pd.errors.ParserError) as e:
        raise DataError(
            f"Cannot read {what} {path.name}: {' '.join(str(e).split())}. Fix the file's CSV syntax."
        ) from None
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _column(frame: pd.DataFrame, name: str, where: str) -> pd.Series:
    if name not in frame.columns:
        raise DataError(f"{where}: column {name!r} is not in the file; its columns are {list(frame.columns)}.")
    return frame[name]


_AWARE = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"


def _times(frame: pd.DataFrame, spec: Mapping[str, Any], where: str) -> pd.Series:
    """The time column as text for :func:`~twinloop.connect.schema.utc_times`: naive times
    are localized to the map's ``timezone`` (if any); a column mixing times with and
    without a UTC offset is refused (it has no one reading)."""
    column = str(spec["column"])
    raw = _column(frame, column, where).astype(str).str.strip()
    aware = raw.str.contains(_AWARE, regex=True)
    naive = ~aware & (raw != "")
    if aware.any() and naive.any():
        a, n = int(np.flatnonzero(aware.to_numpy())[0]), int(np.flatnonzero(naive.to_numpy())[0])
        raise DataError(
            f"{where}: column {column!r} mixes times with a UTC offset (row {a + 2}: {raw.iloc[a]!r}) and times "
            f"without one (row {n + 2}: {raw.iloc[n]!r}); give every time an offset (e.g. 2026-01-05T08:00:00+01:00), "
            "or none and the column map's time.timezone."
        )
    tz, fmt = spec.get("timezone"), spec.get("format")
    if not naive.any() or (not tz and not fmt):
        return raw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = pd.to_datetime(raw, errors="coerce", format=str(fmt or "mixed"))
        except (ValueError, TypeError) as e:
            raise InputError(
                f"{where}: time.format {fmt!r} cannot read column {column!r} ({e}); fix the format."
            ) from e
        low, high = (pd.Timestamp(t) for t in TIME_RANGE)
        parsed = parsed.where((parsed >= low) & (parsed <= high)).astype("datetime64[ns]")
    if tz:
        try:
            parsed = parsed.dt.tz_localize(str(tz), ambiguous="NaT", nonexistent="NaT")
        except (KeyError, ValueError, TypeError) as e:  # an unknown zone (pytz/zoneinfo raise KeyError subclasses)
            raise InputError(
                f"{where}: time.timezone {tz!r} is not a time zone; give an IANA name such as Europe/Paris or UTC."
            ) from e
    # keep the raw text where parsing failed so the rejected record shows it
    return pd.Series(np.where(parsed.isna(), raw, parsed.astype(str)), index=frame.index)


def read_csv(
    path: str | Path, columns: ColumnMap | Mapping[str, Any] | str | Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a CSV file through a column map; returns (observations, doses) in canonical columns."""
    path = Path(path)
    cmap = (
        columns
        if isinstance(columns, ColumnMap)
        else (ColumnMap.from_dict(columns) if isinstance(columns, Mapping) else ColumnMap.from_yaml(columns))
    )
    frame = _read_table(path, "CSV file")
    where = path.name
    time = _times(frame, cmap.time, where)
    subject = (
        _column(frame, str(cmap.subject_id["column"]), where).astype(str)
        if "column" in cmap.subject_id
        else pd.Series(str(cmap.subject_id.get("value", "patient")), index=frame.index)
    )
    rows_of = pd.Series([f"{where}:{i + 2}" for i in range(len(frame))], index=frame.index)
    obs_parts = []
    for item in cmap.observations:
        values = _column(frame, str(item["column"]), where)
        present = values.astype(str).str.strip() != ""
        unit = _column(frame, str(item["unit_column"]), where) if "unit_column" in item else str(item["unit"])
        part = pd.DataFrame(
            {
                "subject_id": subject,
                "time": time,
                "variable": str(item["variable"]),
                "value": values,
                "unit": unit,
                "code": str(item.get("code", "")),
                "source": rows_of,
            }
        )
        obs_parts.append(part[present])
    if cmap.long:
        spec = cmap.long
        part = pd.DataFrame(
            {
                "subject_id": subject,
                "time": time,
                "variable": _column(frame, str(spec["variable"]), where) if "variable" in spec else "",
                "value": _column(frame, str(spec["value"]), where),
                "unit": _column(frame, str(spec["unit"]), where),
                "code": _column(frame, str(spec["code"]), where) if "code" in spec else "",
                "source": rows_of,
            }
        )
        obs_parts.append(part)
    dose_parts = [_doses(frame, item, subject, time, where) for item in cmap.doses]
    observations = pd.concat(obs_parts, ignore_index=True) if obs_parts else empty_observations()
    doses = pd.concat(dose_parts, ignore_index=True) if dose_parts else empty_doses()
    return observations[list(OBSERVATION_COLUMNS)], doses[list(DOSE_COLUMNS)]


def _doses(
    frame: pd.DataFrame, item: Mapping[str, Any], subject: pd.Series, time: pd.Series, where: str
) -> pd.DataFrame:
    values = _column(frame, str(item["column"]), where).astype(str).str.strip()
    values = values.where(~values.str.lower().isin(("nan", "none")), "")
    kind = str(item.get("kind", "bolus"))
    duration = pd.Series(float(item.get("duration_min", 0.0)), index=frame.index)
    if kind == "rate":
        duration = _rate_durations(values, subject, time, item, where)
    part = pd.DataFrame(
        {
            "subject_id": subject,
            "time": time,
            "input": str(item["input"]),
            "kind": kind,
            "amount": values,
            "duration": duration,
            "unit": str(item["unit"]),
        }
    )
    present = values != ""
    if kind == "bolus":
        present &= pd.to_numeric(values, errors="coerce").fillna(1.0) != 0.0
    return part[present]


def _rate_durations(
    values: pd.Series, subject: pd.Series, time: pd.Series, item: Mapping[str, Any], where: str
) -> pd.Series:
    """Minutes each rate holds: until the next row of the same patient that gives a rate
    (rows with an empty cell do not end it), the last one until the patient's last row.
    A column that is mostly empty is read that way but said aloud, with the insulin it implies."""
    stamps = utc_times(time)
    present = values != ""
    given = stamps[present]
    nxt = given.groupby(subject[present]).shift(-1)
    last = stamps.groupby(subject).transform("max")[present]
    minutes = (nxt.fillna(last) - given).dt.total_seconds() / 60.0
    typical = float(minutes[minutes > 0].median()) if (minutes > 0).any() else 5.0
    minutes = minutes.where(minutes > 0, typical)
    if 0 < present.sum() < 0.5 * len(values):
        rates = pd.to_numeric(values[present], errors="coerce")
        per_minute = 1.0 / 60.0 if "/h" in str(item.get("unit", "")) else 1.0
        total = float((rates * minutes * per_minute).sum())
        rows = ", ".join(str(i + 2) for i in list(np.flatnonzero(present.to_numpy()))[:5])
        warnings.warn(
            f"{where}: the rate column {item['column']!r} has a value on {int(present.sum())} of {len(values)} rows "
            f"(file rows {rows}{', ...' if present.sum() > 5 else ''}); each rate is held until the next one, "
            f"which gives {total:.4g} {str(item.get('unit', '')).split('/')[0]} in all. "
            "Check that the export records a rate only when it changes.",
            DataWarning,
            stacklevel=4,
        )
    return minutes.reindex(values.index).fillna(0.0)


def _find(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    return next((lowered[n] for n in names if n in lowered), None)


def read_cgm_csv(
    path: str | Path, *, subject_id: str | None = None, variable: str = "subcutaneous_glucose", unit: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a CGM (or CGM + pump) export: a timestamp, a glucose value and its unit
    (a ``unit`` column or the ``unit`` argument), and optionally bolus insulin (U),
    carbohydrates (g) and a basal rate (U/h) per row. Column names are matched
    case-insensitively (``timestamp``/``time``, ``glucose``/``sgv``, ``unit``, ``bolus``,
    ``carbs``/``cho``, ``basal``)."""
    path = Path(path)
    header = [str(c) for c in _read_table(path, "CGM export").columns]
    time_col, glucose_col = _find(header, _CGM_TIME), _find(header, _CGM_GLUCOSE)
    if time_col is None or glucose_col is None:
        raise DataError(f"CGM export {path.name} needs a timestamp and a glucose column; found columns {header}.")
    unit_col = _find(header, _CGM_UNIT)
    if unit_col is None and unit is None:
        raise DataError(f"CGM export {path.name} has no unit column; pass the unit (mg/dL or mmol/L).")
    glucose: dict[str, Any] = {"column": glucose_col, "variable": variable, "code": "99504-3"}
    glucose.update({"unit_column": unit_col} if unit_col else {"unit": unit})
    doses: list[dict[str, Any]] = []
    for name, aliases in _CGM_DOSES.items():
        col = _find(header, aliases)
        if col:
            doses.append({"column": col, "input": name, "unit": "U" if name == "insulin" else "g"})
    basal = _find(header, _CGM_BASAL)
    if basal:
        doses.append({"column": basal, "input": "insulin", "kind": "rate", "unit": "U/h"})
    cmap = ColumnMap(
        time={"column": time_col},
        subject_id={"value": subject_id or path.stem},
        observations=(glucose,),
        doses=tuple(doses),
    )
    return read_csv(path, cmap)
