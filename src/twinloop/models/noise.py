"""Observation noise: how a measured value scatters around the model's prediction.

Each observable declares its noise beside its equations (``Observable.noise``); a user
may declare another (a twin's config, a product's protocol). An observable with
neither is refused by :func:`noise_for`: there is no silent default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop.models.base import Model


@dataclass(frozen=True)
class NoiseModel:
    """``y = mu + e``, ``e ~ N(0, additive^2 + (proportional * mu)^2)`` (units of the observable).

    ``lower`` and ``upper`` are the instrument's measurable range (a CGM reads 40-400
    mg/dL): a reading at or beyond a limit says only that the value lies at or beyond it,
    so it is *censored* there, and its likelihood is the Gaussian tail beyond the limit.
    """

    additive: float = 0.0
    proportional: float = 0.1
    lower: float | None = None
    upper: float | None = None

    def __post_init__(self) -> None:
        if self.additive < 0 or self.proportional < 0 or self.additive + self.proportional <= 0:
            raise InputError(
                "Noise needs additive >= 0 and proportional >= 0, not both 0; "
                f"got {self.additive}, {self.proportional}."
            )
        low, high = self.range
        if not low < high:
            raise InputError(f"Noise range needs lower < upper; got lower={self.lower}, upper={self.upper}.")

    @property
    def range(self) -> tuple[float, float]:
        """The measurable range, ``(-inf, inf)`` when none is declared."""
        low = -np.inf if self.lower is None else float(self.lower)
        return low, np.inf if self.upper is None else float(self.upper)

    def censoring(self, y: np.ndarray) -> np.ndarray:
        """Per reading: -1 at or below the lower limit, +1 at or above the upper, else 0."""
        low, high = self.range
        y = np.asarray(y, dtype=float)
        return np.where(y <= low, -1, np.where(y >= high, 1, 0)).astype(np.int8)

    def read(self, values: np.ndarray) -> np.ndarray:
        """What the instrument shows for ``values``: clipped to its range (NaN stays NaN)."""
        low, high = self.range
        return np.clip(values, low, high)

    def sd(self, mu: Any) -> Any:
        xp = jnp if not isinstance(mu, np.ndarray | float) else np
        return xp.sqrt(self.additive**2 + (self.proportional * mu) ** 2)

    def sample(self, mu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return mu + self.sd(np.asarray(mu, dtype=float)) * rng.standard_normal(np.shape(mu))

    def to_dict(self) -> dict[str, float]:
        limits = {k: float(v) for k, v in (("lower", self.lower), ("upper", self.upper)) if v is not None}
        return {"additive": self.additive, "proportional": self.proportional, **limits}

    def widened(self, factor: float) -> NoiseModel:
        """The same model with both noise terms times ``factor`` (the range unchanged)."""
        return NoiseModel(self.additive * factor, self.proportional * factor, self.lower, self.upper)


def noise_for(model: Model, observable: str, declared: Mapping[str, NoiseModel] | None = None) -> NoiseModel:
    """The noise of ``observable``: the ``declared`` one if given, else the model's.

    Raises:
        InputError: if ``observable`` is not an observable of ``model``, or neither
            declares its noise.
    """
    if declared and observable in declared:
        return declared[observable]
    found = next((o for o in model.observables if o.name == observable), None)
    if found is None:
        raise InputError(
            f"'{observable}' is not an observable of model '{model.id}'; expected one of "
            f"{list(model.observable_names)}."
        )
    if found.noise is None:
        raise InputError(
            f"Observable '{observable}' of model '{model.id}' declares no observation noise, and none was given. "
            "Declare it with the model (Observable(..., noise=NoiseModel(additive=..., proportional=...))) or give "
            f"it with the data, e.g. a twin's noise {{'{observable}': {{'additive': 1.0, 'proportional': 0.1}}}}."
        )
    return found.noise
