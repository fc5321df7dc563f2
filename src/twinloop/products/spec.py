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
``treatment``.

``control`` makes arms closed-loop: an insulin controller reacts to the sensor every
control period instead of the treatment's plan being given as written. Either one
mapping for every arm, or ``{arm name: mapping or null}`` naming every arm (null: that
arm stays open-loop)::

    control: {controller: basal-bolus, rescue: {threshold_mg_dl: 70, grams: 15},
              sensor: GuardianRT, noise: true, pump: Insulet}

The mapping's keys are checked by ``twinloop.control`` (see
``twinloop.control.product``), which plans each closed-loop arm (the arm's treatment
gives the meals) and hands the delivered inputs back to be simulated and observed like
any other; ``twinloop cohort generate`` does this, ``products.dataset.generate`` alone
refuses such a spec. The section is hashed with the spec and recorded in the manifest.

``origin`` is the UTC timestamp of model time 0. ``solver: {rtol: ..., atol: ...,
solver: tsit5, path: auto, precision: float64}`` sets the integration: ``path: auto``
(default) takes the engine's fast path where the model declares one (fixed steps, every
chunk checked against the accurate path on a few patients, the largest error recorded in
the manifest's ``engine`` section), ``fast`` asks for it, ``accurate`` never takes it; the
tolerances (default 1e-6) are the accurate path's.
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
from twinloop.models.base import Model
from twinloop.models.registry import get as get_model
from twinloop.products import limits
from twinloop.products.protocols import ObservationProtocol
from twinloop.products.treatments import validate_treatment
from twinloop.simulate import SolverSettings

