"""Generate the simglucose closed-loop reference the control loop is validated against.

For each of simglucose's 30 virtual patients and each of two of simglucose's own
controllers (``BBController()`` and ``PIDController(P=0.001, I=0.00001, D=0.001,
target=140)``, the parameters of simglucose's ``examples/run_pid_controller.py``):
24 h, three meals (50 g at 07:00, 70 g at 12:00, 80 g at 19:00), Insulet pump and a
GuardianRT CGM whose noise is replaced by zeros (the sensor still samples every 5 min,
holds its value between samples and clips to 39-600 mg/dL).

Every minute the table records what the patient model received and its state at the
start of that minute: the insulin delivered by the pump (U/min), the carbohydrate the
scenario gives (g), plasma glucose (state 4 / Vg) and subcutaneous glucose
(state 13 / Vg), both mg/dL, and the sensor's held reading (mg/dL). On the minutes
where the controller runs (every 5 min), it also records the observation the
controller saw (the mean of the sensor's 5 per-minute readings over the last period;
at minute 0 the reading at reset), the announced meal it saw (mean scenario CHO of the
last period, g/min) and the action it returned (basal and bolus, U/min, before the
pump); these columns are empty on other minutes.

Run with the project's environment (simglucose is a dev dependency):
    .venv/bin/python tests/data/make_simglucose_closed_loop.py [--patients adult#001 ...]
        [--controllers bb pid] [--out FILE]
"""

# ruff: noqa: E402 (simglucose warns on import; the filters come first)
from __future__ import annotations

import argparse
import itertools
import logging
import math
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from simglucose.actuator.pump import InsulinPump
from simglucose.controller.basal_bolus_ctrller import BBController
from simglucose.controller.base import Controller
from simglucose.controller.pid_ctrller import PIDController
from simglucose.patient.t1dpatient import T1DPatient
from simglucose.sensor.cgm import CGMSensor
from simglucose.simulation.env import T1DSimEnv
from simglucose.simulation.scenario import CustomScenario
from simglucose.simulation.sim_engine import SimObj

MEALS_H = ((7.0, 50.0), (12.0, 70.0), (19.0, 80.0))
PATIENTS = [f"{g}#{i:03d}" for g in ("adolescent", "adult", "child") for i in range(1, 11)]
PID_SETTINGS = {"P": 0.001, "I": 0.00001, "D": 0.001, "target": 140}
CONTROLLERS = {"bb": BBController, "pid": lambda: PIDController(**PID_SETTINGS)}
START = datetime(2025, 1, 1, 0, 0, 0)
DEFAULT_OUT = Path(__file__).with_name("simglucose_closed_loop.csv.gz")
MINUTE_COLUMNS = [
    "minute",
    "insulin_U_per_min",
    "carbs_g",
    "plasma_glucose_mg_dl",
    "subcutaneous_glucose_mg_dl",
    "sensor_mg_dl",
]
STEP_COLUMNS = ["minute", "cgm_mg_dl", "meal_g_per_min", "basal_U_per_min", "bolus_U_per_min"]


class NoiseFreeCGM(CGMSensor):
    """simglucose's CGM sensor with its noise generator replaced by zeros."""

    @property
    def seed(self):
        return self._seed

    @seed.setter
    def seed(self, seed):
        self._seed = seed
        self._noise_generator = itertools.repeat(0.0)

    def reset(self) -> None:
        super().reset()
        self._noise_generator = itertools.repeat(0.0)


class RecordingEnv(T1DSimEnv):
    """simglucose's environment, recording every minute what the patient receives and its state."""

    def _reset(self) -> None:
        super()._reset()
        self.log: list[tuple[float, ...]] = []

    def mini_step(self, action):
        patient = self.patient
        t, vg = patient.t, patient._params.Vg
        bg, sg = patient.state[3] / vg, patient.state[12] / vg
        held = self.sensor._last_CGM
        cho, insulin, bg_next, cgm_next = super().mini_step(action)
        self.log.append((t, insulin, cho, bg, sg, held))
        return cho, insulin, bg_next, cgm_next


class RecordingController(Controller):
    """Runs a simglucose controller and records what it saw and returned at each control step."""

    def __init__(self, inner: Controller) -> None:
        self.inner = inner
        self.log: list[tuple[float, ...]] = []

    def policy(self, observation, reward, done, **info):
        action = self.inner.policy(observation, reward, done, **info)
        minute = (info["time"] - START).total_seconds() / 60.0
        self.log.append((minute, observation.CGM, info["meal"], action.basal, action.bolus))
        return action

    def reset(self) -> None:
        self.inner.reset()
        self.log = []


def simulate_patient(name: str, controller: str) -> pd.DataFrame:
    """One day of one patient under one of simglucose's controllers; the per-minute record."""
    patient = T1DPatient.withName(name)
    scenario = CustomScenario(start_time=START, scenario=list(MEALS_H))
    sensor = NoiseFreeCGM.withName("GuardianRT", seed=1)
    env = RecordingEnv(patient, sensor, InsulinPump.withName("Insulet"), scenario)
    recorder = RecordingController(CONTROLLERS[controller]())
    SimObj(env, recorder, timedelta(days=1), animate=False, path=None).simulate()
    minutes = pd.DataFrame(env.log, columns=MINUTE_COLUMNS)
    steps = pd.DataFrame(recorder.log, columns=STEP_COLUMNS)
    if not all(math.isclose(m, round(m)) for m in itertools.chain(minutes["minute"], steps["minute"])):
        raise RuntimeError(f"{name}: simglucose's clock left the minute grid")
    minutes["minute"] = minutes["minute"].round().astype(int)
    steps["minute"] = steps["minute"].round().astype(int)
    table = minutes.merge(steps, on="minute", how="left", validate="one_to_one")
    table.insert(0, "controller", controller)
    table.insert(0, "patient", name)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", nargs="*", default=PATIENTS)
    parser.add_argument("--controllers", nargs="*", default=list(CONTROLLERS), choices=list(CONTROLLERS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    frames = []
    for controller in args.controllers:
        for name in args.patients:
            frames.append(simulate_patient(name, controller))
            print(f"{controller} {name}: done", flush=True)
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(args.out, index=False, float_format="%.10g")
    print(f"wrote {len(table)} rows for {len(frames)} runs to {args.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
