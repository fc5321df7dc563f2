"""The built-in controllers by name, for specs and the command line.

``BUILT_IN`` is the one table of names: adding a built-in controller is one line here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from twinloop.control.controllers import basal_bolus, pid
from twinloop.control.mpc import mpc
from twinloop.control.types import Controller
from twinloop.errors import InputError

BUILT_IN: dict[str, Callable[..., Controller]] = {
    "basal-bolus": basal_bolus,
    "bb": basal_bolus,
    "pid": pid,
    "mpc": mpc,
}


def by_name(name: str, settings: Mapping[str, Any] | None = None) -> Controller:
    """The built-in controller ``name`` with ``settings`` (its factory's keyword arguments).

    Example:
        >>> by_name("pid", {"P": 0.001, "I": 1e-5, "D": 0.001}).name
        'pid'

    Raises:
        InputError: an unknown name, or a setting the controller does not take.
    """
    if not isinstance(name, str) or name not in BUILT_IN:
        raise InputError(f"Unknown controller {name!r}; the built-in controllers are {', '.join(BUILT_IN)}.")
    factory = BUILT_IN[name]
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in (settings or {}).items()}  # YAML lists
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(str(k) for k in set(settings) - set(accepted))
    if unknown:
        raise InputError(f"Controller '{name}' has no settings {unknown}; it takes {accepted or 'none'}.")
    try:
        key = tuple(sorted(settings.items()))
        hash(key)
    except TypeError:
        return factory(**settings)
    return _cached(name, key)


@lru_cache(maxsize=64)
def _cached(name: str, settings: tuple[tuple[str, Any], ...]) -> Controller:
    """One controller object per name and settings, so the closed loop compiled for it is reused."""
    return BUILT_IN[name](**dict(settings))
