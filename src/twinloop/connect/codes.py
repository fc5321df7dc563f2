"""The declared mapping from clinical codes (LOINC) to model variables.

A code map says which LOINC codes mean which variable and in which unit the twin
wants it. Observations arrive with a code, a variable name or both; harmonization
names the variable from the code where the map knows it and converts the value to
the declared unit. Nothing is mapped by guessing: an unknown code keeps the
variable name it came with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinloop.errors import InputError


@dataclass(frozen=True)
class CodeEntry:
    code: str
    variable: str
    unit: str
    display: str = ""


# Codes for the variables the built-in cores observe. The unit is the model's.
DEFAULT_ENTRIES = (
    CodeEntry("99504-3", "subcutaneous_glucose", "mg/dL", "Glucose [Mass/volume] in Interstitial fluid"),
    CodeEntry("97507-8", "subcutaneous_glucose", "mg/dL", "Average glucose [Mass/volume] in Interstitial fluid"),
    CodeEntry("14745-4", "subcutaneous_glucose", "mg/dL", "Glucose [Moles/volume] in Body fluid"),
    CodeEntry("2345-7", "plasma_glucose", "mg/dL", "Glucose [Mass/volume] in Serum or Plasma"),
    CodeEntry("2339-0", "plasma_glucose", "mg/dL", "Glucose [Mass/volume] in Blood"),
    CodeEntry("15074-8", "plasma_glucose", "mg/dL", "Glucose [Moles/volume] in Blood"),
    CodeEntry("14749-6", "plasma_glucose", "mg/dL", "Glucose [Moles/volume] in Serum or Plasma"),
    CodeEntry("41653-7", "plasma_glucose", "mg/dL", "Glucose [Mass/volume] in Capillary blood by Glucometer"),
    CodeEntry("14743-9", "plasma_glucose", "mg/dL", "Glucose [Moles/volume] in Capillary blood by Glucometer"),
    CodeEntry("21889-1", "sum_of_diameters", "mm", "Size Tumor"),
    CodeEntry("33728-7", "sum_of_diameters", "mm", "Size.maximum dimension in Tumor"),
    CodeEntry("29463-7", "body_weight", "kg", "Body weight"),
    CodeEntry("8302-2", "body_height", "cm", "Body height"),
    CodeEntry("4548-4", "hba1c", "%", "Hemoglobin A1c/Hemoglobin.total in Blood"),
)


@dataclass(frozen=True)
class CodeMap:
    """LOINC code -> (variable, unit), plus the unit each variable is wanted in."""

    entries: tuple[CodeEntry, ...] = DEFAULT_ENTRIES
    units: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for e in self.entries:
            if seen.get(e.code, e.variable) != e.variable:
                raise InputError(f"LOINC code {e.code} is mapped to both {seen[e.code]!r} and {e.variable!r}.")
            seen[e.code] = e.variable

    def variable_of(self, code: str) -> str | None:
        for e in self.entries:
            if e.code == code:
                return e.variable
        return None

    def code_of(self, variable: str) -> str:
        for e in self.entries:
            if e.variable == variable:
                return e.code
        return ""

    def unit_of(self, variable: str) -> str | None:
        if variable in self.units:
            return self.units[variable]
        for e in self.entries:
            if e.variable == variable:
                return e.unit
        return None

    def extended(self, entries: Any = (), units: Mapping[str, str] | None = None) -> CodeMap:
        """A copy with more entries (later ones win) and target units."""
        extra = tuple(entries)
        codes = {e.code for e in extra}
        kept = tuple(e for e in self.entries if e.code not in codes)
        return CodeMap(kept + extra, {**self.units, **(units or {})})

    @classmethod
    def from_yaml(cls, path: str | Path) -> CodeMap:
        """Read ``codes: [{code, variable, unit, display}]`` and ``units: {variable: unit}``,
        added to the defaults."""
        from twinloop._yaml import load_yaml

        raw = load_yaml(path, "a code map (YAML mapping with 'codes' and/or 'units')")
        entries = []
        for i, item in enumerate(raw.get("codes", [])):
            try:
                entries.append(
                    CodeEntry(str(item["code"]), str(item["variable"]), str(item["unit"]), str(item.get("display", "")))
                )
            except (KeyError, TypeError) as e:
                raise InputError(f"{path}: codes[{i}] needs code, variable and unit; got {item!r}.") from e
        return cls().extended(entries, {str(k): str(v) for k, v in (raw.get("units") or {}).items()})
