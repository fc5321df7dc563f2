"""FHIR R4 reader: Bundle JSON files and bulk-export NDJSON folders.

Every resource is validated with ``fhir.resources`` (the R4B models, which read R4
content) before anything is taken from it; a resource that fails is rejected with
the validation message, not skipped silently. What is mapped:

- Patient -> ``patients`` (subject_id, sex, birth_date, deceased, race, ethnicity)
- Condition -> ``conditions`` (onset, abatement, SNOMED code, clinical status)
- MedicationRequest -> ``medications`` (orders: code, display, status, the model
  input it maps to, if any); MedicationAdministration -> ``doses`` (the canonical dose
  table, for medications that map to a model input) and ``medications``
- Procedure -> ``procedures`` (code, start, end); radiotherapy with a dose in Gy also
  becomes a dose of the ``radiotherapy`` input
- Observation with a quantity -> the canonical observation table (LOINC code, UCUM
  unit); carbohydrate intake (LOINC 9059-7, g) becomes a ``carbs`` dose

Other resource types are counted in ``ignored`` and otherwise left alone.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from twinloop.connect.schema import (
    DOSE_COLUMNS,
    OBSERVATION_COLUMNS,
    Rejected,
    empty_doses,
    empty_observations,
    utc_times,
)
from twinloop.errors import DataError

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
RADIOTHERAPY_SNOMED = "108290001"
CARBOHYDRATE_INTAKE_LOINC = "9059-7"
MAPPED_TYPES = ("Patient", "Condition", "MedicationRequest", "MedicationAdministration", "Procedure", "Observation")
# Medication text -> model input. Matched case-insensitively on the code's display or text.
MEDICATION_INPUTS = (
    (re.compile(r"insulin|humulin|novolog|humalog|lispro|aspart|glargine|detemir", re.I), "insulin"),
    (re.compile(r"chemotherapy, intravenous infusion", re.I), "infusion"),
    (re.compile(r"chemotherapy, intravenous", re.I), "dose_iv"),
    (re.compile(r"chemotherapy, oral", re.I), "dose_oral"),
)
_RT_DOSE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*Gy")


@dataclass
class FhirRecords:
    """What a FHIR source held, mapped to tables, and what was rejected."""

    patients: pd.DataFrame
    conditions: pd.DataFrame
    medications: pd.DataFrame
    procedures: pd.DataFrame
    observations: pd.DataFrame
    doses: pd.DataFrame
    rejected: list[Rejected] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)  # resources of an unmapped type, by type
    unmapped: dict[str, int] = field(default_factory=dict)  # resources of a mapped type that gave no row, by reason


def _coding(concept: dict[str, Any] | None, system: str | None = None) -> tuple[str, str, str]:
    """(system, code, display) of the first coding (of ``system`` if given) of a concept."""
    concept = concept or {}
    codings = concept.get("coding") or []
    chosen = next((c for c in codings if system is None or c.get("system") == system), None)
    if chosen is None:
        return "", "", str(concept.get("text", ""))
    return (
        str(chosen.get("system", "")),
        str(chosen.get("code", "")),
        str(chosen.get("display") or concept.get("text", "")),
    )


def _subject(resource: dict[str, Any], aliases: dict[str, str]) -> str:
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    if ref in aliases:
        return aliases[ref]
    return str(ref).rsplit("/", 1)[-1].removeprefix("urn:uuid:")


def _extension_text(resource: dict[str, Any], suffix: str) -> str:
    for ext in resource.get("extension") or []:
        if str(ext.get("url", "")).endswith(suffix):
            for sub in ext.get("extension") or []:
                if sub.get("url") == "text":
                    return str(sub.get("valueString", ""))
    return ""


def medication_input(display: str) -> str:
    """The model input a medication feeds, from its name; '' if none."""
    for pattern, name in MEDICATION_INPUTS:
        if pattern.search(display):
            return name
    return ""


def _mapper(kind: str) -> Any:
    return {
        "Patient": _patient,
        "Condition": _condition,
        "MedicationRequest": _medication_request,
        "MedicationAdministration": _medication_administration,
        "Procedure": _procedure,
        "Observation": _observation,
    }[kind]


def _patient(r: dict[str, Any], subject: str, source: str) -> dict[str, list[dict[str, Any]]]:
    deceased = r.get("deceasedDateTime") or bool(r.get("deceasedBoolean", False))
    return {
        "patients": [
            {
                "subject_id": r["id"],
                "sex": r.get("gender", ""),
                "birth_date": r.get("birthDate", ""),
                "deceased": str(deceased) if deceased else "",
                "race": _extension_text(r, "us-core-race"),
                "ethnicity": _extension_text(r, "us-core-ethnicity"),
                "source": source,
            }
        ]
    }


def _condition(r: dict[str, Any], subject: str, source: str) -> dict[str, list[dict[str, Any]]]:
    system, code, display = _coding(r.get("code"))
    return {
        "conditions": [
            {
                "subject_id": subject,
                "onset": r.get("onsetDateTime", ""),
                "abatement": r.get("abatementDateTime", ""),
                "system": system,
                "code": code,
                "display": display,
                "clinical_status": _coding(r.get("clinicalStatus"))[1],
                "source": source,
            }
        ]
    }


def _medication_row(r: dict[str, Any], subject: str, source: str, kind: str, time: str) -> dict[str, Any]:
    system, code, display = _coding(r.get("medicationCodeableConcept"))
    if not display and r.get("medicationReference"):
        display = str(r["medicationReference"].get("display", ""))
    return {
        "subject_id": subject,
        "time": time,
        "kind": kind,
        "status": r.get("status", ""),
        "system": system,
        "code": code,
        "display": display,
        "input": medication_input(display),
        "source": source,
    }


def _medication_request(r: dict[str, Any], subject: str, source: str) -> dict[str, list[dict[str, Any]]]:
    return {"medications": [_medication_row(r, subject, source, "request", r.get("authoredOn", ""))]}


def _medication_administration(r: dict[str, Any], subject: str, source: str) -> dict[str, list[dict[str, Any]]]:
    period = r.get("effectivePeriod") or {}
    start = r.get("effectiveDateTime") or period.get("start", "")
    row = _medication_row(r, subject, source, "administration", start)
    out: dict[str, list[dict[str, Any]]] = {"medications": [row]}
    dosage = r.get("dosage") or {}
    dose = dosage.get("dose") or {}
    if row["input"] and r.get("status", "completed") == "completed" and "value" in dose:
        minutes = 0.0
        if period.get("start") and period.get("end"):
            span = utc_times([period["end"]])[0] - utc_times([period["start"]])[0]
            minutes = max(span.total_seconds() / 60.0, 0.0)
        out["doses"] = [
            {
                "subject_id": subject,
                "time": start,
                "input": row["input"],
                "kind": "bolus",
                "amount": dose["value"],
                "duration": minutes,
                "unit": dose.get("code") or dose.get("unit", ""),
            }
        ]
    return out


def _procedure(r: dict[str, Any], subject: str, source: str) -> dict[str, list[dict[str, Any]]]:
    system, code, display = _coding(r.get("code"))
    period = r.get("performedPeriod") or {}
    start = r.get("performedDateTime") or period.get("start", "")
    out: dict[str, list[dict[str, Any]]] = {
        "procedures": [
            {
                "subject_id": subject,
                "start": start,
                "end": period.get("end", ""),
                "system": system,
                "code": code,
                "display": display,
                "status": r.get("status", ""),
                "source": source,
            }
        ]
    }
    notes = " ".join(str(n.get("text", "")) for n in r.get("note") or [])
    gy = _RT_DOSE.search(notes)
    if code == RADIOTHERAPY_SNOMED and gy and r.get("status") == "completed":
        out["doses"] = [
            {
                "subject_id": subject,
                "time": start,
                "input": "radiotherapy",
                "kind": "bolus",
                "amount": float(gy.group(1)),
                "duration": 0.0,
                "unit": "Gy",
            }
        ]
    return out


def _observation(r: dict[str, Any], subject: str, source: str) -> dict[str, list[dict[str, Any]]]:
    quantity = r.get("valueQuantity")
    if not quantity or "value" not in quantity:
        return {}
    _, code, display = _coding(r.get("code"), LOINC)
    time = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start") or r.get("issued", "")
    unit = quantity.get("code") or quantity.get("unit", "")
    if code == CARBOHYDRATE_INTAKE_LOINC:
        dose = {
            "subject_id": subject,
            "time": time,
            "input": "carbs",
            "kind": "bolus",
            "amount": quantity["value"],
            "duration": 0.0,
            "unit": unit,
        }
        return {"doses": [dose]}
    row = {
        "subject_id": subject,
        "time": time,
        "variable": display or code,
        "value": quantity["value"],
        "unit": unit,
        "code": code,
        "source": source,
    }
    return {"observations": [row]}


MAX_DEPTH = 64  # FHIR resources nest a few levels; deeper JSON is refused before validation


def _text(file: Path) -> str:
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{file.name} is not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x}); "
            "FHIR JSON must be UTF-8: re-export it as UTF-8."
        ) from None


def _resources(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    """(where, resource or None, parse error) for every resource in a file or folder."""
    files = sorted(path.glob("*.ndjson")) + sorted(path.glob("*.json")) if path.is_dir() else [path]
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"{path}: no FHIR files (*.ndjson, *.json) found.")
    for file in files:
        if file.suffix == ".ndjson":
            for i, line in enumerate(_text(file).splitlines(), start=1):
                if line.strip():
                    yield from _parsed(f"{file.name}:{i}", line)
        else:
            yield from _parsed(file.name, _text(file))


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (iteratively, without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _parsed(where: str, text: str) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as e:
        yield where, None, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        return
    except RecursionError:  # the parser's own limit, far deeper than any FHIR resource
        yield where, None, f"JSON nested more than {MAX_DEPTH} levels deep; FHIR resources are not"
        return
    if _depth(resource) > MAX_DEPTH:
        yield where, None, f"JSON nested more than {MAX_DEPTH} levels deep; FHIR resources are not"
        return
    if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
        entries = resource.get("entry", [])
        if not isinstance(entries, list):
            yield f"{where}#entry", None, f"the bundle's entry is {_kind(entries)}, not a list of entries"
            return
        for j, entry in enumerate(entries):
            res = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(res, dict):
                res = {**res, "_fullUrl": str(entry.get("fullUrl", ""))}
                yield f"{where}#entry[{j}]", res, ""
            elif isinstance(entry, dict):
                yield f"{where}#entry[{j}]", None, f"entry[{j}].resource is {_kind(res)}, not a FHIR resource object"
            else:
                yield f"{where}#entry[{j}]", None, f"entry[{j}] is {_kind(entry)}, not an object with a resource"
    else:
        yield (
            where,
            resource if isinstance(resource, dict) else None,
            "" if isinstance(resource, dict) else f"the JSON is {_kind(resource)}, not a FHIR resource object",
        )


def _validate(resource: dict[str, Any]) -> str:
    """'' if the resource is valid FHIR (R4B models), else the first validation message."""
    kind = resource.get("resourceType")
    if kind is None:
        return "resourceType is missing; every FHIR resource names its type (e.g. Observation)"
    if not isinstance(kind, str) or not re.fullmatch(r"[A-Z][A-Za-z]{0,63}", kind):
        return f"resourceType {kind!r} is not a FHIR resource type name"
    try:
        cls = get_fhir_model_class(kind)
    except (KeyError, ValueError):  # fhir.resources: "... is not a valid FHIR Model"
        return f"unknown resourceType {kind!r} (not a FHIR R4 resource type)"
    try:
        cls.model_validate({k: v for k, v in resource.items() if k != "_fullUrl"})
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        return f"invalid {kind}: {loc}: {first.get('msg', '')}"
    if kind == "Patient" and not resource.get("id"):
        return "Patient has no id; observations refer to their patient by it"
    return ""


def read_fhir(path: str | Path) -> FhirRecords:
    """Read a FHIR R4 Bundle (JSON) or a bulk-export folder of NDJSON files.

    Returns:
        :class:`FhirRecords`: one table per mapped resource family, the canonical
        observation and dose tables (times still as written; validation and unit
        harmonization happen in :func:`twinloop.connect.ingest`), every rejected
        resource with its reason, and counts of what was read.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"FHIR source {path} does not exist; give a Bundle .json file or an NDJSON folder.")
    items = list(_resources(path))
    aliases = {}
    for _, res, _ in items:
        if res and res.get("resourceType") == "Patient":
            aliases[f"Patient/{res.get('id')}"] = str(res.get("id"))
            if res.get("_fullUrl"):
                aliases[str(res["_fullUrl"])] = str(res.get("id"))
    tables: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("patients", "conditions", "medications", "procedures", "observations", "doses")
    }
    rejected: list[Rejected] = []
    counts: Counter[str] = Counter()
    ignored: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    for where, res, error in items:
        kind = str(res.get("resourceType", "")) if res else ""
        record = f"{kind or 'resource'}/{res.get('id', '?')}" if res else where
        reason = error or _validate(res or {})
        if reason:
            rejected.append(Rejected(where, record, reason))
            continue
        assert res is not None
        if kind not in MAPPED_TYPES:
            ignored[kind] += 1
            continue
        counts[kind] += 1
        mapped = _mapper(kind)(res, _subject(res, aliases), where)
        if kind == "Observation" and not mapped:
            unmapped["Observation without a quantity value"] += 1
        for table, rows in mapped.items():
            tables[table].extend(rows)
    return FhirRecords(
        patients=_frame(
            tables["patients"], ("subject_id", "sex", "birth_date", "deceased", "race", "ethnicity", "source")
        ),
        conditions=_frame(
            tables["conditions"],
            ("subject_id", "onset", "abatement", "system", "code", "display", "clinical_status", "source"),
        ),
        medications=_frame(
            tables["medications"],
            ("subject_id", "time", "kind", "status", "system", "code", "display", "input", "source"),
        ),
        procedures=_frame(
            tables["procedures"], ("subject_id", "start", "end", "system", "code", "display", "status", "source")
        ),
        observations=pd.DataFrame(tables["observations"], columns=list(OBSERVATION_COLUMNS))
        if tables["observations"]
        else empty_observations(),
        doses=pd.DataFrame(tables["doses"], columns=list(DOSE_COLUMNS)) if tables["doses"] else empty_doses(),
        rejected=rejected,
        counts=dict(counts),
        ignored=dict(ignored),
        unmapped=dict(unmapped),
    )


def _frame(rows: Iterable[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(columns))
