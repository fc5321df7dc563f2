"""Property tests of every reader behind ``twinloop.connect.ingest``: whatever the input,
it returns data or raises a :class:`~twinloop.errors.TwinloopError`; nothing else.

Each reader gets structured-but-wrong inputs (valid-looking rows with random values,
units, timestamps, codes, types and nesting) and raw bytes. The default run draws a
few hundred examples in all; the ``slow`` run draws 10,000 per reader.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tempfile
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinloop.connect import ingest
from twinloop.errors import TwinloopError

MARKUP = ("[/bold]", "[ft_i]", ":x:", "[link=http://x]y[/link]", "[red]")
UNITS = ("mg/dL", "mmol/L", "mg/dl", "%", "U", "U/h", "g", "kg", "(", "Cel", "[degF]", "{score}", "", "1/0", "m/s")
CODES = ("99504-3", "2345-7", "14745-4", "9059-7", "29463-7", "0000-0", "", "not-a-code")

texts = st.text(max_size=12) | st.sampled_from(MARKUP)
good_times = st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1)).map(lambda d: d.isoformat() + "Z")
good_numbers = st.integers(-100, 600).map(str) | st.floats(-100, 600).map(lambda x: f"{x:.2f}")
wrong_numbers = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(("7", "-50", "1e309", "0x10", "1_000", "nan", "inf", "", " ", "12,5", "NaN", "None")),
    texts,
)
wrong_times = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        (
            "0001-01-01",
            "9999-12-31T23:59:59",
            "2026-01-05T08:00:00+05:00",
            "2026-01-05 08:00",
            "1677-09-21",
            "2262-04-12",
            "12345",
            "",
            "yesterday",
        )
    ),
    wrong_numbers,
)


def mostly(valid: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid three times in four, so that rows get past the first check to the later ones."""
    return st.one_of(valid, valid, valid, wrong)


numbers = mostly(good_numbers, wrong_numbers)
timestamps = mostly(good_times, wrong_times)
units = mostly(st.sampled_from(("mg/dL", "mmol/L")), st.sampled_from(UNITS) | texts)
codes = mostly(st.sampled_from(CODES[:3]), st.sampled_from(CODES) | texts)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_any = st.recursive(
    json_leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
)


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


@st.composite
def cgm_exports(draw: Any) -> bytes:
    """A CGM (+ pump) export: known column names, random cells."""
    extra = draw(st.lists(st.sampled_from(("bolus", "carbs", "basal")), unique=True))
    header = ["timestamp", "glucose", "unit", *extra]
    cell = {"timestamp": timestamps, "unit": units}
    rows = [[draw(cell.get(col, numbers)) for col in header] for _ in range(draw(st.integers(0, 8)))]
    if draw(st.booleans()):
        header = draw(st.permutations(header))
    return _csv(header, rows).encode()


@st.composite
def column_maps(draw: Any) -> dict[str, Any]:
    """A column map for a generic CSV: usually well formed, sometimes not."""
    observation = {"column": "value", "variable": draw(texts | st.just("glucose")), "unit": draw(units)}
    if draw(st.booleans()):
        observation = {"column": "value", "variable": "glucose", "unit_column": "unit", "code": draw(codes)}
    cmap: dict[str, Any] = {
        "time": draw(st.sampled_from(({"column": "time"}, "time", {"column": "time", "timezone": "Europe/Paris"})))
        if draw(st.integers(0, 9))
        else draw(json_any),
        "subject_id": draw(st.sampled_from(({"column": "patient"}, {"value": "p1"}, "patient"))),
        "observations": [observation],
    }
    if draw(st.booleans()):
        cmap["long"] = {"variable": "test", "value": "value", "unit": "unit", "code": "code"}
    if draw(st.booleans()):
        cmap["doses"] = [
            {"column": "dose", "input": draw(texts), "unit": draw(units), "kind": draw(texts | st.just("rate"))}
        ]
    if not draw(st.integers(0, 5)):
        key = draw(st.sampled_from(sorted(cmap)))
        cmap[key] = draw(json_any)
    return cmap


@st.composite
def generic_csvs(draw: Any) -> tuple[bytes, dict[str, Any]]:
    header = ["patient", "time", "value", "unit", "test", "code", "dose"]
    cell = {"time": timestamps, "unit": units, "code": codes, "patient": texts | st.just("p1")}
    n = draw(st.integers(0, 6))
    rows = [[draw(cell.get(col, numbers)) for col in header] for _ in range(n)]
    return _csv(header, rows).encode(), draw(column_maps())


