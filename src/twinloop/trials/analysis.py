"""The trial's analysis plan (the spec's ``analysis`` section) and :func:`analyse`, which applies it.

YAML::

    analysis:
      alpha: 0.05                  # two-sided significance level, 0 < alpha < 0.5
      primary: sld_change          # the primary endpoint (default: the first endpoint)
      methods:                     # endpoint -> analyses; only the endpoints listed are analysed
        sld_change: [{method: ancova, covariates: [sld_baseline]}, {method: procova, covariates: [sld_baseline]}]
        objective_response: [{method: logistic, covariates: [sld_baseline]}]
        pfs: [logrank, {method: cox, covariates: [sld_baseline]}]   # a bare name: no covariates

Methods by endpoint kind: continuous ``ancova`` (OLS on the arm dummies and the covariates;
without covariates the two-sample t-test) and ``procova`` (ancova also adjusting for the
participant's twin-predicted control outcome, the column ``prognostic:<endpoint>``); binary
``logistic`` (odds ratio); time to event ``logrank`` (Peto hazard ratio) and ``cox`` (hazard
ratio). Covariates are the population's covariates and the baseline measures; text columns
enter as dummies. Without ``methods`` (or without the section) every endpoint gets its
unadjusted analysis: ancova, logistic or logrank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.trials.context import SpecContext
from twinloop.trials.regression import Design, Effects, logistic, ols, reduce
from twinloop.trials.survival import cox, km_medians, logrank
from twinloop.trials.survival import kaplan_meier as kaplan_meier

__all__ = ["METHODS", "AnalysisPlan", "Method", "analyse", "kaplan_meier", "km_medians"]

METHODS: dict[str, tuple[str, ...]] = {
    "continuous": ("ancova", "procova"),
    "binary": ("logistic",),
    "time_to_event": ("logrank", "cox"),
}
DEFAULT = {"continuous": "ancova", "binary": "logistic", "time_to_event": "logrank"}
MEASURE = {"ancova": "difference", "procova": "difference", "logistic": "odds_ratio"}
MAX_METHODS = 20
COLUMNS = [
    "replicate",
    "endpoint",
    "method",
    "comparison",
    "measure",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "n",
    "dropped",
    "reject",
]


@dataclass(frozen=True)
class Method:
    """One planned analysis of an endpoint; ``label`` names it in results (unique per endpoint)."""

    method: str
    covariates: tuple[str, ...] = ()
    label: str = ""

    def adjusted_for(self, endpoint: str) -> tuple[str, ...]:
        """The columns the model adjusts for (procova adds the prognostic score)."""
        extra = (f"prognostic:{endpoint}",) if self.method == "procova" else ()
        return (*self.covariates, *extra)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "covariates": list(self.covariates)}


@dataclass(frozen=True)
class AnalysisPlan:
    """The validated ``analysis`` section (see the module docstring)."""

    alpha: float = 0.05
    primary: str | None = None
    methods: Mapping[str, tuple[Method, ...]] = field(default_factory=dict)
    ctx: SpecContext | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, where: str, raw: Any, ctx: SpecContext) -> AnalysisPlan:
        """Validate ``raw`` (the section at ``where``, e.g. ``'analysis'``) against ``ctx``."""
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise InputError(
                f"{where} must be a mapping with the keys alpha, primary and methods; got {_show(raw)}. "
                "Write e.g. {alpha: 0.05, primary: ENDPOINT}."
            )
        unknown = sorted(str(k) for k in set(raw) - {"alpha", "primary", "methods"})
        if unknown:
            raise InputError(f"{where} has unknown keys {unknown}; accepted: ['alpha', 'methods', 'primary'].")
        alpha = _alpha(f"{where}.alpha", raw.get("alpha", 0.05))
        methods = _methods(f"{where}.methods", raw.get("methods"), ctx)
        primary = _primary(f"{where}.primary", raw.get("primary"), ctx, methods)
        return cls(alpha=alpha, primary=primary, methods=methods, ctx=ctx)

    def to_dict(self) -> dict[str, Any]:
        """The section as plain data (hashed with the spec, recorded in manifests); parses back to itself."""
        return {
            "alpha": self.alpha,
            "primary": self.primary,
            "methods": {name: [m.to_dict() for m in methods] for name, methods in self.methods.items()},
        }

    def with_methods(self, raw: Any, where: str = "methods") -> AnalysisPlan:
        """The plan with its ``methods`` replaced by ``raw`` (spec syntax), validated against the same context."""
        ctx = self._context()
        methods = _methods(where, raw, ctx)
        primary = self.primary if self.primary in methods else next(iter(methods), None)
        return AnalysisPlan(alpha=self.alpha, primary=primary, methods=methods, ctx=ctx)

    def _context(self) -> SpecContext:
        if self.ctx is None:
            raise InputError("This analysis plan was not made by AnalysisPlan.parse; parse the section with its spec.")
        return self.ctx


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _alpha(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < float(value) < 0.5:
        raise InputError(f"{where} must be a number between 0 and 0.5 (exclusive); got {_show(value)}. Use e.g. 0.05.")
    return float(value)


def _primary(where: str, value: Any, ctx: SpecContext, methods: Mapping[str, tuple[Method, ...]]) -> str | None:
    if value is None:
        return next(iter(methods), None)
    if not isinstance(value, str) or value not in ctx.endpoints:
        raise InputError(f"{where} must name an endpoint of the trial ({sorted(ctx.endpoints)}); got {_show(value)}.")
    if value not in methods:
        raise InputError(
            f"{where} is {value!r}, which analysis.methods does not analyse; list at least one method for it."
        )
    return value


def _methods(where: str, raw: Any, ctx: SpecContext) -> dict[str, tuple[Method, ...]]:
    if raw is None:
        return {name: (Method(DEFAULT[kind], (), DEFAULT[kind]),) for name, kind in ctx.endpoints.items()}
    if not isinstance(raw, Mapping):
        raise InputError(
            f"{where} must map endpoint names to lists of analyses, e.g. {{ENDPOINT: [{{method: ancova}}]}}; "
            f"got {_show(raw)}."
        )
    out: dict[str, tuple[Method, ...]] = {}
    for name, items in raw.items():
        if not isinstance(name, str) or name not in ctx.endpoints:
            raise InputError(
                f"{where} names {_show(name)}, which is not an endpoint; endpoints: {sorted(ctx.endpoints)}."
            )
        out[name] = _endpoint_methods(f"{where}.{name}", items, ctx.endpoints[name], ctx)
    return out


def _endpoint_methods(where: str, items: Any, kind: str, ctx: SpecContext) -> tuple[Method, ...]:
    if isinstance(items, str | Mapping):
        items = [items]
    if not isinstance(items, list | tuple) or len(items) > MAX_METHODS:
        raise InputError(f"{where} must be a list of at most {MAX_METHODS} analyses; got {_show(items)}.")
    parsed = [_method(f"{where}[{i}]", item, kind, ctx) for i, item in enumerate(items)]
    keys = [(m.method, m.covariates) for m in parsed]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise InputError(f"{where}[{i}] repeats the analysis {key[0]} with covariates {list(key[1])}; remove it.")
    names = [m.method for m in parsed]
    return tuple(Method(m.method, m.covariates, _label(m, names.count(m.method) > 1)) for m in parsed)


def _label(method: Method, repeated: bool) -> str:
    """The method's name, with its covariates when the endpoint has the method more than once."""
    return f"{method.method}({'+'.join(method.covariates)})" if repeated else method.method


