"""Ensemble Kalman filters: stochastic (perturbed observations) and ETKF (square root), with
multiplicative inflation (fixed or adaptive EnKF-N), random rotations and localization.

Both mirror DAPPER's ``EnKF`` (``upd_a="PertObs"`` and ``"Sqrt"``) and ``EnKF_N``, and are
tested against them on Lorenz-63 (``tests/test_assimilation.py``):

- fixed ``inflation`` multiplies the *analysis* anomalies after the update, then ``rotate``
  mixes them with a mean-preserving random rotation (DAPPER's ``post_process``);
- ``inflation="adaptive"`` multiplies the *prior* anomalies (states, parameters and
  predicted observations) by the EnKF-N estimate (Bocquet 2011; Bocquet et al. 2015)
  before the update. With the ETKF this is DAPPER's ``EnKF_N``; with the stochastic EnKF it
  is the same estimate used as a prior inflation for the perturbed-observation update;
- localization: given ``distances`` ``(d, m)`` from each augmented variable (states, then
  parameters) to each observation, the stochastic EnKF tapers the gain's cross-covariance
  (and, given ``obs_distances`` ``(m, m)``, the observations' covariance) by Gaspari–Cohn
  (Houtekamer and Mitchell 2001); the ETKF does a local analysis per variable with the
  observation precisions tapered, the LETKF of Hunt et al. (2007) with R-localization.
  A parameter that all observations inform gets distance 0 to each.
"""

from __future__ import annotations

import abc
from typing import Literal

import numpy as np
from scipy import linalg

from twinloop.errors import InputError
from twinloop.twin.assimilation.base import AbstractAssimilator, check_update, split, unweighted
from twinloop.twin.assimilation.inflation import enkf_n_inflation, post_process
from twinloop.twin.assimilation.localization import taper
from twinloop.twin.ensemble import Ensemble

Inflation = float | Literal["adaptive"]
TAPER_CUTOFF = 1e-3  # observations tapered below this leave a local analysis (as DAPPER)


class AbstractEnsembleKalmanFilter(AbstractAssimilator):
    """Settings shared by the ensemble Kalman filters.

    Arguments:
        inflation: a multiplicative factor (>= 1 usually; 1 is none) on the analysis anomalies,
            or ``"adaptive"`` for the finite-size EnKF-N estimate on the prior anomalies.
        rotate: mix the analysis anomalies by a mean-preserving random rotation.
        localization_half_width: Gaspari–Cohn half-width ``c`` (the taper vanishes beyond
            ``2c``); required to pass ``distances`` to :meth:`update`.
    """

    def __init__(
        self,
        inflation: Inflation = 1.0,
        *,
        rotate: bool = False,
        localization_half_width: float | None = None,
    ) -> None:
        if inflation != "adaptive" and not (
            isinstance(inflation, int | float) and np.isfinite(inflation) and inflation > 0
        ):
            raise InputError(
                f"inflation must be a positive factor (1.0 for none, e.g. 1.04) or 'adaptive'; got {inflation!r}."
            )
        if localization_half_width is not None and not localization_half_width > 0:
            raise InputError(
                f"localization_half_width must be positive (or None for no localization); "
                f"got {localization_half_width!r}."
            )
        self.inflation = inflation
        self.rotate = rotate
        self.localization_half_width = localization_half_width
        self.last_inflation = float("nan")

    @property
    def adaptive(self) -> bool:
        return self.inflation == "adaptive"

    def update(
        self,
        ens: Ensemble,
        predicted: np.ndarray,
        y: np.ndarray,
        r: np.ndarray,
        nonnegative: np.ndarray,
        rng: np.random.Generator,
        *,
        distances: np.ndarray | None = None,
        obs_distances: np.ndarray | None = None,
    ) -> Ensemble:
        """The analysis ensemble (equally weighted; ``nonnegative`` states clipped at zero,
        counted in ``last_clipped``).

        Arguments:
            ens: the forecast ensemble (members' states and fitted parameters).
            predicted: ``(N, m)`` each member's prediction of each observed value.
            y: ``(m,)`` the observed values.
            r: ``(m,)`` their noise variances.
            nonnegative: ``(S,)`` which states are clipped at zero after the update.
            rng: the random generator (perturbations, rotations, resampling of a weighted ensemble).
            distances: ``(d, m)`` distance from each augmented variable (states, then
                parameters) to each observation, for localization.
            obs_distances: ``(m, m)`` distances between the observations (stochastic EnKF only).

        Raises:
            InputError: shapes that do not fit, non-positive variances, or distances without
                a ``localization_half_width``.

        Example:
            >>> import numpy as np
            >>> from twinloop.twin import ETKF, Ensemble
            >>> rng = np.random.default_rng(0)
            >>> ens = Ensemble(np.zeros((20, 0)), rng.standard_normal((20, 1)), 0.0)
            >>> y, r, nonneg = np.array([1.0]), np.array([1.0]), np.array([False])
            >>> out = ETKF(inflation=1.02).update(ens, ens.states, y, r, nonneg, rng)
            >>> out.size
            20
        """
        check_update(ens, predicted, y, r)
        x, predicted, self.last_index = unweighted(ens, predicted, rng)
        r = np.asarray(r, dtype=np.float64)
        xa = self._analysis(x, predicted, np.asarray(y, dtype=np.float64), r, rng, distances, obs_distances)
        if not self.adaptive:
            xa = post_process(xa, float(self.inflation), self.rotate, rng)
            self.last_inflation = float(self.inflation)
        elif self.rotate:
            xa = post_process(xa, 1.0, True, rng)
        out, self.last_clipped = split(ens, xa, nonnegative)
        return out

    @abc.abstractmethod
    def _analysis(
        self,
        x: np.ndarray,
        predicted: np.ndarray,
        y: np.ndarray,
        r: np.ndarray,
        rng: np.random.Generator,
        distances: np.ndarray | None,
        obs_distances: np.ndarray | None,
    ) -> np.ndarray:
        """The augmented analysis members ``(N, d)``, before fixed inflation and rotation."""


