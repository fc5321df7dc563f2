"""Placeholder of the trial spec's ``prognostic`` section (its owner replaces this module)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twinloop.errors import InputError
from twinloop.trials.context import SpecContext


@dataclass(frozen=True)
class PrognosticSpec:
    """The validated ``prognostic`` section."""

    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, where: str, raw: Any, ctx: SpecContext) -> PrognosticSpec:
        """Validate ``raw`` (the section at ``where``, e.g. ``'prognostic'``) against ``ctx``."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InputError(f"{where} must be a mapping; got {raw!r}.")
        return cls(dict(raw))

    def to_dict(self) -> dict[str, Any]:
        """The section as plain data (hashed with the spec, recorded in manifests)."""
        return dict(self.raw)
