"""An observed cohort for a population fit: covariates, observations in model time, treatments.

Read from a folder in the product layout (``patients.parquet`` with ``subject_id`` and
covariate columns, the canonical ``observations.parquet`` and, if treated,
``doses.parquet``), which is also what ``twinloop`` ingestion and products write.
Only the covariates the population declares and the variables that are model
observables are read: any other column (e.g. the true parameters of a simulated
cohort) is never seen by the fit. Each patient's clock starts at the earlier of
their first dose and first observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from twinloop._schema import DOSE_COLUMNS, OBSERVATION_COLUMNS
from twinloop.connect.timebase import clock_seconds, inputs_from_doses
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs

FITTED_COLUMNS = OBSERVATION_COLUMNS[:4]  # subject_id, time, variable, value: what a fit reads


@dataclass(frozen=True)
class ObservedCohort:
    """Patients with their covariates, observations (one row each) and inputs.

    ``patient[i]`` is the index in ``ids`` of observation ``i``; ``times`` are model
    time from that patient's origin; ``covariates`` has one row per id, in order.
    """

    model: Model
    ids: tuple[str, ...]
    covariates: pd.DataFrame
    patient: np.ndarray
    times: np.ndarray
    observables: tuple[str, ...]
    values: np.ndarray
    inputs: tuple[Inputs, ...]
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def observable_index(self) -> np.ndarray:
        return np.array([self.model.observable_names.index(o) for o in self.observables], dtype=int)

    @property
    def output_times(self) -> np.ndarray:
        """Every distinct observation time, with 0 first (the engine's start)."""
        return np.unique(np.r_[0.0, self.times])

    def subset(self, ids: Sequence[str]) -> ObservedCohort:
        """The cohort restricted to ``ids`` (e.g. the training half of a split)."""
        position = {sid: i for i, sid in enumerate(self.ids)}
        missing = [sid for sid in ids if sid not in position]
        if missing:
            raise InputError(f"Subjects {missing[:5]} are not in this cohort.")
        keep = np.array([position[sid] for sid in ids], dtype=int)
        new_index = np.full(self.n, -1)
        new_index[keep] = np.arange(keep.size)
        rows = np.flatnonzero(new_index[self.patient] >= 0)
        return ObservedCohort(
            self.model,
            tuple(ids),
            self.covariates.iloc[keep].reset_index(drop=True),
            new_index[self.patient[rows]],
            self.times[rows],
            tuple(self.observables[i] for i in rows),
            self.values[rows],
            tuple(self.inputs[i] for i in keep),
            dict(self.notes),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "patients": self.n,
            "observations": int(self.values.size),
            "observables": sorted(set(self.observables)),
            "covariates": list(self.covariates.columns),
            "span": [float(self.times.min()), float(self.times.max())],
            **self.notes,
        }


def _table(folder: Path, name: str, required: bool) -> pd.DataFrame | None:
    path = folder / f"{name}.parquet"
    if not path.is_file():
        if required:
            raise InputError(
                f"'{folder}' has no {name}.parquet; a cohort to fit needs patients.parquet (subject_id and "
                "covariates) and observations.parquet (subject_id, time, variable, value), as a product holds."
            )
        return None
    return pq.read_table(path).to_pandas()


def _require(frame: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{where} lacks the columns {missing}; it has {list(frame.columns)}.")


def read_observed(folder: str | Path, model: Model, covariates: Sequence[str]) -> ObservedCohort:
    """The observed cohort in ``folder`` (product layout), with the named covariates."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a directory; give the folder holding the cohort's Parquet tables.")
    patients = _table(folder, "patients", True)
    observations = _table(folder, "observations", True)
    doses = _table(folder, "doses", False)
    assert patients is not None and observations is not None
    return observed_from_tables(model, patients, observations, doses, covariates)


def observed_from_tables(
    model: Model,
    patients: pd.DataFrame,
    observations: pd.DataFrame,
    doses: pd.DataFrame | None,
    covariates: Sequence[str],
) -> ObservedCohort:
    """Build the cohort from the canonical tables (see the module docstring)."""
    _require(patients, ["subject_id", *covariates], "patients.parquet")
    _require(observations, FITTED_COLUMNS, "observations.parquet")
    obs = observations.assign(
        subject_id=observations["subject_id"].astype(str), variable=observations["variable"].astype(str)
    )
    known = set(model.observable_names)
    used = obs["variable"].isin(known) & np.isfinite(pd.to_numeric(obs["value"], errors="coerce"))
    if not used.any():
        raise InputError(
            f"No observation has a variable that model '{model.id}' observes ({sorted(known)}); found "
            f"{sorted(obs['variable'].unique())[:10]}. Harmonize the variables (twinloop ingest with a code map)."
        )
    obs = obs[used]
    ids = [sid for sid in dict.fromkeys(patients["subject_id"].astype(str)) if sid in set(obs["subject_id"])]
    if not ids:
        raise InputError("No patient in patients.parquet has an observation of a model observable.")
    dose_frame = doses if doses is not None else pd.DataFrame(columns=list(DOSE_COLUMNS))
    if doses is not None:
        _require(doses, DOSE_COLUMNS, "doses.parquet")
        dose_frame = doses.assign(subject_id=doses["subject_id"].astype(str))
    origins = _origins(obs, dose_frame)
    obs = obs.assign(subject=pd.Categorical(obs["subject_id"], categories=ids)).sort_values(["subject", "time"])
    obs = obs[obs["subject"].notna()]
    by_patient = dict(tuple(dose_frame.groupby("subject_id", sort=False))) if len(dose_frame) else {}
    plans = [inputs_from_doses(model, by_patient.get(sid, dose_frame.iloc[:0]), origins[sid]) for sid in ids]
    origin_of_row = pd.DatetimeIndex([origins[s] for s in obs["subject_id"]])
    elapsed = pd.DatetimeIndex(pd.to_datetime(obs["time"], utc=True)) - origin_of_row
    times = elapsed.total_seconds().to_numpy() / clock_seconds(model)
    table = patients.assign(subject_id=patients["subject_id"].astype(str)).drop_duplicates("subject_id")
    covs = table.set_index("subject_id").loc[ids, list(covariates)].reset_index(drop=True)
    notes = {
        "patients_without_observations": int(table["subject_id"].nunique() - len(ids)),
        "observations_not_used": int((~used).sum()),
        "missing_covariate_values": {c: int(covs[c].isna().sum()) for c in covariates if covs[c].isna().any()},
    }
    return ObservedCohort(
        model,
        tuple(ids),
        covs,
        obs["subject"].cat.codes.to_numpy().astype(int),
        np.asarray(times, dtype=np.float64),
        tuple(obs["variable"].tolist()),
        pd.to_numeric(obs["value"]).to_numpy(dtype=np.float64),
        tuple(plans),
        notes,
    )


def _origins(obs: pd.DataFrame, doses: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Each patient's time zero: the earlier of their first dose and first observation."""
    first = pd.to_datetime(obs["time"], utc=True).groupby(obs["subject_id"]).min()
    if len(doses):
        first_dose = pd.to_datetime(doses["time"], utc=True).groupby(doses["subject_id"]).min()
        first = pd.concat([first, first_dose], axis=1).min(axis=1)
    return {str(k): pd.Timestamp(v) for k, v in first.items()}
