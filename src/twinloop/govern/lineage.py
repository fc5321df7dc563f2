"""Walk the PROV graphs of artifacts back to their sources.

Every artifact folder holds ``prov.json``; its inputs are entities named by content
hash. ``walk`` finds, for each input, the artifact that generated it (any folder
under the search roots whose identity has that hash) and continues from there, so
a report leads back to the predictor, the products it was trained on, and the
model, population and spec that made them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prov.model import ProvAssociation, ProvDocument, ProvEntity, ProvGeneration, ProvUsage

from twinloop._provenance import PROV_FILE, TL, hash_id, identity_file, read, sha256_file
from twinloop.errors import InputError


@dataclass
class Node:
    """One artifact or leaf input in a lineage tree."""

    id: str
    kind: str
    label: str
    role: str = ""
    path: str = ""
    activity: dict[str, Any] = field(default_factory=dict)
    inputs: list[Node] = field(default_factory=list)

    @property
    def is_artifact(self) -> bool:
        return bool(self.activity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "role": self.role,
            "path": self.path,
            "activity": self.activity,
            "inputs": [n.to_dict() for n in self.inputs],
        }

    def lines(self, depth: int = 0) -> list[str]:
        """The tree as indented text lines."""
        role = f"{self.role}: " if self.role else ""
        what = f"{role}{self.kind} '{self.label}' [{self.id.removeprefix('urn:sha256:')[:12]}]"
        if self.activity:
            what += f" <- {self.activity['type']} ({self.activity['ended']}, twinloop {self.activity['agent']})"
        out = ["  " * depth + what]
        for child in self.inputs:
            out += child.lines(depth + 1)
        return out


def index(roots: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """Artifact identity (``urn:sha256:...``) -> folder, for every ``prov.json`` under ``roots``."""
    found: dict[str, Path] = {}
    for root in roots:
        for prov_file in Path(root).rglob(PROV_FILE):
            folder = prov_file.parent
            try:
                found[hash_id(sha256_file(identity_file(folder)))] = folder
            except FileNotFoundError:
                continue
    return found


def walk(artifact: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]] = ()) -> Node:
    """The lineage tree of ``artifact``; inputs are resolved among artifacts under ``roots``
    (by default the artifact's parent folder)."""
    folder = Path(artifact)
    if not (folder / PROV_FILE).is_file():
        raise InputError(
            f"'{folder}' has no {PROV_FILE}: it is not an artifact written by twinloop (or predates provenance)."
        )
    if not any((folder / name).is_file() for name in ("manifest.json", "report.json")):
        raise InputError(
            f"'{folder}' has a {PROV_FILE} but no manifest.json or report.json to identify it: the artifact is damaged."
        )
    known = index([*roots] or [folder.parent])
    return _node(folder, "", known, set())


def _node(folder: Path, role: str, known: dict[str, Path], seen: set[str]) -> Node:
    doc = read(folder)
    own = hash_id(sha256_file(identity_file(folder)))
    entity = _entity(doc, own)
    node = Node(own, _kind(entity), _label(entity, folder.name), role, str(folder), _activity(doc))
    if own in seen:
        return node
    seen = seen | {own}
    for used in _inputs(doc):
        uid = _uri(used)
        used_role = _attr(used, "role")
        if uid in known:
            node.inputs.append(_node(known[uid], used_role, known, seen))
        else:
            node.inputs.append(Node(uid, _kind(used), _label(used, ""), used_role, _attr(used, "path")))
    return node


def walk_document(doc: ProvDocument, identifier: str) -> Node:
    """The lineage tree of one entity inside a single PROV document (a twin's history):
    each entity's generating activity, what that used (with its ``prov:role``), and so on."""
    entities = {_uri(e): e for e in doc.get_records(ProvEntity)}
    if identifier not in entities:
        raise InputError(f"The PROV document has no entity {identifier}.")
    generated_by = {
        str(g.formal_attributes[0][1].uri): g.formal_attributes[1][1] for g in doc.get_records(ProvGeneration)
    }
    used: dict[str, list[tuple[str, str]]] = {}
    for usage in doc.get_records(ProvUsage):
        roles = usage.get_attribute("prov:role")
        activity_id = str(usage.formal_attributes[0][1])
        used.setdefault(activity_id, []).append((str(usage.formal_attributes[1][1].uri), str(next(iter(roles), ""))))

    def node(uri: str, role: str, seen: frozenset[str]) -> Node:
        entity = entities[uri]
        activity_id = generated_by.get(uri)
        activity = _activity_record(doc, activity_id) if activity_id is not None else {}
        here = Node(uri, _kind(entity), _label(entity, ""), role, _attr(entity, "path"), activity)
        if activity_id is None or uri in seen:
            return here
        for child, child_role in used.get(str(activity_id), []):
            here.inputs.append(node(child, child_role, seen | {uri}))
        return here

    return node(identifier, "", frozenset())


def uses_of(doc: ProvDocument, identifier: str) -> list[dict[str, Any]]:
    """The activities that used an entity (its forward view: syncs, forecasts, scores,
    decisions recorded on it), in time order, each with the role the entity played."""
    found = []
    for usage in doc.get_records(ProvUsage):
        if str(usage.formal_attributes[1][1].uri) != identifier:
            continue
        roles = usage.get_attribute("prov:role")
        found.append({**_activity_record(doc, usage.formal_attributes[0][1]), "role": str(next(iter(roles), ""))})
    return sorted(found, key=lambda a: a["started"])


def _entity(doc: ProvDocument, identifier: str) -> Any:
    for record in doc.get_records(ProvEntity):
        if _uri(record) == identifier and _kind(record) != "file":
            return record
    raise InputError(f"The PROV graph does not describe its own artifact {identifier}: the folder changed after it.")


def _inputs(doc: ProvDocument) -> list[Any]:
    entities: dict[str, Any] = {str(e.identifier): e for e in doc.get_records(ProvEntity) if _kind(e) != "file"}
    used = [str(u.formal_attributes[1][1]) for u in doc.get_records(ProvUsage)]
    return [entities[u] for u in used if u in entities]


def _activity(doc: ProvDocument) -> dict[str, Any]:
    generation = next(iter(doc.get_records(ProvGeneration)))
    return _activity_record(doc, generation.formal_attributes[1][1])


def _activity_record(doc: ProvDocument, activity_id: Any) -> dict[str, Any]:
    """An activity's type, times, settings, seeds and the twinloop version that ran it."""
    act: Any = doc.get_record(activity_id)[0]
    agents = [
        str(a.formal_attributes[1][1])
        for a in doc.get_records(ProvAssociation)
        if a.formal_attributes[0][1] == activity_id
    ]
    agent = next((a for a in agents if a.startswith("tl:twinloop-")), None)
    if agent is None:  # an artifact's own document names one software agent
        agent = next(
            (str(a.identifier) for a in doc.get_records() if str(a.identifier).startswith("tl:twinloop-")), None
        )
    attrs = {str(k.localpart): v for k, v in act.attributes}
    return {
        "id": str(activity_id),
        "type": str(attrs["type"].localpart) if hasattr(attrs.get("type"), "localpart") else str(attrs.get("type")),
        "started": str(act.get_startTime()),
        "ended": str(act.get_endTime()),
        "settings": json.loads(str(attrs.get("settings", "{}"))),
        "seeds": json.loads(str(attrs.get("seeds", "{}"))),
        "agent": agent.removeprefix("tl:twinloop-") if agent else "?",
    }


def _uri(record: Any) -> str:
    return str(record.identifier.uri)


def _attr(record: Any, name: str) -> str:
    values = record.get_attribute(TL[name])
    return str(next(iter(values))) if values else ""


def _kind(record: Any) -> str:
    types = record.get_asserted_types()
    for t in types:
        local = getattr(t, "localpart", None)
        if local is not None:
            return str(local)
    return "entity"


def _label(record: Any, default: str) -> str:
    labels = record.get_attribute("prov:label")
    return str(next(iter(labels))) if labels else default
