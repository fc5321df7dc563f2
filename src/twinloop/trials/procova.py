"""Digital-twin covariate adjustment (PROCOVA; Schuler et al. 2021, qualified by the EMA in 2022).

Each participant's digital twin predicts their outcome under the control arm from
baseline data only; the trial's ANCOVA then adjusts for that prediction (the *prognostic
score*). With ``rho`` the correlation of score and outcome in the control arm, the
variance of the effect estimate falls by about ``1 - rho**2`` (the sample size for a given
power with it), with no bias and no inflation of the type-I error, since the score uses
neither the outcome nor the arm.

The twin: the section's population (the twins' prior, typically fitted to historical
control data) is sampled into a *bank* of virtual patients, simulated once under the
control arm (``simulate_participants``). ``method: twin`` weights the bank by a Gaussian
kernel on the standardized features (the participant's covariates and baseline measures)
and predicts the weighted mean of the bank's control endpoint: a kernel (ABC-style)
approximation of the posterior over the bank given the participant's baseline data, not
the exact likelihood of the observations. The bandwidth is chosen per participant to keep
the weights' effective sample size at least ``min_ess``. ``method: regression`` fits a
gradient-boosting regressor (scikit-learn) from the features to the control endpoint on
the bank instead.
"""

from __future__ import annotations

import dataclasses
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

KEYS = ("endpoint", "population", "bank", "features", "method", "min_ess", "seed")
METHODS = ("twin", "regression")


