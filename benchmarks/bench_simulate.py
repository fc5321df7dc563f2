"""Throughput of the engine on the UVA/Padova core, and simglucose's in the same run.

Each virtual patient: one day, three meals (50/70/80 g), open-loop basal-bolus insulin
with its own carbohydrate ratio, 1-minute output grid (plasma, subcutaneous glucose,
plasma insulin), float64, adaptive Tsit5 at rtol = atol = 1e-6, a step size per patient.
Prints the figures and writes them as JSON.

    .venv/bin/python benchmarks/bench_simulate.py [--sizes 1000 10000 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _cohort(n: int, seed: int = 0):
    import twinloop as tl
    from twinloop.cli.demo import perturbed_cohort

    model = tl.models.get("t1d-uva-padova")
    params, plans = perturbed_cohort(model, n, seed)
    return model, params, plans


def _run(n: int, seed: int, chunk_size: int) -> dict[str, float]:
    """Simulate ``n`` patient-days in this process; time plan building and integration apart."""
    import twinloop as tl
    from twinloop.simulate import simulate_chunks

    t0 = time.perf_counter()
    model, params, plans = _cohort(n, seed)
    t1 = time.perf_counter()
    warm = min(chunk_size, n)
    # compile (or load from the persistent cache) outside the timing
    deque(
        simulate_chunks(model, params[:warm], plans[:warm], times=np.arange(0.0, 1441.0), chunk_size=chunk_size),
        maxlen=0,
    )
    t2 = time.perf_counter()
    failures = 0
    checksum = 0.0
    for chunk in simulate_chunks(model, params, plans, times=np.arange(0.0, 1441.0), chunk_size=chunk_size):
        failures += len(chunk.failures)
        checksum += float(np.nanmean(chunk["plasma_glucose"]))
    t3 = time.perf_counter()
    del tl
    return {"plans_s": t1 - t0, "compile_s": t2 - t1, "simulate_s": t3 - t2, "failures": failures, "checksum": checksum}


def engine(n: int, workers: int, chunk_size: int) -> dict[str, float]:
    """Patient-days per second for ``n`` patients over ``workers`` processes."""
    if workers == 1:
        part = _run(n, 0, chunk_size)
        parts = [part]
        wall = part["plans_s"] + part["simulate_s"]
    else:
        shares = [n // workers + (i < n % workers) for i in range(workers)]
        start = time.perf_counter()
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_run, shares, range(workers), [chunk_size] * workers))
        wall = time.perf_counter() - start - max(p["compile_s"] for p in parts)
    sim = max(p["simulate_s"] for p in parts)
    return {
        "n": n,
        "workers": workers,
        "patient_days_per_s": n / sim,
        "patient_days_per_s_incl_plans": n / wall,
        "simulate_s": sim,
        "plans_s": max(p["plans_s"] for p in parts),
        "compile_s": max(p["compile_s"] for p in parts),
        "failures": sum(p["failures"] for p in parts),
    }


def simglucose_seconds_per_day(names: list[str]) -> list[float]:
    """Wall seconds simglucose takes for one patient-day, per patient."""
    import importlib.util

    path = Path(__file__).parents[1] / "tests" / "data" / "make_simglucose_reference.py"
    spec = importlib.util.spec_from_file_location("make_reference", path)
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    out = []
    for name in names:
        start = time.perf_counter()
        maker.simulate_patient(name)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--simglucose-patients", nargs="*", default=["adult#001", "child#001"])
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        for w in args.workers:
            row = engine(n, w, args.chunk_size)
            rows.append(row)
            print(
                f"N={n:>7,} workers={w}: {row['patient_days_per_s']:8,.0f} patient-days/s integrating "
                f"({row['patient_days_per_s_incl_plans']:,.0f}/s incl. building plans), "
                f"compile {row['compile_s']:.1f} s, failures {row['failures']}",
                flush=True,
            )
    peer = simglucose_seconds_per_day(args.simglucose_patients)
    sg = float(np.mean(peer))
    best = max(r["patient_days_per_s"] for r in rows)
    print(f"simglucose: {sg:.1f} s per patient-day ({', '.join(f'{s:.1f}' for s in peer)})")
    print(f"best twinloop / simglucose speed-up: {best * sg:,.0f}x")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "benchmark": "simulate",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "engine": rows,
        "simglucose_seconds_per_patient_day": dict(zip(args.simglucose_patients, peer, strict=True)),
        "speedup_best_vs_simglucose": best * sg,
    }
    out = RESULTS / "bench_simulate.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
