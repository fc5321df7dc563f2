"""Generate held-out week-long closed-loop data made by simglucose itself.

For each requested simglucose virtual patient (default: all 30) this runs simglucose's
own closed loop for 7 days (``--days``): ``T1DSimEnv`` + ``SimObj`` with simglucose's
``RandomScenario`` (its random breakfast, lunch and dinner, each with probability 0.95,
and three snacks, each with probability 0.3), the shipped ``BBController()`` (basal plus
meal bolus with a correction when CGM > 150 mg/dL), the ``Insulet`` pump and the
``GuardianRT`` CGM with its noise on. Nothing of twinloop is involved.

Start: 2026-01-05 00:00 (a Monday), UTC. simglucose's RandomScenario compares against
naive datetimes, so the start is passed as a naive datetime meant as UTC.

Seeds (documented here, fixed per patient whatever subset is requested):
    patient_id = 1..30 as in ``T1DPatient.withID`` (adolescent#001..010 = 1..10,
                 adult#001..010 = 11..20, child#001..010 = 21..30)
    scenario seed = SEED + patient_id            (SEED = --seed, default 2026)
    sensor seed   = SEED + SENSOR_OFFSET + patient_id   (SENSOR_OFFSET = 1000)
The two seeds differ on purpose: both components draw from numpy's RandomState, and the
same seed would tie the sensor noise to the meal draws.

Multi-day scenarios: RandomScenario.get_action() draws a fresh day of meals whenever it
is asked at 00:00 (t_sec < 1), from the same RandomState stream, so every day of a
multi-day run has its own meals (checked below: the script fails if a day has none).

Columns (one row per simulated minute, 0 .. days*1440-1):
    patient, body_weight_kg, minute,
    insulin_U_per_min          insulin the patient model received (pump output, U/min)
    carbs_g                    announced grams the patient model received that minute
    plasma_glucose_mg_dl       state 4 / Vg, before the minute's step
    subcutaneous_glucose_mg_dl state 13 / Vg (simglucose's "BG"/Gsub), same instant
    cgm_mg_dl                  the GuardianRT reading taken at that minute (every 5 min,
                               NaN elsewhere): Gsub of that minute + sensor noise, clipped
                               to [39, 600]

About the CGM column: simglucose's sensor takes a reading when patient.t % 5 == 0 and
holds it in between; T1DSimEnv.step averages the 5 per-minute sensor outputs of a step,
so env.CGM_hist[k] = (4 * reading(5k-5) + reading(5k)) / 5 (a lagged blend, which is also
what BBController sees). The raw readings are therefore logged by a RecordingSensor (the
CGMSensor subclass below) and cross-checked against env.CGM_hist and env.BG_hist.

Run with the project's environment (simglucose is a dev dependency), niced:
    nice -n 19 .venv/bin/python tests/data/make_simglucose_weeks.py \
        [--patients adult#001 ...] [--days 7] [--out FILE] [--seed 2026]
The committed fixture is:
    --patients adolescent#003 adult#004 child#002 --out tests/data/simglucose_weeks.csv.gz
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

# the per-minute recording patient of the one-day reference (same folder)
from make_simglucose_reference import RecordingPatient
from simglucose.actuator.pump import InsulinPump
from simglucose.controller.basal_bolus_ctrller import BBController
from simglucose.sensor.cgm import CGMSensor
from simglucose.sensor.noise_gen import CGMNoise
from simglucose.simulation.env import T1DSimEnv
from simglucose.simulation.scenario_gen import RandomScenario
from simglucose.simulation.sim_engine import SimObj

PATIENTS = [f"{g}#{i:03d}" for g in ("adolescent", "adult", "child") for i in range(1, 11)]
FIXTURE_PATIENTS = ["adolescent#003", "adult#004", "child#002"]
START = datetime(2026, 1, 5, 0, 0, 0)  # Monday, UTC (naive: RandomScenario needs naive)
BASE_SEED = 2026
SENSOR_OFFSET = 1000
DEFAULT_OUT = Path(__file__).with_name("simglucose_weeks.csv.gz")
COLUMNS = [
    "patient",
    "body_weight_kg",
    "minute",
    "insulin_U_per_min",
    "carbs_g",
    "plasma_glucose_mg_dl",
    "subcutaneous_glucose_mg_dl",
    "cgm_mg_dl",
]
# RandomScenario's windows (minutes of day) for the main meals; other meals are snacks.
# Snack windows touch the meal windows only at their edges (540, 600, 840, 960, 1200).
MAIN_MEAL_WINDOWS = ((300, 540), (600, 840), (960, 1200))


class RecordingSensor(CGMSensor):
    """simglucose's CGM sensor, logging each new reading with the patient minute it was taken at."""

    def __init__(self, params, seed=None):
        super().__init__(params, seed=seed)
        self.readings: list[tuple[float, float]] = []

    def reset(self) -> None:
        super().reset()
        self.readings = []

    def measure(self, patient):
        cgm = super().measure(patient)
        if patient.t % self.sample_time == 0:
            self.readings.append((patient.t, cgm))
        return cgm


