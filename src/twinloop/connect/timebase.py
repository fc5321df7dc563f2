"""Absolute timestamps <-> model time from a twin's origin, and dose tables -> model inputs."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from twinloop.connect.units import conversion
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs

_UNIT_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "wk": 604800.0}
TimeBase = str | float  # a model's clock time unit, or the seconds of clock time in one model time unit


def unit_seconds(time_unit: TimeBase) -> float:
    """Seconds in one unit of model time: a clock unit's (``s``, ``min``, ``h``, ``d``,
    ``wk``), or the number itself (a declared ``clock_seconds``)."""
    if isinstance(time_unit, int | float) and not isinstance(time_unit, bool):
        if not (math.isfinite(time_unit) and time_unit > 0):
            raise InputError(f"clock_seconds must be a finite number of seconds > 0; got {time_unit!r}.")
        return float(time_unit)
    if time_unit not in _UNIT_SECONDS:
        raise InputError(
            f"Model time unit {time_unit!r} cannot be mapped to clock time by itself (only s, min, h, d and wk "
            "can). Declare how many seconds one unit of model time lasts: Model(clock_seconds=...) in the model, "
            "or TwinConfig(clock_seconds=...) for a twin (e.g. 3600 when one unit is an hour)."
        )
    return _UNIT_SECONDS[time_unit]


def clock_seconds(model: Model, declared: float | None = None) -> float:
    """Seconds of clock time in one unit of ``model``'s time: ``declared`` (a twin's
    setting), else the model's own ``clock_seconds``, else its time unit's."""
    if declared is not None:
        return unit_seconds(declared)
    if model.clock_seconds is not None:
        return unit_seconds(model.clock_seconds)
    return unit_seconds(model.time_unit)


def to_model_time(times: Any, origin: pd.Timestamp, time_unit: TimeBase) -> np.ndarray:
    stamps = pd.to_datetime(pd.Series(times), utc=True)
    return ((stamps - origin).dt.total_seconds() / unit_seconds(time_unit)).to_numpy(dtype=np.float64)


def time_ns(times: Any) -> np.ndarray:
    """UTC nanoseconds of a column of timestamps."""
    stamps = pd.to_datetime(pd.Series(times), utc=True).astype("datetime64[ns, UTC]")
    return np.asarray(stamps.array.asi8)  # type: ignore[attr-defined]


def ns_to_model_time(ns: np.ndarray, origin: pd.Timestamp, time_unit: TimeBase) -> np.ndarray:
    """:func:`to_model_time` of UTC nanoseconds, bit for bit, without building a pandas
    column: seconds as pandas' ``total_seconds`` computes them (whole seconds plus the
    fraction; beyond 2**53 ns, ~104 days, a fraction rounded onto a whole second is nudged
    off it)."""
    delta = np.asarray(ns, dtype=np.int64) - origin.as_unit("ns").value
    whole, fraction = np.divmod(delta, 10**9)
    seconds = whole + fraction / 10**9
    if delta.size and np.abs(delta).max() > 2**53:
        fixable = (fraction != 0) & (np.abs(whole) < 2**52)
        floor = whole.astype(np.float64)
        seconds = np.where(fixable & (seconds == floor), np.nextafter(seconds, seconds + 1.0), seconds)
        seconds = np.where(fixable & (seconds == floor + 1.0), np.nextafter(seconds, seconds - 1.0), seconds)
    return seconds / unit_seconds(time_unit)


def to_timestamps(model_time: Any, origin: pd.Timestamp, time_unit: TimeBase) -> pd.DatetimeIndex:
    seconds = np.asarray(model_time, dtype=np.float64) * unit_seconds(time_unit)
    return pd.DatetimeIndex(origin + pd.to_timedelta(seconds, unit="s"))


def inputs_from_doses(
    model: Model, doses: pd.DataFrame, origin: pd.Timestamp, shift: float = 0.0, *, clock: float | None = None
) -> Inputs:
    """Model inputs from a canonical dose table (times relative to ``origin`` minus ``shift``).

    A ``carbs`` amount in grams is a meal eaten at 5 g/min; an amount given to a rate
    input (insulin in U) is delivered over its duration (at least one minute); a rate
    row holds its rate for its duration; an amount given to a bolus input (a drug in
    mg, radiotherapy in Gy) is added at once. Units are converted to the model's.
    ``clock``: seconds per model time unit (default :func:`clock_seconds` of the model).
    """
    if doses is None or doses.empty:
        return Inputs()
    t = to_model_time(doses["time"], origin, clock_seconds(model, clock)) - shift
    rows = doses[["input", "kind", "amount", "duration", "unit"]].itertuples(index=False, name=None)
    return inputs_from_rows(model, rows, t, clock=clock)


def inputs_from_rows(
    model: Model, rows: Iterable[tuple[Any, ...]], t: np.ndarray, *, clock: float | None = None
) -> Inputs:
    """Model inputs from dose rows ``(input, kind, amount, duration, unit)`` starting at
    model times ``t`` (see :func:`inputs_from_doses`)."""
    known = {i.name: i for i in model.inputs}
    minute = 60.0 / clock_seconds(model, clock)
    plan = Inputs()
    meals = []
    for (name, kind, amount, duration, unit), start in zip(rows, t, strict=True):
        if name not in known:
            raise InputError(f"Dose input {name!r} is not an input of model '{model.id}' ({sorted(known)}).")
        inp = known[name]
        span = float(duration) * minute
        if inp.kind == "bolus":
            scale, offset = conversion(str(unit), inp.unit, name)
            plan = plan + Inputs.bolus(name, [(float(start), float(amount) * scale + offset)])
        elif kind == "rate":
            scale, _ = conversion(str(unit), inp.unit, name)
            plan = plan + Inputs.rate(name, float(start), float(start) + span, float(amount) * scale)
        else:
            scale, _ = conversion(str(unit), f"({inp.unit})*{model.time_unit}", name)
            if name == "carbs":
                meals.append((float(start), float(amount) * scale))
            else:
                plan = plan + Inputs.pulse(name, float(start), float(amount) * scale, max(span, minute))
    if meals:
        plan = plan + Inputs.meals(meals)
    return plan
