"""Closed-loop synthetic data products: a product spec's ``control`` section run through
the closed loop.

A product spec with a ``control`` section (``twinloop.products.spec``) names, for every
closed-loop arm, a built-in controller and what the scenario of the loop needs::

    control:
      controller: basal-bolus          # bb, pid, mpc; with settings {name: pid, P: 0.001, I: 1.0e-5}
      rescue: {threshold_mg_dl: 70, grams: 15, refractory_min: 60}   # or null
      sensor: GuardianRT               # the sensor the controller reads
      noise: true                      # its error model on
      pump: Insulet
      period_min: 5                    # the control period (default: the sensor's sample time)

The scenario's other settings (``meal_time_sd_min``, ``meal_size_cv``,
``carb_count_error_cv``, ``sensor_delay_min``) are accepted too. The arm's treatment
gives the daily meals (its ``meals``, and ``carb_ratio_scale`` scales each patient's
carbohydrate ratio); the spec's ``duration`` gives the days.

Each chunk's patients of a closed-loop arm run through :func:`~twinloop.control.closed_loop`;
the insulin the pump delivered and the carbohydrate eaten each minute (meals and rescue
carbohydrate) become the arm's plan, which the engine replays (reproducing the loop's
trajectories) and the product observes, labels and lists in ``doses.parquet`` like any
other plan. The sensor of the loop is the controller's; the product's observation
protocols draw their own readings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop.control.loop import closed_loop
from twinloop.control.named import by_name
from twinloop.control.patients import Patients, control_interface
from twinloop.control.scenario import MINUTES_PER_DAY, Scenario
from twinloop.control.types import Controller
from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop._chunks import ChunkRunner
    from twinloop._provenance import Source
    from twinloop.cohort.population import Cohort
    from twinloop.models.base import Model
    from twinloop.models.inputs import Inputs
    from twinloop.products.dataset import RunResult
    from twinloop.products.spec import ProductSpec

SCENARIO_KEYS = ("rescue", "sensor", "noise", "pump", "period_min", "meal_time_sd_min", "meal_size_cv",
                 "carb_count_error_cv", "sensor_delay_min")  # fmt: skip
KEYS = ("controller", *SCENARIO_KEYS)
TREATMENT_KEYS = ("kind", "meals", "carb_ratio_scale")


@dataclass(frozen=True)
class ArmLoop:
    """How one closed-loop arm runs: its controller, scenario and carbohydrate-ratio scale."""

    controller: Controller
    scenario: Scenario
    carb_ratio_scale: float = 1.0


def arm_loops(spec: ProductSpec, model: Model) -> dict[str, ArmLoop]:
    """The validated closed-loop settings of every closed-loop arm of ``spec``.

    Raises:
        InputError: naming the arm and key of an unknown controller, key or value.
    """
    control_interface(model)
    if model.time_unit != "min":
        raise InputError(
            f"Model '{model.id}' runs in '{model.time_unit}'; closed-loop products need a model in minutes."
        )
    return {arm: _arm_loop(arm, raw, spec, model) for arm, raw in spec.control.items()}


def _arm_loop(arm: str, raw: Mapping[str, Any], spec: ProductSpec, model: Model) -> ArmLoop:
    where = f"control (arm '{arm}')" if len(spec.arms) > 1 else "control"
    unknown = sorted(str(k) for k in set(raw) - set(KEYS))
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; accepted: {list(KEYS)}.")
    controller = _controller(where, raw.get("controller", "basal-bolus"))
    meals, scale = _meals(arm, spec.arms[arm])
    days = spec.duration / MINUTES_PER_DAY
    try:
        scenario = Scenario.from_dict({**{k: raw[k] for k in SCENARIO_KEYS if k in raw}, "days": days, "meals": meals})
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise InputError(f"{where}: a setting has the wrong type ({exc}).") from None
    period = scenario.control_period
    if scenario.minutes % period or not math.isclose(scenario.minutes, spec.duration):
        raise InputError(
            f"duration ({spec.duration:g} min) must be a whole number of control periods ({period} min) for a "
            "closed-loop product; change duration or control.period_min."
        )
    return ArmLoop(controller, scenario, scale)


def _controller(where: str, raw: Any) -> Controller:
    if isinstance(raw, str):
        return _named(where, raw, {})
    if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
        return _named(where, raw["name"], {str(k): v for k, v in raw.items() if k != "name"})
    raise InputError(
        f"{where}.controller must be a built-in controller's name (e.g. basal-bolus) or a mapping "
        f"{{name: pid, P: 0.001, ...}}; got {raw!r}."
    )


def _named(where: str, name: str, settings: dict[str, Any]) -> Controller:
    try:
        return by_name(name, settings)
    except InputError as exc:
        raise InputError(f"{where}.controller: {exc}") from None


def _meals(arm: str, items: Sequence[Mapping[str, Any]]) -> tuple[list[Any], float]:
    """The arm's daily meals and carbohydrate-ratio scale, from its treatment items."""
    meals: list[Any] = []
    scale = 1.0
    for i, item in enumerate(items):
        if item.get("kind") == "none":
            continue
        extra = sorted(str(k) for k in set(item) - set(TREATMENT_KEYS))
        if extra or "meals" not in item:
            raise InputError(
                f"arms.{arm}[{i}] (kind {item.get('kind')}) cannot run closed-loop: the controller doses the insulin, "
                f"so a closed-loop arm's treatment only gives meals (and carb_ratio_scale); got keys {sorted(item)}."
            )
        meals.extend(item["meals"])
        scale *= float(item.get("carb_ratio_scale", 1.0))
    return meals, scale


