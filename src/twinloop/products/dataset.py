"""A synthetic data product on disk and the streamed, resumable run that writes it.

Layout of a product directory::

    patients.parquet      subject_id, arm, group, chunk, covariates, parameters
    observations.parquet  the canonical long table (subject_id, time, variable, value, unit, code, source)
    outcomes.parquet      subject_id, arm, one column per outcome or label
    doses.parquet         subject_id, time, input, kind, amount, duration, unit
    manifest.json         model id, version and content hash, the resolved spec, seeds,
                          code version, and the SHA-256 and row count of every file

The cohort is processed in chunks (:mod:`twinloop.products.chunk`), in this process or
on Dask workers (a ``runner``, see ``twinloop.scale``). Each chunk's files are written
atomically under ``.parts/`` with a completion marker; ``resume=True`` skips finished chunks, so an
interrupted run completes to the same bytes as an uninterrupted one (chunk ``k`` draws
from seeds derived from ``(seed, k)`` alone). The final files are assembled from the
parts in chunk order, then ``manifest.json`` is written and ``.parts/`` removed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from twinloop._atomic import write_atomic
from twinloop._chunks import ChunkRunner, InProcessRunner, peak_rss_bytes
from twinloop._provenance import Activity, Source, sha256_file
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.registry import get as get_model
from twinloop.products.chunk import ChunkJob
from twinloop.products.simulation import Planner as Planner
from twinloop.products.spec import ProductSpec
from twinloop.simulate.trajectories import merge_checks

FILES = ("patients", "observations", "outcomes", "doses")
PARTS = ".parts"


def file_hash(path: Path) -> str:
    return sha256_file(path)


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
    runner: ChunkRunner | None = None,
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
            (:data:`Planner`; ``twinloop.control.generate_product`` supplies it). With a
            runner other than in-process it must pickle (``ClosedLoopPlanner`` does).
        runner: where the chunks still to do run (``twinloop.scale.open_runner``: one
            worker process per core, or a Dask cluster sharing ``out``'s file system);
            in this process by default. The files are the same bytes either way.
        envelope: the run's predicted cost (predicted wall seconds and peak bytes, and
            its basis); the manifest records it with the actual wall time and peak
            resident memory of this process and of each worker.

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
    _check_envelope(envelope)
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
    runner = runner if runner is not None else InProcessRunner()
    job = ChunkJob(spec.to_dict(), spec_hash, model.content_hash(), str(parts), planner)
    if isinstance(runner, InProcessRunner):
        job.prime(spec, model)
    with PatientBar(progress, spec.n, spec.name) as advance, _Undo(out) as undo:
        parts.mkdir(parents=True, exist_ok=True)
        stamp = parts / "spec.json"
        if not stamp.exists():
            write_atomic(stamp, lambda tmp: Path(tmp).write_text(json.dumps({"spec_hash": spec_hash})))
        advance(sum(min(spec.chunk_size, spec.n - k * spec.chunk_size) for k in done))
        for k, counts in runner.map(job, todo):
            if not (parts / f"{k:06d}.done").is_file():
                raise InputError(
                    f"Chunk {k} finished {runner.where}, but its files are not in '{parts}': the workers must see the "
                    "output folder at the same path (a shared file system)."
                )
            undo.keep = True  # a finished chunk is worth resuming
            advance(counts["patients"])
    finished = len(done) + len(todo)
    if finished < n_chunks:
        return RunResult(out, False, finished, n_chunks)
    _assemble(spec, model, out, n_chunks, csv, lambda: _measured(envelope, started, runner))
    activity.record(out, "product")
    return RunResult(out, True, n_chunks, n_chunks)


def _check_envelope(envelope: Any) -> None:
    if envelope is None:
        return
    try:
        ok = isinstance(envelope, Mapping) and bool(json.dumps(dict(envelope), allow_nan=False))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(
            f"envelope must be a mapping of JSON values (predicted wall seconds, peak bytes, basis); got {envelope!r}."
        )


def _measured(envelope: Mapping[str, Any] | None, started: float, runner: ChunkRunner) -> dict[str, Any] | None:
    """The predicted envelope with the run's actual wall time and peak resident memory."""
    if envelope is None:
        return None
    workers = runner.worker_peak_rss_bytes()
    actual = {"actual_wall_s": time.perf_counter() - started, "actual_peak_rss_bytes": peak_rss_bytes()}
    if workers:
        actual |= {"workers": len(workers), "actual_worker_peak_rss_bytes": max(workers.values())}
    return {**envelope, **actual, "ran": runner.where}


def _assemble(
    spec: ProductSpec, model: Model, out: Path, n_chunks: int, csv: bool, measured: Callable[[], dict[str, Any] | None]
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
    engine = engine_summary(spec, [c.pop("engine", {}) for c in counts])
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
        "engine": engine,
    }
    envelope = measured()
    if envelope is not None:
        manifest["envelope"] = envelope
    write_atomic(
        out / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    )
    shutil.rmtree(parts)


def engine_summary(spec: ProductSpec, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The solver settings and, over every chunk, the path taken and the fast path's
    self-check (largest error per observable against the accurate path, fallbacks)."""
    settings = dataclasses.asdict(spec.solver)
    ran = [c for c in chunks if c]
    paths = sorted({c["path"] for c in ran})
    checks = [{k: v for k, v in c.items() if k != "path"} for c in ran]
    return {"settings": settings, "paths": paths, "check": merge_checks(checks) if checks else {}}


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
        if kind is None or self.keep or any((self.out / PARTS).glob("*.done")):  # workers may have finished some
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
