"""Cost of one ``PatientTwin.sync`` cycle against the length of the twin's history.

Two twins, each synced cycle after cycle, past checkpoints of 10, 100, 1,000 and 3,000
prior syncs:

- ``t1d``: UVA/Padova, created (EnKF from the population prior) on one day of synthetic
  CGM, insulin and meals; each sync brings the next hour (12 CGM readings and that
  hour's doses);
- ``l63``: Lorenz-63 (Sakov et al. 2012 settings: all three components observed every
  0.25 time units with variance 2), each sync one observation time (3 readings).

Every cycle's wall time is split into the engine's propagation, the filter's analysis
update, and the rest: the sync's overhead (validation, deduplication, the log, dose
windows, snapshots, the report). For each checkpoint the table shows the median over
the ``--measure`` cycles that follow it. Target: overhead <= 5 ms, flat in the history.
Also reported once per model: a 24-h forecast after the last cycle.

The target (issue 20): one sync plus a 24-h forecast of a 1,000-member T1D twin in
<= 200 ms, median over >= 20 cycles. One twin is created and copied; its copies run the
same batches on the engine's fast and accurate paths side by side, alternating cycle by
cycle (all see the same machine load), after ``--target-warmup`` cycles that compile
every shape; the fast path in float64 and in float32. Reported per variant: the median
and 90th percentile of the sync, the forecast and their sum, the process CPU time; the
path that ran; the self-check's largest error; and how far the forecast's member median
lies from the accurate one's.

    .venv/bin/python benchmarks/bench_sync.py [--members 100] [--checkpoints 10 100 1000 3000]
    .venv/bin/python benchmarks/bench_sync.py --models --target-members 1000 --target-cycles 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 5.0
CYCLE_TARGET_MS = 200.0  # sync + 24-h forecast of 1,000 members (issue 20)
VARIANTS = {  # name: (path, precision)
    "fast": ("fast", "float64"),
    "fast-float32": ("fast", "float32"),
    "accurate": ("accurate", "float64"),
}


class Clock:
    """Seconds spent inside the wrapped engine propagation and filter update."""

    def __init__(self) -> None:
        self.propagate = 0.0
        self.update = 0.0

    def timed(self, fn: Callable[..., Any], field: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self, field, getattr(self, field) + time.perf_counter() - t0)

        return wrapper


@contextmanager
def instrumented(clock: Clock) -> Iterator[None]:
    """Time ``sync.propagate`` and every filter's ``update`` while syncing."""
    from twinloop.twin import sync
    from twinloop.twin.config import TwinConfig

    propagate, make_filter = sync.propagate, TwinConfig.filter

    def timed_filter(config: TwinConfig) -> Any:
        filt = make_filter(config)
        filt.update = clock.timed(filt.update, "update")
        return filt

    sync.propagate = clock.timed(propagate, "propagate")
    TwinConfig.filter = timed_filter  # type: ignore[method-assign]
    try:
        yield
    finally:
        sync.propagate, TwinConfig.filter = propagate, make_filter  # type: ignore[method-assign]


def t1d_case(cycles: int, members: int) -> tuple[Any, list[tuple[pd.DataFrame, pd.DataFrame]]]:
    """A T1D twin after one day, and ``cycles`` hourly batches of CGM and doses."""
    import twinloop as tl
    from twinloop.calibrate import NoiseModel
    from twinloop.cohort import Population
    from twinloop.models import t1d_uva_padova as t1d
    from twinloop.twin import PatientTwin, TwinConfig, synthetic_record
    from twinloop.twin.synthetic import ORIGIN, window

    model = tl.models.get("t1d-uva-padova")
    p = model.preset("adult#001")
    days = int(np.ceil(cycles / 24)) + 2
    meals = [(d * 1440 + t, g) for d in range(days) for t, g in [(420, 50), (720, 70), (1140, 80)]]
    plan = t1d.basal_bolus(model.param_map(p), meals, t_end=days * 1440.0)
    obs, doses, _ = synthetic_record(
        model,
        p,
        plan,
        np.arange(5.0, days * 1440 + 1, 5.0),
        observable="subcutaneous_glucose",
        noise=NoiseModel(8.0, 0.05),
        seed=1,
    )
    day = pd.Timedelta("1D")
    twin = PatientTwin.create(
        model,
        window(obs, ORIGIN - pd.Timedelta("1s"), ORIGIN + day),
        window(doses, ORIGIN - pd.Timedelta("1s"), ORIGIN + day),
        prior=Population.default(model),
        method="enkf",
        config=TwinConfig(members=members),
    )
    hour = pd.Timedelta(hours=1)
    starts = [ORIGIN + day + k * hour for k in range(cycles)]
    return twin, [(window(obs, s, s + hour), window(doses, s, s + hour)) for s in starts]


