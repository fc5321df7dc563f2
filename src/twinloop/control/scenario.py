"""What happens to the patients in a closed-loop run: meals, their announcement,
rescue carbohydrate, the sensor and the pump."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twinloop.errors import InputError

MINUTES_PER_DAY = 1440
STANDARD_MEALS = ((420.0, 50.0), (720.0, 70.0), (1140.0, 80.0))


@dataclass(frozen=True)
class RescueCarbs:
    """Fast carbohydrate the patient takes when the CGM reads low: ``grams`` when the
    latest reading is below ``threshold_mg_dl``, at most once per ``refractory_min``.
    Rescue carbohydrate is eaten like a meal and not announced to the controller."""

    threshold_mg_dl: float = 70.0
    grams: float = 15.0
    refractory_min: float = 60.0

    def __post_init__(self) -> None:
        _positive("rescue.threshold_mg_dl", self.threshold_mg_dl)
        _positive("rescue.grams", self.grams)
        if not (math.isfinite(self.refractory_min) and self.refractory_min >= 0):
            raise InputError(f"rescue.refractory_min must be >= 0 minutes; got {self.refractory_min!r}.")


@dataclass(frozen=True)
class Scenario:
    """A closed-loop scenario, the same for every patient up to the random variation.

    Arguments:
        days: length of the run.
        meals: ``(minute of the day, grams)`` eaten every day.
        meal_time_sd_min: day-to-day and patient-to-patient scatter of meal times (normal).
        meal_size_cv: scatter of meal sizes (log-normal, this coefficient of variation).
        carb_count_error_cv: the patient's carbohydrate-counting error: the controller is
            told ``grams x (1 + e)``, ``e`` normal with this standard deviation (>= 0 g).
        rescue: rescue carbohydrate, or None for none.
        sensor: a CGM sensor simglucose publishes (``GuardianRT``, ``Dexcom``, ``Navigator``).
        noise: the sensor's error model on (True) or a noise-free sensor (False).
        sensor_delay_min: extra delay of the readings behind subcutaneous glucose.
        pump: ``Insulet`` or ``Cozmo``.
        period_min: the control period; None takes the sensor's sample time.
    """

    days: float = 1.0
    meals: tuple[tuple[float, float], ...] = STANDARD_MEALS
    meal_time_sd_min: float = 0.0
    meal_size_cv: float = 0.0
    carb_count_error_cv: float = 0.0
    rescue: RescueCarbs | None = field(default_factory=RescueCarbs)
    sensor: str = "GuardianRT"
    noise: bool = True
    sensor_delay_min: int = 0
    pump: str = "Insulet"
    period_min: int | None = None

    def __post_init__(self) -> None:
        from twinloop.control.pump import Pump
        from twinloop.models.t1d_cgm import CGMSensor

        _positive("days", self.days)
        if self.days * MINUTES_PER_DAY != round(self.days * MINUTES_PER_DAY) or self.days > 366:
            raise InputError(f"days must be a whole number of minutes and at most 366; got {self.days!r}.")
        object.__setattr__(self, "meals", _meals(self.meals))
        for key in ("meal_time_sd_min", "meal_size_cv", "carb_count_error_cv"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1e3):
                raise InputError(f"{key} must be a number >= 0; got {value!r}.")
        CGMSensor(self.sensor)  # validates the name
        Pump.named(self.pump)
        if not (isinstance(self.sensor_delay_min, int) and 0 <= self.sensor_delay_min <= 60):
            raise InputError(
                f"sensor_delay_min must be a whole number of minutes in 0..60; got {self.sensor_delay_min!r}."
            )
        period = self.period_min
        if period is not None and not (isinstance(period, int) and 1 <= period <= 60):
            raise InputError(f"period_min must be a whole number of minutes in 1..60 or None; got {period!r}.")

    @property
    def minutes(self) -> int:
        return round(self.days * MINUTES_PER_DAY)

    @property
    def sensor_period(self) -> int:
        from twinloop.models.t1d_cgm import CGMSensor

        return round(CGMSensor(self.sensor).spec.sample_time_min)

    @property
    def control_period(self) -> int:
        return self.period_min or self.sensor_period

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Scenario:
        """A scenario from a mapping (a YAML or JSON spec), every key checked."""
        if not isinstance(raw, Mapping):
            raise InputError(f"A scenario must be a mapping of settings; got {type(raw).__name__}.")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"Unknown scenario keys {unknown}; expected some of {sorted(known)}.")
        values = dict(raw)
        rescue = values.get("rescue", {})
        if isinstance(rescue, Mapping):
            extra = sorted(set(rescue) - {"threshold_mg_dl", "grams", "refractory_min"})
            if extra:
                raise InputError(f"Unknown rescue keys {extra}; expected threshold_mg_dl, grams, refractory_min.")
            values["rescue"] = RescueCarbs(**rescue)
        elif rescue is None or rescue is False:
            values["rescue"] = None
        else:
            raise InputError(f"rescue must be a mapping of settings or null; got {rescue!r}.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["meals"] = [list(m) for m in self.meals]
        r = self.rescue
        out["rescue"] = None if r is None else {"threshold_mg_dl": r.threshold_mg_dl, "grams": r.grams,
                                                 "refractory_min": r.refractory_min}  # fmt: skip
        return out

    def meal_grid(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(n, minutes)`` grams put on each patient's plate at each minute, and the grams
        announced to the controller at that minute (with the counting error)."""
        rng = np.random.default_rng([seed, 0x4D45414C])
        eaten = np.zeros((n, self.minutes))
        announced = np.zeros((n, self.minutes))
        rows = np.arange(n)
        for day in range(math.ceil(self.days)):
            for minute, grams in self.meals:
                when = day * MINUTES_PER_DAY + minute + self.meal_time_sd_min * rng.standard_normal(n)
                at = np.clip(np.round(when), day * MINUTES_PER_DAY, self.minutes - 1).astype(np.intp)
                size = grams * _lognormal(rng, self.meal_size_cv, n)
                told = np.maximum(size * (1.0 + self.carb_count_error_cv * rng.standard_normal(n)), 0.0)
                inside = np.round(when) < self.minutes  # a meal after the end of the run is not eaten
                np.add.at(eaten, (rows[inside], at[inside]), size[inside])
                np.add.at(announced, (rows[inside], at[inside]), told[inside])
        return eaten, announced


def _lognormal(rng: np.random.Generator, cv: float, n: int) -> np.ndarray:
    if cv == 0:
        return np.ones(n)
    sigma2 = math.log1p(cv**2)
    return np.exp(math.sqrt(sigma2) * rng.standard_normal(n) - sigma2 / 2.0)


def _positive(key: str, value: Any) -> None:
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise InputError(f"{key} must be a number > 0; got {value!r}.")


def _meals(raw: Any) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) > 48:
        raise InputError(f"meals must be a list of at most 48 (minute of the day, grams); got {raw!r}.")
    out = []
    for j, meal in enumerate(raw):
        ok = isinstance(meal, Sequence) and not isinstance(meal, str) and len(meal) == 2
        if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in meal):
            raise InputError(f"meals[{j}] must be (minute of the day, grams), e.g. (420, 50); got {meal!r}.")
        minute, grams = float(meal[0]), float(meal[1])
        if not (0 <= minute < MINUTES_PER_DAY and 0 <= grams <= 500):
            raise InputError(
                f"meals[{j}] must have a minute of the day in [0, 1440) and 0..500 g; got {meal!r}. "
                "Write the time as minutes after midnight (07:00 is 420)."
            )
        out.append((minute, grams))
    return tuple(out)