OUTCOME_KINDS = ("glycaemic", "recist", "none")
OUTCOME_KEYS = {"none": {"kind"}, "glycaemic": {"kind", "observable"}, "recist": {"kind", "observation", "min_sd_days"}}
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
    "control",
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
    control: Mapping[str, Mapping[str, Any]]

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
        """Validate a whole spec (every key, every level) before anything is created."""
        if not isinstance(raw, Mapping):
            raise InputError(f"A product spec must be a mapping (key: value); got {type(raw).__name__}.")
        unknown = sorted(str(k) for k in set(raw) - _KEYS)
        if unknown:
            raise InputError(f"product spec has unknown keys {unknown}; accepted: {sorted(_KEYS)}.")
        if not isinstance(raw.get("model"), str):
            raise InputError("product spec needs 'model', the id of a registered model (see `twinloop models`).")
        model = get_model(raw["model"])
        name = check_name("name", raw.get("name", model.id))
        duration = limits.finite_number("duration", raw.get("duration"), positive=True)
        resolution = limits.finite_number("resolution", raw.get("resolution", 1.0), positive=True)
        if resolution > duration:
            raise InputError(f"resolution ({resolution:g}) must not exceed duration ({duration:g}).")
        n_obs = len(model.observables)
        points = limits.check_duration(duration, resolution, model.time_unit, n_obs)
        n = limits.whole_number("n", raw.get("n"), 1)
        limits.check_patients(n, points, n_obs)
        requested = raw.get("chunk_size")
        chunk = limits.chunk_size_for(
            None if requested is None else limits.whole_number("chunk_size", requested, 1), n, points, n_obs
        )
        seed = limits.whole_number("seed", raw.get("seed", 0), 0, 2**63 - 1)
        batch = limits.whole_number("batch_size", raw.get("batch_size", 2048), 1, limits.MAX_PATIENTS)
        solver = _solver(raw.get("solver") or {})
        origin = _origin(raw.get("origin", "2026-01-01T00:00:00Z"))
        if "treatment" in raw and "arms" in raw:
            raise InputError("Give either 'treatment' (one arm) or 'arms' (randomized), not both.")
        arms_raw = raw.get("arms") if "arms" in raw else {"all": raw.get("treatment", {"kind": "none"})}
        if not isinstance(arms_raw, Mapping) or not arms_raw:
            raise InputError(f"arms must map arm names to treatments, e.g. {{A: {{kind: none}}}}; got {arms_raw!r}.")
        arms = {str(k): validate_treatment(f"arms.{k}", v, model, duration) for k, v in arms_raw.items()}
        control = _control(raw.get("control"), list(arms))
        observations = _observations(raw.get("observations"), model, duration)
        outcomes = _outcomes(raw.get("outcomes"), model, observations)
        population = population_from(raw.get("population", "default"), model.id)
        condition = raw.get("condition")
        if condition is not None and not isinstance(condition, Mapping):
            raise InputError(
                "condition must map names to regions, e.g. {group: [child], Vmx: {quantile: [0, 0.05]}}; "
                f"got {condition!r}."
            )
        if condition:
            population = population.condition(**{str(k): v for k, v in condition.items()})
        return cls(
            raw=dict(raw),
            name=name,
            model_id=model.id,
            population=population,
            n=n,
            seed=seed,
            duration=duration,
            resolution=resolution,
            arms=arms,
            observations=observations,
            outcomes=outcomes,
            origin=origin,
            chunk_size=chunk,
            batch_size=batch,
            solver=solver,
            control=control,
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


SOLVER_KEYS = ("rtol", "atol", "solver", "path", "precision")


def _solver(raw: Any) -> SolverSettings:
    if not isinstance(raw, Mapping):
        raise InputError(f"solver must be a mapping with some of {', '.join(SOLVER_KEYS)}; got {raw!r}.")
    unknown = sorted(map(str, set(raw) - set(SOLVER_KEYS)))
    if unknown:
        raise InputError(f"solver has unknown keys {unknown}; expected some of {', '.join(SOLVER_KEYS)}.")
    rtol = limits.finite_number("solver.rtol", raw.get("rtol", 1e-6))
    atol = limits.finite_number("solver.atol", raw.get("atol", 1e-6))
    for key, default in (("solver", "tsit5"), ("path", "auto"), ("precision", "float64")):
        if not isinstance(raw.get(key, default), str):
            raise InputError(f"solver.{key} must be a string such as {default!r}; got {raw.get(key)!r}.")
    try:
        return SolverSettings(solver=raw.get("solver", "tsit5"), rtol=rtol, atol=atol, path=raw.get("path", "auto"),
                              precision=raw.get("precision", "float64"))  # fmt: skip
    except InputError as exc:
        raise InputError(f"solver: {exc}") from None


def _control(raw: Any, arms: list[str]) -> dict[str, dict[str, Any]]:
    """The closed-loop settings of each closed-loop arm (arms absent run open-loop): one
    mapping for every arm, or ``{arm: mapping or null}`` naming every arm."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise InputError(
            f"control must be a mapping of closed-loop settings, e.g. {{controller: basal-bolus}}, or "
            f"{{arm name: settings or null}}; got {raw!r}."
        )
    keys = {str(k) for k in raw}
    per_arm = keys <= set(arms) and all(v is None or isinstance(v, Mapping) for v in raw.values())
    if not per_arm:
        return {arm: dict(raw) for arm in arms}
    missing = [a for a in arms if a not in keys]
    if missing:
        raise InputError(
            f"control names arms {sorted(keys)} but not {missing}; give every arm its settings (null keeps an "
            "arm open-loop), or one mapping of settings for all arms."
        )
    return {str(a): dict(v) for a, v in raw.items() if v is not None}


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


def _origin(raw: Any) -> pd.Timestamp:
    """The UTC timestamp of model time 0: ISO 8601 text (or a YAML date), from 1900 to 2200."""
    import datetime as dt

    if not isinstance(raw, str | dt.date):
        raise InputError(
            f"origin must be an ISO 8601 timestamp such as '2026-01-01T00:00:00Z'; got {type(raw).__name__} "
            f"{raw!r} (a number is not read as a time)."
        )
    try:
        origin = pd.Timestamp(raw)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"origin must be an ISO 8601 timestamp such as '2026-01-01T00:00:00Z'; got {raw!r}.") from None
    if origin is pd.NaT or not 1900 <= origin.year <= 2200:
        raise InputError(f"origin {raw!r} must be a timestamp between the years 1900 and 2200.")
    return origin.tz_localize("UTC") if origin.tzinfo is None else origin.tz_convert("UTC")


def _observations(raw: Any, model: Model, duration: float) -> tuple[ObservationProtocol, ...]:
    """The observation protocols, each observing a model observable, with unique names."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InputError(f"observations must be a list of protocols (name, observable, schedule); got {raw!r}.")
    observations = tuple(ObservationProtocol.parse(i, o) for i, o in enumerate(raw))
    seen: set[str] = set()
    for i, obs in enumerate(observations):
        if obs.observable not in model.observable_names:
            raise InputError(
                f"observations[{i}]: '{obs.name}' observes '{obs.observable}'; model '{model.id}' "
                f"observes {list(model.observable_names)}."
            )
        if obs.name in seen:
            raise InputError(f"observations[{i}].name '{obs.name}' is used twice; give each protocol its own name.")
        seen.add(obs.name)
        limits.check_events(f"observations[{i}].schedule over 'duration'", obs.schedule.count(duration))
    return observations


def _outcomes(raw: Any, model: Model, observations: tuple[ObservationProtocol, ...]) -> dict[str, Any]:
    """The outcome labels: ``none``, ``glycaemic`` (an observable) or ``recist`` (a scan protocol)."""
    outcomes = raw if raw is not None else {"kind": "none"}
    if not isinstance(outcomes, Mapping) or outcomes.get("kind") not in OUTCOME_KINDS:
        raise InputError(f"outcomes.kind must be one of {', '.join(OUTCOME_KINDS)}; got {outcomes!r}.")
    kind = outcomes["kind"]
    unknown = sorted(str(k) for k in set(outcomes) - OUTCOME_KEYS[kind])
    if unknown:
        raise InputError(
            f"outcomes has unknown keys {unknown}; outcomes of kind {kind} accept {sorted(OUTCOME_KEYS[kind])}."
        )
    names = [o.name for o in observations]
    if kind == "recist":
        if outcomes.get("observation") not in names:
            raise InputError(
                f"outcomes.observation is {outcomes.get('observation')!r}; outcomes of kind recist need the name "
                f"of the scan observation protocol, one of {names}."
            )
        limits.finite_number("outcomes.min_sd_days", outcomes.get("min_sd_days", 42), minimum=0)
    if kind == "glycaemic" and outcomes.get("observable", "plasma_glucose") not in model.observable_names:
        raise InputError(
            f"outcomes.observable is {outcomes.get('observable')!r}; it must be one of {list(model.observable_names)}."
        )
    return dict(outcomes)
