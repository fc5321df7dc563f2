"""The numerical work behind :mod:`twinloop.trials.subgroups`: the analysed rows, subgroup
effects and interaction tests (statsmodels), the forests and the tree of Virtual Twins
(scikit-learn), and the tree's nodes written as rules."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.trials.subgroups import FOREST_COLUMNS, Discovery, SubgroupResult, SubgroupSpec, condition

_MIN_PER_ARM = 5  # participants per arm in each half of a split
_FOREST_LEAF = 5  # smallest leaf of the outcome forests


@dataclass(frozen=True)
class Prepared:
    """The analysed participants of one replicate: ``frame`` (subject_id, arm and features),
    outcome ``y``, ``treat`` (1: experimental arm), the numeric ``design`` matrix and, per
    design column, its feature and level (None for a numeric feature)."""

    frame: pd.DataFrame
    y: np.ndarray
    treat: np.ndarray
    design: np.ndarray
    encoding: tuple[tuple[str, str | None], ...]
    excluded: int

    def subset(self, rows: np.ndarray) -> Prepared:
        """The participants at ``rows`` (a boolean mask)."""
        frame = self.frame[rows].reset_index(drop=True)
        return Prepared(frame, self.y[rows], self.treat[rows], self.design[rows], self.encoding, self.excluded)

    def mask(self, label: str, rule: str, columns: Sequence[str]) -> np.ndarray:
        """Who satisfies ``rule`` (a condition over the features)."""
        formula = condition(f"subgroups.{label}", rule, tuple(columns))
        names = {c: _values(self.frame[c]) for c in formula.names}
        return np.broadcast_to(np.asarray(formula(names), dtype=bool), (len(self.frame),)).copy()


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _values(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype=np.float64) if _numeric(column) else column.astype(object).to_numpy()


def prepare(participants: pd.DataFrame, sub: SubgroupSpec, replicate: int) -> Prepared:
    """The participants of ``replicate`` in the two compared arms whose endpoint and features are observed."""
    needed = ["arm", str(sub.endpoint), *sub.features]
    missing = [c for c in needed if c not in participants.columns]
    if missing:
        raise InputError(f"participants lack the column(s) {missing} the subgroup analysis needs; pass run_trial's.")
    rows = participants
    if "replicate" in rows.columns:
        rows = rows[rows["replicate"] == replicate]
        if rows.empty:
            have = sorted(set(participants["replicate"].tolist()))[:10]
            raise InputError(f"replicate is {replicate!r}; the participants hold replicates {have}...")
    rows = rows[rows["arm"].isin([sub.arm, sub.control_arm])]
    y = pd.to_numeric(rows[str(sub.endpoint)], errors="coerce").to_numpy(dtype=np.float64)
    keep = np.isfinite(y)
    if "simulation_failed" in rows.columns:
        keep &= ~rows["simulation_failed"].to_numpy(dtype=bool)
    for c in sub.features:
        keep &= rows[c].notna().to_numpy()
    used = rows[keep].reset_index(drop=True)
    design, encoding = _design(used, sub.features)
    frame = used[[c for c in ("subject_id", "arm") if c in used.columns] + list(sub.features)]
    treat = (used["arm"] == sub.arm).to_numpy(dtype=np.int64)
    return Prepared(frame, y[keep], treat, design, encoding, int((~keep).sum()))


def _design(rows: pd.DataFrame, features: Sequence[str]) -> tuple[np.ndarray, tuple[tuple[str, str | None], ...]]:
    """Numeric features as they are, categorical ones one-hot (one column per level)."""
    columns: list[np.ndarray] = []
    encoding: list[tuple[str, str | None]] = []
    for c in features:
        if _numeric(rows[c]):
            columns.append(rows[c].to_numpy(dtype=np.float64))
            encoding.append((c, None))
            continue
        text = rows[c].astype(str).to_numpy()
        for level in sorted(set(text.tolist())):
            columns.append((text == level).astype(np.float64))
            encoding.append((c, level))
    design = np.column_stack(columns) if columns else np.zeros((len(rows), 0))
    return design, tuple(encoding)


# ---------------------------------------------------------------- effects and interaction tests


def _ols(y: np.ndarray, x: np.ndarray, term: int) -> tuple[float, float, float, float]:
    """Estimate, 95 % CI and p-value of column ``term`` of an OLS fit with HC2 errors and
    Student-t reference (residual degrees of freedom), less liberal than the normal in small subgroups."""
    from statsmodels.regression.linear_model import OLS

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fit = OLS(y, x).fit(cov_type="HC2", use_t=True)
        low, high = fit.conf_int(0.05)[term]
        p = float(fit.pvalues[term])
    estimate = float(fit.params[term])
    if not math.isfinite(p):  # no variation in the outcome: the estimate is exact
        low, high, p = estimate, estimate, math.nan
    return estimate, float(low), float(high), p


def _enough(treat: np.ndarray, k: int = 2) -> bool:
    return bool((treat == 1).sum() >= k and (treat == 0).sum() >= k)


def effect(y: np.ndarray, treat: np.ndarray) -> tuple[float, float, float, float]:
    """Difference in means (risk difference for 0/1 outcomes), experimental minus control:
    estimate, 95 % CI (HC2, i.e. unequal variances) and p-value; NaN with < 2 per arm."""
    if not _enough(treat):
        return math.nan, math.nan, math.nan, math.nan
    return _ols(y, np.column_stack([np.ones_like(y), treat]), 1)


def interaction_p(y: np.ndarray, treat: np.ndarray, inside: np.ndarray, binary: bool) -> float:
    """p-value of the treatment-by-subgroup interaction (``y ~ treat * inside``): OLS with HC2
    errors, or for a binary outcome a logistic model (OLS when the logistic fit fails, e.g.
    on complete separation); NaN with < 2 participants in an arm inside or outside."""
    if not (_enough(treat[inside]) and _enough(treat[~inside])):
        return math.nan
    t, s = treat.astype(np.float64), inside.astype(np.float64)
    x = np.column_stack([np.ones_like(t), t, s, t * s])
    if binary:
        from statsmodels.discrete.discrete_model import Logit

        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("error")
                p = float(Logit(y, x).fit(disp=0).pvalues[3])
        except (Warning, ValueError, np.linalg.LinAlgError):
            p = math.nan  # separation or no convergence: the OLS test below
        if math.isfinite(p):
            return p
    return _ols(y, x, 3)[3]


def effect_rows(data: Prepared, sub: SubgroupSpec, subgroups: Mapping[str, str]) -> pd.DataFrame:
    """The overall row, then one row per ``label: rule`` (columns :data:`FOREST_COLUMNS` but ``kind``)."""
    rows = [_row("overall", "", data.y, data.treat, None, sub)]
    for label, rule in subgroups.items():
        inside = data.mask(label, rule, sub.features)
        rows.append(_row(label, rule, data.y, data.treat, inside, sub))
    columns = [c for c in FOREST_COLUMNS if c != "kind"]
    return pd.DataFrame(rows, columns=columns)


def _row(
    label: str, rule: str, y: np.ndarray, treat: np.ndarray, inside: np.ndarray | None, sub: SubgroupSpec
) -> tuple[object, ...]:
    chosen = np.ones(len(y), dtype=bool) if inside is None else inside
    estimate, low, high, p = effect(y[chosen], treat[chosen])
    interaction = math.nan if inside is None else interaction_p(y, treat, inside, sub.kind == "binary")
    return (label, rule, sub.measure, int(chosen.sum()), estimate, low, high, p, interaction)


# ---------------------------------------------------------------- Virtual Twins


def _split(treat: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A random discovery mask with ``fraction`` of each arm."""
    discovery = np.zeros(len(treat), dtype=bool)
    for arm in (0, 1):
        rows = rng.permutation(np.flatnonzero(treat == arm))
        take = round(fraction * len(rows))
        if take < _MIN_PER_ARM or len(rows) - take < _MIN_PER_ARM:
            raise InputError(
                f"subgroups.discover: {len(rows)} analysable participant(s) in an arm; each half of the split "
                f"needs at least {_MIN_PER_ARM} per arm. Enlarge the trial (n) or change split."
            )
        discovery[rows[:take]] = True
    return discovery


