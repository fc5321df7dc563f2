"""The bad-input corpus of ``twinloop twin``: patient data ingest and the twin commands.

Every case must be refused with exit 2 and one ``error:`` line naming the field and
the value, with nothing written and no registry row changed (``tests/badinput.py``).
One small twin (``ada``, 8 hours of 5-minute CGM readings) is created once per module
and its registry copied per case.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from badinput import Case, check_refused, registry_rows
from twinloop.cli.app import app

runner = CliRunner()
START = "2026-01-05T00:05:00Z"


def cgm(rows: list[tuple[str, object, str]]) -> str:
    return "timestamp,glucose,unit\n" + "".join(f"{t},{g},{u}\n" for t, g, u in rows)


def _stamp(minutes: int) -> str:
    h, m = divmod(minutes, 60)
    return f"2026-01-05T{h:02d}:{m:02d}:00Z"


# 8 hours of dense readings (the twin) and 1 hour after them (a valid sync).
TWIN_CSV = cgm([(_stamp(5 * i), round(120 + 30 * math.sin(i / 12)), "mg/dL") for i in range(1, 97)])
LATER = [(f"2026-01-05T{8 + i // 12:02d}:{5 * (i % 12):02d}:00Z", 130, "mg/dL") for i in range(1, 12)]
OK = "2026-01-05T09:30:00Z"  # a time after the twin's state


def bundle(*resources: object, patient: bool = True) -> str:
    entries = [{"resource": {"resourceType": "Patient", "id": "p1"}}] if patient else []
    entries += [{"resource": r} for r in resources]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


def glucose(value: object = 120, unit: str = "mg/dL", code: str = "99504-3", subject: str = "p1", time: str = OK):
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{subject}"},
        "effectiveDateTime": time,
        "valueQuantity": {"value": value, "unit": unit, "code": unit},
    }


def create(data: str, *extra: str, name: str = "bea") -> list[str]:
    return [
        "twin",
        "create",
        "--model",
        "t1d-uva-padova",
        "--data",
        "{tmp}/" + data,
        "--name",
        name,
        "--members",
        "16",
        *extra,
        "--db",
        "{db}",
    ]


def sync(data: str, *extra: str, twin: str = "ada") -> list[str]:
    return ["twin", "sync", twin, "--data", "{tmp}/" + data, *extra, "--db", "{db}"]


def forecast(*extra: str, twin: str = "ada") -> list[str]:
    return ["twin", "forecast", twin, *extra, "--db", "{db}"]


def compare(*extra: str) -> list[str]:
    return ["twin", "compare", "ada", "--endpoint", "mean_glucose", *extra, "--db", "{db}"]


PLAN = "time,input,kind,amount,duration,unit\n2026-01-05T09:00:00Z,carbs,bolus,40,0,g\n"
CMAP = (
    "time: {column: time}\nsubject_id: {column: patient}\nobservations:\n"
    "  - {column: glucose, variable: subcutaneous_glucose, unit: mg/dL, code: 99504-3}\n"
)
TWO_PATIENTS = "patient,time,glucose\np1,2026-01-05T09:30:00Z,120\np2,2026-01-05T09:30:00Z,130\n"

CASES = [
    # --- twin create: the file ---------------------------------------------------
    Case("create-missing-file", create("none.csv"), ["none.csv", "does not exist"]),
    Case("create-unknown-format", create("data.xlsx"), ["data.xlsx", "unknown data format"], files={"data.xlsx": "x"}),
    Case("create-empty-file", create("e.csv"), ["e.csv", "empty"], files={"e.csv": ""}),
    Case("create-header-only", create("h.csv"), ["--data", "no observations"], files={"h.csv": cgm([])}),
    Case(
        "create-not-utf8",
        create("l1.csv"),
        ["l1.csv", "UTF-8"],
        files={"l1.csv": b"timestamp,glucose,unit\n\xe9,1,x\n"},
    ),
    Case(
        "create-no-glucose-column", create("c.csv"), ["c.csv", "glucose column"], files={"c.csv": "timestamp,x\n1,2\n"}
    ),
    Case("create-no-unit", create("u.csv"), ["u.csv", "unit"], files={"u.csv": "timestamp,glucose\n2026-01-05,100\n"}),
    # --- twin create: the values -----------------------------------------------------
    Case(
        "create-negative-glucose",
        create("n.csv"),
        ["-50", "cannot be negative"],
        files={"n.csv": cgm([(OK, -50, "mg/dL")])},
    ),
    Case(
        "create-negative-mmol",
        create("n.csv"),
        ["-2", "cannot be negative"],
        files={"n.csv": cgm([(OK, -2, "mmol/L")])},
    ),
    Case(
        "create-above-sensor-range",
        create("r.csv"),
        ["1000", "range 40-400", "--range subcutaneous_glucose=LOW:HIGH"],
        files={"r.csv": cgm([(OK, 1000, "mg/dL")])},
    ),
    Case(
        "create-range-above-declared",
        create("r.csv", "--range", "subcutaneous_glucose=40:500"),
        ["1000", "range 40-500"],
        files={"r.csv": cgm([(OK, 1000, "mg/dL")])},
    ),
    Case(
        "create-range-not-a-range",
        create("r.csv", "--range", "subcutaneous_glucose=500:40"),
        ["--range", "LOW < HIGH", "500:40"],
        files={"r.csv": cgm([(OK, 100, "mg/dL")])},
    ),
    Case(
        "create-range-unknown-observable",
        create("r.csv", "--range", "ketones=0:8"),
        ["--range", "ketones", "subcutaneous_glucose"],
        files={"r.csv": cgm([(OK, 100, "mg/dL")])},
    ),
    Case(
        "create-below-sensor-range",
        create("r.csv"),
        ["r.csv:2", "9.0078 mg/dL", "range 40-400"],
        files={"r.csv": cgm([(OK, 0.5, "mmol/L")])},
    ),
    Case(
        "create-conflicting-duplicates",
        create("d.csv"),
        ["conflicting", "110, 140"],
        files={"d.csv": cgm([(OK, 110, "mg/dL"), (OK, 140, "mg/dL")])},
    ),
    Case("create-infinite-value", create("i.csv"), ["1e309", "finite"], files={"i.csv": cgm([(OK, "1e309", "mg/dL")])}),
    Case("create-text-value", create("t.csv"), ["high", "finite"], files={"t.csv": cgm([(OK, "high", "mg/dL")])}),
    Case("create-markup-value", create("t.csv"), [":x:", "value"], files={"t.csv": cgm([(OK, ":x:", "mg/dL")])}),
    Case(
        "create-year-one",
        create("y.csv"),
        ["0001-01-01", "1677-09-22"],
        files={"y.csv": cgm([("0001-01-01", 100, "mg/dL")])},
    ),
    Case(
        "create-year-9999",
        create("y.csv"),
        ["9999-12-31", "time"],
        files={"y.csv": cgm([("9999-12-31T00:00:00", 100, "mg/dL")])},
    ),
    Case(
        "create-bare-number-time", create("y.csv"), ["12345", "time"], files={"y.csv": cgm([("12345", 100, "mg/dL")])}
    ),
    Case(
        "create-text-time", create("y.csv"), ["yesterday", "time"], files={"y.csv": cgm([("yesterday", 100, "mg/dL")])}
    ),
    Case(
        "create-mixed-time-zones",
        create("z.csv"),
        ["timestamp", "mixes", "row 3"],
        files={"z.csv": cgm([(OK, 100, "mg/dL"), ("2026-01-05 09:35", 101, "mg/dL")])},
    ),
    Case("create-unit-paren", create("p.csv"), ["'('", "UCUM"], files={"p.csv": cgm([(OK, 100, "(")])}),
    Case("create-unit-celsius", create("p.csv"), ["'Cel'", "convert"], files={"p.csv": cgm([(OK, 100, "Cel")])}),
    Case("create-unit-markup", create("p.csv"), ["[/bold]", "unit"], files={"p.csv": cgm([(OK, 100, "[/bold]")])}),
    Case("create-unit-ft_i", create("p.csv"), ["[ft_i]"], files={"p.csv": cgm([(OK, 100, "[ft_i]")])}),
    Case("create-unit-mass", create("p.csv"), ["'kg'", "convert"], files={"p.csv": cgm([(OK, 100, "kg")])}),
    # --- twin create: the options ------------------------------------------------------
    Case(
        "create-members-zero",
        create("a.csv", "--members", "0"),
        ["--members must be >= 8", "0"],
        files={"a.csv": TWIN_CSV},
    ),
    Case("create-members-negative", create("a.csv", "--members", "-3"), ["--members", "-3"], files={"a.csv": TWIN_CSV}),
    Case(
        "create-unknown-model",
        ["twin", "create", "--model", "nope", "--data", "{tmp}/a.csv", "--name", "x", "--db", "{db}"],
        ["nope"],
        files={"a.csv": TWIN_CSV},
    ),
    Case("create-unknown-method", create("a.csv", "--method", "magic"), ["method", "magic"], files={"a.csv": TWIN_CSV}),
    Case("create-bad-set", create("a.csv", "--set", "BW"), ["--set", "BW"], files={"a.csv": TWIN_CSV}),
    Case("create-markup-name", create("a.csv", name="[/bold]"), ["--name", "[/bold]"], files={"a.csv": TWIN_CSV}),
    Case("create-existing-name", create("a.csv", name="ada"), ["ada", "already exists"], files={"a.csv": TWIN_CSV}),
    # --- twin create: FHIR ------------------------------------------------------------
    Case(
        "create-fhir-no-resource-type",
        create("b.json"),
        ["resourceType is missing"],
        files={"b.json": bundle({"id": "x", "status": "final"})},
    ),
    Case(
        "create-fhir-unknown-resource-type",
        create("b.json"),
        ["'Nope'", "resourceType"],
        files={"b.json": bundle({"resourceType": "Nope", "id": "x"})},
    ),
    Case(
        "create-fhir-patient-without-id",
        create("b.json"),
        ["Patient has no id"],
        files={"b.json": bundle({"resourceType": "Patient", "gender": "female"})},
    ),
    Case(
        "create-fhir-entry-not-list",
        create("b.json"),
        ["entry", "not a list"],
        files={"b.json": json.dumps({"resourceType": "Bundle", "type": "collection", "entry": {"a": 1}})},
    ),
    Case(
        "create-fhir-resource-is-list",
        create("b.json"),
        ["entry[1].resource is a list"],
        files={"b.json": bundle([glucose()])},
    ),
    Case("create-fhir-not-utf8", create("b.json"), ["b.json", "UTF-8"], files={"b.json": b'{"resourceType": "\xff"}'}),
    Case(
        "create-fhir-deep", create("b.json"), ["nested more than 64"], files={"b.json": "[" * 100_000 + "]" * 100_000}
    ),
    Case(
        "create-fhir-invalid-json", create("b.json"), ["b.json", "not valid JSON"], files={"b.json": '{"resourceType":'}
    ),
    Case("create-fhir-string-value", create("b.json"), ["valueQuantity"], files={"b.json": bundle(glucose("lots"))}),
    Case(
        "create-fhir-negative", create("b.json"), ["-50", "cannot be negative"], files={"b.json": bundle(glucose(-50))}
    ),
    Case(
        "create-fhir-other-patient",
        create("b.json", "--subject", "p2"),
        ["'p2'", "no data of patient"],
        files={"b.json": bundle(glucose())},
    ),
    Case(
        "create-fhir-unknown-loinc",
        create("b.json"),
        ["no observation of", "0000-0", "not an observable"],
        files={"b.json": bundle(glucose(code="0000-0"))},
    ),
    Case(
        "create-fhir-only-devices",
        create("b.json"),
        ["no observations", "unsupported resource type"],
        files={"b.json": bundle({"resourceType": "Device", "id": "d1"})},
    ),
    Case("create-fhir-markup-unit", create("b.json"), ["[/bold]"], files={"b.json": bundle(glucose(unit="[/bold]"))}),
    Case("create-ndjson-empty-folder", create("bulk"), ["no FHIR files"], files={"bulk/readme.txt": "x"}),
    Case(
        "create-ndjson-bad-line",
        create("bulk"),
        ["Observation.ndjson:2", "not valid JSON"],
        files={"bulk/Observation.ndjson": json.dumps(glucose()) + "\n{oops\n"},
    ),
    # --- twin create: column maps -----------------------------------------------------
    Case(
        "create-two-patients",
        create("t.csv", "--columns", "{tmp}/m.yaml"),
        ["2 patients", "--subject"],
        files={"t.csv": TWO_PATIENTS.replace("glucose", "glucose"), "m.yaml": CMAP},
    ),
    Case(
        "create-map-without-time",
        create("t.csv", "--columns", "{tmp}/m.yaml"),
        ["m.yaml", "at least 'time: {column: ...}'"],
        files={"t.csv": TWO_PATIENTS, "m.yaml": "observations: []\n"},
    ),
    Case(
        "create-map-time-without-column",
        create("t.csv", "--columns", "{tmp}/m.yaml"),
        ["time needs 'column'"],
        files={"t.csv": TWO_PATIENTS, "m.yaml": CMAP.replace("{column: time}", "{zone: UTC}")},
    ),
    Case(
        "create-map-absent-column",
        create("t.csv", "--columns", "{tmp}/m.yaml", "--subject", "p1"),
        ["'glucose'", "not in the file"],
        files={"t.csv": TWO_PATIENTS.replace("glucose", "bg"), "m.yaml": CMAP},
    ),
    Case(
        "create-map-bad-timezone",
        create("t.csv", "--columns", "{tmp}/m.yaml", "--subject", "p1"),
        ["timezone", "Mars/Olympus"],
        files={
            "t.csv": TWO_PATIENTS.replace("Z,", ","),
            "m.yaml": CMAP.replace("{column: time}", "{column: time, timezone: Mars/Olympus}"),
        },
    ),
    Case(
        "create-map-observations-not-list",
        create("t.csv", "--columns", "{tmp}/m.yaml"),
        ["observations", "list"],
        files={"t.csv": TWO_PATIENTS, "m.yaml": "time: time\nobservations: 5\n"},
    ),
    Case(
        "create-map-not-yaml",
        create("t.csv", "--columns", "{tmp}/m.yaml"),
        ["m.yaml"],
        files={"t.csv": TWO_PATIENTS, "m.yaml": b"\xff\xfe"},
    ),
    # --- twin sync ----------------------------------------------------------------------
    Case("sync-unknown-twin", sync("s.csv", twin="nobody"), ["nobody"], files={"s.csv": cgm(LATER)}),
    Case(
        "sync-negative-glucose",
        sync("s.csv"),
        ["-50", "cannot be negative"],
        files={"s.csv": cgm([*LATER, (OK, -50, "mg/dL")])},
    ),
    Case(
        "sync-above-range",
        sync("s.csv"),
        ["1000", "range"],
        files={"s.csv": cgm([*LATER, ("2026-01-05T09:40:00Z", 1000, "mg/dL")])},
    ),
    Case(
        "sync-conflicting-duplicates",
        sync("s.csv"),
        ["conflicting"],
        files={"s.csv": cgm([(OK, 110, "mg/dL"), (OK, 111, "mg/dL")])},
    ),
    Case("sync-header-only", sync("s.csv"), ["no observations"], files={"s.csv": cgm([])}),
    Case(
        "sync-mixed-time-zones",
        sync("s.csv"),
        ["mixes"],
        files={"s.csv": cgm([(OK, 100, "mg/dL"), ("2026-01-05 10:00", 101, "mg/dL")])},
    ),
    Case("sync-not-utf8", sync("s.csv"), ["UTF-8"], files={"s.csv": b"timestamp,glucose,unit\n\xff,1,mg/dL\n"}),
    Case("sync-unit-paren", sync("s.csv"), ["'('"], files={"s.csv": cgm([(OK, 100, "(")])}),
    Case(
        "sync-int-mmol-out-of-range",
        sync("s.csv"),
        ["s.csv:2", "540.468 mg/dL", "range"],
        files={"s.csv": cgm([(OK, 30, "mmol/L")])},
    ),
    Case(
        "sync-fhir-other-patient",
        sync("b.json"),
        ["no data of patient", "'patient'"],
        files={"b.json": bundle(glucose(subject="p2"), patient=False)},
    ),
    Case(
        "sync-fhir-unknown-loinc",
        sync("b.json"),
        ["nothing twin ada can use", "0000-0"],
        files={"b.json": bundle(glucose(code="0000-0", subject="patient"), patient=False)},
    ),
    Case(
        "sync-fhir-patient-without-id",
        sync("b.json"),
        ["Patient has no id"],
        files={"b.json": bundle({"resourceType": "Patient"}, patient=False)},
    ),
    # --- twin forecast -------------------------------------------------------------------
    Case("forecast-hours-huge", forecast("--hours", "1e9"), ["1e+09 hours", "largest horizon accepted"]),
    Case("forecast-hours-nan", forecast("--hours", "nan"), ["--hours", "nan"]),
    Case("forecast-hours-inf", forecast("--hours", "inf"), ["--hours", "inf"]),
    Case("forecast-hours-zero", forecast("--hours", "0"), ["--hours", "> 0"]),
    Case("forecast-hours-negative", forecast("--hours", "-5"), ["--hours", "-5"]),
    Case("forecast-unknown-twin", forecast(twin="nobody"), ["nobody"]),
    Case(
        "forecast-out-is-folder",
        forecast("--hours", "1", "--out", "{tmp}/dir"),
        ["--out", "is a folder"],
        files={"dir/keep.txt": "x"},
    ),
    Case(
        "forecast-out-under-file",
        forecast("--hours", "1", "--out", "{tmp}/f.txt/fc.csv"),
        ["--out", "lies under the file"],
        files={"f.txt": "x"},
    ),
    Case("forecast-inputs-missing", forecast("--inputs", "{tmp}/none.csv"), ["--inputs", "none.csv"]),
    Case(
        "forecast-inputs-not-utf8",
        forecast("--inputs", "{tmp}/p.csv"),
        ["--inputs", "UTF-8"],
        files={"p.csv": b"time,input\n\xff,x\n"},
    ),
    Case(
        "forecast-inputs-missing-columns",
        forecast("--inputs", "{tmp}/p.csv"),
        ["--inputs", "'amount'"],
        files={"p.csv": "time,input\n2026-01-05T09:00:00Z,carbs\n"},
    ),
    Case(
        "forecast-inputs-no-rows",
        forecast("--inputs", "{tmp}/p.csv"),
        ["--inputs", "no dose rows"],
        files={"p.csv": PLAN.splitlines()[0] + "\n"},
    ),
    Case(
        "forecast-inputs-negative-amount",
        forecast("--inputs", "{tmp}/p.csv"),
        ["-40", "amount"],
        files={"p.csv": PLAN.replace(",40,", ",-40,")},
    ),
    Case(
        "forecast-inputs-unit-markup",
        forecast("--inputs", "{tmp}/p.csv"),
        ["[ft_i]"],
        files={"p.csv": PLAN.replace(",g\n", ",[ft_i]\n")},
    ),
    Case(
        "forecast-inputs-unknown-input",
        forecast("--inputs", "{tmp}/p.csv"),
        ["'heparin'"],
        files={"p.csv": PLAN.replace("carbs", "heparin")},
    ),
    # --- twin compare --------------------------------------------------------------------
    Case("compare-one-arm", compare("--inputs", "a={tmp}/p.csv"), ["--inputs", "two or more"], files={"p.csv": PLAN}),
    Case(
        "compare-no-equals",
        compare("--inputs", "{tmp}/p.csv", "--inputs", "b={tmp}/p.csv"),
        ["NAME=FILE"],
        files={"p.csv": PLAN},
    ),
    Case(
        "compare-same-name",
        compare("--inputs", "a={tmp}/p.csv", "--inputs", "a={tmp}/p.csv"),
        ["distinct NAME"],
        files={"p.csv": PLAN},
    ),
    Case(
        "compare-missing-file",
        compare("--inputs", "a={tmp}/p.csv", "--inputs", "b={tmp}/q.csv"),
        ["q.csv"],
        files={"p.csv": PLAN},
    ),
    Case(
        "compare-hours-nan",
        compare("--inputs", "a={tmp}/p.csv", "--inputs", "b={tmp}/p.csv", "--hours", "nan"),
        ["--hours", "nan"],
        files={"p.csv": PLAN},
    ),
    Case(
        "compare-hours-huge",
        compare("--inputs", "a={tmp}/p.csv", "--inputs", "b={tmp}/p.csv", "--hours", "1e12"),
        ["largest horizon"],
        files={"p.csv": PLAN},
    ),
    Case(
        "compare-unknown-endpoint",
        [
            "twin",
            "compare",
            "ada",
            "--endpoint",
            "[/bold]",
            "--inputs",
            "a={tmp}/p.csv",
            "--inputs",
            "b={tmp}/p.csv",
            "--db",
            "{db}",
        ],
        ["[/bold]"],
        files={"p.csv": PLAN},
    ),
    # --- twin show -----------------------------------------------------------------------
    Case("show-unknown-twin", ["twin", "show", "nobody", "--db", "{db}"], ["nobody"]),
    Case(
        "show-out-is-file",
        ["twin", "show", "ada", "--out", "{tmp}/f.txt", "--db", "{db}"],
        ["--out", "is a file"],
        files={"f.txt": "x"},
    ),
    Case(
        "show-out-under-file",
        ["twin", "show", "ada", "--out", "{tmp}/f.txt/figs", "--db", "{db}"],
        ["--out", "lies under the file", "f.txt"],
        files={"f.txt": "x"},
    ),
    # --- twin lineage --------------------------------------------------------------------
    Case(
        "lineage-version-zero",
        ["twin", "lineage", "ada", "--version", "0", "--db", "{db}"],
        ["--version must be >= 1", "0"],
    ),
    Case(
        "lineage-version-negative", ["twin", "lineage", "ada", "--version", "-1", "--db", "{db}"], ["--version", "-1"]
    ),
    Case(
        "lineage-version-unknown",
        ["twin", "lineage", "ada", "--version", "99", "--db", "{db}"],
        ["no version 99", "1 to 1"],
    ),
    Case(
        "lineage-unknown-forecast", ["twin", "lineage", "ada", "--forecast", "[/bold]", "--db", "{db}"], ["'[/bold]'"]
    ),
    Case("lineage-unknown-twin", ["twin", "lineage", "nobody", "--db", "{db}"], ["nobody"]),
    Case(
        "lineage-prov-json-folder",
        ["twin", "lineage", "ada", "--prov-json", "{tmp}/d", "--db", "{db}"],
        ["--prov-json", "is a folder"],
        files={"d/keep.txt": "x"},
    ),
    Case(
        "lineage-prov-json-under-file",
        ["twin", "lineage", "ada", "--prov-json", "{tmp}/f.txt/p.json", "--db", "{db}"],
        ["--prov-json", "lies under the file", "f.txt"],
        files={"f.txt": "x"},
    ),
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one twin, ``ada`` (t1d-uva-padova, EnKF, 16 members), made once."""
    folder = tmp_path_factory.mktemp("registry")
    (folder / "ada.csv").write_text(TWIN_CSV)
    db = folder / "twins.db"
    result = runner.invoke(
        app,
        [
            "twin",
            "create",
            "--model",
            "t1d-uva-padova",
            "--data",
            str(folder / "ada.csv"),
            "--name",
            "ada",
            "--method",
            "enkf",
            "--members",
            "16",
            "--fit",
            "Gpb,Vmx,kp3",
            "--subject",
            "patient",
            "--db",
            f"sqlite:///{db}",
        ],
    )
    assert result.exit_code == 0, result.output
    return db


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_twin_input_is_refused(case: Case, registry: Path, tmp_path: Path) -> None:
    db = tmp_path / "db" / "twins.db"
    db.parent.mkdir()
    shutil.copy(registry, db)
    check_refused(case, tmp_path / "case", db_file=db)


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_a_sync_with_nothing_new_makes_no_version_and_says_so(registry: Path, tmp_path: Path) -> None:
    db = tmp_path / "twins.db"
    shutil.copy(registry, db)
    (tmp_path / "again.csv").write_text(TWIN_CSV)
    rows = registry_rows(db)
    result = runner.invoke(
        app, ["twin", "sync", "ada", "--data", str(tmp_path / "again.csv"), "--db", f"sqlite:///{db}"]
    )
    assert result.exit_code == 0, result.output
    assert "nothing new" in result.output and "version 1 unchanged" in result.output
    assert registry_rows(db) == rows


