"""Linear and logistic regression of an endpoint on arm dummies and covariates, over replicates.

Each function takes one design per replicate (``Design``: outcome ``y`` and matrix ``x`` whose
first column is the intercept and the next ``k`` columns the arm dummies) and returns an
:class:`Effects` of the ``k`` arm coefficients: estimate, confidence interval and two-sided
p-value per replicate.

:func:`ols` solves every replicate at once (batched QR in numpy, zero-padded to the largest
replicate: zero rows change neither ``X'X`` nor ``X'y``); ``tests/test_trials_analysis.py`` checks
it equals statsmodels' ``OLS`` (:func:`ols_reference`) to 1e-10 in estimate, standard error and
p-value. A replicate whose design is rank deficient is fitted by statsmodels (pseudo-inverse).
A replicate given as None (:func:`reduce`: an arm absent, too few complete cases) gives NaN.
:func:`logistic` is statsmodels' ``Logit`` (Newton) per replicate; a replicate with perfect
separation or without convergence gives NaN (no effect estimable, not a rejection).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

RANK_TOL = 1e-10


@dataclass(frozen=True)
class Design:
    """One replicate's complete cases: outcome ``y`` (n,) and design ``x`` (n, p)."""

    y: np.ndarray
    x: np.ndarray


@dataclass(frozen=True)
class Effects:
    """Per replicate (rows) and compared arm (columns): estimate, interval and p-value."""

    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray

    @classmethod
    def empty(cls, replicates: int, k: int) -> Effects:
        nan = np.full((replicates, k), np.nan)
        return cls(nan.copy(), nan.copy(), nan.copy(), nan.copy())

    @classmethod
    def wald(cls, coef: np.ndarray, se: np.ndarray, alpha: float, *, df: np.ndarray | None = None) -> Effects:
        """Wald intervals and p-values (t with ``df`` per replicate, else normal) on the coefficient scale."""
        from scipy import stats

        z = coef / se
        if df is None:
            p = 2 * stats.norm.sf(np.abs(z))
            q = np.full_like(coef, stats.norm.isf(alpha / 2))
        else:
            dfs = np.broadcast_to(np.asarray(df, float)[:, None], coef.shape)
            p = 2 * stats.t.sf(np.abs(z), dfs)
            q = stats.t.isf(alpha / 2, dfs)
        return cls(coef, coef - q * se, coef + q * se, p)

    def exp(self) -> Effects:
        """The same effects on the ratio scale (odds or hazard ratios)."""
        return Effects(np.exp(self.estimate), np.exp(self.ci_low), np.exp(self.ci_high), self.p_value)


def reduce(design: Design, k: int, first: int = 1) -> Design | None:
    """``design`` without constant covariate columns, or None when an arm is absent or too few rows remain.

    Columns ``first .. first + k - 1`` are the arm dummies (``first`` 1 after an intercept, 0 without);
    a covariate constant within the replicate (a single level present) cannot be adjusted for.
    """
    x = design.x
    spread = x.max(axis=0) - x.min(axis=0) if len(x) else np.zeros(x.shape[1])
    if len(x) == 0 or np.any(spread[first : first + k] == 0):
        return None
    keep = np.ones(x.shape[1], bool)
    keep[first + k :] = spread[first + k :] > 0
    x = x[:, keep]
    return Design(design.y, x) if len(design.y) > x.shape[1] else None


def ols(designs: list[Design | None], k: int, alpha: float) -> Effects:
    """OLS of every replicate at once; the ``k`` arm coefficients (columns 1..k) with t intervals."""
    coef = np.full((len(designs), k), np.nan)
    se = np.full((len(designs), k), np.nan)
    df = np.full(len(designs), np.nan)
    widths = {d.x.shape[1] for d in designs if d is not None}
    for p in sorted(widths):
        rows = [r for r, d in enumerate(designs) if d is not None and d.x.shape[1] == p]
        _ols_batch([designs[r] for r in rows], k, np.array(rows), coef, se, df)
    return Effects.wald(coef, se, alpha, df=df)


def _ols_batch(designs: list[Any], k: int, rows: np.ndarray, coef: np.ndarray, se: np.ndarray, df: np.ndarray) -> None:
    """Fill ``coef``, ``se`` and ``df`` at ``rows`` from designs of one width (batched QR)."""
    n = np.array([len(d.y) for d in designs])
    p = designs[0].x.shape[1]
    xs = np.zeros((len(designs), n.max(), p))
    ys = np.zeros((len(designs), n.max()))
    for i, design in enumerate(designs):
        xs[i, : n[i]] = design.x
        ys[i, : n[i]] = design.y
    q, upper = np.linalg.qr(xs)
    diag = np.abs(np.diagonal(upper, axis1=1, axis2=2))
    full = diag.min(axis=1) > RANK_TOL * np.maximum(diag.max(axis=1), 1.0)
    if full.any():
        qty = np.einsum("rnp,rn->rp", q[full], ys[full])
        beta = np.linalg.solve(upper[full], qty[..., None])[..., 0]
        resid = ys[full] - np.einsum("rnp,rp->rn", xs[full], beta)
        dof = (n[full] - p).astype(float)
        inv_r = np.linalg.inv(upper[full])
        cov_diag = (inv_r**2).sum(axis=2)  # the diagonal of R^-1 R^-T = (X'X)^-1
        coef[rows[full]] = beta[:, 1 : k + 1]
        se[rows[full]] = np.sqrt((resid**2).sum(axis=1)[:, None] / dof[:, None] * cov_diag[:, 1 : k + 1])
        df[rows[full]] = dof
    for i in np.flatnonzero(~full).tolist():
        coef[rows[i]], se[rows[i]], df[rows[i]] = _ols_one(designs[i], k)


def _ols_one(design: Design, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    import statsmodels.api as sm

    fit = sm.OLS(design.y, design.x).fit()
    return fit.params[1 : k + 1], fit.bse[1 : k + 1], float(fit.df_resid)


def ols_reference(designs: list[Design | None], k: int, alpha: float) -> Effects:
    """statsmodels' OLS replicate by replicate (the reference :func:`ols` is tested against)."""
    coef = np.full((len(designs), k), np.nan)
    se = np.full((len(designs), k), np.nan)
    df = np.full(len(designs), np.nan)
    for r, design in enumerate(designs):
        if design is not None:
            coef[r], se[r], df[r] = _ols_one(design, k)
    return Effects.wald(coef, se, alpha, df=df)


def logistic(designs: list[Design | None], k: int, alpha: float) -> Effects:
    """Logistic regression (statsmodels ``Logit``) per replicate; the arms' odds ratios, Wald intervals."""
    coef = np.full((len(designs), k), np.nan)
    se = np.full((len(designs), k), np.nan)
    for r, design in enumerate(designs):
        fitted = None if design is None else _logit_one(design)
        if fitted is not None:
            coef[r], se[r] = fitted[0][1 : k + 1], fitted[1][1 : k + 1]
    return Effects.wald(coef, se, alpha).exp()


def _logit_one(design: Design) -> tuple[np.ndarray, np.ndarray] | None:
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    y, x = design.y, design.x
    if len(y) <= x.shape[1] or y.min() == y.max():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            fit = sm.Logit(y, x).fit(disp=0, method="newton", maxiter=100)
        except (PerfectSeparationWarning, ConvergenceWarning, np.linalg.LinAlgError):
            return None
    if not fit.mle_retvals.get("converged", False) or not np.all(np.isfinite(fit.bse)):
        return None
    return np.asarray(fit.params), np.asarray(fit.bse)
