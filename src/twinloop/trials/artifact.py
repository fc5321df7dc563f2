"""A trial's results on disk: Parquet tables, ``manifest.json`` (spec, lineage, file hashes,
figures), ``prov.json`` and ``report.html``, written atomically (a temporary folder, then a
rename) and read back by :func:`read_trial`, from which the report is rendered again.

Besides the participants, the CONSORT flow and the effect estimates, a trial may carry
sections (``power``, ``procova``, ``external``, ``subgroups``, ``km``). Each section is a
table (a DataFrame, written as ``<section>.parquet``) or a mapping (or dataclass) whose
DataFrame values become tables ``<section>_<key>.parquet`` and whose other values, numbers,
strings and lists, are kept in the manifest as the section's summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinloop.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from twinloop.trials.run import TrialData

KIND = "twinloop.trial"
MANIFEST = "manifest.json"
REPORT = "report.html"
SECTIONS = ("power", "procova", "external", "subgroups", "km")
CORE_TABLES = ("participants", "flow", "results", "truth", "observations")


@dataclass(frozen=True)
class TrialArtifact:
    """A trial's results as written by :func:`write_trial` (or about to be).

    Attributes:
        path: the artifact's folder.
        manifest: the spec, its hash, the lineage, the sections' summaries and the files.
        tables: every table by name (``participants``, ``flow``, ``results``, ``km``, ...).
    """

    path: Path
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        """The trial spec as plain data."""
        return dict(self.manifest.get("spec", {}))

    def table(self, name: str) -> pd.DataFrame | None:
        """The table ``name``, or None when the trial has none."""
        return self.tables.get(name)

    def section(self, name: str) -> dict[str, Any]:
        """A section's summary (numbers and text), empty when the trial has none."""
        return dict(self.manifest.get("sections", {}).get(name, {}).get("summary", {}))

    def has(self, name: str) -> bool:
        """Whether the trial has section ``name``."""
        return name in self.manifest.get("sections", {})

    def section_tables(self, name: str) -> dict[str, pd.DataFrame]:
        """A section's tables by key (``""`` for a section that is one table)."""
        names = self.manifest.get("sections", {}).get(name, {}).get("tables", [])
        return {t.removeprefix(name).removeprefix("_"): self.tables[t] for t in names if t in self.tables}


def plain(value: Any) -> Any:
    """``value`` as JSON data: numpy scalars and arrays, tuples, paths and dataclasses made
    plain; non-finite floats become None."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def split_section(name: str, value: Any) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """A section's tables (by file name) and its summary (JSON data)."""
    import pandas as pd

    from twinloop._paths import check_name

    if isinstance(value, pd.DataFrame):
        return {name: value}, {}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if not isinstance(value, Mapping):
        raise InputError(f"The trial section {name!r} must be a DataFrame, a mapping or a dataclass; got "
                         f"{type(value).__name__}.")  # fmt: skip
    tables, summary = {}, {}
    for key, item in value.items():
        if isinstance(item, pd.DataFrame):
            tables[check_name(f"{name}[{key!r}]", f"{name}_{key}")] = item
        else:
            summary[str(key)] = plain(item)
    return tables, summary


def assemble(out: Path, data: TrialData, results: pd.DataFrame, sections: Mapping[str, Any]) -> TrialArtifact:
    """The artifact in memory (no files yet): tables, sections and the manifest without hashes."""
    from twinloop import __version__

    tables: dict[str, pd.DataFrame] = {"participants": data.participants, "flow": data.flow, "results": results}
    if data.truth is not None and len(data.truth):
        tables["truth"] = data.truth
    if data.observations is not None:
        tables["observations"] = data.observations
    described: dict[str, Any] = {}
    for name in SECTIONS:
        value = sections.get(name)
        if value is None:
            continue
        section_tables, summary = split_section(name, value)
        tables |= section_tables
        described[name] = {"tables": sorted(section_tables), "summary": summary}
    spec = plain(data.spec.to_dict())
    manifest = {
        "kind": KIND,
        "name": spec.get("name", ""),
        "spec": spec,
        "spec_hash": data.spec.content_hash(),
        "lineage": plain(data.lineage),
        "sections": described,
        "twinloop_version": __version__,
    }
    return TrialArtifact(Path(out), manifest, tables)


