"""What the sections of a trial specification may refer to, handed to each section's parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

EndpointKind = Literal["continuous", "binary", "time_to_event"]


@dataclass(frozen=True)
class SpecContext:
    """The names a section of a :class:`~twinloop.trials.spec.TrialSpec` may use.

    ``covariates`` are the population's covariate columns (``group`` included),
    ``baselines`` the trial's named baseline measures, ``endpoints`` each endpoint's kind,
    ``arms`` the arm names in spec order with ``control_arm`` among them, ``protocols`` each
    observation protocol's name with its observable, and ``base_dir``
    the folder that relative paths in the spec (populations) are resolved against.
    """

    model_id: str
    arms: tuple[str, ...]
    control_arm: str
    covariates: tuple[str, ...]
    baselines: tuple[str, ...]
    endpoints: dict[str, EndpointKind]
    protocols: dict[str, str] = field(default_factory=dict)
    base_dir: Path | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The participant columns an analysis may adjust for: covariates and baseline measures."""
        return (*self.covariates, *self.baselines)
