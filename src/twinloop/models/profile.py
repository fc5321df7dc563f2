"""A model's profile: what belongs to a model besides its equations.

Declared beside the equations (``Model(..., profile=ModelProfile(...))``), read by the
layers below: the default population (a YAML file next to the model file) by
``cohort``, the named treatments by ``products``, the validation references and the
context of use by ``govern``, the closure declarations by ``learn``, the horizon of the
backend comparison by ``check_model``. Every field is optional; a model without a
profile still simulates, calibrates and twins (its population then comes from the
parameter bounds, and its report names no reference).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from twinloop.errors import ModelError

if TYPE_CHECKING:
    from twinloop.models.base import Model, ParamMap
    from twinloop.models.inputs import Inputs

TreatmentCheck = Callable[[str, Mapping[str, Any], "float | None"], None]
TreatmentBuild = Callable[[Mapping[str, Any], Mapping[str, Any], Any, float], "Inputs"]
FeatureFn = Callable[[Any, Any, Any, "ParamMap"], Any]
INFLUENCE_LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class Treatment:
    """A named treatment a model takes, written as a mapping in a spec (``{kind: ..., ...}``).

    Arguments:
        kind: the name a spec gives, e.g. ``"chemotherapy"``.
        keys: the keys an item of this kind accepts besides ``kind``.
        check: ``check(where, item, duration)`` raises :class:`~twinloop.errors.InputError`
            naming ``where`` and the key for a bad value (``duration`` may be None).
        build: ``build(item, params, latent, duration) -> Inputs``: the cohort plan, with
            ``params`` the parameter columns (name -> array) and ``latent`` a table of
            the cohort's covariates and latent quantities.
        channels: ``channels(item)``: the input channels the item doses.
        description: one line for ``twinloop models show``.
    """

    kind: str
    keys: tuple[str, ...]
    check: TreatmentCheck
    build: TreatmentBuild
    channels: Callable[[Mapping[str, Any]], tuple[str, ...]]
    description: str = ""


@dataclass(frozen=True)
class ReferenceCase:
    """One run of a validation reference and the values expected of it."""

    label: str
    params: Mapping[str, float]
    inputs: Inputs
    times: np.ndarray
    expected: np.ndarray


@dataclass(frozen=True)
class ValidationReference:
    """A reference the model was not built from: a closed form or a peer's output.

    ``cases(model)`` gives the runs to compare (none when the peer data are absent);
    ``error`` says whether ``tolerance`` bounds the relative or the absolute error
    (in the observable's unit) over every case and time.
    """

    name: str
    observable: str
    cases: Callable[[Model], Sequence[ReferenceCase]]
    tolerance: float = 1e-6
    error: Literal["relative", "absolute"] = "relative"


def closed_form(
    name: str,
    observable: str,
    times: Sequence[float] | np.ndarray,
    expected: Callable[[Mapping[str, float], np.ndarray], np.ndarray],
    scenario: Callable[[Mapping[str, float]], Inputs] | None = None,
    tolerance: float = 1e-6,
) -> ValidationReference:
    """A closed-form reference at the default parameters: ``expected(p, times)`` after
    ``scenario(p)`` (no inputs by default), relative error at most ``tolerance``."""
    grid = np.asarray(times, dtype=np.float64)

    def cases(model: Model) -> list[ReferenceCase]:
        from twinloop.models.inputs import Inputs

        p = {n: float(v) for n, v in zip(model.parameter_names, model.default_parameters, strict=True)}
        plan = scenario(p) if scenario is not None else Inputs()
        return [ReferenceCase("default parameters", p, plan, grid, np.asarray(expected(p, grid), dtype=np.float64))]

    return ValidationReference(name, observable, cases, tolerance)


@dataclass(frozen=True)
class ClosureFeature:
    """One input of a closure's network: ``fn(t, x, u, p)`` in ``unit``, divided by ``scale``."""

    name: str
    unit: str
    fn: FeatureFn
    scale: float = 1.0
    description: str = ""


@dataclass(frozen=True)
class ClosureSpec:
    """A learned term the model admits on ``d(target)/dt`` (``learn`` builds and trains it).

    The term is ``gate(t, x, u, p) * (lower + (upper - lower) * sigmoid(network(features)))``.
    """

    name: str
    target: str
    features: tuple[ClosureFeature, ...]
    unit: str
    lower: float
    upper: float
    gate: FeatureFn | None = None
    gate_description: str = ""
    width: int = 16
    depth: int = 2
    description: str = ""


@dataclass(frozen=True)
class ContextOfUse:
    """The question a model answers, the decision it informs and the two risk judgements
    (``"low"``, ``"medium"`` or ``"high"``), for the credibility report."""

    question: str
    use: str
    model_influence: str = "medium"
    decision_consequence: str = "medium"

    def __post_init__(self) -> None:
        for key in ("model_influence", "decision_consequence"):
            if getattr(self, key) not in INFLUENCE_LEVELS:
                raise ModelError(f"ContextOfUse.{key} must be one of {INFLUENCE_LEVELS}; got {getattr(self, key)!r}.")


@dataclass(frozen=True)
class FastPath:
    """How the engine's fast path may integrate this model (``SolverSettings(path="fast")``).

    Arguments:
        step: the fixed step, in model time units (e.g. the model's input grid).
        tolerance: the largest absolute difference from the accurate path allowed per
            observable, in the observable's unit (e.g. ``{"plasma_glucose": 0.5}``).
        rtol: for the other observables, the largest difference relative to the
            observable's largest magnitude over the patient's trajectory.
        stiff: declared stiff: the fast path is never used.
    """

    step: float
    tolerance: Mapping[str, float] = field(default_factory=dict)
    rtol: float = 1e-3
    stiff: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.step, int | float) and 0 < self.step < float("inf")):
            raise ModelError(f"FastPath.step must be a finite number > 0 (model time units); got {self.step!r}.")
        if not (0 < self.rtol < 1):
            raise ModelError(f"FastPath.rtol must lie in (0, 1); got {self.rtol!r}.")
        for name, tol in self.tolerance.items():
            if not (isinstance(tol, int | float) and tol > 0):
                raise ModelError(f"FastPath.tolerance[{name!r}] must be a number > 0; got {tol!r}.")


