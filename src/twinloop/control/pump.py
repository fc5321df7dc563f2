"""Insulin pumps: simglucose's published limits and increments (Insulet, Cozmo).

Each minute the pump turns a requested rate into a delivered one exactly as
simglucose does: basal and bolus separately, each rounded to the pump's increment
(simglucose applies the increment to the rate in pmol/min) and clipped to its limits.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from twinloop.errors import InputError

U_TO_PMOL = 6000.0


@dataclass(frozen=True)
class Pump:
    """One pump's limits (U/min) and increments."""

    name: str
    min_bolus: float
    max_bolus: float
    inc_bolus: float
    min_basal: float
    max_basal: float
    inc_basal: float

    @classmethod
    def named(cls, name: str) -> Pump:
        known = pumps()
        if name not in known:
            raise InputError(f"Unknown pump '{name}'; known pumps: {', '.join(known)}.")
        return known[name]

    def basal(self, rate: Any) -> Any:
        """Delivered basal (U/min) for a requested basal rate (U/min)."""
        return _deliver(rate, self.inc_basal, self.min_basal, self.max_basal)

    def bolus(self, rate: Any) -> Any:
        """Delivered bolus (U/min) for a requested bolus rate (U/min)."""
        return _deliver(rate, self.inc_bolus, self.min_bolus, self.max_bolus)


def _deliver(rate: Any, increment: float, low: float, high: float) -> Any:
    import jax.numpy as jnp

    rounded = jnp.round(rate * U_TO_PMOL / increment) * increment / U_TO_PMOL
    return jnp.maximum(jnp.minimum(rounded, high), low)


@cache
def pumps() -> dict[str, Pump]:
    """The pumps simglucose publishes, by name (``data/pumps.csv``, MIT licence)."""
    text = resources.files("twinloop.control").joinpath("data", "pumps.csv").read_text()
    fields = ("min_bolus", "max_bolus", "inc_bolus", "min_basal", "max_basal", "inc_basal")
    return {r["Name"]: Pump(r["Name"], *(float(r[f]) for f in fields)) for r in csv.DictReader(text.splitlines())}