def patient_id(name: str) -> int:
    return PATIENTS.index(name) + 1


def seeds_for(name: str, base: int) -> tuple[int, int]:
    """(scenario seed, sensor seed) of one patient."""
    pid = patient_id(name)
    return base + pid, base + SENSOR_OFFSET + pid


def simulate_patient(name: str, days: int = 7, base_seed: int = BASE_SEED) -> pd.DataFrame:
    """`days` days of one patient in simglucose's closed loop; returns the per-minute record."""
    scenario_seed, sensor_seed = seeds_for(name, base_seed)
    patient = RecordingPatient.withName(name)
    sensor = RecordingSensor.withName("GuardianRT", seed=sensor_seed)
    scenario = RandomScenario(start_time=START, seed=scenario_seed)
    env = T1DSimEnv(patient, sensor, InsulinPump.withName("Insulet"), scenario)
    sim = SimObj(env, BBController(), timedelta(days=days), animate=False, path=None)
    sim.simulate()

    log = pd.DataFrame(patient.log, columns=COLUMNS[2:7])
    log["minute"] = log["minute"].round().astype(int)
    n_min = days * 1440
    if not np.array_equal(log["minute"].to_numpy(), np.arange(n_min)):
        raise RuntimeError(f"{name}: patient log is not minutes 0..{n_min - 1}")

    # CGM readings: the sensor reads at t = 0 twice (T1DSimEnv._reset and reset), keep the
    # last one, which is the one held and seen by the controller; drop the reading at the
    # final instant (t = n_min), which has no row.
    readings = pd.DataFrame(sensor.readings, columns=["minute", "cgm_mg_dl"])
    readings["minute"] = readings["minute"].round().astype(int)
    readings = readings.drop_duplicates("minute", keep="last").set_index("minute")["cgm_mg_dl"]
    check_against_env(name, env, readings, log)
    log["cgm_mg_dl"] = log["minute"].map(readings)  # NaN off the 5-min grid

    log.insert(0, "body_weight_kg", float(patient._params.BW))
    log.insert(0, "patient", name)
    return log[COLUMNS]


