"""Sequential data assimilation: the shared contract and the innovation statistics.

An assimilator updates the augmented ensemble ``[states, fitted parameters]`` (the
parameters on their unconstrained scale; none for state-only assimilation) given the
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
from scipy import special

from twinloop.errors import InputError
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
        return float(special.chdtrc(self.m, self.nis)) if self.m else 1.0  # chi2.sf, without its overhead

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


def split(
    ens: Ensemble, aug: np.ndarray, nonnegative: np.ndarray, weights: np.ndarray | None = None
) -> tuple[Ensemble, int]:
    """The ensemble of the augmented members ``aug``, the states declared ``nonnegative``
    clipped at zero (only those), and how many state values were clipped."""
    s = ens.states.shape[1]
    mask = np.asarray(nonnegative, dtype=bool).reshape(-1)
    if mask.shape != (s,):
        raise InputError(f"nonnegative must flag each of the {s} states (shape ({s},)); got shape {mask.shape}.")
    below = mask & (aug[:, :s] < 0.0)
    states = np.where(below, 0.0, aug[:, :s])
    return Ensemble(aug[:, s:], states, ens.time, weights), int(below.sum())


def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic (stochastic universal) resampling: ``N`` sorted member indices, member ``i``
    drawn ``floor(N w_i)`` or ``ceil(N w_i)`` times (Kitagawa 1996)."""
    n = weights.size
    positions = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(weights), positions), n - 1)


def unweighted(
    ens: Ensemble, predicted: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The augmented members and their predictions as an equally weighted sample: as they are,
    or, for a particle filter's weighted ensemble handed to a Kalman filter, a systematic
    resample of both; and the resampled indices (None when kept as they are)."""
    x, w = augmented(ens), ens.weights
    if w is None or np.allclose(w, 1.0 / ens.size, rtol=1e-9, atol=0.0):
        return x, predicted, None
    idx = systematic_resample(w, rng)
    return x[idx], predicted[idx], idx


def check_update(ens: Ensemble, predicted: np.ndarray, y: np.ndarray, r: np.ndarray) -> None:
    """Raise on shapes that do not fit together or noise variances that are not positive."""
    n, m = ens.size, np.size(y)
    if predicted.shape != (n, m):
        raise InputError(
            f"predicted must be (members, observations) = ({n}, {m}); got {predicted.shape}. Pass one column "
            "per observed value, one row per ensemble member."
        )
    if np.shape(r) != (m,) or not np.all(np.asarray(r) > 0):
        raise InputError(
            f"r must hold {m} positive observation-noise variances, one per observed value; got {np.asarray(r)!r}."
        )


class AbstractAssimilator(abc.ABC):
    """Updates an ensemble from one window's observations.

    After an update, ``last_clipped`` counts the state values (members x states) that the
    analysis put below zero in states declared non-negative, and that were clipped to zero;
    ``last_index`` says which forecast member each analysis member descends from (``None``:
    member ``i`` from member ``i``; resampling filters set it).

    Settings go to the constructor (each with a default, so ``assimilator(name)`` works);
    per-update extras such as localization distances are keyword-only arguments of
    ``update`` with defaults, so the positional call the twin makes stays valid."""

    name: str
    last_clipped: int = 0  # state values clipped at zero by the last update (declared non-negative states only)
    last_index: np.ndarray | None = None  # the forecast member of each analysis member (None: the same)

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
