"""Twin identification against ReplayBG (py-replay-bg), on the same 7 days of data.

The data: simglucose-equivalent UVA/Padova simulation of one published virtual
patient (twinloop's T1D core reproduces simglucose to < 0.5 mg/dL), three meals a day
with open-loop basal-bolus insulin, CGM every 5 min with sensor-scale noise. ReplayBG
gets its 5-min table (t, glucose, cho g/min, bolus and basal U/min, labels) and body
weight; twinloop gets the canonical tables. Each identifies a twin and replays the
7 days from the recorded inputs; reported: identification wall time and the replay
RMSE against the CGM trace (median replay for ReplayBG, ensemble median for twinloop).

    .venv/bin/python benchmarks/bench_twin_vs_replaybg.py [--days 7] [--patient adult#001]
        [--replaybg-method mcmc|map] [--replaybg-steps 15000] [--twinloop-method enkf|nuts|svi]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def make_data(days: int, patient: str, seed: int) -> tuple:
    import twinloop as tl
    from twinloop.calibrate import NoiseModel
    from twinloop.models import t1d_uva_padova as t1d
    from twinloop.twin import synthetic_record

    model = tl.models.get("t1d-uva-padova")
    p = model.preset(patient)
    rng = np.random.default_rng(seed)
    meals = [
        (d * 1440 + t + rng.integers(-20, 21), g * rng.uniform(0.8, 1.2))
        for d in range(days)
        for t, g in [(420, 50), (720, 70), (1140, 80)]
    ]
    plan = t1d.basal_bolus(model.param_map(p), meals, t_end=days * 1440.0)
    times = np.arange(5.0, days * 1440 + 1, 5.0)
    obs, doses, _truth = synthetic_record(
        model, p, plan, times, observable="subcutaneous_glucose", noise=NoiseModel(5.0, 0.03), seed=seed
    )
    return model, p, meals, plan, obs, doses, times


def replaybg_table(obs: pd.DataFrame, doses: pd.DataFrame, days: int) -> pd.DataFrame:
    grid = pd.date_range(obs["time"].iloc[0] - pd.Timedelta(minutes=5), periods=days * 288, freq="5min")
    table = pd.DataFrame(
        {
            "t": grid.tz_localize(None),
            "glucose": np.nan,
            "cho": 0.0,
            "bolus": 0.0,
            "basal": 0.0,
            "cho_label": "",
            "bolus_label": "",
            "exercise": 0.0,
        }
    )
    index = {t: i for i, t in enumerate(grid)}
    for t, v in zip(obs["time"], obs["value"], strict=True):
        if t in index:
            table.loc[index[t], "glucose"] = v
    for row in doses.itertuples():
        start = pd.Timestamp(row.time)
        for k in range(int(np.ceil(row.duration / 5.0))):  # 5-min rows hold the mean rate of their interval
            slot = start.floor("5min") + pd.Timedelta(minutes=5 * k)
            if slot not in index:
                continue
            minutes = min(5.0, row.duration - 5 * k)
            if row.input == "carbs":
                table.loc[index[slot], "cho"] += row.amount * minutes / 5.0
            elif row.duration > 100:  # basal
                table.loc[index[slot], "basal"] = row.amount
            else:
                table.loc[index[slot], "bolus"] += row.amount * minutes / 5.0
    hours = table["t"].dt.hour
    label = np.where(hours < 10, "B", np.where(hours < 16, "L", "D"))
    table.loc[table["cho"] > 0, "cho_label"] = label[table["cho"] > 0]
    table.loc[table["bolus"] > 0, "bolus_label"] = label[table["bolus"] > 0]
    return table


def run_replaybg(table: pd.DataFrame, bw: float, method: str, steps: int) -> dict:
    from py_replay_bg.py_replay_bg import ReplayBG

    with tempfile.TemporaryDirectory() as folder:
        rbg = ReplayBG(save_folder=folder, blueprint="multi-meal", yts=5, seed=1, plot_mode=False, verbose=False)
        t0 = time.perf_counter()
        rbg.twin(data=table, bw=bw, save_name="bench", twinning_method=method, n_steps=steps)
        twin_s = time.perf_counter() - t0
        replay = rbg.replay(data=table, bw=bw, save_name="bench", twinning_method=method, n_replay=100)
    median = np.asarray(replay["glucose"]["median"], dtype=float)
    observed = table["glucose"].to_numpy()
    n = min(median.size, observed.size)
    ok = np.isfinite(observed[:n])
    return {"wall_s": twin_s, "replay_rmse": float(np.sqrt(np.mean((median[:n][ok] - observed[:n][ok]) ** 2)))}


def run_twinloop(
    model: object, obs: pd.DataFrame, doses: pd.DataFrame, plan: object, times: np.ndarray, method: str
) -> dict:
    import twinloop as tl
    from twinloop.cohort import Population
    from twinloop.twin import PatientTwin, TwinConfig

    t0 = time.perf_counter()
    twin = PatientTwin.create(
        model,
        obs,
        doses,
        prior=Population.default(model),
        method=method,  # type: ignore[arg-type]
        config=TwinConfig(members=200),
        calibrator={"num_warmup": 200, "num_samples": 100, "num_chains": 2},
    )
    wall = time.perf_counter() - t0
    theta = twin.ensemble.theta
    params = twin.pmap.full_batch(theta)
    traj = tl.simulate(model, params, plan, times=np.r_[0.0, times], progress=False)  # type: ignore[arg-type]
    median = np.median(traj["subcutaneous_glucose"][:, 1:], axis=0)
    rmse = float(np.sqrt(np.mean((median - obs["value"].to_numpy()) ** 2)))
    return {
        "wall_s": wall,
        "replay_rmse": rmse,
        "calibration": {k: v for k, v in twin.calibration.items() if k in ("method", "draws", "divergences", "rhat")},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--patient", default="adult#001")
    parser.add_argument("--replaybg-method", default="mcmc", choices=["mcmc", "map"])
    parser.add_argument("--replaybg-steps", type=int, default=15000)
    parser.add_argument("--twinloop-method", default="enkf", choices=["nuts", "svi", "enkf"])
    parser.add_argument("--skip-replaybg", action="store_true")
    args = parser.parse_args()
    model, p, _, plan, obs, doses, times = make_data(args.days, args.patient, seed=7)
    result: dict = {
        "benchmark": "bench_twin_vs_replaybg",
        "days": args.days,
        "patient": args.patient,
        "machine": platform.platform(),
    }
    result["twinloop"] = run_twinloop(model, obs, doses, plan, times, args.twinloop_method)
    print("twinloop", json.dumps(result["twinloop"]))
    if not args.skip_replaybg:
        bw = float(p[model.parameter_names.index("BW")])
        result["replaybg"] = run_replaybg(
            replaybg_table(obs, doses, args.days), bw, args.replaybg_method, args.replaybg_steps
        )
        result["replaybg"]["method"] = args.replaybg_method
        result["speedup"] = result["replaybg"]["wall_s"] / result["twinloop"]["wall_s"]
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_twin_vs_replaybg.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
