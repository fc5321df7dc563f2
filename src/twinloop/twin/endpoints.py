"""Endpoints of a what-if comparison: one number per ensemble member and arm.

Named endpoints: ``time_in_range`` (% of time 70-180 mg/dL), ``time_below_range``
(% < 70), ``time_above_range`` (% > 180), ``mean_glucose`` (on subcutaneous glucose);
and for any observable ``final:<observable>``, ``min:<observable>``, ``max:<observable>``
and ``at:<observable>:<time in model units from now>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from twinloop.errors import InputError


@dataclass(frozen=True)
class Endpoint:
    name: str
    observable: str
    unit: str
    better: str  # "higher" or "lower"
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (times, values (N, T)) -> (N,)


def _fraction(lo: float, hi: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def f(t: np.ndarray, v: np.ndarray) -> np.ndarray:
        return 100.0 * np.mean((v >= lo) & (v <= hi), axis=1)

    return f


GLUCOSE = "subcutaneous_glucose"
NAMED = {
    "time_in_range": Endpoint("time_in_range", GLUCOSE, "%", "higher", _fraction(70.0, 180.0)),
    "time_below_range": Endpoint("time_below_range", GLUCOSE, "%", "lower", _fraction(-np.inf, 70.0 - 1e-9)),
    "time_above_range": Endpoint("time_above_range", GLUCOSE, "%", "lower", _fraction(180.0 + 1e-9, np.inf)),
    "mean_glucose": Endpoint("mean_glucose", GLUCOSE, "mg/dL", "lower", lambda t, v: v.mean(axis=1)),
}


def endpoint(spec: str, units: dict[str, str], better: str | None = None) -> Endpoint:
    """Parse an endpoint name (see the module docstring) for a model with observables ``units``."""
    if spec in NAMED:
        ep = NAMED[spec]
        if ep.observable not in units:
            raise InputError(f"Endpoint {spec!r} needs the observable {ep.observable!r}, which the model lacks.")
        return ep if better is None else Endpoint(ep.name, ep.observable, ep.unit, better, ep.fn)
    parts = spec.split(":")
    if parts[0] in ("final", "min", "max") and len(parts) == 2 and parts[1] in units:
        pick = {"final": lambda t, v: v[:, -1], "min": lambda t, v: v.min(axis=1), "max": lambda t, v: v.max(axis=1)}
        return Endpoint(spec, parts[1], units[parts[1]], better or "lower", pick[parts[0]])
    if parts[0] == "at" and len(parts) == 3 and parts[1] in units:
        try:
            when = float(parts[2])
        except ValueError:
            when = float("nan")
        if np.isfinite(when):
            return Endpoint(
                spec,
                parts[1],
                units[parts[1]],
                better or "lower",
                lambda t, v: np.array([np.interp(when, t, row) for row in v]),
            )
    raise InputError(
        f"Unknown endpoint {spec!r}; use one of {sorted(NAMED)}, or final:/min:/max:<observable>, or "
        f"at:<observable>:<time>, with an observable of {sorted(units)}."
    )
