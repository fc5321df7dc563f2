"""Keeping an ensemble's spread honest: multiplicative inflation (fixed, or adaptive by the
finite-size EnKF-N) and mean-preserving random rotations.

Fixed inflation and rotation act on the *analysis* anomalies after the update, the way
DAPPER's ``post_process`` does (``E = mean + infl * Rot @ anomalies``). The adaptive
scheme is the finite-size ensemble Kalman filter, EnKF-N (Bocquet 2011; Bocquet, Raanes
and Hannart 2015): the prior covariance is the ensemble's own, of unknown scale, under a
Jeffreys hyperprior; the mode of the scale given the innovation is one Newton solve of
the dual cost in a scalar, and the *prior* anomalies are multiplied by it before the
update. It needs no state between updates (a twin builds a fresh assimilator per sync),
and DAPPER has it as ``EnKF_N``, so it is checked against a peer.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize


def _hyperprior(s: np.ndarray, n: int, strength: float) -> tuple[float, float]:
    """EnKF-N's hyperprior coefficients ``(eN, cL)`` with the mode correction of Bocquet et al.
    (2015, eq. 36) as DAPPER's ``hyperprior_coeffs`` applies it (``g = 0``)."""
    n1 = n - 1
    e_n, c_l = (n + 1) / n, n / n1
    prior_mode = e_n / c_l
    diagonal = np.zeros(n)
    diagonal[: min(s.size, n)] = s[:n] ** 2
    i_kh = float(np.mean(1.0 / (diagonal + n1)) * n1)  # ~ 1 / (1 + HBH'/R): the prior's weight
    correction = float(np.sqrt(prior_mode**i_kh))
    return e_n / correction * strength, c_l * correction * strength


def enkf_n_inflation(scaled_anomalies: np.ndarray, scaled_innovation: np.ndarray, strength: float = 1.0) -> float:
    """The EnKF-N estimate of the prior inflation factor (a standard-deviation factor).

    Arguments:
        scaled_anomalies: ``(N, m)`` predicted-observation anomalies times ``R^-1/2``.
        scaled_innovation: ``(m,)`` observed minus mean prediction, times ``R^-1/2``.
        strength: DAPPER's ``xN``: 1 is the Jeffreys hyperprior (a fully chaotic model),
            larger trusts the ensemble's own spread more.

    Returns:
        ``l1 > 0``: multiply the prior state and observation anomalies by it.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.standard_normal((10, 3))
        >>> 0.5 < enkf_n_inflation(y - y.mean(0), np.zeros(3)) < 1.5
        True
    """
    n = scaled_anomalies.shape[0]
    n1 = n - 1
    _, s, vt = linalg.svd(scaled_anomalies, full_matrices=False)
    s2, du2 = s**2, (vt @ scaled_innovation) ** 2  # min(N, m) singular values and innovation components
    e_n, c_l = _hyperprior(s, n, strength)

    def jp(l1: float) -> float:  # derivative of the dual cost in l1
        return float(-2 * l1 * np.sum(s2 * du2 / (l1**2 * s2 + n1) ** 2) - 2 * e_n / l1**3 + 2 * c_l / l1)

    def jpp(l1: float) -> float:
        return float(8 * l1**2 * np.sum(s2**2 * du2 / (l1**2 * s2 + n1) ** 3) + 6 * e_n / l1**4 - 2 * c_l / l1**2)

    l1, step = 1.0, np.inf
    for _ in range(100):  # Newton from 1, as DAPPER's Newton_m (xtol 1e-4, ytol 1e-7)
        g = jp(l1)
        if abs(g) <= 1e-7 or abs(step) <= 1e-4:
            break
        h = jpp(l1)
        if not (np.isfinite(h) and h > 0):
            l1 = np.nan
            break
        step = g / h
        l1 -= step
        if not (np.isfinite(l1) and l1 > 0):
            break
    if np.isfinite(l1) and l1 > 0:
        return float(l1)

    def cost(l1: float) -> float:  # the dual cost itself, minimized directly if Newton fails
        return float(np.sum(du2 / (l1**2 * s2 + n1)) + e_n / l1**2 + c_l * np.log(l1**2))

    return float(optimize.minimize_scalar(cost, bounds=(1e-3, 1e3), method="bounded").x)


def mean_preserving_random_rotation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``(n, n)`` orthogonal matrix ``Q`` with ``Q @ 1 = 1`` (DAPPER's ``genOG_1``):
    ``Q @ anomalies`` keeps the ensemble's mean and covariance and mixes its members.

    ``Q = V diag(1, O) V'`` with ``V`` an orthonormal basis whose first vector is ``1/sqrt(n)``
    (the left singular vectors of a column of ones, as DAPPER) and ``O`` Haar-distributed on
    ``O(n-1)`` (QR of a Gaussian matrix, signs fixed; Mezzadri 2007).

    Example:
        >>> q = mean_preserving_random_rotation(5, np.random.default_rng(0))
        >>> bool(np.allclose(q @ np.ones(5), 1) and np.allclose(q @ q.T, np.eye(5)))
        True
    """
    v = linalg.svd(np.ones((n, 1)))[0]
    o, r = linalg.qr(rng.standard_normal((n - 1, n - 1)))
    o = o * np.sign(np.diag(r))
    return v @ linalg.block_diag(1.0, o) @ v.T


def post_process(x: np.ndarray, inflation: float, rotate: bool, rng: np.random.Generator) -> np.ndarray:
    """Inflate and rotate the analysis ensemble ``x`` ``(N, d)`` about its mean (DAPPER's
    ``post_process``): ``mean + inflation * Q @ anomalies``."""
    if inflation == 1.0 and not rotate:
        return x
    mean = x.mean(axis=0)
    anomalies = (x - mean) * inflation
    if rotate:
        anomalies = mean_preserving_random_rotation(x.shape[0], rng) @ anomalies
    return mean + anomalies
