"""The size limits of a product, and the memory each one protects.

A product is generated chunk by chunk: one chunk's simulated outputs are held in memory
as ``chunk_size x output points x observables`` float64 values, then written to disk.
The limits below keep that array, the dose and visit lists of a plan and the time axis
(timestamps end in the year 2262) within what one machine handles; every refusal names
the field, the value, the largest accepted and the memory the value would need
(estimated as patients x output points x observables x 8 bytes).
"""

from __future__ import annotations

import math
from typing import Any

from twinloop.errors import InputError
from twinloop.models.treatments import MAX_EVENTS as MAX_EVENTS  # a treatment's limit, declared with treatments
from twinloop.models.treatments import check_events as check_events

MAX_PATIENTS = 10_000_000
"""The most patients of one product: written in chunks, so memory is bounded by a chunk;
the limit keeps the patients table and the ids manageable (10^7 rows)."""
MAX_POINTS = 1_000_000
"""The most output points per patient (``duration / resolution + 1``): a year by the minute."""
MAX_DURATION_DAYS = 36_525.0
"""The longest simulated span: 100 years (timestamps stay far from pandas' year-2262 end)."""
MAX_CHUNK_BYTES = 2 << 30
"""The most memory of one chunk's simulated outputs (``chunk_size x points x observables x 8``)."""
MINUTES_PER_UNIT = {"s": 1.0 / 60.0, "min": 1.0, "h": 60.0, "d": 1440.0}


def size_text(nbytes: float) -> str:
    """``3.2e9`` -> ``'3.0 GiB'``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"  # pragma: no cover


def finite_number(field: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a finite float (not a bool), ``> 0`` if ``positive``, ``>= minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"'{field}' must be a number; got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"'{field}' must be a number; got {value!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"'{field}' must be a finite number; got {value!r}.")
    if positive and number <= 0:
        raise InputError(f"'{field}' must be > 0; got {value!r}.")
    if minimum is not None and number < minimum:
        raise InputError(f"'{field}' must be >= {minimum:g}; got {value!r}.")
    return number


def whole_number(field: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int (a whole float such as ``1e3`` too) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"'{field}' must be an integer >= {minimum}; got {value!r}.")
    if not math.isfinite(value) or int(value) != value or value < minimum:
        raise InputError(f"'{field}' must be an integer >= {minimum} (finite); got {value!r}.")
    if maximum is not None and value > maximum:
        raise InputError(f"'{field}' is {value!r}; the largest accepted is {maximum}.")
    return int(value)


def output_points(duration: float, resolution: float) -> int:
    """Points of the output grid ``0, resolution, ..., duration``."""
    return math.floor(duration / resolution + 1e-9) + 1


def check_duration(duration: float, resolution: float, time_unit: str, observables: int) -> int:
    """Refuse a span beyond :data:`MAX_DURATION_DAYS` or a grid beyond :data:`MAX_POINTS`;
    the number of output points per patient."""
    per_day = 1440.0 / MINUTES_PER_UNIT.get(time_unit, 1.0)
    longest = MAX_DURATION_DAYS * per_day
    if duration > longest:
        raise InputError(
            f"'duration' is {duration:g} {time_unit}; the largest accepted is {longest:g} {time_unit} (100 years). "
            "Shorten it."
        )
    points = output_points(duration, resolution)
    if points > MAX_POINTS:
        raise InputError(
            f"'duration' / 'resolution' = {duration:g} / {resolution:g} gives {points} output points per patient; "
            f"the largest accepted is {MAX_POINTS} (one patient would need {size_text(points * observables * 8)}, "
            "estimated as points x observables x 8 bytes). Raise 'resolution' or shorten 'duration'."
        )
    return points


def check_patients(n: int, points: int, observables: int) -> None:
    """Refuse more than :data:`MAX_PATIENTS` patients, naming the memory they would need."""
    if n > MAX_PATIENTS:
        need = size_text(float(n) * points * observables * 8)
        raise InputError(
            f"'n' is {n}; the largest accepted is {MAX_PATIENTS} patients. Written in chunks to disk, {n} patients "
            f"x {points} output points x {observables} observables x 8 bytes would still be {need} of simulated "
            "values. Lower 'n' or split the product."
        )


def chunk_size_for(requested: int | None, n: int, points: int, observables: int) -> int:
    """The chunk size: ``requested`` (refused if its outputs exceed :data:`MAX_CHUNK_BYTES`)
    or the default 10,000 lowered until a chunk fits."""
    per_patient = points * max(observables, 1) * 8
    fits = max(1, MAX_CHUNK_BYTES // per_patient)
    if requested is None:
        return min(10_000, n, fits)
    if requested > fits and min(requested, n) > fits:
        need = size_text(float(min(requested, n)) * per_patient)
        raise InputError(
            f"'chunk_size' is {requested}: {min(requested, n)} patients x {points} output points x {observables} "
            f"observables x 8 bytes = {need} in memory per chunk; the largest accepted is "
            f"{size_text(MAX_CHUNK_BYTES)}, i.e. chunk_size {fits} for this spec. Lower 'chunk_size'."
        )
    return min(requested, n)