TherapyRule = Callable[[Mapping[str, np.ndarray], Sequence[str]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class ControlInterface:
    """How an insulin-dosing controller drives the model (``twinloop.control``).

    Arguments:
        sensed: the observable a glucose sensor reads (mg/dL).
        insulin: the rate input the pump sets (U/min, basal and bolus alike).
        carbs: the rate input of carbohydrate eaten (g/min).
        basal: the patient's programmed basal rate (U/min) from the parameters.
        therapy: ``therapy(params, ids)`` -> per-patient ``carb_ratio`` (g/U),
            ``correction_factor`` (mg/dL per U) and ``age`` (years) arrays; ``params``
            maps parameter names (and any latent columns a population draws) to arrays.
        eat_rate_g_per_min: how fast an announced meal is eaten.
        plasma: the observable a patient's glucose outcome is judged on (mg/dL).
    """

    sensed: str
    insulin: str
    carbs: str
    basal: Callable[[Any], Any]
    therapy: TherapyRule
    eat_rate_g_per_min: float = 5.0
    plasma: str = ""


@dataclass(frozen=True)
class ModelProfile:
    """What belongs to a model besides its equations (every field optional).

    Arguments:
        population: a population YAML (``twinloop.cohort.spec``), next to the model file.
        treatments: the named treatments the model takes (``none`` is always accepted).
        validation: references to validate the model against.
        closures: learned terms the model admits.
        context: the context of use of the credibility report.
        check_horizon: the span (model time) over which ``check_model`` compares the
            backends; None lets it choose from the model's dynamics.
        control: how insulin-dosing controllers drive the model, None if they cannot.
        fast: how the engine's fast path may integrate the model, None if it may not.
    """

    population: Path | None = None
    treatments: tuple[Treatment, ...] = ()
    validation: tuple[ValidationReference, ...] = ()
    closures: tuple[ClosureSpec, ...] = ()
    context: ContextOfUse | None = None
    check_horizon: float | None = None
    control: ControlInterface | None = None
    fast: FastPath | None = None

    def __post_init__(self) -> None:
        kinds = [t.kind for t in self.treatments]
        if "none" in kinds or len(set(kinds)) != len(kinds):
            raise ModelError(f"Treatment kinds must be unique and not 'none'; got {kinds}.")
        names = [c.name for c in self.closures]
        if len(set(names)) != len(names):
            raise ModelError(f"Closure names must be unique; got {names}.")
        if self.check_horizon is not None and not self.check_horizon > 0:
            raise ModelError(f"check_horizon must be > 0 (model time) or None; got {self.check_horizon!r}.")
        if self.population is not None and not Path(self.population).is_file():
            raise ModelError(f"The population file '{self.population}' does not exist; write it or leave it out.")

    def treatment(self, kind: str) -> Treatment | None:
        """The treatment of this kind, None if the model takes none."""
        return next((t for t in self.treatments if t.kind == kind), None)

    def closure(self, name: str) -> ClosureSpec | None:
        return next((c for c in self.closures if c.name == name), None)

    def check(self, model: Model) -> None:
        """Every name the profile gives exists in ``model``."""
        if self.control is not None:
            _check_control(self.control, model)
        if self.fast is not None:
            unknown = sorted(set(self.fast.tolerance) - set(model.observable_names))
            if unknown:
                raise ModelError(
                    f"FastPath.tolerance of model '{model.id}' names {unknown}; expected observables of "
                    f"{list(model.observable_names)}."
                )
        for ref in self.validation:
            if ref.observable not in model.observable_names:
                raise ModelError(
                    f"Validation reference '{ref.name}' of model '{model.id}' names observable '{ref.observable}'; "
                    f"expected one of {list(model.observable_names)}."
                )
        for spec in self.closures:
            if spec.target not in model.state_names:
                raise ModelError(
                    f"Closure '{spec.name}' of model '{model.id}' targets state '{spec.target}'; "
                    f"expected one of {list(model.state_names)}."
                )


def _check_control(control: ControlInterface, model: Model) -> None:
    rates = tuple(i.name for i in model.rate_inputs)
    named = {"sensed": (control.sensed, model.observable_names), "insulin": (control.insulin, rates),
             "carbs": (control.carbs, rates)}  # fmt: skip
    if control.plasma:
        named["plasma"] = (control.plasma, model.observable_names)
    for key, (name, known) in named.items():
        if name not in known:
            raise ModelError(
                f"The control interface of model '{model.id}' names {key} '{name}'; expected one of {list(known)}."
            )
