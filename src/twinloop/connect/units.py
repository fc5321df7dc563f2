"""UCUM unit conversion with pint.

UCUM strings are read into pint after a few spelling fixes (``[IU]``, ``[lb_av]``,
annotations in braces). Conversions between mass and amount of substance (glucose
mg/dL <-> mmol/L) need the substance's molar mass: they are allowed only for the
variables listed in ``MOLAR_MASS_G_PER_MOL``, never guessed.
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache
from typing import Any

import numpy as np
import pint

from twinloop.errors import InputError

# Molar masses of the substances whose concentrations come in both mass and molar units.
MOLAR_MASS_G_PER_MOL = {
    "glucose": 180.156,
    "subcutaneous_glucose": 180.156,
    "plasma_glucose": 180.156,
}
_UCUM_SPELLING = {"[IU]": "U", "[iU]": "U", "[lb_av]": "lb", "[in_i]": "inch", "Cel": "degC", "[degF]": "degF"}


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    return pint.UnitRegistry()


def _pint_spelling(unit: str) -> str:
    text = re.sub(r"\{[^}]*\}", "", unit).strip()
    for ucum, spelled in _UCUM_SPELLING.items():
        text = text.replace(ucum, spelled)
    return text or "dimensionless"


@lru_cache(maxsize=512)
def parse_unit(unit: str) -> Any:
    """The pint unit of a UCUM string; ``InputError`` naming the unit if it is unknown."""
    try:
        return registry().parse_units(_pint_spelling(unit))
    except (pint.errors.PintError, AttributeError, TypeError, ValueError, AssertionError) as e:
        raise InputError(f"Unit {unit!r} is not a UCUM unit twinloop can read (e.g. mg/dL, mmol/L, mm, kg).") from e


@lru_cache(maxsize=512)
def conversion(from_unit: str, to_unit: str, variable: str = "") -> tuple[float, float]:
    """``(scale, offset)`` such that ``value_to = value_from * scale + offset``.

    Raises:
        InputError: if either unit is unknown or the dimensions differ (and no molar
            mass is declared for ``variable`` to bridge mass and substance amounts).
    """
    if from_unit == to_unit:
        return 1.0, 0.0
    ureg = registry()
    src, dst = parse_unit(from_unit), parse_unit(to_unit)
    one, zero = ureg.Quantity(1.0, src), ureg.Quantity(0.0, src)
    with contextlib.suppress(pint.errors.DimensionalityError):  # try a molar-mass bridge next
        a, b = one.to(dst).magnitude, zero.to(dst).magnitude
        return float(a - b), float(b)
    mass = MOLAR_MASS_G_PER_MOL.get(variable)
    if mass is not None:
        molar = ureg.Quantity(mass, "g/mol")
        for bridged in (one * molar, one / molar):
            try:
                return float(bridged.to(dst).magnitude), 0.0
            except pint.errors.DimensionalityError:
                continue
    hint = "" if mass is not None else " (no molar mass is declared for it)"
    raise InputError(f"Cannot convert {variable or 'a value'} from {from_unit!r} to {to_unit!r}{hint}.")


def convert(values: Any, from_unit: str, to_unit: str, variable: str = "") -> np.ndarray:
    """Convert an array of values between UCUM units (see :func:`conversion`)."""
    scale, offset = conversion(from_unit, to_unit, variable)
    return np.asarray(values, dtype=np.float64) * scale + offset
