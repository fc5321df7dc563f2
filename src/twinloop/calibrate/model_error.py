"""Model error estimated jointly with the parameters of a sparse record.

A patient is rarely an exact draw of the model that calibrates it. Each observable
gets a discrepancy added to its declared sensor noise: independent Gaussian, with an
sd ``tau`` times the sensor's sd at the same value, so the likelihood's sd becomes::

    sd = sensor_sd(mu) * sqrt(1 + tau^2)      tau ~ HalfNormal(scale)

The multiplier ``s = sqrt(1 + tau^2)`` is the model-error scale of the dense path
(:mod:`twinloop.twin.identify`): never below 1 (the sensor is not better than
declared), and 1 when the model is exact. A handful of scans carries little
information on ``tau``, so its prior (default ``scale`` 0.5: a model error below the
sensor noise, ``E[s^2] = 1.25``) only widens intervals modestly when the data agree
with the model, while residuals larger than the sensor noise pull ``s`` up. Its light
tail (``P(s > 2) = 0.05 %``) is deliberate: with as many scans as parameters, a
heavy-tailed prior (log-normal ``tau`` was tried) lets a flat curve with a large error
explain what a good fit explains with a small one. The price: ``s`` is held below about
1.5 however large the residuals; a twin whose record its intervals then miss says so
(:mod:`twinloop.twin.consistency`) instead of absorbing it.

NUTS samples ``u ~ N(0, 1)`` with ``tau = scale * |u|``: ``s^2 = 1 + scale^2 u^2`` is
smooth in ``u``, so no constrained site and no transform are needed. The twin widens
its noise by ``sqrt(E[s^2])`` over the posterior: the Gaussian with the predictive's
variance, which at the 90 % level is slightly wider than the scale mixture it replaces.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_SCALE = 0.5


def error_ratio(u: Any, scale: float) -> Any:
    """``s = sqrt(1 + (scale * u)^2)`` (NumPy or JAX) from the standard-normal latent ``u``."""
    return (1.0 + (scale * u) ** 2) ** 0.5


def summarize(samples: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per observable: ``scale`` (``sqrt(E[s^2])``, what a twin adopts), median, q05 and q95
    of ``s`` over ``samples`` ``(..., len(names))``."""
    flat = np.asarray(samples).reshape(-1, len(names))
    out = {}
    for i, name in enumerate(names):
        s = flat[:, i]
        q05, q50, q95 = np.quantile(s, [0.05, 0.5, 0.95])
        out[name] = {"scale": float(np.sqrt(np.mean(s**2))), "median": float(q50), "q05": float(q05), "q95": float(q95)}
    return out