def test_sync_counts_what_it_ignores_and_merges_identical_duplicates(registry: Path, tmp_path: Path) -> None:
    db = tmp_path / "twins.db"
    shutil.copy(registry, db)
    later = {
        "resourceType": "Observation",
        "id": "w",
        "status": "final",
        "subject": {"reference": "Patient/patient"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "effectiveDateTime": OK,
        "valueQuantity": {"value": 70, "unit": "kg", "code": "kg"},
    }
    data = bundle(
        glucose(subject="patient"),
        glucose(subject="patient"),
        glucose(subject="p2"),
        later,
        {"resourceType": "Device", "id": "d"},
        patient=False,
    )
    (tmp_path / "b.json").write_text(data)
    result = runner.invoke(app, ["twin", "sync", "ada", "--data", str(tmp_path / "b.json"), "--db", f"sqlite:///{db}"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "merged 1 identical duplicate rows" in flat
    assert "ignored 1 Device (unsupported resource type)" in flat
    assert "ignored 1 observations of body_weight (not an observable of t1d-uva-padova)" in flat
    assert "ignored 1 observations of other patients" in flat
    assert "version 2: 1 assimilated" in flat


def test_whole_number_mmol_values_are_converted() -> None:
    import pandas as pd

    from twinloop.connect import ingest

    obs = pd.DataFrame(
        {
            "subject_id": ["p"],
            "time": [OK],
            "variable": ["subcutaneous_glucose"],
            "value": [7],
            "unit": ["mmol/L"],
            "code": ["99504-3"],
        }
    )
    got = ingest((obs, pd.DataFrame(columns=["subject_id", "time", "input", "amount", "unit"])))
    assert got.observations["unit"].tolist() == ["mg/dL"]
    assert got.observations["value"].iloc[0] == pytest.approx(7 * 18.0156, rel=1e-4)


@pytest.mark.slow
def test_a_months_long_gap_is_named_as_such(registry: Path, tmp_path: Path) -> None:
    db = tmp_path / "twins.db"
    shutil.copy(registry, db)
    rows = [(f"2026-04-10T{h:02d}:{m:02d}:00Z", 130, "mg/dL") for h in range(2) for m in range(0, 60, 5)]
    case = Case(
        "sync-three-month-gap", sync("gap.csv"), ["95 days after the twin's state", "gap"], files={"gap.csv": cgm(rows)}
    )
    check_refused(case, tmp_path / "case", db_file=db)


def test_a_declared_sensor_range_is_kept_by_the_twin(tmp_path: Path) -> None:
    """A sensor reading up to 500 mg/dL: declared at creation, its readings are accepted
    when the twin is created and when it is synchronized."""
    rows = [(_stamp(5 * i), 450 if i == 40 else round(150 + 30 * math.sin(i / 12)), "mg/dL") for i in range(1, 97)]
    (tmp_path / "libre.csv").write_text(cgm(rows))
    (tmp_path / "later.csv").write_text(cgm([(OK, 480, "mg/dL")]))
    db = f"sqlite:///{tmp_path / 'twins.db'}"
    base = ["twin", "create", "--model", "t1d-uva-padova", "--data", str(tmp_path / "libre.csv"), "--name", "lee",
            "--method", "enkf", "--members", "16", "--fit", "Gpb,Vmx,kp3", "--db", db]  # fmt: skip
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "450 mg/dL" in refused.output and "--range" in refused.output
    created = runner.invoke(app, [*base, "--range", "subcutaneous_glucose=40:500"])
    assert created.exit_code == 0, created.output
    synced = runner.invoke(app, ["twin", "sync", "lee", "--data", str(tmp_path / "later.csv"), "--db", db])
    assert synced.exit_code == 0, synced.output
