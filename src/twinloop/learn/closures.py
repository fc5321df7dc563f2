"""The explicit registry of built-in closure declarations: one entry per closure.

A saved hybrid model stores its network weights and the name of its closure; loading
looks the declaration up here (user closures are added with :func:`register`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from twinloop.errors import ModelError
from twinloop.learn.closure import Closure, Feature
from twinloop.models.base import ParamMap


def claret_resistance() -> Closure:
    """For ``tgi-claret`` run without its resistance term (``lam`` at its floor): the fraction
    of the drug kill that is lost over time on treatment, learned from tumour series.

    Term on d(tumour_size)/dt: ``+ KD * E(t) * exp(-lam t) * y * f(t)``, ``f`` in [0, 1].
    The true missing term under Claret's resistance is ``f(t) = 1 - exp(-lam t)``.
    """

    def gate(t: Any, x: Any, u: Any, p: ParamMap) -> Any:
        exposure = p["CL"] / p["V"] * x[1]
        return p["KD"] * exposure * jnp.exp(-p["lam"] * t) * x[2]

    return Closure(
        name="resistance",
        target="tumour_size",
        features=(Feature("time_on_treatment", "d", lambda t, x, u, p: t, scale=365.0, description="model time"),),
        unit="1",
        lower=0.0,
        upper=1.0,
        gate=gate,
        gate_description="the core's drug kill KD * E(t) * exp(-lam t) * y (mm/d)",
        width=16,
        depth=2,
        description="fraction of the drug kill lost to acquired resistance",
    )


_CLOSURES: dict[str, tuple[str, Callable[[], Closure]]] = {
    "tgi-claret:resistance": ("tgi-claret", claret_resistance),
}


def available() -> list[str]:
    return sorted(_CLOSURES)


def get(key: str) -> tuple[str, Closure]:
    """``(core model id, closure)`` registered under ``key`` (``"<model>:<closure>"``)."""
    if key not in _CLOSURES:
        raise ModelError(f"Unknown closure '{key}'; available closures: {', '.join(available())}.")
    core_id, build = _CLOSURES[key]
    return core_id, build()


def register(key: str, core_id: str, build: Callable[[], Closure]) -> None:
    if key in _CLOSURES:
        raise ModelError(f"A closure named '{key}' is already registered; choose another name.")
    _CLOSURES[key] = (core_id, build)
