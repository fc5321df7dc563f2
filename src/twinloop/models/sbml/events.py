"""SBML events triggered by time: their firing times, found exactly before integration.

A trigger is supported when it is built from comparisons of ``time`` with expressions of
constants (parameters, numbers), combined with and/or/xor/not. Its candidate firing
times are the thresholds of those comparisons; the event fires at a threshold where the
trigger goes from false to true (at time 0, "before" is the trigger's ``initialValue``).
The engine then stops the integration at each firing time and applies the assignments,
so the result is exact. A trigger that depends on the state is refused, naming the event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from twinloop.errors import ModelError
from twinloop.models.sbml.document import SUPPORTED, Event, Node

_RELATIONS = {"RELATIONAL_EQ", "RELATIONAL_GEQ", "RELATIONAL_GT", "RELATIONAL_LEQ", "RELATIONAL_LT", "RELATIONAL_NEQ"}
_LOGICAL = {"LOGICAL_AND", "LOGICAL_OR", "LOGICAL_XOR", "LOGICAL_NOT", "CONSTANT_TRUE", "CONSTANT_FALSE"}


def state_dependent(event: Event, constant: Callable[[str], bool], expand: Callable[[Node], set[str]]) -> None:
    """Refuse an event whose trigger reads anything but time and constants."""
    varying = sorted(n for n in expand(event.trigger) if not constant(n))
    if varying:
        raise ModelError(
            f"SBML event '{event.id}' has a trigger that depends on {varying}, which change during the "
            f"simulation; twinloop supports only events triggered by time (e.g. time >= 10) and constants; "
            f"{SUPPORTED}."
        )


def thresholds(event: Event, node: Node, value: Callable[[Node], float]) -> list[float]:
    """The times at which the truth of the trigger may change."""
    if node.kind in _RELATIONS:
        if len(node.children) != 2:
            raise _unsupported(event)
        a, b = node.children
        if a.kind == "NAME_TIME" and not b.uses("NAME_TIME"):
            return [value(b)]
        if b.kind == "NAME_TIME" and not a.uses("NAME_TIME"):
            return [value(a)]
        if not a.uses("NAME_TIME") and not b.uses("NAME_TIME"):
            return []
        raise _unsupported(event)
    if node.kind in _LOGICAL:
        return [t for child in node.children for t in thresholds(event, child, value)]
    if node.uses("NAME_TIME"):
        raise _unsupported(event)
    return []


def _unsupported(event: Event) -> ModelError:
    return ModelError(
        f"SBML event '{event.id}' has a trigger twinloop cannot solve for its firing times; twinloop "
        "supports triggers that compare time with constants (e.g. time >= t_dose), combined with "
        "and/or/not."
    )


def firing_times(event: Event, truth: Callable[[float], Any], candidates: list[float]) -> list[tuple[float, bool]]:
    """The times >= 0 at which the trigger turns from false to true, each with whether it
    turns true only after that time (``time > c``: the value at ``c`` is the one before)."""
    times = []
    initial = bool(truth(0.0)) if event.initial_value is None else event.initial_value
    for t in sorted({max(0.0, c) for c in candidates} | {0.0}):
        if not np.isfinite(t):
            continue
        eps = 1e-9 * max(1.0, abs(t))
        before = initial if t == 0.0 else bool(truth(t - eps))
        now = bool(truth(t))
        if not before and (now or bool(truth(t + eps))):
            times.append((t, not now))
    return times
