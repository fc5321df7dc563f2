"""Virtual-population selection (Allen, Rieger & Musante 2016).

From a cohort of plausible patients, keep each with probability
``min(1, s * p_target(x) / p_plausible(x))`` where ``x`` is an observable of the patient
(one or several columns), the densities are kernel estimates and the scale ``s`` is
chosen to maximise the goodness of fit of the selected cohort to the target (the
Kolmogorov-Smirnov p-value, averaged over columns). The selected virtual population
then reproduces the target distribution, e.g. observed baseline tumour sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import gaussian_kde, ks_2samp

from twinloop.errors import InputError


@dataclass(frozen=True)
class Selection:
    """The outcome of a selection: which plausible patients were kept and how well
    their distribution fits the target."""

    selected: np.ndarray  # indices into the plausible cohort
    scale: float
    ks_statistic: float
    ks_pvalue: float
    ks_statistic_before: float

    @property
    def n(self) -> int:
        return int(self.selected.size)

    def summary(self) -> dict[str, float]:
        return {
            "selected": self.n,
            "scale": self.scale,
            "ks_statistic": self.ks_statistic,
            "ks_pvalue": self.ks_pvalue,
            "ks_statistic_before": self.ks_statistic_before,
        }


def select_vpop(plausible: np.ndarray, target: np.ndarray, *, seed: int = 0, log: bool = False) -> Selection:
    """Select a virtual population whose ``plausible`` values match the ``target`` sample.

    Arguments:
        plausible: ``(n,)`` or ``(n, k)`` values of the plausible patients.
        target: ``(m,)`` or ``(m, k)`` observed values to match.
        log: estimate densities on the log scale (for positive, skewed quantities).
    """
    x = np.asarray(plausible, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    x2, y2 = x.reshape(len(x), -1), y.reshape(len(y), -1)
    if x2.shape[1] != y2.shape[1]:
        raise InputError(f"plausible has {x2.shape[1]} columns and target {y2.shape[1]}; they must match.")
    if len(x2) < 10 or len(y2) < 10:
        raise InputError("Selection needs at least 10 plausible patients and 10 target values.")
    if log:
        if np.any(x2 <= 0) or np.any(y2 <= 0):
            raise InputError("log=True needs positive values.")
        x2, y2 = np.log(x2), np.log(y2)
    ratio = gaussian_kde(y2.T)(x2.T) / np.maximum(gaussian_kde(x2.T)(x2.T), 1e-300)
    rng = np.random.default_rng(seed)
    draws = rng.uniform(size=len(x2))

    def fit(scale: float) -> tuple[np.ndarray, float, float]:
        keep = np.flatnonzero(draws < np.minimum(1.0, scale * ratio))
        if keep.size < 10:
            return keep, 1.0, 0.0
        tests = [ks_2samp(x2[keep, j], y2[:, j]) for j in range(x2.shape[1])]
        return keep, float(np.max([t.statistic for t in tests])), float(np.mean([t.pvalue for t in tests]))

    best_scale = 1.0 / ratio.max()
    candidates = best_scale * np.logspace(0, 3, 40)
    results = [(s, *fit(s)) for s in candidates]
    scale, keep, stat, pvalue = max(results, key=lambda r: (r[3], len(r[1])))
    before = max(ks_2samp(x2[:, j], y2[:, j]).statistic for j in range(x2.shape[1]))
    return Selection(keep, float(scale), stat, pvalue, float(before))
