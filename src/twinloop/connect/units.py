"""UCUM unit conversion with pint.

UCUM strings are read into pint after a few spelling fixes (``[IU]``, ``[lb_av]``,
annotations in braces). Conversions between mass and amount of substance (glucose
mg/dL <-> mmol/L) need the substance's molar mass: they are allowed only for the
variables listed in ``MOLAR_MASS_G_PER_MOL``, never guessed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from tokenize import TokenError
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
    except (
        pint.errors.PintError,
        AttributeError,
        TypeError,
        ValueError,
        AssertionError,
        TokenError,
        ArithmeticError,
    ) as e:
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
    try:
        a, b = one.to(dst).magnitude, zero.to(dst).magnitude
        return float(a - b), float(b)
    except pint.errors.DimensionalityError:
        pass  # try a molar-mass bridge next
    except pint.errors.PintError as e:  # e.g. an offset unit (Cel) in a product
        raise InputError(f"Cannot convert {variable or 'a value'} from {from_unit!r} to {to_unit!r} ({e}).") from e
    mass = MOLAR_MASS_G_PER_MOL.get(variable)
    if mass is not None:
        molar = ureg.Quantity(mass, "g/mol")
        for bridged in _bridges(one, molar):
            try:
                return float(bridged.to(dst).magnitude), 0.0
            except pint.errors.DimensionalityError:
                continue
    hint = "" if mass is not None else " (no molar mass is declared for it)"
    raise InputError(f"Cannot convert {variable or 'a value'} from {from_unit!r} to {to_unit!r}{hint}.")


def _bridges(one: Any, molar: Any) -> list[Any]:
    """``one`` times and divided by a molar mass; none for an offset unit (Cel), which
    multiplies with nothing."""
    try:
        return [one * molar, one / molar]
    except pint.errors.PintError:
        return []


def convert(values: Any, from_unit: str, to_unit: str, variable: str = "") -> np.ndarray:
    """Convert an array of values between UCUM units (see :func:`conversion`)."""
    scale, offset = conversion(from_unit, to_unit, variable)
    return np.asarray(values, dtype=np.float64) * scale + offset


@lru_cache(maxsize=512)
def is_concentration(unit: str) -> bool:
    """Whether ``unit`` measures an amount per volume (mg/dL, mmol/L, pmol/L...), which
    cannot be negative; ``False`` for a unit pint cannot read."""
    try:
        dims = dict(parse_unit(unit).dimensionality)
    except InputError:
        return False
    return dims.get("[length]") == -3 and len(dims) == 2 and ("[mass]" in dims or "[substance]" in dims)
