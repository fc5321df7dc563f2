"""Treatments shared by several models, and the checks every treatment uses.

A model lists the treatments it takes in its profile (``ModelProfile.treatments``);
``CHEMOTHERAPY`` (cyclic doses on ``dose_iv`` or ``dose_oral``) and ``RADIOTHERAPY``
(linear-quadratic fractions) serve the tumour and PK models. A treatment only one model
takes lives in that model's file (``t1d_uva_padova.BASAL_BOLUS``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from twinloop.errors import InputError
from twinloop.models import radiotherapy
from twinloop.models.inputs import Inputs
from twinloop.models.profile import Treatment

MAX_EVENTS = 100_000
"""The most doses, meals or visits one treatment or schedule may list or generate."""


def check_events(field: str, count: float) -> None:
    """Refuse a plan or schedule with more than :data:`MAX_EVENTS` events."""
    if count > MAX_EVENTS:
        raise InputError(
            f"{field} gives {count:g} events; the largest accepted is {MAX_EVENTS}. Use fewer cycles, days or visits."
        )


def number(at: str, item: Mapping[str, Any], key: str, default: float | None, *, positive: bool = False) -> float:
    """``item[key]`` (or ``default``) as a finite number ``>= 0`` (``> 0`` if ``positive``)."""
    value = item.get(key, default)
    if value is None:
        raise InputError(f"{at} needs '{key}'.")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{at}.{key} must be a finite number; got {value!r}.")
    if value < 0 or (positive and value == 0):
        raise InputError(f"{at}.{key} must be {'> 0' if positive else '>= 0'}; got {value!r}.")
    return float(value)


def count(at: str, item: Mapping[str, Any], key: str, default: int | None) -> int:
    """``item[key]`` (or ``default``) as a whole number of events ``>= 1``."""
    value = number(at, item, key, default, positive=True)
    if value != int(value):
        raise InputError(f"{at}.{key} must be a whole number >= 1; got {item.get(key)!r}.")
    check_events(f"{at}.{key}", value)
    return int(value)


def chemotherapy(
    dose_mg: float,
    *,
    cycle_days: float = 28.0,
    days_on: int = 5,
    n_cycles: int = 6,
    route: str = "iv",
    start: float = 0,
) -> Inputs:
    """A cyclic regimen: ``dose_mg`` on each of the first ``days_on`` days of every cycle."""
    channel = "dose_iv" if route == "iv" else "dose_oral"
    doses = [(start + c * cycle_days + d, dose_mg) for c in range(n_cycles) for d in range(days_on)]
    return Inputs.bolus(channel, doses)


def _check_chemotherapy(at: str, item: Mapping[str, Any], duration: float | None) -> None:
    del duration
    number(at, item, "dose_mg", None, positive=True)
    number(at, item, "cycle_days", 21.0, positive=True)
    number(at, item, "start", 0.0)
    if item.get("route", "iv") not in ("iv", "oral"):
        raise InputError(f"{at}.route must be 'iv' or 'oral'; got {item.get('route')!r}.")
    check_events(f"{at}.n_cycles x days_on", count(at, item, "n_cycles", 6) * count(at, item, "days_on", 1))


def _build_chemotherapy(item: Mapping[str, Any], params: Any, latent: Any, duration: float) -> Inputs:
    del params, latent, duration
    return chemotherapy(
        float(item["dose_mg"]),
        cycle_days=float(item.get("cycle_days", 21.0)),
        days_on=int(item.get("days_on", 1)),
        n_cycles=int(item.get("n_cycles", 6)),
        route=str(item.get("route", "iv")),
        start=float(item.get("start", 0.0)),
    )


def _check_radiotherapy(at: str, item: Mapping[str, Any], duration: float | None) -> None:
    del duration
    number(at, item, "start", 0.0)
    number(at, item, "dose_gy", None, positive=True)
    count(at, item, "fractions", None)
    if not isinstance(item.get("weekdays_only", True), bool):
        raise InputError(f"{at}.weekdays_only must be true or false; got {item.get('weekdays_only')!r}.")


def _build_radiotherapy(item: Mapping[str, Any], params: Any, latent: Any, duration: float) -> Inputs:
    del params, latent, duration
    return radiotherapy.schedule(
        float(item.get("start", 0.0)),
        int(item["fractions"]),
        float(item["dose_gy"]),
        weekdays_only=bool(item.get("weekdays_only", True)),
    )


CHEMOTHERAPY = Treatment(
    kind="chemotherapy",
    keys=("dose_mg", "cycle_days", "days_on", "n_cycles", "route", "start"),
    check=_check_chemotherapy,
    build=_build_chemotherapy,
    channels=lambda item: ("dose_oral" if item.get("route", "iv") == "oral" else "dose_iv",),
    description="dose_mg on each of the first days_on days of every cycle_days cycle, n_cycles times",
)
RADIOTHERAPY = Treatment(
    kind="radiotherapy",
    keys=("start", "fractions", "dose_gy", "weekdays_only"),
    check=_check_radiotherapy,
    build=_build_radiotherapy,
    channels=lambda item: (radiotherapy.CHANNEL,),
    description="fractions of dose_gy Gy from day start (Monday to Friday unless weekdays_only is false)",
)
