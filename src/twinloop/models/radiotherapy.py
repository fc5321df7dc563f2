"""Radiotherapy fractions as instantaneous linear-quadratic (LQ) cell kill.

A fraction of ``d`` Gy leaves the surviving fraction ``SF = exp(-alpha*d - beta*d**2)``
of clonogenic cells (Fowler 1989). Tumour models declare which states hold cells (or
cell mass) and a geometric exponent: states measuring volume or mass are multiplied
by ``SF``; states measuring a diameter (e.g. a RECIST sum of diameters) by
``SF ** (1/3)``, the diameter of a sphere whose volume kept ``SF`` of its cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from twinloop.errors import InputError
from twinloop.models.base import Input, Parameter, ParamMap
from twinloop.models.inputs import Inputs

CHANNEL = "radiotherapy"
REFERENCE = (
    "Fowler JF. The linear-quadratic formula and progress in fractionated radiotherapy. "
    "Br J Radiol. 1989;62(740):679-694."
)


def surviving_fraction(dose_gy: Any, alpha: Any, beta: Any) -> Any:
    """The LQ surviving fraction after one fraction of ``dose_gy`` Gy."""
    return jnp.exp(-alpha * dose_gy - beta * dose_gy**2)


def parameters(alpha: float = 0.3, beta: float = 0.03) -> tuple[Parameter, ...]:
    """alpha and beta with a tumour alpha/beta of 10 Gy by default (SF at 2 Gy of about 0.49)."""
    return (
        Parameter("alpha", "1/Gy", alpha, 0.01, 1.5, "LQ linear radiosensitivity"),
        Parameter("beta", "1/Gy2", beta, 0.0, 0.5, "LQ quadratic radiosensitivity"),
    )


def fraction_input(cell_states: Sequence[int], exponent: float = 1.0) -> Input:
    """A bolus input of Gy whose effect multiplies the ``cell_states`` by ``SF ** exponent``."""
    rows = tuple(cell_states)

    def effect(x: Any, dose: Any, p: ParamMap) -> Any:
        factor = surviving_fraction(dose, p["alpha"], p["beta"]) ** exponent
        killed = jnp.array([i in rows for i in range(x.shape[0])]).reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(killed, x * factor, x)

    return Input(CHANNEL, "Gy", "bolus", "one radiotherapy fraction (instantaneous LQ kill)", effect=effect)


def schedule(
    start: float, n_fractions: int, dose_gy: float, *, every: float = 1.0, weekdays_only: bool = True
) -> Inputs:
    """``n_fractions`` fractions of ``dose_gy`` Gy from day ``start``, daily (Monday to
    Friday when ``weekdays_only``, with ``start`` a Monday), e.g. 30 x 2 Gy = 60 Gy."""
    if n_fractions < 1 or dose_gy <= 0:
        raise InputError(f"A radiotherapy schedule needs >= 1 fraction of > 0 Gy; got {n_fractions} x {dose_gy} Gy.")
    times: list[float] = []
    day = 0
    while len(times) < n_fractions:
        if not weekdays_only or day % 7 < 5:
            times.append(start + day * every)
        day += 1
    return Inputs.bolus(CHANNEL, [(t, dose_gy) for t in times])


def total_dose(plan: Inputs) -> float:
    """Total physical dose of a plan, Gy."""
    return float(np.sum([np.sum(b.amount) for b in plan.boluses if b.channel == CHANNEL]))


def doses(plan: Inputs) -> Iterable[tuple[float, float]]:
    """(time, Gy) of each fraction."""
    return [(b.time, float(b.amount)) for b in plan.boluses if b.channel == CHANNEL]