def _method(where: str, item: Any, kind: str, ctx: SpecContext) -> Method:
    item = {"method": item} if isinstance(item, str) else item
    if not isinstance(item, Mapping):
        raise InputError(f"{where} must be a mapping {{method: NAME, covariates: [...]}}; got {_show(item)}.")
    unknown = sorted(str(k) for k in set(item) - {"method", "covariates"})
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; accepted: ['covariates', 'method'].")
    name = item.get("method")
    if name not in METHODS[kind]:
        raise InputError(
            f"{where}.method is {_show(name)}; a {kind.replace('_', '-')} endpoint accepts {list(METHODS[kind])}."
        )
    covariates = item.get("covariates", [])
    if not isinstance(covariates, list | tuple) or not all(isinstance(c, str) for c in covariates):
        raise InputError(f"{where}.covariates must be a list of column names; got {_show(covariates)}.")
    for i, column in enumerate(covariates):
        if column not in ctx.columns:
            raise InputError(
                f"{where}.covariates[{i}] is {_show(column)}, not a covariate or baseline measure of the trial; "
                f"choose from {list(ctx.columns)}."
            )
        if column in covariates[:i]:
            raise InputError(f"{where}.covariates[{i}] repeats {column!r}; list each covariate once.")
    return Method(str(name), tuple(covariates))


def analyse(participants: pd.DataFrame, spec: Any, *, methods: Any = None) -> pd.DataFrame:
    """Apply the analysis plan to every replicate: each non-control arm against the control arm.

    Arguments:
        participants: ``TrialData.participants`` (or its first n rows by ``order`` per replicate).
        spec: a ``TrialSpec`` (its ``analysis`` plan is used) or an :class:`AnalysisPlan`.
        methods: optional ``methods`` mapping in spec syntax replacing the plan's.

    Returns:
        One row per replicate, endpoint, method and comparison: ``replicate, endpoint, method,
        comparison, measure, estimate, ci_low, ci_high, p_value, n`` (complete cases analysed),
        ``dropped`` (randomized participants of those arms without the endpoint or a covariate)
        and ``reject`` (p < alpha; False where no estimate could be made, estimate NaN).

    Raises:
        InputError: a column the plan needs is missing (procova without prognostic scores).

    Example:
        >>> analyse(run_trial(spec).participants, spec)  # doctest: +SKIP
    """
    plan = spec if isinstance(spec, AnalysisPlan) else spec.analysis
    if methods is not None:
        plan = plan.with_methods(methods)
    ctx = plan._context()
    frame = _usable(participants, ctx)
    frames = [
        _one(frame, plan, ctx, endpoint, method)
        for endpoint, endpoint_methods in plan.methods.items()
        for method in endpoint_methods
    ]
    if not frames:
        return pd.DataFrame({c: [] for c in COLUMNS})
    return pd.concat(frames, ignore_index=True)


