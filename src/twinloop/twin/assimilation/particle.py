"""A bootstrap particle filter with persistent weights, resampling on a degenerate effective
sample size and a regularized (Gaussian-kernel) jitter after resampling.

The semantics mirror DAPPER's ``PartFilt`` (``dapper/da_methods/particle.py``), against
which it is tested on Lorenz-63:

- the weights live on the ensemble (:attr:`Ensemble.weights`) and are multiplied by each
  update's likelihood (sequential importance sampling);
- the ensemble is resampled (systematically) only when the effective sample size
  ``1/sum(w**2)`` falls to ``resample_below * N`` or less (DAPPER's ``NER``);
- after resampling, the duplicated members are jittered by a Gaussian kernel whose
  covariance is ``(reg * N**(-1/(d+4)))**2`` times the weighted covariance of the augmented
  ensemble before resampling (states and parameters, ``d`` of them): the regularized
  particle filter of Musso, Oudjane and Le Gland (2001). ``N**(-1/(d+4))`` is the
  rule-of-thumb bandwidth DAPPER's ``auto_bandw`` uses; Musso et al.'s optimal Gaussian
  bandwidth is ``(4/(d+2))**(1/(d+4))`` times it (0.92 to 1.06 for any ``d``), so the
  default ``reg=1`` is within a few percent of optimal, and ``reg`` means what DAPPER's does;
- optionally the parameters instead follow Liu and West's (2001) kernel shrinkage
  ``a theta + (1 - a) mean + N(0, (1 - a**2) cov)``, which keeps their spread.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from twinloop.errors import InputError
from twinloop.twin.assimilation.base import (
    AbstractAssimilator,
    augmented,
    check_update,
    split,
    systematic_resample,
)
from twinloop.twin.ensemble import Ensemble

__all__ = ["ParticleFilter", "systematic_resample"]


def _weighted_root(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``C12`` ``(N, d)`` with ``C12' C12`` the unbiased weighted covariance of ``x`` (DAPPER's
    ``raw_C12``); degenerate weights fall back to the unweighted covariance."""
    if 1.0 - w.max() < 1e-10:
        w = np.full(w.size, 1.0 / w.size)
    anomalies = x - w @ x
    unbias = 1.0 / (1.0 - np.sum(w**2))
    return np.sqrt(unbias * w)[:, None] * anomalies


def _gaussian(root: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` draws from ``N(0, root' root)``, through the ``min(N, d)``-row factor of
    ``root`` when that is smaller (DAPPER's ``sample_quickly_with`` and ``chol_reduce``, whose
    draws these are for the same seed)."""
    n, d = root.shape
    if n <= 2 * d:
        return rng.standard_normal((count, n)) @ root
    _, sig, vt = np.linalg.svd(root, full_matrices=False)
    vt = np.sign(vt[:, [0]]) * vt
    return rng.standard_normal((count, sig.size)) @ (sig[:, None] * vt)


def _duplicated(idx: np.ndarray) -> np.ndarray:
    """Which of the sorted resampled indices ``idx`` occur more than once."""
    return (idx == np.roll(idx, 1)) | (idx == np.roll(idx, -1)) if idx.size > 1 else np.zeros(idx.size, bool)


class ParticleFilter(AbstractAssimilator):
    """Sequential importance resampling with regularization.

    Arguments:
        resample_below: resample when the effective sample size is at most this fraction
            of ``N`` (DAPPER's ``NER``; 1 resamples at every update).
        reg: the jitter's bandwidth in units of ``N**(-1/(d+4))`` (DAPPER's ``reg``; 0 for none).
        jitter_all: jitter every member after resampling, not only the duplicated ones
            (DAPPER's ``nuj=False``).
        shrinkage: Liu–West shrinkage ``a`` in (0, 1) for the parameters (``None``: the
            parameters are regularized with the states).

    After :meth:`update`, ``last_ess`` is the effective sample size of the updated weights
    and ``last_resampled`` whether they were resampled.

    Example:
        >>> pf = ParticleFilter(resample_below=0.3, reg=2.4)  # DAPPER's PartFilt for Lorenz-63, N = 100
    """

    name = "pf"

    def __init__(
        self,
        resample_below: float = 0.5,
        reg: float = 1.0,
        *,
        jitter_all: bool = False,
        shrinkage: float | None = None,
    ) -> None:
        if not 0.0 <= resample_below <= 1.0:
            raise InputError(f"resample_below must be a fraction in [0, 1] of the ensemble; got {resample_below!r}.")
        if not (np.isfinite(reg) and reg >= 0):
            raise InputError(f"reg (the jitter bandwidth factor) must be >= 0; got {reg!r}.")
        if shrinkage is not None and not 0.0 < shrinkage < 1.0:
            raise InputError(f"shrinkage must be in (0, 1) (Liu–West's a, e.g. 0.98) or None; got {shrinkage!r}.")
        self.resample_below = resample_below
        self.reg = reg
        self.jitter_all = jitter_all
        self.shrinkage = shrinkage
        self.last_ess = float("nan")
        self.last_resampled = False

    def update(
        self,
        ens: Ensemble,
        predicted: np.ndarray,
        y: np.ndarray,
        r: np.ndarray,
        nonnegative: np.ndarray,
        rng: np.random.Generator,
    ) -> Ensemble:
        """The weighted, or resampled and jittered, ensemble (``nonnegative`` states clipped,
        counted in ``last_clipped``).

        Raises:
            InputError: shapes that do not fit, or no member with a finite likelihood.
        """
        check_update(ens, predicted, y, r)
        n = ens.size
        loglik = -0.5 * np.sum((np.asarray(y) - predicted) ** 2 / np.asarray(r), axis=1)
        with np.errstate(divide="ignore"):
            logw = np.log(ens.normalized_weights()) + np.where(np.isfinite(loglik), loglik, -np.inf)
        if not np.isfinite(logw).any():
            raise InputError(
                f"Every one of the {n} particles has zero likelihood (non-finite predictions, or weights already 0); "
                "check the observations' units and noise variances."
            )
        w = np.exp(logw - logsumexp(logw))
        self.last_ess = float(1.0 / np.sum(w**2))
        self.last_resampled = self.last_ess <= self.resample_below * n
        x = augmented(ens)
        self.last_index = None
        if not self.last_resampled:
            kept, self.last_clipped = split(ens, x, nonnegative, w)
            return kept
        root = _weighted_root(x, w)
        idx = systematic_resample(w, rng)
        self.last_index = idx
        out = x[idx]
        d = x.shape[1]
        jitter = np.ones(n, bool) if self.jitter_all else _duplicated(idx)
        if self.reg > 0 and jitter.any():
            bandwidth = self.reg * n ** (-1.0 / (d + 4))
            out[jitter] += _gaussian(bandwidth * root, int(jitter.sum()), rng)
        if self.shrinkage is not None and ens.theta.shape[1]:
            s, a = ens.states.shape[1], self.shrinkage
            theta = x[idx, s:]
            kick = _gaussian(np.sqrt(1.0 - a**2) * root[:, s:], n, rng)
            out[:, s:] = a * theta + (1.0 - a) * (w @ x[:, s:]) + kick
        resampled, self.last_clipped = split(ens, out, nonnegative)
        return resampled
