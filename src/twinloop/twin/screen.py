"""Members of a Laplace posterior screened on the record they were identified from.

A Laplace approximation is exact for a linear-Gaussian model; a physiological model has
regions where it is not (a glucose that reaches zero and stays there, a bifurcation),
and there members drawn from ``N(theta_map, cov)`` can contradict the data the MAP fits.
Each member is run over the record, and its posterior is compared with the MAP's. Under
the Laplace approximation, ``D = 2 (log p(theta_map | y) - log p(theta | y))`` of a
member is chi-square with ``k`` degrees of freedom. Here the data's likelihood is
tempered by the same AR(1) factor that widened the covariance. A member with
``P(chi2_k > D) < REJECT_TAIL`` contradicts the record. It is replaced by a copy of a
member that does not.

Why not importance resampling by ``p / q`` (Rubin 1988)? On a well-identified 14-parameter
T1D twin the weights are so uneven (effective sample size 8 of 200 on simglucose's
adult#004) that resampling leaves a few dozen distinct members, and the intervals
collapse. The screen keeps the Gaussian's spread where the Gaussian holds, and removes
only the members it mispredicts grossly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2

from twinloop.twin.identify import Identification, censored_residuals

REJECT_TAIL = 1e-6


def _mahalanobis(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = np.atleast_2d(x) - mean
    return np.einsum("ni,ni->n", d, np.linalg.solve(cov, d.T).T)


def discrepancy(found: Identification, theta: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``(N,)`` ``D`` of members ``theta`` whose predictions of the identified readings are
    ``predicted`` ``(N, n_obs)`` (inf where a solve failed)."""
    if found.readings is None or found.side is None or found.sd is None:
        raise ValueError("This identification kept no readings to screen members on.")
    residuals = np.asarray(censored_residuals(found.readings, predicted, 1.0 / found.sd, found.side))
    data = np.where(np.all(np.isfinite(predicted), axis=1), np.sum(residuals**2, axis=1), np.inf)
    prior = _mahalanobis(theta, found.prior.mean, found.prior.cov)
    prior_map = float(_mahalanobis(found.theta_map, found.prior.mean, found.prior.cov)[0])
    tempered_map = (found.cost - prior_map) / found.variance_inflation + prior_map
    return data / found.variance_inflation + prior - tempered_map


def screen_members(
    found: Identification, theta: np.ndarray, predicted: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """The member indices to keep: each member that contradicts the record is replaced by
    a uniformly chosen one that does not. Returns them and a report."""
    d = discrepancy(found, theta, predicted)
    limit = float(chi2.isf(REJECT_TAIL, theta.shape[1]))
    consistent = d <= limit
    n = theta.shape[0]
    report: dict[str, Any] = {"rejected": int(n - consistent.sum()), "limit": limit, "median_d": float(np.median(d))}
    index = np.arange(n)
    if not consistent.any():
        return index, {**report, "none_consistent": True}
    if consistent.all():
        return index, report
    index[~consistent] = rng.choice(np.flatnonzero(consistent), size=int((~consistent).sum()))
    return index, report
