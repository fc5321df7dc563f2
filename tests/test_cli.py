"""The ``twinloop`` command through Typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prov.model import ProvDocument
from typer.testing import CliRunner

from twinloop.cli.app import app
from twinloop.govern.lineage import walk, walk_document
from twinloop.store import TwinRegistry
from twinloop.twin.registered import RegisteredTwins

runner = CliRunner()


def write_inputs(path: Path, rows: str) -> Path:
    path.write_text("minute,insulin_U_per_min,carbs_g\n" + rows)
    return path


@pytest.fixture
def inputs_csv(tmp_path: Path) -> Path:
    minutes = np.arange(0, 241)
    insulin = np.full(minutes.size, 0.02)
    carbs = np.zeros(minutes.size)
    carbs[60] = 45
    insulin[60] += 4.5  # a 4.5 U bolus over one minute
    frame = pd.DataFrame({"minute": minutes, "insulin_U_per_min": insulin, "carbs_g": carbs})
    frame.to_csv(tmp_path / "inputs.csv", index=False)
    return tmp_path / "inputs.csv"


def test_models_lists_and_shows(t1d, monkeypatch):
    import twinloop.cli.models as cli_models

    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and "t1d-uva-padova" in listed.output and "pk-one-compartment" in listed.output
    # wide enough that no unit wraps (the console's width is fixed when it is made, whatever COLUMNS says later)
    monkeypatch.setattr(cli_models.console, "_width", 200)
    shown = runner.invoke(app, ["models", "show", "t1d-uva-padova"])
    assert shown.exit_code == 0
    for text in ("glucose_plasma", "mg/kg", "Vmx", "mg.L/(kg.min.pmol)", "Dalla Man", "adult#001", "U/min"):
        assert text in shown.output


def test_simulate_one_patient_to_csv(t1d, inputs_csv, tmp_path):
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["simulate", "--patient", "adult#002", "--inputs", str(inputs_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame.columns[:3]) == ["minute", "plasma_glucose_mg_dl", "subcutaneous_glucose_mg_dl"]
    np.testing.assert_array_equal(frame["minute"], np.arange(0, 241))
    p = t1d.param_map(t1d.preset("adult#002"))
    assert frame["plasma_glucose_mg_dl"].iloc[0] == pytest.approx(p["Gpb"] / p["Vg"], rel=1e-9)
    assert frame["plasma_glucose_mg_dl"].max() > frame["plasma_glucose_mg_dl"].iloc[0] + 20


def test_simulate_all_patients_to_parquet(inputs_csv, tmp_path):
    out = tmp_path / "all.parquet"
    result = runner.invoke(app, ["simulate", "--patient", "all", "--inputs", str(inputs_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame["patient"].nunique() == 30 and len(frame) == 30 * 241
    assert {"minute", "plasma_glucose_mg_dl", "subcutaneous_glucose_mg_dl"} <= set(frame.columns)


@pytest.mark.parametrize(
    ("args", "rows", "message"),
    [
        (["--patient", "adult#099"], "0,0.02,0\n10,0.02,\n", "Unknown patient 'adult#099'"),
        (["--model", "no-such-model"], "0,0.02,0\n10,0.02,\n", "Unknown model 'no-such-model'"),
        ([], "0,-0.5,0\n10,0.02,\n", "insulin_U_per_min row 1 is -0.5; it must be >= 0"),
        ([], "0,0.02,0\n10,0.02,0\n5,0.02,\n", "strictly increasing; row 3 has minute 5 after 10"),
        ([], "0,0.02,0\n10,,0\n20,0.02,\n", "insulin_U_per_min row 2 is empty"),
        ([], "0,abc,0\n10,0.02,\n", "insulin_U_per_min row 1: 'abc' is not a number"),
        ([], "", "at least two rows"),
    ],
)
def test_bad_input_gives_one_line_and_no_file(tmp_path, args, rows, message):
    inputs = write_inputs(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["simulate", "--inputs", str(inputs), "--out", str(out), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [inputs]


def test_misnamed_column_and_empty_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("minute,insulin,carbs_g\n0,0.02,0\n10,0.02,\n")
    result = runner.invoke(app, ["simulate", "--inputs", str(bad), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "lacks the column(s) insulin_U_per_min" in " ".join(result.output.split())
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = runner.invoke(app, ["simulate", "--inputs", str(empty), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "is empty" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_cohort_generate_describe_lineage_and_fhir(tmp_path: Path) -> None:
    import yaml

    spec = yaml.safe_load(Path("examples/nsclc_two_schedules.yaml").read_text())
    spec.update({"n": 40, "chunk_size": 20})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "product"
    made = runner.invoke(app, ["cohort", "generate", str(path), "--out", str(out), "--max-chunks", "1"])
    assert made.exit_code == 0 and "1 of 2 chunks" in made.output
    again = runner.invoke(app, ["cohort", "generate", str(path), "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
    done = runner.invoke(app, ["cohort", "generate", str(path), "--out", str(out), "--resume"])
    assert done.exit_code == 0 and "wrote 40 patients" in done.output
    described = runner.invoke(app, ["cohort", "describe", str(out)], env={"COLUMNS": "200"})
    assert described.exit_code == 0
    for text in ("40 patients", "best_overall_response", "acceptance rate", "weight", "sum_of_diameters"):
        assert text in described.output
    traced = runner.invoke(app, ["lineage", str(out), "--patient", "vp00007"])
    assert traced.exit_code == 0 and '"KL"' in traced.output and '"population_seed"' in traced.output
    missing = runner.invoke(app, ["lineage", str(out), "--patient", "vp99999"])
    assert missing.exit_code == 2 and "not in product" in missing.output
    bundles = runner.invoke(app, ["cohort", "fhir", str(out), "--out", str(tmp_path / "fhir"), "--limit", "3"])
    assert bundles.exit_code == 0 and len(list((tmp_path / "fhir").glob("*.json"))) == 3


def test_cohort_generate_reports_bad_specs(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: tgi-claret\nn: 10\nduration: 100\nobservations: [{name: ct}]\n")
    result = runner.invoke(app, ["cohort", "generate", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "observations[0] needs 'observable'" in result.output
    assert not (tmp_path / "out").exists()
    absent = runner.invoke(app, ["cohort", "generate", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")])
    assert absent.exit_code == 2 and "does not exist" in absent.output


def test_demo_writes_its_page_and_both_products(tmp_path: Path) -> None:
    from rich.console import Console

    from twinloop.cli.demo import run_demo

    summary = run_demo(
        tmp_path,
        cohort_size=50,
        seed=0,
        console=Console(quiet=True),
        product_scale=0.02,
        twin_members=100,
        control_patients=12,
        trial_scale=0.019,
        trial_replicates=5,
        t1d_trial=False,
    )
    page = (tmp_path / "index.html").read_text()
    for text in ("Synthetic data products", "time in range", "Best overall response", "Progression-free survival"):
        assert text.lower() in page.lower()
    assert (tmp_path / "t1d-product" / "manifest.json").exists() and (
        tmp_path / "nsclc-product" / "manifest.json"
    ).exists()
    assert set(summary["products"]) == {"t1d", "nsclc"}  # type: ignore[arg-type]
    # the T1D sections run closed-loop: rescue carbohydrate, nobody near 0 mg/dL, doses from the pump
    loop: dict = summary["closed_loop"]  # type: ignore[assignment]
    assert "closed-loop" in page and loop["cohort"]["min_glucose_mg_dl"] > 5
    assert loop["controller"]["name"] == "basal-bolus" and loop["scenario"]["rescue"]["grams"] == 15
    manifest = json.loads((tmp_path / "t1d-product" / "manifest.json").read_text())
    assert manifest["spec"]["control"]["controller"] == "basal-bolus"
    # PID against MPC on a cohort, with the CVGA; the evaluation written beside the page
    compared: dict = summary["controllers"]  # type: ignore[assignment]
    assert "Controllers compared" in page and "Control-variability grid" in page
    assert set(compared["cvga_zones"]) == {"pid", "mpc"} and sum(compared["cvga_zones"]["mpc"].values()) == 12
    assert (tmp_path / "control" / "report.html").exists() and (tmp_path / "control" / "manifest.json").exists()
    # the oncology trial and its power curve, each written beside the page with its own report
    trials: dict = summary["trials"]  # type: ignore[assignment]
    assert "In-silico trials" in page and "<h4>Participant flow (CONSORT)</h4>" in page and "<h4>Subgroups</h4>" in page
    assert trials["nsclc"]["randomized"] == 40
    assert trials["nsclc"]["figures"] == ["consort", "effects", "km:pfs", "forest"]
    assert trials["nsclc-power"]["figures"] == ["consort", "effects", "power"] and "Power by simulation" in page
    for folder in ("nsclc", "nsclc-power"):
        assert (tmp_path / "trials" / folder / "report.html").exists() and f"trials/{folder}/report.html" in page
    # the AI section: an amortized posterior with its SBC plot, and a TSTR result
    assert "Simulation-based calibration" in page and "TSTR AUROC" in page
    learn = tmp_path / "learn"
    for artifact in ("npe-tgi-stein/npe/manifest.json", "npe-tgi-stein/sbc.html", "responder/MODEL_CARD.md",
                     "responder/predictor.pkl", "responder/reliability.html"):  # fmt: skip
        assert (learn / artifact).exists(), artifact
    # the governance report of the demo's own outputs, every section filled
    report = json.loads((tmp_path / "governance" / "report.json").read_text())
    assert set(report) >= {"core", "product", "ai", "clinical"} and "Governance" in page
    assert report["core"]["verification"]["passed"] and report["core"]["validation"][0]["passed"]
    assert 0.0 <= report["product"]["fidelity"]["detection"]["auc"] <= 1.0 and "privacy" in report["product"]
    assert report["ai"]["subgroups"]["sex"]["groups"] and report["ai"]["drift_windows"]
    assert report["clinical"]["audit_log"] and report["clinical"]["checklist"]
    assert (tmp_path / "governance" / "report.html").stat().st_size > 10_000
    # the report's PROV names the twin's current version, whose own graph is beside the registry
    twin_sources = [n for n in walk(tmp_path / "governance", [tmp_path]).inputs if n.kind == "twin-version"]
    current = TwinRegistry(f"sqlite:///{tmp_path / 'twins.db'}").version_identity("demo-t1d")
    assert [(n.label, n.id) for n in twin_sources] == [("demo-t1d v6", f"urn:sha256:{current}")]
    # the twin was identified by the default path and beat "repeat yesterday" on the held-out day
    twin = summary["twin"]  # type: ignore[index]
    assert twin["identification"]["method"] == "laplace"
    check = twin["day_ahead_check"]
    assert check["readings"] == 288 and check["twin_rmse_truth"] < 0.5 * check["repeat_rmse_truth"], check
    assert "repeat yesterday" in page
    twin_doc = ProvDocument.deserialize(source=str(tmp_path / "twin-prov.json"), format="json")
    assert walk_document(twin_doc, f"urn:sha256:{current}").activity["type"] == "twin-sync"
    tstr = summary["learn"]["tstr"]  # type: ignore[index]
    assert 0.0 <= tstr["auroc_real"] <= 1.0 and tstr["brier_real"] < 0.5
    # the same predictor through the command line
    result = runner.invoke(app, ["learn", "predictor", str(tmp_path / "nsclc-product"), "--real",
                                 str(learn / "nsclc-real-like"), "--out", str(tmp_path / "cli-predictor")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "auroc_real" in (tmp_path / "cli-predictor" / "MODEL_CARD.md").read_text()
    wrong = runner.invoke(app, ["learn", "predictor", str(tmp_path / "nsclc-product"), "--task", "nocturnal-hypo",
                                "--out", str(tmp_path / "wrong")])  # fmt: skip
    assert wrong.exit_code == 2 and "subcutaneous_glucose" in wrong.output


# --- learn commands -----------------------------------------------------------------
def test_learn_posterior_and_surrogate_write_artifacts_with_manifests(tmp_path: Path) -> None:
    import json

    from twinloop.calibrate import AmortizedPosterior
    from twinloop.learn import Surrogate

    spec = "examples/learn/npe_tgi_stein.yaml"
    result = runner.invoke(app, ["learn", "posterior", spec, "--out", str(tmp_path / "npe"),
                                 "--simulations", "1500", "--epochs", "5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    npe = AmortizedPosterior.load(tmp_path / "npe" / "npe")
    assert npe.manifest_["simulation_budget"]["requested"] == 1500 and npe.manifest_["epochs"][0] <= 5
    sbc = json.loads((tmp_path / "npe" / "sbc.json").read_text())
    assert set(sbc["ks_pvalues"]) == {"y0", "g", "d"} and len(sbc["ranks"]) == 300
    assert "sbc_ks_p[g]" in (tmp_path / "npe" / "MODEL_CARD.md").read_text()

    result = runner.invoke(app, ["learn", "surrogate", "examples/learn/surrogate_tgi_stein.yaml",
                                 "--out", str(tmp_path / "sur"), "--simulations", "800", "--steps", "400"])  # fmt: skip
    assert result.exit_code == 0, result.output
    sur = Surrogate.load(tmp_path / "sur")
    assert sur.outputs == ("log_sum_of_diameters_t91", "log_sum_of_diameters_t182", "log_sum_of_diameters_t364")
    assert sur.training_["model"]["id"] == "tgi-stein" and sur.speedup_ is not None
    assert all(a["r2"] > 0.9 for a in sur.accuracy_.values()), sur.accuracy_

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tgi-stein\nparameters: [y0, nonsense]\ndesign: {observable: sum_of_diameters, times: [1]}\n")
    refused = runner.invoke(app, ["learn", "posterior", str(bad), "--out", str(tmp_path / "never")])
    assert refused.exit_code == 2 and "nonsense" in refused.output and not (tmp_path / "never").exists()


def test_learn_closure_trains_a_hybrid_model_that_loads_again(tmp_path: Path) -> None:
    from twinloop.learn.jobs import load_hybrid

    result = runner.invoke(app, ["learn", "closure", "examples/learn/closure_claret_resistance.yaml",
                                 "--out", str(tmp_path / "closure"), "--steps", "15"])  # fmt: skip
    assert result.exit_code == 0, result.output
    model = load_hybrid(tmp_path / "closure")
    assert model.id == "tgi-claret+resistance" and (tmp_path / "closure" / "closure.html").exists()
    import json

    manifest = json.loads((tmp_path / "closure" / "manifest.json").read_text())
    assert manifest["data"]["subjects"] == 16 and manifest["loss"]["last"] < manifest["loss"]["first"]
    assert model.version.endswith(manifest["digest"])


# --- twin commands ------------------------------------------------------------------
def _t1d_files(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A 2-day CGM + pump export of one synthetic patient, split in two files, and two dose plans."""
    import twinloop as tl
    from twinloop.calibrate import NoiseModel
    from twinloop.models import t1d_uva_padova as t1d
    from twinloop.twin import synthetic_record

    model = tl.models.get("t1d-uva-padova")
    p = model.preset("adult#002")
    meals = [(d * 1440 + t, g) for d in range(2) for t, g in [(420, 50), (720, 70), (1140, 80)]]
    plan = t1d.basal_bolus(model.param_map(p), meals, t_end=2880.0)
    obs, doses, _ = synthetic_record(model, p, plan, np.arange(5.0, 2881.0, 5.0), observable="subcutaneous_glucose",
                                     noise=NoiseModel(8.0, 0.05), seed=4)  # fmt: skip
    export = pd.DataFrame({"timestamp": obs["time"], "glucose": (obs["value"] / 18.0156).round(2), "unit": "mmol/L"})
    bolus = doses[(doses["input"] == "insulin") & (doses["duration"] == 1.0)]
    export["bolus"] = export["timestamp"].map(dict(zip(bolus["time"] + pd.Timedelta(minutes=5), bolus["amount"],
                                                        strict=True)))  # fmt: skip
    carbs = doses[doses["input"] == "carbs"].groupby("time")["amount"].sum()  # g/min for 10 min per meal
    export["carbs"] = export["timestamp"].map({t + pd.Timedelta(minutes=5): 10 * a for t, a in carbs.items()})
    export["basal"] = float(doses[doses["duration"] > 100]["amount"].iloc[0]) * 60.0  # U/h
    first, second = tmp_path / "day1.csv", tmp_path / "day2.csv"
    export.iloc[:288].to_csv(first, index=False)
    export.iloc[288:].to_csv(second, index=False)
    now = export["timestamp"].iloc[-1]
    plans = []
    for name, scale in (("usual", 1.0), ("more", 1.4)):
        rows = [{"time": now + pd.Timedelta(hours=h), "input": "carbs", "kind": "bolus", "amount": g, "duration": 0,
                 "unit": "g"} for h, g in ((1, 60), (6, 70))]  # fmt: skip
        rows += [{"time": now + pd.Timedelta(hours=h), "input": "insulin", "kind": "bolus",
                  "amount": scale * g / 12.0, "duration": 1, "unit": "U"} for h, g in ((1, 60), (6, 70))]  # fmt: skip
        rows.append({"time": now, "input": "insulin", "kind": "rate", "amount": export["basal"].iloc[0],
                     "duration": 720, "unit": "U/h"})  # fmt: skip
        path = tmp_path / f"{name}.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        plans.append(path)
    return first, second, plans[0], plans[1]


