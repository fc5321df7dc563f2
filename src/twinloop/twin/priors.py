"""What a twin knows before it sees the patient's data: the prior of its fitted
parameters and the values of the others, from a population and from what is known of
the patient (measured parameters such as body weight, covariates such as age)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import ParameterMap
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.registry import get as get_model


def typical_parameters(
    population: Any, n: int = 2000, seed: int = 0, known: Mapping[str, float] | None = None
) -> np.ndarray:
    """A population's typical patient: the median of each parameter (derived ones
    recomputed). With ``known`` values (e.g. ``{"BW": 62}``) the free parameters take
    their conditional mean given them (a Gaussian on each one's scale, log or linear),
    and the known ones their values."""
    cohort = population.sample(n, seed=seed)
    model = get_model(cohort.model_id)
    base = np.median(cohort.parameters, axis=0)
    base = np.array([base[cohort.parameter_names.index(p)] for p in model.parameter_names])
    if known:
        base = _conditional_base(model, cohort, base, known)
    latent = model.latent(model.param_map(base)) if model.latent else {}
    values = model.rederive(model.param_map(base), {k: float(v) for k, v in latent.items()})
    return np.array([float(values[p]) for p in model.parameter_names])


def _conditional_base(model: Model, cohort: Any, base: np.ndarray, known: Mapping[str, float]) -> np.ndarray:
    values = np.stack([cohort.parameter(p) for p in model.parameter_names], axis=1)
    on_log = np.array([p.scale == "log" for p in model.parameters])
    free = [
        i
        for i, p in enumerate(model.parameter_names)
        if p not in model.derived_parameters
        and (not on_log[i] or np.all(values[:, i] > 0))
        and np.ptp(values[:, i]) > 0
    ]
    names = tuple(model.parameter_names[i] for i in free)
    logs = np.where(on_log[free], np.log(np.where(on_log[free], values[:, free], 1.0)), values[:, free])
    joint = GaussianPrior(names, logs.mean(axis=0), np.cov(logs, rowvar=False) + 1e-10 * np.eye(len(free)))
    scaled = {p.name: (np.log if p.scale == "log" else float) for p in model.parameters}
    given = {k: float(scaled[k](v)) for k, v in known.items() if k in names}
    out = base.copy()
    if given:
        rest = joint.conditioned(given)
        for name, m in zip(rest.names, rest.mean, strict=True):
            i = model.parameter_names.index(name)
            out[i] = float(np.exp(m)) if on_log[i] else float(m)
    for name, value in known.items():
        out[model.parameter_names.index(name)] = float(value)
    return out


def check_known(model: Model, known: Mapping[str, float], fit: tuple[str, ...]) -> dict[str, float]:
    """Known parameter values: free parameters of the model, inside their bounds, not fitted."""
    bounds = {p.name: (p.lower, p.upper) for p in model.parameters}
    out = {}
    for name, value in known.items():
        if name not in bounds or name in model.derived_parameters:
            raise InputError(
                f"known[{name!r}]: not a free parameter of '{model.id}'; expected one of "
                f"{[p for p in model.parameter_names if p not in model.derived_parameters]}."
            )
        lo, hi = bounds[name]
        try:
            number = float(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"known[{name!r}] must be a number; got {value!r}.") from e
        if not lo <= number <= hi:
            raise InputError(f"known[{name!r}] = {number} is outside its bounds [{lo}, {hi}]; check its unit.")
        if name in fit:
            raise InputError(f"{name!r} is both known and fitted; drop it from fit=... or from known.")
        out[name] = number
    return out


def condition_on_covariates(population: Any, covariates: Mapping[str, Any], seed: int = 0) -> Any:
    """The population restricted to patients like this one: a categorical covariate to
    its level, a numeric one to a window of +-10 % of its population sd around the value."""
    reference = population.sample(4000, seed=seed)
    region: dict[str, Any] = {}
    for name, value in covariates.items():
        if name not in reference.covariates.columns:
            raise InputError(
                f"known[{name!r}]: neither a parameter of '{reference.model_id}' nor a covariate of the population "
                f"({sorted(reference.covariates.columns)})."
            )
        column = reference.covariates[name]
        if column.dtype == object or isinstance(value, str):
            region[name] = [str(value)]
            continue
        try:
            number = float(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"known[{name!r}] must be a number; got {value!r}.") from e
        values = column.to_numpy(dtype=float)
        if not values.min() <= number <= values.max():
            raise InputError(
                f"known[{name!r}] = {number} lies outside the population's range "
                f"[{values.min():.4g}, {values.max():.4g}]; check its unit or use another population."
            )
        width = 0.1 * float(values.std()) or 1e-9
        region[name] = {"lower": number - width, "upper": number + width}
    return population.condition(**region)


def population_prior(
    model: Model, population: Any, pmap: ParameterMap, known: Mapping[str, float], seed: int
) -> GaussianPrior:
    """The population's prior of the fitted parameters on the map's scale, given the known ones."""
    in_population = list(known)  # free model parameters (check_known): every population draws them
    joint_map = ParameterMap(model, (*pmap.names, *in_population), pmap.base, bounded=pmap.bounded)
    joint = GaussianPrior.from_population(population, joint_map.names, seed=seed, transform=joint_map.unconstrain)
    if not in_population:
        return joint
    given = joint_map.unconstrain(np.array([[1.0] * len(pmap.names) + [known[k] for k in in_population]]))[0]
    return joint.conditioned({k: float(v) for k, v in zip(in_population, given[len(pmap.names) :], strict=True)})
