"""twinloop.trials.power: simulated power against the closed form, sample size, the n grid."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from twinloop.errors import InputError
from twinloop.trials.analysis import AnalysisPlan
from twinloop.trials.power import closed_form_power, operating_characteristics, parse_n_grid, replicates_for

sys.path.insert(0, str(Path(__file__).parent / "data"))
from trials_data import context, model_spec, participants, pilot_moments, resampled_power

ANCOVA = AnalysisPlan.parse("analysis", {"methods": {"y": ["ancova"]}}, context())


def test_closed_form_power_is_the_noncentral_t():
    for n in (10, 40, 100):
        df, nc = 2 * n - 2, 0.5 / 1.3 * np.sqrt(n / 2)
        crit = stats.t.isf(0.025, df)
        expected = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        assert closed_form_power(0.5, 1.3, n, 0.05) == pytest.approx(expected, rel=1e-8)
    with pytest.raises(InputError, match="sd > 0"):
        closed_form_power(0.5, 0.0, 10)


@pytest.fixture(scope="module")
def normal_power():
    """2,500 replicate trials (Monte Carlo SE <= 1 point) of a normal endpoint, effect 0.5 SD, in blocks of 2."""
    table = participants(replicates_for(0.01), 130, seed=21, effect=0.5, block=2)
    return operating_characteristics(table, ANCOVA, [40, 80, 130])


def test_simulated_power_within_two_points_of_the_closed_form(normal_power):
    table = normal_power.table
    assert list(table["n"]) == [40, 80, 130] and (table["replicates"] == 2500).all()
    expected = closed_form_power(0.5, 1.0, table["n"].to_numpy() / 2)
    assert np.abs(table["power"].to_numpy() - expected).max() <= 0.02, (table["power"].tolist(), expected)
    assert (table["mc_se"] <= 0.01).all()
    assert ((table["ci_low"] < table["power"]) & (table["power"] < table["ci_high"])).all()
    assert table["median_estimate"].to_numpy() == pytest.approx(0.5, abs=0.03)


def test_sample_size_for_a_target_power(normal_power):
    from statsmodels.stats.power import TTestIndPower

    per_arm = TTestIndPower().solve_power(effect_size=0.5, alpha=0.05, power=0.7)
    found = normal_power.sample_size(0.7)
    assert found.endpoint == "y" and found.method == "ancova" and found.comparison == "treated vs control"
    assert found.n == pytest.approx(2 * per_arm, abs=8)
    unreachable = normal_power.sample_size(0.99)
    assert unreachable.n is None and "extend the grid" in unreachable.note
    assert "a smaller n may too" in normal_power.sample_size(0.2).note
    json.dumps(normal_power.to_dict())
    with pytest.raises(InputError, match="method 'cox' is not in the results"):
        normal_power.sample_size(0.8, method="cox")


def test_a_grid_beyond_the_simulated_trials_is_refused():
    with pytest.raises(InputError, match="replicate 0 has only 20"):
        operating_characteristics(participants(2, 20, seed=0), ANCOVA, [10, 40])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50:500:50", list(range(50, 501, 50))), ("100, 50,50", [50, 100]), ("8:10:5", [8])],
)
def test_n_grid_parses(text, expected):
    assert parse_n_grid(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("50:10:5", "stop >= start"),
        ("50:500:0", "step >= 1"),
        ("1:100000:1", "more than 200 sizes"),
        ("2,50", "from 4 to"),
        ("fifty", "not a grid of sample sizes"),
        ("50:-5:5", "not a grid"),
    ],
)
def test_bad_n_grid_is_refused(text, match):
    with pytest.raises(InputError, match=match):
        parse_n_grid(text)


@pytest.mark.slow  # the engine's compilation alone is 5-15 s on this machine
def test_power_runs_the_trial_once_at_the_largest_n():
    """A tgi-claret trial of the two schedules through run_trial: each n analysed, the lineage kept."""
    from twinloop.trials.power import power

    spec = model_spec(null=False, n=10, seed=4)
    result = power(spec, [8, 16], replicates=3, methods={"pfs": ["logrank"], "objective_response": ["logistic"]})
    assert result.replicates == 3 and result.lineage
    assert sorted(set(result.table["n"])) == [8, 16] and (result.table["replicates"] == 3).all()
    assert set(result.table["endpoint"]) == {"pfs", "objective_response"}
    json.dumps(result.to_dict())


@pytest.mark.slow  # about 3 minutes: a pilot of 20,000 and 2,000 trials of 100 through the engine
def test_model_based_power_of_the_tumour_size_log_ratio_against_the_closed_form():
    """tgi-claret, weekly chemotherapy against none: the t-test's power on the log ratio of tumour size
    at week 24 is within 2 points of the closed form from n = 60 on. Below, it lies above the formula
    (by 4 to 7 points at n = 20): the untreated arm's log ratio has skewness about 2 and kurtosis about
    8, and small trials seldom hold its tail. Resampling the pilot reproduces the simulated power
    there, and normal draws with the pilot's means, sds and missing shares reproduce the formula."""
    from twinloop.trials.power import power
    from twinloop.trials.run import run_trial

    spec = model_spec(null=False, n=100, seed=6, control={"kind": "none"})
    pilot = run_trial(spec, n=20_000, replicates=1, seed=7).participants
    table = power(spec, [20, 40, 60, 80, 100], replicates=2000, methods={"sld_log": ["ancova"]}).table
    delta, sd, share = pilot_moments(pilot, "sld_log")
    expected = closed_form_power(delta, sd, table["n"].to_numpy() / 2 * share)
    gap = table["power"].to_numpy() - expected
    assert np.abs(gap[table["n"].to_numpy() >= 60]).max() <= 0.02, (table["power"].tolist(), expected)
    draws = 20_000
    for (n, simulated, se), formula in zip(table[["n", "power", "mc_se"]].to_numpy(), expected, strict=True):
        resampled = resampled_power(pilot, "sld_log", int(n), draws=draws, seed=1)
        normal = resampled_power(pilot, "sld_log", int(n), draws=draws, seed=2, normal=True)
        assert abs(simulated - resampled) <= 3 * np.hypot(se, 0.5 / np.sqrt(draws)), (n, simulated, resampled)
        assert abs(normal - formula) <= 0.015, (n, normal, formula)
