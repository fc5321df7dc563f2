"""Treatments and exposures as data: piecewise-constant rates and instantaneous boluses.

Every regimen reduces to two primitives: :class:`RateSegment` (a rate held constant
over ``[start, end)``) and :class:`Bolus` (an amount added to a state at one instant).
Meals, basal insulin, boluses, infusions and drug doses are built from them, and
:func:`twinloop.simulate.grid.rasterize` turns them into arrays on the integration grid.

A rate or an amount may also be a 1-D array with one value per patient: a cohort plan
with shared timing and per-patient doses (e.g. each patient's basal rate and meal
boluses) is then one ``Inputs`` rather than a million of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop.models.base import Model


@dataclass(frozen=True)
class RateSegment:
    """``rate`` (in the input channel's unit) held over ``[start, end)`` in model time."""

    channel: str
    start: float
    end: float
    rate: Any  # float, or an array with one rate per patient


@dataclass(frozen=True)
class Bolus:
    """An instantaneous ``amount`` of input ``channel`` at ``time``."""

    channel: str
    time: float
    amount: Any  # float, or an array with one amount per patient


def _finite(field: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"The {field} must be a finite number; got {value!r}.")
    return number


def _amount(field: str, value: Any, time: float) -> Any:
    """A non-negative finite number, or a 1-D array of them (one per patient)."""
    if np.ndim(value) == 0:
        number = _finite(field, value)
        if number < 0:
            raise InputError(f"The {field} must be >= 0; got {number} at time {time}.")
        return number
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"The {field} must be a number or a 1-D array with one value per patient.")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        bad = int(np.argmax(~np.isfinite(array) | (array < 0)))
        raise InputError(f"The {field} must be finite and >= 0; patient {bad} has {array[bad]} at time {time}.")
    return array


