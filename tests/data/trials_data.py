"""Participant tables drawn directly with numpy, with known truth, for the trial analysis tests
(and the model-based trial spec of the slow tests and benchmarks/trials_analysis.py).

Columns as ``TrialData.participants``: a continuous endpoint ``y`` (normal, shifted by
``effect`` in the treated arms), a binary ``resp`` (logistic, log odds ratio ``log_or``), a
time to event ``pfs``/``pfs_event`` (exponential, log hazard ratio ``log_hr``, uniform
censoring, optionally rounded to scan days so that times tie), covariates ``age``, ``sex``, a
baseline ``base`` and a noisy twin prediction ``prognostic:y`` correlated ``rho`` with ``y``'s
control outcome.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from twinloop.trials.context import SpecContext


def ct_protocol(hazard: float = 0.001) -> dict[str, Any]:
    """CT every 6 weeks (+-1 week), 5 % error and exponential dropout: the oncology trials' scans."""
    return {
        "name": "ct",
        "observable": "sum_of_diameters",
        "schedule": {"every": 42, "jitter": 7},
        "error": {"kind": "combined", "sd": 1.0, "cv": 0.05},
        "dropout": {"hazard": hazard},
    }


BASELINE_SLD = {"sld_baseline": {"observation": "ct", "summary": "first"}}
RECIST_ENDPOINTS = {
    "objective_response": {"kind": "response", "recist": "ct"},
    "pfs": {"kind": "time_to_event", "recist": "ct"},
}


def size_change(at: float, window: list[float], relative: bool | str = True) -> dict[str, Any]:
    """Tumour size at the scan nearest ``at`` (within ``window``) against the baseline scan."""
    return {"kind": "measure", "observation": "ct", "summary": "nearest", "at": at, "window": window,
            "baseline": "sld_baseline", "relative": relative}  # fmt: skip


ENDPOINTS = {"y": "continuous", "resp": "binary", "pfs": "time_to_event"}
SCHEDULE = {"kind": "chemotherapy", "dose_mg": 1200, "cycle_days": 21, "days_on": 1, "n_cycles": 6}
WEEKLY = {"kind": "chemotherapy", "dose_mg": 400, "cycle_days": 7, "days_on": 1, "n_cycles": 18}


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
    block: int | None = None,
) -> pd.DataFrame:
    """``replicates`` trials of ``n`` participants randomized in permuted blocks (default: one of n) over ``arms``."""
    rng = np.random.default_rng(seed)
    total = replicates * n
    size = block or n
    pattern = np.resize(np.arange(len(arms)), (total // size + 1, size))
    arm = (
        rng.permuted(pattern, axis=1).ravel()[:total]
        if block
        else np.concatenate([rng.permutation(pattern[0]) for _ in range(replicates)])
    )
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


def model_spec(
    *, null: bool, n: int = 200, seed: int = 5, control: Any = None, duration: float = 364, prognostic: Any = None
) -> Any:
    """A tgi-claret trial: arm A three-weekly (or ``control``) against arm B weekly dosing, or both
    three-weekly when ``null``.

    Tumour size at week 24 is the endpoint twice: ``sld_change``, the percent change from baseline
    (strongly right-skewed: rare huge tumours), and ``sld_log``, the log ratio to baseline (near
    normal), each analysed by ANCOVA on the baseline and unadjusted; ``prognostic`` (a section
    mapping) adds the PROCOVA-adjusted ANCOVA of ``sld_log``. A shorter ``duration`` (at least 196)
    shortens follow-up for response and PFS."""
    from twinloop.trials.spec import TrialSpec

    adjusted = {"method": "ancova", "covariates": ["sld_baseline"]}
    raw = {
        "name": "null-schedules" if null else "two-schedules",
        "model": "tgi-claret",
        "population": "default",
        "eligibility": ["sld_baseline >= 20"],
        "n": n,
        "seed": seed,
        "duration": duration,
        "resolution": 1,
        "arms": {"A": control or SCHEDULE, "B": SCHEDULE if null else WEEKLY},
        "randomization": {"kind": "block", "block_size": 2},
        "observations": [ct_protocol()],
        "baseline": BASELINE_SLD,
        "endpoints": {
            "sld_log": size_change(168, [140, 196], "log"),
            "sld_change": size_change(168, [140, 196]),
            **RECIST_ENDPOINTS,
        },
        "analysis": {
            "primary": "sld_log",
            "methods": {
                "sld_log": [adjusted, "ancova"] + (["procova"] if prognostic else []),
                "sld_change": [adjusted, "ancova"],
                "objective_response": [{"method": "logistic", "covariates": ["sld_baseline"]}],
                "pfs": ["logrank", {"method": "cox", "covariates": ["sld_baseline"]}],
            },
        },
    }
    if prognostic:
        raw["prognostic"] = prognostic
    return TrialSpec.from_dict(raw)


def pilot_moments(table: pd.DataFrame, endpoint: str) -> tuple[float, float, float]:
    """From a large pilot trial of arms A and B: delta (B - A), the pooled sd and the participants
    analysed per randomized one of an arm (the harmonic mean of each arm's observed share)."""
    complete = table.dropna(subset=[endpoint])
    means = complete.groupby("arm")[endpoint].mean()
    sd = float(np.sqrt(complete.groupby("arm")[endpoint].var().mean()))
    shares = table.groupby("arm")[endpoint].apply(lambda s: s.notna().mean())
    return float(means["B"] - means["A"]), sd, float(2 / (1 / shares).sum())


def resampled_power(
    table: pd.DataFrame, endpoint: str, n: int, *, draws: int, seed: int, normal: bool = False
) -> float:
    """Power of the two-sample t-test in ``draws`` trials of ``n`` (n / 2 per arm) resampled from a
    pilot's arms A and B (missing values kept: they stay missing); ``normal`` draws each arm's values
    from the normal with the arm's mean and sd instead (the same missing shares): what the endpoint's
    shape, not its moments or missingness, does to the power."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    m = n // 2
    arms = []
    for arm in ("A", "B"):
        values = table.loc[table["arm"] == arm, endpoint].to_numpy(np.float64)
        picked = rng.choice(values, (draws, m))
        if normal:
            seen = values[np.isfinite(values)]
            fresh = rng.normal(seen.mean(), seen.std(ddof=1), (draws, m))
            picked = np.where(np.isfinite(picked), fresh, np.nan)
        arms.append(picked)
    count = [np.isfinite(a).sum(axis=1) for a in arms]
    mean = [np.nanmean(a, axis=1) for a in arms]
    var = [np.nanvar(a, axis=1, ddof=1) for a in arms]
    df = count[0] + count[1] - 2
    pooled = ((count[0] - 1) * var[0] + (count[1] - 1) * var[1]) / df
    t = (mean[1] - mean[0]) / np.sqrt(pooled * (1 / count[0] + 1 / count[1]))
    return float(np.mean(2 * stats.t.sf(np.abs(t), df) < 0.05))
