"""Synthetic external control arm: virtual controls from a fitted population, weighted to the trial.

The section's population (typically fitted to historical or real-world control data with
``twinloop cohort from-real``) is sampled into a pool of ``n`` external patients and
simulated under the trial's control arm. The pool is weighted to the trial's participants
(``target: trial``) or to its experimental arms (``target: experimental``) on the listed
covariates and baseline measures, by

- ``entropy`` balancing (Hainmueller 2012): the weights closest to uniform in
  Kullback-Leibler divergence whose weighted means equal the target's, found by solving
  the convex dual with ``scipy.optimize`` (Newton trust region); or
- ``propensity`` odds weights: a logistic model (statsmodels) of trial versus external
  membership; each external patient weighs ``p / (1 - p)``.

Per replicate the result holds the balance before and after weighting (standardized mean
differences, variance ratios), the effective sample size, the largest weight's share, the
propensity overlap, each experimental arm's effect against the weighted external controls
for continuous and binary endpoints (difference of means or of proportions; a weighted
least-squares fit with a heteroskedasticity-robust sandwich SE, which treats the weights as
known), and, when the trial randomized a control arm, the bias of the external arm: its
weighted mean minus the randomized control mean. ``flags`` say in words what looks wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop.errors import InputError
from twinloop.trials import _reference as ref
from twinloop.trials.context import SpecContext

if TYPE_CHECKING:
    import pandas as pd

    from twinloop.cohort.population import Population
    from twinloop.trials.run import TrialData

KEYS = ("population", "n", "method", "covariates", "target", "max_smd", "min_ess", "seed")
METHODS = ("entropy", "propensity")
TARGETS = ("trial", "experimental")
MAX_WEIGHT_SHARE = 0.1  # flagged when one external patient carries more of the weight
MIN_OVERLAP = 0.9  # flagged when fewer target participants lie within the pool's propensity range
BALANCE_TOL = 1e-6  # entropy balancing: largest |weighted mean - target| in pool SDs


@dataclass(frozen=True)
class ExternalControlSpec:
    """The validated ``external_control`` section (``population`` None: the trial has none).

    ``control_arm``, ``arms`` and ``endpoints`` come from the trial, not from the section.
    """

    population: Population | None = field(default=None, repr=False, compare=False)
    n: int = 2000
    method: str = "entropy"
    covariates: tuple[str, ...] = ()
    target: str = "trial"
    max_smd: float = 0.1
    min_ess: int = 50
    seed: int | None = None
    control_arm: str = ""
    arms: tuple[str, ...] = ()
    endpoints: dict[str, str] = field(default_factory=dict, compare=False)
    population_hash: str = ""

    @classmethod
    def parse(cls, where: str, raw: Any, ctx: SpecContext) -> ExternalControlSpec:
        """Validate ``raw`` (the section at ``where``, e.g. ``'external_control'``) against ``ctx``.

        Raises:
            InputError: naming the key, the value and what was expected.
        """
        trial = {"control_arm": ctx.control_arm, "arms": tuple(ctx.arms), "endpoints": dict(ctx.endpoints)}
        if raw is None:
            return cls(**trial)  # type: ignore[arg-type]
        raw = ref.section(where, raw)
        ref.known_keys(where, raw, KEYS)
        pop = ref.population(f"{where}.population", raw.get("population", "default"), ctx)
        n = ref.positive_int(f"{where}.n", raw.get("n"), 2000, lower=20)
        max_smd = raw.get("max_smd", 0.1)
        if isinstance(max_smd, bool) or not isinstance(max_smd, int | float) or not 0 < max_smd <= 2:
            raise InputError(f"{where}.max_smd must be a number in (0, 2], e.g. 0.1; got {max_smd!r}.")
        default_cols = [c for c in ctx.columns if c != "group"] or list(ctx.columns)
        if len(ctx.arms) < 2:
            raise InputError(f"{where}: an external control needs an experimental arm besides {ctx.control_arm!r}.")
        return cls(
            population=pop,
            n=n,
            method=ref.choice(f"{where}.method", raw.get("method"), METHODS, "entropy"),
            covariates=ref.columns(f"{where}.covariates", raw.get("covariates"), ctx, default_cols),
            target=ref.choice(f"{where}.target", raw.get("target"), TARGETS, "trial"),
            max_smd=float(max_smd),
            min_ess=ref.positive_int(f"{where}.min_ess", raw.get("min_ess"), min(50, n // 4), upper=n),
            seed=ref.seed(f"{where}.seed", raw.get("seed")),
            population_hash=pop.content_hash(),
            **trial,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any] | None:
        """The section as plain data (None when absent); it parses back to an equal spec."""
        if self.population is None:
            return None
        out: dict[str, Any] = {
            "population": ref.population_to_dict(self.population),
            "n": self.n,
            "method": self.method,
            "covariates": list(self.covariates),
            "target": self.target,
            "max_smd": self.max_smd,
            "min_ess": self.min_ess,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        return out


@dataclass(frozen=True)
class ExternalControl:
    """An external control arm and its diagnostics (one row per replicate where it applies)."""

    pool: pd.DataFrame
    weights: pd.DataFrame
    balance: pd.DataFrame
    diagnostics: pd.DataFrame
    effects: pd.DataFrame
    bias: pd.DataFrame
    flags: list[str]

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """The tables by name (``external_<name>.parquet`` in a trial's results)."""
        import pandas as pd

        return {
            "pool": self.pool,
            "weights": self.weights,
            "balance": self.balance,
            "diagnostics": self.diagnostics,
            "effects": self.effects,
            "bias": self.bias,
            "flags": pd.DataFrame({"flag": self.flags}, dtype=object),
        }


def entropy_weights(x_pool: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Entropy-balancing weights (summing to 1) of the pool rows whose weighted column means
    equal ``target``, and the largest remaining gap in pool SDs (> 1e-6: the target lies
    outside what the pool can reach and the weights are the closest the solver found).

    The dual ``min_l log sum_j exp(z_j . l)`` over centred, standardized ``z`` is convex;
    its gradient is the weighted mean of ``z`` (zero at balance).
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp, softmax

    sd = x_pool.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (x_pool - target) / sd

    def dual(lam: np.ndarray) -> tuple[float, np.ndarray]:
        w = softmax(z @ lam)
        return float(logsumexp(z @ lam)), w @ z

    def hess(lam: np.ndarray) -> np.ndarray:
        w = softmax(z @ lam)
        mean = w @ z
        return np.asarray((z * w[:, None]).T @ z - np.outer(mean, mean))

    lam = np.zeros(z.shape[1])
    if z.shape[1]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lam = minimize(
                dual, lam, jac=True, hess=hess, method="trust-exact", options={"gtol": 1e-10, "maxiter": 200}
            ).x
    w = softmax(z @ lam)
    gap = float(np.max(np.abs(w @ z))) if z.shape[1] else 0.0
    return w, gap


def propensity(x_pool: np.ndarray, x_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Fitted probabilities of trial membership (statsmodels logistic regression of target 1
    versus pool 0 on the columns) for the pool and the target rows, and whether the fit
    converged without (quasi-)separation."""
    import statsmodels.api as sm

    x = np.vstack([x_pool, x_target])
    sd = x.std(axis=0)
    design = sm.add_constant((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0), has_constant="add")
    y = np.r_[np.zeros(len(x_pool)), np.ones(len(x_target))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.Logit(y, design).fit(disp=0, maxiter=200)
            p, ok = np.asarray(res.predict(design), float), bool(res.mle_retvals.get("converged", True))
        except (np.linalg.LinAlgError, ValueError, RuntimeError):
            res = sm.Logit(y, design).fit_regularized(alpha=1e-3, disp=0)
            p, ok = np.asarray(res.predict(design), float), False
    ok = ok and not any("separation" in str(w.message).lower() for w in caught)
    return p[: len(x_pool)], p[len(x_pool) :], ok


def balance_table(
    x_pool: np.ndarray, x_target: np.ndarray, w: np.ndarray, labels: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per column: standardized mean difference (target minus pool, over the pooled SD of both,
    unweighted) and variance ratio (pool over target), before and after weighting."""
    mt, vt = x_target.mean(axis=0), x_target.var(axis=0, ddof=1)
    mp, vp = x_pool.mean(axis=0), x_pool.var(axis=0, ddof=1)
    mw = w @ x_pool
    vw = w @ (x_pool - mw) ** 2 / max(1e-12, 1.0 - float(w @ w))
    scale = np.sqrt((vt + vp) / 2)
    scale = np.where(scale > 0, scale, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "covariate": np.asarray(labels, dtype=object),
            "smd_before": (mt - mp) / scale,
            "smd_after": (mt - mw) / scale,
            "variance_ratio_before": vp / vt,
            "variance_ratio_after": vw / vt,
        }


def weighted_difference(
    y_a: np.ndarray, w_a: np.ndarray, y_b: np.ndarray, w_b: np.ndarray, *, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """Weighted mean of ``y_a`` minus weighted mean of ``y_b``, its ``1 - alpha`` CI and p-value:
    weighted least squares (statsmodels) of the outcome on group membership with the HC1
    sandwich covariance (each group's weights scaled to mean 1; the weights are taken as known)."""
    import statsmodels.api as sm

    y = np.r_[y_a, y_b]
    design = np.column_stack([np.ones(len(y)), np.r_[np.ones(len(y_a)), np.zeros(len(y_b))]])
    weights = np.r_[w_a / w_a.mean(), w_b / w_b.mean()]
    res = sm.WLS(y, design, weights=weights).fit(cov_type="HC1")
    low, high = res.conf_int(alpha)[1]
    return float(res.params[1]), float(low), float(high), float(res.pvalues[1])


def weigh_external(
    espec: ExternalControlSpec, participants: pd.DataFrame, pool: pd.DataFrame, *, alpha: float = 0.05
) -> ExternalControl:
    """Weight the simulated ``pool`` (one row per external patient, as ``simulate_participants``
    gives) to each replicate of ``participants`` and estimate effects and bias against it."""
    import pandas as pd

    if espec.population is None:
        raise InputError("The trial has no external_control section; add one naming the population.")
    cols = list(espec.covariates)
    for name, frame, needed in (("participants", participants, [*cols, "arm"]), ("external pool", pool, cols)):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise InputError(f"The {name} lack the column(s) {missing} (external_control.covariates and the arm).")
    keep = pool[cols].notna().all(axis=1) & ~_failed(pool)
    pool = pool[keep.to_numpy()].reset_index(drop=True)
    if len(pool) < 2 * len(cols) + 2:
        raise InputError(f"Only {len(pool)} external patients have every covariate; raise external_control.n.")
    participants = participants[~_failed(participants).to_numpy()]
    reps = participants["replicate"].to_numpy() if "replicate" in participants.columns else np.zeros(len(participants))
    tables: dict[str, list[Any]] = {k: [] for k in ("weights", "balance", "diagnostics", "effects", "bias")}
    for r in np.unique(reps):
        _replicate(espec, int(r), participants[reps == r], pool, cols, alpha, tables)
    frames = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in tables.items()}
    return ExternalControl(pool=pool, flags=_flags(espec, frames, alpha), **frames)


def _failed(frame: pd.DataFrame) -> pd.Series:
    import pandas as pd

    if "simulation_failed" in frame.columns:
        return frame["simulation_failed"].astype(bool)
    return pd.Series(False, index=frame.index)


def _replicate(
    espec: ExternalControlSpec,
    r: int,
    part: pd.DataFrame,
    pool: pd.DataFrame,
    cols: list[str],
    alpha: float,
    tables: dict[str, list[Any]],
) -> None:
    """One replicate: weights, balance, diagnostics, effects and bias appended to ``tables``."""
    import pandas as pd

    experimental = [a for a in espec.arms if a != espec.control_arm]
    arm = part["arm"].astype(str)
    target = part if espec.target == "trial" else part[arm.isin(experimental).to_numpy()]
    target = target[target[cols].notna().all(axis=1).to_numpy()]
    if len(target) < 2:
        raise InputError(f"Replicate {r}: fewer than 2 target participants have every external_control covariate.")
    (xp, xt), labels = ref.encode(pool, [target], cols, all_levels=True)
    ps_pool, ps_target, ps_ok = propensity(xp, xt)
    if espec.method == "entropy":
        w, gap = entropy_weights(xp, xt.mean(axis=0))
        converged = gap <= BALANCE_TOL
    else:
        odds = ps_pool / np.clip(1.0 - ps_pool, 1e-12, None)
        w, gap, converged = odds / odds.sum(), float("nan"), ps_ok
    low, high = np.quantile(ps_pool, [0.01, 0.99])
    tables["weights"].append(pd.DataFrame({"replicate": r, "subject_id": pool["subject_id"].to_numpy(), "weight": w}))
    tables["balance"].append(pd.DataFrame({"replicate": r, **balance_table(xp, xt, w, labels)}))
    ess = float(1.0 / (w @ w))
    tables["diagnostics"].append(
        pd.DataFrame(
            {
                "replicate": [r],
                "method": espec.method,
                "target": espec.target,
                "n_target": len(target),
                "n_external": len(pool),
                "ess": ess,
                "max_weight_share": float(w.max()),
                "overlap": float(np.mean((ps_target >= low) & (ps_target <= high))),
                "balance_gap": gap,
                "converged": converged,
            }
        )
    )
    endpoints = [e for e, k in espec.endpoints.items() if k in ("continuous", "binary") and e in pool.columns]
    for e in endpoints:
        y_ext = pool[e].to_numpy(float)
        seen = np.isfinite(y_ext) & (w > 0)
        if seen.sum() < 2:
            continue
        y_ext, w_ext = y_ext[seen], w[seen]
        rows = []
        for a in experimental:
            y = part.loc[(arm == a).to_numpy(), e].dropna().to_numpy(float)
            if len(y) >= 2:
                est = weighted_difference(y, np.ones(len(y)), y_ext, w_ext, alpha=alpha)
                rows.append((e, f"{a} vs external {espec.control_arm}", len(y), *est))
        tables["effects"].append(_effects(r, espec.method, rows, int(seen.sum()), ess, alpha))
        y_ctl = part.loc[(arm == espec.control_arm).to_numpy(), e].dropna().to_numpy(float)
        if len(y_ctl) >= 2:
            est = weighted_difference(y_ext, w_ext, y_ctl, np.ones(len(y_ctl)), alpha=alpha)
            names = ("estimate", "ci_low", "ci_high", "p_value")
            tables["bias"].append(
                pd.DataFrame({"replicate": [r], "endpoint": e, **dict(zip(names, est, strict=True)), "n": len(y_ctl)})
            )


def _effects(r: int, method: str, rows: list[tuple[Any, ...]], n_ext: int, ess: float, alpha: float) -> pd.DataFrame:
    import pandas as pd

    names = ["endpoint", "comparison", "n", "estimate", "ci_low", "ci_high", "p_value"]
    out = pd.DataFrame(rows, columns=names)
    out.insert(0, "replicate", r)
    out.insert(2, "method", f"external:{method}")
    out.insert(4, "measure", "difference")
    out["n_external"], out["ess"], out["reject"] = n_ext, ess, out["p_value"] < alpha
    return out


def _flags(espec: ExternalControlSpec, frames: dict[str, pd.DataFrame], alpha: float) -> list[str]:
    """Plain-text warnings over all replicates."""
    diag, bal, bias = frames["diagnostics"], frames["balance"], frames["bias"]
    reps = len(diag)
    out: list[str] = []

    def share(mask: Any) -> str:
        return f"in {int(np.sum(mask))} of {reps} replicate(s)"

    if not diag["converged"].all():
        what = "match the target means" if espec.method == "entropy" else "fit the propensity model (separation)"
        out.append(
            f"{espec.method} weighting could not {what} {share(~diag['converged'])}: the trial's participants lie "
            "outside what the external population covers."
        )
    for cov, smd in bal.groupby("covariate", sort=False)["smd_after"]:
        bad = np.abs(smd.to_numpy(float)) > espec.max_smd
        if bad.any():
            out.append(
                f"Imbalance after weighting: covariate {cov!r} has |SMD| up to {np.nanmax(np.abs(smd)):.2f} "
                f"(> max_smd {espec.max_smd}) {share(bad)}."
            )
    if (diag["ess"] < espec.min_ess).any():
        out.append(
            f"Low effective sample size: the weighted external arm counts as {diag['ess'].min():.0f} patients "
            f"(< min_ess {espec.min_ess}) {share(diag['ess'] < espec.min_ess)}."
        )
    if (diag["max_weight_share"] > MAX_WEIGHT_SHARE).any():
        out.append(
            f"One external patient carries up to {diag['max_weight_share'].max():.0%} of the weight "
            f"{share(diag['max_weight_share'] > MAX_WEIGHT_SHARE)}."
        )
    if (diag["overlap"] < MIN_OVERLAP).any():
        out.append(
            f"Poor overlap: only {diag['overlap'].min():.0%} of the target participants lie within the external "
            f"pool's propensity range (1st-99th percentile) {share(diag['overlap'] < MIN_OVERLAP)}."
        )
    for e, b in bias.groupby("endpoint", sort=False) if len(bias) else []:
        excl = ((b["ci_low"] > 0) | (b["ci_high"] < 0)).to_numpy()
        limit = alpha + 3 * np.sqrt(alpha * (1 - alpha) / len(b)) if len(b) > 1 else 0.0
        if excl.mean() > limit:
            out.append(
                f"Bias against the randomized control on {e!r}: external minus randomized control mean "
                f"{b['estimate'].mean():.3g} on average; the CI excludes 0 {share(excl)}."
            )
    return out


def simulate_pool(spec: Any, *, seed: int) -> pd.DataFrame:
    """The external pool for ``spec`` (a ``TrialSpec``): ``external_control.n`` patients of the
    section's population, simulated under the trial's control arm; those who fail the
    trial's eligibility criteria (on covariates and baseline measures) are left out, as a
    real external control applies the trial's criteria to its historical patients."""
    from twinloop.trials.run import simulate_participants

    espec: ExternalControlSpec = spec.external_control
    if espec.population is None:
        raise InputError("The trial has no external_control section; add one naming the population.")
    draw, run = np.random.SeedSequence([seed, 5309]).generate_state(2)
    cohort = espec.population.sample(espec.n, seed=int(draw), id_prefix="ext")
    pool = simulate_participants(spec, cohort, [espec.control_arm] * cohort.n, seed=int(run))
    names = {str(c): pool[c].to_numpy() for c in pool.columns}
    keep = np.ones(len(pool), dtype=bool)
    for formula in getattr(spec, "eligibility", ()):
        keep &= np.asarray(np.broadcast_to(np.asarray(formula(names)), keep.shape) == True, dtype=bool)  # noqa: E712
    return pool[keep].reset_index(drop=True)


def external_control(spec: Any, data: TrialData, *, seed: int | None = None) -> ExternalControl:
    """The synthetic external control arm of ``data`` (a trial run of ``spec``): the pool
    simulated once, weighted to every replicate. The seed: the argument, else the section's,
    else the trial's.

    Example:
        >>> ext = external_control(spec, run_trial(spec))  # doctest: +SKIP
        >>> ext.effects, ext.bias, ext.flags  # doctest: +SKIP
    """
    espec: ExternalControlSpec = spec.external_control
    if seed is None:
        seed = espec.seed if espec.seed is not None else int(getattr(spec, "seed", 0) or 0)
    pool = simulate_pool(spec, seed=seed)
    return weigh_external(espec, data.participants, pool)
