"""Throughput of the engine on the UVA/Padova core, fast against accurate path, and simglucose's in the same run.

Each virtual patient: one of the 30 published patients with log-normal perturbations (CV 20 %)
of seven rate parameters, one day, three meals (50/70/80 g), open-loop basal-bolus insulin with
the patient's own carbohydrate ratio, 1-minute output grid (plasma, subcutaneous glucose,
plasma insulin). Three arms: the accurate path (adaptive Tsit5, rtol = atol = 1e-6, float64),
the fast path in float64 and in float32 (fixed-step RK4, each chunk checked against the
accurate path on a few patients). Each arm runs with 1 worker (this process) and with N workers
(a Dask LocalCluster of N processes, one thread each): the cohort is cut into tasks of
``--chunk-size`` patients, each task simulates its patients and returns a small summary, not
the trajectories. Compilation is excluded: every worker runs every task size once first.
Also: the largest |fast - accurate| plasma glucose over the whole cohort (from the 1-worker
runs), the fast path's self-check record, the cost model's predicted time of each run
(``twinloop.simulate.cost``, calibrated on this machine) against the measured one, and
simglucose's seconds per patient-day. Prints the figures and writes
``benchmarks/results/bench_simulate.json`` (``bench_simulate_quick.json`` with ``--quick``).

    .venv/bin/python benchmarks/bench_simulate.py [--patients 10000] [--workers 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
MEALS = ((420.0, 50.0), (720.0, 70.0), (1080.0, 80.0))
PERTURBED = ("kabs", "kp2", "kp3", "Vmx", "ki", "k1", "k2")
ARMS = {
    "accurate": {"path": "accurate"},
    "fast-float64": {"path": "fast", "precision": "float64"},
    "fast-float32": {"path": "fast", "precision": "float32"},
}
TARGET_RATE = 20_000.0
TARGET_ERROR_MG_DL = 0.5


def cohort(n: int, seed: int = 0, cv: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` perturbed published patients: their parameters ``(n, P)`` and carbohydrate ratios (g/U)."""
    import twinloop as tl

    model = tl.models.get("t1d-uva-padova")
    names = sorted(model.presets)
    therapy = tl.models.t1d_uva_padova.therapies()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(names), size=n)
    params = np.stack([model.preset(name) for name in names])[pick]
    for name in PERTURBED:
        j = model.parameter_names.index(name)
        params[:, j] *= np.exp(rng.normal(-0.5 * cv**2, cv, size=n))
    lower = np.array([p.lower for p in model.parameters])
    upper = np.array([p.upper for p in model.parameters])
    ratios = np.array([therapy[names[k]].carb_ratio_g_per_U for k in pick], dtype=float)
    return np.clip(params, lower, upper), ratios


def settings(arm: str) -> Any:
    from twinloop.simulate import SolverSettings

    return SolverSettings(**ARMS[arm])


def task(arm: str, params: np.ndarray, ratios: np.ndarray, chunk_size: int, keep: bool = False) -> dict[str, Any]:
    """Simulate one task's patients on ``arm``; a small summary (plus plasma glucose when ``keep``)."""
    import twinloop as tl
    from twinloop.simulate import simulate_chunks

    model = tl.models.get("t1d-uva-padova")
    start = time.perf_counter()
    plan = tl.models.t1d_uva_padova.basal_bolus(model.param_map(params.T), MEALS, carb_ratio_g_per_U=ratios)
    glucose_at = model.observable_names.index("plasma_glucose")
    summary: dict[str, Any] = {"patients": len(params), "failures": 0, "glucose_sum": 0.0, "checks": [], "paths": set()}
    kept = []
    for chunk in simulate_chunks(model, params, plan, times=np.arange(0.0, 1441.0), settings=settings(arm),
                                 chunk_size=chunk_size):  # fmt: skip
        glucose = chunk.observables[:, :, glucose_at]
        summary["failures"] += len(chunk.failures)
        summary["glucose_sum"] += float(np.nansum(np.nanmean(glucose, axis=1)))
        summary["paths"].add(chunk.settings["path"])
        if chunk.check:
            summary["checks"].append({k: chunk.check[k] for k in ("max_error", "passed", "fallback_chunks", "reason")
                                      if k in chunk.check})  # fmt: skip
        if keep:
            kept.append(glucose)
    summary["seconds"] = time.perf_counter() - start
    summary["paths"] = sorted(summary["paths"])
    if keep:
        summary["plasma_glucose"] = np.concatenate(kept)
    return summary


def tasks_of(n: int, size: int) -> list[slice]:
    return [slice(lo, min(lo + size, n)) for lo in range(0, n, size)]


