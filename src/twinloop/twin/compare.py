"""What-if comparisons: one twin's ensemble under several treatment arms, member by
member (paired), summarized on a clinical endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twinloop.errors import InputError
from twinloop.twin.endpoints import endpoint


def _summary(v: np.ndarray) -> dict[str, float]:
    q = np.nanquantile(v, [0.05, 0.5, 0.95]) if np.isfinite(v).any() else np.full(3, np.nan)
    mean = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return {"mean": mean, "q05": float(q[0]), "q50": float(q[1]), "q95": float(q[2])}


@dataclass(frozen=True)
class Comparison:
    """The endpoint per arm (mean, 5/50/95 % quantiles over the members), the paired
    difference of the first two arms, P(first arm better) and the members behind them."""

    endpoint: str
    unit: str
    better: str
    hours: float
    arms: dict[str, dict[str, float]]
    difference: dict[str, Any]
    p_first_better: float
    ensemble_size: int
    version: int
    values: dict[str, list[float]] = field(repr=False)

    def to_dict(self, *, values: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "values"}
        return {**out, "values": self.values} if values else out


def compare_arms(
    twin: Any,
    arms: Mapping[str, Any],
    endpoint_name: str,
    *,
    hours: float,
    every: float | None,
    better: str | None,
) -> Comparison:
    """``twin``'s members run under every arm over ``hours``, scored on the endpoint."""
    if len(arms) < 2:
        raise InputError(f"compare needs at least two arms; got {list(arms)}.")
    units = {o.name: o.unit for o in twin.model.observables}
    ep = endpoint(endpoint_name, units, better)
    times = twin.horizon(hours, every)
    o = twin.model.observable_names.index(ep.observable)
    values = {}
    for name, plan in arms.items():
        members = twin.run_members(twin.future_inputs(plan), times)
        values[name] = ep.fn(times - twin.ensemble.time, members[:, :, o])
    names = list(arms)
    a, b = values[names[0]], values[names[1]]
    ok = np.isfinite(a) & np.isfinite(b)
    diff = a[ok] - b[ok]
    better_a = diff > 0 if ep.better == "higher" else diff < 0
    return Comparison(
        endpoint=ep.name,
        unit=ep.unit,
        better=ep.better,
        hours=hours,
        arms={k: _summary(v) for k, v in values.items()},
        difference={"arms": f"{names[0]} - {names[1]}", **_summary(diff)},
        p_first_better=float(better_a.mean()) if diff.size else float("nan"),
        ensemble_size=int(ok.sum()),
        version=twin.version,
        values={k: v.tolist() for k, v in values.items()},
    )
