"""The computational envelope of a product run: predicted wall time, peak memory and
output size, from the cost model calibrated on this machine (:mod:`twinloop.simulate.cost`).

Cold, the wall time is the calibration's compile time per arm, plus the patient-days at
the calibrated engine rate and a per-row cost of observing and writing, divided among
the workers; memory is the calibrated process plus one chunk's working set; size is rows
times bytes. Once runs of the same model, path and precision are recorded, the median of
their actual / predicted ratios (the latest five) corrects each figure ("from N past
runs"). A product's manifest records the envelope with what the run measured;
:func:`prediction_error` summarises such records for the benchmarks.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twinloop.errors import InputError
from twinloop.products.limits import output_points, size_text
from twinloop.products.spec import ProductSpec

ROW_SECONDS = 0.6e-6
"""Seconds to observe, encode and write one observation row (measured on a 2-core
machine: a 100,000-patient T1D CGM product, 28.9 million rows, ~15 s of its 39 s beside
the engine; a 1,000-patient run, dominated by fixed costs, had suggested 4e-6). Past runs
correct it on each machine (the learned factors)."""
ROW_BYTES = 12.0
"""Parquet bytes per observation row (zstd; measured 9.7 for 5-min CGM), kept conservative."""
ROW_MEMORY_BYTES = 120.0
"""Working memory per observation row of a chunk (pandas frames, their copies, Arrow);
200 over-predicted the 100,000-patient product's peak (1.43 GB) by 1.7x."""
WORKER_EFFICIENCY = 0.6
"""Share of linear speed-up assumed for several workers (up to the number of cores): a
single process's XLA already spreads a large batch over a second core, so two workers
gave 1.15-1.2x one on a 2-core machine (T1D CGM products of 100,000 and 1,000,000
patients), not 1.8x. Past runs with the same worker count correct it (learned factors)."""
CLUSTER_START_S = 3.0
"""Starting a local cluster of worker processes."""
LARGE_RUN_VALUES = 1_000_000
"""Simulated values (patients x output points x observables) from which a run is estimated
even when the model must first be calibrated (a short timed run, compiled once)."""
TABLE_COLUMNS = 12
"""Columns of the patients and outcomes tables besides the parameters (ids, arm, covariates, labels)."""


@dataclass(frozen=True)
class Envelope:
    """The predicted cost of generating one product (see the module docstring)."""

    name: str
    model: str
    path: str
    precision: str
    patients: int
    patient_days: float
    workers: int
    scaling: float  # effective processes: workers x efficiency, capped by the cores
    rate_per_process: float  # patient-days per second
    fixed_s: float  # start-up and compilation
    compute_s: float
    wall_s: float
    output_rows: int
    output_bytes: float
    bytes_per_patient_day: float
    chunk_bytes: float  # working set of one chunk in one process
    peak_rss_bytes: float  # per process
    learned: dict[str, float]  # actual / calibrated prediction in past runs: wall, output, peak_rss
    basis: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for the product's manifest (``manifest["envelope"]``)."""
        return {f"predicted_{k}" if k in _PREDICTED else k: v for k, v in asdict(self).items()}

    def render(self) -> str:
        """A few plain-text lines for the terminal."""
        return "\n".join(
            [
                f"estimate for '{self.name}': {self.patients} patients, {self.patient_days:,.0f} patient-days of "
                f"{self.model} on the {self.path} path, {self.workers} worker{'s' * (self.workers > 1)}",
                f"  wall time   ~{_seconds(self.wall_s)} ({_seconds(self.fixed_s)} start-up and compilation, "
                f"{_seconds(self.compute_s)} at {self.rate_per_process:,.0f} patient-days/s per process "
                f"x {self.scaling:.2f})",
                f"  peak memory ~{size_text(self.peak_rss_bytes)} per process "
                f"({size_text(self.chunk_bytes)} for one chunk)",
                f"  output      ~{size_text(self.output_bytes)} ({self.output_rows:,} observation rows, "
                f"{size_text(self.bytes_per_patient_day)} per patient-day)",
                f"  basis: {self.basis}",
            ]
        )


