"""The engine's throughput on this machine, and the record of actual runs.

A *calibration* is a short timed run of one model (its presets or default parameters,
its standard scenario, 1,024 patients by default: at 256 the fast path's per-chunk
self-check made it look several times slower than it runs on a cohort): patient-days per second per process
with compilation excluded, the compile time seen by the first call and the process's
resident memory after it. A *run record* is what a finished product run measured
(patient-days, wall time, bytes written, peak memory, next to what was predicted).

Both live in one JSON file, ``cost.json`` beside the JAX compilation cache (under
``TWINLOOP_CACHE_DIR`` or the user cache directory), keyed by :func:`cost_key`: the
machine (CPU model, cores, JAX backend), the model's id and version, the integration
path and the precision. The file is validated on every read: a damaged file or entry is
ignored (and the file rewritten on the next save), never trusted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinloop._atomic import write_atomic
from twinloop._chunks import peak_rss_bytes
from twinloop._config import cache_dir

if TYPE_CHECKING:
    from twinloop.models.base import Model
    from twinloop.simulate.engine import SolverSettings

KIND = "twinloop.cost"
FORMAT = 2  # 2: the fast path landed (fixed-step RK4); earlier "fast" calibrations ran the accurate one
KEEP_RUNS = 20
"""Run records kept per key (the oldest are dropped)."""
LEARN_FROM = 5
"""The learned corrections are medians over at most this many latest runs."""
OUTPUT_POINTS = 289
"""Output points of a calibration run (every 5 min over a day for a minute-clock model)."""


@dataclass(frozen=True)
class Calibration:
    """A timed run of the engine on this machine (see the module docstring)."""

    rate: float  # patient-days per second per process, compile excluded
    compile_s: float  # the first call's extra time over a warm call
    base_rss_bytes: int  # resident memory of the process after the run
    patients: int
    days: float  # model time of the run, in days
    measured: str  # ISO date


@dataclass(frozen=True)
class RunRecord:
    """What a finished run measured, beside what the calibrated model (before any learning
    from past runs) predicted for it."""

    workers: int
    patient_days: float
    wall_s: float
    model_wall_s: float
    output_bytes: int
    model_output_bytes: float
    peak_rss_bytes: int
    model_peak_rss_bytes: float
    date: str


def cost_file() -> Path:
    """The cost model's file: ``cost.json`` in twinloop's cache directory."""
    return cache_dir().parent / "cost.json"


def machine_fingerprint() -> str:
    """``cpu model x cores / backend``: what a calibration holds for."""
    import jax

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # no /proc (macOS, Windows): the platform's name
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    device = jax.devices()[0]
    return f"{cpu} x{cores} / {device.platform}:{getattr(device, 'device_kind', '')}"


def resolved_path(model: Model, settings: SolverSettings) -> str:
    """The path a run takes: ``auto`` is fast where the model declares a non-stiff fast path."""
    if settings.path != "auto":
        return settings.path
    fast = model.profile.fast
    return "fast" if fast is not None and not fast.stiff else "accurate"


def cost_key(model: Model, settings: SolverSettings) -> str:
    """The key of a model's calibration and run records on this machine."""
    precision = settings.precision if resolved_path(model, settings) == "fast" else "float64"
    return f"{machine_fingerprint()} | {model.id} {model.version} | {resolved_path(model, settings)} | {precision}"


# --- the file ------------------------------------------------------------------
def _entry(cls: type[Any], raw: Any) -> Any:
    """``cls(**raw)`` when ``raw`` holds exactly its fields with finite, non-negative
    numbers (and a positive rate or workers); else None."""
    names = {f.name: f.type for f in fields(cls)}
    if not isinstance(raw, Mapping) or set(raw) != set(names):
        return None
    for name, value in raw.items():
        if names[name] == "str":
            if not isinstance(value, str):
                return None
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            return None
    if raw.get("rate", 1) <= 0 or raw.get("workers", 1) < 1 or raw.get("wall_s", 1) <= 0 or raw.get("days", 1) <= 0:
        return None
    return cls(**raw)


def load(file: Path | None = None) -> dict[str, Any]:
    """The valid calibrations and run records of ``file`` (default :func:`cost_file`):
    ``{"calibrations": {key: Calibration}, "runs": {key: [RunRecord]}}``. A missing,
    unreadable or foreign file gives empty tables; damaged entries are left out."""
    empty: dict[str, Any] = {"calibrations": {}, "runs": {}}
    try:
        raw = json.loads((file or cost_file()).read_bytes()[: 16 << 20])
    except (OSError, ValueError):
        return empty
    if not isinstance(raw, dict) or raw.get("kind") != KIND or raw.get("format") != FORMAT:
        return empty
    calibrations, runs = raw.get("calibrations"), raw.get("runs")
    if isinstance(calibrations, dict):
        for key, value in calibrations.items():
            entry = _entry(Calibration, value)
            if entry is not None:
                empty["calibrations"][str(key)] = entry
    if isinstance(runs, dict):
        for key, values in runs.items():
            entries = [_entry(RunRecord, v) for v in values] if isinstance(values, list) else []
            records = [r for r in entries if r is not None]
            if records:
                empty["runs"][str(key)] = records[-KEEP_RUNS:]
    return empty


