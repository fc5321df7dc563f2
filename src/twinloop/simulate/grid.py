"""The integration grid and the rasterization of input plans onto it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from twinloop.models.base import Model
from twinloop.models.inputs import Inputs


def _sample_points(model: Model, plans: Sequence[Inputs], t0: float, t1: float) -> set[float]:
    """Multiples of the model's sample time at which its discrete update must run."""
    if not model.sample_time:
        return set()
    step = model.sample_time
    if not model.discrete_update_inputs:
        n = math.floor((t1 - t0) / step + 1e-9)
        return set((t0 + step * np.arange(n + 1)).tolist())
    # Only where a declared input is non-zero over the following interval.
    points: set[float] = set()
    for plan in plans:
        for seg in plan.segments:
            if seg.channel not in model.discrete_update_inputs or not np.any(np.asarray(seg.rate) != 0):
                continue
            first = math.floor((max(seg.start, t0) - t0) / step + 1e-9)
            last = math.ceil((min(seg.end, t1) - t0) / step - 1e-9)
            points |= set((t0 + step * np.arange(first, last)).tolist())
    return points


def integration_grid(model: Model, plans: Sequence[Inputs], times: np.ndarray) -> np.ndarray:
    """The shared time grid: output times, every input breakpoint and model event
    inside the span, and the multiples of the model's ``sample_time`` where its discrete update runs."""
    t0, t1 = float(times[0]), float(times[-1])
    points = set(times.tolist())
    for plan in plans:
        points |= {t for t in plan.breakpoints() if t0 <= t <= t1}
    points |= _sample_points(model, plans, t0, t1)
    points |= {e.time for e in model.events if t0 <= e.time <= t1}
    grid = np.array(sorted(points), dtype=np.float64)
    # Merge points closer than a tiny tolerance (floating-point twins of one time).
    keep = np.r_[True, np.diff(grid) > 1e-9 * max(1.0, abs(t1))]
    return grid[keep]


def rasterize(
    model: Model, plans: Sequence[Inputs], grid: np.ndarray, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Turn plans into arrays on ``grid``.

    With ``rows``, ``plans`` holds one cohort plan whose per-patient values are
    indexed by ``rows`` (one output row per entry of ``rows``).

    Returns:
        ``rates``: ``(n, len(grid) - 1, n_rate_inputs)``, the rate held over each
        grid interval; ``jumps``: ``(n, len(grid), n_bolus_inputs)``, the amounts
        given at each grid point.
    """
    rate_idx = {inp.name: i for i, inp in enumerate(model.rate_inputs)}
    bolus_idx = {inp.name: i for i, inp in enumerate(model.bolus_inputs)}
    g = len(grid)
    n = len(plans) if rows is None else len(rows)
    rates = np.zeros((n, max(g - 1, 0), len(rate_idx)))
    jumps = np.zeros((n, g, len(bolus_idx)))
    tol = 1e-9 * max(1.0, abs(float(grid[-1])))

    def per_row(v: Any, column: bool = False) -> np.ndarray | float:
        if rows is None or not np.ndim(v):
            return float(v)
        picked = np.asarray(v)[rows]
        return picked[:, None] if column else picked

    for p, plan in enumerate(plans):
        target = slice(None) if rows is not None else p
        for seg in plan.segments:
            a = int(np.searchsorted(grid, seg.start - tol))
            b = int(np.searchsorted(grid, seg.end - tol))
            rates[target, a:b, rate_idx[seg.channel]] += per_row(seg.rate, column=True)
        for bol in plan.boluses:
            k = int(np.searchsorted(grid, bol.time - tol))
            if k < g and abs(grid[k] - bol.time) <= tol:
                jumps[target, k, bolus_idx[bol.channel]] += per_row(bol.amount)
    return rates, jumps
