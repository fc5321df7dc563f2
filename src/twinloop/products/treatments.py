"""Treatment plans of a product, built per cohort from a declarative spec.

Kinds: ``basal_bolus`` (T1D: daily meals, open-loop basal insulin and meal boluses
of grams / carbohydrate ratio, the patient's own ratio when the population samples
one), ``chemotherapy`` (cyclic doses), ``radiotherapy`` (LQ fractions) and ``none``.
A list combines several. Every plan is one cohort plan with per-patient doses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.models import radiotherapy, t1d_uva_padova, tgi_claret
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs

KINDS = ("basal_bolus", "chemotherapy", "radiotherapy", "none")
DOSE_COLUMNS = {"subject_id": str, "time": float, "input": str, "kind": str, "amount": float, "duration": float,
                "unit": str}  # fmt: skip


def empty_table(columns: Mapping[str, type]) -> pd.DataFrame:
    """A table with these columns and dtypes and no rows."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def validate_treatment(where: str, raw: Any, model: Model) -> list[dict[str, Any]]:
    """Normalize a treatment spec to a list of mappings, checking kinds and channels."""
    items = raw if isinstance(raw, list) else [raw or {"kind": "none"}]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or item.get("kind") not in KINDS:
            raise InputError(f"{where}[{i}].kind must be one of {', '.join(KINDS)}; got {item!r}.")
        needs = {"basal_bolus": "insulin", "chemotherapy": "dose_iv", "radiotherapy": radiotherapy.CHANNEL}
        channel = needs.get(item["kind"])
        if channel and channel not in [inp.name for inp in model.inputs]:
            raise InputError(f"{where}[{i}]: model '{model.id}' has no '{channel}' input for {item['kind']}.")
        out.append(dict(item))
    return out


def build_plan(
    items: Sequence[Mapping[str, Any]], params: Mapping[str, np.ndarray], latent: pd.DataFrame, duration: float
) -> Inputs:
    """The cohort plan of ``items`` for patients with parameter columns ``params``."""
    plan = Inputs()
    for item in items:
        plan = plan + _one(item, params, latent, duration)
    return plan


def _one(item: Mapping[str, Any], params: Mapping[str, np.ndarray], latent: pd.DataFrame, duration: float) -> Inputs:
    kind = item["kind"]
    if kind == "none":
        return Inputs()
    if kind == "basal_bolus":
        days = max(1, math.ceil(duration / 1440.0))
        meals = [(day * 1440.0 + float(t), float(g)) for day in range(days) for t, g in item.get("meals", [])]
        ratio = latent["carb_ratio"].to_numpy() if "carb_ratio" in latent.columns else None
        if ratio is not None:
            ratio = ratio * float(item.get("carb_ratio_scale", 1.0))
        return t1d_uva_padova.basal_bolus(params, meals, carb_ratio_g_per_U=ratio, t_end=days * 1440.0)
    if kind == "chemotherapy":
        return tgi_claret.chemotherapy(
            float(item["dose_mg"]),
            cycle_days=float(item.get("cycle_days", 21.0)),
            days_on=int(item.get("days_on", 1)),
            n_cycles=int(item.get("n_cycles", 6)),
            route=str(item.get("route", "iv")),
            start=float(item.get("start", 0.0)),
        )
    return radiotherapy.schedule(
        float(item.get("start", 0.0)),
        int(item["fractions"]),
        float(item["dose_gy"]),
        weekdays_only=bool(item.get("weekdays_only", True)),
    )


def dose_table(model: Model, plan: Inputs, ids: Sequence[str]) -> pd.DataFrame:
    """Every dose of a cohort plan, one row per patient and event: rate segments with
    their duration and boluses (``doses.parquet``; FHIR MedicationAdministration)."""
    units = {i.name: i.unit for i in model.inputs}
    n = len(ids)
    frames = []
    for seg in plan.segments:
        frames.append(
            pd.DataFrame(
                {
                    "subject_id": ids,
                    "time": seg.start,
                    "input": seg.channel,
                    "kind": "rate",
                    "amount": np.broadcast_to(seg.rate, (n,)),
                    "duration": seg.end - seg.start,
                    "unit": units[seg.channel],
                }
            )
        )
    for bol in plan.boluses:
        frames.append(
            pd.DataFrame(
                {
                    "subject_id": ids,
                    "time": bol.time,
                    "input": bol.channel,
                    "kind": "bolus",
                    "amount": np.broadcast_to(bol.amount, (n,)),
                    "duration": 0.0,
                    "unit": units[bol.channel],
                }
            )
        )
    if not frames:
        return empty_table(DOSE_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out = out[out["amount"] > 0]
    return out.sort_values(["subject_id", "time", "input"], kind="stable").reset_index(drop=True)
