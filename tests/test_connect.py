"""Data connection: FHIR (Synthea bulk export, our own bundles), CSV and CGM readers,
UCUM conversion, code mapping, duplicates, ordering, all-or-nothing rejection."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop.connect import CodeMap, convert, ingest, read_fhir, validate_observations
from twinloop.products import fhir
from twinloop.products.dataset import Product, generate
from twinloop.products.spec import ProductSpec

# A copy of the shared Synthea sample (Apache-2.0, LICENSE beside it), so a clean clone has it.
SYNTHEA = Path(__file__).parent / "data" / "synthea-10-patients"


@pytest.fixture(scope="module")
def synthea() -> tl.connect.FhirRecords:
    return read_fhir(SYNTHEA)


def test_synthea_bulk_export_parses_and_maps_every_resource(synthea: tl.connect.FhirRecords) -> None:
    # The counts are those of the files (one resource per line), independently counted here.
    lines = {p.name.split(".")[0]: len(p.read_text().splitlines()) for p in SYNTHEA.glob("*.ndjson")}
    assert synthea.rejected == []
    assert synthea.counts == {k: lines[k] for k in ("Patient", "Condition", "MedicationRequest", "Procedure")}
    assert synthea.ignored == {k: lines[k] for k in ("AllergyIntolerance", "Device", "Immunization")}
    assert len(synthea.patients) == 13 and synthea.patients["subject_id"].is_unique
    assert set(synthea.patients["sex"]) <= {"male", "female"}
    assert synthea.patients["birth_date"].str.match(r"\d{4}-\d{2}-\d{2}").all()
    # every condition, order and procedure belongs to a known patient
    known = set(synthea.patients["subject_id"])
    for table in (synthea.conditions, synthea.medications, synthea.procedures):
        assert set(table["subject_id"]) <= known
    diabetes = synthea.conditions[synthea.conditions["code"] == "44054006"]  # SNOMED type 2 diabetes
    assert len(diabetes) >= 1 and (diabetes["system"] == "http://snomed.info/sct").all()
    cancer = synthea.conditions[synthea.conditions["display"].str.contains("lung cancer", case=False)]
    assert len(cancer) >= 1
    insulin = synthea.medications[synthea.medications["input"] == "insulin"]
    assert len(insulin) > 0 and insulin["display"].str.contains("insulin", case=False).all()
    assert (synthea.medications["kind"] == "request").all()
    assert pd.to_datetime(synthea.procedures["start"], utc=True, format="mixed").notna().all()


def test_a_broken_resource_is_rejected_with_its_reason(tmp_path: Path) -> None:
    good = SYNTHEA / "Patient.000.ndjson"
    lines = good.read_text().splitlines()[:2]
    broken = json.loads(lines[1])
    broken["gender"] = 42  # not a code
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Patient.000.ndjson").write_text("\n".join([lines[0], json.dumps(broken), "{not json"]) + "\n")
    records = read_fhir(folder)
    assert len(records.patients) == 1
    reasons = [r.reason for r in records.rejected]
    assert any("gender" in r for r in reasons) and any("not valid JSON" in r for r in reasons)
    with pytest.raises(tl.DataError, match="2 record\\(s\\) rejected, nothing ingested") as info:
        ingest(folder)
    assert len(info.value.rejected) == 2


def test_our_fhir_bundles_read_back_to_the_product_tables(tmp_path: Path) -> None:
    spec = {
        "model": "t1d-uva-padova",
        "population": "default",
        "n": 2,
        "seed": 3,
        "duration": 1440,
        "treatment": {"kind": "basal_bolus", "meals": [[420, 50], [720, 70]]},
        "observations": [
            {
                "name": "cgm",
                "observable": "subcutaneous_glucose",
                "schedule": {"every": 60},
                "error": {"kind": "additive", "sd": 5.0},
            }
        ],
    }
    out = tmp_path / "product"
    generate(ProductSpec.from_dict(spec), out, progress=False)
    product = Product.open(out)
    bundle = fhir.export(out, tmp_path / "fhir", patients=["vp00001"])[0]
    data = ingest(bundle)
    expected = product.table("observations")
    expected = expected[expected["subject_id"] == "vp00001"]
    assert len(data.observations) == len(expected)
    assert (data.observations["variable"] == "subcutaneous_glucose").all()
    np.testing.assert_allclose(data.observations["value"], expected["value"].to_numpy(), rtol=1e-6)
    assert data.observations["time"].tolist() == pd.to_datetime(expected["time"], utc=True).tolist()
    insulin = data.doses[data.doses["input"] == "insulin"]
    assert len(insulin) > 0 and (insulin["unit"] == "U").all()


def test_ucum_conversions_match_the_published_factors() -> None:
    # glucose: 1 mmol/L = 18.0156 mg/dL (molar mass 180.156 g/mol)
    np.testing.assert_allclose(convert([5.5, 10.0], "mmol/L", "mg/dL", "plasma_glucose"), [99.0858, 180.156])
    np.testing.assert_allclose(convert([99.0858], "mg/dL", "mmol/L", "glucose"), [5.5])
    np.testing.assert_allclose(convert([12.0, 3.0], "mm", "cm"), [1.2, 0.3])
    np.testing.assert_allclose(convert([154.0], "[lb_av]", "kg"), [69.853], rtol=1e-5)
    np.testing.assert_allclose(convert([1.2], "U/h", "U/min"), [0.02])
    with pytest.raises(tl.InputError, match="Cannot convert"):
        convert([1.0], "mmol/L", "mg/dL", "sum_of_diameters")  # no molar mass for a length
    with pytest.raises(tl.InputError, match="not a UCUM unit"):
        convert([1.0], "zorkmid/dL", "mg/dL")


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["subject_id", "time", "variable", "value", "unit", "code", "source"])


def test_harmonize_maps_codes_converts_units_drops_duplicates_and_sorts() -> None:
    obs = _frame(
        [
            ("p1", "2026-01-05T10:00:00Z", "Glucose", 6.0, "mmol/L", "15074-8", "lab"),
            ("p1", "2026-01-05T08:00:00Z", "Glucose", 108.0, "mg/dL", "2339-0", "lab"),  # out of order
            ("p1", "2026-01-05T08:00:00Z", "Glucose", 108.0, "mg/dL", "2339-0", "lab"),  # exact duplicate
            ("p1", "2026-01-05T09:00:00+01:00", "tumour", 3.1, "cm", "21889-1", "ct"),  # offset -> UTC
        ]
    )
    data = ingest((obs, pd.DataFrame(columns=tl.connect.DOSE_COLUMNS)))
    assert data.duplicates == 1
    assert data.observations["time"].is_monotonic_increasing
    first, second, third = data.observations.to_dict("records")
    assert first["variable"] == "plasma_glucose" and first["value"] == pytest.approx(108.0)
    assert second["variable"] == "sum_of_diameters" and second["value"] == pytest.approx(31.0)
    assert second["time"] == pd.Timestamp("2026-01-05T08:00:00Z")
    assert third["value"] == pytest.approx(6.0 * 18.0156) and third["unit"] == "mg/dL"


def test_bad_records_are_all_listed_and_nothing_is_ingested() -> None:
    obs = _frame(
        [
            ("p1", "2026-01-05T08:00:00Z", "plasma_glucose", 100.0, "mg/dL", "", "a"),
            ("p1", "yesterday-ish", "plasma_glucose", 100.0, "mg/dL", "", "b"),
            ("", "2026-01-05T08:00:00Z", "plasma_glucose", 100.0, "mg/dL", "", "c"),
            ("p1", "2026-01-05T09:00:00Z", "plasma_glucose", "high", "mg/dL", "", "d"),
            ("p1", "2026-01-05T09:00:00Z", "plasma_glucose", 5.0, "parsecs", "", "e"),
        ]
    )
    with pytest.raises(tl.DataError, match="4 record\\(s\\) rejected") as info:
        ingest((obs, pd.DataFrame(columns=tl.connect.DOSE_COLUMNS)))
    reasons = {r["source"]: r["reason"] for r in info.value.rejected}
    assert "timestamp" in reasons["b"] and "subject_id" in reasons["c"]
    assert "finite number" in reasons["d"] and "Cannot convert" in reasons["e"]
    loose = ingest((obs, pd.DataFrame(columns=tl.connect.DOSE_COLUMNS)), strict=False)
    assert len(loose.observations) == 1 and len(loose.rejected) == 4
    accepted, rejected = validate_observations(obs.iloc[:1])
    assert len(accepted) == 1 and rejected == []


def test_csv_with_a_column_map_and_a_cgm_export(tmp_path: Path) -> None:
    table = tmp_path / "labs.csv"
    table.write_text("patient,when,glu,bolus,basal\np9,2026-01-05 08:00,5.0,2,0.6\np9,2026-01-05 08:05,5.5,,0.6\n")
    columns = {
        "subject_id": {"column": "patient"},
        "time": {"column": "when", "timezone": "Europe/Paris"},
        "observations": [{"column": "glu", "variable": "subcutaneous_glucose", "unit": "mmol/L"}],
        "doses": [
            {"column": "bolus", "input": "insulin", "unit": "U"},
            {"column": "basal", "input": "insulin", "kind": "rate", "unit": "U/h"},
        ],
    }
    data = ingest(table, columns=columns)
    assert data.observations["time"].iloc[0] == pd.Timestamp("2026-01-05T07:00:00Z")  # Paris is UTC+1 in January
    np.testing.assert_allclose(data.observations["value"], [90.078, 99.0858])
    rates = data.doses[data.doses["kind"] == "rate"]
    assert len(rates) == 2 and rates["duration"].tolist() == [5.0, 5.0]
    assert len(data.doses[data.doses["kind"] == "bolus"]) == 1
    cgm = tmp_path / "cgm.csv"
    cgm.write_text(
        "Timestamp,Glucose,Unit,Carbs\n2026-01-05T08:00:00Z,120,mg/dL,\n2026-01-05T08:05:00Z,6.1,mmol/L,45\n"
    )
    data = ingest(cgm, subject_id="p9", units={"subcutaneous_glucose": "mg/dL"})
    np.testing.assert_allclose(data.observations["value"], [120.0, 6.1 * 18.0156])
    assert data.doses["input"].tolist() == ["carbs"] and data.doses["amount"].tolist() == [45.0]
    with pytest.raises(tl.DataError, match="column 'nope' is not in the file"):
        ingest(
            table,
            columns={"time": {"column": "nope"}, "observations": [{"column": "glu", "variable": "x", "unit": "mg/dL"}]},
        )


def test_dates_offsets_and_fractions_are_times_while_bare_numbers_are_not(tmp_path: Path) -> None:
    """A date alone (FHIR allows it), a month, an offset and fractional seconds are read; a
    bare number (a count from an unstated epoch) is refused with its row."""
    cgm = tmp_path / "cgm.csv"
    for times, expected in [
        (
            ["2026-01-05", "2026-02", "2026-01-05 09:00:00.250"],
            ["2026-01-05T00:00Z", "2026-02-01T00:00Z", "2026-01-05T09:00:00.25Z"],
        ),
        (
            ["2026-01-05T08:00:00+05:00", "2026-01-05T09:00:00.250Z"],
            ["2026-01-05T03:00:00Z", "2026-01-05T09:00:00.25Z"],
        ),
    ]:
        cgm.write_text("Timestamp,Glucose,Unit\n" + "".join(f"{t},{100 + i},mg/dL\n" for i, t in enumerate(times)))
        data = ingest(cgm, subject_id="p9")
        assert sorted(data.observations["time"]) == sorted(pd.Timestamp(t) for t in expected)
    cgm.write_text("Timestamp,Glucose,Unit\n2026-01-05 08:00,120,mg/dL\n1767600000,121,mg/dL\n")
    with pytest.raises(tl.DataError) as refused:
        ingest(cgm, subject_id="p9")
    assert [r["source"] for r in refused.value.rejected] == ["cgm.csv:3"]  # the bare number's row, and only it


def test_a_basal_rate_recorded_only_when_it_changes_holds_until_the_next_one(tmp_path: Path) -> None:
    # a pump export writes the basal rate (U/h) only when it changes: 1.2 U/h from 00:00, 0.8 U/h
    # from 01:00 to the end of the record at 03:00 -> 1.2 + 1.6 = 2.8 U, not 0.2 U
    export = tmp_path / "pump.csv"
    export.write_text(
        "timestamp,glucose,unit,bolus,carbs,basal\n"
        "2026-01-05T00:00:00Z,120,mg/dL,,,1.2\n2026-01-05T00:05:00Z,121,mg/dL,,,\n"
        "2026-01-05T00:10:00Z,122,mg/dL,2,30,\n2026-01-05T00:15:00Z,125,mg/dL,,,\n"
        "2026-01-05T01:00:00Z,140,mg/dL,,,0.8\n2026-01-05T03:00:00Z,130,mg/dL,,,\n"
    )
    with pytest.warns(tl.errors.DataWarning, match=r"value on 2 of 6 rows \(file rows 2, 6\).*2\.8 U in all"):
        data = ingest(export, subject_id="p1")
    basal = data.doses[data.doses["kind"] == "rate"].sort_values("time")
    assert basal["duration"].tolist() == [60.0, 120.0]
    delivered = float((basal["amount"].astype(float) * basal["duration"] / 60.0).sum())
    assert delivered == pytest.approx(2.8)
    full = tmp_path / "full.csv"  # a rate on every row: no warning, each held to the next row
    full.write_text(
        "timestamp,glucose,unit,basal\n2026-01-05T00:00:00Z,120,mg/dL,1.0\n2026-01-05T00:30:00Z,121,mg/dL,1.0\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", tl.errors.DataWarning)
        assert ingest(full, subject_id="p1").doses["duration"].tolist() == [30.0, 30.0]


def test_code_map_extension_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "codes.yaml"
    path.write_text(
        "codes:\n  - {code: '9999-9', variable: plasma_glucose, unit: mg/dL}\nunits: {sum_of_diameters: cm}\n"
    )
    codes = CodeMap.from_yaml(path)
    assert codes.variable_of("9999-9") == "plasma_glucose" and codes.unit_of("sum_of_diameters") == "cm"
    assert codes.variable_of("2345-7") == "plasma_glucose"  # the defaults remain


def test_model_time_of_nanoseconds_is_pandas_bit_for_bit() -> None:
    """The sync's conversion of UTC nanoseconds equals the pandas one exactly, within and
    beyond 2**53 ns (~104 days) of the origin, for every time unit."""
    from twinloop.connect.timebase import ns_to_model_time, to_model_time

    rng = np.random.default_rng(0)
    for origin in (pd.Timestamp("2026-01-05", tz="UTC"), pd.Timestamp("2026-01-05T03:17:11.123456789Z")):
        base = origin.as_unit("ns").value
        for span in (10**9, 10**15, 10**17, 10**19 // 4):
            ns = base + rng.integers(-span, span, 2000)
            ns[:200] = base + rng.integers(-span // 10**9, span // 10**9, 200) * 10**9 + rng.integers(1, 9, 200)
            for unit in ("s", "min", "h", "d"):
                want = to_model_time(pd.DatetimeIndex(ns, tz="UTC"), origin, unit)
                np.testing.assert_array_equal(ns_to_model_time(ns, origin, unit), want, strict=True)
