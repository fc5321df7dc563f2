"""Synthetic data products: outcomes against hand-computed cases, observation
protocols against their statistical definitions, and whole products for lineage,
byte-identical reruns, resume after interruption, DuckDB and FHIR R4."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop.products import fhir
from twinloop.products.dataset import Product, file_hash, generate
from twinloop.products.lineage import lineage
from twinloop.products.outcomes import glycaemic_metrics, hypo_events, recist
from twinloop.products.protocols import ErrorModel, Missingness, ObservationProtocol, Schedule
from twinloop.products.spec import ProductSpec

T1D_SPEC: dict[str, Any] = {
    "name": "t1d-test",
    "model": "t1d-uva-padova",
    "population": "default",
    "n": 60,
    "seed": 3,
    "duration": 1440,
    "resolution": 5,
    "chunk_size": 20,
    "treatment": {"kind": "basal_bolus", "meals": [[420, 50], [720, 70], [1140, 80]]},
    "observations": [
        {"name": "cgm", "observable": "subcutaneous_glucose", "schedule": {"every": 5},
         "error": {"kind": "cgm", "sensor": "GuardianRT"}, "missing": {"mcar": 0.05}},
        {"name": "lab", "observable": "plasma_glucose", "schedule": {"visits": [0, 480, 960]}},
    ],
    "outcomes": {"kind": "glycaemic", "observable": "plasma_glucose"},
}  # fmt: skip
ONC_SPEC: dict[str, Any] = {
    "name": "onc-test",
    "model": "tgi-claret",
    "population": "default",
    "n": 80,
    "seed": 5,
    "duration": 365,
    "resolution": 1,
    "chunk_size": 40,
    "arms": {
        "chemo": {"kind": "chemotherapy", "dose_mg": 1200, "cycle_days": 21, "n_cycles": 6},
        "chemo-rt": [{"kind": "chemotherapy", "dose_mg": 1200, "cycle_days": 21, "n_cycles": 6},
                     {"kind": "radiotherapy", "start": 7, "fractions": 10, "dose_gy": 2.0}],
    },
    "observations": [{"name": "ct", "observable": "sum_of_diameters", "schedule": {"every": 42, "jitter": 7},
                      "error": {"kind": "combined", "sd": 1.0, "cv": 0.05}, "dropout": {"hazard": 0.002}}],
    "outcomes": {"kind": "recist", "observation": "ct"},
}  # fmt: skip


@pytest.fixture(scope="module")
def t1d_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("t1d") / "product"
    generate(ProductSpec.from_dict(T1D_SPEC), out, progress=False)
    return out


@pytest.fixture(scope="module")
def onc_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onc") / "product"
    generate(ProductSpec.from_dict(ONC_SPEC), out, progress=False, csv=True)
    return out


# --- outcomes ------------------------------------------------------------------
def test_glycaemic_metrics_of_a_known_day() -> None:
    times = np.arange(0, 100, 5.0)  # 20 samples
    glucose = np.array([[100.0] * 10 + [60.0] * 4 + [50.0] * 2 + [200.0] * 3 + [260.0]])
    m = glycaemic_metrics(times, glucose).iloc[0]
    assert m["time_in_range_pct"] == 50.0
    assert m["time_below_70_pct"] == 30.0 and m["time_below_54_pct"] == 10.0
    assert m["time_above_180_pct"] == 20.0 and m["time_above_250_pct"] == 5.0
    assert m["gmi_pct"] == pytest.approx(3.31 + 0.02392 * glucose.mean())
    flat = glycaemic_metrics(times, np.full((1, 20), 154.0)).iloc[0]
    assert flat["gmi_pct"] == pytest.approx(7.0, abs=0.01)  # 154 mg/dL is a GMI of about 7 %


def test_hypoglycaemic_events_need_15_minutes() -> None:
    def series(*runs: tuple[float, int]) -> np.ndarray:
        return np.concatenate([np.full(n, v) for v, n in runs])[None, :]

    assert hypo_events(series((100, 5), (60, 3), (100, 5)), 70, 5)[0] == 1  # exactly 15 min
    assert hypo_events(series((100, 5), (60, 2), (100, 5)), 70, 5)[0] == 0  # 10 min is not an event
    assert hypo_events(series((60, 3), (100, 2), (60, 3), (100, 5)), 70, 5)[0] == 1  # 10 min above: same event
    assert hypo_events(series((60, 3), (100, 3), (60, 3), (100, 5)), 70, 5)[0] == 2  # 15 min above ends it


def test_recist_best_response_and_progression_free_survival() -> None:
    days = np.tile([0.0, 42, 84, 126, 168], (5, 1))
    sld = np.array([
        [100, 80, 65, 60, 75],    # PR, then PD at 168 (75 >= 1.2*60 and +15 mm)
        [100, 95, 90, 92, 88],    # SD, censored at 168
        [100, 110, 125, 130, 140],  # SD at 42 days, PD at 84
        [100, 50, 0.5, 0.2, 0.1],  # CR
        [10, 11, 12.5, 12.9, 13],  # +25 % but only 2.5 mm over the nadir: not PD
    ])  # fmt: skip
    r = recist(days, sld)
    assert list(r["best_overall_response"]) == ["PR", "SD", "SD", "CR", "SD"]
    assert list(r["progression_event"]) == [True, False, True, False, False]
    np.testing.assert_allclose(r["pfs_days"], [168, 168, 84, 168, 168])
    early = recist(np.array([[0.0, 21, 84]]), np.array([[100, 98, 130]]))
    assert early["best_overall_response"][0] == "PD"  # SD needs 6 weeks; progression came first


# --- protocols -----------------------------------------------------------------
def test_mcar_and_mar_missingness() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 200, size=(2000, 50))
    mcar = Missingness(mcar=0.2).observed(values, rng)
    assert 1 - mcar.mean() == pytest.approx(0.2, abs=0.01)
    mar = Missingness(mar_intercept=-4.0, mar_slope=0.03).observed(values, rng)
    previous = values[:, :-1][mar[:, :-1]]
    following = mar[:, 1:][mar[:, :-1]]
    high, low = following[previous > 150], following[previous < 50]
    p_high = 1 / (1 + np.exp(-(-4 + 0.03 * 175)))  # a missing reading after a high observed value
    assert 1 - high.mean() == pytest.approx(p_high, abs=0.03)
    assert (1 - low.mean()) < 0.1 < (1 - high.mean())


def test_measurement_error_models() -> None:
    rng = np.random.default_rng(1)
    truth = np.full((200, 500), 100.0)
    times = np.arange(500) * 5.0
    additive = ErrorModel("additive", sd=3.0).apply(truth, times, rng)
    proportional = ErrorModel("proportional", cv=0.1).apply(truth, times, rng)
    assert np.std(additive - truth) == pytest.approx(3.0, rel=0.02)
    assert np.std(proportional / truth - 1) == pytest.approx(0.1, rel=0.02)
    cgm = ErrorModel("cgm", sensor="GuardianRT").apply(truth, times, rng)
    assert cgm.min() >= 39 and cgm.max() <= 400 and 1 < np.std(cgm - truth) < 30


def test_visits_with_jitter_and_dropout() -> None:
    grid = np.arange(0, 366, 1.0)
    protocol = ObservationProtocol("ct", "sum_of_diameters", Schedule(every=42, jitter=7), dropout_hazard=0.004)
    rng = np.random.default_rng(2)
    dropout = rng.exponential(1 / 0.004, 3000)
    truth = np.tile(grid, (3000, 1))
    ids = [f"p{i}" for i in range(3000)]
    table = protocol.observe(ids, grid, truth, "mm", rng, dropout)
    last = table.groupby("subject_id", observed=True)["time"].max().reindex(ids).to_numpy()
    assert np.all(last <= dropout)
    assert np.allclose(table["value"], table["time"])  # each value is the truth at its own visit time
    longest = str(np.asarray(ids)[np.argmax(last)])
    gaps = np.diff(table[table["subject_id"] == longest]["time"].to_numpy())
    assert gaps.min() >= 42 - 14 and gaps.max() <= 42 + 14
    assert (last >= 328).mean() == pytest.approx(math.exp(-0.004 * 336), abs=0.03)  # final visit (336 +- 7) seen


# --- products ------------------------------------------------------------------
def test_product_files_manifest_and_duckdb(t1d_product: Path) -> None:
    product = Product.open(t1d_product)
    manifest = product.manifest
    assert set(manifest["files"]) == {"patients.parquet", "observations.parquet", "outcomes.parquet", "doses.parquet"}
    assert product.verify() == []
    assert manifest["model"]["id"] == "t1d-uva-padova" and len(manifest["model"]["content_hash"]) == 64
    engine = manifest["engine"]  # the fast path by default, its self-check over the 3 chunks
    assert engine["paths"] == ["fast"] and engine["settings"]["path"] == "auto" and engine["check"]["passed"]
    assert engine["check"]["chunks"] == 3 and len(engine["check"]["patients"]) == 6
    assert 0 < engine["check"]["max_error"]["plasma_glucose"] < 0.1 <= engine["check"]["tolerance"]["plasma_glucose"][1]
    observations = product.table("observations")
    assert list(observations.columns) == ["subject_id", "time", "variable", "value", "unit", "code", "source"]
    assert str(observations["time"].dtype) == "datetime64[ms, UTC]"
    con = duckdb.connect()
    counts = con.execute(
        f"SELECT variable, count(*) FROM read_parquet('{t1d_product / 'observations.parquet'}') GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert dict(counts) == observations["variable"].value_counts().to_dict()
    assert counts[0][1] == manifest["files"]["observations.parquet"]["rows"] - counts[1][1]
    cgm = observations[observations["variable"] == "subcutaneous_glucose"]
    assert len(cgm) == pytest.approx(60 * 289 * 0.95, rel=0.02)  # 5 % MCAR
    assert set(cgm["code"]) == {"99504-3"} and set(cgm["unit"]) == {"mg/dL"}


def test_every_observation_traces_back_to_its_parameters(t1d_product: Path) -> None:
    product = Product.open(t1d_product)
    record = lineage(t1d_product, "vp00042")
    assert record["seeds"]["chunk"] == 2 and record["model"]["version"] == tl.models.get("t1d-uva-padova").version
    # The noise-free lab draws are the model's output for the recorded parameters and doses.
    model = tl.models.get("t1d-uva-padova")
    params = model.parameters_from({k: [v] for k, v in record["parameters"].items()})
    doses = product.table("doses", filters=[("subject_id", "==", "vp00042")])
    origin = pd.Timestamp(product.manifest["time_origin"])
    plan = tl.Inputs()
    for row in doses.to_dict("records"):
        start = (row["time"] - origin).total_seconds() / 60
        plan = plan + tl.Inputs.rate(row["input"], start, start + row["duration"], row["amount"])
    traj = tl.simulate(model, params, plan, times=np.arange(0, 1441, 5.0), progress=False)
    labs = product.table(
        "observations", filters=[("subject_id", "==", "vp00042"), ("variable", "==", "plasma_glucose")]
    )
    minutes = ((labs["time"] - origin).dt.total_seconds() / 60).to_numpy()
    expected = traj["plasma_glucose"][0][np.searchsorted(np.arange(0, 1441, 5.0), minutes)]
    np.testing.assert_allclose(labs["value"], expected, rtol=1e-6)
    outcomes = product.table("outcomes").set_index("subject_id").loc["vp00042"]
    again = glycaemic_metrics(np.arange(0, 1441, 5.0), traj["plasma_glucose"]).iloc[0]
    assert outcomes["time_in_range_pct"] == pytest.approx(again["time_in_range_pct"])


def test_same_spec_and_seed_give_byte_identical_files(t1d_product: Path, tmp_path: Path) -> None:
    generate(ProductSpec.from_dict(T1D_SPEC), tmp_path / "again", progress=False)
    first = json.loads((t1d_product / "manifest.json").read_text())["files"]
    for name, info in first.items():
        assert file_hash(tmp_path / "again" / name) == info["sha256"], name
    other = ProductSpec.from_dict({**T1D_SPEC, "seed": 4})
    generate(other, tmp_path / "other", progress=False)
    assert file_hash(tmp_path / "other" / "observations.parquet") != first["observations.parquet"]["sha256"]


def test_an_interrupted_run_resumes_to_the_same_bytes(t1d_product: Path, tmp_path: Path) -> None:
    spec = ProductSpec.from_dict(T1D_SPEC)
    out = tmp_path / "resumed"
    partial = generate(spec, out, progress=False, max_chunks=1)
    assert not partial.complete and not (out / "manifest.json").exists()
    with pytest.raises(tl.InputError, match="--resume"):
        generate(spec, out, progress=False)
    with pytest.raises(tl.InputError, match="different spec"):
        generate(ProductSpec.from_dict({**T1D_SPEC, "seed": 99}), out, progress=False, resume=True)
    done = generate(spec, out, progress=False, resume=True)
    assert done.complete and not (out / ".parts").exists()
    first = json.loads((t1d_product / "manifest.json").read_text())["files"]
    for name, info in first.items():
        assert file_hash(out / name) == info["sha256"], name


def test_bad_specs_are_refused_and_write_nothing(tmp_path: Path) -> None:
    bad = [
        ({**T1D_SPEC, "n": 0}, "'n' must be an integer >= 1"),
        ({**T1D_SPEC, "model": "nope"}, "Unknown model"),
        ({**T1D_SPEC, "outcomes": {"kind": "recist", "observation": "scan"}}, "recist"),
        ({**T1D_SPEC, "observations": [{"name": "x", "observable": "tumour", "schedule": {"every": 5}}]}, "observes"),
        ({**T1D_SPEC, "treatment": {"kind": "radiotherapy", "fractions": 5, "dose_gy": 2}}, "radiotherapy"),
        ({**T1D_SPEC, "resolution": 5000}, "resolution"),
        ({**T1D_SPEC, "solver": {"rtol": -1}}, "Tolerances must be > 0"),
        ({**T1D_SPEC, "solver": {"order": 5}}, "solver has unknown keys"),
        ({**T1D_SPEC, "solver": {"path": "quick"}}, "solver: path must be"),
    ]
    for raw, message in bad:
        with pytest.raises(tl.TwinloopError, match=message):
            generate(ProductSpec.from_dict(raw), tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def test_oncology_product_arms_recist_and_csv(onc_product: Path) -> None:
    product = Product.open(onc_product)
    outcomes = product.table("outcomes")
    assert set(outcomes["arm"]) == {"chemo", "chemo-rt"}
    assert set(outcomes["best_overall_response"]) <= {"CR", "PR", "SD", "PD", "NE"}
    by_arm = outcomes.groupby("arm")["best_change_pct"].median()
    assert by_arm["chemo-rt"] < by_arm["chemo"]  # radiotherapy adds shrinkage
    csv = pd.read_csv(onc_product / "outcomes.csv")
    assert len(csv) == 80 and "outcomes.csv" in product.manifest["files"]
    doses = product.table("doses")
    rt = doses[doses["input"] == "radiotherapy"]
    assert set(rt["subject_id"]) == set(outcomes.loc[outcomes["arm"] == "chemo-rt", "subject_id"])


def test_fhir_bundles_parse_as_r4(onc_product: Path, t1d_product: Path, tmp_path: Path) -> None:
    written = fhir.export(onc_product, tmp_path / "onc", limit=6)
    written += fhir.export(t1d_product, tmp_path / "t1d", patients=["vp00001"])
    kinds: set[str] = set()
    for path in written:
        bundle = fhir.validate(json.loads(path.read_text()))
        for entry in bundle.entry:
            resource = entry.resource
            kinds.add(resource.__resource_type__)
            assert resource.meta.tag[0].code == "synthetic"
    assert {"Patient", "Observation", "MedicationAdministration", "Procedure", "Provenance"} <= kinds
    bundle = json.loads(written[-1].read_text())
    obs = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
    assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    with pytest.raises(tl.InputError, match="not in product"):
        fhir.export(onc_product, tmp_path / "x", patients=["nobody"])


def test_fhir_validation_rejects_a_broken_bundle(onc_product: Path, tmp_path: Path) -> None:
    path = fhir.export(onc_product, tmp_path, limit=1)[0]
    bundle = json.loads(path.read_text())
    observation = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    observation["valueQuantity"]["value"] = "about ninety"
    with pytest.raises(ValueError, match="value"):
        fhir.validate(bundle)
    del observation["valueQuantity"]
    del observation["status"]  # required (1..1) in R4
    with pytest.raises(ValueError, match="status"):
        fhir.validate(bundle)


def test_opening_a_non_product_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(tl.InputError, match=r"no manifest\.json"):
        Product.open(tmp_path)
    shutil.rmtree(tmp_path)


def test_a_killed_run_resumes_to_the_same_bytes(t1d_product: Path, tmp_path: Path) -> None:
    """SIGKILL the generating process after its first chunk; --resume completes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(T1D_SPEC))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "twinloop.cli.app", "cohort", "generate", str(spec_path), "--out", str(out)]
    env = {**os.environ, "TERM": "dumb"}
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((out / ".parts").glob("*.done")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be interrupted"
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    first = json.loads((t1d_product / "manifest.json").read_text())["files"]
    for name, info in first.items():
        assert file_hash(out / name) == info["sha256"], name