def warm(arm: str, params: np.ndarray, ratios: np.ndarray, sizes: Iterable[int], chunk_size: int) -> None:
    """Compile (or load from the cache) every shape the timed run will use."""
    for size in sorted(set(sizes)):
        task(arm, params[:size], ratios[:size], chunk_size)


def in_process(arm: str, params: np.ndarray, ratios: np.ndarray, chunk_size: int) -> tuple[list[dict], float]:
    parts = tasks_of(len(params), chunk_size)
    warm(arm, params, ratios, [s.stop - s.start for s in parts], chunk_size)
    start = time.perf_counter()
    results = [task(arm, params[s], ratios[s], chunk_size, keep=True) for s in parts]
    return results, time.perf_counter() - start


def on_cluster(client: Any, arm: str, params: np.ndarray, ratios: np.ndarray, chunk_size: int) -> tuple[list, float]:
    parts = tasks_of(len(params), chunk_size)
    client.run(warm, arm, params, ratios, [s.stop - s.start for s in parts], chunk_size)  # on every worker
    start = time.perf_counter()
    futures = [client.submit(task, arm, params[s], ratios[s], chunk_size, pure=False) for s in parts]
    results = client.gather(futures)
    return results, time.perf_counter() - start


def summarise(arm: str, workers: int, results: list[dict], wall: float, predicted: float) -> dict[str, Any]:
    n = sum(r["patients"] for r in results)
    errors: dict[str, float] = {}
    for check in (c for r in results for c in r["checks"]):
        for name, value in check.get("max_error", {}).items():
            errors[name] = max(errors.get(name, 0.0), value)
    checks = [c for r in results for c in r["checks"]]
    return {
        "arm": arm,
        "workers": workers,
        "patients": n,
        "seconds": wall,
        "patient_days_per_s": n / wall,
        "path_used": sorted({p for r in results for p in r["paths"]}),
        "failures": sum(r["failures"] for r in results),
        "mean_plasma_glucose": sum(r["glucose_sum"] for r in results) / n,
        "self_check": None
        if not checks
        else {
            "chunks_checked": len(checks),
            "max_error": errors,
            "all_passed": all(c.get("passed", True) for c in checks),
            "fallback_chunks": sum(len(c.get("fallback_chunks", [])) for c in checks),
        },
        "predicted_seconds": predicted,
        "predicted_over_actual": predicted / wall,
    }


def predicted_seconds(arm: str, workers: int, n: int) -> float:
    """The cost model's compute time for ``n`` patient-days (calibrating the arm here once)."""
    import twinloop as tl
    from twinloop.products.envelope import scaling_for
    from twinloop.simulate import cost

    rate = cost.measure_rate(tl.models.get("t1d-uva-padova"), settings(arm))
    return n / (rate * scaling_for(workers))


def simglucose_seconds_per_day(names: list[str]) -> dict[str, float]:
    """Wall seconds simglucose takes for one patient-day (its own closed loop), per patient."""
    import importlib.util

    path = Path(__file__).parents[1] / "tests" / "data" / "make_simglucose_reference.py"
    spec = importlib.util.spec_from_file_location("make_reference", path)
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    out = {}
    for name in names:
        start = time.perf_counter()
        maker.simulate_patient(name)
        out[name] = time.perf_counter() - start
    return out


def run_arms(args: argparse.Namespace, params: np.ndarray, ratios: np.ndarray, report: Callable[[dict], None]) -> dict:
    """Every arm with every worker count; the 1-worker runs keep plasma glucose for the comparison."""
    from twinloop.scale import open_runner

    rows, glucose = [], {}
    n = len(params)
    if 1 in args.workers:
        for arm in args.arms:
            results, wall = in_process(arm, params, ratios, args.chunk_size)
            glucose[arm] = np.concatenate([r.pop("plasma_glucose") for r in results])
            rows.append(summarise(arm, 1, results, wall, predicted_seconds(arm, 1, n)))
            report(rows[-1])
    for workers in (w for w in args.workers if w > 1):
        with open_runner(workers=workers) as runner:
            client = runner.client  # type: ignore[attr-defined]
            if args.pin:
                pin(client)
            for arm in args.arms:
                results, wall = on_cluster(client, arm, params, ratios, args.chunk_size)
                rows.append(summarise(arm, workers, results, wall, predicted_seconds(arm, workers, n)))
                report(rows[-1])
    accuracy = {}
    if "accurate" in glucose:
        for arm, values in glucose.items():
            if arm != "accurate":
                diff = np.abs(values - glucose["accurate"])
                worst = np.nanmax(diff, axis=1)
                accuracy[arm] = {"max_abs_plasma_glucose_mg_dl": float(np.nanmax(worst)),
                                 "p99_patient_max_mg_dl": float(np.nanpercentile(worst, 99))}  # fmt: skip
    return {"rows": rows, "accuracy": accuracy}


