"""Ensemble Kalman filters: stochastic (perturbed observations) and ETKF (square root)."""

from __future__ import annotations

import numpy as np
from scipy import linalg

from twinloop.twin.assimilation.base import AbstractAssimilator, augmented, split
from twinloop.twin.ensemble import Ensemble


def _anomalies(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    return mean, x - mean


class StochasticEnKF(AbstractAssimilator):
    """Evensen's EnKF: each member assimilates observations perturbed by their noise."""

    name = "enkf"

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
        x = augmented(ens)
        _, xa = _anomalies(x)
        _, ya = _anomalies(predicted)
        cxy = xa.T @ ya / (n - 1)
        cyy = ya.T @ ya / (n - 1) + np.diag(r)
        gain = linalg.solve(cyy, cxy.T, assume_a="pos").T
        perturbed = y + rng.standard_normal(predicted.shape) * np.sqrt(r)
        return split(ens, x + (perturbed - predicted) @ gain.T, nonnegative)


class ETKF(AbstractAssimilator):
    """The ensemble transform Kalman filter (Bishop et al. 2001; Hunt et al. 2007):
    a deterministic square-root update in ensemble space."""

    name = "etkf"

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
        x = augmented(ens)
        xm, xa = _anomalies(x)
        ym, ya = _anomalies(predicted)
        c = ya / r  # (N, m) = Y^T R^-1 with Y the (m, N) anomalies
        pinv = (n - 1) * np.eye(n) + c @ ya.T
        evals, evecs = np.linalg.eigh(pinv)
        pa = (evecs / evals) @ evecs.T
        w_mean = pa @ c @ (y - ym)
        w = evecs @ np.diag(np.sqrt((n - 1) / evals)) @ evecs.T
        weights = w_mean[None, :] + w  # row i: member i's weights on the prior anomalies
        return split(ens, xm + weights @ xa, nonnegative)
