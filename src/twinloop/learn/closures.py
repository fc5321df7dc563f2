"""The closures a saved hybrid model can name: each model's declared ones, plus registered ones.

A model declares the learned terms it admits in its profile (``ModelProfile.closures``,
plain data, since models cannot import ``learn``); they are named ``"<model id>:<closure
name>"`` and built here as :class:`~twinloop.learn.closure.Closure`. A saved hybrid model
stores its network weights and the name of its closure; loading looks the name up here
(closures for a model that does not declare them are added with :func:`register`).
"""

from __future__ import annotations

from collections.abc import Callable

from twinloop.errors import ModelError
from twinloop.learn.closure import Closure
from twinloop.models.profile import ClosureSpec
from twinloop.models.registry import available as available_models
from twinloop.models.registry import get as get_model

_REGISTERED: dict[str, tuple[str, Callable[[], Closure]]] = {}


def from_spec(spec: ClosureSpec) -> Closure:
    """The closure a model's declaration describes."""
    return Closure(spec.name, spec.target, tuple(spec.features), spec.unit, spec.lower, spec.upper, spec.gate,
                   spec.gate_description, spec.width, spec.depth, spec.description)  # fmt: skip


def available() -> list[str]:
    """Every closure name: the registered models' declared ones and the registered ones."""
    declared = [f"{m}:{c.name}" for m in available_models() for c in get_model(m).profile.closures]
    return sorted({*declared, *_REGISTERED})


def get(key: str) -> tuple[str, Closure]:
    """``(core model id, closure)`` named ``key`` (``"<model>:<closure>"``)."""
    if key in _REGISTERED:
        core_id, build = _REGISTERED[key]
        return core_id, build()
    core_id, _, name = key.rpartition(":")
    spec = get_model(core_id).profile.closure(name) if core_id in available_models() else None
    if spec is None:
        raise ModelError(f"Unknown closure '{key}'; available closures: {', '.join(available())}.")
    return core_id, from_spec(spec)


def register(key: str, core_id: str, build: Callable[[], Closure]) -> None:
    """Add a closure for ``core_id`` under ``key``."""
    if key in available():
        raise ModelError(f"A closure named '{key}' is already registered; choose another name.")
    _REGISTERED[key] = (core_id, build)
