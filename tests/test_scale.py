"""Product chunks on Dask: a LocalCluster of two worker processes started by ``open_runner``,
and a loopback cluster (``dask scheduler`` + ``dask worker`` processes started here) reached
through the CLI's ``--scheduler``. The files must be the same bytes as an in-process run's,
an interrupted distributed run must resume to them, and bad settings are refused.

The clusters are module-scoped, so their start-up (and each worker's import of twinloop
and JAX) is paid once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from twinloop.cli.app import app
from twinloop.errors import InputError, SimulationError
from twinloop.products.chunk import ChunkJob
from twinloop.products.dataset import Product, generate
from twinloop.products.spec import ProductSpec
from twinloop.scale import DaskRunner, open_runner
from twinloop.scale import cluster as cluster_module
from twinloop.scale.cluster import worker_env

SPEC: dict[str, Any] = {
    "name": "scale-test",
    "model": "t1d-uva-padova",
    "population": "default",
    "n": 200,
    "seed": 11,
    "duration": 360,
    "resolution": 5,
    "chunk_size": 50,
    "batch_size": 64,
    "treatment": {"kind": "basal_bolus", "meals": [[60, 50], [240, 40]]},
    "observations": [{"name": "cgm", "observable": "subcutaneous_glucose", "schedule": {"every": 5},
                      "error": {"kind": "cgm", "sensor": "GuardianRT"}, "missing": {"mcar": 0.05}}],
    "outcomes": {"kind": "glycaemic", "observable": "plasma_glucose"},
}  # fmt: skip
CLOSED_LOOP: dict[str, Any] = {
    **{k: v for k, v in SPEC.items() if k not in ("observations", "batch_size")},
    "n": 4,
    "chunk_size": 2,
    "duration": 720,
    "treatment": {"kind": "basal_bolus", "meals": [[120, 40], [420, 50]]},
    "observations": [{"name": "bg", "observable": "plasma_glucose", "schedule": {"every": 15}}],
    "control": {"controller": "basal-bolus", "rescue": {"threshold_mg_dl": 90, "grams": 15, "refractory_min": 30}},
}
runner = CliRunner()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Product:
    out = tmp_path_factory.mktemp("reference") / "product"
    generate(ProductSpec.from_dict(SPEC), out, progress=False)
    return Product.open(out)


@pytest.fixture(scope="module")
def local() -> Iterator[DaskRunner]:
    with open_runner(workers=2) as made:
        assert isinstance(made, DaskRunner)
        yield made


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and one single-threaded worker on 127.0.0.1, as separate processes."""
    folder = tmp_path_factory.mktemp("loopback")
    file = folder / "scheduler.json"
    env = {**os.environ, **worker_env()}
    dask = [sys.executable, "-m", "dask"]
    scheduler = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(file)]
    worker = ["worker", "--scheduler-file", str(file), "--nthreads", "1", "--no-nanny", "--no-dashboard"]
    processes = [subprocess.Popen([*dask, *scheduler], env=env, stderr=subprocess.DEVNULL)]
    try:
        processes.append(subprocess.Popen([*dask, *worker], env=env, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 120
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield json.loads(file.read_text())["address"]
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=30)


def same_bytes(product: Path, reference: Product) -> None:
    written = Product.open(product)
    assert written.verify() == []
    assert {f: i["sha256"] for f, i in written.manifest["files"].items()} == {
        f: i["sha256"] for f, i in reference.manifest["files"].items()
    }


def test_two_local_workers_write_the_same_bytes_and_record_the_envelope(
    local: DaskRunner, reference: Product, tmp_path: Path
) -> None:
    assert local.where == "on 2 local Dask worker processes (one core each)"
    envelope = {"predicted_wall_s": 12.5, "predicted_peak_bytes": 2_000_000_000, "basis": "test"}
    result = generate(ProductSpec.from_dict(SPEC), tmp_path / "p", progress=False, runner=local, envelope=envelope)
    assert result.complete and result.chunks_total == 4
    same_bytes(tmp_path / "p", reference)
    manifest = Product.open(tmp_path / "p").manifest
    recorded = manifest.pop("envelope")
    assert manifest == reference.manifest  # the rest of the manifest is the in-process run's too
    assert {k: recorded[k] for k in envelope} == envelope and recorded["workers"] == 2
    assert recorded["actual_wall_s"] > 0 and recorded["ran"] == local.where
    assert recorded["actual_worker_peak_rss_bytes"] > 100e6 and recorded["actual_peak_rss_bytes"] > 100e6
    # one thread per worker, and the workers load the solves compiled here from the same cache
    assert set(local.client.nthreads().values()) == {1}
    assert set(local.client.run(os.getenv, "TWINLOOP_CACHE_DIR").values()) == {os.environ["TWINLOOP_CACHE_DIR"]}


def test_an_interrupted_distributed_run_resumes_to_the_same_bytes(
    local: DaskRunner, reference: Product, tmp_path: Path
) -> None:
    spec, out = ProductSpec.from_dict(SPEC), tmp_path / "p"
    first = generate(spec, out, progress=False, runner=local, max_chunks=3)
    assert (first.complete, first.chunks_done) == (False, 3)
    assert len(list((out / ".parts").glob("*.done"))) == 3 and not (out / "manifest.json").exists()
    done = generate(spec, out, progress=False, runner=local, resume=True)
    assert done.complete and not (out / ".parts").exists()
    same_bytes(out, reference)


def test_a_closed_loop_planner_pickles_as_its_spec() -> None:
    """What a worker receives: the planner rebuilt from the spec, with the same loops."""
    import pickle

    from twinloop.control.product import ClosedLoopPlanner
    from twinloop.models.registry import get

    spec = ProductSpec.from_dict(CLOSED_LOOP)
    planner = ClosedLoopPlanner.for_spec(spec, get(spec.model_id))
    again = pickle.loads(pickle.dumps(planner))
    assert again is not planner and again.loops == planner.loops and again.model is planner.model
    with pytest.raises(TypeError, match=r"pickles only when built with ClosedLoopPlanner.for_spec"):
        pickle.dumps(ClosedLoopPlanner(planner.model, planner.loops))


@pytest.mark.slow
def test_closed_loop_arms_run_on_the_workers_too(local: DaskRunner, tmp_path: Path) -> None:
    """The controller's loop runs on the worker (its planner pickles as the spec) and gives the same bytes."""
    from twinloop.control import generate_product

    spec = ProductSpec.from_dict(CLOSED_LOOP)
    generate_product(spec, tmp_path / "here", progress=False)
    result = generate_product(spec, tmp_path / "there", progress=False, runner=local)
    assert result.complete and result.chunks_total == 2
    same_bytes(tmp_path / "there", Product.open(tmp_path / "here"))
    doses = Product.open(tmp_path / "there").table("doses")
    assert {"insulin", "carbs"} <= set(doses["input"])


def test_a_failed_chunk_on_a_worker_is_named(local: DaskRunner, tmp_path: Path) -> None:
    """A worker that rebuilds the model differently (another version) refuses the chunk."""
    spec = ProductSpec.from_dict(SPEC)
    job = ChunkJob(spec.to_dict(), spec.content_hash(), "not-the-model-hash", str(tmp_path / ".parts"))
    with pytest.raises(SimulationError, match=r"Chunk 3 failed on the Dask cluster \(InputError: .*rebuilds product"):
        list(local.map(job, [3]))
    assert not (tmp_path / ".parts").exists()


def test_the_cli_runs_the_chunks_on_a_loopback_scheduler(loopback: str, reference: Product, tmp_path: Path) -> None:
    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    result = runner.invoke(
        app, ["cohort", "generate", str(spec), "--out", str(tmp_path / "p"), "--scheduler", loopback]
    )
    assert result.exit_code == 0, result.output
    assert f"chunks run on the Dask cluster at {loopback} (1 worker)" in result.output
    same_bytes(tmp_path / "p", reference)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be a whole number >= 1"),
        (["--workers", "-2"], "--workers must be a whole number >= 1"),
        (["--scheduler", "localhost:8786"], "--scheduler must be a Dask scheduler address such as tcp://"),
        (["--scheduler", "tcp://127.0.0.1"], "got 'tcp://127.0.0.1'"),
        (["--scheduler", "tcp://127.0.0.1:99999"], "a port from 1 to 65535"),
        (["--scheduler", "http://127.0.0.1:8786"], "tcp:// or tls://"),
        (["--scheduler", "tcp://a b:1"], "--scheduler must be"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "Give either --workers (2) or --scheduler"),
    ],
)
def test_bad_workers_and_scheduler_are_refused_before_anything_is_written(
    args: list[str], message: str, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(SPEC))
    result = runner.invoke(app, ["cohort", "generate", str(spec), "--out", str(tmp_path / "p"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "p").exists()


def test_open_runner_refuses_bad_values_and_an_absent_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    for bad in (True, 1.5, "2", 0):
        with pytest.raises(InputError, match=r"--workers must be a whole number >= 1 .* got"):
            open_runner(bad).__enter__()
    with pytest.raises(InputError, match="--scheduler must be a Dask scheduler address"):
        open_runner(scheduler=8786).__enter__()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(InputError, match=rf"tcp://127.0.0.1:{port}: no Dask scheduler answered within 1 s"):
        open_runner(scheduler=f"tcp://127.0.0.1:{port}").__enter__()


def test_default_workers_stay_in_process_for_small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_module, "cores", lambda: 4)
    default = cluster_module.default_workers
    assert default(1, 1_000_000) == 1 and default(10, 10_000) == 1  # one chunk; too few patients to pay start-up
    assert default(10, 100_000) == 4 and default(3, 100_000) == 3  # one per core, at most one per chunk
    assert default(10, 200, predicted_wall_s=120.0) == 4 and default(10, 10**6, predicted_wall_s=5.0) == 1
    monkeypatch.setattr(cluster_module, "cores", lambda: 1)
    assert default(10, 100_000) == 1
