"""Importance correction of a Laplace posterior: members drawn from ``N(theta_map, cov)``
are weighted by the posterior they actually reach on the record and resampled when the
Gaussian was a poor guide.

A Laplace approximation is exact for a linear-Gaussian model; a physiological model has
regions where it is not (a glucose that reaches zero and stays there, a bifurcation),
and there members drawn from the Gaussian can contradict the data the MAP fits. Each
member's weight is its posterior over its proposal density (sampling-importance-
resampling, Rubin 1988), with the data's likelihood tempered by the same AR(1) factor
that widened the Laplace covariance, so the weights are uniform where the Gaussian is
right. The weights are truncated at ``mean * sqrt(N)`` (Ionides 2008). When their
effective sample size falls below half the members, the members are resampled by them;
otherwise they are kept as drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twinloop.twin.assimilation import systematic_resample
from twinloop.twin.identify import Identification, censored_residuals

RESAMPLE_BELOW = 0.5  # effective sample size, as a share of the members


def _mahalanobis(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = x - mean
    return np.einsum("ni,ni->n", d, np.linalg.solve(cov, d.T).T)


def log_weights(found: Identification, theta: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``(N,)`` log importance weights of members ``theta`` whose predictions of the
    identified readings are ``predicted`` ``(N, n_obs)`` (-inf where a solve failed)."""
    if found.readings is None or found.side is None or found.sd is None:
        raise ValueError("This identification kept no readings to weight members by.")
    residuals = np.asarray(censored_residuals(found.readings, predicted, 1.0 / found.sd, found.side))
    data = np.where(np.all(np.isfinite(predicted), axis=1), np.sum(residuals**2, axis=1), np.inf)
    target = -0.5 * (data / found.variance_inflation + _mahalanobis(theta, found.prior.mean, found.prior.cov))
    proposal = -0.5 * _mahalanobis(theta, found.theta_map, found.cov)
    return target - proposal


def importance_resample(
    found: Identification, theta: np.ndarray, predicted: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """The member indices to keep (all of them, or a resample by weight) and a report:
    the effective sample size and whether the members were resampled."""
    logw = log_weights(found, theta, predicted)
    n = theta.shape[0]
    if not np.isfinite(logw).any():
        return np.arange(n), {"ess": 0.0, "resampled": False, "note": "no member could be weighted"}
    w = np.exp(logw - np.max(logw[np.isfinite(logw)]))
    w = np.where(np.isfinite(w), w, 0.0)
    w = np.minimum(w, w.mean() * np.sqrt(n))
    w = w / w.sum()
    ess = float(1.0 / np.sum(w**2))
    if ess >= RESAMPLE_BELOW * n:
        return np.arange(n), {"ess": ess, "resampled": False}
    index = np.sort(systematic_resample(w, rng))
    return index, {"ess": ess, "resampled": True, "unique": int(np.unique(index).size)}
