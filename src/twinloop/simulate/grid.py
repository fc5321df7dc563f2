"""The integration grid and the rasterization of input plans onto it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from twinloop.models.base import Model
from twinloop.models.inputs import Inputs


def integration_grid(model: Model, plans: Sequence[Inputs], times: np.ndarray) -> np.ndarray:
    """The shared time grid: output times, every input breakpoint inside the span,
    and every multiple of the model's ``sample_time``."""
    t0, t1 = float(times[0]), float(times[-1])
    points = set(times.tolist())
    for plan in plans:
        points |= {t for t in plan.breakpoints() if t0 <= t <= t1}
    if model.sample_time:
        n = math.floor((t1 - t0) / model.sample_time + 1e-9)
        points |= set((t0 + model.sample_time * np.arange(n + 1)).tolist())
    grid = np.array(sorted(points), dtype=np.float64)
    # Merge points closer than a tiny tolerance (floating-point twins of one time).
    keep = np.r_[True, np.diff(grid) > 1e-9 * max(1.0, abs(t1))]
    return grid[keep]


def rasterize(model: Model, plans: Sequence[Inputs], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn plans into arrays on ``grid``.

    Returns:
        ``rates``: ``(n_plans, len(grid) - 1, n_rate_inputs)``, the rate held over each
        grid interval; ``jumps``: ``(n_plans, len(grid), n_bolus_inputs)``, the amounts
        given at each grid point.
    """
    rate_idx = {inp.name: i for i, inp in enumerate(model.rate_inputs)}
    bolus_idx = {inp.name: i for i, inp in enumerate(model.bolus_inputs)}
    n, g = len(plans), len(grid)
    rates = np.zeros((n, max(g - 1, 0), len(rate_idx)))
    jumps = np.zeros((n, g, len(bolus_idx)))
    tol = 1e-9 * max(1.0, abs(float(grid[-1])))
    for p, plan in enumerate(plans):
        for seg in plan.segments:
            a = int(np.searchsorted(grid, seg.start - tol))
            b = int(np.searchsorted(grid, seg.end - tol))
            rates[p, a:b, rate_idx[seg.channel]] += seg.rate
        for bol in plan.boluses:
            k = int(np.searchsorted(grid, bol.time - tol))
            if k < g and abs(grid[k] - bol.time) <= tol:
                jumps[p, k, bolus_idx[bol.channel]] += bol.amount
    return rates, jumps
