"""End-to-end time and peak memory of a T1D CGM product on the fast path, with 1 and N workers,
and the envelope's predicted cost against the actual one.

Each virtual patient: drawn from the default T1D population, one day with three meals and
open-loop basal-bolus insulin (its own carbohydrate ratio), simulated on the given solver path
(default ``fast``, float32) at a 5-min output step; a GuardianRT CGM reading every 5 min with
sensor noise; glycaemic outcomes and hypoglycaemia labels; the four Parquet files and the
manifest. Every (size, workers) runs in a fresh process, so its peak RSS is its own: it opens
the chunk runner (``twinloop.scale.open_runner``: this process for 1 worker, a Dask LocalCluster
of N one-thread processes otherwise), asks the envelope for the run's predicted wall time and
peak memory (``twinloop.products.envelope.estimate``), and generates the product as the CLI
does, compiled solves loaded from the persistent cache (a first run on a machine compiles them;
``--warm`` runs one chunk per worker first, outside the timing, to see steady-state scaling).
The time excludes the cluster's start (reported apart). Peak RSS is the largest of the client
and every worker. Target: 1e6 patients in <= 120 s, peak RSS <= 4 GB, 1 -> 2 workers >= 0.8x
linear. Prints the figures and writes ``benchmarks/results/bench_cohort.json``
(``bench_cohort_quick.json`` with ``--quick``).

    .venv/bin/python benchmarks/bench_cohort.py [--sizes 100000 1000000] [--workers 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
TARGET = "1e6 patients in <= 120 s, peak RSS <= 4 GB (client and workers), 1 -> 2 workers >= 0.8x linear"


def spec(n: int, args: argparse.Namespace) -> dict:
    return {
        "name": f"bench-t1d-{n}",
        "model": "t1d-uva-padova",
        "population": "default",
        "n": n,
        "seed": 1,
        "duration": 1440,
        "resolution": 5,
        "chunk_size": args.chunk,
        "batch_size": args.batch,
        "solver": {"rtol": args.rtol, "atol": args.atol, "path": args.path, "precision": args.precision},
        "treatment": {"kind": "basal_bolus", "meals": [[420, 50], [720, 70], [1140, 80]]},
        "observations": [
            {
                "name": "cgm",
                "observable": "subcutaneous_glucose",
                "schedule": {"every": 5},
                "error": {"kind": "cgm", "sensor": "GuardianRT"},
            },
        ],
        "outcomes": {"kind": "glycaemic", "observable": "plasma_glucose"},
    }


def one(n: int, workers: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Generate one product in this process (and its workers); report time, memory and the envelope."""
    from twinloop.products.dataset import Product, generate
    from twinloop.products.envelope import estimate
    from twinloop.products.spec import ProductSpec
    from twinloop.scale import open_runner

    parsed = ProductSpec.from_dict(spec(n, args))
    predicted = estimate(parsed, workers=workers).to_dict()  # calibrates the model here once
    t0 = time.perf_counter()
    with open_runner(workers=workers) as runner:
        started = time.perf_counter() - t0
        if args.warm:  # one chunk per worker first, outside the timing
            warm = ProductSpec.from_dict({**spec(min(n, args.chunk * workers), args), "name": "warm-up"})
            generate(warm, out / "warm", progress=False, runner=runner)
        t1 = time.perf_counter()
        generate(parsed, out / "product", progress=False, runner=runner, envelope=predicted)
        elapsed = time.perf_counter() - t1
    manifest = Product.open(out / "product").manifest
    size = sum((out / "product" / f).stat().st_size for f in manifest["files"])
    envelope = manifest["envelope"]
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    worker_peak = int(envelope.get("actual_worker_peak_rss_bytes", 0))
    return {
        "patients": n,
        "workers": workers,
        "ran": envelope.get("ran"),
        "seconds": elapsed,
        "cluster_start_s": started,
        "patients_per_s": n / elapsed,
        "client_peak_rss_gb": client_peak / 1e9,
        "worker_peak_rss_gb": worker_peak / 1e9,
        "peak_rss_gb": max(client_peak, worker_peak) / 1e9,
        "observation_rows": manifest["files"]["observations.parquet"]["rows"],
        "bytes_on_disk": size,
        "simulation_failures": manifest["simulation_failures"],
        "engine": manifest.get("engine"),
        "envelope": envelope,
    }


