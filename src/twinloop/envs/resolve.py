"""What an environment is built from: the model, its patients and the scenario, each
given by the user or chosen by default, and checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop.control.patients import Patients
from twinloop.control.scenario import Scenario
from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop.models.base import Model

# Meals scatter from day to day and patient to patient about as in simglucose's random
# scenario (meal times with a standard deviation of 30 to 60 min, sizes of about 20 %).
DEFAULT_SCENARIO = Scenario(meal_time_sd_min=30.0, meal_size_cv=0.2)


def controllable_model(model: Model | str | None = None) -> Model:
    """The model an environment drives: ``model`` itself, the registered model of that
    id, or (None) the first registered model that declares a control interface
    (``profile.control``), built-in models first, then the others, each in id order.

    Raises:
        InputError: the model declares no control interface, or none does.
    """
    from twinloop.models import registry
    from twinloop.models.base import Model

    if isinstance(model, Model):
        chosen = model
    elif isinstance(model, str):
        chosen = registry.get(model)
    elif model is None:
        places = registry.sources()
        for model_id in sorted(places, key=lambda i: (places[i].kind != "built-in", i)):
            found = registry.get_or_error(model_id)
            if isinstance(found, Model) and found.profile.control is not None:
                return found
        raise InputError(
            "No registered model declares a control interface (ModelProfile.control); pass model=... "
            "with a model that declares one."
        )
    else:
        raise InputError(f"model must be a twinloop Model, a model id or None; got {type(model).__name__}.")
    if chosen.profile.control is None:
        raise InputError(
            f"Model '{chosen.id}' declares no control interface (ModelProfile.control), so no environment "
            "can drive it; choose a model that declares one (model=None picks the first)."
        )
    return chosen


def env_patients(model: Model, patients: Any, num_envs: int | None, population_seed: int) -> Patients:
    """The patients of ``num_envs`` environments, one each.

    ``patients`` is ``"population"`` (drawn from the model's default population with
    ``population_seed``), ``"published"`` (the model's published patients), a sequence
    of published names, or a :class:`twinloop.control.Patients`. Given patients fewer or
    more than ``num_envs`` are taken in turn (environment ``i`` gets patient
    ``i mod n``); ``num_envs=None`` gives one environment per patient (one for a
    population).
    """
    if num_envs is not None and not (isinstance(num_envs, int | np.integer) and int(num_envs) >= 1):
        raise InputError(f"num_envs must be a whole number >= 1; got {num_envs!r}.")
    if not (isinstance(population_seed, int | np.integer) and int(population_seed) >= 0):
        raise InputError(f"population_seed must be a whole number >= 0; got {population_seed!r}.")
    if isinstance(patients, str) and patients == "population":
        return Patients.from_population(model, int(num_envs or 1), int(population_seed))
    if isinstance(patients, str) and patients == "published":
        chosen = Patients.published(model)
    elif isinstance(patients, Sequence) and not isinstance(patients, str) and patients:
        if not all(isinstance(name, str) for name in patients):
            raise InputError(f"patients must be published patient names; got {list(patients)!r}.")
        unknown = [name for name in patients if name not in model.presets]
        if unknown:
            raise InputError(
                f"Unknown published patients {unknown} of model '{model.id}'; known: {', '.join(model.presets)}."
            )
        chosen = Patients.published(model, list(patients))
    elif isinstance(patients, Patients):
        if patients.params.shape[1] != len(model.parameters):
            raise InputError(
                f"The patients have {patients.params.shape[1]} parameters; model '{model.id}' has "
                f"{len(model.parameters)}. Build them with Patients.published or Patients.from_population."
            )
        chosen = patients
    else:
        raise InputError(
            "patients must be 'population', 'published', a list of published patient names or a "
            f"twinloop.control.Patients; got {patients!r}."
        )
    if num_envs is None or int(num_envs) == chosen.n:
        return chosen
    return chosen[np.arange(int(num_envs)) % chosen.n]


def env_scenario(scenario: Scenario | Mapping[str, Any] | None) -> Scenario:
    """A scenario, one from a mapping of settings, or (None) the environments' default."""
    if scenario is None:
        return DEFAULT_SCENARIO
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, Mapping):
        return Scenario.from_dict(scenario)
    raise InputError(f"scenario must be a twinloop.control.Scenario, a mapping of its settings or None; "
                     f"got {type(scenario).__name__}.")  # fmt: skip
