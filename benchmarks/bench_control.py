"""Throughput of the closed loop and of the Gymnasium environments, and simglucose's in the same run.

- Closed-loop cohort: patients drawn from the T1D model's default population, one day,
  the standard three meals, GuardianRT sensor with noise, Insulet pump, rescue
  carbohydrate; basal-bolus and the model-predictive controller (PID where
  ``twinloop.control.mpc`` is absent), accurate path (adaptive Tsit5 per minute) and
  fast path (one Tsit5 step per minute). Figure: patient-days per second, the first
  (compiling) run timed apart.
- ``twinloop.envs.GlucoseVectorEnv`` at N = 1, 100, 10,000 patients (fast path; each
  step is one 5-min control period of every patient; the action holds each patient's
  programmed basal rate). Figure: patient-steps per second.
- simglucose 0.2.11: its Gymnasium environment (``T1DSimGymnaisumEnv``, one patient;
  its Dexcom sensor makes a step 3 min) and one closed-loop patient-day under its
  basal-bolus controller (``tests/data/make_simglucose_closed_loop.py``).

Steps of different lengths are compared in simulated patient-minutes per second too.
Prints the figures and writes them as JSON. Target (issue 18): >= 100,000
patient-steps/s at N = 10,000 on 2 cores (simglucose: ~25 steps/s).

    .venv/bin/python benchmarks/bench_control.py [--quick] [--patients 1000] [--env-sizes 1 100 10000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
GUARDIAN_PERIOD_MIN = 5
DEXCOM_PERIOD_MIN = 3


def _model() -> Any:
    import twinloop as tl

    return tl.models.get("t1d-uva-padova")


def controllers(names: list[str]) -> dict[str, Any]:
    """The twinloop controllers to time, by name (``mpc`` only where the package has it)."""
    from twinloop.control import basal_bolus, pid

    made: dict[str, Any] = {"bb": basal_bolus, "pid": pid}
    if importlib.util.find_spec("twinloop.control.mpc") is not None:
        from twinloop.control.mpc import mpc

        made["mpc"] = mpc
    return {name: made[name]() for name in names if name in made}


def closed_loop_throughput(n: int, controller: Any, accurate: bool) -> dict[str, Any]:
    """Patient-days per second of one controller over ``n`` population patients."""
    from twinloop.control import Patients, Scenario, closed_loop

    model = _model()
    patients = Patients.from_population(model, n, seed=0)
    scenario = Scenario(days=1)
    t0 = time.perf_counter()
    closed_loop(model, patients, controller, scenario, seed=0, accurate=accurate)
    t1 = time.perf_counter()
    result = closed_loop(model, patients, controller, scenario, seed=1, accurate=accurate)
    t2 = time.perf_counter()
    run_s = t2 - t1
    return {
        "controller": controller.name,
        "n": n,
        "accurate": accurate,
        "patient_days_per_s": n * scenario.days / run_s,
        "run_s": run_s,
        "compile_s": max(t1 - t0 - run_s, 0.0),
        "failed": int(result.failed.sum()),
        "min_glucose_mg_dl": float(np.min(result.bg)),
    }


def vector_env_throughput(n: int, min_seconds: float, max_steps: int) -> dict[str, Any]:
    """Patient-steps per second of ``GlucoseVectorEnv`` with ``n`` patients."""
    from twinloop.envs import GlucoseVectorEnv

    env = GlucoseVectorEnv(num_envs=n)
    basal_U_per_h = env.patients.basal * 60.0
    actions = np.stack([basal_U_per_h, np.zeros(n)], axis=1).astype(np.float32)
    t0 = time.perf_counter()
    env.reset(seed=0)
    env.step(actions)  # compiles
    t1 = time.perf_counter()
    steps = 0
    ended = 0
    while steps < max_steps and (steps < 3 or time.perf_counter() - t1 < min_seconds):
        _, _, terminated, truncated, _ = env.step(actions)
        ended += int(np.sum(terminated | truncated))
        steps += 1
    elapsed = time.perf_counter() - t1
    period = env.scenario.control_period
    env.close()
    return {
        "n": n,
        "steps": steps,
        "patient_steps_per_s": n * steps / elapsed,
        "patient_minutes_per_s": n * steps * period / elapsed,
        "step_ms": 1e3 * elapsed / steps,
        "period_min": period,
        "setup_and_compile_s": t1 - t0,
        "episodes_ended": ended,
    }


def simglucose_gym_throughput(steps: int, patient: str = "adult#001") -> dict[str, Any]:
    """Steps per second of simglucose's own Gymnasium environment (one patient)."""
    warnings.filterwarnings("ignore")
    from simglucose.envs.simglucose_gym_env import T1DSimGymnaisumEnv
    from simglucose.patient.t1dpatient import T1DPatient

    env = T1DSimGymnaisumEnv(patient_name=patient, seed=0)
    params = T1DPatient.withName(patient)._params
    basal = float(params.u2ss * params.BW / 6000.0)  # U/min; a numpy action crashes simglucose
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(basal)
    elapsed = time.perf_counter() - t0
    return {
        "patient": patient,
        "steps": steps,
        "patient_steps_per_s": steps / elapsed,
        "patient_minutes_per_s": steps * DEXCOM_PERIOD_MIN / elapsed,
        "period_min": DEXCOM_PERIOD_MIN,
    }