_PREDICTED = ("wall_s", "peak_rss_bytes", "output_bytes")


def _seconds(value: float) -> str:
    if value < 90:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 5400 else f"{value / 3600:.1f} h"


def check_workers(workers: Any) -> int:
    """``workers`` as an integer from 1 to 1024 (processes); else :class:`InputError`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
        raise InputError(f"workers must be an integer from 1 to 1024 (worker processes); got {workers!r}. Use e.g. 2.")
    return workers


def scaling_for(workers: int) -> float:
    """Effective processes of ``workers`` workers on this machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    used = min(workers, cores)
    return 1.0 if used == 1 else used * WORKER_EFFICIENCY


def observation_rows(spec: ProductSpec) -> int:
    """Observation rows of the product: every protocol's nominal times, all patients
    (missingness and dropout ignored: an upper bound)."""
    per_patient = sum(p.schedule.count(spec.duration) for p in spec.observations)
    return math.ceil(spec.n * per_patient)


def worth_estimating(spec: ProductSpec, *, file: Path | None = None) -> bool:
    """Whether to estimate a run before it starts: free when the model is calibrated on this
    machine, and worth a calibration when the run holds :data:`LARGE_RUN_VALUES` or more."""
    from twinloop.models.registry import get as get_model
    from twinloop.simulate import cost

    model = get_model(spec.model_id)
    values = spec.n * output_points(spec.duration, spec.resolution) * len(model.observables)
    return values >= LARGE_RUN_VALUES or cost.cost_key(model, spec.solver) in cost.load(file)["calibrations"]


def estimate(spec: ProductSpec, workers: int = 1, *, file: Path | None = None) -> Envelope:
    """The envelope of generating ``spec`` with ``workers`` worker processes, calibrating
    the model on this machine first if it never was (a short timed run, once)."""
    from twinloop.models.registry import get as get_model
    from twinloop.simulate import cost

    workers = check_workers(workers)
    model = get_model(spec.model_id)
    calibration = cost.calibrate(model, spec.solver, file=file)
    patient_days = spec.n * spec.duration * cost.days_per_unit(model)
    rows = observation_rows(spec)
    scaling = scaling_for(workers)
    fixed = calibration.compile_s * len(spec.arms) + (CLUSTER_START_S if workers > 1 else 0.0)
    compute = (patient_days / calibration.rate + rows * ROW_SECONDS) / scaling
    chunk = _chunk_bytes(spec, model, rows)
    learned = cost.learned_factors(cost.past_runs(model, spec.solver, file), workers)
    factors = learned or {"wall": 1.0, "output": 1.0, "peak_rss": 1.0}
    if learned is None:
        basis = f"calibrated on this machine {calibration.measured} (engine rate; no past runs)"
    else:
        count = int(learned["runs"])
        basis = f"from {count} past run{'s' * (count > 1)} on this machine (calibrated {calibration.measured})"
    size = _output_bytes(spec, model, rows) * factors["output"]
    return Envelope(
        name=spec.name,
        model=f"{model.id} {model.version}",
        path=cost.resolved_path(model, spec.solver),
        precision=spec.solver.precision,
        patients=spec.n,
        patient_days=patient_days,
        workers=workers,
        scaling=scaling,
        rate_per_process=patient_days / (compute * factors["wall"] * scaling),
        fixed_s=fixed * factors["wall"],
        compute_s=compute * factors["wall"],
        wall_s=(fixed + compute) * factors["wall"],
        output_rows=rows,
        output_bytes=size,
        bytes_per_patient_day=size / patient_days,
        chunk_bytes=chunk,
        peak_rss_bytes=(calibration.base_rss_bytes + chunk) * factors["peak_rss"],
        learned=dict(factors),
        basis=basis,
    )


