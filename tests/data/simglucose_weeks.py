"""Read the weeks made by ``make_simglucose_weeks.py`` into twinloop's canonical tables.

One patient's week becomes: CGM observations (``subcutaneous_glucose``, mg/dL, every
5 min, the sensor's readings with their noise), doses (insulin as runs of constant
U/min rate, announced carbohydrate as grams) and the true subcutaneous glucose on the
same 5-min times (what a forecast is judged against).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FIXTURE = Path(__file__).with_name("simglucose_weeks.csv.gz")
START = pd.Timestamp("2026-01-05T00:00:00Z")
LOINC_CGM = "99504-3"  # Glucose [Mass/volume] in Interstitial fluid


@dataclass(frozen=True)
class Week:
    """One simglucose patient's week in canonical tables, with the truth beside it."""

    patient: str
    body_weight_kg: float
    observations: pd.DataFrame
    doses: pd.DataFrame
    truth: pd.DataFrame  # time, value: true subcutaneous glucose at the CGM times

    def split(self, days: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(observations up to ``days``, later observations, later truth)."""
        cut = START + pd.Timedelta(days=days)
        obs = self.observations
        return obs[obs["time"] < cut], obs[obs["time"] >= cut], self.truth[self.truth["time"] >= cut]


def _insulin_runs(minutes: np.ndarray, rate: np.ndarray, subject: str) -> pd.DataFrame:
    change = np.r_[True, rate[1:] != rate[:-1]]
    starts = np.flatnonzero(change)
    ends = np.r_[starts[1:], rate.size]
    return pd.DataFrame(
        {
            "subject_id": subject,
            "time": START + pd.to_timedelta(minutes[starts], unit="min"),
            "input": "insulin",
            "kind": "rate",
            "amount": rate[starts],
            "duration": (minutes[ends - 1] + 1 - minutes[starts]).astype(float),
            "unit": "U/min",
        }
    )


def week(frame: pd.DataFrame, patient: str) -> Week:
    rows = frame[frame["patient"] == patient].sort_values("minute")
    if rows.empty:
        raise KeyError(f"no simglucose week for {patient!r}")
    minutes = rows["minute"].to_numpy()
    subject = patient.replace("#", "-")
    insulin = _insulin_runs(minutes, rows["insulin_U_per_min"].to_numpy(dtype=float), subject)
    meals = rows[rows["carbs_g"] > 0]
    carbs = pd.DataFrame(
        {
            "subject_id": subject,
            "time": START + pd.to_timedelta(meals["minute"].to_numpy(), unit="min"),
            "input": "carbs",
            "kind": "bolus",
            "amount": meals["carbs_g"].to_numpy(dtype=float),
            "duration": 0.0,
            "unit": "g",
        }
    )
    cgm = rows[rows["cgm_mg_dl"].notna()]
    times = START + pd.to_timedelta(cgm["minute"].to_numpy(), unit="min")
    obs = pd.DataFrame(
        {
            "subject_id": subject,
            "time": times,
            "variable": "subcutaneous_glucose",
            "value": cgm["cgm_mg_dl"].to_numpy(dtype=float),
            "unit": "mg/dL",
            "code": LOINC_CGM,
            "source": "simglucose-0.2.11",
        }
    )
    truth = pd.DataFrame({"time": times, "value": cgm["subcutaneous_glucose_mg_dl"].to_numpy(dtype=float)})
    doses = pd.concat([insulin, carbs], ignore_index=True).sort_values("time", kind="stable", ignore_index=True)
    return Week(patient, float(rows["body_weight_kg"].iloc[0]), obs, doses, truth)


def read_weeks(path: Path = FIXTURE) -> dict[str, Week]:
    frame = pd.read_csv(path)
    return {name: week(frame, name) for name in frame["patient"].unique()}
