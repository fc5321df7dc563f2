"""W3C PROV records written beside every artifact (``prov.json``, PROV-JSON).

A leaf module like ``_config``: the writers in ``products``, ``learn`` and ``govern``
all record provenance here, and :mod:`twinloop.govern.lineage` reads it back.
Inputs are named by content hash (``urn:sha256:<hex>``), so an artifact's inputs
are found again wherever they were copied. An artifact's own identity is the hash
of its manifest file, which lists the hashes of everything else it holds.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prov.model import PROV, Namespace, ProvDocument

from twinloop._atomic import write_atomic
from twinloop._secrets import mask_secrets

TL = Namespace("tl", "https://twinloop.dev/ns/prov#")
PROV_FILE = "prov.json"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(payload: Any) -> str:
    """SHA-256 of a JSON-able value, written canonically (sorted keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def hash_id(hexdigest: str) -> str:
    """The PROV identifier of content with this sha256."""
    return f"urn:sha256:{hexdigest}"


@dataclass(frozen=True)
class Source:
    """One input of an activity: another artifact, a file, a model or a spec, by content hash."""

    role: str
    kind: str
    name: str
    sha256: str
    path: str = ""

    @classmethod
    def artifact(cls, folder: str | os.PathLike[str], role: str) -> Source:
        """An artifact folder written by twinloop (identified by its manifest's hash)."""
        folder = Path(folder)
        manifest = identity_file(folder)
        kind = "artifact"
        if manifest.name == "manifest.json":
            raw = json.loads(manifest.read_text())
            kind = str(raw.get("kind", kind))
        return cls(role, kind, folder.name, sha256_file(manifest), str(folder.resolve()))

    @classmethod
    def file(cls, path: str | os.PathLike[str], role: str, kind: str = "file") -> Source:
        path = Path(path)
        return cls(role, kind, path.name, sha256_file(path), str(path.resolve()))

    @classmethod
    def content(cls, role: str, kind: str, name: str, payload: Any) -> Source:
        """A spec, model or setting given by value: hashed as canonical JSON."""
        return cls(role, kind, name, content_sha256(payload))


def identity_file(folder: Path) -> Path:
    """The file whose hash identifies an artifact folder."""
    for name in ("manifest.json", "report.json"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"'{folder}' has no manifest.json or report.json to identify it.")


@dataclass
class Activity:
    """What made an artifact: start it before the work, ``record`` it after the files exist."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    seeds: Mapping[str, Any] = field(default_factory=dict)
    used: Sequence[Source] = ()
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def record(self, folder: str | os.PathLike[str], kind: str, *, at: str | os.PathLike[str] | None = None) -> Path:
        """Write ``prov.json`` for the artifact in ``folder`` (atomically) and return its path;
        ``at`` is where the artifact will live when ``folder`` is a temporary folder renamed there."""
        folder = Path(folder)
        doc = document(self, folder, kind, datetime.now(UTC), at=at)
        target = folder / PROV_FILE
        return write_atomic(target, lambda tmp: Path(tmp).write_text(str(doc.serialize(format="json", indent=2))))


def _files(folder: Path, skip: Path) -> dict[str, str]:
    """Hashes of the artifact's files (not prov.json, hidden files or the identity file)."""
    return {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != skip and p.name != PROV_FILE and not p.name.startswith(".")
    }


def document(
    activity: Activity, folder: Path, kind: str, ended: datetime, *, at: str | os.PathLike[str] | None = None
) -> ProvDocument:
    """The PROV document of one artifact: entity, activity, agents, inputs and files (the
    artifact's path is ``at`` when given, else ``folder``)."""
    from twinloop import __version__

    doc = ProvDocument()
    doc.add_namespace(TL)
    doc.add_namespace("sha256", "urn:sha256:")
    identity = identity_file(folder)
    artifact = doc.entity(
        hash_id(sha256_file(identity)),
        {"prov:type": TL[kind], "prov:label": Path(at or folder).name, "tl:path": str(Path(at or folder).resolve())},
    )
    act = doc.activity(
        f"tl:run-{uuid.uuid4().hex}",
        activity.started,
        ended,
        {
            "prov:type": TL[activity.name],
            "tl:settings": mask_secrets(json.dumps(activity.settings, sort_keys=True, default=str)),
            "tl:seeds": json.dumps(activity.seeds, sort_keys=True, default=str),
        },
    )
    software = doc.agent(
        f"tl:twinloop-{__version__}",
        {"prov:type": PROV["SoftwareAgent"], "tl:version": __version__},
    )
    person = doc.agent(f"tl:user-{_user()}", {"prov:type": PROV["Person"]})
    doc.wasAssociatedWith(act, software)
    doc.actedOnBehalfOf(software, person)
    doc.wasGeneratedBy(artifact, act)
    doc.wasAttributedTo(artifact, software)
    for source in activity.used:
        attributes: dict[str, Any] = {"prov:type": TL[source.kind], "prov:label": source.name, "tl:role": source.role}
        if source.path:
            attributes["tl:path"] = source.path
        entity = doc.entity(hash_id(source.sha256), attributes)
        doc.used(act, entity)
        doc.wasDerivedFrom(artifact, entity)
    for relative, digest in _files(folder, skip=identity).items():
        member = doc.entity(hash_id(digest), {"prov:type": TL["file"], "prov:label": relative})
        doc.hadMember(artifact, member)
    return doc


def _user() -> str:
    try:
        return "".join(c if c.isalnum() else "-" for c in getpass.getuser())
    except (KeyError, OSError):
        return "unknown"


def read(folder: str | os.PathLike[str]) -> ProvDocument:
    """The PROV document recorded for an artifact folder (:class:`InputError` if it is damaged)."""
    from prov import Error as ProvError

    from twinloop.errors import InputError

    file = Path(folder) / PROV_FILE
    try:
        return ProvDocument.deserialize(source=str(file), format="json")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, ProvError) as exc:
        raise InputError(
            f"'{file}' is not a readable PROV-JSON document ({type(exc).__name__}); the artifact is damaged."
        ) from None
