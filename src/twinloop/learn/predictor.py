"""Predictors trained on synthetic data products, and their evaluation on real-like data.

``response_features`` turns an oncology product (or any canonical observation table of
tumour scans with patient covariates) into one row per patient: baseline size, the
first on-treatment scan's change and log-slope per week, covariates, and the RECIST
objective-response label. ``Predictor`` fits a scikit-learn classifier (gradient
boosting by default) and keeps the training data's manifest. ``evaluate`` reports
AUROC, Brier score, the reliability curve and metrics by subgroup with bootstrap
intervals; ``tstr`` compares train-on-synthetic/test-on-real with train-on-real/test-
on-real on the same held-out real rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, roc_auc_score

from twinloop.errors import InputError, NotFittedError

RESPONSE_FEATURES = ("baseline_mm", "first_change", "log_slope_per_week", "age", "male", "weight")


def age_group(age: Any) -> Any:
    return np.where(np.asarray(age) >= 65.0, "65+", "<65")


def response_features(
    patients: pd.DataFrame, observations: pd.DataFrame, outcomes: pd.DataFrame, *, variable: str = "sum_of_diameters"
) -> pd.DataFrame:
    """One row per patient with at least two scans: features, label and subgroups."""
    scans = observations[observations["variable"] == variable].sort_values(["subject_id", "time"])
    by_subject = scans.groupby("subject_id")
    first = by_subject.nth(0).set_index("subject_id").add_suffix("_0")
    second = by_subject.nth(1).set_index("subject_id").add_suffix("_1")
    both = first.join(second, how="inner")
    weeks = (both["time_1"] - both["time_0"]).dt.total_seconds() / (7 * 86400.0)
    frame = pd.DataFrame(
        {
            "baseline_mm": both["value_0"],
            "first_change": both["value_1"] / both["value_0"] - 1.0,
            "log_slope_per_week": np.log(both["value_1"] / both["value_0"]) / weeks,
        }
    )
    cov = patients.set_index("subject_id")
    frame = frame.join(cov[["age", "sex", "weight"]], how="inner")
    frame["male"] = (frame.pop("sex") == "male").astype(float)
    label = outcomes.set_index("subject_id")["objective_response"].astype(int)
    frame = frame.join(label.rename("label"), how="inner")
    frame["age_group"] = age_group(frame["age"])
    frame["sex"] = np.where(frame["male"] > 0, "male", "female")
    return frame


def product_features(product: Any) -> pd.DataFrame:
    """``response_features`` of an opened :class:`~twinloop.products.dataset.Product`."""
    return response_features(product.table("patients"), product.table("observations"), product.table("outcomes"))


HYPO_FEATURES = ("cgm_midnight", "slope_last_30min", "mean_last_3h", "min_last_3h", "sd_last_3h",
                 "mean_day", "below_70_day", "age", "male", "weight")  # fmt: skip


def _consecutive_below(values: np.ndarray, level: float, run: int) -> bool:
    below = np.r_[0, (values < level).astype(int), 0]
    edges = np.flatnonzero(np.diff(below))
    return bool(np.any(edges[1::2] - edges[::2] >= run))


def hypo_features(
    patients: pd.DataFrame,
    observations: pd.DataFrame,
    *,
    variable: str = "subcutaneous_glucose",
    midnight_hours: float = 24.0,
    horizon_hours: float = 6.0,
    level: float = 70.0,
    run: int = 3,
) -> pd.DataFrame:
    """One row per patient: CGM features up to midnight (``midnight_hours`` after each
    patient's first reading) and the label "nocturnal hypoglycaemia": at least ``run``
    consecutive readings below ``level`` mg/dL in the next ``horizon_hours``."""
    cgm = observations[observations["variable"] == variable].sort_values(["subject_id", "time"])
    if cgm.empty:
        raise InputError(f"The observations hold no '{variable}' readings to compute CGM features from.")
    hours = (cgm["time"] - cgm.groupby("subject_id")["time"].transform("min")).dt.total_seconds() / 3600.0
    rows = []
    for subject, group in cgm.assign(hours=hours).groupby("subject_id"):
        h, g = group["hours"].to_numpy(), group["value"].to_numpy(dtype=float)
        day, night = g[h <= midnight_hours], g[(h > midnight_hours) & (h <= midnight_hours + horizon_hours)]
        last3, last30 = (
            g[(h > midnight_hours - 3) & (h <= midnight_hours)],
            (h > midnight_hours - 0.5) & (h <= midnight_hours),
        )
        if night.size < 0.8 * horizon_hours * 12 or last3.size < 6 or last30.sum() < 2:
            continue  # too little CGM to label or describe this night
        slope = np.polyfit(h[last30], g[last30], 1)[0] / 60.0
        rows.append({"subject_id": subject, "cgm_midnight": last3[-1], "slope_last_30min": slope,
                     "mean_last_3h": last3.mean(), "min_last_3h": last3.min(), "sd_last_3h": last3.std(),
                     "mean_day": day.mean(), "below_70_day": float(np.mean(day < level)),
                     "label": int(_consecutive_below(night, level, run))})  # fmt: skip
    frame = pd.DataFrame(rows).set_index("subject_id")
    cov = patients.set_index("subject_id")
    weight = "weight" if "weight" in cov.columns else "BW"
    frame = frame.join(cov[["age", "sex", weight]].rename(columns={weight: "weight"}), how="inner")
    frame["male"] = (frame["sex"] == "male").astype(float)
    frame["age_group"] = np.where(frame["age"] >= 18.0, "adult", np.where(frame["age"] >= 13.0, "adolescent", "child"))
    return frame


def product_hypo_features(product: Any) -> pd.DataFrame:
    """``hypo_features`` of an opened T1D product."""
    return hypo_features(product.table("patients"), product.table("observations"))


# task name -> (features of a product, feature columns)
TASKS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "responder": (product_features, RESPONSE_FEATURES),
    "nocturnal-hypo": (product_hypo_features, HYPO_FEATURES),
}


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else float("nan")


def _bootstrap(y: np.ndarray, p: np.ndarray, metric: Any, n: int, rng: np.random.Generator) -> tuple[float, float]:
    values = []
    for _ in range(n):
        idx = rng.integers(0, y.size, y.size)
        v = metric(y[idx], p[idx])
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def evaluate(
    y: np.ndarray, p: np.ndarray, groups: pd.DataFrame | None = None, *, bootstrap: int = 200, seed: int = 0
) -> dict[str, Any]:
    """AUROC (95 % bootstrap interval), Brier score, reliability curve and subgroup metrics."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    out: dict[str, Any] = {
        "n": int(y.size),
        "prevalence": float(y.mean()),
        "auroc": _auroc(y, p),
        "auroc_ci95": _bootstrap(y, p, _auroc, bootstrap, rng),
        "brier": float(brier_score_loss(y, p)),
        "reliability": {"mean_predicted": mean_pred.tolist(), "observed_fraction": frac_pos.tolist()},
        "subgroups": {},
    }
    columns = {} if groups is None else {c: groups[c].astype(str).to_numpy() for c in groups.columns}
    for column, labels in columns.items():
        for level in sorted(set(labels)):
            sel = labels == level
            ys, ps = y[sel], p[sel]
            out["subgroups"][f"{column}={level}"] = {
                "n": int(sel.sum()),
                "prevalence": float(ys.mean()) if ys.size else float("nan"),
                "auroc": _auroc(ys, ps),
                "auroc_ci95": _bootstrap(ys, ps, _auroc, bootstrap, rng),
                "brier": float(brier_score_loss(ys, ps)) if ys.size else float("nan"),
            }
    return out