def test_twin_commands_create_sync_forecast_compare_show(tmp_path: Path) -> None:
    day1, day2, usual, more = _t1d_files(tmp_path)
    db = ["--db", f"sqlite:///{tmp_path / 'twins.db'}"]
    result = runner.invoke(app, ["twin", "create", "--model", "t1d-uva-padova", "--data", str(day1), "--name", "ada",
                                 "--method", "enkf", "--members", "100", "--set", "BW=78", "--fit", "Gpb,Vmx,kp3,kabs",
                                 *db])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "created twin ada" in result.output
    assert "identified parameters" in result.output and "kabs" in result.output and "last NIS" in result.output
    assert RegisteredTwins(TwinRegistry(db[1])).load("ada").pmap.base[0] == 78.0  # BW, known, not fitted
    for bad, message in ((["--set", "BW"], "NAME=VALUE"), (["--set", "BW=900"], r"outside its bounds"),
                         (["--set", "Vm0=3"], "not a free parameter"), (["--fit", "BW", "--set", "BW=70"],
                                                                         "both known and fitted")):  # fmt: skip
        failed = runner.invoke(app, ["twin", "create", "--model", "t1d-uva-padova", "--data", str(day1), "--name",
                                     "bob", *bad, *db])  # fmt: skip
        assert failed.exit_code == 2 and re.search(message, failed.output), (bad, failed.output)
    again = runner.invoke(app, ["twin", "create", "--model", "t1d-uva-padova", "--data", str(day1), "--name", "ada",
                                *db])  # fmt: skip
    assert again.exit_code == 2 and "already exists" in again.output
    result = runner.invoke(app, ["twin", "sync", "ada", "--data", str(day2), *db])
    assert result.exit_code == 0, result.output
    assert "version 2: 288 assimilated" in result.output
    result = runner.invoke(app, ["twin", "forecast", "ada", "--hours", "6", "--inputs", str(usual), "--out",
                                 str(tmp_path / "fc.csv"), *db])  # fmt: skip
    assert result.exit_code == 0, result.output
    quantiles = pd.read_csv(tmp_path / "fc.csv")
    assert (quantiles["ensemble_size"] == 100).all() and {"q05", "q50", "q95"} <= set(quantiles.columns)
    beside = ProvDocument.deserialize(source=str(tmp_path / "fc.prov.json"), format="json")
    forecast_id = TwinRegistry(db[1]).table("forecasts", "ada")["id"].iloc[0]
    assert any(forecast_id in str(r.get_attribute("prov:label")) for r in beside.get_records())
    result = runner.invoke(app, ["twin", "lineage", "ada", "--forecast", forecast_id, *db])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"forecast 'forecast {forecast_id}") and "<- twin-forecast" in lines[0]
    assert "treatment-plan: treatment-plan 'dose plan'" in result.output and "<- twin-create" in result.output
    assert (
        "'288 observations of subcutaneous_glucose'" in result.output
        and "model: model 't1d-uva-padova" in result.output
    )
    result = runner.invoke(app, ["twin", "lineage", "ada", "--forecast", "nope", *db])
    assert result.exit_code == 2 and "no stored forecast 'nope'" in result.output
    result = runner.invoke(app, ["twin", "compare", "ada", "--inputs", f"more={more}", "--inputs", f"usual={usual}",
                                 "--endpoint", "mean_glucose", "--hours", "12", *db])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "P(more better than usual) = 1.000" in result.output
    result = runner.invoke(app, ["twin", "show", "ada", "--out", str(tmp_path / "show"), *db])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["twin", "lineage", "ada", "--prov-json", str(tmp_path / "ada.json"), *db])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("twin-version 'ada v2'") and "used by twin-compare" in result.output
    assert ProvDocument.deserialize(source=str(tmp_path / "ada.json"), format="json") == TwinRegistry(db[1]).provenance(
        "ada"
    )
    assert (tmp_path / "show" / "ada-fan-chart.html").stat().st_size > 10_000
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,glucose,unit\n2026-01-07T00:05:00Z,110,furlongs\n")
    result = runner.invoke(app, ["twin", "sync", "ada", "--data", str(bad), *db])
    assert result.exit_code == 2 and "rejected" in result.output
    result = runner.invoke(app, ["twin", "show", "ada", *db])
    assert "sync" in result.output and result.output.count("sync") == 1  # the failed sync left no version
    result = runner.invoke(app, ["twin", "sync", "nobody", "--data", str(day2), *db])
    assert result.exit_code == 2 and "No twin 'nobody'" in result.output