def check_against_env(name: str, env: T1DSimEnv, readings: pd.Series, log: pd.DataFrame) -> None:
    """The logged readings and minutes must reproduce simglucose's own history exactly.

    Also checks the minute alignment of the readings: a fresh CGMNoise with the sensor's
    seed must give reading(m) - Gsub(m) for every kept reading (draw 0 is the discarded
    first reading at t = 0), wherever the reading is not clipped to [39, 600].
    """
    st = int(env.sample_time)
    hist = env.show_history()  # == SimObj.results()
    cgm_hist = hist["CGM"].to_numpy()[1:]
    bg_hist = hist["BG"].to_numpy()[1:]
    ends = np.arange(1, len(cgm_hist) + 1) * st  # step k ends at minute k*st
    expected_cgm = ((st - 1) * readings.loc[ends - st].to_numpy() + readings.loc[ends].to_numpy()) / st
    if not np.allclose(expected_cgm, cgm_hist, rtol=1e-12, atol=1e-9):
        raise RuntimeError(f"{name}: sensor readings do not reproduce env.CGM_hist")
    gsub = np.append(log["subcutaneous_glucose_mg_dl"].to_numpy(), np.nan)  # Gsub at t = n_min unknown
    expected_bg = np.array([gsub[e - st + 1 : e + 1].mean() for e in ends[:-1]])
    if not np.allclose(expected_bg, bg_hist[:-1], rtol=1e-12, atol=1e-9):
        raise RuntimeError(f"{name}: patient log does not reproduce env.BG_hist")
    noise_gen = CGMNoise(env.sensor._params, seed=env.sensor.seed)
    noise = np.array([next(noise_gen) for _ in range(len(readings) + 1)])[1:]
    rows = readings.index.to_numpy()
    rows = rows[rows < len(log)]
    err = readings.loc[rows].to_numpy() - log["subcutaneous_glucose_mg_dl"].to_numpy()[rows] - noise[: len(rows)]
    unclipped = (readings.loc[rows].to_numpy() > 39) & (readings.loc[rows].to_numpy() < 600)
    if not np.allclose(err[unclipped], 0.0, atol=1e-9):
        raise RuntimeError(f"{name}: CGM readings are not Gsub + noise of the same minute")
    expected_cho = log["carbs_g"].to_numpy().reshape(-1, st).mean(axis=1)
    if not np.allclose(expected_cho, hist["CHO"].to_numpy()[:-1], atol=1e-12):
        raise RuntimeError(f"{name}: patient log does not reproduce env.CHO_hist")


def summarize(frame: pd.DataFrame, days: int) -> dict[str, float]:
    meals = frame.loc[frame["carbs_g"] > 0, ["minute", "carbs_g"]]
    mod = meals["minute"] % 1440
    main = np.zeros(len(meals), dtype=bool)
    for lo, hi in MAIN_MEAL_WINDOWS:
        main |= (mod >= lo).to_numpy() & (mod <= hi).to_numpy()
    days_with_meals = (meals["minute"] // 1440).nunique()
    if days_with_meals < days:
        raise RuntimeError(f"{frame['patient'].iat[0]}: meals on only {days_with_meals} of {days} days")
    bg = frame["subcutaneous_glucose_mg_dl"]
    diff = (frame["cgm_mg_dl"] - bg).dropna()
    return {
        "meals/d": main.sum() / days,
        "snacks/d": (~main).sum() / days,
        "carbs g/d": meals["carbs_g"].sum() / days,
        "insulin U/d": frame["insulin_U_per_min"].sum() / days,
        "mean BG": bg.mean(),
        "%<70": 100.0 * (bg < 70).mean(),
        "%>180": 100.0 * (bg > 180).mean(),
        "cgm-bg mean": diff.mean(),
        "cgm-bg sd": diff.std(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", nargs="*", default=PATIENTS)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=BASE_SEED)
    args = parser.parse_args()
    unknown = [p for p in args.patients if p not in PATIENTS]
    if unknown:
        parser.error(f"unknown patients: {unknown}")

    frames, rows = [], []
    for name in args.patients:
        tic = time.perf_counter()
        frame = simulate_patient(name, days=args.days, base_seed=args.seed)
        wall = time.perf_counter() - tic
        frames.append(frame)
        summary = {"patient": name, "seeds": "{}/{}".format(*seeds_for(name, args.seed)), "wall s": wall}
        summary.update(summarize(frame, args.days))
        rows.append(summary)
        print(
            f"{name}: {wall:6.1f} s  "
            + "  ".join(f"{k} {v:.2f}" for k, v in summary.items() if k not in ("patient", "seeds", "wall s")),
            flush=True,
        )

    table = pd.concat(frames, ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.10g")
    print()
    print(pd.DataFrame(rows).set_index("patient").round(2).to_string())
    size = args.out.stat().st_size
    print(f"\nwrote {len(table)} rows for {len(frames)} patients to {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
