"""One chunk of a product: sample its patients, simulate, observe and label them, write its parts.

Chunk ``k`` draws from seeds derived from ``(seed, k)`` alone, so it gives the same bytes
whichever process computes it and in whichever order: :class:`ChunkJob` is what a
:class:`~twinloop._chunks.ChunkRunner` calls, in this process or on a Dask worker
(``twinloop.scale``), and it writes the chunk's four part files and then its ``.done``
marker under the run's ``.parts/`` folder (see :mod:`twinloop.products.dataset`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twinloop._atomic import write_atomic
from twinloop._schema import OBSERVATION_COLUMNS, empty_observations
from twinloop.cohort.population import Cohort
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.models.registry import get as get_model
from twinloop.products import outcomes as outcome_fns
from twinloop.products.limits import MINUTES_PER_UNIT
from twinloop.products.simulation import Planner, grid_of, observe_protocols, simulate_arms
from twinloop.products.spec import ProductSpec
from twinloop.products.treatments import dose_table


def model_timedelta(model_time: Any, time_unit: str, clock_seconds: float | None = None) -> pd.TimedeltaIndex:
    """Model time (in the model's UCUM time unit, or of ``clock_seconds`` seconds per unit
    when the model declares its clock) as timedeltas rounded to the millisecond."""
    if clock_seconds is not None:
        seconds = float(clock_seconds)
    elif time_unit in MINUTES_PER_UNIT:
        seconds = MINUTES_PER_UNIT[time_unit] * 60.0
    else:
        raise InputError(
            f"Model time unit '{time_unit}' cannot be mapped to timestamps; declare how many seconds one unit "
            "of model time lasts (Model(clock_seconds=...)), or use s, min, h or d."
        )
    ms = np.atleast_1d(np.asarray(model_time, dtype=np.float64)) * seconds * 1000.0
    return pd.to_timedelta(ms, unit="ms").round("ms")


def _write_parquet(frame: pd.DataFrame | pa.Table, path: Path) -> None:
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


@dataclass(frozen=True)
class ChunkJob:
    """Writes chunk ``k`` of a product, called with ``k`` in this process or on a worker.

    It pickles as plain data: the spec as ``spec.to_dict()``, rebuilt (and checked against
    its hash, and the model against its content hash) in the process that runs it, once
    per process; the planner must pickle too. It writes the chunk's parts under ``parts``
    and then its ``.done`` marker, and returns the marker's counts.
    """

    spec: dict[str, Any]
    spec_hash: str
    model_hash: str
    parts: str
    planner: Planner | None = None

    def prime(self, spec: ProductSpec, model: Model) -> None:
        """Use these spec and model objects in this process rather than rebuilding them."""
        _RESOLVED.clear()
        _RESOLVED[(self.spec_hash, self.model_hash)] = (spec, model)

    def __call__(self, k: int) -> dict[str, int]:
        spec, model = self._resolved()
        parts = Path(self.parts)
        counts = _write_chunk(spec, model, k, parts, self.planner)
        write_atomic(parts / f"{k:06d}.done", lambda tmp: Path(tmp).write_text(json.dumps(counts)))
        return counts

    def _resolved(self) -> tuple[ProductSpec, Model]:
        key = (self.spec_hash, self.model_hash)
        if key not in _RESOLVED:
            spec = ProductSpec.from_dict({k: v for k, v in self.spec.items() if k != "population_hash"})
            model = get_model(spec.model_id)
            if spec.content_hash() != self.spec_hash or model.content_hash() != self.model_hash:
                raise InputError(
                    f"This process rebuilds product spec '{spec.name}' or model '{model.id}' differently from the "
                    "process that sent it (another twinloop version or model files); give the workers the same "
                    "twinloop installation and TWINLOOP_MODELS_DIR."
                )
            _RESOLVED.clear()
            _RESOLVED[key] = (spec, model)
        return _RESOLVED[key]


_RESOLVED: dict[tuple[str, str], tuple[ProductSpec, Model]] = {}


def _write_chunk(spec: ProductSpec, model: Model, k: int, parts: Path, planner: Planner | None) -> dict[str, Any]:
    """Sample, simulate, observe and label chunk ``k``; write its four part files."""
    width = max(5, len(str(spec.n - 1)))
    cohort = spec.population.sample_chunk(spec.n, spec.seed, spec.chunk_size, k, width)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, k, 1]))
    arm_names = list(spec.arms)
    arm = np.asarray(arm_names, dtype=object)[rng.integers(len(arm_names), size=cohort.n)]
    grid = grid_of(spec)

    def plan_seed(a: int) -> int:
        return int(np.random.SeedSequence([spec.seed, k, 4, a]).generate_state(1)[0])

    run = simulate_arms(spec, model, cohort, arm, grid, planner=planner, plan_seed=plan_seed)
    observables, failed, doses = run.observables, run.failed, run.doses
    patients = cohort.table()
    patients.insert(1, "arm", arm.astype(str))
    patients.insert(3, "chunk", k)
    patients["simulation_failed"] = failed
    obs_frames, _ = observe_protocols(
        spec.observations,
        model,
        cohort.ids,
        grid,
        observables,
        np.random.default_rng(np.random.SeedSequence([spec.seed, k, 2])),
        lambda j: np.random.default_rng(np.random.SeedSequence([spec.seed, k, 3, j])),
    )
    observations = _canonical(obs_frames, cohort.ids, spec, model)
    outcome_frame = _outcomes(spec, model, cohort, arm, grid, observables, observations)
    dose_frame = pd.concat(doses, ignore_index=True) if doses else dose_table(model, Inputs(), [])
    dose_frame = dose_frame.sort_values(["subject_id", "time", "input"], kind="stable").reset_index(drop=True)
    dose_frame["time"] = _timestamps(dose_frame["time"].to_numpy(), spec, model)
    frames = {"patients": patients, "observations": observations, "outcomes": outcome_frame, "doses": dose_frame}
    for name, frame in frames.items():
        _write_parquet(frame, parts / f"{k:06d}.{name}.parquet")
    counts = {name: len(frame) for name, frame in frames.items()}
    return {**counts, "draws": cohort.draws, "accepted": cohort.accepted, "engine": run.engine}


def _timestamps(model_time: np.ndarray, spec: ProductSpec, model: Model) -> pd.Series:
    offsets = model_timedelta(model_time, model.time_unit, model.clock_seconds)
    return pd.Series(spec.origin + offsets).astype("datetime64[ms, UTC]")


def _canonical(frames: list[pd.DataFrame], ids: list[str], spec: ProductSpec, model: Model) -> pd.DataFrame:
    """One table sorted by patient, time and variable; text columns dictionary-encoded."""
    if not frames:
        frame = empty_observations(time="model")
    elif len(frames) == 1:
        frame = frames[0]
    else:
        text = ("variable", "unit", "code", "source")
        frame = pd.concat([f.astype({c: str for c in text}) for f in frames], ignore_index=True)
        frame["subject_id"] = pd.Categorical(frame["subject_id"].astype(str), categories=ids)
        frame = frame.sort_values(["subject_id", "time", "variable"], kind="stable").reset_index(drop=True)
        frame = frame.astype({c: "category" for c in text})
    frame["time"] = _timestamps(frame["time"].to_numpy(), spec, model).array
    return frame[list(OBSERVATION_COLUMNS)]


def _outcomes(
    spec: ProductSpec,
    model: Model,
    cohort: Cohort,
    arm: np.ndarray,
    grid: np.ndarray,
    observables: np.ndarray,
    observations: pd.DataFrame,
) -> pd.DataFrame:
    front = pd.DataFrame({"subject_id": cohort.ids, "arm": arm.astype(str)})
    kind = spec.outcomes.get("kind", "none")
    if kind == "glycaemic":
        o = model.observable_names.index(spec.outcomes.get("observable", "plasma_glucose"))
        metrics = outcome_fns.glycaemic_metrics(grid, observables[:, :, o])
        metrics["hypoglycaemia"] = metrics["hypo_events_lt70"] > 0
        return pd.concat([front, metrics], axis=1)
    if kind == "recist":
        protocol = next(p for p in spec.observations if p.name == spec.outcomes["observation"])
        scans = observations[observations["source"] == f"synthetic:{protocol.name}"]
        days, values = _scan_matrix(scans, cohort.ids, spec, model)
        min_sd = float(spec.outcomes.get("min_sd_days", 42))
        return pd.concat([front, outcome_fns.recist(days, values, min_sd_days=min_sd)], axis=1)
    return front


def _scan_matrix(scans: pd.DataFrame, ids: list[str], spec: ProductSpec, model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Scans as ``(n, k)`` day and value matrices (NaN-padded) in cohort order."""
    elapsed = (scans["time"] - spec.origin).dt.total_seconds().to_numpy() / 86400.0
    order = pd.Categorical(scans["subject_id"], categories=ids).codes
    counts = np.bincount(order, minlength=len(ids))
    width = max(int(counts.max()) if counts.size else 0, 1)
    days = np.full((len(ids), width), np.nan)
    values = np.full((len(ids), width), np.nan)
    position = np.arange(len(order)) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
    days[order, position] = elapsed
    values[order, position] = scans["value"].to_numpy()
    return days, values
