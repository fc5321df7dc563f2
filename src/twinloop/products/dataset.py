"""A synthetic data product on disk and the streamed, resumable run that writes it.

Layout of a product directory::

    patients.parquet      subject_id, arm, group, chunk, covariates, parameters
    observations.parquet  the canonical long table (subject_id, time, variable, value, unit, code, source)
    outcomes.parquet      subject_id, arm, one column per outcome or label
    doses.parquet         subject_id, time, input, kind, amount, duration, unit
    manifest.json         model id, version and content hash, the resolved spec, seeds,
                          code version, and the SHA-256 and row count of every file

The cohort is processed in chunks. Each chunk's files are written atomically under
``.parts/`` with a completion marker; ``resume=True`` skips finished chunks, so an
interrupted run completes to the same bytes as an uninterrupted one (chunk ``k`` draws
from seeds derived from ``(seed, k)`` alone). The final files are assembled from the
parts in chunk order, then ``manifest.json`` is written and ``.parts/`` removed.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from twinloop._atomic import write_atomic
from twinloop._provenance import Activity, Source, sha256_file
from twinloop._schema import OBSERVATION_COLUMNS, empty_observations
from twinloop.cohort.population import Cohort
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.models.registry import get as get_model
from twinloop.products import outcomes as outcome_fns
from twinloop.products.simulation import Planner as Planner
from twinloop.products.simulation import grid_of, observe_protocols, simulate_arms
from twinloop.products.spec import ProductSpec
from twinloop.products.treatments import dose_table

FILES = ("patients", "observations", "outcomes", "doses")
PARTS = ".parts"
MINUTES_PER_UNIT = {"s": 1.0 / 60.0, "min": 1.0, "h": 60.0, "d": 1440.0}


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


def file_hash(path: Path) -> str:
    return sha256_file(path)


def _write_parquet(frame: pd.DataFrame | pa.Table, path: Path) -> None:
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


@dataclass(frozen=True)
class RunResult:
    """What a call to :func:`generate` did."""

    path: Path
    complete: bool
    chunks_done: int
    chunks_total: int


def generate(
    spec: ProductSpec,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    csv: bool = False,
    max_chunks: int | None = None,
    sources: Sequence[Source] = (),
    planner: Planner | None = None,
    envelope: Mapping[str, Any] | None = None,
) -> RunResult:
    """Write the product of ``spec`` into the directory ``out``.

    Arguments:
        resume: continue an interrupted run in ``out`` (its spec must be the same).
        csv: also write each table as CSV.
        max_chunks: process at most this many chunks in this call (work in slices;
            finish later with ``resume=True``).
        sources: further inputs to record in the product's PROV graph (e.g. the
            fitted population artifact a cohort was drawn from).
        planner: plans the closed-loop arms of a spec with a ``control`` section
            (:data:`Planner`; ``twinloop.control.generate_product`` supplies it).
        envelope: the run's predicted cost (``products.envelope.estimate(...).to_dict()``);
            the manifest records it with this call's wall time and peak memory.

    Raises:
        InputError: ``out`` holds another product, a different spec on resume, or the
            spec has closed-loop arms and no planner.
    """
    started = time.perf_counter()
    out = Path(out)
    if spec.control and planner is None:
        raise InputError(
            f"Product spec '{spec.name}' has a control section (closed-loop arms {sorted(spec.control)}), which "
            "needs a controller to plan them; generate it with twinloop.control.generate_product(spec, out) or "
            "`twinloop cohort generate`."
        )
    parts = out / PARTS
    check_out_dir(out, "--out")
    if max_chunks is not None and (isinstance(max_chunks, bool) or max_chunks < 1):
        raise InputError(f"--max-chunks must be >= 1 (chunks to process in this call); got {max_chunks}.")
    spec_hash = spec.content_hash()
    model = get_model(spec.model_id)
    activity = Activity(
        "generate-product",
        settings={"spec": spec.to_dict()},
        seeds={"seed": spec.seed, "chunk_size": spec.chunk_size},
        used=[
            Source("model", "model", f"{model.id} {model.version}", model.content_hash()),
            Source("population", "population", spec.population.name, spec.population.content_hash()),
            Source("specification", "product-spec", spec.name, spec_hash),
            *sources,
        ],
    )
    if (out / "manifest.json").exists() and not resume:
        raise InputError(f"'{out}' already holds a product; choose another --out or delete it.")
    if parts.exists() and not resume:
        raise InputError(f"'{out}' holds an unfinished run; continue it with --resume or delete the directory.")
    if resume and (out / "manifest.json").exists():
        manifest = Product.open(out).manifest
        if manifest.get("spec_hash") != spec_hash:
            raise InputError(f"'{out}' holds a product of a different spec; resume needs the same spec.")
        n_chunks = math.ceil(spec.n / spec.chunk_size)
        return RunResult(out, True, n_chunks, n_chunks)
    if resume and (parts / "spec.json").is_file() and _stamp_hash(parts / "spec.json") != spec_hash:
        raise InputError(f"The unfinished run in '{out}' used a different spec; resume needs the same spec.")
    n_chunks = math.ceil(spec.n / spec.chunk_size)
    done = [k for k in range(n_chunks) if (parts / f"{k:06d}.done").exists()]
    todo = [k for k in range(n_chunks) if k not in set(done)]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    with PatientBar(progress, spec.n, spec.name) as advance, _Undo(out) as undo:
        parts.mkdir(parents=True, exist_ok=True)
        stamp = parts / "spec.json"
        if not stamp.exists():
            write_atomic(stamp, lambda tmp: Path(tmp).write_text(json.dumps({"spec_hash": spec_hash})))
        advance(sum(min(spec.chunk_size, spec.n - k * spec.chunk_size) for k in done))
        for k in todo:
            counts = _write_chunk(spec, model, k, parts, planner)
            write_atomic(parts / f"{k:06d}.done", lambda tmp, c=counts: Path(tmp).write_text(json.dumps(c)))
            undo.keep = True  # a finished chunk is worth resuming
            advance(counts["patients"])
    finished = len(done) + len(todo)
    if finished < n_chunks:
        return RunResult(out, False, finished, n_chunks)
    actual = None if envelope is None else {**envelope, **_actuals(time.perf_counter() - started)}
    _assemble(spec, model, out, n_chunks, csv, actual)
    activity.record(out, "product")
    return RunResult(out, True, n_chunks, n_chunks)


def _write_chunk(spec: ProductSpec, model: Model, k: int, parts: Path, planner: Planner | None) -> dict[str, int]:
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
    return {**{name: len(frame) for name, frame in frames.items()}, "draws": cohort.draws, "accepted": cohort.accepted}


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


def _actuals(wall_s: float) -> dict[str, float]:
    """What this run measured: its wall time and the process's peak memory."""
    from twinloop.simulate.cost import peak_rss_bytes

    return {"actual_wall_s": wall_s, "actual_peak_rss_bytes": float(peak_rss_bytes())}


