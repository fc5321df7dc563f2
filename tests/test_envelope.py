"""The computational envelope: the cost model's file, the estimate, the dry run, a real
product run's predicted against actual, and learning from past runs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from twinloop.cli.app import app
from twinloop.errors import InputError
from twinloop.models.registry import get as get_model
from twinloop.products import envelope
from twinloop.products.spec import ProductSpec
from twinloop.simulate import SolverSettings, cost

PK_SPEC: dict[str, Any] = {
    "name": "pk-envelope",
    "model": "pk-one-compartment",
    "population": "default",
    "n": 20000,
    "seed": 1,
    "duration": 24,
    "resolution": 0.5,
    "chunk_size": 5000,
    "treatment": {"kind": "chemotherapy", "dose_mg": 100, "cycle_days": 1, "n_cycles": 1},
    "observations": [{"name": "conc", "observable": "concentration", "schedule": {"every": 1},
                      "error": {"kind": "combined", "sd": 0.1, "cv": 0.1}}],
}  # fmt: skip


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cost file that was corrupt, then calibrated for the PK model (a real timed run)."""
    from twinloop._config import ensure_jax

    ensure_jax()  # the JAX cache stays where the test session put it
    file = tmp_path_factory.mktemp("cost") / "cache" / "cost.json"
    file.parent.mkdir()
    file.write_text('{"kind": "twinloop.cost", "format": 1, "calibrations": {"x": ')  # truncated
    cost.calibrate(get_model("pk-one-compartment"), SolverSettings(), file=file)
    return file


