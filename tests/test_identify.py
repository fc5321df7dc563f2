"""Pieces of the twin's identification that need no simulation."""

from __future__ import annotations

import numpy as np

from twinloop.twin.identify import converged


def test_levenberg_marquardt_stops_when_no_start_can_overtake_the_best() -> None:
    flat = [np.array([100.0, 500.0, np.inf])] * 5
    assert converged(flat, remaining=10)
    assert not converged(flat[:4], remaining=10)  # too few steps to judge
    best_moving = [np.array([100.0 + 5 - i, 500.0, np.inf]) for i in range(5)]
    assert not converged(best_moving, remaining=10)
    slow_far = [np.array([100.0, 140.0 - 2 * i, np.inf]) for i in range(5)]
    assert converged(slow_far, remaining=10)  # 132 - 2 * 10 stays above 100
    fast_far = [np.array([100.0, 140.0 - 5 * i, np.inf]) for i in range(5)]
    assert not converged(fast_far, remaining=10)  # 120 - 5 * 10 would pass it
    entering = [np.array([100.0, np.inf])] * 4 + [np.array([100.0, 105.0])]
    assert not converged(entering, remaining=10)  # a start that just entered the box is still moving
    assert not converged([np.full(3, np.inf)] * 5, remaining=10)
