"""How a twin assimilates, detects drift, recalibrates and solves: a frozen, validated
configuration (stored with every twin version)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from twinloop.calibrate.model_error import DEFAULT_SCALE
from twinloop.calibrate.noise import NoiseModel, noise_for
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.simulate.engine import SolverSettings

ASSIMILATION = ("enkf", "etkf", "pf")
RECALIBRATION = ("reassimilate", "none")
ESTIMATE = ("joint", "states", "parameters")
DEFAULT_SOLVER = SolverSettings(rtol=1e-5, atol=1e-6)
FAST_SOLVER = SolverSettings(rtol=1e-5, atol=1e-6, path="auto", precision="float32")
"""The fast path for a twin: faster syncs (45 vs 71 ms for 1,000 T1D members) but slower
24-h forecasts (696 vs 544 ms: a smooth forecast lets the adaptive path take long steps),
so not the default (benchmarks/bench_sync.py)."""


@dataclass(frozen=True)
class TwinConfig:
    """How a twin assimilates, detects drift and recalibrates.

    Arguments:
        assimilation: the filter of every sync: ``"enkf"`` (stochastic), ``"etkf"`` or ``"pf"``.
        members: ensemble size (>= 8).
        param_walk_sd: random walk of the fitted parameters per sync (their scale), >= 0.
        drift: the drift detector's settings (see :class:`~twinloop.twin.drift.DriftDetector`).
        recalibration: after a drift, ``"reassimilate"`` the recent window from an earlier
            ensemble with widened parameters, or ``"none"``.
        recalibration_lookback: how many syncs back that ensemble is (>= 1).
        recalibration_spread: the widening, in prior sds (>= 0).
        noise: per observable ``{"additive": ..., "proportional": ...}``; calibration
            widens it by the model error it estimates.
        model_error: on the sparse path (NUTS, SVI), the scale of the half-normal prior of
            the model-error ratio sampled with the parameters
            (:mod:`twinloop.calibrate.model_error`); 0: the declared noise is exact.
        inflation: multiplicative inflation of the EnKF/ETKF analysis anomalies (1.0: none,
            e.g. 1.04), or ``"adaptive"`` (the finite-size EnKF-N, Bocquet 2011).
        rotate: the ETKF's mean-preserving random rotation (as DAPPER's ``rot=True``).
        resample_below: the particle filter resamples when its effective sample size falls
            to this fraction of the members (DAPPER's ``NER``).
        regularization: the particle filter's jitter bandwidth factor after resampling
            (DAPPER's ``reg``; 0: none).
        solver: the engine's settings for every propagation and forecast (the accurate
            path by default; :data:`FAST_SOLVER` takes the engine's fast path in float32
            where the model declares one, each solve checking a few members against the
            accurate path). The path and its check are recorded in the sync report, the
            innovation log and the forecast.
        seed: the random streams (one per version, see ``PatientTwin.reseed``).
        estimate: what each sync's analysis updates. ``"joint"`` (default): the members'
            states and fitted parameters together. ``"states"``: the states only; the fitted
            parameters keep the values calibration gave each member (no random walk), as
            with ``fit=()``. ``"parameters"``: the fitted parameters only; each member's
            state is left as its model forecast it (it follows the updated parameters from
            then on), for models whose state is driven by inputs and parameters and
            forgets its start (not for chaotic ones, whose states must be corrected).
        clock_seconds: seconds of clock time in one unit of model time; needed when the
            model's time unit is not a clock unit (e.g. ``"1"``, dimensionless) and the
            model does not declare ``clock_seconds`` itself; overrides the model's otherwise.
        window: the assimilation window in model time units: the observations of one sync
            that fall in one window are assimilated together (default: an hour for models
            in s or min, 7 units otherwise).
    """

    assimilation: Literal["enkf", "etkf", "pf"] = "enkf"
    members: int = 500
    param_walk_sd: float = 0.01
    drift: Mapping[str, Any] = field(default_factory=lambda: {"method": "cusum", "allowance": 1.0, "h": 4.0})
    recalibration: Literal["reassimilate", "none"] = "reassimilate"
    recalibration_lookback: int = 3
    recalibration_spread: float = 1.0
    noise: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    model_error: float = DEFAULT_SCALE
    inflation: float | str = 1.0
    rotate: bool = False
    resample_below: float = 0.5
    regularization: float = 1.0
    solver: SolverSettings = field(default_factory=lambda: DEFAULT_SOLVER)
    seed: int = 0
    estimate: Literal["joint", "states", "parameters"] = "joint"
    clock_seconds: float | None = None
    window: float | None = None

    def __post_init__(self) -> None:
        _choice("assimilation", self.assimilation, ASSIMILATION)
        _choice("estimate", self.estimate, ESTIMATE)
        if self.clock_seconds is not None:
            _positive("clock_seconds", self.clock_seconds, "seconds per model time unit")
        if self.window is not None:
            _positive("window", self.window, "model time units")
        _choice("recalibration", self.recalibration, RECALIBRATION)
        _at_least("members", self.members, 8, integer=True)
        _at_least("recalibration_lookback", self.recalibration_lookback, 1, integer=True)
        _at_least("param_walk_sd", self.param_walk_sd, 0.0)
        _at_least("recalibration_spread", self.recalibration_spread, 0.0)
        _at_least("model_error", self.model_error, 0.0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise InputError(f"TwinConfig.seed must be an integer >= 0; got {self.seed!r}.")
        if self.inflation != "adaptive" and not (
            isinstance(self.inflation, int | float) and not isinstance(self.inflation, bool) and self.inflation > 0
        ):
            raise InputError(f"TwinConfig.inflation must be a factor > 0 or 'adaptive'; got {self.inflation!r}.")
        if not 0.0 <= self.resample_below <= 1.0:
            raise InputError(f"TwinConfig.resample_below must be in [0, 1]; got {self.resample_below!r}.")
        _at_least("regularization", self.regularization, 0.0)
        if not isinstance(self.solver, SolverSettings):
            raise InputError(f"TwinConfig.solver must be a SolverSettings; got {type(self.solver).__name__}.")
        for name, spec in self.noise.items():
            try:
                NoiseModel(**spec)
            except TypeError as e:
                raise InputError(
                    f"TwinConfig.noise[{name!r}] must be {{'additive': ..., 'proportional': ...}}; got {spec!r}."
                ) from e

    def noise_model(self, observable: str, model: Model) -> NoiseModel:
        """The declared noise of ``observable``, else the model's (refused if neither
        declares one); a declaration without ``lower``/``upper`` keeps the model's
        measurable range (``None`` removes it)."""
        if observable not in self.noise:
            return noise_for(model, observable)
        own = next((o.noise for o in model.observables if o.name == observable), None)
        limits: dict[str, Any] = {"lower": own.lower, "upper": own.upper} if own is not None else {}
        return NoiseModel(**{**limits, **self.noise[observable]})

    @property
    def settings(self) -> SolverSettings:
        return self.solver

    def filter(self) -> Any:
        """The assimilator of every sync, with this configuration's options."""
        from twinloop.twin.assimilation import assimilator

        return assimilator(
            self.assimilation,
            inflation=self.inflation,
            rotate=self.rotate,
            resample_below=self.resample_below,
            regularization=self.regularization,
        )

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        return {**raw, "drift": dict(self.drift), "noise": {k: dict(v) for k, v in self.noise.items()}}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TwinConfig:
        """From :meth:`to_dict`, or the older flat form with ``rtol`` and ``atol``."""
        values = dict(raw)
        solver = values.pop("solver", None)
        rtol, atol = values.pop("rtol", None), values.pop("atol", None)
        if solver is None:
            solver = {"rtol": rtol or 1e-5, "atol": atol or 1e-6}
        return cls(**values, solver=SolverSettings(**solver))


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"TwinConfig.{name} must be one of {list(allowed)}; got {value!r}.")


def _positive(name: str, value: Any, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (value > 0 and math.isfinite(value)):
        raise InputError(f"TwinConfig.{name} must be a finite number > 0 ({unit}); got {value!r}.")


def _at_least(name: str, value: Any, low: float, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= low:
        kind = "an integer" if integer else "a number"
        raise InputError(f"TwinConfig.{name} must be {kind} >= {low}; got {value!r}.")