@pytest.fixture
def cache(calibrated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache directory holding a copy of the calibrated cost file, used by the CLI."""
    root = tmp_path / "cache"
    root.mkdir()
    shutil.copy(calibrated, root / "cost.json")
    monkeypatch.setenv("TWINLOOP_CACHE_DIR", str(root))
    yield root / "cost.json"


def _spec(**changes: Any) -> ProductSpec:
    return ProductSpec.from_dict({**PK_SPEC, **changes})


def test_a_corrupt_cost_file_is_ignored_and_rewritten(calibrated: Path, tmp_path: Path) -> None:
    tables = cost.load(calibrated)
    (key, calibration), *_ = tables["calibrations"].items()
    assert "pk-one-compartment 1.0.0 | accurate | float64" in key
    assert calibration.patients == 1024 and calibration.days == 3.0 and calibration.rate > 100
    assert calibration.base_rss_bytes > 10e6 and calibration.compile_s >= 0
    raw = json.loads(calibrated.read_text())
    assert raw["kind"] == "twinloop.cost" and not raw["runs"]  # the truncated file was replaced
    # round trip, and a damaged entry is left out while the good ones are kept
    run = cost.RunRecord(1, 10.0, 2.0, 1.0, 100, 120.0, 10**8, 9e7, "2026-01-01")
    copy = tmp_path / "cost.json"
    cost.save({"calibrations": tables["calibrations"], "runs": {key: [run]}}, copy)
    assert cost.load(copy) == {"calibrations": tables["calibrations"], "runs": {key: [run]}}
    raw = json.loads(copy.read_text())
    raw["runs"][key].append({**dataclasses.asdict(run), "wall_s": -1.0})
    raw["runs"][key].append({**dataclasses.asdict(run), "workers": "2"})
    raw["calibrations"]["other"] = {**dataclasses.asdict(calibration), "rate": float("nan")}
    copy.write_text(json.dumps(raw).replace("NaN", "1e999"))
    assert cost.load(copy) == {"calibrations": tables["calibrations"], "runs": {key: [run]}}
    for text in ("", "[]", '{"kind": "twinloop.cost", "format": 99}', "\x00\xff"):
        copy.write_text(text)
        assert cost.load(copy) == {"calibrations": {}, "runs": {}}
    assert not cost.save(tables, copy / "below-a-file.json")  # an unwritable cache is no error


def test_the_estimate_is_linear_in_patient_days_and_scales_with_workers(calibrated: Path) -> None:
    one = envelope.estimate(_spec(n=1000), file=calibrated)
    assert one.patient_days == 1000 and one.output_rows == 25_000 and "no past runs" in one.basis
    more = envelope.estimate(_spec(n=4000), file=calibrated)
    longer = envelope.estimate(_spec(n=1000, duration=96), file=calibrated)
    for other, rel in ((more, 1e-9), (longer, 0.05)):  # 97 observations a patient instead of 4 x 25: not quite 4x
        assert other.patient_days == 4 * one.patient_days
        assert other.fixed_s == one.fixed_s
        assert other.compute_s == pytest.approx(4 * one.compute_s, rel=rel)
    assert more.output_bytes > 3.5 * one.output_bytes and more.wall_s > one.wall_s
    two = envelope.estimate(_spec(n=1000), workers=2, file=calibrated)
    assert two.compute_s == pytest.approx(one.compute_s / envelope.scaling_for(2), rel=1e-9)
    assert two.fixed_s == one.fixed_s + envelope.CLUSTER_START_S
    assert envelope.worth_estimating(_spec(n=1000), file=calibrated)  # calibrated: free
    assert not envelope.worth_estimating(_spec(n=1000), file=calibrated.parent / "none.json")
    assert envelope.worth_estimating(_spec(n=21000), file=calibrated.parent / "none.json")  # 1,029,000 values
    lines = one.render().splitlines()
    assert lines[0].startswith("estimate for 'pk-envelope': 1000 patients, 1,000 patient-days") and len(lines) == 5
    for bad in (0, -1, 2.5, True, "2", 10**6):
        with pytest.raises(InputError, match="workers must be an integer from 1 to 1024"):
            envelope.estimate(_spec(n=1000), workers=bad, file=calibrated)  # type: ignore[arg-type]


def test_the_dry_run_prints_the_estimate_and_writes_nothing(cache: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**PK_SPEC, "n": 500000}))
    before = cache.read_bytes()
    result = CliRunner().invoke(app, ["cohort", "generate", str(spec), "--out", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "estimate for 'pk-envelope': 500000 patients, 500,000 patient-days" in result.output
    for figure in ("wall time", "peak memory", "12,500,000 observation rows"):
        assert figure in result.output
    assert not (tmp_path / "out").exists() and cache.read_bytes() == before
    args = ["cohort", "generate", str(spec), "--out", str(tmp_path / "o"), "--dry-run", "--n", "0"]
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code != 0 and "--n must be >= 1" in bad.output and not (tmp_path / "o").exists()


def test_a_product_run_records_predicted_and_actual(cache: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(PK_SPEC))
    result = CliRunner().invoke(app, ["cohort", "generate", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "predicted" in result.output and "actual" in result.output
    env = json.loads((tmp_path / "out" / "manifest.json").read_text())["envelope"]
    assert env["patient_days"] == 20000 and env["workers"] == 1 and env["actual_wall_s"] > 0.3
    error = envelope.prediction_error([env])
    assert error["runs"] == 1 and error["worst_wall_factor"] < 5, env  # a noisy shared machine: within 5x
    assert error["worst_peak_rss_factor"] < 3, env
    (run,) = cost.load(cache)["runs"].popitem()[1]
    assert run.wall_s == env["actual_wall_s"] and run.model_wall_s == pytest.approx(env["predicted_wall_s"])
    assert run.output_bytes == sum(p.stat().st_size for p in (tmp_path / "out").glob("*.parquet"))


def test_the_learned_model_moves_toward_observed_runs(calibrated: Path, tmp_path: Path) -> None:
    file = tmp_path / "cost.json"
    shutil.copy(calibrated, file)
    spec = _spec(n=1000)
    cold = envelope.estimate(spec, file=file)
    model = get_model("pk-one-compartment")
    for wall in (2.5, 3.0, 3.5):  # runs three times slower than predicted, files half the size
        size, peak = cold.output_bytes, cold.peak_rss_bytes
        observed = cost.RunRecord(
            1, cold.patient_days, wall * cold.wall_s, cold.wall_s, int(size / 2), size, int(peak), peak, "2026-01-01"
        )
        cost.record_run(model, SolverSettings(), observed, file)
    learned = envelope.estimate(spec, file=file)
    assert learned.basis.startswith("from 3 past runs")
    assert learned.wall_s == pytest.approx(3.0 * cold.wall_s) and learned.rate_per_process < cold.rate_per_process
    assert learned.output_bytes == pytest.approx(cold.output_bytes / 2, rel=1e-3)
    assert learned.peak_rss_bytes == pytest.approx(cold.peak_rss_bytes, rel=1e-6)
    two = envelope.estimate(spec, workers=2, file=file)  # no runs with two workers yet: the calibration
    assert "no past runs" in two.basis
    manifest_env = {**learned.to_dict(), **envelope.envelope_outcome(learned, 3.0 * cold.wall_s, 1e8)}
    assert envelope.prediction_error([manifest_env])["wall_ratio"] == [pytest.approx(1.0)]


def test_prediction_error_over_runs() -> None:
    runs = [
        {"predicted_wall_s": 10.0, "actual_wall_s": 5.0, "predicted_peak_rss_bytes": 1e9, "actual_peak_rss_bytes": 2e9},
        {"predicted_wall_s": 4.0, "actual_wall_s": 5.0, "predicted_peak_rss_bytes": 1e9, "actual_peak_rss_bytes": 1e9},
    ]
    error = envelope.prediction_error(runs)
    assert error["wall_ratio"] == [2.0, 0.8] and error["peak_rss_ratio"] == [0.5, 1.0]
    assert error["worst_wall_factor"] == 2.0 and error["worst_peak_rss_factor"] == 2.0
    for bad in ({"predicted_wall_s": 1.0}, {**runs[0], "actual_wall_s": "soon"}, None, 3):
        with pytest.raises(InputError, match=r"records\[1\] is not an envelope with its actuals"):
            envelope.prediction_error([runs[0], bad])  # type: ignore[list-item]
    with pytest.raises(InputError, match="records is empty"):
        envelope.prediction_error([])
