"""Artificial-pancreas evaluation: the tables of closed-loop results, the artifact on disk,
the HTML report, and ``twinloop control evaluate`` on three published patients."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twinloop._provenance import sha256_file
from twinloop.cli.app import app
from twinloop.control.evaluate import tabulate
from twinloop.control.metrics import glucose_metrics
from twinloop.control.report import cvga_figure, time_of_day_quantiles
from twinloop.control.result import ClosedLoopResult
from twinloop.control.scenario import Scenario
from twinloop.errors import InputError

runner = CliRunner()
HOSTILE = "<script>alert(1)</script>"


def fake_result(name: str, bg: np.ndarray, failed=None, groups=None) -> ClosedLoopResult:
    """A closed-loop result with given plasma glucose; the CGM holds each 5-minute reading + 3 mg/dL."""
    n, t = bg.shape
    minutes = np.arange(t, dtype=float)
    cgm = np.repeat(bg[:, ::5] + 3.0, 5, axis=1)[:, :t]
    zeros = np.zeros((n, t // 5))
    return ClosedLoopResult(
        ids=tuple(f"p{i}" for i in range(n)), groups=tuple(groups or ["adult"] * n), minutes=minutes,
        period_starts=minutes[::5], bg=bg, sg=bg, cgm=cgm, insulin=np.zeros_like(bg), carbs=np.zeros_like(bg),
        basal=zeros, bolus=zeros, cgm_seen=zeros, rescue_g=zeros,
        failed=np.zeros(n, bool) if failed is None else np.asarray(failed), controller=name,
        controller_settings={"gain": 1.0}, scenario=Scenario(days=t / 1440, noise=False).to_dict(),
        model={"id": "test-model", "version": "0", "content_hash": "0" * 64}, seed=0, accurate=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    t = 1440
    day = 40 * np.sin(np.arange(t) / t * 2 * np.pi)
    low = 120 + day + 10 * rng.standard_normal((6, t))
    high = low + 60.0  # the second controller runs every patient 60 mg/dL higher
    groups = ["adult", "adult", "adult", "child", "child", "child"]
    failed = [False] * 5 + [True]
    return fake_result("first", low, groups=groups), fake_result(HOSTILE, high, failed=failed, groups=groups)


def test_tables_of_closed_loop_results(results):
    a, _ = results
    ev = tabulate(results, settings={"patients": {"n": 6}, "ci": {"method": "t", "level": 0.95}})
    first = ev.per_patient[ev.per_patient["controller"] == "first"]
    # cgm_* are the readings at the sensor's sample times (every 5 minutes), bg_* plasma glucose every minute
    cgm = glucose_metrics(a.cgm[:, ::5], a.minutes[::5])
    bg = glucose_metrics(a.bg, a.minutes)
    np.testing.assert_allclose(first["cgm_mean_mg_dl"], cgm["mean_mg_dl"])
    np.testing.assert_allclose(first["bg_tir_70_180_pct"], bg["tir_70_180_pct"])
    assert np.allclose(first["cgm_mean_mg_dl"] - first["bg_mean_mg_dl"], 3.0, atol=1.0)
    # the failed patient is left out of the second controller's metrics and of the pairs
    second = ev.per_patient[ev.per_patient["controller"] == HOSTILE]
    assert second["bg_mean_mg_dl"].isna().tolist() == [False] * 5 + [True]
    row = ev.summary.query("controller == @HOSTILE and group == 'all' and metric == 'bg_mean_mg_dl'").iloc[0]
    assert row["n"] == 5 and row["ci_low"] < row["mean"] < row["ci_high"]
    diff = ev.comparisons.query("group == 'all' and metric == 'bg_mean_mg_dl'").iloc[0]
    assert diff["n"] == 5 and diff["mean_difference"] == pytest.approx(60.0)
    assert diff["first"] == "first" and diff["second"] == HOSTILE and diff["p_paired_t"] < 1e-6
    child = ev.comparisons.query("group == 'child' and metric == 'bg_mean_mg_dl'").iloc[0]
    assert child["n"] == 2
    assert set(ev.summary["group"]) == {"all", "adult", "child"}
    zones = ev.cvga.set_index(["controller", "signal"])
    assert zones.loc[("first", "bg"), list("ABCDE")].sum() == 6 and zones.loc[(HOSTILE, "bg")].iloc[:5].sum() == 5
    assert list(ev.table("child", "bg").columns) == ["first", HOSTILE]
    with pytest.raises(InputError, match="No group 'teen'"):
        ev.table("teen")


def test_write_an_artifact_with_lineage_and_refuse_to_overwrite(results, tmp_path):
    ev = tabulate(results, settings={"patients": {"n": 6}, "ci": {"method": "t", "level": 0.95}})
    out = ev.write(tmp_path / "ev")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "twinloop.control-evaluation"
    assert manifest["lineage"]["controllers"][1] == {"name": HOSTILE, "settings": {"gain": 1.0}}
    assert manifest["lineage"]["failed_patients"][HOSTILE] == ["p5"] and manifest["lineage"]["seed"] == 0
    for name, entry in manifest["files"].items():
        assert sha256_file(out / name) == entry["sha256"]
    traces = pd.read_parquet(out / "traces.parquet")
    assert len(traces) == 2 * 6 * 1440 and set(traces["controller"]) == {"first", HOSTILE}
    assert (out / "prov.json").is_file()
    page = (out / "report.html").read_text()
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Control-variability grid" in page and "cgm_tir_70_180_pct" in page
    with pytest.raises(InputError, match="already holds an artifact"):
        ev.write(out)
    ev.write(out, traces=False, overwrite=True)
    assert "traces.parquet" not in json.loads((out / "manifest.json").read_text())["files"]


def test_percentile_bands_fold_days_onto_the_time_of_day():
    minutes = np.arange(0, 2880, 5.0)
    g = np.vstack([np.where(minutes < 1440, 100.0, 200.0), np.full(minutes.size, 150.0)])
    day, q = time_of_day_quantiles(minutes, g, q=(0, 50, 100))
    assert day.size == 288 and day[-1] == 1435.0
    np.testing.assert_allclose(q[:, 0], [100.0, 150.0, 200.0])  # three values at each minute of the day


def test_cvga_figure_draws_the_nine_zones_on_a_reversed_axis():
    fig = cvga_figure({"bb": (["a", "b"], np.array([100.0, 60.0]), np.array([150.0, 350.0]))})
    assert len(fig.layout.shapes) == 9 and fig.layout.xaxis.range[0] > fig.layout.xaxis.range[1]
    assert fig.data[0].name == "bb (A 50%, B 0%, C 0%, D 0%, E 50%)"


def test_duplicate_controller_names_are_refused():
    from twinloop.control import pid
    from twinloop.control.evaluate import _check

    with pytest.raises(InputError, match="Controller names must differ"):
        _check([pid(), pid(P=0.002)])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--controller", "lqr"], "unknown controller 'lqr'"),
        (["--controller", "pid:Q=1"], "'Q=1' must be key=value with a key among"),
        (["--controller", "pid:P=abc"], "P must be a number; got 'abc'"),
        (["--meals", "7am"], "must be MINUTE:GRAMS"),
        (["--meals", "1500:50"], "minute of the day in \\[0, 1440\\)"),
        (["--patients", "adult#999"], "unknown: \\['adult#999'\\]"),
        (["--pump", "Acme"], "Unknown pump 'Acme'"),
        (["--ci", "z"], "--ci must be 't' or 'bootstrap'"),
    ],
)
def test_cli_refuses_bad_options_before_running(tmp_path, args, message):
    result = runner.invoke(app, ["control", "evaluate", "--out", str(tmp_path / "ev"), *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert re.search(message, result.output), result.output
    assert not (tmp_path / "ev").exists()


def test_cli_runs_every_controller_on_the_same_patients_scenario_and_seed(tmp_path, monkeypatch):
    """The command's wiring, with the closed loop replaced by a recorder (the real run is the slow test)."""
    import twinloop.control.loop as loop

    calls = []

    def recorder(model, patients, controller, scenario, *, seed, accurate):
        calls.append((patients.ids, controller.name, dict(controller.settings), scenario, seed, accurate))
        level = {"basal-bolus": 130.0, "pid(P=0.002)": 170.0}[controller.name]
        bg = np.full((patients.n, scenario.minutes), level) + np.arange(patients.n)[:, None]
        return fake_result(controller.name, bg, groups=list(patients.groups))

    monkeypatch.setattr(loop, "closed_loop", recorder)
    out = tmp_path / "ev"
    result = runner.invoke(app, ["control", "evaluate", "-c", "bb", "-c", "pid:P=0.002", "--patients",
                                 "adult#001,child#001,adolescent#001", "--meals", "480:60,1200:40", "--no-rescue",
                                 "--seed", "7", "--fast", "--no-traces", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    (ids, _, _, scenario, seed, accurate), (ids2, name2, settings2, scenario2, seed2, _) = calls
    assert ids == ids2 == ("adult#001", "child#001", "adolescent#001") and seed == seed2 == 7 and accurate is False
    assert scenario == scenario2 and scenario.meals == ((480.0, 60.0), (1200.0, 40.0)) and scenario.rescue is None
    assert name2 == "pid(P=0.002)" and settings2["P"] == 0.002
    assert "cgm_tir_70_180_pct" in result.output and "pid(P=0.002)" in result.output
    assert "CVGA zones of plasma glucose" in result.output
    table = pd.read_parquet(out / "comparisons.parquet").query("group == 'all' and metric == 'bg_mean_mg_dl'")
    assert table["mean_difference"].iloc[0] == pytest.approx(40.0)
    assert not (out / "traces.parquet").exists() and (out / "report.html").is_file()
    again = runner.invoke(app, ["control", "evaluate", "--out", str(out)])
    assert again.exit_code == 2 and "already holds an artifact" in again.output


@pytest.mark.slow
def test_cli_evaluates_two_controllers_on_three_published_patients(tmp_path):
    out = tmp_path / "ev"
    patients = "adolescent#001,adult#001,child#001"
    result = runner.invoke(app, ["control", "evaluate", "-c", "bb", "-c", "pid", "--patients", patients, "--days", "1",
                                 "--no-noise", "--fast", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "CGM at the sensor's sample times: mean over 3 patients" in result.output
    assert "cgm_tir_70_180_pct" in result.output and "basal-bolus" in result.output and "pid" in result.output
    table = pd.read_parquet(out / "patients.parquet")
    traces = pd.read_parquet(out / "traces.parquet")
    assert sorted(set(table["group"])) == ["adolescent", "adult", "child"]
    # the table's plasma-glucose metrics, recounted from the written per-minute traces
    for (controller, patient), trace in traces.groupby(["controller", "patient"]):
        bg = trace.sort_values("minute")["plasma_glucose_mg_dl"].to_numpy()
        row = table[(table["controller"] == controller) & (table["patient"] == patient)].iloc[0]
        assert row["bg_tir_70_180_pct"] == pytest.approx(100 * np.mean((bg >= 70) & (bg <= 180)))
        assert row["bg_tbr_54_pct"] == pytest.approx(100 * np.mean(bg < 54))
        assert row["bg_mean_mg_dl"] == pytest.approx(bg.mean())
    # with meals and corrections, basal-bolus keeps these patients in range longer than PID (simglucose #85)
    tir = table.groupby("controller")["bg_tir_70_180_pct"].mean()
    assert tir["basal-bolus"] > tir["pid"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lineage"]["patients"]["ids"] == patients.split(",")
    assert manifest["lineage"]["scenario"]["noise"] is False
    assert [c["name"] for c in manifest["lineage"]["controllers"]] == ["basal-bolus", "pid"]


def test_help_loads_no_heavy_library():
    code = (
        "import sys; from twinloop.cli.app import main; sys.argv = ['twinloop', 'control', 'evaluate', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'numpy', 'scipy', 'pandas', 'plotly')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--controller" in result.stdout and result.stdout.strip().endswith("[]")


def test_public_names():
    import twinloop.control as control
    from twinloop.control.evaluate import Evaluation, evaluate

    assert control.evaluate is evaluate and control.Evaluation is Evaluation
