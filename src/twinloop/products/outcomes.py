"""Outcomes and labels computed from trajectories or observations.

T1D (international consensus on CGM metrics, Battelino et al. 2019): time in range
70-180 mg/dL, time below 70 and below 54, time above 180 and 250, mean glucose, its
coefficient of variation, the glucose management indicator
``GMI (%) = 3.31 + 0.02392 * mean glucose (mg/dL)`` (Bergenstal et al. 2018) and
hypoglycaemic events: at least 15 consecutive minutes below 70 (level 1) or 54 mg/dL
(level 2), an event ending after 15 minutes back above the threshold.

Oncology (RECIST 1.1, Eisenhauer et al. 2009) from the sum of diameters at scans:
response at each scan against baseline (PR: at least 30 % smaller) and against the
nadir (PD: at least 20 % and 5 mm larger than the smallest sum so far; CR: below
1 mm, i.e. the lesions disappeared), best overall response (the best before
progression; SD needs a scan at least ``min_sd_days`` after baseline) and
progression-free survival: time to the first PD scan, censored at the last scan.
Deaths are not modelled, so PFS here is radiological progression only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RESPONSES = ("CR", "PR", "SD", "PD", "NE")


def glycaemic_metrics(times_min: np.ndarray, glucose: np.ndarray) -> pd.DataFrame:
    """Per-patient CGM metrics of ``glucose`` ``(n, T)`` in mg/dL on a regular grid."""
    g = np.asarray(glucose, dtype=np.float64)
    valid = np.isfinite(g)
    count = np.maximum(valid.sum(axis=1), 1)

    def share(mask: np.ndarray) -> np.ndarray:
        return 100.0 * (mask & valid).sum(axis=1) / count

    mean = np.nanmean(np.where(valid, g, np.nan), axis=1)
    sd = np.nanstd(np.where(valid, g, np.nan), axis=1)
    step = float(np.median(np.diff(times_min)))
    return pd.DataFrame(
        {
            "time_in_range_pct": share((g >= 70) & (g <= 180)),
            "time_below_70_pct": share(g < 70),
            "time_below_54_pct": share(g < 54),
            "time_above_180_pct": share(g > 180),
            "time_above_250_pct": share(g > 250),
            "mean_glucose_mg_dl": mean,
            "glucose_cv_pct": 100.0 * sd / mean,
            "gmi_pct": 3.31 + 0.02392 * mean,
            "hypo_events_lt70": hypo_events(g, 70.0, step),
            "hypo_events_lt54": hypo_events(g, 54.0, step),
        }
    )


def hypo_events(glucose: np.ndarray, threshold: float, step_min: float, min_duration_min: float = 15.0) -> np.ndarray:
    """Number of episodes of at least ``min_duration_min`` below ``threshold`` per patient;
    an episode ends after ``min_duration_min`` at or above it."""
    need = max(1, int(np.ceil(min_duration_min / step_min)))
    below = np.nan_to_num(glucose, nan=np.inf) < threshold
    n, t = below.shape
    events = np.zeros(n, dtype=np.int64)
    run_below = np.zeros(n, dtype=np.int64)
    run_above = np.full(n, need, dtype=np.int64)
    in_event = np.zeros(n, dtype=bool)
    for k in range(t):
        b = below[:, k]
        run_below = np.where(b, run_below + 1, 0)
        run_above = np.where(b, 0, run_above + 1)
        start = ~in_event & (run_below >= need)
        events += start
        in_event = (in_event | start) & ~(run_above >= need)
    return events


def recist(scan_days: np.ndarray, sld: np.ndarray, *, min_sd_days: float = 42.0) -> pd.DataFrame:
    """RECIST 1.1 per patient from ``sld`` ``(n, k)`` at ``scan_days`` ``(n, k)`` (NaN =
    not observed); the first scan is the baseline."""
    days = np.asarray(scan_days, dtype=np.float64)
    values = np.asarray(sld, dtype=np.float64)
    n = values.shape[0]
    best = np.full(n, "NE", dtype=object)
    pfs = np.full(n, np.nan)
    event = np.zeros(n, dtype=bool)
    nadir_pct = np.full(n, np.nan)
    for i in range(n):
        ok = np.isfinite(values[i]) & np.isfinite(days[i])
        t, y = days[i][ok], values[i][ok]
        if y.size < 2:
            pfs[i] = 0.0 if y.size else np.nan
            continue
        base = y[0]
        nadir = base
        rank = 4  # NE
        for tj, yj in zip(t[1:], y[1:], strict=True):
            if yj >= 1.2 * nadir and yj - nadir >= 5.0:
                event[i], pfs[i] = True, tj - t[0]
                rank = min(rank, 3)
                break
            if yj < 1.0:
                rank = 0
            elif yj <= 0.7 * base:
                rank = min(rank, 1)
            elif tj - t[0] >= min_sd_days:
                rank = min(rank, 2)
            nadir = min(nadir, yj)
        if not event[i]:
            pfs[i] = t[-1] - t[0]
        best[i] = RESPONSES[rank]
        nadir_pct[i] = 100.0 * (np.min(y[1:]) - base) / base
    return pd.DataFrame(
        {
            "best_overall_response": best,
            "objective_response": np.isin(best, ["CR", "PR"]),
            "pfs_days": pfs,
            "progression_event": event,
            "best_change_pct": nadir_pct,
        }
    )
