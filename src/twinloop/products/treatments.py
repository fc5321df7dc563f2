"""Treatment plans of a product, built per cohort from a declarative spec.

The kinds a model takes are its profile's treatments (``model.profile.treatments``,
e.g. ``basal_bolus``, ``chemotherapy``, ``radiotherapy``), each with its accepted keys,
its checks and its builder; ``none`` is always accepted. A list combines several.
Every plan is one cohort plan with per-patient doses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from twinloop._schema import empty_doses
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.models.profile import Treatment


def kinds(model: Model) -> tuple[str, ...]:
    """The treatment kinds ``model`` takes, ``none`` first."""
    return ("none", *(t.kind for t in model.profile.treatments))


def validate_treatment(where: str, raw: Any, model: Model, duration: float | None = None) -> list[dict[str, Any]]:
    """Normalize a treatment spec to a list of mappings, checking kinds, keys, values,
    channels and (given the ``duration``) the number of doses it makes."""
    items = raw if isinstance(raw, list) else [raw or {"kind": "none"}]
    if not items or len(items) > 100:
        raise InputError(f"{where} must be one treatment or a list of 1 to 100; got {len(items)}.")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping) or item.get("kind") not in kinds(model):
            raise InputError(
                f"{at}.kind must be one of {', '.join(kinds(model))} (the treatments model '{model.id}' takes); "
                f"got {item!r}."
            )
        treatment = model.profile.treatment(str(item["kind"]))
        accepted = {"kind", *(treatment.keys if treatment else ())}
        unknown = sorted(str(k) for k in set(item) - accepted)
        if unknown:
            raise InputError(f"{at} has unknown keys {unknown}; a {item['kind']} treatment accepts {sorted(accepted)}.")
        if treatment is not None:
            _check_channels(at, item, treatment, model)
            treatment.check(at, item, duration)
        out.append(dict(item))
    return out


def _check_channels(at: str, item: Mapping[str, Any], treatment: Treatment, model: Model) -> None:
    names = [inp.name for inp in model.inputs]
    for channel in treatment.channels(item):
        if channel not in names:
            raise InputError(f"{at}: model '{model.id}' has no '{channel}' input for {treatment.kind}.")


def build_plan(
    items: Sequence[Mapping[str, Any]],
    params: Mapping[str, np.ndarray],
    latent: pd.DataFrame,
    duration: float,
    model: Model,
) -> Inputs:
    """The cohort plan of ``items`` (checked by :func:`validate_treatment`) for patients with
    parameter columns ``params`` and covariate/latent table ``latent``."""
    plan = Inputs()
    for item in items:
        treatment = model.profile.treatment(str(item["kind"]))
        if treatment is not None:
            plan = plan + treatment.build(item, params, latent, duration)
    return plan


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
    out = _merge_runs(out[out["amount"] > 0])
    return out.sort_values(["subject_id", "time", "input"], kind="stable").reset_index(drop=True)


def _merge_runs(doses: pd.DataFrame) -> pd.DataFrame:
    """Join a patient's back-to-back rate rows of one input at the same rate into one row
    (a cohort plan breaks wherever any patient's rate changes; one patient's need not)."""
    frame = doses.sort_values(["subject_id", "input", "time"], kind="stable").reset_index(drop=True)
    rate = (frame["kind"] == "rate").to_numpy()
    end = (frame["time"] + frame["duration"]).to_numpy()
    same = (frame["subject_id"].to_numpy()[1:] == frame["subject_id"].to_numpy()[:-1]) & (
        frame["input"].to_numpy()[1:] == frame["input"].to_numpy()[:-1]
    )
    joins = same & rate[1:] & rate[:-1] & (end[:-1] == frame["time"].to_numpy()[1:])
    joins &= frame["amount"].to_numpy()[1:] == frame["amount"].to_numpy()[:-1]
    if not joins.any():
        return frame
    run = np.cumsum(np.r_[True, ~joins])
    merged = frame.groupby(run, sort=False).agg({**{c: "first" for c in frame.columns}, "duration": "sum"})
    return merged.reset_index(drop=True)