def lorenz63_model() -> Any:
    """Lorenz-63 as a twinloop model (time unit: hours, so that timestamps map to it)."""
    import jax.numpy as jnp

    from twinloop.models.base import Model, Observable, Parameter, State
    from twinloop.models.inputs import Inputs

    def rhs(t: Any, x: Any, u: Any, p: Any) -> Any:
        del t, u
        return jnp.stack(
            [p["sigma"] * (x[1] - x[0]), p["rho"] * x[0] - x[1] - x[0] * x[2], x[0] * x[1] - p["beta"] * x[2]]
        )

    def initial_state(p: Any) -> Any:
        shape = jnp.shape(p["rho"])
        return jnp.stack([jnp.full(shape, 1.509), jnp.full(shape, -1.531), jnp.full(shape, 25.46)])

    return Model(
        id="lorenz-63",
        version="1.0.0",
        name="Lorenz-63",
        description="Lorenz (1963) with the classical parameters.",
        time_unit="h",
        states=tuple(State(n, "1", nonnegative=False) for n in "xyz"),
        parameters=(
            Parameter("sigma", "1", 10.0, 1.0, 100.0),
            Parameter("rho", "1", 28.0, 1.0, 100.0),
            Parameter("beta", "1", 8.0 / 3.0, 0.1, 10.0),
        ),
        inputs=(),
        observables=tuple(Observable(n, "1", lambda x, p, i=i: x[i], nonnegative=False) for i, n in enumerate("xyz")),
        rhs=rhs,
        initial_state=initial_state,
        standard_scenario=lambda p: (Inputs(), 1.0),
    )


def l63_case(cycles: int, members: int) -> tuple[Any, list[tuple[pd.DataFrame, pd.DataFrame]]]:
    """A Lorenz-63 twin after its first observation, and ``cycles`` one-time batches."""
    import importlib.util

    from twinloop.calibrate import GaussianPrior
    from twinloop.connect.schema import empty_doses
    from twinloop.twin import PatientTwin, TwinConfig
    from twinloop.twin.synthetic import ORIGIN

    path = Path(__file__).parents[1] / "tests" / "data" / "lorenz63_model.py"
    spec = importlib.util.spec_from_file_location("lorenz63_model", path)
    assert spec is not None and spec.loader is not None
    l63 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(l63)
    rng = np.random.default_rng(3)
    x = l63.X0 + np.sqrt(l63.B0_VAR) * rng.standard_normal(3)
    rows = []
    for k in range(1, cycles + 2):
        x = l63.propagate(x, l63.DKO)
        y = x + np.sqrt(l63.R_VAR) * rng.standard_normal(3)
        when = ORIGIN + pd.Timedelta(hours=k * l63.DKO * l63.DT)
        rows += [("p001", when, v, float(value), "1", "", "synthetic") for v, value in zip("xyz", y, strict=True)]
    obs = pd.DataFrame(rows, columns=["subject_id", "time", "variable", "value", "unit", "code", "source"])
    noise = {v: {"additive": float(np.sqrt(l63.R_VAR)), "proportional": 0.0} for v in "xyz"}
    twin = PatientTwin.create(
        lorenz63_model(),
        obs.iloc[:3],
        prior=GaussianPrior(("rho",), np.log([28.0]), np.array([[0.05**2]])),
        method="enkf",
        config=TwinConfig(members=members, noise=noise, recalibration="none"),
        origin=ORIGIN,
    )
    batches = [(obs.iloc[3 * k : 3 * k + 3].reset_index(drop=True), empty_doses()) for k in range(1, cycles + 1)]
    return twin, batches


