"""Participant tables drawn directly with numpy, with known truth, for the trial analysis tests.

Columns as ``TrialData.participants``: a continuous endpoint ``y`` (normal, shifted by
``effect`` in the treated arms), a binary ``resp`` (logistic, log odds ratio ``log_or``), a
time to event ``pfs``/``pfs_event`` (exponential, log hazard ratio ``log_hr``, uniform
censoring, optionally rounded to scan days so that times tie), covariates ``age``, ``sex``, a
baseline ``base`` and a noisy twin prediction ``prognostic:y`` correlated ``rho`` with ``y``'s
control outcome.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from twinloop.trials.context import SpecContext

ENDPOINTS = {"y": "continuous", "resp": "binary", "pfs": "time_to_event"}


def context(arms: tuple[str, ...] = ("control", "treated")) -> SpecContext:
    return SpecContext(
        model_id="direct",
        arms=arms,
        control_arm=arms[0],
        covariates=("group", "age", "sex"),
        baselines=("base",),
        endpoints=dict(ENDPOINTS),
    )


def participants(
    replicates: int,
    n: int,
    *,
    seed: int,
    arms: tuple[str, ...] = ("control", "treated"),
    effect: float = 0.0,
    sd: float = 1.0,
    log_or: float = 0.0,
    log_hr: float = 0.0,
    rho: float = 0.6,
    missing: float = 0.0,
    scan_days: float | None = None,
) -> pd.DataFrame:
    """``replicates`` trials of ``n`` participants randomized in balanced blocks over ``arms``."""
    rng = np.random.default_rng(seed)
    total = replicates * n
    block = np.resize(np.arange(len(arms)), n)
    arm = np.concatenate([rng.permutation(block) for _ in range(replicates)])
    treated = (arm > 0).astype(float)
    age = rng.normal(60, 10, total)
    sex = rng.choice(np.array(["female", "male"], dtype=object), total)
    base = rng.normal(50, 10, total)
    # control outcome = prognosis + noise, prognosis explains rho^2 of its variance
    prognosis = sd * rho * rng.standard_normal(total)
    y = prognosis + sd * np.sqrt(1 - rho**2) * rng.standard_normal(total) + effect * treated
    resp = rng.random(total) < 1 / (1 + np.exp(-(-0.4 + 0.03 * (base - 50) + log_or * treated)))
    rate = 0.01 * np.exp(log_hr * treated + 0.02 * (base - 50))
    event_time = rng.exponential(1 / rate)
    censor = rng.uniform(30, 250, total)
    time = np.minimum(event_time, censor)
    if scan_days:
        time = np.ceil(time / scan_days) * scan_days
    y[rng.random(total) < missing] = np.nan
    return pd.DataFrame(
        {
            "replicate": np.repeat(np.arange(replicates), n),
            "order": np.tile(np.arange(n), replicates),
            "subject_id": [f"s{i}" for i in range(total)],
            "arm": np.asarray(arms, dtype=object)[arm],
            "stratum": "",
            "group": "adult",
            "age": age,
            "sex": sex,
            "base": base,
            "y": y,
            "resp": resp.astype(float),
            "pfs": time,
            "pfs_event": event_time <= censor,
            "simulation_failed": False,
            "prognostic:y": prognosis,
        }
    )