class ClosedLoopPlanner:
    """The planner of a closed-loop product (``twinloop.products.dataset.Planner``):
    ``planner(arm, cohort, seed)`` runs the arm's loop on the cohort's patients and returns
    what it delivered as a cohort plan.

    Built by :meth:`for_spec`, it pickles as its spec (plain data) and is rebuilt, once
    per process, in the Dask worker that unpickles it (model objects and controllers
    do not pickle).
    """

    def __init__(self, model: Model, loops: Mapping[str, ArmLoop], *, accurate: bool = True) -> None:
        self.model, self.loops, self.accurate = model, dict(loops), bool(accurate)
        self.spec: dict[str, Any] | None = None

    @classmethod
    def for_spec(cls, spec: ProductSpec, model: Model, *, accurate: bool | None = None) -> ClosedLoopPlanner:
        """The planner of ``spec``'s closed-loop arms (validated by :func:`arm_loops`); the loop
        integrates on the fast path's scheme unless the spec's solver path is ``accurate``."""
        if accurate is None:
            accurate = loop_is_accurate(spec)
        planner = cls(model, arm_loops(spec, model), accurate=accurate)
        planner.spec = {k: v for k, v in spec.to_dict().items() if k != "population_hash"}
        return planner

    def __reduce__(self) -> tuple[Any, ...]:
        if self.spec is None:
            raise TypeError("A ClosedLoopPlanner pickles only when built with ClosedLoopPlanner.for_spec(spec, model).")
        return (_rebuilt, (self.spec, self.accurate))

    def __call__(self, arm: str, cohort: Cohort, seed: int) -> Inputs:
        loop = self.loops[arm]
        patients = Patients.from_cohort(self.model, cohort)
        if loop.carb_ratio_scale != 1.0:
            patients = dataclasses.replace(patients, carb_ratio=patients.carb_ratio * loop.carb_ratio_scale)
        size = _bucket(patients.n)  # a few padded sizes, so the loop compiles a few times
        padded = patients[np.r_[np.arange(patients.n), np.full(size - patients.n, patients.n - 1)]]
        result = closed_loop(self.model, padded, loop.controller, loop.scenario, seed=seed,
                             accurate=self.accurate, chunk_size=size)  # fmt: skip
        return delivered_inputs(self.model, result.insulin[: patients.n], result.carbs[: patients.n])


def loop_is_accurate(spec: ProductSpec) -> bool:
    """Whether a spec's closed loops integrate adaptively: only when its solver path is
    ``accurate`` (the delivered inputs are then simulated, and the fast path checked, as any arm's)."""
    return spec.solver.path == "accurate"


_REBUILT: dict[str, ClosedLoopPlanner] = {}


def _rebuilt(spec: dict[str, Any], accurate: bool) -> ClosedLoopPlanner:
    """The planner of a pickled spec, built once per process."""
    import hashlib
    import json

    from twinloop.models.registry import get as get_model
    from twinloop.products.spec import ProductSpec

    key = hashlib.sha256(json.dumps([spec, accurate], sort_keys=True).encode()).hexdigest()
    if key not in _REBUILT:
        parsed = ProductSpec.from_dict(spec)
        _REBUILT.clear()
        _REBUILT[key] = ClosedLoopPlanner.for_spec(parsed, get_model(parsed.model_id), accurate=accurate)
    return _REBUILT[key]


def _bucket(n: int) -> int:
    return max(8, 1 << (n - 1).bit_length())


def delivered_inputs(model: Model, insulin: np.ndarray, carbs: np.ndarray) -> Inputs:
    """A cohort plan of per-minute ``(n, T)`` delivered insulin (U/min) and carbohydrate
    eaten (g/min) on the model's control channels: each minute's rate holds over
    ``[t, t + 1)``; minutes where no patient's rate changes are joined."""
    from twinloop.models.inputs import Inputs

    control = control_interface(model)
    return Inputs(segments=_segments(control.insulin, insulin) + _segments(control.carbs, carbs))


def _segments(channel: str, rates: np.ndarray) -> tuple[Any, ...]:
    from twinloop.models.inputs import RateSegment

    r = np.asarray(rates, dtype=np.float64)
    if r.ndim != 2 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise InputError(f"Delivered {channel} must be an (n, minutes) array of finite rates >= 0.")
    starts = np.flatnonzero(np.r_[True, np.any(r[:, 1:] != r[:, :-1], axis=0)])
    ends = np.r_[starts[1:], r.shape[1]]
    pairs = zip(starts, ends, strict=True)
    return tuple(RateSegment(channel, float(a), float(b), r[:, a].copy()) for a, b in pairs if r[:, a].any())


def generate_product(
    spec: ProductSpec,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    csv: bool = False,
    max_chunks: int | None = None,
    sources: Sequence[Source] = (),
    runner: ChunkRunner | None = None,
    envelope: Mapping[str, Any] | None = None,
) -> RunResult:
    """Write the product of ``spec``, its ``control`` arms run closed-loop (the options are
    those of :func:`twinloop.products.dataset.generate`; the loops run on the runner's
    workers too). Each minute of the loop is integrated adaptively, as the engine
    integrates its replay.

    Example:
        >>> spec = ProductSpec.from_yaml("examples/t1d_closed_loop.yaml")  # doctest: +SKIP
        >>> generate_product(spec, "out/t1d-closed-loop")  # doctest: +SKIP

    Raises:
        InputError: a bad ``control`` section (before anything is written), or any
            refusal of ``generate``.
    """
    from twinloop.models.registry import get as get_model
    from twinloop.products.dataset import generate

    model = get_model(spec.model_id)
    planner = ClosedLoopPlanner.for_spec(spec, model) if spec.control else None
    return generate(spec, out, resume=resume, progress=progress, csv=csv, max_chunks=max_chunks, sources=sources,
                    planner=planner, runner=runner, envelope=envelope)  # fmt: skip