def run(twin: Any, batches: list[tuple[pd.DataFrame, pd.DataFrame]]) -> np.ndarray:
    """Per cycle: total, propagate and update seconds ``(cycles, 3)``."""
    clock = Clock()
    out = np.zeros((len(batches), 3))
    with instrumented(clock):
        for k, (obs, doses) in enumerate(batches):
            p0, u0 = clock.propagate, clock.update
            t0 = time.perf_counter()
            twin.sync(obs, doses if not doses.empty else None)
            out[k] = time.perf_counter() - t0, clock.propagate - p0, clock.update - u0
    return out


def summarize(name: str, cycles: np.ndarray, checkpoints: list[int], measure: int) -> list[dict[str, Any]]:
    rows = []
    for h in checkpoints:
        part = 1e3 * cycles[h : h + measure]
        total, prop, upd = np.median(part, axis=0)
        overhead = np.median(part[:, 0] - part[:, 1] - part[:, 2])
        rows.append(
            {
                "model": name,
                "history": h,
                "total_ms": round(float(total), 2),
                "propagate_ms": round(float(prop), 2),
                "update_ms": round(float(upd), 2),
                "overhead_ms": round(float(overhead), 2),
            }
        )
    return rows


def on_path(twin: Any, path: str, precision: str) -> Any:
    """A copy of ``twin`` whose propagations and forecasts run on the engine's ``path``."""
    import dataclasses

    from twinloop.twin import PatientTwin
    from twinloop.twin.state import pack, restore

    copy = restore(PatientTwin, pack(twin))
    solver = dataclasses.replace(copy.config.solver, path=path, precision=precision)
    copy.config = dataclasses.replace(copy.config, solver=solver)
    return copy


def target(members: int, cycles: int, warmup: int) -> dict[str, Any]:
    """Sync + 24-h forecast per cycle on each of :data:`VARIANTS`, alternating; wall and
    process CPU time (the second is less sensitive to other processes on a shared machine)."""
    twin, batches = t1d_case(cycles + warmup, members)
    twins = {name: on_path(twin, *variant) for name, variant in VARIANTS.items()}
    ms: dict[str, list[tuple[float, float, float]]] = {name: [] for name in VARIANTS}
    gap: dict[str, float] = {name: 0.0 for name in VARIANTS}
    solver: dict[str, Any] = {}
    for k, (obs, doses) in enumerate(batches):
        medians = {}
        for name, t in twins.items():
            t0, c0 = time.perf_counter(), time.process_time()
            report = t.sync(obs, doses if not doses.empty else None)
            t1 = time.perf_counter()
            fc = t.forecast(24.0, store=False)
            t2, c2 = time.perf_counter(), time.process_time()
            if k >= warmup:
                ms[name].append((1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (c2 - c0)))
            medians[name] = np.median(fc.members, axis=0)
            solver[name] = {"sync": report.solver, "forecast": fc.solver}
        for name in VARIANTS:
            gap[name] = max(gap[name], float(np.nanmax(np.abs(medians[name] - medians["accurate"]))))
    rows = {}
    for name, cycle in ms.items():
        a = np.asarray(cycle)
        total = a[:, 0] + a[:, 1]
        rows[name] = {
            "sync_ms": round(float(np.median(a[:, 0])), 1),
            "forecast_ms": round(float(np.median(a[:, 1])), 1),
            "total_ms": round(float(np.median(total)), 1),
            "total_p90_ms": round(float(np.percentile(total, 90)), 1),
            "total_cpu_ms": round(float(np.median(a[:, 2])), 1),
            "median_gap_to_accurate": round(gap[name], 4),
            "ran": solver[name],
        }
    best = min(rows[name]["total_ms"] for name in VARIANTS if name != "accurate")
    return {
        "members": members,
        "cycles": cycles,
        "warmup_cycles": warmup,
        "paths": rows,
        "target_ms": CYCLE_TARGET_MS,
        "met": best <= CYCLE_TARGET_MS,
    }