@dataclass(frozen=True)
class PrognosticSpec:
    """The validated ``prognostic`` section (``endpoint`` None: the trial has none).

    ``control_arm`` comes from the trial (not a key of the section).
    """

    endpoint: str | None = None
    population: Population | None = field(default=None, repr=False, compare=False)
    bank: int = 4000
    features: tuple[str, ...] = ()
    method: str = "twin"
    min_ess: int = 50
    seed: int | None = None
    control_arm: str = ""
    population_hash: str = ""

    @classmethod
    def parse(cls, where: str, raw: Any, ctx: SpecContext) -> PrognosticSpec:
        """Validate ``raw`` (the section at ``where``, e.g. ``'prognostic'``) against ``ctx``.

        Raises:
            InputError: naming the key, the value and what was expected.
        """
        if raw is None:
            return cls(control_arm=ctx.control_arm)
        raw = ref.section(where, raw)
        ref.known_keys(where, raw, KEYS)
        endpoint = raw.get("endpoint")
        continuous = [k for k, v in ctx.endpoints.items() if v == "continuous"]
        if endpoint not in continuous:
            raise InputError(
                f"{where}.endpoint is {endpoint!r}; expected a continuous endpoint of the trial, one of {continuous}."
            )
        pop = ref.population(f"{where}.population", raw.get("population", "default"), ctx)
        bank = ref.positive_int(f"{where}.bank", raw.get("bank"), 4000, lower=100, upper=1_000_000)
        min_ess = ref.positive_int(f"{where}.min_ess", raw.get("min_ess"), min(50, bank // 4), upper=bank // 2)
        return cls(
            endpoint=str(endpoint),
            population=pop,
            bank=bank,
            features=ref.columns(f"{where}.features", raw.get("features"), ctx, ctx.columns),
            method=ref.choice(f"{where}.method", raw.get("method"), METHODS, "twin"),
            min_ess=min_ess,
            seed=ref.seed(f"{where}.seed", raw.get("seed")),
            control_arm=ctx.control_arm,
            population_hash=pop.content_hash(),
        )

    def to_dict(self) -> dict[str, Any] | None:
        """The section as plain data (None when absent); it parses back to an equal spec."""
        if self.endpoint is None or self.population is None:
            return None
        out: dict[str, Any] = {
            "endpoint": self.endpoint,
            "population": ref.population_to_dict(self.population),
            "bank": self.bank,
            "features": list(self.features),
            "method": self.method,
            "min_ess": self.min_ess,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        return out


@dataclass(frozen=True)
class Bank:
    """The twins' bank: one row per virtual patient simulated under the control arm
    (``simulate_participants`` columns), its control endpoint, the number simulated, the seed."""

    table: pd.DataFrame
    endpoint: np.ndarray
    simulated: int
    seed: int


def twin_posterior(
    bank_x: np.ndarray, bank_y: np.ndarray, x: np.ndarray, *, min_ess: float = 50.0, chunk: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel-posterior predictions of ``bank_y`` at the rows of ``x``, and each row's ESS.

    Features are standardized by the bank's mean and sd; a row's weights are
    ``exp(-d**2 / (2 h**2))`` over the bank (``d``: Euclidean distance over the row's
    observed features — a missing feature is marginalized out), with ``h`` chosen per row
    (bisection on ``log h``) so that the effective sample size ``(sum w)**2 / sum w**2`` is
    just at least ``min_ess``: the kernel (ABC) posterior over the bank, not an exact one.
    """
    bank_x = np.asarray(bank_x, float)
    bank_y = np.asarray(bank_y, float)
    x = np.asarray(x, float)
    m = len(bank_y)
    if m < 2 or bank_x.shape != (m, x.shape[1]):
        raise InputError(f"The bank needs >= 2 members with {x.shape[1]} features; got shape {bank_x.shape}.")
    target = float(min(min_ess, m / 2))
    mean, sd = bank_x.mean(axis=0), bank_x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    zb, zx = (bank_x - mean) / sd, (x - mean) / sd
    pred, ess = np.empty(len(x)), np.empty(len(x))
    k = max(1, min(m - 1, int(np.ceil(target))))
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        d2 = np.zeros((len(zx[rows]), m), dtype=np.float32)
        for j in range(zx.shape[1]):
            diff = zx[rows, j, None] - zb[None, :, j]
            d2 += np.where(np.isnan(diff), 0.0, diff * diff)
        h2 = _bandwidth(d2, k, target)
        w, e = _weights(d2, h2)
        pred[rows], ess[rows] = w @ bank_y / w.sum(axis=1), e
    return pred, ess


def _bandwidth(d2: np.ndarray, k: int, target: float, steps: int = 8) -> np.ndarray:
    """Per row, the squared bandwidth whose kernel ESS is just at least ``target``: bisection on
    ``log h**2`` between a tenth of the ``k``-th nearest squared distance and 100 times it
    (widened further, if need be, until the ESS is reached)."""
    ref2 = np.maximum(np.partition(d2, k, axis=1)[:, k], 1e-8)
    lo, hi = np.log(ref2 / 10.0), np.log(ref2 * 100.0)
    for _ in range(20):
        short = _weights(d2, np.exp(hi))[1] < target
        if not short.any():
            break
        hi[short] += np.log(100.0)
    for _ in range(steps):
        mid = (lo + hi) / 2
        enough = _weights(d2, np.exp(mid))[1] >= target
        hi, lo = np.where(enough, mid, hi), np.where(enough, lo, mid)
    return np.exp(hi)


def _weights(d2: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian kernel weights (rows scaled to a largest weight of 1) and their ESS."""
    logw = -(d2 - d2.min(axis=1, keepdims=True)) / (2.0 * h2[:, None])
    w = np.exp(logw)
    return w, w.sum(axis=1) ** 2 / (w * w).sum(axis=1)


def regression_predict(bank_x: np.ndarray, bank_y: np.ndarray, x: np.ndarray, *, seed: int) -> np.ndarray:
    """Predictions at ``x`` of a gradient-boosting regressor (scikit-learn's histogram
    boosting, which handles missing features) fitted on the bank."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingRegressor(
        max_iter=100, learning_rate=0.1, max_leaf_nodes=15, early_stopping=True, random_state=seed
    )
    with threadpool_limits(1):  # OpenMP threads spin on a shared machine; one thread is faster there
        model.fit(bank_x, bank_y)
        return np.asarray(model.predict(x), float)


def score_from_bank(
    pspec: PrognosticSpec, bank: pd.DataFrame, participants: pd.DataFrame, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each participant's prognostic score from a simulated ``bank`` (one row per virtual
    patient: the features and the control-arm endpoint), and the kernel ESS (NaN for
    ``regression``). Bank rows whose endpoint or features are missing, or whose simulation
    failed, are left out; only the participants' feature columns are read."""
    if pspec.endpoint is None:
        raise InputError("The trial has no prognostic section; add one naming the endpoint and the features.")
    missing = [c for c in (*pspec.features, pspec.endpoint) if c not in bank.columns]
    missing += [c for c in pspec.features if c not in participants.columns and c not in missing]
    if missing:
        raise InputError(f"The bank or the participants lack the column(s) {missing}.")
    keep = bank[pspec.endpoint].notna() & bank[list(pspec.features)].notna().all(axis=1)
    if "simulation_failed" in bank.columns:
        keep &= ~bank["simulation_failed"].astype(bool)
    bank = bank[keep.to_numpy()]
    if len(bank) < 2 * pspec.min_ess:
        raise InputError(
            f"Only {len(bank)} of the bank's virtual patients have a control-arm {pspec.endpoint!r}; raise "
            f"prognostic.bank (now {pspec.bank}) or check the observation protocol's dropout."
        )
    (bank_x, x), _ = ref.encode(bank, [participants], pspec.features)
    y = bank[pspec.endpoint].to_numpy(float)
    if pspec.method == "regression":
        return regression_predict(bank_x, y, x, seed=seed), np.full(len(x), np.nan)
    return twin_posterior(bank_x, y, x, min_ess=pspec.min_ess)


def simulate_bank(spec: Any, *, seed: int) -> Bank:
    """The twins' bank for ``spec`` (a ``TrialSpec``): ``prognostic.bank`` virtual patients
    of the section's population, simulated under the trial's control arm."""
    from twinloop.trials.run import simulate_participants

    pspec: PrognosticSpec = spec.prognostic
    if pspec.endpoint is None or pspec.population is None:
        raise InputError("The trial has no prognostic section; add one naming the endpoint and the features.")
    draw, run = np.random.SeedSequence([seed, 7211]).generate_state(2)
    cohort = pspec.population.sample(pspec.bank, seed=int(draw), id_prefix="twin")
    table = simulate_participants(spec, cohort, [pspec.control_arm] * cohort.n, seed=int(run))
    return Bank(table=table, endpoint=table[pspec.endpoint].to_numpy(float), simulated=cohort.n, seed=seed)


def _seed(spec: Any, seed: int | None) -> int:
    """The bank's seed: the argument, else the section's, else the trial's."""
    if seed is not None:
        return int(seed)
    if spec.prognostic.seed is not None:
        return int(spec.prognostic.seed)
    return int(getattr(spec, "seed", 0) or 0)


def prognostic_scores(spec: Any, participants: pd.DataFrame, *, seed: int | None = None) -> np.ndarray:
    """Each participant's twin-predicted control-arm endpoint (one value per row of
    ``participants``), from baseline data only.

    Example:
        >>> data = run_trial(spec)  # doctest: +SKIP
        >>> data.participants["prognostic:sld_change"] = prognostic_scores(spec, data.participants)  # doctest: +SKIP
    """
    seed = _seed(spec, seed)
    bank = simulate_bank(spec, seed=seed)
    return score_from_bank(spec.prognostic, bank.table, participants, seed=seed)[0]


def with_prognostic(spec: Any, data: TrialData, seed: int | None = None) -> TrialData:
    """``data`` with the column ``prognostic:<endpoint>`` (the score the ``procova``
    analysis adjusts for) and a ``prognostic`` entry in its lineage (bank size, seed,
    population hash, ESS quantiles)."""
    pspec: PrognosticSpec = spec.prognostic
    seed = _seed(spec, seed)
    bank = simulate_bank(spec, seed=seed)
    scores, ess = score_from_bank(pspec, bank.table, data.participants, seed=seed)
    participants = data.participants.copy()
    participants[f"prognostic:{pspec.endpoint}"] = scores
    used = int(np.isfinite(bank.endpoint).sum())
    info: dict[str, Any] = {
        "endpoint": pspec.endpoint,
        "method": pspec.method,
        "bank": bank.simulated,
        "bank_with_endpoint": used,
        "seed": seed,
        "population_hash": pspec.population_hash,
        "features": list(pspec.features),
    }
    if np.isfinite(ess).any():
        info["ess"] = {q: float(np.nanquantile(ess, p)) for q, p in (("min", 0.0), ("median", 0.5), ("max", 1.0))}
    return dataclasses.replace(data, participants=participants, lineage={**data.lineage, "prognostic": info})


def procova_summary(
    participants: pd.DataFrame,
    endpoint: str,
    control_arm: str,
    *,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """How much the prognostic score buys: correlation, variance ratios and sample-size saving.

    The participants with the endpoint and the score ``prognostic:<endpoint>`` are analysed
    per replicate by :func:`~twinloop.trials.analysis.analyse` twice: ``ancova`` without
    covariates (the unadjusted difference) and ``procova`` (adjusted for the score).

    Returns:
        ``rho`` (score-outcome correlation in the control arm, pooled; ``rho_by_replicate``),
        ``predicted_variance_ratio`` ``1 - rho**2``, ``observed_variance_ratio`` (variance of
        the adjusted over the unadjusted estimate across replicates, mean over comparisons;
        None for one replicate) with ``observed_variance_ratio_ci`` (bootstrap over
        replicates, first comparison), ``se2_ratio`` (mean squared standard errors, recovered
        from the t intervals), ``n`` (mean analysed per replicate), ``equivalent_n``
        ``n (1 - rho**2)``, ``saving`` and ``saving_fraction``, and per comparison the mean
        estimates, SEs, variance ratio and the rejection rates at ``alpha``.
    """
    import pandas as pd

    from twinloop.trials.analysis import AnalysisPlan, analyse

    score = f"prognostic:{endpoint}"
    _require(participants, [endpoint, score, "arm"])
    frame = participants
    if "simulation_failed" in frame.columns:
        frame = frame[~frame["simulation_failed"].astype(bool)]
    frame = frame[frame[endpoint].notna() & frame[score].notna()]
    if "replicate" not in frame.columns:
        frame = frame.assign(replicate=0)
    arms = [str(a) for a in pd.unique(frame["arm"].astype(str)) if a != control_arm]
    if control_arm not in set(frame["arm"].astype(str)) or not arms:
        raise InputError(f"procova_summary needs participants in the control arm {control_arm!r} and another arm.")
    ctx = SpecContext("", (control_arm, *arms), control_arm, (), (), {endpoint: "continuous"})
    plan = AnalysisPlan.parse("analysis", {"alpha": alpha, "methods": {endpoint: ["ancova", "procova"]}}, ctx)
    rows = analyse(frame, plan)
    control = frame[frame["arm"].astype(str) == control_arm]
    rho = float(np.corrcoef(control[score], control[endpoint])[0, 1])
    by_rep = control.groupby("replicate")[[score, endpoint]].corr().xs(score, level=1)[endpoint]
    comparisons = [_comparison(rows, f"{arm} vs {control_arm}", alpha, n_boot, seed) for arm in arms]
    observed = [c["variance_ratio"] for c in comparisons if c["variance_ratio"] is not None]
    n = float(rows.loc[rows["method"] == "procova"].groupby("replicate")["n"].first().mean())
    return {
        "endpoint": endpoint,
        "control_arm": control_arm,
        "replicates": int(rows["replicate"].nunique()),
        "n": n,
        "rho": rho,
        "rho_by_replicate": [float(v) for v in by_rep.to_numpy()],
        "predicted_variance_ratio": 1.0 - rho**2,
        "observed_variance_ratio": float(np.mean(observed)) if observed else None,
        "observed_variance_ratio_ci": comparisons[0]["variance_ratio_ci"],
        "se2_ratio": float(np.mean([c["se2_ratio"] for c in comparisons])),
        "equivalent_n": n * (1.0 - rho**2),
        "saving": n * rho**2,
        "saving_fraction": rho**2,
        "comparisons": comparisons,
    }


def _require(frame: pd.DataFrame, names: Sequence[str]) -> None:
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise InputError(
            f"The participants lack the column(s) {missing}; add the prognostic score with with_prognostic()."
        )


def _comparison(rows: pd.DataFrame, comparison: str, alpha: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Across replicates: mean estimates and SEs, variance ratio (bootstrap CI), rejection rates."""
    from scipy import stats

    picked = rows[rows["comparison"] == comparison].sort_values("replicate", kind="stable")
    un, ad = (picked[picked["method"] == m] for m in ("ancova", "procova"))
    est_un, est_ad = un["estimate"].to_numpy(float), ad["estimate"].to_numpy(float)

    def se2(frame: pd.DataFrame, params: int) -> np.ndarray:
        t = stats.t.ppf(1 - alpha / 2, np.maximum(frame["n"].to_numpy(float) - params, 1.0))
        return np.asarray(((frame["ci_high"] - frame["ci_low"]).to_numpy(float) / (2 * t)) ** 2)

    arms = rows["comparison"].nunique()
    se2_un, se2_ad = se2(un, 1 + arms), se2(ad, 2 + arms)
    out: dict[str, Any] = {
        "comparison": comparison,
        "estimate_unadjusted": float(np.nanmean(est_un)),
        "estimate_adjusted": float(np.nanmean(est_ad)),
        "se_unadjusted": float(np.sqrt(np.nanmean(se2_un))),
        "se_adjusted": float(np.sqrt(np.nanmean(se2_ad))),
        "se2_ratio": float(np.nanmean(se2_ad) / np.nanmean(se2_un)),
        "rejection_unadjusted": float(un["reject"].mean()),
        "rejection_adjusted": float(ad["reject"].mean()),
        "variance_ratio": None,
        "variance_ratio_ci": None,
    }
    if len(est_un) > 1:
        out["variance_ratio"] = float(np.nanvar(est_ad, ddof=1) / np.nanvar(est_un, ddof=1))
        idx = np.random.default_rng(seed).integers(0, len(est_un), size=(n_boot, len(est_un)))
        boot = np.nanvar(est_ad[idx], axis=1, ddof=1) / np.nanvar(est_un[idx], axis=1, ddof=1)
        out["variance_ratio_ci"] = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    return out