def _output_bytes(spec: ProductSpec, model: Any, rows: int) -> float:
    """Parquet bytes: observation rows, and the patient and outcome tables' values."""
    return rows * ROW_BYTES + spec.n * (len(model.parameters) + TABLE_COLUMNS) * 8.0


def _chunk_bytes(spec: ProductSpec, model: Any, rows: int) -> float:
    """One chunk's working set: its outputs (held and copied), its observation rows, and
    the engine's batch of observables on the output grid (device, host and result copies)."""
    values = output_points(spec.duration, spec.resolution) * len(model.observables) * 8.0
    chunk = min(spec.chunk_size, spec.n)
    batch = min(spec.batch_size, chunk)
    return chunk * values * 2 + batch * values * 3 + rows * chunk / spec.n * ROW_MEMORY_BYTES


def envelope_outcome(
    envelope: Mapping[str, Any] | Envelope, actual_wall_s: float, actual_peak_bytes: float
) -> dict[str, float]:
    """What a run measured beside the envelope's prediction, as ratios predicted / actual."""
    predicted = envelope.to_dict() if isinstance(envelope, Envelope) else envelope
    wall, peak = float(actual_wall_s), float(actual_peak_bytes)
    return {
        "actual_wall_s": wall,
        "actual_peak_rss_bytes": peak,
        "wall_ratio": float(predicted["predicted_wall_s"]) / wall if wall > 0 else math.nan,
        "peak_rss_ratio": float(predicted["predicted_peak_rss_bytes"]) / peak if peak > 0 else math.nan,
    }


def record(manifest: Mapping[str, Any], spec: ProductSpec, out: Path, *, file: Path | None = None) -> None:
    """Add the finished run whose manifest records an envelope and its actuals to the cost
    model's run records (what later estimates learn from)."""
    from twinloop.models.registry import get as get_model
    from twinloop.simulate import cost

    env = manifest.get("envelope")
    if not isinstance(env, Mapping) or "actual_wall_s" not in env:
        return
    written = sum((out / name).stat().st_size for name in manifest["files"] if (out / name).is_file())
    learned = env.get("learned") or {}
    run = cost.RunRecord(
        workers=int(env["workers"]),
        patient_days=float(env["patient_days"]),
        wall_s=float(env["actual_wall_s"]),
        model_wall_s=float(env["predicted_wall_s"]) / float(learned.get("wall", 1.0)),
        output_bytes=int(written),
        model_output_bytes=float(env["predicted_output_bytes"]) / float(learned.get("output", 1.0)),
        peak_rss_bytes=int(env["actual_peak_rss_bytes"]),
        model_peak_rss_bytes=float(env["predicted_peak_rss_bytes"]) / float(learned.get("peak_rss", 1.0)),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    cost.record_run(get_model(spec.model_id), spec.solver, run, file)


def prediction_error(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The envelope's prediction error over runs: each record a manifest's ``envelope``
    (predicted and actual). Gives the ratios predicted / actual of wall time and peak
    memory per run, their medians and the worst factor either way."""
    wall, peak = [], []
    for i, env in enumerate(records):
        try:
            outcome = envelope_outcome(env, env["actual_wall_s"], env["actual_peak_rss_bytes"])
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"records[{i}] is not an envelope with its actuals (predicted_wall_s, actual_wall_s, "
                "predicted_peak_rss_bytes, actual_peak_rss_bytes): give manifest['envelope'] of finished runs."
            ) from None
        wall.append(outcome["wall_ratio"])
        peak.append(outcome["peak_rss_ratio"])
    if not wall:
        raise InputError("records is empty; give the envelopes of one or more finished runs.")

    def worst(ratios: list[float]) -> float:
        return max(max(r, 1 / r) for r in ratios)

    return {
        "runs": len(wall),
        "wall_ratio": wall,
        "peak_rss_ratio": peak,
        "median_wall_ratio": statistics.median(wall),
        "median_peak_rss_ratio": statistics.median(peak),
        "worst_wall_factor": worst(wall),
        "worst_peak_rss_factor": worst(peak),
    }
