"""What a controller sees and does, and the controller itself.

A controller is written for one patient as pure JAX: ``policy(state, observation) ->
(state, action)``. The closed loop vmaps it over the cohort and compiles it into the
same loop as the patient model, so every patient carries its own controller state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from twinloop.errors import InputError


class Observation(NamedTuple):
    """What a controller sees at the start of each control period (one patient).

    ``cgm`` is the mean of the sensor's per-minute readings over the period that just
    ended (readings hold between samples), as simglucose's environment gives it;
    ``meal_g`` the carbohydrate announced during that period (with the scenario's
    counting error; rescue carbohydrate is not announced); ``iob_U`` the insulin on
    board (all insulin the pump delivered, decaying through two 55-minute compartments).
    """

    cgm: Any
    meal_g: Any
    time_min: Any
    iob_U: Any
    basal_U_per_min: Any
    carb_ratio_g_per_U: Any
    correction_factor_mg_dl_per_U: Any
    period_min: Any


class Action(NamedTuple):
    """Insulin requested for the coming period: a basal rate held over it and a bolus
    delivered evenly over it (``bolus_U / period`` U/min); the pump rounds and clips."""

    basal_U_per_min: Any
    bolus_U: Any


State = Any
Policy = Callable[[State, Observation], tuple[State, Action]]


@dataclass(frozen=True)
class Controller:
    """An insulin-dosing algorithm for the closed loop.

    Arguments:
        name: a short name (reports, lineage).
        init: ``init(observation) -> state``, the controller state of one patient from
            its first observation (any pytree of JAX scalars or arrays).
        policy: ``policy(state, observation) -> (state, action)`` for one patient, pure JAX.
        settings: its parameters, recorded with every result.
    """

    name: str
    init: Callable[[Observation], State]
    policy: Policy
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"A controller needs a non-empty name; got {self.name!r}.")
        for key in ("init", "policy"):
            if not callable(getattr(self, key)):
                raise InputError(f"Controller '{self.name}': {key} must be a function; got {getattr(self, key)!r}.")

    @classmethod
    def from_function(
        cls, name: str, policy: Policy, init_state: State = (), settings: Mapping[str, Any] | None = None
    ) -> Controller:
        """Wrap a user's JAX function ``(state, observation) -> (state, action)``; every
        patient starts from ``init_state``."""

        def init(observation: Observation) -> State:
            del observation
            return init_state

        return cls(name, init, policy, dict(settings or {}))