@dataclass
class Predictor:
    """A binary classifier over named feature columns.

    Arguments:
        features: the feature columns used.
        label: the label column.
        estimator: a scikit-learn classifier (default: histogram gradient boosting).
        seed: its random state.

    ``fit(frame, manifest=...)`` returns ``self``; ``predict_proba(frame)`` gives P(label = 1).
    """

    features: Sequence[str] = RESPONSE_FEATURES
    label: str = "label"
    estimator: Any = None
    seed: int = 0
    training_: dict[str, Any] = field(default_factory=dict, init=False)
    model_: Any = field(default=None, init=False)

    def _check(self, frame: pd.DataFrame, need_label: bool) -> None:
        wanted = [*self.features, *([self.label] if need_label else [])]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise InputError(f"The frame lacks the columns {missing}; it has {list(frame.columns)}.")

    def fit(self, frame: pd.DataFrame, *, manifest: dict[str, Any] | None = None) -> Predictor:
        self._check(frame, need_label=True)
        y = frame[self.label].to_numpy(dtype=int)
        if y.min() == y.max():
            raise InputError(f"The label '{self.label}' takes one value only ({y[0]}); a classifier needs both.")
        est = self.estimator or HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, random_state=self.seed
        )
        self.model_ = est.fit(frame[list(self.features)].to_numpy(dtype=float), y)
        digest = hashlib.sha256(pd.util.hash_pandas_object(frame[[*self.features, self.label]]).to_numpy().tobytes())
        self.training_ = {
            "rows": len(frame),
            "prevalence": float(y.mean()),
            "data_hash": digest.hexdigest(),
            "manifest": manifest or {},
            "estimator": type(est).__name__,
            "features": list(self.features),
        }
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.model_ is None:
            raise NotFittedError("This Predictor is not fitted; call fit(frame) first.")
        self._check(frame, need_label=False)
        return np.asarray(self.model_.predict_proba(frame[list(self.features)].to_numpy(dtype=float))[:, 1])


def tstr(
    synthetic: pd.DataFrame,
    real: pd.DataFrame,
    *,
    synthetic_manifest: dict[str, Any] | None = None,
    real_manifest: dict[str, Any] | None = None,
    groups: Sequence[str] = ("age_group", "sex"),
    features: Sequence[str] = RESPONSE_FEATURES,
    seed: int = 0,
) -> dict[str, Any]:
    """Train on synthetic, test on real (TSTR) against train on real, test on real (TRTR).

    The real rows are split in half (stratified by label): TRTR trains on one half,
    both predictors are tested on the other.
    """
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(real), dtype=bool)
    for value in (0, 1):
        idx = np.flatnonzero(real["label"].to_numpy() == value)
        test_mask[rng.permutation(idx)[: idx.size // 2]] = True
    real_train, real_test = real[~test_mask], real[test_mask]
    ts = Predictor(features=tuple(features), seed=seed).fit(synthetic, manifest=synthetic_manifest)
    tr = Predictor(features=tuple(features), seed=seed).fit(real_train, manifest=real_manifest)
    g = real_test[list(groups)]
    y = real_test["label"].to_numpy()
    return {
        "tstr": evaluate(y, ts.predict_proba(real_test), g, seed=seed),
        "trtr": evaluate(y, tr.predict_proba(real_test), g, seed=seed),
        "rows": {"synthetic": len(synthetic), "real_train": len(real_train), "real_test": len(real_test)},
        "predictors": {"tstr": ts, "trtr": tr},
    }


def to_json(report: dict[str, Any]) -> str:
    """The report without the fitted predictors, as JSON."""
    return json.dumps({k: v for k, v in report.items() if k != "predictors"}, indent=2, default=float)
