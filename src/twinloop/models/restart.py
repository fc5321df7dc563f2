"""A model restarted from a given state: its initial state becomes parameters.

``restartable(model)`` declares one extra parameter ``x0:<state>`` per state and
starts from them instead of the model's rule. The engine integrates it unchanged,
so an ensemble of twins (each with its own parameters and current state) runs as a
cohort. The extra parameters carry the states' units; their bounds are open.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import jax.numpy as jnp
import numpy as np

from twinloop.models.base import Model, Parameter

PREFIX = "x0:"
_CACHE: dict[int, tuple[Model, Model]] = {}


def restartable(model: Model) -> Model:
    """The same model, with its initial state given by the parameters ``x0:<state>``
    (appended after the model's own parameters). Cached per model object."""
    hit = _CACHE.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    extra = tuple(
        Parameter(f"{PREFIX}{s.name}", s.unit, 0.0, -math.inf, math.inf, f"state {s.name} at the restart time")
        for s in model.states
    )

    def initial_state(p: Any) -> Any:
        return jnp.stack([jnp.asarray(p[f"{PREFIX}{s.name}"], dtype=jnp.float64) for s in model.states])

    wrapped = replace(
        model,
        id=f"{model.id}+restart",
        parameters=model.parameters + extra,
        initial_state=initial_state,
        steady_state_inputs=None,
        presets={},
    )
    _CACHE[id(model)] = (model, wrapped)
    return wrapped


def restart_parameters(params: np.ndarray, states: np.ndarray) -> np.ndarray:
    """``(n, P)`` parameters and ``(n, S)`` states -> the ``(n, P + S)`` matrix of the restartable model."""
    return np.concatenate([np.atleast_2d(params), np.atleast_2d(states)], axis=1)
