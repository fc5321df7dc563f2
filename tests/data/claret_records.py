"""Scan records simulated by one tumour model for twins built on another.

The data come from the Claret et al. (2009) tumour-growth-inhibition model with
resistance (``tgi-claret``: exponential growth, exposure-driven kill that decays as
resistance emerges, a one-compartment PK of the drug), with patients drawn from
Claret's own population (``Population.default``: the published fluorouracil-arm
inter-individual variances, baseline around 90 mm), under fluorouracil 765 mg daily on
days 1-5 of every 28-day cycle. Under cyclic dosing the tumour shrinks in a step within
each cycle's five dosing days and regrows slowly in between, with smaller steps as
resistance grows: a staircase the smooth regrowth-decay curve of a Stein twin cannot
follow, and no Stein parameter distribution was used to draw these patients.

Scans (sum of longest diameters, mm) are taken every ``every_days`` days from day 0
(before the first dose), with RECIST-like measurement error: Gaussian with sd
``sqrt(2^2 + (0.1 y)^2)`` mm (10 % of the size, a 2 mm floor for small lesions;
repeat-reading studies report coefficients of variation of this order), truncated at 0.

Seeds (fixed before any result was looked at; nothing was tuned on the evaluation seeds):

    DEV_SEED = 1        used while designing the model-error prior and the settings
    FAST_SEED = 15      the default test's cohort (tests/test_twin_misspecification.py)
    FULL_SEED = 1515    the slow test's and the benchmark's cohort

Patients are ``Population.sample(n, seed)``; patient ``i``'s measurement noise uses
``numpy.random.default_rng([seed, i])``, so a patient's record does not depend on ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEV_SEED = 1
FAST_SEED = 15
FULL_SEED = 1515
ADDITIVE_MM = 2.0
PROPORTIONAL = 0.1


@dataclass(frozen=True)
class ScanRecord:
    """One simulated patient: the scans (canonical observation table) and the true sizes."""

    subject_id: str
    observations: pd.DataFrame
    truth: np.ndarray
    parameters: dict[str, float]


def claret_records(n: int, seed: int, *, scans: int = 9, every_days: float = 7.0) -> list[ScanRecord]:
    """``n`` patients of the Claret model under cyclic fluorouracil, ``scans`` scans each."""
    import twinloop as tl
    from twinloop.cohort import Population
    from twinloop.connect.timebase import to_timestamps
    from twinloop.models import tgi_claret
    from twinloop.twin.synthetic import ORIGIN

    model = tl.models.get("tgi-claret")
    cohort = Population.default(model).sample(n, seed=seed, id_prefix="claret-")
    times = np.arange(scans) * float(every_days)
    n_cycles = int(np.ceil((times[-1] + 1.0) / 28.0))
    plan = tgi_claret.chemotherapy(765.0, n_cycles=n_cycles)
    settings = tl.SolverSettings(rtol=1e-8, atol=1e-8)
    grid = np.unique(np.r_[times, times[-1] + 1.0])
    traj = tl.simulate(model, cohort.parameters, plan, times=grid, settings=settings, progress=False)
    sizes = traj["sum_of_diameters"][:, : times.size]
    records = []
    for i, subject in enumerate(cohort.ids):
        rng = np.random.default_rng([seed, i])
        truth = sizes[i]
        sd = np.sqrt(ADDITIVE_MM**2 + (PROPORTIONAL * truth) ** 2)
        values = np.maximum(truth + sd * rng.standard_normal(truth.size), 0.0)
        obs = pd.DataFrame(
            {
                "subject_id": subject,
                "time": to_timestamps(times, ORIGIN, model.time_unit),
                "variable": "sum_of_diameters",
                "value": values,
                "unit": "mm",
                "code": "",
                "source": "synthetic-claret",
            }
        )
        params = dict(zip(model.parameter_names, cohort.parameters[i].tolist(), strict=True))
        records.append(ScanRecord(subject, obs, truth, params))
    return records


def stein_checks(
    records: list[ScanRecord], *, fit_scans: int = 4, members: int = 400, warmup: int = 250, samples: int = 200
) -> list[object]:
    """For each record, a Stein twin (``method="auto"``: NUTS on a few scans, with its model
    error) built on the first ``fit_scans`` scans, its forecast of the later ones, and the
    baselines, as :class:`~twinloop.twin.heldout.HeldoutCheck` (the prior: Stein's default
    population; the twin's declared sensor noise: its default, 1 mm + 10 %)."""
    import warnings

    import twinloop as tl
    from twinloop.calibrate import CalibrationWarning
    from twinloop.cohort import Population
    from twinloop.twin import TwinConfig
    from twinloop.twin.heldout import heldout_check
    from twinloop.twin.synthetic import ORIGIN

    stein = tl.models.get("tgi-stein")
    prior = Population.default(stein)
    checks = []
    for record in records:
        obs = record.observations
        later = obs["time"] >= obs["time"].iloc[fit_scans]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            checks.append(
                heldout_check(
                    stein,
                    obs,
                    None,
                    split=obs["time"].iloc[fit_scans],
                    hours=(obs["time"].iloc[-1] - obs["time"].iloc[fit_scans]).total_seconds() / 3600.0 + 1.0,
                    prior=prior,
                    truth=pd.DataFrame({"time": obs["time"][later], "value": record.truth[later.to_numpy()]}),
                    method="auto",
                    config=TwinConfig(members=members, seed=0),
                    origin=ORIGIN,
                    calibrator={"num_warmup": warmup, "num_samples": samples, "num_chains": 2},
                )
            )
    return checks


def pooled(checks: list[object], forecaster: str) -> dict[str, float]:
    """Scores of ``forecaster`` pooled over patients, weighted by their scan counts."""
    scores = [c.scores[forecaster] for c in checks]  # type: ignore[attr-defined]
    n = np.array([s.n for s in scores], dtype=float)

    def mean(field: str, square: bool = False) -> float:
        v = np.array([getattr(s, field) for s in scores], dtype=float)
        v = v**2 if square else v
        return float(np.sum(v * n) / n.sum())

    return {
        "n": int(n.sum()),
        "coverage50": mean("coverage50"),
        "coverage90": mean("coverage90"),
        "rmse_truth": float(np.sqrt(mean("rmse_truth", square=True))),
        "rmse_observed": float(np.sqrt(mean("rmse_observed", square=True))),
        "crps": mean("crps"),
    }
