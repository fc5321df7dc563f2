import numpy as np
import pytest

import twinloop as tl
from twinloop.simulate.grid import integration_grid, rasterize


def test_meal_is_eaten_at_five_grams_per_minute_in_whole_minutes():
    plan = tl.Inputs.meals([(100, 52)])
    assert [(s.start, s.end, s.rate) for s in plan.segments] == [(100, 110, 5.0), (110, 111, 2.0)]
    assert plan.total("carbs") == pytest.approx(52)


def test_a_meal_announced_while_eating_joins_the_queue():
    plan = tl.Inputs.meals([(0, 20), (2, 10)], rate_g_per_min=5)
    # queue: 20 g at 0, +10 g at minute 2 -> 6 minutes of 5 g, never 10 g/min
    assert [(s.start, s.end, s.rate) for s in plan.segments] == [(0, 6, 5.0)]


def test_series_merges_equal_rates_and_skips_zeros():
    plan = tl.Inputs.series("insulin", [0, 1, 2, 3, 4], [0.1, 0.1, 0.0, 0.5, 0.5], end=6)
    assert [(s.start, s.end, s.rate) for s in plan.segments] == [(0, 2, 0.1), (3, 6, 0.5)]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: tl.Inputs.rate("insulin", 5, 5, 1.0), r"must end after it starts"),
        (lambda: tl.Inputs.rate("insulin", 0, 5, -1.0), r"must be >= 0; got -1.0"),
        (lambda: tl.Inputs.series("insulin", [0, 2, 1], [1, 1, 1]), "strictly increasing; time 1.0 follows 2.0"),
        (lambda: tl.Inputs.series("insulin", [0, 1], [1, -2]), r"rates must be >= 0; got -2.0 at time 1.0"),
        (lambda: tl.Inputs.meals([(0, -5)]), "Meal carbohydrate must be >= 0 g"),
        (lambda: tl.Inputs.bolus("dose_iv", [(0, float("nan"))]), "must be a finite number"),
    ],
)
def test_bad_inputs_are_refused(build, message):
    with pytest.raises(tl.InputError, match=message):
        build()


def test_rasterized_rates_integrate_to_the_plan_total(pk):
    plan = tl.Inputs.infusion("infusion", 1.5, 2.25, 4.0) + tl.Inputs.bolus("dose_iv", [(3.0, 10.0), (3.0, 5.0)])
    grid = integration_grid(pk, [plan], np.array([0.0, 10.0]))
    assert {1.5, 3.0, 3.75} <= set(grid.tolist())
    rates, jumps = rasterize(pk, [plan], grid)
    assert np.sum(rates[0, :, 0] * np.diff(grid)) == pytest.approx(9.0)
    assert jumps[0, list(grid).index(3.0), 0] == 15.0