def individual_effects(design: np.ndarray, y: np.ndarray, treat: np.ndarray, trees: int, seed: int) -> np.ndarray:
    """Each participant's predicted outcome under the experimental minus under the control arm,
    from one random forest per arm; a participant's prediction under their own arm is out-of-bag."""
    from sklearn.ensemble import RandomForestRegressor

    predicted = np.empty((len(y), 2))
    for arm in (0, 1):
        rows = treat == arm
        forest = RandomForestRegressor(
            n_estimators=trees, min_samples_leaf=_FOREST_LEAF, oob_score=True, random_state=seed + arm, n_jobs=1
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a participant in no out-of-bag sample: in-bag below
            forest.fit(design[rows], y[rows])
        predicted[:, arm] = forest.predict(design)
        oob = np.asarray(forest.oob_prediction_, dtype=np.float64).reshape(-1)
        predicted[rows, arm] = np.where(np.isfinite(oob), oob, predicted[rows, arm])
    return predicted[:, 1] - predicted[:, 0]


def discover(
    participants: pd.DataFrame, sub: SubgroupSpec, settings: Discovery, *, replicate: int, seed: int
) -> SubgroupResult:
    """Virtual Twins on one replicate (documented at :func:`twinloop.trials.subgroups.virtual_twins`)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a whole number >= 0; got {seed!r}.")
    data = prepare(participants, sub, replicate)
    rng = np.random.default_rng([int(seed), int(replicate)])
    discovery = _split(data.treat, settings.split, rng)
    found, held = data.subset(discovery), data.subset(~discovery)
    z = individual_effects(found.design, found.y, found.treat, settings.trees, int(rng.integers(2**31 - 1)))
    leaf = max(1, math.ceil(settings.min_fraction * len(z)))
    tree = pruned_tree(found.design, z, settings.max_depth, leaf, rng)
    nodes = candidate_nodes(tree, data.encoding)
    candidates, global_p = _estimate(held, sub, nodes, settings.fdr)
    individual = found.frame[[c for c in ("subject_id", "arm") if c in found.frame.columns]].assign(z=z)
    return SubgroupResult(
        str(sub.endpoint), sub.measure, sub.arm, sub.control_arm, int(replicate), int(seed), settings.fdr,
        len(found.y), len(held.y), data.excluded, float(z.mean()), global_p, candidates, individual,
    )  # fmt: skip


def _estimate(held: Prepared, sub: SubgroupSpec, nodes: list[dict], fdr: float) -> tuple[pd.DataFrame, float]:
    """Honest estimates of the candidates on the estimation half with Benjamini-Hochberg
    q-values, reported only when the global heterogeneity test over the leaves rejects at ``fdr``."""
    from statsmodels.stats.multitest import multipletests

    rows = effect_rows(held, sub, {n["label"]: n["label"] for n in nodes}).iloc[1:]
    table = pd.DataFrame(nodes, columns=["label", "depth", "leaf", "n_discovery", "predicted_effect"])
    table = table.merge(rows.drop(columns=["rule", "measure"]), on="label", how="left")
    leaves = [held.mask(label, label, sub.features) for label in table.loc[table["leaf"], "label"]]
    global_p = heterogeneity_p(held.y, held.treat, leaves)
    p = table["interaction_p"].fillna(1.0).to_numpy()
    if len(p):
        reject, q, _, _ = multipletests(p, alpha=fdr, method="fdr_bh")
    else:
        reject, q = np.zeros(0, dtype=bool), np.zeros(0)
    gate = bool(global_p <= fdr)  # NaN (fewer than two usable leaves) closes the gate
    return table.assign(q_value=q, reported=np.asarray(reject, dtype=bool) & gate), global_p


def heterogeneity_p(y: np.ndarray, treat: np.ndarray, leaves: Sequence[np.ndarray]) -> float:
    """p-value of the Wald test (HC2, F form) that the leaves (a partition) share one treatment
    effect: ``y ~ leaf + treat:leaf``, the treatment effects equal; NaN with < 2 leaves of >= 2 per arm."""
    from statsmodels.regression.linear_model import OLS

    usable = [leaf for leaf in leaves if _enough(treat[leaf])]
    if len(usable) < 2:
        return math.nan
    rows = np.logical_or.reduce(usable)
    columns = [leaf[rows].astype(np.float64) for leaf in usable]
    x = np.column_stack(columns + [c * treat[rows] for c in columns])
    k = len(usable)
    contrast = np.zeros((k - 1, 2 * k))
    contrast[np.arange(k - 1), k + np.arange(k - 1)] = 1.0
    contrast[np.arange(k - 1), 2 * k - 1] = -1.0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        test = OLS(y[rows], x).fit(cov_type="HC2", use_t=True).f_test(contrast)
    p = float(np.asarray(test.pvalue).reshape(-1)[0])
    return p if math.isfinite(p) else math.nan


def pruned_tree(design: np.ndarray, z: np.ndarray, depth: int, leaf: int, rng: np.random.Generator) -> Any:
    """The regression tree on ``z``, cost-complexity pruned with the strength chosen by 5-fold
    cross-validation and the one-standard-error rule (Breiman et al. 1984)."""
    from sklearn.model_selection import KFold
    from sklearn.tree import DecisionTreeRegressor

    def grow(alpha: float) -> DecisionTreeRegressor:
        return DecisionTreeRegressor(max_depth=depth, min_samples_leaf=leaf, ccp_alpha=alpha, random_state=0)

    full = grow(0.0).fit(design, z)
    alphas = full.cost_complexity_pruning_path(design, z).ccp_alphas
    if len(alphas) < 2:
        return full
    folds = KFold(5, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
    errors = np.zeros((5, len(alphas)))
    for k, (train, test) in enumerate(folds.split(design)):
        for j, alpha in enumerate(alphas):
            fit = grow(alpha).fit(design[train], z[train])
            errors[k, j] = np.mean((fit.predict(design[test]) - z[test]) ** 2)
    mean, se = errors.mean(axis=0), errors.std(axis=0, ddof=1) / np.sqrt(5)
    best = int(np.argmin(mean))
    chosen = alphas[np.flatnonzero(mean <= mean[best] + se[best]).max()]
    return grow(float(chosen)).fit(design, z)


def candidate_nodes(tree: object, encoding: Sequence[tuple[str, str | None]]) -> list[dict]:
    """Every node of a fitted regression tree below the root, as ``label`` (its rule),
    ``depth``, ``leaf``, ``n_discovery`` and ``predicted_effect`` (mean ``z``), in pre-order, each rule once."""
    t = tree.tree_  # type: ignore[attr-defined]
    out: dict[str, dict] = {}
    stack: list[tuple[int, list[tuple[int, str, float]]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        left, right = int(t.children_left[node]), int(t.children_right[node])
        if path:
            label = rule_text(path, encoding)
            value = float(np.asarray(t.value[node]).reshape(-1)[0])
            n = int(t.n_node_samples[node])
            row = out.setdefault(
                label, {"label": label, "depth": len(path), "leaf": False, "n_discovery": n, "predicted_effect": value}
            )
            row["leaf"] = row["leaf"] or left < 0
        if left >= 0:
            feature, threshold = int(t.feature[node]), float(t.threshold[node])
            stack.append((right, [*path, (feature, ">", threshold)]))
            stack.append((left, [*path, (feature, "<=", threshold)]))
    return list(out.values())


def _number(value: float) -> str:
    return np.format_float_positional(value, precision=4, unique=True, fractional=False, trim="-")


def rule_text(path: Sequence[tuple[int, str, float]], encoding: Sequence[tuple[str, str | None]]) -> str:
    """A tree path (design column, ``<=`` or ``>``, threshold) as a readable safe formula, e.g.
    ``age > 61.5 and sld_baseline <= 80.2 and sex == 'female'`` (bounds on one feature merged)."""
    bounds: dict[str, list[float]] = {}
    equal: dict[str, str] = {}
    unequal: dict[str, list[str]] = {}
    order: list[str] = []
    for column, op, threshold in path:
        name, level = encoding[column]
        order += [name] if name not in order else []
        if level is None:
            low, high = bounds.setdefault(name, [-math.inf, math.inf])
            bounds[name] = [max(low, threshold), high] if op == ">" else [low, min(high, threshold)]
        elif op == ">":
            equal[name] = level
        else:
            unequal.setdefault(name, []).append(level)
    parts: list[str] = []
    for name in order:
        if name in bounds:
            low, high = bounds[name]
            parts += [f"{name} > {_number(low)}"] if math.isfinite(low) else []
            parts += [f"{name} <= {_number(high)}"] if math.isfinite(high) else []
        elif name in equal:
            parts.append(f"{name} == {equal[name]!r}")
        else:
            parts += [f"{name} != {level!r}" for level in unequal[name]]
    return " and ".join(parts)