def pin(client: Any) -> None:
    """Pin each worker process to its own core."""
    cores = sorted(os.sched_getaffinity(0))
    for i, address in enumerate(sorted(client.scheduler_info()["workers"])):
        client.run(os.sched_setaffinity, 0, {cores[i % len(cores)]}, workers=[address])


def show(row: dict[str, Any]) -> None:
    check = row["self_check"]
    checked = ""
    if check:
        errors = ", ".join(f"{k} {v:.3g}" for k, v in check["max_error"].items())
        checked = f"; self-check {check['chunks_checked']} chunks, max error {errors}, "
        checked += f"fallbacks {check['fallback_chunks']}"
    predicted = f", predicted {row['predicted_seconds']:.1f} s"
    print(
        f"{row['arm']:>13} workers={row['workers']}: {row['patient_days_per_s']:9,.0f} patient-days/s "
        f"({row['patients']:,} in {row['seconds']:.2f} s{predicted}), path {'/'.join(row['path_used'])}, "
        f"failures {row['failures']}{checked}",
        flush=True,
    )


def conclude(rows: list[dict], accuracy: dict[str, dict], peer: dict[str, float]) -> list[float]:
    """Print the comparison lines; the cost model's predicted / actual ratios."""
    for arm, acc in accuracy.items():
        print(
            f"{arm}: max |fast - accurate| plasma glucose {acc['max_abs_plasma_glucose_mg_dl']:.4f} mg/dL over the "
            f"cohort (99th percentile of patients' max {acc['p99_patient_max_mg_dl']:.4f})"
        )
    ratios = [r["predicted_over_actual"] for r in rows]
    if ratios:
        worst = max(max(r, 1 / r) for r in ratios)
        print(
            f"envelope (cost model) predicted / actual simulate time over {len(ratios)} runs: median "
            f"{float(np.median(ratios)):.2f}, worst factor {worst:.2f}"
        )
    sg = float(np.mean(list(peer.values()))) if peer else math.nan
    if peer:
        print(f"simglucose: {sg:.1f} s per patient-day ({', '.join(f'{k} {v:.1f}' for k, v in peer.items())})")
    two = [r for r in rows if r["workers"] <= 2]
    if two:
        best = max(two, key=lambda r: r["patient_days_per_s"])
        checked = (best["self_check"] or {}).get("max_error", {}).get("plasma_glucose", 0.0)
        error = accuracy.get(best["arm"], {}).get("max_abs_plasma_glucose_mg_dl", checked)
        met = best["patient_days_per_s"] >= TARGET_RATE and error <= TARGET_ERROR_MG_DL
        print(
            f"best on <= 2 workers: {best['arm']} with {best['workers']}, {best['patient_days_per_s']:,.0f} "
            f"patient-days/s at {error:.3f} mg/dL ({best['patient_days_per_s'] * sg:,.0f}x simglucose); target "
            f">= {TARGET_RATE:,.0f}/s at <= {TARGET_ERROR_MG_DL} mg/dL: {'met' if met else 'MISSED'}"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--chunk-size", type=int, default=2500, help="patients per task and per compiled batch")
    parser.add_argument("--simglucose-patients", nargs="*", default=["adult#001", "child#001"])
    parser.add_argument("--pin", action="store_true", help="pin each Dask worker to its own core")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1,000 patients, one simglucose patient (smoke test)")
    args = parser.parse_args()
    if args.patients < 1 or args.chunk_size < 1 or min(args.workers) < 1:
        parser.error("--patients, --chunk-size and --workers must be whole numbers >= 1")
    if args.quick:
        args.patients, args.chunk_size, args.simglucose_patients = 1000, 500, args.simglucose_patients[:1]
    params, ratios = cohort(args.patients, args.seed)
    found = run_arms(args, params, ratios, show)
    rows, accuracy = found["rows"], found["accuracy"]
    peer = simglucose_seconds_per_day(args.simglucose_patients) if args.simglucose_patients else {}
    ratios_pred = conclude(rows, accuracy, peer)
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": "simulate",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "patients": args.patients,
        "chunk_size": args.chunk_size,
        "target": f">= {TARGET_RATE:,.0f} patient-days/s on 2 cores at <= {TARGET_ERROR_MG_DL} mg/dL",
        "runs": rows,
        "accuracy_vs_accurate": accuracy,
        "cost_model_predicted_over_actual": ratios_pred,
        "simglucose_seconds_per_patient_day": peer,
    }
    out = RESULTS / ("bench_simulate_quick.json" if args.quick else "bench_simulate.json")
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
