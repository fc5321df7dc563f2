"""The declarative model specification every mechanistic core is written in.

A model is data plus pure ``jax.numpy`` functions: states, parameters, inputs and
observables carry UCUM units; the right-hand side maps ``(t, x, u, p)`` to ``dx/dt``
where ``x`` is the state vector, ``u`` the vector of rate inputs held constant over
the current interval and ``p`` a mapping from parameter name to value.

Batch contract: the engine calls these functions with trailing batch axes, i.e. ``x``
of shape ``(n_states, *batch)``, ``u`` of shape ``(n_rates,)`` or ``(n_rates, *batch)``
and each ``p[name]`` of shape ``batch``. Write them with ``x[i]`` indexing,
``jnp.stack`` along axis 0 and elementwise arithmetic, and they work for one patient
and for a cohort alike (``check_model`` verifies it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import jax.numpy as jnp
import numpy as np

from twinloop.errors import InputError, ModelError
from twinloop.models.noise import NoiseModel
from twinloop.models.profile import ModelProfile

if TYPE_CHECKING:
    from twinloop.models.inputs import Inputs

ParamMap = Mapping[str, Any]
RhsFn = Callable[[Any, Any, Any, ParamMap], Any]
InitialStateFn = Callable[[ParamMap], Any]
ObservableFn = Callable[[Any, ParamMap], Any]
DiscreteUpdateFn = Callable[[Any, Any, Any, ParamMap], Any]
ScenarioFn = Callable[[ParamMap], "tuple[Inputs, float]"]

# UCUM unit expressions: atoms, prefixes, annotations in braces, powers, '.' and '/'.
_UCUM_PATTERN = re.compile(r"^[A-Za-z0-9%\[\]{}'_.*/^()+-]+$")


def _check_unit(kind: str, name: str, unit: str) -> None:
    if not isinstance(unit, str) or not _UCUM_PATTERN.match(unit):
        raise ModelError(
            f"The unit of {kind} '{name}' must be a UCUM unit string such as 'mg/dL' "
            f"or '1' for dimensionless; got {unit!r}."
        )


@dataclass(frozen=True)
class State:
    """One state variable. Declare ``nonnegative=True`` for a state that cannot be negative
    (an amount, a concentration, a cell count): ``check_model`` then verifies it stays >= 0,
    and the ensemble filters clip it at zero after an update (and report how often)."""

    name: str
    unit: str
    description: str = ""
    nonnegative: bool = False


Scale = Literal["log", "linear"]


@dataclass(frozen=True)
class Parameter:
    """One model parameter with its unit, default value and plausible bounds.

    ``scale`` is how calibration, priors and twins treat it: ``"log"`` (estimated as its
    logarithm; the default when ``lower > 0``) or ``"linear"`` (as it is; the default
    otherwise, e.g. for a parameter that may be zero or negative)."""

    name: str
    unit: str
    default: float
    lower: float
    upper: float
    description: str = ""
    scale: Scale = None  # type: ignore[assignment]  # resolved from the bounds when not given

    def __post_init__(self) -> None:
        if not self.lower <= self.default <= self.upper:
            raise ModelError(
                f"Parameter '{self.name}' has default {self.default} outside its "
                f"bounds [{self.lower}, {self.upper}]; widen the bounds or fix the default."
            )
        if self.scale is None:
            object.__setattr__(self, "scale", "log" if self.lower > 0 else "linear")
        if self.scale not in ("log", "linear"):
            raise ModelError(f"Parameter '{self.name}' has scale {self.scale!r}; expected 'log' or 'linear'.")
        if self.scale == "log" and not self.lower > 0:
            raise ModelError(
                f"Parameter '{self.name}' has scale 'log' but lower bound {self.lower}; a log scale needs "
                "lower > 0. Raise the lower bound above zero or declare scale='linear'."
            )


@dataclass(frozen=True)
class Input:
    """An input channel a model accepts.

    ``kind='rate'``: a piecewise-constant rate (e.g. insulin in U/min, carbohydrate
    intake in g/min, an infusion in mg/h). ``kind='bolus'``: an instantaneous amount
    added to the state ``target`` (e.g. a drug dose in mg into the central
    compartment), multiplied by ``scale(p)`` when the state's unit differs. A bolus
    with an ``effect`` instead maps the state: ``x -> effect(x, amount, p)`` (e.g. a
    radiotherapy fraction of ``amount`` Gy killing a surviving-fraction of cells).
    """

    name: str
    unit: str
    kind: Literal["rate", "bolus"]
    description: str = ""
    target: str | None = None
    scale: Callable[[ParamMap], Any] | None = None
    effect: Callable[[Any, Any, ParamMap], Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("rate", "bolus"):
            raise ModelError(f"Input '{self.name}' has kind {self.kind!r}; expected 'rate' or 'bolus'.")
        if self.kind == "bolus" and not self.target and self.effect is None:
            raise ModelError(f"Bolus input '{self.name}' must name the state it is added to (target=...).")


@dataclass(frozen=True)
class Observable:
    """A quantity computed from the state, e.g. a concentration or a glucose level.
    ``nonnegative`` quantities (the default) never get a negative predictive value;
    ``noise`` is how a measurement of it scatters (None: the user must give one)."""

    name: str
    unit: str
    fn: ObservableFn
    description: str = ""
    nonnegative: bool = True
    noise: NoiseModel | None = None


@dataclass(frozen=True)
class TimedEvent:
    """A discrete change of the state at a fixed model time, applied in every simulation
    that spans it (e.g. an SBML event triggered by time): ``x -> effect(x, p)``. The
    engine stops the integration at ``time``, so the change is exact. The state reported
    at ``time`` is the changed one, or with ``after`` (a trigger such as ``time > 20``
    that holds only after ``time``) the one before."""

    name: str
    time: float
    effect: Callable[[Any, ParamMap], Any]
    after: bool = False


def names_of(items: tuple[Any, ...]) -> list[str]:
    return [item.name for item in items]


@dataclass(frozen=True)
class Model:
    """A mechanistic model: the declarative specification the engine integrates.

    Arguments:
        id: registry key, e.g. ``"t1d-uva-padova"``.
        version: model version; changes whenever equations or defaults change.
        time_unit: UCUM unit of model time (``"min"``, ``"h"``, ``"d"``, or ``"1"`` for
            dimensionless time).
        clock_seconds: seconds of clock time in one unit of model time, for a time unit
            that is not a clock unit (``"1"``): twins need it to place timestamped data.
        states, parameters, inputs, observables: the declarations.
        rhs: ``rhs(t, x, u, p) -> dx/dt`` in ``jax.numpy``; ``u`` holds the rate inputs
            in declaration order.
        initial_state: ``initial_state(p) -> x0``, a rule from the parameters.
        steady_state_inputs: if given, ``initial_state(p)`` is declared to be a steady
            state under these rate inputs (``p -> u``).
        discrete_update: optional ``f(x, u_prev, u_next, p) -> x`` applied at every
            multiple of ``sample_time``, for model memory updated in discrete time.
        sample_time: if set, inputs are held constant over intervals of this length
            and the integration grid contains every multiple of it.
        discrete_update_inputs: rate inputs the discrete update depends on. If given,
            the update is declared the identity wherever they are all zero over the
            next interval, and the grid keeps only the multiples of ``sample_time``
            where one is non-zero (e.g. the minutes of a meal), not every one.
        standard_scenario: ``p -> (inputs, t_end)``, the scenario ``check_model`` uses.
        derived_parameters: parameters fixed by the others (e.g. a basal steady state);
            ``derive(values) -> {name: value}`` computes them from a mapping of the
            remaining parameters (arrays work) plus any latent quantities it names.
        latent: ``p -> {name: value}``, the latent quantities ``derive`` needs, recovered
            from a complete parameter set (so derived parameters can be recomputed
            after some parameters change, e.g. in calibration).
        presets: named parameter sets (e.g. published virtual patients).
        identifiable: the parameters a patient twin estimates by default from this model's
            usual data (the rest come from the population or from what the user knows);
            the model's documentation says why these.
        references: literature the equations and defaults come from.
        profile: what else belongs to the model (default population, treatments,
            validation references, closures, context of use); see
            :class:`~twinloop.models.profile.ModelProfile`.
        events: state changes at fixed model times, part of the model itself (in every
            simulation, in time order; those at one time in declaration order).
    """

    id: str
    version: str
    name: str
    description: str
    time_unit: str
    states: tuple[State, ...]
    parameters: tuple[Parameter, ...]
    inputs: tuple[Input, ...]
    observables: tuple[Observable, ...]
    rhs: RhsFn
    initial_state: InitialStateFn
    standard_scenario: ScenarioFn
    steady_state_inputs: Callable[[ParamMap], Any] | None = None
    discrete_update: DiscreteUpdateFn | None = None
    sample_time: float | None = None
    discrete_update_inputs: tuple[str, ...] = ()
    derived_parameters: tuple[str, ...] = ()
    derive: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    latent: Callable[[ParamMap], dict[str, Any]] | None = None
    presets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    identifiable: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    profile: ModelProfile = field(default_factory=ModelProfile)
    clock_seconds: float | None = None
    events: tuple[TimedEvent, ...] = ()

    def __post_init__(self) -> None:
        _check_unit("model time", self.id, self.time_unit)
        if self.clock_seconds is not None and not (
            isinstance(self.clock_seconds, int | float) and 0 < self.clock_seconds < float("inf")
        ):
            raise ModelError(
                f"clock_seconds of model '{self.id}' must be a finite number of seconds > 0 (how long one unit "
                f"of model time lasts); got {self.clock_seconds!r}."
            )
        for group, kind in (
            (self.states, "state"),
            (self.parameters, "parameter"),
            (self.inputs, "input"),
            (self.observables, "observable"),
        ):
            names = [item.name for item in group]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ModelError(f"Model '{self.id}' declares the {kind} names {duplicates} more than once.")
            for item in group:
                _check_unit(kind, item.name, item.unit)
        unknown_fit = [n for n in self.identifiable if n not in names_of(self.parameters)]
        if unknown_fit or any(n in self.derived_parameters for n in self.identifiable):
            raise ModelError(
                f"identifiable {list(self.identifiable)} of model '{self.id}' must name free parameters, "
                f"not {unknown_fit or [n for n in self.identifiable if n in self.derived_parameters]}."
            )
        rate_names = [i.name for i in self.rate_inputs]
        unknown = [n for n in self.discrete_update_inputs if n not in rate_names]
        if unknown:
            raise ModelError(f"discrete_update_inputs {unknown} of model '{self.id}' are not rate inputs {rate_names}.")
        for inp in self.bolus_inputs:
            if inp.effect is None and inp.target not in self.state_names:
                raise ModelError(
                    f"Bolus input '{inp.name}' of model '{self.id}' targets unknown state "
                    f"'{inp.target}'; expected one of {list(self.state_names)}."
                )
        self.profile.check(self)

    # --- names and lookups -------------------------------------------------
    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def observable_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.observables)

    @property
    def rate_inputs(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if i.kind == "rate")

    @property
    def bolus_inputs(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if i.kind == "bolus")

    @property
    def default_parameters(self) -> np.ndarray:
        return np.array([p.default for p in self.parameters], dtype=np.float64)

    def param_map(self, vector: Any) -> dict[str, Any]:
        """Name the entries of a parameter vector (works on traced arrays)."""
        return {name: vector[i] for i, name in enumerate(self.parameter_names)}

    def preset(self, name: str) -> np.ndarray:
        """Return the parameter vector of a named preset, e.g. a virtual patient."""
        if name not in self.presets:
            known = ", ".join(sorted(self.presets)) or "none"
            raise InputError(f"Unknown patient '{name}' for model '{self.id}'; known patients: {known}.")
        values = self.presets[name]
        return np.array([values[p] for p in self.parameter_names], dtype=np.float64)

    def parameters_from(self, table: Mapping[str, Sequence[float]] | Any) -> np.ndarray:
        """Build an ``(n, n_params)`` matrix from a mapping or DataFrame of columns."""
        missing = [p for p in self.parameter_names if p not in table]
        if missing:
            raise InputError(
                f"Parameters {missing} of model '{self.id}' are missing from the given "
                "table; give one column per parameter (see `twinloop models show`)."
            )
        columns = [np.asarray(table[p], dtype=np.float64).reshape(-1) for p in self.parameter_names]
        return np.stack(columns, axis=1)

    # --- evaluation helpers used by the engine and check_model --------------
    def observe(self, x: Any, p: ParamMap) -> Any:
        """All observables of one state vector, stacked in declaration order."""
        return jnp.stack([jnp.asarray(o.fn(x, p), dtype=jnp.float64) for o in self.observables])

    def rederive(self, values: Mapping[str, Any], latent: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with the derived parameters recomputed (traceable by JAX)."""
        if self.derive is None:
            return dict(values)
        return {**values, **self.derive({**values, **latent})}

    def apply_events(self, x: Any, t: Any, p: ParamMap, *, after: bool = False) -> Any:
        """The state after the model's events due at time ``t`` (a grid point): those
        reported at ``t`` (``after=False``) or those applied once ``t`` is reported."""
        for event in self.events:
            if event.after != after:
                continue
            due = jnp.abs(t - event.time) <= 1e-9 * max(1.0, abs(event.time))
            x = jnp.where(due, event.effect(x, p), x)
        return x

    def apply_boluses(self, x: Any, amounts: Any, p: ParamMap) -> Any:
        """The state after the bolus ``amounts`` (one per bolus input) given at one instant."""
        for b, inp in enumerate(self.bolus_inputs):
            if inp.effect is not None:
                x = inp.effect(x, amounts[b], p)
            else:
                scale = 1.0 if inp.scale is None else inp.scale(p)
                x = x.at[self.state_names.index(str(inp.target))].add(amounts[b] * scale)
        return x

    def content_hash(self) -> str:
        """SHA-256 naming this model in manifests and provenance: the source of the module
        defining ``rhs`` plus the declared parameters (name, unit, default, bounds), states
        (name, unit), id and version. A change to either changes the hash.

        Example:
            >>> len(twinloop.models.get("pk-one-compartment").content_hash())  # doctest: +SKIP
            64
        """
        import hashlib
        import inspect
        import json

        source = inspect.getsource(inspect.getmodule(self.rhs) or self.rhs)
        declared = json.dumps(
            [[p.name, p.unit, p.default, p.lower, p.upper] for p in self.parameters]
            + [[s.name, s.unit] for s in self.states]
            + [self.id, self.version]
        )
        return hashlib.sha256((source + declared).encode()).hexdigest()