def save(tables: Mapping[str, Any], file: Path | None = None) -> bool:
    """Write ``tables`` (as :func:`load` gives them) atomically; False when the cache cannot
    be written (a read-only cache costs the next run a calibration, nothing more)."""
    data = {
        "kind": KIND,
        "format": FORMAT,
        "calibrations": {k: asdict(v) for k, v in tables["calibrations"].items()},
        "runs": {k: [asdict(r) for r in v[-KEEP_RUNS:]] for k, v in tables["runs"].items()},
    }
    text = json.dumps(data, indent=1, sort_keys=True)
    try:
        write_atomic(file or cost_file(), lambda tmp: Path(tmp).write_text(text))
    except OSError:
        return False
    return True


# --- calibration ---------------------------------------------------------------
def days_per_unit(model: Model) -> float:
    """One unit of the model's time in days (the clock's seconds when the model declares one)."""
    if model.clock_seconds is not None:
        return float(model.clock_seconds) / 86400.0
    minutes = {"s": 1.0 / 60.0, "min": 1.0, "h": 60.0, "d": 1440.0}.get(model.time_unit, 1440.0)
    return minutes / 1440.0


def calibrate(
    model: Model,
    settings: SolverSettings | None = None,
    *,
    patients: int = 1024,
    refresh: bool = False,
    file: Path | None = None,
) -> Calibration:
    """The calibration of ``model`` on this machine: cached, else measured and stored."""
    from twinloop.simulate.engine import SolverSettings

    settings = settings or SolverSettings()
    key = cost_key(model, settings)
    tables = load(file)
    if not refresh and key in tables["calibrations"]:
        return tables["calibrations"][key]
    found = _measure(model, settings, patients)
    tables["calibrations"][key] = found
    save(tables, file)
    return found


def measure_rate(model: Model, settings: SolverSettings | None = None, **kwargs: Any) -> float:
    """Patient-days per second per process of ``model`` on this machine (:func:`calibrate`)."""
    return calibrate(model, settings, **kwargs).rate


def _measure(model: Model, settings: SolverSettings, patients: int) -> Calibration:
    """Time a first and a second call of the same shapes; the second is the rate."""
    import numpy as np

    from twinloop.errors import InputError
    from twinloop.simulate.engine import simulate

    if isinstance(patients, bool) or not isinstance(patients, int) or not 8 <= patients <= 100_000:
        raise InputError(f"patients must be an integer from 8 to 100000 (the calibration cohort); got {patients!r}.")
    params = _calibration_parameters(model, patients)
    inputs, t_end = model.standard_scenario(model.param_map(model.default_parameters))
    horizon = float(model.profile.check_horizon or t_end)
    times = np.linspace(0.0, horizon, OUTPUT_POINTS)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        simulate(model, params, inputs, times=times, settings=settings, chunk_size=patients, progress=False)
        seconds.append(time.perf_counter() - start)
    days = horizon * days_per_unit(model)
    return Calibration(
        rate=patients * days / max(seconds[1], 1e-6),
        compile_s=max(seconds[0] - seconds[1], 0.0),
        base_rss_bytes=resident_bytes(),
        patients=patients,
        days=days,
        measured=datetime.now(UTC).date().isoformat(),
    )


def _calibration_parameters(model: Model, patients: int) -> Any:
    """The model's presets in turn, else its defaults spread by +-20 % within the bounds."""
    import numpy as np

    if model.presets:
        rows = [model.preset(name) for name in sorted(model.presets)]
        return np.stack([rows[i % len(rows)] for i in range(patients)])
    rng = np.random.default_rng(0)
    lower = np.array([p.lower for p in model.parameters])
    upper = np.array([p.upper for p in model.parameters])
    spread = model.default_parameters * rng.uniform(0.8, 1.2, (patients, len(model.parameters)))
    return np.clip(spread, lower, upper)


def resident_bytes() -> int:
    """The process's resident memory now (Linux ``/proc``; the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


# --- run records and the learned rate -------------------------------------------
def record_run(model: Model, settings: SolverSettings, record: RunRecord, file: Path | None = None) -> None:
    """Append ``record`` to the runs of ``model`` on this machine (the latest are kept)."""
    key = cost_key(model, settings)
    tables = load(file)
    tables["runs"][key] = [*tables["runs"].get(key, []), record][-KEEP_RUNS:]
    save(tables, file)


def past_runs(model: Model, settings: SolverSettings, file: Path | None = None) -> list[RunRecord]:
    """The recorded runs of ``model`` with these settings on this machine, oldest first."""
    return list(load(file)["runs"].get(cost_key(model, settings), []))


def learned_factors(runs: list[RunRecord], workers: int) -> dict[str, float] | None:
    """How far the calibrated model was off in the latest runs: the median of actual /
    predicted wall time (runs with ``workers`` workers), output bytes and peak memory (all
    runs), and ``runs``, how many runs the wall factor rests on. None without such runs."""
    same = [r for r in runs if r.workers == workers][-LEARN_FROM:]
    if not same:
        return None
    latest = runs[-LEARN_FROM:]
    return {
        "wall": _median_ratio([(r.wall_s, r.model_wall_s) for r in same]),
        "output": _median_ratio([(r.output_bytes, r.model_output_bytes) for r in latest]),
        "peak_rss": _median_ratio([(r.peak_rss_bytes, r.model_peak_rss_bytes) for r in latest]),
        "runs": float(len(same)),
    }


def _median_ratio(pairs: list[tuple[float, float]]) -> float:
    ratios = [a / p for a, p in pairs if p > 0 and a > 0]
    return statistics.median(ratios) if ratios else 1.0