def simglucose_closed_loop_day(patient: str = "adult#001") -> dict[str, Any]:
    """Seconds simglucose takes for one closed-loop patient-day under its basal-bolus controller."""
    path = ROOT / "tests" / "data" / "make_simglucose_closed_loop.py"
    spec = importlib.util.spec_from_file_location("make_closed_loop", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{path} is missing")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    t0 = time.perf_counter()
    maker.simulate_patient(patient, "bb")
    seconds = time.perf_counter() - t0
    return {"patient": patient, "seconds_per_patient_day": seconds, "patient_days_per_s": 1.0 / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that everything runs")
    parser.add_argument("--patients", type=int, default=1000, help="closed-loop cohort size")
    parser.add_argument("--controllers", nargs="*", default=["bb", "mpc"], help="bb, pid, mpc (pid if mpc is absent)")
    parser.add_argument("--env-sizes", type=int, nargs="*", default=[1, 100, 10_000])
    parser.add_argument("--env-seconds", type=float, default=5.0, help="minimum timed seconds per env size")
    parser.add_argument("--simglucose-steps", type=int, default=480, help="steps of simglucose's environment")
    args = parser.parse_args()
    if args.quick:
        args.patients, args.env_sizes, args.env_seconds, args.simglucose_steps = 50, [1, 100, 1000], 1.0, 60
    names = list(args.controllers)
    if "mpc" in names and importlib.util.find_spec("twinloop.control.mpc") is None:
        names = [("pid" if c == "mpc" else c) for c in names]
        print("twinloop.control.mpc is absent: timing PID in its place")
    report: dict[str, Any] = {
        "benchmark": "control",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }

    rows = []
    for name, controller in controllers(names).items():
        for accurate in (True, False):
            row = closed_loop_throughput(args.patients, controller, accurate)
            rows.append(row)
            path = "accurate" if accurate else "fast"
            print(
                f"closed loop {name:>4} {path:>8}, N={args.patients:,}: {row['patient_days_per_s']:8,.1f} "
                f"patient-days/s (run {row['run_s']:.1f} s, compile {row['compile_s']:.1f} s, "
                f"failed {row['failed']}, lowest glucose {row['min_glucose_mg_dl']:.0f} mg/dL)",
                flush=True,
            )
    report["closed_loop"] = rows

    if importlib.util.find_spec("twinloop.envs") is None:
        print("twinloop.envs is absent: no VectorEnv figures")
        report["vector_env"] = None
    else:
        envs = []
        for n in args.env_sizes:
            row = vector_env_throughput(n, args.env_seconds, max_steps=100_000)
            envs.append(row)
            print(
                f"GlucoseVectorEnv N={n:>6,}: {row['patient_steps_per_s']:12,.0f} patient-steps/s "
                f"({row['step_ms']:.2f} ms per step, {row['steps']} steps, "
                f"setup + compile {row['setup_and_compile_s']:.1f} s)",
                flush=True,
            )
        report["vector_env"] = envs

    gym = simglucose_gym_throughput(args.simglucose_steps)
    print(f"simglucose gym env (1 patient, {gym['period_min']}-min steps): {gym['patient_steps_per_s']:,.1f} steps/s")
    report["simglucose_gym"] = gym
    if not args.quick:
        day = simglucose_closed_loop_day()
        print(f"simglucose closed loop (BB): {day['seconds_per_patient_day']:.1f} s per patient-day")
        report["simglucose_closed_loop"] = day
    if report["vector_env"]:
        best = max(report["vector_env"], key=lambda r: r["patient_minutes_per_s"])
        speedup = best["patient_minutes_per_s"] / gym["patient_minutes_per_s"]
        report["speedup_env_minutes_vs_simglucose"] = speedup
        print(f"best GlucoseVectorEnv / simglucose gym, simulated patient-minutes per second: {speedup:,.0f}x")

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("bench_control_quick.json" if args.quick else "bench_control.json")
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
