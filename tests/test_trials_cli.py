"""Trial artifacts, the trial report and ``twinloop trial``: written atomically with lineage and
PROV, read back with their hashes checked, the report re-rendered from the files alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twinloop._provenance import read as read_prov
from twinloop.cli.app import app
from twinloop.errors import InputError
from twinloop.trials.artifact import read_trial, write_trial
from twinloop.trials.report import clopper_pearson, power_rows

runner = CliRunner()
HOSTILE = "<script>alert(1)</script>"


@dataclass(frozen=True)
class FakeSpec:
    raw: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.raw

    def content_hash(self) -> str:
        return "0" * 64


@dataclass(frozen=True)
class FakeData:
    """What run_trial returns, made by hand: two arms (one named hostilely), two replicates."""

    spec: FakeSpec
    participants: pd.DataFrame
    flow: pd.DataFrame
    truth: pd.DataFrame
    observations: pd.DataFrame | None
    lineage: dict[str, Any]


def fake_data(seed: int = 0, n: int = 40, replicates: int = 2) -> FakeData:
    rng = np.random.default_rng(seed)
    arms = ["control", HOSTILE]
    rows = []
    for r in range(replicates):
        for i in range(n):
            arm = arms[i % 2]
            rows.append({"replicate": r, "order": i, "subject_id": f"r{r}-p{i}", "arm": arm, "stratum": "",
                         "group": "default", "sex": ["female", "male"][i % 3 == 0], "sld_baseline": rng.normal(60, 10),
                         "sld_change": np.nan if i == 3 else rng.normal(-0.1 * (arm == HOSTILE), 0.2),
                         "pfs": rng.exponential(200), "pfs_event": bool(rng.random() < 0.7),
                         "simulation_failed": False})  # fmt: skip
    participants = pd.DataFrame(rows)
    flow = pd.DataFrame({"replicate": range(replicates), "screened": 60, "eligible": 50, "randomized": n,
                         "randomized:control": n // 2, f"randomized:{HOSTILE}": n // 2, "completed:control": n // 2 - 1,
                         f"completed:{HOSTILE}": n // 2, "analysed": n - 1})  # fmt: skip
    spec = FakeSpec({"name": "fake-trial", "model": "tgi-claret", "n": n, "replicates": replicates, "seed": seed,
                     "arms": {"control": {}, HOSTILE: {}}, "control_arm": "control",
                     "endpoints": {"pfs": {"kind": "time_to_event"}, "sld_change": {"kind": "measure"}},
                     "analysis": {"alpha": 0.05, "primary": "sld_change"}})  # fmt: skip
    truth = participants[["replicate", "subject_id"]].assign(kg=rng.random(len(participants)))
    lineage = {"spec_hash": "0" * 64, "model": {"id": "tgi-claret", "version": "1", "content_hash": "a" * 64}}
    return FakeData(spec, participants, flow, truth, None, lineage)


def fake_results(replicates: int = 2) -> pd.DataFrame:
    rows = []
    for r in range(replicates):
        rows += [
            {"replicate": r, "endpoint": "pfs", "method": "logrank", "comparison": f"{HOSTILE} vs control",
             "measure": "hazard_ratio", "estimate": 0.8, "ci_low": 0.6, "ci_high": 1.1, "p_value": 0.2, "n": 40,
             "reject": False},
            {"replicate": r, "endpoint": "sld_change", "method": "ancova", "comparison": f"{HOSTILE} vs control",
             "measure": "difference", "estimate": -0.1, "ci_low": -0.2, "ci_high": -0.01, "p_value": 0.01 + r,
             "n": 39, "reject": r == 0},
        ]  # fmt: skip
    return pd.DataFrame(rows)


def sections() -> dict[str, Any]:
    times = np.arange(0.0, 300.0, 50.0)
    curves = [(arm, np.exp(-times / scale)) for arm, scale in (("control", 200), (HOSTILE, 300))]
    km = pd.concat([pd.DataFrame({"endpoint": "pfs", "arm": arm, "time": times, "survival": s, "ci_low": s * 0.9,
                                  "ci_high": np.minimum(1, s * 1.1)}) for arm, s in curves])  # fmt: skip
    power = pd.DataFrame({"n": [50, 100, 150], "endpoint": "sld_change", "method": "ancova", "rejections": [9, 15, 19],
                          "replicates": 20, "closed_form": [0.4, 0.7, 0.88]})  # fmt: skip
    forest = pd.DataFrame({"label": [HOSTILE, "age >= 65"], "kind": ["prespecified", "discovered"],
                              "estimate": [-0.1, -0.3], "ci_low": [-0.2, -0.5], "ci_high": [0.0, -0.1],
                              "n": [20, 12]})  # fmt: skip
    procova = {"rho": 0.6, "variance_reduction": 0.64, "observed_ratio": 0.66, "sample_size_saving": 0.36}
    external = {"balance": pd.DataFrame({"covariate": ["age", "sex"], "smd_before": [0.3, 0.05],
                                         "smd_after": [0.02, 0.01], "flag": [False, False]}),
                "bias": -0.01, "flags": []}  # fmt: skip
    medians = pd.DataFrame({"arm": ["control", HOSTILE], "median": [139.0, np.inf]})
    return {"km": {"curves": km, "medians": medians}, "power": {"curve": power, "target": 0.8},
            "subgroups": {"forest": forest}, "procova": procova, "external": external}  # fmt: skip


def test_clopper_pearson_matches_its_closed_forms_and_statsmodels() -> None:
    from statsmodels.stats.proportion import proportion_confint

    # no or all successes: the exact bounds are 1 - (alpha/2)^(1/n) and (alpha/2)^(1/n)
    assert clopper_pearson(0, 20) == pytest.approx((0.0, 1 - 0.025 ** (1 / 20)), abs=1e-12)
    assert clopper_pearson(20, 20) == pytest.approx((0.025 ** (1 / 20), 1.0), abs=1e-12)
    assert clopper_pearson(5, 100) == pytest.approx(proportion_confint(5, 100, method="beta"), abs=1e-10)
    rows = power_rows(pd.DataFrame({"n": [10], "rejections": [5], "replicates": [100]}))
    assert rows["power"].iloc[0] == 0.05 and rows["ci_high"].iloc[0] == pytest.approx(0.1128349, abs=1e-7)


def test_trial_artifact_round_trips_with_report_lineage_and_prov(tmp_path: Path) -> None:
    data, results = fake_data(), fake_results()
    out = write_trial(tmp_path / "trial", data, results, **sections())  # type: ignore[arg-type]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "twinloop.trial" and manifest["spec"]["name"] == "fake-trial"
    assert manifest["lineage"]["model"]["content_hash"] == "a" * 64
    tables = {
        "participants",
        "flow",
        "results",
        "truth",
        "km_curves",
        "km_medians",
        "power_curve",
        "subgroups_forest",
        "external_balance",
    }
    assert {f"{t}.parquet" for t in tables} == set(manifest["files"])
    assert manifest["sections"]["procova"]["summary"]["rho"] == 0.6
    assert manifest["figures"] == ["consort", "effects", "km:pfs", "power", "forest"]
    # nothing but the artifact: no temporary folder left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["trial"]
    back = read_trial(out)
    pd.testing.assert_frame_equal(back.tables["participants"], data.participants)
    assert back.section("power")["target"] == 0.8 and set(back.section_tables("external")) == {"balance"}
    prov = read_prov(out)
    labels = {str(r.get_attribute("prov:label").pop()) for r in prov.get_records() if r.get_attribute("prov:label")}
    assert "trial" in labels and "fake-trial" in labels and "participants.parquet" in labels
    assert str(out.resolve()) in (out / "prov.json").read_text()
    page = (out / "report.html").read_text()
    assert HOSTILE not in page and html_escaped(HOSTILE) in page
    assert page.count("plotly.js v") <= 1 and "Participant flow (CONSORT)" in page
    for text in ("Kaplan-Meier", "Power by simulation", "Forest plot", "PROCOVA", "external control arm",
                 "screened 60", "not eligible 10.0", "rejection_rate"):  # fmt: skip
        assert text in page, text
    # one replicate: the estimates themselves, the primary endpoint first
    one = write_trial(tmp_path / "one", fake_data(replicates=1), fake_results(replicates=1))
    single = (one / "report.html").read_text()
    assert "screened 60" in single and single.index("ancova") < single.index("logrank")


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_trial_artifact_refuses_a_used_folder_and_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_trial(used, fake_data(), fake_results())
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_trial(tmp_path / "file", fake_data(), fake_results())

    import twinloop.trials.report as report

    def broken(artifact: Any) -> Any:
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(report, "render", broken)
    with pytest.raises(RuntimeError, match="renderer failed"):
        write_trial(tmp_path / "half", fake_data(), fake_results())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "used"]


def test_trial_report_command_renders_again_and_refuses_a_damaged_artifact(tmp_path: Path) -> None:
    out = write_trial(tmp_path / "trial", fake_data(), fake_results(), **sections())  # type: ignore[arg-type]
    (out / "report.html").unlink()
    result = runner.invoke(app, ["trial", "report", str(out)])
    assert result.exit_code == 0, result.output
    assert "Forest plot" in (out / "report.html").read_text()
    table = pd.read_parquet(out / "results.parquet")
    table.assign(estimate=table["estimate"] * 2).to_parquet(out / "results.parquet")
    damaged = runner.invoke(app, ["trial", "report", str(out)])
    assert damaged.exit_code == 2 and "results.parquet" in damaged.output and "changed" in damaged.output
    with pytest.raises(InputError, match="no readable trial"):
        read_trial(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["../escape.parquet"] = {"sha256": "0"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="not a table of a trial"):
        read_trial(out)


# --- the trial commands on the examples --------------------------------------------------------
def small_nsclc(tmp_path: Path) -> Path:
    """The oncology example at a test's size: 24 participants, a small PROCOVA bank and external
    pool, prespecified subgroups only."""
    import yaml

    raw = yaml.safe_load(Path("examples/trial_nsclc.yaml").read_text())
    raw["n"], raw["prognostic"]["bank"], raw["external_control"]["n"] = 24, 150, 150
    raw["subgroups"].pop("discover")
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_trial_run_and_power_from_the_command_line(tmp_path: Path) -> None:
    spec = small_nsclc(tmp_path)
    result = runner.invoke(app, ["trial", "run", str(spec), "--out", str(tmp_path / "run"), "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "effect estimates" in result.output and "weekly vs three-weekly" in result.output
    back = read_trial(tmp_path / "run")
    flow = back.tables["flow"].iloc[0]
    assert flow["randomized"] == 24 == flow["randomized:weekly"] + flow["randomized:three-weekly"]
    assert flow["screened"] >= flow["eligible"] >= 24 and back.manifest["spec"]["seed"] == 4
    results = back.tables["results"]
    assert {"ancova", "procova", "logistic", "logrank", "cox"} == set(results["method"])
    assert {"procova", "km", "external", "subgroups"} <= set(back.manifest["sections"])
    assert back.manifest["figures"] == ["consort", "effects", "km:pfs", "forest"]
    # the participants are the trial's: in the CONSORT counts, eligible by the spec's criteria
    people = back.tables["participants"]
    assert len(people) == 24 and (people["sld_baseline"] >= 20).all() and people["age"].between(18, 80).all()
    assert "prognostic:sld_log_ratio" in people.columns

    result = runner.invoke(app, ["trial", "power", str(spec), "--n", "12,24", "--replicates", "4",
                                 "--out", str(tmp_path / "power")])  # fmt: skip
    assert result.exit_code == 0, result.output
    curve = read_trial(tmp_path / "power").tables["power_curve"]
    assert sorted(set(curve["n"])) == [12, 24] and (curve["replicates"] == 4).all()
    assert curve["closed_form"].notna().sum() == 2 and curve["power"].between(0, 1).all()
    assert "Power by simulation" in (tmp_path / "power" / "report.html").read_text()


def test_trial_commands_refuse_bad_input_and_write_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path("examples/trial_nsclc.yaml").read_text().replace("replicates: 1", "replicatez: 1"))
    result = runner.invoke(app, ["trial", "run", str(bad), "--out", str(tmp_path / "never")])
    assert result.exit_code == 2 and "replicatez" in result.output and not (tmp_path / "never").exists()
    for grid in ("5:1:1", "ten", "1"):
        result = runner.invoke(app, ["trial", "power", "examples/trial_nsclc.yaml", "--n", grid,
                                     "--out", str(tmp_path / "never")])  # fmt: skip
        assert result.exit_code == 2 and "--n" in result.output, (grid, result.output)
    result = runner.invoke(app, ["trial", "power", "examples/trial_nsclc.yaml", "--target", "1.5",
                                 "--out", str(tmp_path / "never")])  # fmt: skip
    assert result.exit_code == 2 and "--target" in result.output and not (tmp_path / "never").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("mine")
    result = runner.invoke(app, ["trial", "run", "examples/trial_nsclc.yaml", "--out", str(tmp_path / "used")])
    assert result.exit_code == 2 and "not empty" in result.output


@pytest.mark.slow
def test_t1d_controller_trial_runs_from_the_command_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["trial", "run", "examples/trial_t1d_controllers.yaml", "--n", "8",
                                 "--out", str(tmp_path / "t1d")])  # fmt: skip
    assert result.exit_code == 0, result.output
    back = read_trial(tmp_path / "t1d")
    people = back.tables["participants"]
    # stratified by age group: within each group the arms differ by at most half a block
    counts = people.groupby(["group", "arm"]).size().unstack(fill_value=0)
    assert (abs(counts["mpc"] - counts["basal-bolus"]) <= 2).all()
    assert people["tir"].between(0, 100).all() and people["tir_baseline"].notna().all()
    assert {"tir", "tir70", "hypo"} == set(back.tables["results"]["endpoint"])


def test_closed_form_line_reproduces_cohens_sample_size() -> None:
    from types import SimpleNamespace

    from twinloop.cli.trial import with_closed_form

    # d = 0.5 needs 64 per arm for 80 % power at alpha 0.05 two-sided (Cohen 1988, table 2.4.1)
    rng = np.random.default_rng(1)
    arm = np.repeat(["a", "b"], 20_000)
    y = rng.normal(0.0, 2.0, arm.size) + np.where(arm == "b", 1.0, 0.0)
    y[::10] = np.nan  # 10 % not analysable: the line is drawn over the analysable share of each n
    people = pd.DataFrame({"arm": arm, "y": y, "simulation_failed": False})
    spec = SimpleNamespace(arms=("a", "b"), control_arm="a", context=SimpleNamespace(endpoints={"y": "continuous"}),
                           analysis=SimpleNamespace(primary="y", alpha=0.05))  # fmt: skip
    table = pd.DataFrame({"n": [128 / 0.9, 128 / 0.9, 64], "endpoint": ["y", "y", "y"],
                          "method": ["ancova", "procova", "ancova"]})  # fmt: skip
    out, note = with_closed_form(table, people, spec)  # type: ignore[arg-type]
    assert out["closed_form"].iloc[0] == pytest.approx(0.80, abs=0.015) and np.isnan(out["closed_form"].iloc[1])
    assert out["closed_form"].iloc[2] < 0.6 and "t-test" in note and "90 %" in note
