"""Data drift of a model's inputs: population stability index and KS per feature.

PSI bins each feature at the reference's deciles (categorical features by level)
and sums ``(p_cur - p_ref) * ln(p_cur / p_ref)``; the usual reading is < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 major shift. The KS statistic and p-value of the two
samples are given beside it. ``drift_over_windows`` repeats this for each time
window of the current data, so a slow shift shows as a trend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from twinloop.errors import InputError
from twinloop.govern.records import is_numeric

PSI_MODERATE, PSI_MAJOR = 0.1, 0.25
_FLOOR = 1e-4


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``."""
    ref, cur = reference.dropna(), current.dropna()
    if ref.empty or cur.empty:
        return float("nan")
    if is_numeric(ref):
        edges = np.unique(np.quantile(ref.astype(float), np.linspace(0, 1, bins + 1)))
        edges[0], edges[-1] = -np.inf, np.inf
        p: np.ndarray = np.histogram(ref.astype(float), edges)[0] / len(ref)
        q: np.ndarray = np.histogram(cur.astype(float), edges)[0] / len(cur)
    else:
        levels = sorted(set(ref.astype(str)) | set(cur.astype(str)))
        p = ref.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
        q = cur.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
    p, q = np.clip(p, _FLOOR, None), np.clip(q, _FLOOR, None)
    return float(np.sum((q - p) * np.log(q / p)))


def level(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "major" if value > PSI_MAJOR else "moderate" if value > PSI_MODERATE else "stable"


def drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str] | None = None) -> dict[str, Any]:
    """PSI and KS per feature, and the features that shifted."""
    features = features or [c for c in reference.columns if c in current.columns]
    absent = [f for f in features if f not in reference.columns or f not in current.columns]
    if absent:
        raise InputError(f"Drift features {absent} are missing from the reference or the current data.")
    per_feature: dict[str, dict[str, Any]] = {}
    for f in features:
        value = psi(reference[f], current[f])
        entry: dict[str, Any] = {"psi": value, "level": level(value)}
        if is_numeric(reference[f]) and current[f].notna().any():
            ks = stats.ks_2samp(reference[f].dropna().astype(float), current[f].dropna().astype(float))
            entry |= {"ks": float(ks.statistic), "ks_p": float(ks.pvalue)}
        per_feature[f] = entry
    shifted = [f for f, v in per_feature.items() if v["level"] in ("moderate", "major")]
    return {"n_reference": len(reference), "n_current": len(current), "features": per_feature, "shifted": shifted}


def drift_over_windows(
    reference: pd.DataFrame, current: pd.DataFrame, time: str, freq: str = "MS", features: list[str] | None = None
) -> list[dict[str, Any]]:
    """:func:`drift` of each time window of ``current`` (windows of ``freq`` on column ``time``)."""
    if time not in current.columns:
        raise InputError(f"The current data has no time column '{time}' to cut into windows.")
    features = features or [c for c in reference.columns if c in current.columns and c != time]
    stamps = pd.to_datetime(current[time], utc=True)
    windows = []
    for start, rows in current.groupby(stamps.dt.tz_localize(None).dt.to_period(freq).dt.start_time):
        result = drift(reference, rows, features)
        windows.append({"window_start": str(pd.Timestamp(start).date()), **result})
    return windows
