"""SBML units -> UCUM strings.

A unit definition is a product of base units ``(multiplier * 10^scale * kind)^exponent``.
Each factor maps to a UCUM atom with a prefix when the scale has one (``mmol``, ``uL``),
common multiples of the second become ``min``, ``h`` and ``d``, any remaining integer
factor is written as a UCUM factor (``60.s``), and exponents follow the atom (``m2``,
``s-1``). A definition with a factor UCUM cannot write (non-integer) becomes the
annotation ``{id}``, which a reader can look up in the SBML file. Undeclared units are
``"1"``, except model time, which defaults to seconds (``"s"``), the unit SBML Level 2
assigns to time and the unit libroadrunner reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Factor = tuple[str, float, int, float]  # kind, exponent, scale, multiplier

_ATOMS = {
    "mole": "mol",
    "litre": "L",
    "liter": "L",
    "second": "s",
    "metre": "m",
    "meter": "m",
    "gram": "g",
    "kilogram": "kg",
    "dimensionless": "",
    "item": "{item}",
    "ampere": "A",
    "kelvin": "K",
    "candela": "cd",
    "becquerel": "Bq",
    "coulomb": "C",
    "farad": "F",
    "gray": "Gy",
    "henry": "H",
    "hertz": "Hz",
    "joule": "J",
    "katal": "kat",
    "lumen": "lm",
    "lux": "lx",
    "newton": "N",
    "ohm": "Ohm",
    "pascal": "Pa",
    "radian": "rad",
    "siemens": "S",
    "sievert": "Sv",
    "steradian": "sr",
    "tesla": "T",
    "volt": "V",
    "watt": "W",
    "weber": "Wb",
}
_PREFIXES = {3: "k", 0: "", -1: "d", -2: "c", -3: "m", -6: "u", -9: "n", -12: "p", -15: "f"}
_TIMES = {60.0: "min", 3600.0: "h", 86400.0: "d", 604800.0: "wk"}
_BUILTIN = {"substance": "mol", "volume": "L", "area": "m2", "length": "m", "time": "s", "dimensionless": "1"}


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _factor(kind: str, exponent: float, scale: int, multiplier: float) -> tuple[str, float] | None:
    """One factor as (UCUM term, leftover numeric factor), or None when not writable."""
    atom = _ATOMS.get(kind)
    if atom is None or not float(exponent).is_integer():
        return None
    leftover = 1.0
    if kind == "second" and scale == 0 and multiplier in _TIMES:
        term = _TIMES[multiplier]
    elif atom == "":
        term, leftover = "", multiplier * 10.0**scale
    elif kind == "kilogram":
        term, leftover = "kg", multiplier * 10.0**scale
    elif scale in _PREFIXES:
        term, leftover = _PREFIXES[scale] + atom, multiplier
    else:
        term, leftover = atom, multiplier * 10.0**scale
    exp = int(exponent)
    if term and exp != 1:
        term += _number(exp)
    return term, leftover**exp


def ucum(factors: tuple[Factor, ...], fallback: str) -> str:
    """The UCUM string of a unit definition, or ``{fallback}`` when UCUM cannot write it."""
    terms: list[str] = []
    numeric = 1.0
    for factor in factors:
        mapped = _factor(*factor)
        if mapped is None:
            return "{" + fallback + "}"
        term, leftover = mapped
        numeric *= leftover
        if term:
            terms.append(term)
    if not math.isclose(numeric, 1.0, rel_tol=1e-12):
        power = math.log10(numeric)
        if math.isclose(power, round(power), abs_tol=1e-9):
            terms.insert(0, f"10*{round(power)}")
        elif math.isclose(numeric, round(numeric), rel_tol=1e-12) and numeric > 0:
            terms.insert(0, _number(round(numeric)))
        else:
            return "{" + fallback + "}"
    if not terms:
        return "1"
    positive = [t for t in terms if not t.endswith(("-1",)) or t.startswith("10*")]
    inverse = [t[:-2] for t in terms if t not in positive]
    text = ".".join(positive) or "1"
    return text + "".join("/" + t for t in inverse)


def unit_string(ref: str, definitions: Mapping[str, tuple[Factor, ...]], default: str = "1") -> str:
    """The UCUM string of a unit reference (a unit definition id, a base unit or a built-in)."""
    if not ref:
        return default
    if ref in definitions:
        return ucum(definitions[ref], ref)
    if ref in _BUILTIN:
        return _BUILTIN[ref]
    if ref in _ATOMS:
        return _ATOMS[ref] or "1"
    return "{" + ref + "}"


def divide(numerator: str, denominator: str) -> str:
    """``numerator/denominator`` in UCUM, with brackets where needed."""
    if denominator == "1":
        return numerator
    den = denominator if all(c not in denominator for c in "./") else f"({denominator})"
    return f"{numerator}/{den}"
