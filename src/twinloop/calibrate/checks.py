"""Checks that an amortized posterior can be trusted.

- **Simulation-based calibration** (Talts et al. 2018): for parameters drawn from the
  prior and data simulated from them, the rank of each true value among posterior
  draws is uniform when the posterior is calibrated. Reported per parameter as a
  Kolmogorov-Smirnov p-value of the (randomized) normalized ranks against U(0, 1),
  with the rank histogram.
- **Classifier two-sample test** (C2ST; Lopez-Paz & Oquab 2017): the cross-validated
  accuracy of a classifier told to separate draws of two posteriors (the amortized
  one and NUTS). 0.5 means indistinguishable, 1.0 entirely different.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from twinloop.errors import InputError


@dataclass(frozen=True)
class SBCResult:
    """Ranks ``(n_simulations, dim)`` of the true values among ``n_draws`` posterior draws."""

    names: tuple[str, ...]
    ranks: np.ndarray
    n_draws: int
    ks_pvalues: dict[str, float]

    def histogram(self, bins: int = 20) -> dict[str, np.ndarray]:
        """Counts of the ranks in ``bins`` equal bins, per parameter."""
        edges = np.linspace(0, self.n_draws + 1, bins + 1)
        return {n: np.histogram(self.ranks[:, j], edges)[0] for j, n in enumerate(self.names)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_simulations": int(self.ranks.shape[0]),
            "n_draws": self.n_draws,
            "ks_pvalues": self.ks_pvalues,
            "histogram": {k: v.tolist() for k, v in self.histogram().items()},
            "names": list(self.names),
            "ranks": self.ranks.tolist(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SBCResult:
        """The result written by :meth:`to_dict`."""
        return cls(tuple(raw["names"]), np.asarray(raw["ranks"], dtype=int), int(raw["n_draws"]), raw["ks_pvalues"])


def sbc(npe: Any, n_simulations: int = 200, n_draws: int = 100, *, seed: int = 1) -> SBCResult:
    """Simulation-based calibration of a trained :class:`AmortizedPosterior` on fresh simulations."""
    if n_simulations < 20 or n_draws < 10:
        raise InputError(f"sbc needs n_simulations >= 20 and n_draws >= 10; got {n_simulations}, {n_draws}.")
    data = npe.simulate(n_simulations, seed=seed)
    draws = npe.sample_z_batch(jax.random.key(seed), n_draws, data.times, data.values, data.mask.astype(float))
    # compare in log-parameter space (the flow's z is a linear map of it; ranks of each coordinate)
    log_draws = npe.prior.mean + draws @ npe.prior.chol.T
    ranks = np.sum(log_draws < data.log_theta[:, None, :], axis=1)
    rng = np.random.default_rng(seed)
    normalized = (ranks + rng.random(ranks.shape)) / (n_draws + 1)
    pvalues = {n: float(stats.kstest(normalized[:, j], "uniform").pvalue) for j, n in enumerate(npe.prior.names)}
    return SBCResult(tuple(npe.prior.names), ranks, n_draws, pvalues)


def c2st(a: np.ndarray, b: np.ndarray, *, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated accuracy of an MLP separating samples ``a`` from ``b`` (both ``(n, dim)``)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2 * folds:
        raise InputError(
            f"c2st needs two samples with the same dimension and >= {2 * folds} rows each; got {a.shape} and {b.shape}."
        )
    n = min(len(a), len(b))
    x = np.concatenate([a[:n], b[:n]])
    y = np.r_[np.zeros(n), np.ones(n)]
    width = 10 * a.shape[1]
    clf = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(width, width), max_iter=1000, solver="adam", random_state=seed),
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(np.mean(cross_val_score(clf, x, y, cv=cv, scoring="accuracy")))