@st.composite
def resources(draw: Any) -> Any:
    """A FHIR resource that looks right but may be wrong anywhere."""
    kind = draw(st.sampled_from(("Observation", "Patient", "MedicationAdministration", "Procedure", "Device", "Nope")))
    resource: dict[str, Any] = {"resourceType": kind, "id": draw(st.text(min_size=1, max_size=8))}
    if kind == "Observation":
        resource.update(
            status=draw(st.sampled_from(("final", "amended", "bogus"))),
            code={"coding": [{"system": "http://loinc.org", "code": draw(codes)}]},
            subject={"reference": draw(st.sampled_from(("Patient/p1", "Patient/p2", "urn:uuid:x", "")))},
            effectiveDateTime=draw(timestamps),
            valueQuantity={"value": draw(json_leaf | st.sampled_from((7, -50, 1e308))), "unit": draw(units)},
        )
    elif kind == "MedicationAdministration":
        resource.update(
            status="completed",
            medicationCodeableConcept={"text": draw(st.sampled_from(("insulin lispro", "aspirin")))},
            subject={"reference": "Patient/p1"},
            effectiveDateTime=draw(timestamps),
            dosage={"dose": {"value": draw(json_leaf), "code": draw(units)}},
        )
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(sorted(resource)))
        if draw(st.booleans()):
            resource.pop(key)
        else:
            resource[key] = draw(json_any)
    return resource if draw(st.integers(0, 9)) else draw(json_any)


@st.composite
def bundles(draw: Any) -> bytes:
    entries: Any = [
        {"fullUrl": draw(st.text(max_size=6)), "resource": draw(resources())} for _ in range(draw(st.integers(0, 4)))
    ]
    if not draw(st.integers(0, 5)):
        entries = draw(json_any)
    bundle: Any = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    depth = draw(st.sampled_from((0, 0, 0, 50, 5000)))
    text = json.dumps(bundle)
    return ("[" * depth + text + "]" * depth).encode()


@st.composite
def ndjson_lines(draw: Any) -> bytes:
    lines = [json.dumps(draw(resources())) for _ in range(draw(st.integers(0, 5)))]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines).encode()


@st.composite
def column_map_yamls(draw: Any) -> tuple[bytes, bytes]:
    data, cmap = draw(generic_csvs())
    text = yaml.safe_dump(cmap).encode() if draw(st.integers(0, 3)) else draw(st.binary(max_size=64))
    if not draw(st.integers(0, 4)):  # a scalar YAML resolves or tags into something it cannot build
        scalar = draw(st.sampled_from(("!!float x", "!!int x", "!!timestamp x", "2001-13-45", "0o99", "!!binary x")))
        text += f"\nextra: {scalar}\n".encode()
    return data, text


def _run(files: dict[str, bytes], target: str, **kwargs: Any) -> None:
    """Write the files and ingest ``target``: data or a TwinloopError, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        extra = {k: (folder / v if k == "columns" and isinstance(v, str) else v) for k, v in kwargs.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(TwinloopError):  # a refusal is fine; anything else fails the test
                ingest(folder / target, **extra)


READERS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
    "cgm-csv": (cgm_exports(), lambda raw: _run({"cgm.csv": raw}, "cgm.csv", subject_id="p1")),
    "cgm-csv-bytes": (st.binary(max_size=200), lambda raw: _run({"cgm.csv": raw}, "cgm.csv")),
    "csv-column-map": (generic_csvs(), lambda x: _run({"data.csv": x[0]}, "data.csv", columns=x[1])),
    "column-map-yaml": (column_map_yamls(), lambda x: _run({"d.csv": x[0], "m.yaml": x[1]}, "d.csv", columns="m.yaml")),
    "fhir-bundle": (bundles(), lambda raw: _run({"bundle.json": raw}, "bundle.json")),
    "fhir-bytes": (st.binary(max_size=200), lambda raw: _run({"bundle.json": raw}, "bundle.json")),
    "ndjson-folder": (ndjson_lines(), lambda raw: _run({"bulk/Observation.ndjson": raw}, "bulk")),
    "ndjson-bytes": (st.binary(max_size=200), lambda raw: _run({"bulk/x.ndjson": raw}, "bulk")),
}


def _check(reader: str, examples: int) -> None:
    strategy, check = READERS[reader]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(strategy)
    def holds(value: Any) -> None:
        check(value)

    holds()


@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_raise_only_twinloop_errors(reader: str) -> None:
    _check(reader, 40)


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_raise_only_twinloop_errors_10k(reader: str) -> None:
    _check(reader, 10_000)
