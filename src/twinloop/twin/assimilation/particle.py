"""A bootstrap particle filter with systematic resampling and parameter jitter
(Liu and West kernel shrinkage, so jitter does not inflate the parameter spread)."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from twinloop.twin.assimilation.base import AbstractAssimilator
from twinloop.twin.ensemble import Ensemble


def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = weights.size
    positions = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(weights), positions), n - 1)


class ParticleFilter(AbstractAssimilator):
    """Weights by the Gaussian likelihood of the window, records the effective sample
    size, resamples systematically and jitters parameters with shrinkage ``a``."""

    name = "pf"

    def __init__(self, shrinkage: float = 0.98) -> None:
        self.shrinkage = shrinkage
        self.last_ess = float("nan")

    def update(
        self,
        ens: Ensemble,
        predicted: np.ndarray,
        y: np.ndarray,
        r: np.ndarray,
        nonnegative: np.ndarray,
        rng: np.random.Generator,
    ) -> Ensemble:
        n = ens.size
        loglik = -0.5 * np.sum((y - predicted) ** 2 / r, axis=1)
        loglik = np.where(np.isfinite(loglik), loglik, -np.inf)
        w = np.exp(loglik - logsumexp(loglik))
        self.last_ess = float(1.0 / np.sum(w**2))
        idx = systematic_resample(w, rng)  # every update ends equally weighted
        theta, states = ens.theta[idx], ens.states[idx]
        a = self.shrinkage
        mean = theta.mean(axis=0)
        cov = np.atleast_2d(np.cov(ens.theta, rowvar=False, aweights=w + 1e-300))
        h2 = 1.0 - a**2
        jitter = rng.multivariate_normal(np.zeros(theta.shape[1]), h2 * cov + 1e-12 * np.eye(theta.shape[1]), size=n)
        theta = a * theta + (1 - a) * mean + jitter
        return Ensemble(theta, states, ens.time)
