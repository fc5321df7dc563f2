"""Observation noise: the likelihood of measurements given the model's prediction.

:class:`NoiseModel` and :func:`noise_for` live in :mod:`twinloop.models.noise` (an
observable declares its noise with the model); they are re-exported here."""

from __future__ import annotations

import numpy as np

from twinloop.models.noise import NoiseModel as NoiseModel
from twinloop.models.noise import noise_for as noise_for


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
