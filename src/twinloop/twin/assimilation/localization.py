"""Covariance localization: the Gaspari–Cohn taper and the checks on distances.

A small ensemble estimates spurious covariances between variables that have nothing to
do with each other; localization multiplies them (a Schur, elementwise, product) by a
taper that decays with the distance between the two. The taper is the compactly
supported fifth-order piecewise rational function of Gaspari and Cohn (1999, eq. 4.10),
a correlation function, so the tapered covariance stays positive semi-definite.
"""

from __future__ import annotations

import numpy as np

from twinloop.errors import InputError


def gaspari_cohn(distance: np.ndarray | float, half_width: float) -> np.ndarray:
    """The Gaspari–Cohn taper at ``distance`` for the half-width ``c`` (Gaspari and Cohn 1999,
    eq. 4.10): 1 at distance 0, 5/24 at ``c``, zero from ``2 c`` on.

    DAPPER's ``dist2coeff(d, radius, "GC")`` is ``gaspari_cohn(d, 1.82 * radius)`` (its
    radius is where the taper equals ``exp(-1/2)``).

    Arguments:
        distance: non-negative distances, any shape.
        half_width: ``c`` (same unit as the distances), positive.

    Returns:
        The taper, shaped like ``distance``.

    Raises:
        InputError: a negative or non-finite distance, or a half-width that is not positive.

    Example:
        >>> gaspari_cohn([0.0, 1.0, 2.0], 1.0).round(6).tolist()
        [1.0, 0.208333, 0.0]
    """
    if not (np.isfinite(half_width) and half_width > 0):
        raise InputError(f"The localization half-width must be a positive number; got {half_width!r}.")
    d = np.asarray(distance, dtype=np.float64)
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise InputError(
            "Localization distances must be finite and non-negative; got values from "
            f"{float(np.nanmin(d)) if d.size else 0.0:.3g} to {float(np.nanmax(d)) if d.size else 0.0:.3g}."
        )
    z = d / half_width
    out = np.zeros_like(z)
    near = z <= 1.0
    far = (z > 1.0) & (z < 2.0)
    a = z[near]
    out[near] = -0.25 * a**5 + 0.5 * a**4 + 0.625 * a**3 - 5.0 / 3.0 * a**2 + 1.0
    b = z[far]
    out[far] = b**5 / 12.0 - 0.5 * b**4 + 0.625 * b**3 + 5.0 / 3.0 * b**2 - 5.0 * b + 4.0 - 2.0 / (3.0 * b)
    return np.clip(out, 0.0, 1.0)


def taper(distances: np.ndarray, half_width: float | None, shape: tuple[int, int], name: str) -> np.ndarray:
    """The Gaspari–Cohn taper of ``distances`` after checking they are ``shape``; a half-width
    is required once distances are given."""
    d = np.asarray(distances, dtype=np.float64)
    if d.shape != shape:
        raise InputError(f"{name} must have shape {shape}; got {d.shape}.")
    if half_width is None:
        raise InputError(
            f"{name} were given but the assimilator has no localization half-width; construct it with "
            "localization_half_width=c (the Gaspari–Cohn taper is zero beyond 2c)."
        )
    return gaspari_cohn(d, half_width)
