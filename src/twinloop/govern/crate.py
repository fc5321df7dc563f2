"""Package a data product as an RO-Crate (ro-crate-py): its files, manifest and PROV graph,
described in ``ro-crate-metadata.json`` so that repositories and workflow tools can read it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rocrate.rocrate import ROCrate

from twinloop.errors import InputError

ENCODINGS = {".parquet": "application/vnd.apache.parquet", ".json": "application/json", ".csv": "text/csv"}


def package(product: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write an RO-Crate of ``product`` into the new directory ``out``."""
    source, target = Path(product), Path(out)
    manifest_file = source / "manifest.json"
    if not manifest_file.is_file():
        raise InputError(f"'{source}' is not a product folder (no manifest.json).")
    if target.exists():
        raise InputError(f"'{target}' already exists; choose a new --out for the crate.")
    manifest = json.loads(manifest_file.read_text())
    crate = ROCrate()
    crate.name = manifest.get("name", source.name)
    crate.description = (
        f"Synthetic data product of model {manifest['model']['id']} {manifest['model']['version']} "
        f"made by twinloop {manifest.get('code_version', '?')}; lineage in prov.json."
    )
    crate.license = "https://creativecommons.org/publicdomain/zero/1.0/"
    for path in sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")):
        properties: dict[str, Any] = {
            "name": path.name,
            "encodingFormat": ENCODINGS.get(path.suffix, "application/octet-stream"),
        }
        digest = manifest.get("files", {}).get(path.name, {}).get("sha256")
        if digest:
            properties["sha256"] = digest
        if path.name == "prov.json":
            properties["conformsTo"] = {"@id": "https://www.w3.org/submissions/prov-json/"}
        crate.add_file(path, dest_path=path.name, properties=properties)
    crate.write(target)
    return target
