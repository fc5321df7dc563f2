"""Latency of one twin sync (one hour of 5-min CGM) plus a 24-h ensemble forecast.

A T1D twin with a 1,000-member ensemble is created (EnKF from the population prior)
on one day of synthetic CGM, insulin and meals; then each repetition syncs the next
hour of data and forecasts 24 h (5-min output, observation noise). The first two
repetitions are warm-up (compilation). Prints the figures and writes JSON.

    .venv/bin/python benchmarks/bench_sync.py [--members 1000] [--repeats 12] [--method enkf]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--method", default="enkf", choices=["enkf", "etkf", "pf"])
    args = parser.parse_args()

    import jax

    import twinloop as tl
    from twinloop.calibrate import NoiseModel
    from twinloop.cohort import Population
    from twinloop.models import t1d_uva_padova as t1d
    from twinloop.twin import PatientTwin, TwinConfig, synthetic_record
    from twinloop.twin.synthetic import ORIGIN, window

    model = tl.models.get("t1d-uva-padova")
    p = model.preset("adult#001")
    days = 3
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
    day1 = window(obs, ORIGIN - pd.Timedelta("1s"), ORIGIN + pd.Timedelta("1D"))
    t0 = time.perf_counter()
    twin = PatientTwin.create(
        model,
        day1,
        doses,
        prior=Population.default(model),
        method="enkf",
        config=TwinConfig(members=args.members, assimilation=args.method),
    )
    create_s = time.perf_counter() - t0
    sync_s, forecast_s = [], []
    for k in range(args.repeats):
        start = ORIGIN + pd.Timedelta(hours=24 + k)
        t0 = time.perf_counter()
        twin.sync(window(obs, start, start + pd.Timedelta(hours=1)))
        t1 = time.perf_counter()
        fc = twin.forecast(24.0, store=False)
        t2 = time.perf_counter()
        sync_s.append(t1 - t0)
        forecast_s.append(t2 - t1)
    warm = slice(2, None)
    total = np.array(sync_s[warm]) + np.array(forecast_s[warm])
    result = {
        "benchmark": "bench_sync",
        "members": args.members,
        "assimilation": args.method,
        "observations_per_sync": 12,
        "forecast_hours": 24,
        "forecast_points": int(fc.members.shape[1]),
        "create_s": round(create_s, 2),
        "median_sync_ms": round(1000 * float(np.median(sync_s[warm])), 1),
        "median_forecast_ms": round(1000 * float(np.median(forecast_s[warm])), 1),
        "median_sync_plus_forecast_ms": round(1000 * float(np.median(total)), 1),
        "target_ms": 200,
        "device": str(jax.devices()[0]),
        "machine": platform.platform(),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    name = f"bench_sync_{jax.devices()[0].platform}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
