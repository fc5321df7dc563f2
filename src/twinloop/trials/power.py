"""Operating characteristics by simulation: power (or type-I error) over sample sizes.

:func:`power` simulates ``replicates`` trials of the largest size in the grid in one run,
and for each size n analyses the first n participants by enrolment ``order`` of every
replicate (a valid smaller trial: common random numbers across n, so the curve is smooth).
Each (n, endpoint, method, comparison) gets its rejection rate, Monte Carlo standard error
and exact (Clopper-Pearson) 95 % interval. :meth:`PowerResult.sample_size` finds the
smallest n reaching a target power. :func:`closed_form_power` is the two-sample t-test's
power (statsmodels ``TTestIndPower``), the reference for a normal endpoint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError

MAX_GRID = 200
MAX_N = 10_000_000
KEYS = ["endpoint", "method", "comparison", "measure"]


@dataclass(frozen=True)
class SampleSize:
    """The smallest n reaching ``target`` power for one analysis; ``n`` None when the grid never does."""

    target: float
    endpoint: str
    method: str
    comparison: str
    n: float | None
    n_grid: int | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PowerResult:
    """Rejection rates per n and analysis (``table``), with the trial's alpha and primary endpoint."""

    table: pd.DataFrame
    alpha: float
    primary: str | None
    replicates: int
    lineage: dict[str, Any] = field(default_factory=dict)

    def sample_size(
        self,
        target: float = 0.8,
        *,
        endpoint: str | None = None,
        method: str | None = None,
        comparison: str | None = None,
    ) -> SampleSize:
        """The smallest n whose power reaches ``target``, interpolated linearly between grid points.

        Defaults: the primary endpoint, its first method and first comparison.
        """
        if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
            raise InputError(f"sample_size: target must be a power between 0 and 1; got {target!r}.")
        rows = self._rows(endpoint, method, comparison).sort_values("n")
        first = rows.iloc[0]
        n, power = rows["n"].to_numpy(), rows["power"].to_numpy()
        reached = np.flatnonzero(power >= target)
        where = dict(endpoint=first["endpoint"], method=first["method"], comparison=first["comparison"])
        mc = f"Monte Carlo SE about {float(rows['mc_se'].max()):.3f} per point ({self.replicates} replicates)"
        if reached.size == 0:
            note = (
                f"no n in the grid reaches power {target:g} (the largest, {power.max():.3f}, at n = "
                f"{int(n[power.argmax()])}); extend the grid to larger n. {mc}."
            )
            return SampleSize(target, **where, n=None, n_grid=None, note=note)
        i = int(reached[0])
        if i == 0:
            note = f"the smallest n of the grid already reaches power {target:g}; a smaller n may too. {mc}."
            return SampleSize(target, **where, n=float(n[0]), n_grid=int(n[0]), note=note)
        slope = (power[i] - power[i - 1]) / (n[i] - n[i - 1])
        estimate = float(n[i - 1] + (target - power[i - 1]) / slope)
        note = f"interpolated between n = {int(n[i - 1])} and n = {int(n[i])}. {mc}."
        return SampleSize(target, **where, n=estimate, n_grid=int(n[i]), note=note)

    def _rows(self, endpoint: str | None, method: str | None, comparison: str | None) -> pd.DataFrame:
        rows = self.table
        endpoint = endpoint or self.primary or str(rows["endpoint"].iloc[0])
        for column, value in (("endpoint", endpoint), ("method", method), ("comparison", comparison)):
            if value is None:
                value = str(rows["method"].iloc[0]) if column == "method" else str(rows[column].iloc[0])
            if value not in set(rows[column]):
                raise InputError(
                    f"sample_size: {column} {value!r} is not in the results; choose from {sorted(set(rows[column]))}."
                )
            rows = rows[rows[column] == value]
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the settings, the table's rows and the sample size for 80 % and 90 % power."""
        out: dict[str, Any] = {
            "alpha": self.alpha,
            "primary": self.primary,
            "replicates": self.replicates,
            "table": self.table.to_dict(orient="records"),
            "lineage": self.lineage,
        }
        if not self.table.empty:
            out["sample_size"] = {f"{t:g}": self.sample_size(t).to_dict() for t in (0.8, 0.9)}
        return out


def power(
    spec: Any, n_grid: Iterable[int], *, replicates: int, seed: int | None = None, methods: Any = None
) -> PowerResult:
    """Simulate ``replicates`` trials of ``max(n_grid)`` participants and analyse each n of the grid.

    Arguments:
        spec: the ``TrialSpec``.
        n_grid: participants randomized per trial, e.g. ``parse_n_grid("50:500:50")``.
        replicates: trials simulated (about 1,000 for a Monte Carlo SE of 1.5 points at 50 % power).
        seed: the simulation's seed (default: the spec's).
        methods: optional ``methods`` mapping in spec syntax replacing the plan's.

    Example:
        >>> power(spec, [100, 200, 300], replicates=500).sample_size(0.8)  # doctest: +SKIP
    """
    from twinloop.trials.run import run_trial

    grid = _check_grid(n_grid, spec.analysis)
    count = _whole("replicates", replicates, 1)
    data = run_trial(spec, n=max(grid), replicates=count, seed=seed)
    result = operating_characteristics(data.participants, spec, grid, methods=methods)
    return PowerResult(result.table, result.alpha, result.primary, count, dict(data.lineage))


