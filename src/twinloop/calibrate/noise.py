"""Observation noise: the likelihood of measurements given the model's prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from twinloop.errors import InputError


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


# Noise of the built-in observables when the user declares none (sensor or assay scale).
DEFAULT_NOISE = {
    # CGM: readings below 40 or above 400 mg/dL are shown as the limit ("LOW" / "HIGH")
    "subcutaneous_glucose": NoiseModel(additive=8.0, proportional=0.05, lower=40.0, upper=400.0),
    "plasma_glucose": NoiseModel(additive=5.0, proportional=0.05),
    "sum_of_diameters": NoiseModel(additive=1.0, proportional=0.1),
    "tumour_weight": NoiseModel(additive=0.01, proportional=0.1),
    "concentration": NoiseModel(additive=0.01, proportional=0.1),
}


def kalman_readings(
    models: list[NoiseModel], y: np.ndarray, predicted_mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which readings a Kalman update uses, and their values. A reading inside its
    instrument's range is used as it is; a censored one only when the forecast lies on
    the wrong side of its limit (it then pulls the forecast to the limit); a censored
    reading the forecast already agrees with carries no information a Gaussian update
    can use, and is left out."""
    side = np.array([m.censoring(v) for m, v in zip(models, y, strict=True)])
    at_limit = np.array([m.read(v) for m, v in zip(models, y, strict=True)], dtype=float)
    disagrees = np.where(side < 0, predicted_mean > at_limit, predicted_mean < at_limit)
    return (side == 0) | disagrees, at_limit


def noise_for(observable: str, declared: dict[str, NoiseModel] | None = None) -> NoiseModel:
    if declared and observable in declared:
        return declared[observable]
    return DEFAULT_NOISE.get(observable, NoiseModel())