@dataclass(frozen=True)
class Inputs:
    """A treatment/exposure plan. Combine plans with ``+``.

    Example:
        >>> plan = Inputs.meals([(420, 50), (720, 70)]) + Inputs.rate("insulin", 0, 1440, 0.02)
    """

    segments: tuple[RateSegment, ...] = ()
    boluses: tuple[Bolus, ...] = ()

    def __add__(self, other: Inputs) -> Inputs:
        if not isinstance(other, Inputs):
            return NotImplemented
        return Inputs(self.segments + other.segments, self.boluses + other.boluses)

    # --- constructors -------------------------------------------------------
    @classmethod
    def rate(cls, channel: str, start: float, end: float, rate: float) -> Inputs:
        """A constant rate over ``[start, end)``, e.g. basal insulin in U/min."""
        start, end = _finite("start time", start), _finite("end time", end)
        if end <= start:
            raise InputError(f"A rate of input '{channel}' must end after it starts; got [{start}, {end}).")
        value = _amount(f"rate of input '{channel}'", rate, start)
        return cls(segments=(RateSegment(channel, start, end, value),))

    @classmethod
    def infusion(cls, channel: str, start: float, duration: float, rate: float) -> Inputs:
        """An infusion at ``rate`` for ``duration`` time units from ``start``."""
        return cls.rate(channel, start, start + _finite("infusion duration", duration), rate)

    @classmethod
    def series(
        cls,
        channel: str,
        times: Sequence[float] | np.ndarray,
        rates: Sequence[float] | np.ndarray,
        end: float | None = None,
    ) -> Inputs:
        """A recorded rate series: ``rates[i]`` holds over ``[times[i], times[i+1])``.

        The last rate holds until ``end`` (default: one median interval after the
        last time). Times must be strictly increasing; rates must be >= 0.
        """
        t = np.asarray(times, dtype=np.float64)
        r = np.asarray(rates, dtype=np.float64)
        if t.ndim != 1 or t.shape != r.shape or t.size == 0:
            raise InputError(f"Input '{channel}': times and rates must be 1-D of the same non-zero length.")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(r))):
            raise InputError(f"Input '{channel}': times and rates must be finite numbers.")
        if np.any(np.diff(t) <= 0):
            i = int(np.argmax(np.diff(t) <= 0)) + 1
            raise InputError(f"Input '{channel}': times must be strictly increasing; time {t[i]} follows {t[i - 1]}.")
        if np.any(r < 0):
            i = int(np.argmax(r < 0))
            raise InputError(f"Input '{channel}': rates must be >= 0; got {r[i]} at time {t[i]}.")
        if end is None:
            end = float(t[-1] + (np.median(np.diff(t)) if t.size > 1 else 1.0))
        edges = np.append(t, end)
        if edges[-1] <= edges[-2]:
            raise InputError(f"Input '{channel}': end {end} must come after the last time {t[-1]}.")
        # Merge runs of equal rate so the grid only breaks where the rate changes.
        change = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        starts = edges[change]
        ends = np.append(edges[change[1:]], edges[-1])
        segs = tuple(
            RateSegment(channel, float(a), float(b), float(v))
            for a, b, v in zip(starts, ends, r[change], strict=True)
            if v != 0.0
        )
        return cls(segments=segs)

    @classmethod
    def bolus(cls, channel: str, doses: Iterable[tuple[float, float]]) -> Inputs:
        """Instantaneous amounts ``[(time, amount), ...]``, e.g. IV drug doses in mg."""
        out = []
        for time, amount in doses:
            t = _finite("dose time", time)
            out.append(Bolus(channel, t, _amount(f"amount of input '{channel}'", amount, t)))
        return cls(boluses=tuple(out))

    @classmethod
    def pulse(cls, channel: str, time: float, amount: float, duration: float = 1.0) -> Inputs:
        """An amount delivered at a constant rate over ``duration`` (pump bolus: U over 1 min)."""
        if duration <= 0:
            raise InputError(f"A pulse of input '{channel}' needs a duration > 0; got {duration}.")
        return cls.rate(channel, time, time + duration, amount / duration)

    @classmethod
    def meals(
        cls,
        meals: Iterable[tuple[float, float]],
        *,
        channel: str = "carbs",
        rate_g_per_min: float = 5.0,
        step: float = 1.0,
    ) -> Inputs:
        """Announced meals ``[(time, grams), ...]`` eaten at ``rate_g_per_min``.

        As in simglucose, eating proceeds in whole steps of ``step`` minutes: each step
        eats ``min(rate * step, grams still planned)``; a meal announced while another is
        being eaten joins the queue.
        """
        if rate_g_per_min <= 0 or step <= 0:
            raise InputError(f"The eating rate and step must be > 0; got {rate_g_per_min} g/min and {step} min.")
        planned: dict[int, float] = {}
        for time, grams in meals:
            g = _finite("meal carbohydrate (g)", grams)
            if g < 0:
                raise InputError(f"Meal carbohydrate must be >= 0 g; got {g} at time {time}.")
            k = round(_finite("meal time", time) / step)
            planned[k] = planned.get(k, 0.0) + g
        eaten = _eat_in_steps(planned, rate_g_per_min * step)
        if not eaten:
            return cls()
        ks = np.array(sorted(eaten))
        rates = np.array([eaten[k] / step for k in ks])
        # Consecutive eating steps become one segment per run of equal rate.
        segs: list[RateSegment] = []
        for k, r in zip(ks, rates, strict=True):
            if segs and segs[-1].rate == r and math.isclose(segs[-1].end, k * step):
                segs[-1] = RateSegment(channel, segs[-1].start, (k + 1) * step, r)
            else:
                segs.append(RateSegment(channel, k * step, (k + 1) * step, r))
        return cls(segments=tuple(segs))

    # --- queries ------------------------------------------------------------
    def breakpoints(self) -> set[float]:
        """All times at which an input changes."""
        times = {s.start for s in self.segments} | {s.end for s in self.segments}
        return times | {b.time for b in self.boluses}

    def total(self, channel: str) -> Any:
        """Total amount of a channel (rates integrated over time plus boluses)."""
        area = sum((s.end - s.start) * s.rate for s in self.segments if s.channel == channel)
        return area + sum(b.amount for b in self.boluses if b.channel == channel)

    @property
    def n_patients(self) -> int | None:
        """The cohort size of a plan with per-patient values, or ``None`` if all are scalars."""
        sizes = {np.size(v) for v in [s.rate for s in self.segments] + [b.amount for b in self.boluses] if np.ndim(v)}
        if len(sizes) > 1:
            raise InputError(f"Per-patient input values must all have the same length; got lengths {sorted(sizes)}.")
        return sizes.pop() if sizes else None

    def validate(self, model: Model) -> None:
        """Check every channel is one the model accepts, with the right kind.

        Raises:
            InputError: naming the channel and the model's accepted inputs.
        """
        kinds = {i.name: i.kind for i in model.inputs}
        used = [(s.channel, "rate") for s in self.segments] + [(b.channel, "bolus") for b in self.boluses]
        for channel, kind in used:
            if channel not in kinds:
                raise InputError(
                    f"Model '{model.id}' has no input '{channel}'; it accepts "
                    f"{', '.join(f'{k} ({v})' for k, v in kinds.items()) or 'no inputs'}."
                )
            if kinds[channel] != kind:
                raise InputError(
                    f"Input '{channel}' of model '{model.id}' is a {kinds[channel]} input; it was given as a {kind}."
                )


def _eat_in_steps(planned: dict[int, float], per_step: float) -> dict[int, float]:
    """Run simglucose's meal queue: grams eaten at each step index."""
    eaten: dict[int, float] = {}
    queue = 0.0
    arrivals = sorted(planned)
    i = 0
    k = arrivals[0] if arrivals else 0
    while i < len(arrivals) or queue > 0:
        if queue <= 0 and i < len(arrivals) and k < arrivals[i]:
            k = arrivals[i]  # skip idle stretches
        if i < len(arrivals) and arrivals[i] == k:
            queue += planned[arrivals[i]]
            i += 1
        bite = min(per_step, queue)
        if bite > 0:
            eaten[k] = bite
        queue = max(0.0, queue - bite)
        k += 1
    return eaten