def operating_characteristics(
    participants: pd.DataFrame, spec: Any, n_grid: Iterable[int], *, methods: Any = None
) -> PowerResult:
    """:func:`power` on a participants table already simulated (each replicate at least ``max(n_grid)`` long)."""
    from twinloop.trials.analysis import AnalysisPlan, analyse

    plan = spec if isinstance(spec, AnalysisPlan) else spec.analysis
    if methods is not None:
        plan = plan.with_methods(methods)
    grid = _check_grid(n_grid, plan)
    sizes = participants.groupby("replicate")["order"].max() + 1
    if sizes.min() < max(grid):
        raise InputError(
            f"n_grid reaches {max(grid)} participants but replicate {sizes.idxmin()} has only {sizes.min()}; "
            "simulate trials of the largest n (power does)."
        )
    tables = []
    for n in grid:
        results = analyse(participants[participants["order"] < n], plan)
        tables.append(_summary(results).assign(n=n))
    table = pd.concat(tables, ignore_index=True)
    table = table[["n", *[c for c in table.columns if c != "n"]]]
    return PowerResult(table, plan.alpha, plan.primary, int(sizes.size))


def _summary(results: pd.DataFrame) -> pd.DataFrame:
    from statsmodels.stats.proportion import proportion_confint

    grouped = results.groupby(KEYS, sort=False)
    out = grouped.agg(
        replicates=("reject", "size"),
        rejections=("reject", "sum"),
        failed=("estimate", lambda s: int(s.isna().sum())),
        median_estimate=("estimate", "median"),
    ).reset_index()
    rate = out["rejections"] / out["replicates"]
    low, high = proportion_confint(out["rejections"], out["replicates"], alpha=0.05, method="beta")
    return out.assign(
        power=rate,
        mc_se=np.sqrt(rate * (1 - rate) / out["replicates"]),
        ci_low=np.nan_to_num(np.asarray(low, float), nan=0.0),
        ci_high=np.nan_to_num(np.asarray(high, float), nan=1.0),
    )


def closed_form_power(delta: float, sd: float, n_per_arm: Any, alpha: float = 0.05) -> Any:
    """Power of the two-sided two-sample t-test (equal arms) for a difference ``delta`` (statsmodels)."""
    from statsmodels.stats.power import TTestIndPower

    if not sd > 0 or not 0 < alpha < 1:
        raise InputError(f"closed_form_power needs sd > 0 and 0 < alpha < 1; got sd={sd!r}, alpha={alpha!r}.")
    if np.any(np.asarray(n_per_arm) < 2):
        raise InputError(f"closed_form_power needs at least 2 participants per arm; got {n_per_arm!r}.")
    return TTestIndPower().power(
        effect_size=delta / sd, nobs1=n_per_arm, alpha=alpha, ratio=1.0, alternative="two-sided"
    )


def parse_n_grid(text: str, field: str = "--n") -> list[int]:
    """``"50:500:50"`` (start:stop:step, stop included) or ``"50,100,200"`` as a sorted list of sizes."""
    if not isinstance(text, str) or len(text) > 2000:
        raise InputError(f"{field} must be text such as 50:500:50 or 50,100,200; got {str(text)[:60]!r}.")
    spec = text.strip()
    if re.fullmatch(r"\d+:\d+:\d+", spec):
        start, stop, step = (int(part) for part in spec.split(":"))
        if step < 1 or stop < start:
            raise InputError(f"{field} {spec!r} must have step >= 1 and stop >= start, e.g. 50:500:50.")
        if (stop - start) // step + 1 > MAX_GRID:
            raise InputError(f"{field} {spec!r} gives more than {MAX_GRID} sizes; use a larger step.")
        values = list(range(start, stop + 1, step))
    elif re.fullmatch(r"\d+(\s*,\s*\d+)*", spec):
        values = sorted({int(part) for part in spec.split(",")})
        if len(values) > MAX_GRID:
            raise InputError(f"{field} lists more than {MAX_GRID} sizes; give fewer.")
    else:
        raise InputError(
            f"{field} {spec[:60]!r} is not a grid of sample sizes; write start:stop:step (50:500:50) "
            "or a list (50,100,200)."
        )
    return _check_grid(values, None, field)


def _check_grid(n_grid: Iterable[int], plan: Any, field: str = "n_grid") -> list[int]:
    arms = len(plan.ctx.arms) if plan is not None and plan.ctx is not None else 2
    try:
        values = sorted({_whole(field, n, 2 * arms) for n in n_grid})
    except TypeError:
        raise InputError(f"{field} must be a list of sample sizes; got {n_grid!r}.") from None
    if not values or len(values) > MAX_GRID:
        raise InputError(f"{field} must hold between 1 and {MAX_GRID} sample sizes; got {len(values)}.")
    return values


def _whole(field: str, value: Any, minimum: int) -> int:
    number = value if isinstance(value, int | np.integer) and not isinstance(value, bool) else None
    if number is None or not minimum <= number <= MAX_N:
        raise InputError(f"{field} must be whole numbers from {minimum} to {MAX_N}; got {value!r}.")
    return int(number)


def replicates_for(mc_se: float, power_level: float = 0.5) -> int:
    """Replicates for a Monte Carlo standard error ``mc_se`` at ``power_level`` (0.5 is the worst case)."""
    return math.ceil(power_level * (1 - power_level) / mc_se**2)
