"""Subgroups of a trial: prespecified ones and those found by Virtual Twins, for a forest plot.

The ``subgroups`` section of a trial spec::

    subgroups:
      endpoint: sld_change          # a continuous or binary endpoint
      arm: weekly                   # the experimental arm (default: the first arm that is not the control)
      prespecified: {elderly: "age >= 65", female: "sex == 'female'"}
      discover: {method: virtual-twins, max_depth: 2, min_fraction: 0.1, fdr: 0.1, split: 0.5, trees: 200}

Prespecified subgroups are safe formulas (:mod:`twinloop.cohort.expressions`) over the
covariates and baseline measures. ``discover`` (absent or null: no discovery) runs Virtual
Twins (Foster, Taylor & Ruberg 2011, Stat Med 30:2867) with honest estimation, see
:func:`virtual_twins`. Effects are differences in means (continuous endpoints) or in
proportions (binary endpoints, risk difference), experimental minus control, with 95 % CIs.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twinloop.cohort.expressions import Formula
from twinloop.errors import InputError
from twinloop.trials.context import SpecContext

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

METHODS = ("virtual-twins",)
FOREST_COLUMNS = (
    "label",
    "kind",
    "rule",
    "measure",
    "n",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "interaction_p",
)
_MAX_PRESPECIFIED = 50


def _integer(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{where} must be a whole number from {low} to {high}; got {value!r}.")
    return value


def _fraction(where: str, value: Any, high: float, *, closed: bool = False) -> float:
    """A number above 0 and below ``high`` (up to and including it when ``closed``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (0 < value < high or (closed and value == high)):
        upto = "at most" if closed else "below"
        raise InputError(f"{where} must be a number above 0 and {upto} {high:g}; got {value!r}.")
    return float(value)


def _known(where: str, raw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in set(raw) - set(allowed))
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; allowed: {list(allowed)}.")


@dataclass(frozen=True)
class Discovery:
    """The ``discover`` settings of Virtual Twins."""

    method: str = "virtual-twins"
    max_depth: int = 2
    min_fraction: float = 0.1
    fdr: float = 0.1
    split: float = 0.5
    trees: int = 200

    @classmethod
    def parse(cls, where: str, raw: Any) -> Discovery | None:
        """Validate ``raw`` (None or false: no discovery; a mapping: these settings over the defaults)."""
        if raw is None or raw is False:
            return None
        if not isinstance(raw, Mapping):
            raise InputError(f"{where} must be a mapping such as {{max_depth: 2, fdr: 0.1}} or null; got {raw!r}.")
        _known(where, raw, ("method", "max_depth", "min_fraction", "fdr", "split", "trees"))
        method = raw.get("method", cls.method)
        if method not in METHODS:
            raise InputError(f"{where}.method is {method!r}; expected one of {list(METHODS)}.")
        return cls(
            method,
            _integer(f"{where}.max_depth", raw.get("max_depth", cls.max_depth), 1, 4),
            _fraction(f"{where}.min_fraction", raw.get("min_fraction", cls.min_fraction), 0.5, closed=True),
            _fraction(f"{where}.fdr", raw.get("fdr", cls.fdr), 1.0),
            _fraction(f"{where}.split", raw.get("split", cls.split), 1.0),
            _integer(f"{where}.trees", raw.get("trees", cls.trees), 10, 5000),
        )

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data."""
        keys = ("method", "max_depth", "min_fraction", "fdr", "split", "trees")
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class SubgroupSpec:
    """The validated ``subgroups`` section (``endpoint`` None: the spec has none).

    Besides what the section says it keeps what the analysis needs from the spec's context:
    the endpoint's kind, the control arm and the feature columns (covariates and baselines).
    """

    endpoint: str | None = None
    kind: str = "continuous"
    arm: str = ""
    control_arm: str = ""
    features: tuple[str, ...] = ()
    prespecified: Mapping[str, str] = field(default_factory=dict)
    discover: Discovery | None = None

    @classmethod
    def parse(cls, where: str, raw: Any, ctx: SpecContext) -> SubgroupSpec:
        """Validate ``raw`` (the section at ``where``, e.g. ``'subgroups'``) against ``ctx``."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InputError(f"{where} must be a mapping such as {{endpoint: NAME, discover: {{}}}}; got {raw!r}.")
        _known(where, raw, ("endpoint", "arm", "prespecified", "discover"))
        endpoint = _endpoint(f"{where}.endpoint", raw.get("endpoint"), ctx)
        return cls(
            endpoint,
            ctx.endpoints[endpoint],
            _arm(f"{where}.arm", raw.get("arm"), ctx),
            ctx.control_arm,
            tuple(ctx.columns),
            _prespecified(f"{where}.prespecified", raw.get("prespecified"), ctx),
            Discovery.parse(f"{where}.discover", raw.get("discover")),
        )

    def to_dict(self) -> dict[str, Any] | None:
        """The section as plain data (None when the spec has no subgroups section)."""
        if self.endpoint is None:
            return None
        return {
            "endpoint": self.endpoint,
            "arm": self.arm,
            "prespecified": dict(self.prespecified),
            "discover": None if self.discover is None else self.discover.to_dict(),
        }

    @property
    def measure(self) -> str:
        """What an effect is: ``difference`` (in means) or ``risk_difference``."""
        return "risk_difference" if self.kind == "binary" else "difference"


def _endpoint(where: str, value: Any, ctx: SpecContext) -> str:
    usable = [name for name, kind in ctx.endpoints.items() if kind in ("continuous", "binary")]
    if value is None:
        if not usable:
            raise InputError(f"{where}: the trial has no continuous or binary endpoint to look for subgroups on.")
        return usable[0]
    if value not in usable:
        raise InputError(
            f"{where} is {value!r}; expected a continuous or binary endpoint of the trial: {usable} "
            "(time-to-event endpoints are not supported for subgroups)."
        )
    return str(value)


def _arm(where: str, value: Any, ctx: SpecContext) -> str:
    others = [a for a in ctx.arms if a != ctx.control_arm]
    if value is None:
        if not others:
            raise InputError(f"{where}: the trial has no arm besides the control arm {ctx.control_arm!r}.")
        return others[0]
    if value not in others:
        raise InputError(f"{where} is {value!r}; expected an arm other than the control arm: {others}.")
    return str(value)


def _prespecified(where: str, raw: Any, ctx: SpecContext) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must map labels to conditions, e.g. {{elderly: 'age >= 65'}}; got {raw!r}.")
    if len(raw) > _MAX_PRESPECIFIED:
        raise InputError(f"{where} names {len(raw)} subgroups; at most {_MAX_PRESPECIFIED} are allowed.")
    out: dict[str, str] = {}
    for label, text in raw.items():
        if not isinstance(label, str) or not label.strip() or len(label) > 80:
            raise InputError(f"{where}: the label {label!r} must be a non-empty text of at most 80 characters.")
        out[label] = condition(f"{where}.{label}", text, ctx.columns).text
    return out


def condition(where: str, text: Any, columns: tuple[str, ...]) -> Formula:
    """``text`` as a safe formula that is a condition (a comparison, and/or/not) over ``columns``."""
    formula = Formula(text, where)
    body = ast.parse(formula.text, mode="eval").body
    if not isinstance(body, ast.Compare | ast.BoolOp) and not (
        isinstance(body, ast.UnaryOp) and isinstance(body.op, ast.Not)
    ):
        raise InputError(f"{where} is {text!r}: expected a condition such as \"age >= 65 and sex == 'female'\".")
    unknown = sorted(formula.names - set(columns))
    if unknown:
        raise InputError(
            f"{where} is {text!r}: it uses {unknown}, which are not covariates or baseline measures; "
            f"use {list(columns)}."
        )
    return formula


def spec_of(spec: Any) -> SubgroupSpec:
    """The :class:`SubgroupSpec` of a trial spec (or the section itself); refuse a spec without one."""
    sub = spec if isinstance(spec, SubgroupSpec) else getattr(spec, "subgroups", None)
    if not isinstance(sub, SubgroupSpec) or sub.endpoint is None:
        raise InputError("The trial spec has no subgroups section; add e.g. subgroups: {endpoint: NAME, discover: {}}.")
    return sub


@dataclass(frozen=True)
class SubgroupResult:
    """What :func:`virtual_twins` found in one replicate.

    ``candidates``: one row per candidate subgroup (a node of the tree on the individual
    effects): ``label`` (the rule, a safe formula), ``depth``, ``n_discovery`` and
    ``predicted_effect`` (on the discovery half), then the honest estimates on the
    estimation half (``n, estimate, ci_low, ci_high, p_value, interaction_p``), the
    Benjamini-Hochberg ``q_value`` and ``reported`` (q <= fdr). ``individual``: the discovery
    half's ``subject_id``, ``arm`` and predicted individual effect ``z``.
    """

    endpoint: str
    measure: str
    arm: str
    control_arm: str
    replicate: int
    seed: int
    fdr: float
    n_discovery: int
    n_estimation: int
    excluded: int
    overall: float
    heterogeneity_p: float
    candidates: pd.DataFrame
    individual: pd.DataFrame

    @property
    def reported(self) -> tuple[str, ...]:
        """The rules of the subgroups that pass the false-discovery-rate control."""
        return tuple(self.candidates.loc[self.candidates["reported"], "label"])

    def forest(self) -> pd.DataFrame:
        """The reported subgroups as forest-plot rows (estimates from the estimation half)."""
        import pandas as pd

        rows = self.candidates[self.candidates["reported"]].assign(
            kind="discovered", rule=lambda d: d["label"], measure=self.measure
        )
        return pd.DataFrame(rows, columns=list(FOREST_COLUMNS)).reset_index(drop=True)


def virtual_twins(participants: pd.DataFrame, spec: Any, *, replicate: int = 0, seed: int) -> SubgroupResult:
    """Virtual Twins subgroup discovery with honest estimation, on one replicate.

    The participants of the experimental and control arms (with an observed endpoint and
    every feature) are split at random, within each arm, into a discovery part (fraction
    ``split``) and an estimation part. On the discovery part a random forest per arm
    (scikit-learn; features: covariates and baseline measures, categorical ones one-hot)
    predicts each participant's outcome under both arms, out-of-bag for the arm they were
    in, so nobody's own outcome predicts their counterfactual; ``z`` = experimental minus
    control. A regression tree (``max_depth``, leaves of at least ``min_fraction`` of the
    part) fitted on ``z`` gives the candidates: each node below the root (leaves and inner
    nodes, the tree cost-complexity pruned by cross-validation) as a readable rule that is
    also a safe formula. On the estimation part each candidate gets its effect with a 95 %
    CI and the test of the treatment-by-subgroup interaction (statsmodels: OLS with HC2
    errors and t references; binary endpoints a logistic model). Candidates are reported
    when a global test that the tree's leaves share one effect (HC2 Wald F-test) rejects at
    ``fdr`` -- so under a homogeneous effect at most a share ``fdr`` of trials report any --
    and then those that Benjamini-Hochberg at ``fdr`` picks (the nested, overlapping
    candidates' tests are dependent; BH alone reported some subgroup in 14 % of null trials).

    Arguments:
        participants: ``TrialData.participants`` (or any frame with its columns).
        spec: the ``TrialSpec`` (its ``subgroups`` section) or the ``SubgroupSpec``.
        replicate: which replicate to analyse.
        seed: seeds the split and the forests.

    Raises:
        InputError: no subgroups or discover section, missing columns, too few participants.
    """
    from twinloop.trials._subgroup_fit import discover

    sub = spec_of(spec)
    if sub.discover is None:
        raise InputError("The subgroups section has no discover settings; add discover: {} to find subgroups.")
    return discover(participants, sub, sub.discover, replicate=replicate, seed=seed)


def subgroup_effects(
    participants: pd.DataFrame, spec: Any, subgroups: Mapping[str, str] | None = None, *, replicate: int = 0
) -> pd.DataFrame:
    """Forest-plot rows for the overall effect and each subgroup, estimated on all of one replicate.

    ``subgroups`` maps labels to conditions (default: the section's prespecified ones); a
    label among the prespecified ones is of kind ``prespecified``, any other ``discovered``
    (estimate discovered subgroups on data they were not found on: see
    :meth:`SubgroupResult.forest`). Columns: :data:`FOREST_COLUMNS`; ``interaction_p`` tests
    the effect inside against outside the subgroup.
    """
    from twinloop.trials._subgroup_fit import effect_rows, prepare

    sub = spec_of(spec)
    data = prepare(participants, sub, replicate)
    wanted = dict(sub.prespecified) if subgroups is None else dict(subgroups)
    rows = effect_rows(data, sub, wanted)
    return rows.assign(kind=["overall"] + ["prespecified" if k in sub.prespecified else "discovered" for k in wanted])


def subgroup_analysis(participants: pd.DataFrame, spec: Any, *, replicate: int = 0, seed: int) -> pd.DataFrame:
    """The forest plot of one replicate: overall, prespecified (all participants) and the
    reported Virtual Twins subgroups (estimation half) when the section asks for discovery."""
    import pandas as pd

    sub = spec_of(spec)
    rows = subgroup_effects(participants, sub, replicate=replicate)
    if sub.discover is None:
        return rows
    found = virtual_twins(participants, sub, replicate=replicate, seed=seed).forest()
    return pd.concat([rows, found], ignore_index=True) if len(found) else rows


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """|A and B| / |A or B| of two boolean masks (1.0 when both are empty)."""
    import numpy as np

    union = np.logical_or(first, second).sum()
    return 1.0 if union == 0 else float(np.logical_and(first, second).sum() / union)
