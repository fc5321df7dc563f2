"""Ingest: read a source, validate, harmonize codes and units, drop exact duplicates, sort.

An ingest call is all-or-nothing: with ``strict=True`` (the default) any rejected
record aborts the call with a :class:`~twinloop.errors.DataError` that lists every
rejected record and its reason, and nothing is returned to be stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twinloop.connect.codes import CodeMap
from twinloop.connect.fhir import FhirRecords, read_fhir
from twinloop.connect.schema import Rejected, validate_doses, validate_observations
from twinloop.connect.tabular import ColumnMap, read_cgm_csv, read_csv
from twinloop.connect.units import conversion, is_concentration, parse_unit
from twinloop.errors import DataError, InputError


@dataclass
class Ingested:
    """Harmonized observations and doses, with what was rejected or dropped."""

    observations: pd.DataFrame
    doses: pd.DataFrame
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    fhir: FhirRecords | None = None
    ignored: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "observations": len(self.observations),
            "doses": len(self.doses),
            "subjects": sorted(set(self.observations["subject_id"]) | set(self.doses["subject_id"])),
            "rejected": len(self.rejected),
            "duplicates_dropped": self.duplicates,
            "ignored": dict(self.ignored),
        }


def _convert_column(
    frame: pd.DataFrame, value_col: str, target_of: Any, name_col: str, rejected: list[Rejected], what: str
) -> pd.DataFrame:
    """Convert ``value_col`` to each row's target unit; rows that cannot be converted are rejected."""
    if frame.empty:
        return frame
    out = frame.copy()
    keep = np.ones(len(out), dtype=bool)
    groups: dict[Any, Any] = out.groupby([name_col, "unit"], sort=False).groups
    for group, idx in groups.items():
        name, unit = str(group[0]), str(group[1])
        target = target_of(name)
        try:
            parse_unit(unit)
            if target is None or target == unit:
                continue
            scale, offset = conversion(unit, target, name)
        except InputError as e:
            pos = out.index.get_indexer(idx)
            keep[pos] = False
            for i in idx:
                rejected.append(
                    Rejected(
                        str(out.at[i, "source"]) if "source" in out else what,
                        f"{what} {name}={out.at[i, value_col]!s} {unit}",
                        str(e),
                    )
                )
            continue
        out.loc[idx, value_col] = out.loc[idx, value_col].to_numpy(dtype=float) * scale + offset
        out.loc[idx, "unit"] = target
    return out[keep]


def _reject_rows(frame: pd.DataFrame, bad: np.ndarray, reason: Any, rejected: list[Rejected]) -> pd.DataFrame:
    """Move the ``bad`` rows of an observation table to ``rejected`` (``reason(row)``)."""
    for _, row in frame[bad].iterrows():
        record = f"observation {row['variable']}={row['value']:g} {row['unit']} at {row['time']}"
        rejected.append(Rejected(str(row["source"]) or "observations", record, reason(row)))
    return frame[~bad]


def _impossible(obs: pd.DataFrame, rejected: list[Rejected]) -> pd.DataFrame:
    """Reject negative concentrations (mg/dL, mmol/L...): no instrument reads one."""
    if obs.empty:
        return obs
    bad = (obs["value"].to_numpy(dtype=float) < 0) & obs["unit"].map(is_concentration).to_numpy(dtype=bool)
    why = "a concentration cannot be negative"
    return _reject_rows(obs, bad, lambda _: why, rejected)


def _conflicts(obs: pd.DataFrame, rejected: list[Rejected]) -> pd.DataFrame:
    """Reject every reading of a variable that another reading contradicts at the same time
    (exact duplicates were merged before)."""
    if obs.empty:
        return obs
    key = ["subject_id", "time", "variable"]
    bad = obs.duplicated(key, keep=False).to_numpy()
    if not bad.any():
        return obs
    values = obs[bad].groupby(key)["value"].apply(lambda v: ", ".join(f"{x:g}" for x in v))

    def why(row: pd.Series) -> str:
        return (
            f"conflicting readings of {row['variable']} at the same time ({values[tuple(row[key])]} {row['unit']}); "
            "keep the right one"
        )

    return _reject_rows(obs, bad, why, rejected)


