"""Sequential data assimilation: the shared contract and the innovation statistics.

An assimilator updates the augmented ensemble ``[states, log-parameters]`` given the
ensemble's predicted observations ``(N, m)`` of a sync window, the observed values
``(m,)`` and their noise variances. Observations of one window are assimilated
together against the trajectories that produced them (an asynchronous ensemble
update), so one sync is one batched solve.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from twinloop.twin.ensemble import Ensemble


@dataclass(frozen=True)
class Innovation:
    """Innovation statistics of one update: normalized innovation squared (NIS) and
    its chi-square reference with ``m`` degrees of freedom."""

    m: int
    nis: float
    mean_innovation: float
    rmse: float
    spread: float

    @property
    def p_value(self) -> float:
        return float(stats.chi2.sf(self.nis, self.m)) if self.m else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "m": self.m,
            "nis": self.nis,
            "p_value": self.p_value,
            "mean_innovation": self.mean_innovation,
            "rmse": self.rmse,
            "spread": self.spread,
        }


def innovation(predicted: np.ndarray, y: np.ndarray, r: np.ndarray) -> Innovation:
    mean = predicted.mean(axis=0)
    d = y - mean
    anomalies = predicted - mean
    cov = anomalies.T @ anomalies / max(predicted.shape[0] - 1, 1) + np.diag(r)
    nis = float(d @ np.linalg.solve(cov, d))
    return Innovation(
        int(y.size), nis, float(d.mean()), float(np.sqrt(np.mean(d**2))), float(np.sqrt(np.mean(np.diag(cov))))
    )


def augmented(ens: Ensemble) -> np.ndarray:
    return np.concatenate([ens.states, ens.theta], axis=1)


def split(ens: Ensemble, aug: np.ndarray, nonnegative: np.ndarray) -> Ensemble:
    s = ens.states.shape[1]
    states = np.where(nonnegative, np.maximum(aug[:, :s], 0.0), aug[:, :s])
    return Ensemble(aug[:, s:], states, ens.time)


class AbstractAssimilator(abc.ABC):
    """Updates an ensemble from one window's observations."""

    name: str

    @abc.abstractmethod
    def update(
        self,
        ens: Ensemble,
        predicted: np.ndarray,
        y: np.ndarray,
        r: np.ndarray,
        nonnegative: np.ndarray,
        rng: np.random.Generator,
    ) -> Ensemble:
        """The analysis ensemble."""
