"""End-to-end time and peak memory of a T1D CGM product: sample, simulate, observe,
label and write, streamed chunk by chunk.

Each virtual patient: drawn from the default T1D population, one day with three meals
and open-loop basal-bolus insulin (its own carbohydrate ratio), simulated at a 5-min
output step; a GuardianRT CGM reading every 5 min with sensor noise; glycaemic
outcomes and hypoglycaemia labels; the four Parquet files and the manifest. Every size
runs in a fresh process, so its peak RSS is its own. Prints the figures and writes JSON.

    .venv/bin/python benchmarks/bench_cohort.py [--sizes 100000 1000000] [--chunk 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def spec(n: int, chunk: int, batch: int, rtol: float = 1e-6, atol: float = 1e-6) -> dict:
    return {
        "name": f"bench-t1d-{n}",
        "model": "t1d-uva-padova",
        "population": "default",
        "n": n,
        "seed": 1,
        "duration": 1440,
        "resolution": 5,
        "chunk_size": chunk,
        "batch_size": batch,
        "solver": {"rtol": rtol, "atol": atol},
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


def one(n: int, chunk: int, batch: int, out: Path, rtol: float, atol: float) -> dict:
    """Generate one product in this process and report time and peak RSS."""
    from twinloop.products.dataset import Product, generate
    from twinloop.products.spec import ProductSpec

    warm = ProductSpec.from_dict({**spec(min(chunk, n), chunk, batch, rtol, atol), "name": "warm-up"})
    generate(warm, out / "warm", progress=False)  # compile (or load the cache) outside the timing
    parsed = ProductSpec.from_dict(spec(n, chunk, batch, rtol, atol))
    t0 = time.perf_counter()
    generate(parsed, out / "product", progress=False)
    elapsed = time.perf_counter() - t0
    manifest = Product.open(out / "product").manifest
    size = sum((out / "product" / f).stat().st_size for f in manifest["files"])
    return {
        "patients": n,
        "seconds": elapsed,
        "patients_per_s": n / elapsed,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "observation_rows": manifest["files"]["observations.parquet"]["rows"],
        "bytes_on_disk": size,
        "simulation_failures": manifest["simulation_failures"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-6)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.chunk, args.batch, args.dir, args.rtol, args.atol)))
        return
    rows = []
    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="twinloop-bench-"))
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    str(n),
                    "--chunk",
                    str(args.chunk),
                    "--batch",
                    str(args.batch),
                    "--rtol",
                    str(args.rtol),
                    "--atol",
                    str(args.atol),
                    "--dir",
                    str(work),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{n:>9,d} patients x 1 day -> CGM product: {row['seconds']:7.1f} s ({row['patients_per_s']:,.0f} "
            f"patients/s), peak RSS {row['peak_rss_gb']:.2f} GB, {row['observation_rows']:,d} observation rows, "
            f"{row['bytes_on_disk'] / 1e9:.2f} GB on disk",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": "cohort",
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "chunk": args.chunk,
        "batch": args.batch,
        "rtol": args.rtol,
        "atol": args.atol,
        "target": "1e6 patients in <= 120 s, peak RSS <= 4 GB",
        "results": rows,
    }
    name = "bench_cohort.json" if args.rtol == 1e-6 and args.atol == 1e-6 else f"bench_cohort_rtol{args.rtol:g}.json"
    (RESULTS / name).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