def _assemble(
    spec: ProductSpec, model: Model, out: Path, n_chunks: int, csv: bool, envelope: Mapping[str, Any] | None = None
) -> None:
    parts = out / PARTS
    files: dict[str, Any] = {}
    for name in FILES:
        target = out / f"{name}.parquet"
        sources = [parts / f"{k:06d}.{name}.parquet" for k in range(n_chunks)]

        def combine(tmp: str, sources: list[Path] = sources) -> None:
            schema = pq.read_schema(sources[0])
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for src in sources:
                    writer.write_table(pq.read_table(src, schema=schema))

        write_atomic(target, combine)
        rows = pq.ParquetFile(target).metadata.num_rows
        files[f"{name}.parquet"] = {"sha256": file_hash(target), "rows": rows}
        if csv:
            csv_path = out / f"{name}.csv"
            write_atomic(csv_path, lambda tmp, t=target: pq.read_table(t).to_pandas().to_csv(tmp, index=False))
            files[f"{name}.csv"] = {"sha256": file_hash(csv_path), "rows": rows}
    counts = [json.loads((parts / f"{k:06d}.done").read_text()) for k in range(n_chunks)]
    patients = pq.read_table(out / "patients.parquet", columns=["simulation_failed"]).column(0).to_numpy()
    from twinloop import __version__

    manifest = {
        "kind": "twinloop.product",
        "name": spec.name,
        "model": {"id": model.id, "version": model.version, "content_hash": model.content_hash()},
        "population": {"name": spec.population.name, "content_hash": spec.population.content_hash()},
        "spec": spec.to_dict(),
        "spec_hash": spec.content_hash(),
        "seeds": {
            "seed": spec.seed,
            "chunk_size": spec.chunk_size,
            "chunks": n_chunks,
            "derivation": "chunk k: population SeedSequence([seed, k]); arms [seed, k, 1]; "
            "dropout [seed, k, 2]; observation protocol j [seed, k, 3, j]"
            + ("; closed-loop arm a [seed, k, 4, a]" if spec.control else ""),
        },
        "code_version": __version__,
        "time_origin": spec.origin.isoformat(),
        "time_unit": model.time_unit,
        "clock_seconds": model.clock_seconds,
        "files": files,
        "chunk_rows": counts,
        "acceptance": {
            "draws": sum(c["draws"] for c in counts),
            "accepted": sum(c["accepted"] for c in counts),
            "rate": sum(c["accepted"] for c in counts) / max(1, sum(c["draws"] for c in counts)),
        },
        "simulation_failures": int(patients.sum()),
    }
    if envelope is not None:
        manifest["envelope"] = dict(envelope)
    write_atomic(
        out / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    )
    shutil.rmtree(parts)


