"""One row per subject: the tabular view of a product that fidelity and privacy are judged on.

A row holds the subject's covariates (the quasi-identifiers: age, sex, weight...),
summaries of each observed variable (first, minimum, maximum, mean and last value,
number of observations) and the outcome columns. Model parameters and bookkeeping
columns of synthetic products are left out: a real dataset has neither.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError

BOOKKEEPING = ("subject_id", "arm", "group", "chunk", "simulation_failed")
SUMMARIES = ("first", "min", "max", "mean", "last", "count")


def subject_records(product: Any) -> pd.DataFrame:
    """Per-subject records of an opened product (index: ``subject_id``)."""
    patients = product.table("patients")
    parameters = _parameter_names(product)
    covariates = [c for c in patients.columns if c not in BOOKKEEPING and c not in parameters]
    frame = patients.set_index("subject_id")[covariates]
    frame = frame.join(observation_summaries(product.table("observations")), how="left")
    outcomes = product.table("outcomes").set_index("subject_id")
    kept = [c for c in outcomes.columns if c != "arm" and _tabular(outcomes[c])]
    frame = frame.join(outcomes[kept], how="left")
    for column in frame.columns:
        if frame[column].dtype == bool:
            frame[column] = frame[column].astype(float)
    return frame


def observation_summaries(observations: pd.DataFrame) -> pd.DataFrame:
    """``<variable>_<summary>`` columns per subject from a canonical observation table."""
    if observations.empty:
        return pd.DataFrame()
    ordered = observations.sort_values(["subject_id", "time"])
    grouped = ordered.groupby(["subject_id", "variable"])["value"]
    table = pd.DataFrame(grouped.agg(["first", "min", "max", "mean", "last", "count"]).unstack("variable"))
    table.columns = [f"{pair[1]}_{pair[0]}" for pair in table.columns]
    return table.astype(float)


def _tabular(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series) or series.nunique() <= 20)


def _parameter_names(product: Any) -> set[str]:
    from twinloop.models.registry import get

    model = product.manifest.get("model", {}).get("id")
    return set(get(model).parameter_names) if model else set()


def common_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Columns present in both tables with the same kind (numeric or categorical)."""
    shared = [c for c in a.columns if c in b.columns]
    if not shared:
        raise InputError(
            f"The two datasets share no columns: {list(a.columns)[:8]} vs {list(b.columns)[:8]}; "
            "compare products of the same model and observables."
        )
    return [c for c in shared if is_numeric(a[c]) == is_numeric(b[c])]


def is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series)) and not pd.api.types.is_bool_dtype(series)


def numeric_matrix(frame: pd.DataFrame, columns: list[str], scale: pd.DataFrame | None = None) -> np.ndarray:
    """Numeric columns standardized by ``scale``'s mean and sd, categoricals one-hot; NaN -> 0."""
    scale = frame if scale is None else scale
    parts = []
    for c in columns:
        if is_numeric(frame[c]):
            ref = scale[c].astype(float)
            sd = float(ref.std()) or 1.0
            parts.append(((frame[c].astype(float) - float(ref.mean())) / sd).fillna(0.0).to_numpy()[:, None])
        else:
            levels = sorted(scale[c].dropna().astype(str).unique())
            values = frame[c].astype(str).to_numpy()
            parts.append(np.stack([(values == lv).astype(float) for lv in levels], axis=1))
    return np.concatenate(parts, axis=1)
