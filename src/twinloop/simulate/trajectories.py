"""Simulated trajectories of a cohort, with units and the model that made them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twinloop._atomic import write_atomic
from twinloop.errors import InputError


@dataclass(frozen=True)
class Trajectories:
    """Observables (and optionally states) of N patients on a shared time grid.

    Arrays are ``(n_patients, n_times, n_variables)``. ``failures`` maps the id of
    every patient whose integration failed to the reason.
    """

    model_id: str
    model_version: str
    time_unit: str
    times: np.ndarray
    patient_ids: list[str]
    observable_names: tuple[str, ...]
    observable_units: tuple[str, ...]
    observables: np.ndarray
    state_names: tuple[str, ...] = ()
    state_units: tuple[str, ...] = ()
    states: np.ndarray | None = None
    failures: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    @property
    def units(self) -> dict[str, str]:
        """Unit of every variable held, by name."""
        out = dict(zip(self.observable_names, self.observable_units, strict=True))
        out.update(zip(self.state_names, self.state_units, strict=True))
        return out

    def __getitem__(self, name: str) -> np.ndarray:
        """The ``(n_patients, n_times)`` values of one observable or state."""
        if name in self.observable_names:
            return self.observables[:, :, self.observable_names.index(name)]
        if name in self.state_names and self.states is not None:
            return self.states[:, :, self.state_names.index(name)]
        known = list(self.observable_names) + list(self.state_names)
        raise KeyError(f"No variable '{name}' in these trajectories; variables held: {known}.")

    @classmethod
    def concat(cls, parts: Sequence[Trajectories]) -> Trajectories:
        """Join chunks of one simulation (same model, times and variables)."""
        if not parts:
            raise InputError("Cannot concatenate an empty list of trajectories.")
        first = parts[0]
        states = None if first.states is None else np.concatenate([p.states for p in parts if p.states is not None])
        failures: dict[str, str] = {}
        for p in parts:
            failures.update(p.failures)
        return cls(
            model_id=first.model_id,
            model_version=first.model_version,
            time_unit=first.time_unit,
            times=first.times,
            patient_ids=[i for p in parts for i in p.patient_ids],
            observable_names=first.observable_names,
            observable_units=first.observable_units,
            observables=np.concatenate([p.observables for p in parts]),
            state_names=first.state_names,
            state_units=first.state_units,
            states=states,
            failures=failures,
            settings=first.settings,
            check=merge_checks([p.check for p in parts]),
        )

    def metadata(self) -> dict[str, Any]:
        """Model id/version, time unit, units of every variable, solver settings, failures."""
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "time_unit": self.time_unit,
            "units": self.units,
            "solver": self.settings,
            "failures": self.failures,
        }

    def _variables(self) -> tuple[list[str], np.ndarray]:
        names = list(self.observable_names)
        arrays = [self.observables]
        if self.states is not None:
            names += list(self.state_names)
            arrays.append(self.states)
        return names, np.concatenate(arrays, axis=2)

    def to_dataframe(self, kind: Literal["wide", "long"] = "wide") -> pd.DataFrame:
        """A DataFrame with ``patient`` and ``time`` columns.

        ``wide``: one column per variable. ``long``: ``variable, value, unit`` columns,
        one row per measurement. Units and the model travel in ``df.attrs``.
        """
        names, values = self._variables()
        n, t, v = values.shape
        patient = np.repeat(np.array(self.patient_ids, dtype=object), t)
        time = np.tile(self.times, n)
        if kind == "wide":
            df = pd.DataFrame({"patient": patient, "time": time})
            for j, name in enumerate(names):
                df[name] = values[:, :, j].reshape(-1)
        elif kind == "long":
            units = self.units
            df = pd.DataFrame(
                {
                    "patient": np.repeat(patient, v),
                    "time": np.repeat(time, v),
                    "variable": np.tile(np.array(names, dtype=object), n * t),
                    "value": values.reshape(-1),
                    "unit": np.tile(np.array([units[x] for x in names], dtype=object), n * t),
                }
            )
        else:
            raise InputError(f"kind must be 'wide' or 'long'; got {kind!r}.")
        df.attrs.update(self.metadata())
        return df

    def to_parquet(self, path: str | os.PathLike[str], kind: Literal["wide", "long"] = "wide") -> Path:
        """Write the DataFrame atomically, with the metadata in the Parquet schema."""
        table = pa.Table.from_pandas(self.to_dataframe(kind), preserve_index=False)
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[b"twinloop"] = json.dumps(self.metadata()).encode()
        table = table.replace_schema_metadata(schema_meta)
        return write_atomic(path, lambda tmp: pq.write_table(table, tmp))

    def to_xarray(self) -> Any:
        """An ``xarray.Dataset`` with dims ``(patient, time)`` and units as attributes."""
        import xarray as xr

        names, values = self._variables()
        units = self.units
        data = {name: (("patient", "time"), values[:, :, j], {"units": units[name]}) for j, name in enumerate(names)}
        ds = xr.Dataset(
            data, coords={"patient": self.patient_ids, "time": ("time", self.times, {"units": self.time_unit})}
        )
        ds.attrs.update({"model_id": self.model_id, "model_version": self.model_version})
        return ds


def merge_checks(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for a run from its chunks' records (largest errors, every fallback)."""
    if not parts or not parts[0]:
        return {}
    first = parts[0]
    if "max_error" not in first:  # the accurate path ran: every chunk says why
        return dict(first)
    errors = {name: max(p["max_error"][name] for p in parts) for name in first["max_error"]}
    merged = {key: first[key] for key in first if key not in ("chunks", "patients", "max_error", "passed",
                                                                 "rerun_non_finite", "fallback_chunks")}  # fmt: skip
    merged.update(
        chunks=sum(p["chunks"] for p in parts),
        patients=[i for p in parts for i in p["patients"]],
        max_error=errors,
        passed=all(p["passed"] for p in parts),
        rerun_non_finite=sum(p["rerun_non_finite"] for p in parts),
        fallback_chunks=[c for p in parts for c in p["fallback_chunks"]],
    )
    return merged
