"""Generate the simglucose reference the UVA/Padova core is validated against.

For each of simglucose's 30 virtual patients: 24 h, three meals (50 g at 07:00,
70 g at 12:00, 80 g at 19:00), closed loop with simglucose's basal-bolus controller,
Insulet pump and GuardianRT CGM (seed 1). Every minute the insulin (U/min) and the
announced carbohydrate (g) the patient model received are recorded together with
plasma glucose (state 4 / Vg) and subcutaneous glucose (state 13 / Vg), both mg/dL.

Run with the project's environment (simglucose is a dev dependency):
    .venv/bin/python tests/data/make_simglucose_reference.py [--patients adult#001 ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from simglucose.actuator.pump import InsulinPump
from simglucose.controller.basal_bolus_ctrller import BBController
from simglucose.patient.t1dpatient import T1DPatient
from simglucose.sensor.cgm import CGMSensor
from simglucose.simulation.env import T1DSimEnv
from simglucose.simulation.scenario import CustomScenario
from simglucose.simulation.sim_engine import SimObj

MEALS_H = ((7.0, 50.0), (12.0, 70.0), (19.0, 80.0))
PATIENTS = [f"{g}#{i:03d}" for g in ("adolescent", "adult", "child") for i in range(1, 11)]
DEFAULT_OUT = Path(__file__).with_name("simglucose_reference.csv.gz")


class RecordingPatient(T1DPatient):
    """A simglucose patient that records what it receives and its state every minute."""

    def reset(self) -> None:
        super().reset()
        self.log: list[tuple[float, float, float, float, float]] = []

    def step(self, action):
        vg = self._params.Vg
        self.log.append((self.t, action.insulin, action.CHO, self.state[3] / vg, self.state[12] / vg))
        super().step(action)


def simulate_patient(name: str, seed: int = 1) -> pd.DataFrame:
    """One day of one patient in simglucose; returns the per-minute record."""
    start = datetime(2025, 1, 1, 0, 0, 0)
    patient = RecordingPatient.withName(name)
    scenario = CustomScenario(start_time=start, scenario=list(MEALS_H))
    env = T1DSimEnv(patient, CGMSensor.withName("GuardianRT", seed=seed), InsulinPump.withName("Insulet"), scenario)
    SimObj(env, BBController(), timedelta(days=1), animate=False, path=None).simulate()
    log = pd.DataFrame(
        patient.log,
        columns=["minute", "insulin_U_per_min", "carbs_g", "plasma_glucose_mg_dl", "subcutaneous_glucose_mg_dl"],
    )
    log.insert(0, "patient", name)
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", nargs="*", default=PATIENTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    frames = [simulate_patient(name) for name in args.patients]
    table = pd.concat(frames, ignore_index=True)
    table["minute"] = table["minute"].round().astype(int)
    table.to_csv(args.out, index=False, float_format="%.10g")
    print(f"wrote {len(table)} rows for {len(frames)} patients to {args.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
