"""Observation noise: the likelihood of measurements given the model's prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from twinloop.errors import InputError


@dataclass(frozen=True)
class NoiseModel:
    """``y = mu + e``, ``e ~ N(0, additive^2 + (proportional * mu)^2)`` (units of the observable)."""

    additive: float = 0.0
    proportional: float = 0.1

    def __post_init__(self) -> None:
        if self.additive < 0 or self.proportional < 0 or self.additive + self.proportional <= 0:
            raise InputError(
                "Noise needs additive >= 0 and proportional >= 0, not both 0; "
                f"got {self.additive}, {self.proportional}."
            )

    def sd(self, mu: Any) -> Any:
        xp = jnp if not isinstance(mu, np.ndarray | float) else np
        return xp.sqrt(self.additive**2 + (self.proportional * mu) ** 2)

    def sample(self, mu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return mu + self.sd(np.asarray(mu, dtype=float)) * rng.standard_normal(np.shape(mu))

    def to_dict(self) -> dict[str, float]:
        return {"additive": self.additive, "proportional": self.proportional}


# Noise of the built-in observables when the user declares none (sensor or assay scale).
DEFAULT_NOISE = {
    "subcutaneous_glucose": NoiseModel(additive=8.0, proportional=0.05),
    "plasma_glucose": NoiseModel(additive=5.0, proportional=0.05),
    "sum_of_diameters": NoiseModel(additive=1.0, proportional=0.1),
    "tumour_weight": NoiseModel(additive=0.01, proportional=0.1),
    "concentration": NoiseModel(additive=0.01, proportional=0.1),
}


def noise_for(observable: str, declared: dict[str, NoiseModel] | None = None) -> NoiseModel:
    if declared and observable in declared:
        return declared[observable]
    return DEFAULT_NOISE.get(observable, NoiseModel())
