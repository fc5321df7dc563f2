"""Fidelity of a synthetic dataset against a reference: marginals, correlations, detectability.

Per numeric column the two-sample KS statistic and the Wasserstein distance (also
divided by the reference's sd, so columns compare); per categorical column the total
variation distance of the level frequencies; the largest and mean absolute
difference between the two Pearson correlation matrices; and the detection AUC of a
gradient-boosting classifier told to separate real from synthetic rows (0.5: it
cannot; 1.0: every row gives itself away), cross-validated on balanced samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from twinloop.govern.records import common_columns, is_numeric, numeric_matrix


def marginals(real: pd.DataFrame, synthetic: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Per-column distances between the two datasets."""
    out: dict[str, dict[str, Any]] = {}
    for c in columns:
        r, s = real[c].dropna(), synthetic[c].dropna()
        if r.empty or s.empty:
            continue
        if is_numeric(real[c]):
            ks = stats.ks_2samp(r.astype(float), s.astype(float))
            w = float(stats.wasserstein_distance(r.astype(float), s.astype(float)))
            sd = float(r.std()) or 1.0
            out[c] = {"kind": "numeric", "ks": float(ks.statistic), "ks_p": float(ks.pvalue), "wasserstein": w,
                      "wasserstein_sd": w / sd, "mean_real": float(r.mean()), "mean_synthetic": float(s.mean()),
                      "sd_real": float(r.std()), "sd_synthetic": float(s.std())}  # fmt: skip
        else:
            pr = r.astype(str).value_counts(normalize=True)
            ps = s.astype(str).value_counts(normalize=True)
            levels = sorted(set(pr.index) | set(ps.index))
            tvd = 0.5 * sum(abs(pr.get(lv, 0.0) - ps.get(lv, 0.0)) for lv in levels)
            out[c] = {"kind": "categorical", "tvd": float(tvd),
                      "real": {lv: float(pr.get(lv, 0.0)) for lv in levels},
                      "synthetic": {lv: float(ps.get(lv, 0.0)) for lv in levels}}  # fmt: skip
    return out


def correlation_difference(real: pd.DataFrame, synthetic: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Pearson correlation matrices of the numeric columns and their largest / mean absolute difference."""
    numeric = [c for c in columns if is_numeric(real[c]) and real[c].std() > 0 and synthetic[c].std() > 0]
    cr = real[numeric].astype(float).corr().to_numpy()
    cs = synthetic[numeric].astype(float).corr().to_numpy()
    diff = np.abs(np.nan_to_num(cr - cs))
    upper = diff[np.triu_indices(len(numeric), k=1)]
    i, j = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else (0, 0)
    return {
        "columns": numeric,
        "real": np.round(cr, 4).tolist(),
        "synthetic": np.round(cs, 4).tolist(),
        "max_abs_difference": float(upper.max()) if upper.size else 0.0,
        "mean_abs_difference": float(upper.mean()) if upper.size else 0.0,
        "worst_pair": [numeric[i], numeric[j]] if numeric else [],
    }


def detection_auc(
    real: pd.DataFrame, synthetic: pd.DataFrame, columns: list[str], *, seed: int = 0, max_rows: int = 2000
) -> dict[str, Any]:
    """Cross-validated AUC of a classifier separating real from synthetic rows (balanced)."""
    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic), max_rows)
    r = real.iloc[rng.choice(len(real), n, replace=False)]
    s = synthetic.iloc[rng.choice(len(synthetic), n, replace=False)]
    x = np.concatenate([numeric_matrix(r, columns, real), numeric_matrix(s, columns, real)])
    y = np.r_[np.ones(n), np.zeros(n)]
    classifier = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(classifier, x, y, cv=folds, method="predict_proba")[:, 1]
    return {"auc": float(roc_auc_score(y, scores)), "rows_per_class": int(n), "folds": 5,
            "classifier": "HistGradientBoostingClassifier"}  # fmt: skip


def fidelity(real: pd.DataFrame, synthetic: pd.DataFrame, *, seed: int = 0) -> dict[str, Any]:
    """Marginals, correlation difference and detection AUC on the columns both datasets share."""
    columns = common_columns(real, synthetic)
    per_column = marginals(real, synthetic, columns)
    numeric = [v for v in per_column.values() if v["kind"] == "numeric"]
    return {
        "rows": {"real": len(real), "synthetic": len(synthetic)},
        "columns": per_column,
        "summary": {
            "median_ks": float(np.median([v["ks"] for v in numeric])) if numeric else float("nan"),
            "max_ks": float(max(v["ks"] for v in numeric)) if numeric else float("nan"),
            "median_wasserstein_sd": float(np.median([v["wasserstein_sd"] for v in numeric]))
            if numeric
            else float("nan"),
        },
        "correlation": correlation_difference(real, synthetic, columns),
        "detection": detection_auc(real, synthetic, columns, seed=seed),
    }


def observation_marginals(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, dict[str, float]]:
    """KS and Wasserstein of every observed value, per variable (canonical observation tables)."""
    out: dict[str, dict[str, float]] = {}
    for variable in sorted(set(real["variable"]) & set(synthetic["variable"])):
        r = real.loc[real["variable"] == variable, "value"].astype(float)
        s = synthetic.loc[synthetic["variable"] == variable, "value"].astype(float)
        w = float(stats.wasserstein_distance(r, s))
        out[variable] = {"ks": float(stats.ks_2samp(r, s).statistic), "wasserstein": w,
                         "wasserstein_sd": w / (float(r.std()) or 1.0),
                         "n_real": len(r), "n_synthetic": len(s)}  # fmt: skip
    return out