def harmonize(
    observations: pd.DataFrame,
    doses: pd.DataFrame,
    *,
    codes: CodeMap | None = None,
    units: Mapping[str, str] | None = None,
    screen: bool = False,
) -> Ingested:
    """Validate and harmonize canonical tables (non-strict; see :func:`ingest`).

    Arguments:
        observations, doses: tables in the canonical columns (``twinloop.connect.schema``).
        codes: LOINC -> variable map (the defaults if omitted).
        units: the unit wanted for each variable or input (overrides the code map's).
        screen: also reject what no instrument reads (a negative concentration) and
            readings that contradict another at the same time (as :func:`ingest` does).
    """
    codes = codes or CodeMap()
    units = dict(units or {})
    obs, rejected = validate_observations(observations)
    dose, bad_doses = validate_doses(doses)
    rejected = rejected + bad_doses
    if not obs.empty:
        mapped = obs["code"].map(lambda c: codes.variable_of(c) or "")
        obs["variable"] = np.where(mapped != "", mapped, np.where(obs["variable"] != "", obs["variable"], obs["code"]))
        obs["code"] = [c or codes.code_of(v) for c, v in zip(obs["code"], obs["variable"], strict=True)]
    if screen:
        obs = _impossible(obs, rejected)
    obs = _convert_column(obs, "value", lambda v: units.get(v) or codes.unit_of(v), "variable", rejected, "observation")
    dose = _convert_column(dose.assign(source="doses"), "amount", lambda v: units.get(v), "input", rejected, "dose")
    dose = dose.drop(columns="source")
    n_before = len(obs) + len(dose)
    obs = obs.drop_duplicates(["subject_id", "time", "variable", "value", "unit"])
    dose = dose.drop_duplicates()
    duplicates = n_before - len(obs) - len(dose)
    if screen:
        obs = _conflicts(obs, rejected)
    obs = obs.sort_values(["subject_id", "time", "variable"], kind="stable").reset_index(drop=True)
    dose = dose.sort_values(["subject_id", "time", "input"], kind="stable").reset_index(drop=True)
    return Ingested(obs, dose, rejected, duplicates)


def read_source(
    path: str | Path, columns: ColumnMap | Mapping[str, Any] | str | Path | None = None, subject_id: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, FhirRecords | None]:
    """Read observations and doses from a FHIR Bundle (.json), an NDJSON folder, a CSV
    with a column map, or (without a map) a CGM export CSV."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"Data source {path} does not exist; give a FHIR Bundle (.json), an NDJSON folder or a CSV file."
        )
    if path.is_dir() or path.suffix in (".json", ".ndjson"):
        records = read_fhir(path)
        return records.observations, records.doses, records
    if path.suffix.lower() in (".csv", ".txt"):
        if columns is not None:
            obs, doses = read_csv(path, columns)
        else:
            obs, doses = read_cgm_csv(path, subject_id=subject_id)
        return obs, doses, None
    raise DataError(f"{path.name}: unknown data format; give a FHIR .json bundle, an NDJSON folder or a .csv file.")


def _shown(r: Rejected) -> str:
    """One rejected record in a message: where, what (unless the same) and why."""
    where = r.source if r.record in (r.source, "") else f"{r.source} {r.record}"
    return f"{where}: {r.reason.rstrip('.')}"


def ingest(
    source: str | Path | tuple[pd.DataFrame, pd.DataFrame],
    *,
    columns: ColumnMap | Mapping[str, Any] | str | Path | None = None,
    codes: CodeMap | None = None,
    units: Mapping[str, str] | None = None,
    subject_id: str | None = None,
    strict: bool = True,
) -> Ingested:
    """Read and harmonize patient data, all or nothing. Besides the rules of
    :func:`~twinloop.connect.schema.validate_observations`, a negative concentration and
    readings of a variable that differ at the same time are rejected; identical
    duplicates are merged (``duplicates``); what is left aside is counted in ``ignored``.

    Arguments:
        source: a path (FHIR Bundle .json, NDJSON folder, CSV) or ``(observations, doses)``.
        columns: the column map of a generic CSV (a CGM export needs none).
        codes, units: see :func:`harmonize`.
        subject_id: the patient id of a one-patient CGM export (default: the file name).
        strict: raise if any record is rejected (default), so a bad record never leaves
            half a batch stored; ``False`` returns the accepted records and the list.

    Raises:
        DataError: listing every rejected record (``.rejected``) when ``strict``.

    Example:
        >>> from twinloop.connect import ingest
        >>> data = ingest("cgm.csv", subject_id="p001")  # doctest: +SKIP
    """
    if isinstance(source, tuple):
        obs, doses, records = source[0], source[1], None
    else:
        obs, doses, records = read_source(source, columns, subject_id)
    result = harmonize(obs, doses, codes=codes, units=units, screen=True)
    if records is not None:
        result.rejected = records.rejected + result.rejected
        result.fhir = records
        result.ignored = {f"{k} (unsupported resource type)": n for k, n in records.ignored.items()}
        result.ignored.update(records.unmapped)
    if strict and result.rejected:
        shown = "; ".join(_shown(r) for r in result.rejected[:3])
        more = f" (and {len(result.rejected) - 3} more)" if len(result.rejected) > 3 else ""
        raise DataError(
            f"{len(result.rejected)} record(s) rejected, nothing ingested: {shown}{more}. "
            "Fix or remove them and ingest again.",
            [r.as_dict() for r in result.rejected],
        )
    return result