def check_out_dir(out: Path, field: str) -> None:
    """Refuse an output directory that is an existing file or lies under one."""
    from twinloop._paths import check_output

    check_output(out, field, "folder")


def _stamp_hash(stamp: Path) -> Any:
    try:
        return json.loads(stamp.read_text()).get("spec_hash")
    except (OSError, ValueError, AttributeError):
        raise InputError(f"'{stamp}' is damaged; delete '{stamp.parent.parent}' and generate again.") from None


class _Undo:
    """Remove what a failed call created when no chunk was finished (so a retry starts clean)."""

    def __init__(self, out: Path) -> None:
        self.out, self.keep = out, False
        self.created = next((p for p in (*reversed(out.parents), out) if not p.exists()), None)
        self.parts_existed = (out / PARTS).exists()

    def __enter__(self) -> _Undo:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None or self.keep:
            return
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
        elif not self.parts_existed:
            shutil.rmtree(self.out / PARTS, ignore_errors=True)


class PatientBar:
    """A transient progress bar of patients processed (nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label
        self.progress: Progress | None = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        self.progress = Progress(
            TextColumn(f"generating {self.label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("patients"),
            TimeRemainingColumn(),
            transient=True,
        )
        self.progress.start()
        task = self.progress.add_task("generate", total=self.total)
        progress = self.progress
        return lambda n: progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


# --- reading -----------------------------------------------------------------
MANIFEST_KEYS = ("kind", "name", "model", "population", "spec", "seeds", "time_origin", "files", "code_version")


def read_manifest(file: Path) -> dict[str, Any]:
    """A product's ``manifest.json``, refused clearly when it is not one (truncated, edited, foreign)."""
    try:
        manifest = json.loads(file.read_bytes()[: 64 << 20])
    except (OSError, ValueError) as exc:
        raise InputError(
            f"'{file}' is not a readable product manifest ({type(exc).__name__}); the product is damaged, "
            "generate it again."
        ) from None
    if not isinstance(manifest, dict):
        raise InputError(f"'{file}' is not a twinloop product manifest (it holds no JSON object).")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing or manifest.get("kind") != "twinloop.product":
        raise InputError(
            f"'{file}' is not a twinloop product manifest (kind {manifest.get('kind')!r}, missing {missing}); "
            "give the directory of a product written by `twinloop cohort generate`."
        )
    ok = (
        isinstance(manifest["model"], dict)
        and isinstance(manifest["model"].get("id"), str)
        and isinstance(manifest["files"], dict)
        and all(isinstance(v, dict) and "sha256" in v and "rows" in v for v in manifest["files"].values())
        and isinstance(manifest["spec"], dict)
        and isinstance(manifest["seeds"], dict)
        and isinstance(manifest["seeds"].get("seed"), int)
        and isinstance(manifest["population"], dict)
        and isinstance(manifest["name"], str)
        and isinstance(manifest["time_origin"], str)
    )
    if not ok:
        raise InputError(
            f"'{file}' has damaged fields (model, files, spec, seeds, population); generate the product again."
        )
    return manifest


@dataclass(frozen=True)
class Product:
    """A product directory opened for reading."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Product:
        root = Path(path)
        file = root / "manifest.json"
        if not file.is_file():
            hint = " (an unfinished run: continue it with --resume)" if (root / PARTS).exists() else ""
            raise InputError(f"'{root}' is not a twinloop product: it has no manifest.json{hint}.")
        return cls(root, read_manifest(file))

    def table(self, name: str, **kwargs: Any) -> pd.DataFrame:
        if name not in FILES:
            raise InputError(f"A product has the tables {', '.join(FILES)}; got {name!r}.")
        file = self.path / f"{name}.parquet"
        if not file.is_file():
            raise InputError(f"Product '{self.path}' lacks {file.name}; the product is incomplete, generate it again.")
        try:
            return pq.read_table(file, **kwargs).to_pandas()
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InputError(
                f"{file.name} of product '{self.path}' cannot be read ({type(exc).__name__}); the file is damaged, "
                "generate the product again."
            ) from None

    def verify(self) -> list[str]:
        """Files missing or whose content hash differs from the manifest (empty when intact)."""
        files = self.manifest["files"].items()
        return [f for f, info in files if not (self.path / f).is_file() or file_hash(self.path / f) != info["sha256"]]

    def iter_patients(self, batch_size: int = 65_536) -> Iterator[pd.DataFrame]:
        for batch in pq.ParquetFile(self.path / "patients.parquet").iter_batches(batch_size=batch_size):
            yield batch.to_pandas()
