"""The product specification: which population, how many patients, which treatment
(or randomized arms), how long, what is observed and which outcomes are labelled.

YAML example (``examples/t1d_adolescents.yaml``)::

    name: t1d-adolescents
    model: t1d-uva-padova
    population: default            # or a path to a population YAML, or an inline mapping
    condition: {group: [adolescent]}
    n: 10000
    seed: 7
    duration: 1440                 # model time units (min here)
    resolution: 5                  # the simulation's output step
    treatment: {kind: basal_bolus, meals: [[420, 50], [720, 70], [1140, 80]]}
    observations:
      - {name: cgm, observable: subcutaneous_glucose, schedule: {every: 5}, error: {kind: cgm, sensor: GuardianRT}}
    outcomes: {kind: glycaemic, observable: plasma_glucose}

``arms: {A: <treatment>, B: <treatment>}`` randomizes patients 1:1 instead of one
``treatment``. ``origin`` is the UTC timestamp of model time 0. ``solver: {rtol: ...,
atol: ..., solver: tsit5}`` sets the integration tolerances (default 1e-6; for a
T1D CGM product rtol 1e-4, atol 1e-3 is about twice as fast and changes glucose by
at most ~0.3 mg/dL, far below sensor noise).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from twinloop._paths import check_name, spec_path
from twinloop.cohort.population import Population
from twinloop.cohort.spec import load_yaml
from twinloop.errors import InputError
from twinloop.models.registry import get as get_model
from twinloop.products.protocols import ObservationProtocol
from twinloop.products.treatments import validate_treatment
from twinloop.simulate import SolverSettings

OUTCOME_KINDS = ("glycaemic", "recist", "none")
_KEYS = {
    "name",
    "model",
    "population",
    "condition",
    "n",
    "seed",
    "duration",
    "resolution",
    "treatment",
    "arms",
    "observations",
    "outcomes",
    "origin",
    "chunk_size",
    "batch_size",
    "solver",
}


@dataclass(frozen=True)
class ProductSpec:
    """A validated product specification (see the module docstring)."""

    raw: Mapping[str, Any]
    name: str
    model_id: str
    population: Population
    n: int
    seed: int
    duration: float
    resolution: float
    arms: Mapping[str, list[dict[str, Any]]]
    observations: tuple[ObservationProtocol, ...]
    outcomes: Mapping[str, Any]
    origin: pd.Timestamp
    chunk_size: int
    batch_size: int
    solver: SolverSettings

    @classmethod
    def from_yaml(cls, path: str | Path) -> ProductSpec:
        file = Path(path)
        raw = load_yaml(file)
        if isinstance(raw.get("population"), str) and raw["population"] != "default":
            pop_path = spec_path(file.parent, raw["population"], "population")
            raw = {**raw, "population": load_yaml(pop_path)}
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProductSpec:
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise InputError(f"product spec has unknown keys {unknown}; allowed: {sorted(_KEYS)}.")
        if not isinstance(raw.get("model"), str):
            raise InputError("product spec needs 'model', the id of a registered model (see `twinloop models`).")
        model = get_model(raw["model"])
        population = population_from(raw.get("population", "default"), model.id)
        if raw.get("condition"):
            condition = raw["condition"]
            if not isinstance(condition, Mapping):
                raise InputError(
                    "condition must map names to regions, e.g. {group: [child], Vmx: {quantile: [0, 0.05]}}."
                )
            population = population.condition(**condition)
        n = _int("n", raw.get("n"), 1)
        chunk = _int("chunk_size", raw.get("chunk_size", 10_000), 1)
        if "treatment" in raw and "arms" in raw:
            raise InputError("Give either 'treatment' (one arm) or 'arms' (randomized), not both.")
        arms_raw = raw.get("arms") or {"all": raw.get("treatment", {"kind": "none"})}
        if not isinstance(arms_raw, Mapping):
            raise InputError("arms must map arm names to treatments.")
        arms = {str(k): validate_treatment(f"arms.{k}", v, model) for k, v in arms_raw.items()}
        observations = tuple(ObservationProtocol.parse(i, o) for i, o in enumerate(raw.get("observations") or []))
        for obs in observations:
            if obs.observable not in model.observable_names:
                raise InputError(
                    f"observation '{obs.name}' observes '{obs.observable}'; model '{model.id}' "
                    f"observes {list(model.observable_names)}."
                )
        outcomes = dict(raw.get("outcomes") or {"kind": "none"})
        if outcomes.get("kind") not in OUTCOME_KINDS:
            raise InputError(f"outcomes.kind must be one of {', '.join(OUTCOME_KINDS)}; got {outcomes.get('kind')!r}.")
        if outcomes["kind"] == "recist" and outcomes.get("observation") not in [o.name for o in observations]:
            raise InputError("outcomes of kind recist need 'observation': the name of the scan observation protocol.")
        if (
            outcomes["kind"] == "glycaemic"
            and outcomes.get("observable", "plasma_glucose") not in model.observable_names
        ):
            raise InputError(f"outcomes.observable must be one of {list(model.observable_names)}.")
        duration = _float("duration", raw.get("duration"))
        resolution = _float("resolution", raw.get("resolution", 1.0))
        if resolution > duration:
            raise InputError(f"resolution ({resolution}) must not exceed duration ({duration}).")
        try:
            origin = pd.Timestamp(raw.get("origin", "2026-01-01T00:00:00Z"))
        except ValueError:
            raise InputError(f"origin must be an ISO 8601 timestamp; got {raw.get('origin')!r}.") from None
        origin = origin.tz_localize("UTC") if origin.tzinfo is None else origin.tz_convert("UTC")
        return cls(
            raw=dict(raw),
            name=check_name("name", str(raw.get("name", model.id))),
            model_id=model.id,
            population=population,
            n=n,
            seed=_int("seed", raw.get("seed", 0), 0),
            duration=duration,
            resolution=resolution,
            arms=arms,
            observations=observations,
            outcomes=outcomes,
            origin=origin,
            chunk_size=min(chunk, n),
            batch_size=_int("batch_size", raw.get("batch_size", 2048), 1),
            solver=_solver(raw.get("solver") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec (population expanded) as plain data."""
        out = {k: v for k, v in self.raw.items() if k not in ("population", "condition")}
        out.update(
            {
                "population": self.population.to_dict(),
                "population_hash": self.population.content_hash(),
                "origin": self.origin.isoformat(),
                "chunk_size": self.chunk_size,
                "batch_size": self.batch_size,
            }
        )
        return json.loads(json.dumps(out, default=str))

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _solver(raw: Any) -> SolverSettings:
    if not isinstance(raw, Mapping) or set(raw) - {"rtol", "atol", "solver"}:
        raise InputError(f"solver must be a mapping with rtol, atol and/or solver; got {raw!r}.")
    try:
        rtol, atol = float(raw.get("rtol", 1e-6)), float(raw.get("atol", 1e-6))
    except (TypeError, ValueError):
        raise InputError(f"solver tolerances must be numbers; got {raw!r}.") from None
    return SolverSettings(solver=str(raw.get("solver", "tsit5")), rtol=rtol, atol=atol)


def population_from(raw: Any, model_id: str) -> Population:
    """A population from a spec's value: "default", an inline mapping or a YAML path."""
    if raw == "default":
        return Population.default(model_id)
    if isinstance(raw, Mapping):
        pop = Population.from_dict({"model": model_id, **raw})
        if pop.model_id != model_id:
            raise InputError(f"The population is for model '{pop.model_id}' but the product uses '{model_id}'.")
        return pop
    if isinstance(raw, str | Path):
        return Population.from_yaml(raw)
    raise InputError(f"population must be 'default', a YAML path or a mapping; got {raw!r}.")


def _int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < minimum:
        raise InputError(f"'{field}' must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _float(field: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"'{field}' must be a number > 0; got {value!r}.") from None
    if not number > 0:
        raise InputError(f"'{field}' must be > 0; got {value!r}.")
    return number