class StochasticEnKF(AbstractEnsembleKalmanFilter):
    """Evensen's EnKF with perturbed observations (Burgers et al. 1998), the perturbations
    centred on zero and rescaled by ``sqrt(N/(N-1))`` to keep their variance, as DAPPER's
    ``EnKF("PertObs")`` does (``mean0``).

    Example:
        >>> f = StochasticEnKF(inflation=1.04)  # DAPPER's tuning for Lorenz-63, N = 10
    """

    name = "enkf"

    def _analysis(
        self,
        x: np.ndarray,
        predicted: np.ndarray,
        y: np.ndarray,
        r: np.ndarray,
        rng: np.random.Generator,
        distances: np.ndarray | None,
        obs_distances: np.ndarray | None,
    ) -> np.ndarray:
        n, m = predicted.shape
        xm, ym = x.mean(axis=0), predicted.mean(axis=0)
        xa, ya = x - xm, predicted - ym
        sd = np.sqrt(r)
        if self.adaptive:
            l1 = enkf_n_inflation(ya / sd, (y - ym) / sd)
            xa, ya = xa * l1, ya * l1
            self.last_inflation = l1
        cxy = xa.T @ ya / (n - 1)
        cyy = ya.T @ ya / (n - 1)
        if distances is not None:
            cxy = cxy * taper(distances, self.localization_half_width, cxy.shape, "distances")
        if obs_distances is not None:
            cyy = cyy * taper(obs_distances, self.localization_half_width, (m, m), "obs_distances")
        gain = linalg.solve(cyy + np.diag(r), cxy.T, assume_a="pos").T
        noise = rng.standard_normal((n, m)) * sd  # drawn as DAPPER draws them: same seed, same numbers
        noise = (noise - noise.mean(axis=0)) * np.sqrt(n / (n - 1))  # centred, variance kept at r
        return xm + xa + (y - noise - (ym + ya)) @ gain.T


class ETKF(AbstractEnsembleKalmanFilter):
    """The ensemble transform Kalman filter (Bishop et al. 2001; Hunt et al. 2007): a
    deterministic symmetric square-root update in ensemble space, exact in mean and
    covariance for a linear observation operator; with ``distances``, the local ETKF (LETKF).

    Example:
        >>> f = ETKF(inflation=1.02, rotate=True)  # DAPPER's tuning for Lorenz-63, N = 10
        >>> g = ETKF(inflation="adaptive", rotate=True)  # DAPPER's EnKF_N
    """

    name = "etkf"

    def _weights(self, ya: np.ndarray, d: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, float]:
        """The ``(N, N)`` transform ``W`` (analysis = mean + ``W @`` prior anomalies) and the
        prior inflation it includes."""
        n = ya.shape[0]
        sd = np.sqrt(r)
        ys, ds = ya / sd, d / sd
        l1 = enkf_n_inflation(ys, ds) if self.adaptive else 1.0
        ys = ys * l1
        evals, evecs = np.linalg.eigh(ys @ ys.T + (n - 1) * np.eye(n))
        w_mean = ((ds @ ys.T) @ evecs) / evals @ evecs.T
        transform = (evecs * np.sqrt((n - 1) / evals)) @ evecs.T
        return l1 * (w_mean[None, :] + transform), l1

    def _analysis(
        self,
        x: np.ndarray,
        predicted: np.ndarray,
        y: np.ndarray,
        r: np.ndarray,
        rng: np.random.Generator,
        distances: np.ndarray | None,
        obs_distances: np.ndarray | None,
    ) -> np.ndarray:
        if obs_distances is not None:
            raise InputError(
                "The ETKF localizes by local analyses (LETKF) and needs only `distances` (variables to "
                "observations); drop obs_distances, or use the stochastic EnKF to taper the observations' covariance."
            )
        xm, ym = x.mean(axis=0), predicted.mean(axis=0)
        xa, ya, d = x - xm, predicted - ym, y - ym
        if distances is None:
            weights, l1 = self._weights(ya, d, r)
            self.last_inflation = l1
            return xm + weights @ xa
        rho = taper(distances, self.localization_half_width, (x.shape[1], y.size), "distances")
        rows, which = np.unique(rho, axis=0, return_inverse=True)
        out = x.copy()
        factors = []
        for j, row in enumerate(rows):  # one local analysis per distinct taper row
            cols = np.flatnonzero(which.ravel() == j)
            used = row > TAPER_CUTOFF
            if not used.any():
                continue
            weights, l1 = self._weights(ya[:, used], d[used], r[used] / row[used])
            out[:, cols] = xm[cols] + weights @ xa[:, cols]
            factors.append(l1)
        self.last_inflation = float(np.mean(factors)) if factors else 1.0
        return out