def print_target(result: dict[str, Any]) -> None:
    print(f"\nsync + 24-h forecast, {result['members']} members, median of {result['cycles']} cycles")
    print(f"{'variant':13} {'sync ms':>8} {'forecast':>9} {'total':>7} {'p90':>7} {'cpu':>7} {'gap':>7}  self-check")
    for name, r in result["paths"].items():
        ran = r["ran"]["forecast"]
        print(
            f"{name:13} {r['sync_ms']:8.1f} {r['forecast_ms']:9.1f} {r['total_ms']:7.1f} {r['total_p90_ms']:7.1f} "
            f"{r['total_cpu_ms']:7.1f} {r['median_gap_to_accurate']:7.4f}  {ran.get('path')} {ran.get('max_error', '')}"
        )
    print(
        "gap: largest difference of the member median from the accurate path's (model units); "
        f"target <= {result['target_ms']:.0f} ms: {'met' if result['met'] else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100, help="T1D ensemble size (Lorenz-63: --l63-members)")
    parser.add_argument("--l63-members", type=int, default=10)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10, 100, 1000, 3000])
    parser.add_argument("--measure", type=int, default=20, help="cycles measured after each checkpoint")
    parser.add_argument("--models", nargs="*", default=["t1d", "l63"], choices=["t1d", "l63"])
    parser.add_argument("--target-members", type=int, default=1000, help="0: skip the fast-vs-accurate target")
    parser.add_argument("--target-cycles", type=int, default=20)
    parser.add_argument("--target-warmup", type=int, default=4, help="cycles run before measuring (compiles)")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_sync.json")
    args = parser.parse_args()

    import jax

    cycles = max(args.checkpoints) + args.measure
    cases = {"t1d": (t1d_case, args.members), "l63": (l63_case, args.l63_members)}
    rows: list[dict[str, Any]] = []
    forecast_ms: dict[str, float] = {}
    for name in args.models:
        make, members = cases[name]
        twin, batches = make(cycles, members)
        rows += summarize(name, run(twin, batches), args.checkpoints, args.measure)
        twin.forecast(24.0, store=False)  # compile
        t0 = time.perf_counter()
        twin.forecast(24.0, store=False)
        forecast_ms[name] = round(1e3 * (time.perf_counter() - t0), 1)
    result: dict[str, Any] = {"benchmark": "bench_sync"}
    if rows:
        print(f"{'model':6} {'history':>8} {'total ms':>9} {'propagate':>10} {'update':>8} {'overhead':>9}")
        for r in rows:
            print(
                f"{r['model']:6} {r['history']:8d} {r['total_ms']:9.2f} {r['propagate_ms']:10.2f} "
                f"{r['update_ms']:8.2f} {r['overhead_ms']:9.2f}"
            )
        worst = max(r["overhead_ms"] for r in rows)
        print(f"worst overhead {worst:.2f} ms (target <= {TARGET_MS} ms); 24-h forecast ms {forecast_ms}")
        result |= {
            "members": {"t1d": args.members, "l63": args.l63_members},
            "measured_cycles_per_checkpoint": args.measure,
            "rows": rows,
            "worst_overhead_ms": worst,
            "target_overhead_ms": TARGET_MS,
            "forecast_24h_ms": forecast_ms,
        }
    if args.target_members:
        result["target"] = target(args.target_members, args.target_cycles, args.target_warmup)
        print_target(result["target"])
    result |= {"device": str(jax.devices()[0]), "machine": platform.platform()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
