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

from twinloop._schema import empty_doses
from twinloop.errors import InputError
from twinloop.models import radiotherapy, t1d_uva_padova, tgi_claret
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.products.limits import check_events

KINDS = ("basal_bolus", "chemotherapy", "radiotherapy", "none")

KEYS = {
    "none": {"kind"},
    "basal_bolus": {"kind", "meals", "carb_ratio_scale"},
    "chemotherapy": {"kind", "dose_mg", "cycle_days", "days_on", "n_cycles", "route", "start"},
    "radiotherapy": {"kind", "start", "fractions", "dose_gy", "weekdays_only"},
}
CHANNELS = {"basal_bolus": "insulin", "chemotherapy": "dose_iv", "radiotherapy": radiotherapy.CHANNEL}


def validate_treatment(where: str, raw: Any, model: Model, duration: float | None = None) -> list[dict[str, Any]]:
    """Normalize a treatment spec to a list of mappings, checking kinds, keys, values,
    channels and (given the ``duration``) the number of doses it makes."""
    items = raw if isinstance(raw, list) else [raw or {"kind": "none"}]
    if not items or len(items) > 100:
        raise InputError(f"{where} must be one treatment or a list of 1 to 100; got {len(items)}.")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping) or item.get("kind") not in KINDS:
            raise InputError(f"{at}.kind must be one of {', '.join(KINDS)}; got {item!r}.")
        kind = item["kind"]
        unknown = sorted(str(k) for k in set(item) - KEYS[kind])
        if unknown:
            raise InputError(f"{at} has unknown keys {unknown}; a {kind} treatment accepts {sorted(KEYS[kind])}.")
        channel = CHANNELS.get(kind)
        if kind == "chemotherapy" and item.get("route", "iv") == "oral":
            channel = "dose_oral"
        if channel and channel not in [inp.name for inp in model.inputs]:
            raise InputError(f"{at}: model '{model.id}' has no '{channel}' input for {kind}.")
        _check_values(at, item, duration)
        out.append(dict(item))
    return out


def _number(at: str, item: Mapping[str, Any], key: str, default: float | None, *, positive: bool = False) -> float:
    value = item.get(key, default)
    if value is None:
        raise InputError(f"{at} needs '{key}'.")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{at}.{key} must be a finite number; got {value!r}.")
    if value < 0 or (positive and value == 0):
        raise InputError(f"{at}.{key} must be {'> 0' if positive else '>= 0'}; got {value!r}.")
    return float(value)


def _count(at: str, item: Mapping[str, Any], key: str, default: int | None) -> int:
    value = _number(at, item, key, default, positive=True)
    if value != int(value):
        raise InputError(f"{at}.{key} must be a whole number >= 1; got {item.get(key)!r}.")
    check_events(f"{at}.{key}", value)
    return int(value)


def _check_values(at: str, item: Mapping[str, Any], duration: float | None) -> None:
    """Types, ranges and the number of events of one treatment item."""
    kind = item["kind"]
    if kind == "basal_bolus":
        meals = item.get("meals", [])
        if not isinstance(meals, list) or len(meals) > 48:
            raise InputError(f"{at}.meals must be a list of at most 48 [minute of the day, grams]; got {meals!r}.")
        for j, meal in enumerate(meals):
            if not (isinstance(meal, list | tuple) and len(meal) == 2):
                raise InputError(f"{at}.meals[{j}] must be [minute of the day, grams], e.g. [420, 50]; got {meal!r}.")
            minute = _number(f"{at}.meals[{j}]", {"minute": meal[0]}, "minute", None)
            _number(f"{at}.meals[{j}]", {"grams": meal[1]}, "grams", None)
            if minute >= 1440:
                raise InputError(f"{at}.meals[{j}]: the minute of the day must be below 1440; got {meal[0]!r}.")
        _number(at, item, "carb_ratio_scale", 1.0, positive=True)
        if duration is not None:
            check_events(f"{at}.meals over 'duration'", len(meals) * math.ceil(duration / 1440.0))
    elif kind == "chemotherapy":
        _number(at, item, "dose_mg", None, positive=True)
        _number(at, item, "cycle_days", 21.0, positive=True)
        _number(at, item, "start", 0.0)
        if item.get("route", "iv") not in ("iv", "oral"):
            raise InputError(f"{at}.route must be 'iv' or 'oral'; got {item.get('route')!r}.")
        check_events(f"{at}.n_cycles x days_on", _count(at, item, "n_cycles", 6) * _count(at, item, "days_on", 1))
    elif kind == "radiotherapy":
        _number(at, item, "start", 0.0)
        _number(at, item, "dose_gy", None, positive=True)
        _count(at, item, "fractions", None)
        if not isinstance(item.get("weekdays_only", True), bool):
            raise InputError(f"{at}.weekdays_only must be true or false; got {item.get('weekdays_only')!r}.")


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
        return empty_doses(time="model")
    out = pd.concat(frames, ignore_index=True)
    out = out[out["amount"] > 0]
    return out.sort_values(["subject_id", "time", "input"], kind="stable").reset_index(drop=True)
