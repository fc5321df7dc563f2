"""The default population of a model.

A model whose profile names a population YAML (``ModelProfile.population``, a file next
to the model file) gets that population, for its own id (two models may share one
file, e.g. the one- and two-compartment variants of a tumour model).

A model without one gets a population from its parameter bounds: each free parameter
on the log scale (``Parameter.scale``, "log" by default when its lower bound is > 0)
is log-normal around its default with log-standard deviation ``log(upper / lower) / 6``
(at most :data:`MAX_LOG_SD`), and draws outside the bounds are rejected. A parameter
on the linear scale keeps its default (the population spec has no normal variability;
write a population YAML to vary it). Such a population has no covariates.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from twinloop._yaml import load_yaml
from twinloop.cohort.population import Population
from twinloop.models.base import Model, Parameter
from twinloop.models.registry import get as get_model

MAX_LOG_SD = 0.5


def default_population(model: Model | str) -> Population:
    """The model's declared population, or one from its parameter bounds."""
    model = get_model(model) if isinstance(model, str) else model
    path = model.profile.population
    if path is None:
        return Population.from_dict(bounds_spec(model))
    return _from_file(model.id, str(path))


@cache
def _from_file(model_id: str, path: str) -> Population:
    return Population.from_dict({**load_yaml(path, "a population spec"), "model": model_id})


def _log_scale(p: Parameter) -> bool:
    return str(getattr(p, "scale", "log" if p.lower > 0 else "linear")) == "log" and p.lower > 0 and p.default > 0


def bounds_spec(model: Model) -> dict[str, Any]:
    """The population spec from ``model``'s parameter bounds (see the module docstring)."""
    varying = [p for p in model.parameters if p.name not in model.derived_parameters and _log_scale(p)]
    varying = [p for p in varying if p.upper > p.lower]
    sd = {p.name: min(math.log(p.upper / p.lower) / 6.0, MAX_LOG_SD) for p in varying}
    return {
        "model": model.id,
        "name": f"{model.id}-from-bounds",
        "description": "From the parameter bounds: log-normal around each default, truncated to the bounds.",
        "typical": {p.name: float(p.default) for p in varying},
        "omega": {name: s**2 for name, s in sd.items() if s > 0},
    }