def write_trial(
    out: str | Path,
    data: TrialData,
    results: pd.DataFrame,
    *,
    power: Any = None,
    procova: Any = None,
    external: Any = None,
    subgroups: Any = None,
    km: Any = None,
) -> Path:
    """Write a trial's results into the new folder ``out`` and return it.

    Arguments:
        data: what :func:`~twinloop.trials.run.run_trial` returned.
        results: the effect estimates (:func:`~twinloop.trials.analysis.analyse`).
        power, procova, external, subgroups, km: optional sections, each a DataFrame or a
            mapping (or dataclass) of tables and summary values.

    Returns:
        ``out``, holding ``<table>.parquet``, ``report.html``, ``manifest.json``, ``prov.json``.

    Raises:
        InputError: ``out`` exists and is not an empty folder, or lies under a file.

    Example:
        >>> write_trial("out/trial", data, analyse(data.participants, data.spec))  # doctest: +SKIP
    """
    from twinloop._atomic import write_folder_atomic
    from twinloop._paths import check_output

    target = Path(out)
    check_output(target, "--out", "folder")
    if target.exists() and any(target.iterdir()):
        raise InputError(f"--out '{target}' exists and is not empty; choose a new folder (a trial is written "
                         "whole into a folder of its own).")  # fmt: skip
    sections = {"power": power, "procova": procova, "external": external, "subgroups": subgroups, "km": km}
    artifact = assemble(target, data, results, sections)
    return write_folder_atomic(target, lambda tmp: _fill(tmp, artifact, target))


def _fill(tmp: Path, artifact: TrialArtifact, target: Path) -> None:
    from twinloop._provenance import Activity, Source, sha256_file
    from twinloop.trials.report import render

    manifest = artifact.manifest
    activity = Activity(
        "run-trial",
        settings={"spec": manifest["spec"], "sections": sorted(manifest["sections"])},
        seeds={"seed": manifest["spec"].get("seed")},
        used=[Source.content("spec", "trial-spec", manifest["name"], manifest["spec"]), *_sources(manifest)],
    )
    files: dict[str, Any] = {}
    for name, frame in artifact.tables.items():
        file = tmp / f"{name}.parquet"
        _frame(frame).to_parquet(file, index=False, compression="zstd")
        files[file.name] = {"sha256": sha256_file(file), "rows": len(frame)}
    page, figures = render(artifact)
    (tmp / REPORT).write_text(page, encoding="utf-8")
    manifest = {**manifest, "files": files, "figures": figures, "report": REPORT}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    activity.record(tmp, "trial", at=target)


def _sources(manifest: Mapping[str, Any]) -> list[Any]:
    """The model and population the lineage names by content hash, as PROV inputs."""
    from twinloop._provenance import Source

    found = []
    for role in ("model", "population"):
        item = manifest["lineage"].get(role)
        if isinstance(item, Mapping) and item.get("content_hash"):
            label = " ".join(str(item[k]) for k in ("id", "version", "name") if item.get(k)) or role
            found.append(Source(role, role, label, str(item["content_hash"])))
    return found


def _frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with string column names (Parquet's rule)."""
    return frame.rename(columns=str) if any(not isinstance(c, str) for c in frame.columns) else frame


def read_trial(path: str | Path) -> TrialArtifact:
    """A trial artifact written by :func:`write_trial`, its files checked against the manifest.

    Raises:
        InputError: the folder holds no trial, or a file is missing or changed.
    """
    import pandas as pd

    from twinloop._paths import NAME_PATTERN
    from twinloop._provenance import sha256_file

    folder = Path(path)
    file = folder / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"'{folder}' holds no readable trial ({MANIFEST}: {type(exc).__name__}); give a folder "
                         "written by `twinloop trial run`.") from None  # fmt: skip
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND or not isinstance(manifest.get("files"), dict):
        raise InputError(f"'{file}' is not a trial's manifest (kind {KIND!r}); give a folder written by "
                         "`twinloop trial run`.")  # fmt: skip
    for name in manifest["files"]:
        if not (isinstance(name, str) and name.endswith(".parquet") and NAME_PATTERN.fullmatch(name)):
            raise InputError(f"'{file}' lists the file {name!r}, which is not a table of a trial; the manifest "
                             "is damaged, run the trial again.")  # fmt: skip
    tables = {}
    for name, entry in manifest["files"].items():
        target = folder / name
        if not target.is_file() or sha256_file(target) != (entry or {}).get("sha256"):
            raise InputError(f"'{target}' is missing or changed since the trial was written (its SHA-256 differs "
                             "from the manifest's); the artifact is damaged, run the trial again.")  # fmt: skip
        tables[name.removesuffix(".parquet")] = pd.read_parquet(target)
    return TrialArtifact(folder, manifest, tables)
