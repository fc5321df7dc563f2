"""Glucose-control metrics against hand-computed cases, published numbers and simglucose's analysis."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from twinloop.control.metrics import (
    CVGA_ZONES,
    cvga_counts,
    cvga_points,
    cvga_zone,
    glucose_metrics,
    hypo_events,
    mean_ci,
    paired,
    risk_indices,
    summarize,
)
from twinloop.errors import InputError


def simglucose_analysis():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # simglucose imports pkg_resources
        from simglucose.analysis.report import CVGA_analysis
        from simglucose.analysis.risk import risk_index
    return risk_index, CVGA_analysis


def test_consensus_ranges_mean_sd_cv_gmi_by_hand():
    g = [[65.0, 120.0, 200.0, 260.0], [70.0, 180.0, 54.0, 250.0]]
    m = glucose_metrics(g, [0, 5, 10, 15])
    # patient 1: 120 in range; 65 below 70; 200, 260 above 180; 260 above 250
    # patient 2: the boundaries: 70 and 180 are in range, 54 is below 70 but not below 54, 250 is not above 250
    np.testing.assert_array_equal(m["tir_70_180_pct"], [25.0, 50.0])
    np.testing.assert_array_equal(m["tbr_70_pct"], [25.0, 25.0])
    np.testing.assert_array_equal(m["tbr_54_pct"], [0.0, 0.0])
    np.testing.assert_array_equal(m["tar_180_pct"], [50.0, 25.0])
    np.testing.assert_array_equal(m["tar_250_pct"], [25.0, 0.0])
    # mean 161.25; squared deviations 9264.0625 + 1701.5625 + 1501.5625 + 9751.5625 = 22218.75 over 3
    assert m["mean_mg_dl"][0] == 161.25
    assert m["sd_mg_dl"][0] == pytest.approx(math.sqrt(22218.75 / 3))
    assert m["cv_pct"][0] == pytest.approx(100 * math.sqrt(22218.75 / 3) / 161.25)
    assert m["gmi_pct"][0] == pytest.approx(3.31 + 0.02392 * 161.25)  # 7.17 %
    assert m["gmi_pct"][0] == pytest.approx(7.1671)


def test_missing_readings_are_left_out_of_the_percentages():
    m = glucose_metrics([[100.0, np.nan, 200.0, 60.0]], [0, 5, 10, 15])
    np.testing.assert_allclose(m["tir_70_180_pct"], [100 / 3])
    np.testing.assert_allclose(m["mean_mg_dl"], [120.0])


def test_risk_indices_match_the_published_example():
    # simglucose issue #38 tabulates rl, rh of ten readings by hand: LBGI = 7.7552 / 10, HBGI = sum(rh) / 10
    bg = np.array([122, 155, 144, 120, 200, 350, 456, 131, 70, 555], dtype=float)
    rh = [0.2277, 3.5834, 2.1229, 0.1441, 11.6047, 45.5737, 69.5785, 0.8055, 90.7512]
    lbgi, hbgi = risk_indices(bg)
    assert lbgi[0] == pytest.approx(0.77552, abs=1e-4)
    assert hbgi[0] == pytest.approx(sum(rh) / 10, abs=1e-4)
    # the symmetrized scale is centred at 112.5 mg/dL; 0 mg/dL (a crash) carries the largest risk, ~100
    assert risk_indices([112.5])[0][0] + risk_indices([112.5])[1][0] == pytest.approx(0.0, abs=1e-3)
    assert risk_indices([0.0])[0][0] == pytest.approx(100.0, rel=2e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_risk_indices_against_simglucose(seed):
    risk_index, _ = simglucose_analysis()
    rng = np.random.default_rng(seed)
    low = rng.uniform(25, 100, 50)
    lbgi, hbgi = risk_indices(low)  # all readings low: the two definitions agree
    ref = risk_index(low, len(low))
    assert lbgi[0] == pytest.approx(ref[0], rel=1e-12) and hbgi[0] == 0.0 == ref[1]
    mixed = rng.uniform(30, 450, 288)
    lbgi, hbgi = risk_indices(mixed)  # simglucose 0.2.11 averages each index over its own side only
    ref = risk_index(mixed, len(mixed))
    f = 1.509 * (np.log(mixed) ** 1.084 - 5.381)
    assert lbgi[0] == pytest.approx(ref[0] * (f < 0).mean(), rel=1e-12)
    assert hbgi[0] == pytest.approx(ref[1] * (f > 0).mean(), rel=1e-12)


def per_minute(*runs):
    g = np.concatenate([np.full(length, value, dtype=float) for value, length in runs])
    return g[None, :], np.arange(g.size, dtype=float)


@pytest.mark.parametrize(
    ("runs", "events", "minutes"),
    [
        (((100, 10), (60, 14), (100, 20)), 0, 0),  # 14 minutes below: no event
        (((100, 10), (60, 15), (100, 20)), 1, 15),
        (((60, 20), (100, 10), (60, 20)), 1, 50),  # 10 minutes above do not end it; it runs to the end
        (((60, 20), (100, 15), (60, 20)), 2, 40),
        (((60, 20), (np.nan, 30), (60, 5), (100, 15)), 1, 55),  # a gap neither ends nor begins one
    ],
)
def test_hypoglycaemic_events_per_minute(runs, events, minutes):
    g, t = per_minute(*runs)
    count, duration = hypo_events(g, t, 70.0)
    assert count[0] == events and duration[0] == minutes


def test_hypoglycaemic_events_at_five_minute_readings_and_per_threshold():
    # three 5-minute readings are 15 minutes; two readings above (10 minutes) do not end the event
    g = np.array([[100, 60, 60, 60, 100, 100, 50, 50, 50, 100, 100, 100, 100]], dtype=float)
    t = 5.0 * np.arange(g.shape[1])
    assert hypo_events(g, t, 70.0)[0][0] == 1
    assert hypo_events(g, t, 54.0)[0][0] == 1
    assert hypo_events(g[:, :4], t[:4], 70.0)[0][0] == 1 and hypo_events(g[:, :3], t[:3], 70.0)[0][0] == 0
    m = glucose_metrics(g, t)
    assert m["hypo_events_70"][0] == 1 and m["hypo_event_min_70"][0] == 40.0 and m["hypo_event_min_54"][0] == 15.0


def test_cvga_zones_of_known_points():
    lo = [100, 80, 60, 100, 80, 60, 100, 80, 60]
    hi = [150, 150, 150, 200, 200, 200, 350, 350, 350]
    expected = ["A", "Lower B", "Lower C", "Upper B", "B", "Lower D", "Upper C", "Upper D", "E"]
    assert list(cvga_zone(lo, hi)) == expected and sorted(expected) == sorted(CVGA_ZONES)
    # boundaries: 90 and 70 belong to the column to their left on the reversed axis, 180 and 300 to the row above
    assert list(cvga_zone([90, 70, 90.01], [180, 300, 179.99])) == ["B", "E", "A"]
    assert cvga_counts(expected) == {"A": 1, "B": 3, "C": 2, "D": 2, "E": 1}


def test_cvga_points_are_clipped_percentiles():
    g = np.linspace(20, 500, 1001)[None, :]
    lo, hi = cvga_points(g)
    assert lo[0] == 50.0 and hi[0] == 400.0  # the percentiles 32 and 488 are drawn on the grid's edges
    flat = np.full((1, 100), 120.0)
    assert cvga_points(flat) == (pytest.approx([110.0]), pytest.approx([120.0]))
    g2 = np.linspace(60, 260, 401)[None, :]
    assert cvga_points(g2)[0][0] == pytest.approx(np.percentile(g2, 2.5)) == pytest.approx(65.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cvga_counts_match_simglucose(seed):
    _, CVGA_analysis = simglucose_analysis()
    rng = np.random.default_rng(seed)
    # patients with different levels and spreads, over a day of 5-minute readings
    g = rng.uniform(60, 160, (300, 1)) * np.exp(rng.uniform(0.05, 0.6, (300, 1)) * rng.standard_normal((300, 288)))
    # simglucose counts a patient whose 2.5th percentile is above 110 (or 97.5th below 110) in no zone;
    # Magni et al. draw them on the grid's edge (zone A or B), as cvga_points does: compare the others
    raw_lo, raw_hi = np.percentile(g, 2.5, axis=1), np.percentile(g, 97.5, axis=1)
    g = g[(raw_lo <= 110) & (raw_hi >= 110)]
    n = g.shape[0]
    lo, hi = cvga_points(g)
    counts = cvga_counts(cvga_zone(lo, hi))
    ref = CVGA_analysis(g.T.copy())  # simglucose takes time-first arrays
    np.testing.assert_allclose(np.clip(ref[0], 50, 110), lo)
    np.testing.assert_allclose(np.clip(ref[1], 110, 400), hi)
    assert n > 150 and min(counts.values()) > 0
    assert [counts[z] for z in "ABCDE"] == pytest.approx([n * p for p in ref[2:]], abs=1e-9)
    assert sum(counts.values()) == n


def test_t_interval_by_hand_and_its_coverage():
    row = mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975, 4}
    assert row["n"] == 5 and row["mean"] == 3.0
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((3 - half, 3 + half))
    rng = np.random.default_rng(0)
    hits = [(r["ci_low"] < 10.0 < r["ci_high"]) for r in (mean_ci(rng.normal(10, 3, 15)) for _ in range(600))]
    assert np.mean(hits) == pytest.approx(0.95, abs=0.025)
    assert math.isnan(mean_ci([1.0])["ci_low"]) and mean_ci([np.nan, 2.0, 4.0])["n"] == 2


def test_bootstrap_interval_agrees_with_t_on_a_large_sample():
    x = np.random.default_rng(1).normal(50, 10, 400)
    t, boot = mean_ci(x), mean_ci(x, method="bootstrap", seed=3)
    assert boot["ci_low"] == pytest.approx(t["ci_low"], abs=0.2)
    assert boot["ci_high"] == pytest.approx(t["ci_high"], abs=0.2)
    assert mean_ci(x, method="bootstrap", seed=3) == boot
    with pytest.raises(InputError, match="method must be 't' or 'bootstrap'"):
        mean_ci(x, method="z")


def test_summary_by_group():
    metrics = {"tir_70_180_pct": np.array([50.0, 70.0, 90.0, 10.0]), "cvga_zone": np.array(["A", "B", "A", "E"])}
    rows = summarize(metrics, ["adult", "adult", "child", "child"])
    by = {(r["group"], r["metric"]): r for r in rows}
    assert set(by) == {("all", "tir_70_180_pct"), ("adult", "tir_70_180_pct"), ("child", "tir_70_180_pct")}
    assert by["adult", "tir_70_180_pct"]["mean"] == 60.0 and by["child", "tir_70_180_pct"]["n"] == 2
    assert by["all", "tir_70_180_pct"]["median"] == 60.0 and by["all", "tir_70_180_pct"]["q25"] == 40.0
    with pytest.raises(InputError, match="groups has 3 labels for 4 patients"):
        summarize(metrics, ["a", "b", "c"])


def test_paired_comparison_by_hand():
    first = {"x": np.array([1.0, 2.0, 3.0, 4.0]), "same": np.ones(4)}
    second = {"x": np.array([2.0, 4.0, 3.0, 7.0]), "same": np.ones(4)}
    rows = {r["metric"]: r for r in paired(first, second)}
    r = rows["x"]  # differences 1, 2, 0, 3: mean 1.5, sd sqrt(5/3)
    t_stat = 1.5 / (math.sqrt(5 / 3) / 2)
    assert r["mean_difference"] == 1.5 and r["mean_first"] == 2.5 and r["mean_second"] == 4.0
    assert r["p_paired_t"] == pytest.approx(2 * stats.t.sf(t_stat, 3))
    assert r["p_wilcoxon"] == pytest.approx(0.25)  # zero dropped; 3 positive ranks: exact two-sided 2/8
    half = stats.t.ppf(0.975, 3) * math.sqrt(5 / 3) / 2
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((1.5 - half, 1.5 + half))
    assert rows["same"]["p_paired_t"] == 1.0 == rows["same"]["p_wilcoxon"]
    with pytest.raises(InputError, match="compare controllers run on the same patients"):
        paired(first, {"x": np.ones(3)})


def test_bad_shapes_are_refused():
    with pytest.raises(InputError, match="glucose must be"):
        glucose_metrics(np.ones((2, 5)), np.arange(4))
    with pytest.raises(InputError, match="strictly increasing"):
        glucose_metrics(np.ones((2, 3)), [0, 5, 5])


def test_ranges_match_simglucose_percent_stats():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from simglucose.analysis.report import percent_stats
    rng = np.random.default_rng(4)
    g = np.round(rng.uniform(40, 300, (5, 288)))  # whole mg/dL, so the boundaries 70, 180, 250 occur
    ref, fig, _ = percent_stats(pd.DataFrame(g.T, columns=[f"p{i}" for i in range(5)]))
    plt.close(fig)
    m = glucose_metrics(g, 5.0 * np.arange(288))
    np.testing.assert_allclose(m["tir_70_180_pct"], ref["70<=BG<=180"].to_numpy())
    np.testing.assert_allclose(m["tbr_70_pct"], ref["BG<70"].to_numpy())
    np.testing.assert_allclose(m["tar_180_pct"], ref["BG>180"].to_numpy())
    np.testing.assert_allclose(m["tar_250_pct"], ref["BG>250"].to_numpy())