def fresh_process(n: int, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`one` in a new interpreter (its own peak RSS) in a temporary folder."""
    work = Path(tempfile.mkdtemp(prefix="twinloop-bench-"))
    options = ["--chunk", str(args.chunk), "--batch", str(args.batch), "--rtol", str(args.rtol)]
    options += ["--atol", str(args.atol), "--path", args.path, "--precision", args.precision]
    options += ["--warm"] if args.warm else []
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--one-workers", str(workers), "--dir", str(work), *options],
            capture_output=True,
            text=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"the run of {n} patients on {workers} workers failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def show(row: dict[str, Any]) -> None:
    engine = row.get("engine") or {}
    check = engine.get("check") or {}
    errors = ", ".join(f"{k} {v:.3g}" for k, v in (check.get("max_error") or {}).items())
    env = row["envelope"]
    print(
        f"{row['patients']:>9,d} patients x 1 day, {row['workers']} worker(s): {row['seconds']:7.1f} s "
        f"({row['patients_per_s']:,.0f} patients/s; cluster start {row['cluster_start_s']:.1f} s apart), peak RSS "
        f"{row['peak_rss_gb']:.2f} GB (client {row['client_peak_rss_gb']:.2f}, worker {row['worker_peak_rss_gb']:.2f}),"
        f" {row['observation_rows']:,d} rows, {row['bytes_on_disk'] / 1e9:.2f} GB on disk; path "
        f"{'/'.join(engine.get('paths', []))}" + (f", self-check max error {errors}" if errors else "") + "\n"
        f"{'':>12}envelope: predicted {env['predicted_wall_s']:.1f} s and "
        f"{env['predicted_peak_rss_bytes'] / 1e9:.2f} GB, actual {env['actual_wall_s']:.1f} s and "
        f"{env['actual_peak_rss_bytes'] / 1e9:.2f} GB ({env['basis']})",
        flush=True,
    )


def scaling(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per size: speed-up from 1 to N workers divided by N (1.0 is linear)."""
    out = {}
    for row in rows:
        base = next((r for r in rows if r["patients"] == row["patients"] and r["workers"] == 1), None)
        if base is not None and row["workers"] > 1:
            out[f"{row['patients']}x{row['workers']}"] = base["seconds"] / row["seconds"] / row["workers"]
    return out


def combined_error(wall_ratios: list[float], quick: bool) -> dict[str, Any] | None:
    """The wall-time prediction error over these runs and bench_simulate's latest (same mode), if it ran."""
    other = RESULTS / ("bench_simulate_quick.json" if quick else "bench_simulate.json")
    try:
        simulate = [float(r) for r in json.loads(other.read_text())["cost_model_predicted_over_actual"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ratios = [*wall_ratios, *simulate]
    median = statistics.median(ratios)
    worst = max(max(r, 1 / r) for r in ratios)
    print(
        f"envelope prediction error over these {len(wall_ratios)} product runs and bench_simulate's {len(simulate)} "
        f"runs ({other.name}): wall time predicted / actual median {median:.2f}, worst factor {worst:.2f}"
    )
    return {"runs": len(ratios), "median_wall_ratio": median, "worst_wall_factor": worst}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="patients; the target is 1000000")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--path", choices=["accurate", "fast", "auto"], default="fast")
    parser.add_argument("--precision", choices=["float64", "float32"], default="float32")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-6)
    parser.add_argument("--warm", action="store_true", help="run one chunk per worker before the timed run "
                        "(steady-state scaling; the envelope still predicts a cold run)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="4,000 patients in chunks of 1,000 (smoke test)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.sizes) < 1 or min(args.workers) < 1 or args.chunk < 1 or args.batch < 1:
        parser.error("--sizes, --workers, --chunk and --batch must be whole numbers >= 1")
    if args.quick:
        args.sizes, args.chunk, args.batch = [4000], 1000, 1000
    return args


def main() -> None:
    from twinloop.products.envelope import prediction_error

    args = parse()
    if args.one:
        print(json.dumps(one(args.one, args.one_workers, args.dir, args)))
        return
    rows = []
    for n in args.sizes:
        for workers in args.workers:
            rows.append(fresh_process(n, workers, args))
            show(rows[-1])
    speedups = scaling(rows)
    for key, value in speedups.items():
        print(f"scaling {key.replace('x', ' patients, 1 -> ')} workers: {value:.2f}x linear (target >= 0.8)")
    error = prediction_error([r["envelope"] for r in rows])
    print(
        f"envelope prediction error over {error['runs']} runs (predicted / actual): wall time median "
        f"{error['median_wall_ratio']:.2f}, worst factor {error['worst_wall_factor']:.2f}; peak memory median "
        f"{error['median_peak_rss_ratio']:.2f}, worst factor {error['worst_peak_rss_factor']:.2f}"
    )
    combined = combined_error(error["wall_ratio"], args.quick)
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": "cohort",
        "quick": args.quick,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "solver": {"path": args.path, "precision": args.precision, "rtol": args.rtol, "atol": args.atol},
        "chunk": args.chunk,
        "batch": args.batch,
        "warm": args.warm,
        "target": TARGET,
        "results": rows,
        "scaling_vs_linear": speedups,
        "envelope_prediction_error": error,
        "combined_wall_prediction_error": combined,
    }
    out = RESULTS / ("bench_cohort_quick.json" if args.quick else "bench_cohort.json")
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