def _usable(participants: pd.DataFrame, ctx: SpecContext) -> pd.DataFrame:
    for column in ("replicate", "arm"):
        if column not in participants.columns:
            raise InputError(
                f"analyse: the participants table lacks the column {column!r}; give TrialData.participants."
            )
    frame = participants
    if "simulation_failed" in frame.columns:
        frame = frame[~frame["simulation_failed"].astype(bool)]
    return frame[frame["arm"].isin(ctx.arms)].sort_values("replicate", kind="stable")


def _one(frame: pd.DataFrame, plan: AnalysisPlan, ctx: SpecContext, endpoint: str, method: Method) -> pd.DataFrame:
    kind = ctx.endpoints[endpoint]
    outcome = [endpoint, f"{endpoint}_event"] if kind == "time_to_event" else [endpoint]
    adjust = method.adjusted_for(endpoint)
    missing = [c for c in (*outcome, *adjust) if c not in frame.columns]
    if missing:
        hint = " (add the prognostic scores first: procova's with_prognostic)" if method.method == "procova" else ""
        raise InputError(f"analyse: {endpoint} by {method.method} needs the participant columns {missing}{hint}.")
    compared = [a for a in ctx.arms if a != ctx.control_arm]
    arm_index = np.full(len(frame), -1)
    for j, arm in enumerate((ctx.control_arm, *compared)):
        arm_index[frame["arm"].to_numpy() == arm] = j
    complete = frame[[*outcome, *adjust]].notna().all(axis=1).to_numpy()
    replicates = np.unique(frame["replicate"].to_numpy())
    bounds = np.searchsorted(frame["replicate"].to_numpy(), replicates, side="left")
    covariates = _covariate_matrix(frame, adjust)
    k = len(compared)
    dummies = (arm_index[:, None] == np.arange(1, k + 1)[None, :]).astype(float)
    y = frame[endpoint].to_numpy(float)
    pieces = np.split(np.arange(len(frame)), bounds[1:])
    used = [rows[complete[rows]] for rows in pieces]
    alpha = plan.alpha
    if kind == "time_to_event":
        event = frame[f"{endpoint}_event"].fillna(False).to_numpy(bool)
        if method.method == "logrank":
            effects = logrank([(y[u], event[u], arm_index[u]) for u in used], k, alpha)
        else:
            x = np.column_stack([dummies, covariates])
            designs = [reduce(Design(y[u], x[u]), k, first=0) for u in used]
            samples = [None if d is None else (d.y, event[u], d.x) for d, u in zip(designs, used, strict=True)]
            effects = cox(samples, k, alpha)
    else:
        x = np.column_stack([np.ones(len(frame)), dummies, covariates])
        designs = [reduce(Design(y[u], x[u]), k) for u in used]
        effects = (logistic if kind == "binary" else ols)(designs, k, alpha)
    return _rows(effects, replicates, endpoint, method, compared, ctx.control_arm, pieces, used, arm_index, alpha)


def _covariate_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Numeric columns as they are, text and categorical columns as dummies (first level dropped)."""
    blocks = [np.empty((len(frame), 0))]
    for column in columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            blocks.append(values.to_numpy(float)[:, None])
            continue
        levels = sorted(str(v) for v in values.dropna().unique())
        text = values.astype(object).to_numpy()
        block = np.column_stack([(text == level).astype(float) for level in levels[1:]]) if len(levels) > 1 else None
        if block is not None:
            block[values.isna().to_numpy()] = np.nan
            blocks.append(block)
    return np.column_stack(blocks)


def _rows(
    effects: Effects,
    replicates: np.ndarray,
    endpoint: str,
    method: Method,
    compared: list[str],
    control: str,
    pieces: list[np.ndarray],
    used: list[np.ndarray],
    arm_index: np.ndarray,
    alpha: float,
) -> pd.DataFrame:
    k = len(compared)
    pairwise = method.method == "logrank"
    n = np.empty((len(replicates), k), int)
    dropped = np.empty((len(replicates), k), int)
    for j in range(k):
        member = np.isin(arm_index, (0, j + 1)) if pairwise else arm_index >= 0
        for r, (rows, kept) in enumerate(zip(pieces, used, strict=True)):
            n[r, j] = int(member[kept].sum())
            dropped[r, j] = int(member[rows].sum()) - n[r, j]
    p = effects.p_value.ravel()
    return pd.DataFrame(
        {
            "replicate": np.repeat(replicates, k),
            "endpoint": endpoint,
            "method": method.label,
            "comparison": np.tile([f"{arm} vs {control}" for arm in compared], len(replicates)),
            "measure": MEASURE.get(method.method, "hazard_ratio"),
            "estimate": effects.estimate.ravel(),
            "ci_low": effects.ci_low.ravel(),
            "ci_high": effects.ci_high.ravel(),
            "p_value": p,
            "n": n.ravel(),
            "dropped": dropped.ravel(),
            "reject": np.nan_to_num(p, nan=1.0) < alpha,
        }
    )
