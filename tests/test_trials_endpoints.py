"""Baseline measures and endpoints: hand-computed summaries, RECIST against the per-patient reference,
crossings, missing readings, and refused definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twinloop.errors import InputError
from twinloop.products.outcomes import recist
from twinloop.trials.context import SpecContext
from twinloop.trials.endpoints import (
    Endpoint,
    Measure,
    endpoint_kinds,
    endpoint_values,
    measure_values,
    parse_endpoints,
    parse_measures,
    recist_endpoints,
)

NAN = np.nan
CTX = SpecContext(
    model_id="m",
    arms=("a", "b"),
    control_arm="a",
    covariates=("group", "age"),
    baselines=("base",),
    endpoints={},
    protocols={"ct": "sum_of_diameters", "cgm": "subcutaneous_glucose"},
)
# three participants, five readings each: the second misses two (NaN), the third has none
TIMES = np.array([[0.0, 10, 20, 30, 40], [0, 10, 20, 30, 40], [0, 10, 20, 30, 40]])
VALUES = np.array([[100.0, 60, 80, 180, 50], [90, NAN, 200, NAN, 30], [NAN] * 5])
DATA = {"cgm": (TIMES, VALUES)}


def summary(raw: dict[str, object]) -> np.ndarray:
    measure = Measure.parse("baseline", "x", {"observation": "cgm", **raw}, CTX)
    return measure_values({"x": measure}, DATA)["x"].to_numpy()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"summary": "first"}, [100, 90, NAN]),  # baseline window [0, 0] by default
        ({"summary": "first", "window": [5, 40]}, [60, 200, NAN]),
        ({"summary": "last", "window": [0, 40]}, [50, 30, NAN]),
        ({"summary": "last", "window": [0, 35]}, [180, 200, NAN]),
        ({"summary": "mean", "window": [0, 40]}, [94, 320 / 3, NAN]),
        ({"summary": "median", "window": [0, 40]}, [80, 90, NAN]),
        ({"summary": "median", "window": [0, 30]}, [90, 145, NAN]),
        ({"summary": "min", "window": [10, 40]}, [50, 30, NAN]),
        ({"summary": "max", "window": [10, 40]}, [180, 200, NAN]),
        ({"summary": "sd", "window": [0, 10]}, [np.sqrt(800), NAN, NAN]),  # sample SD; one reading: NaN
        ({"summary": "nearest", "at": 9, "window": [0, 40]}, [60, 90, NAN]),
        ({"summary": "nearest", "at": 15, "window": [0, 40]}, [60, 200, NAN]),  # a tie: the earlier reading
        ({"summary": "nearest", "at": 30, "window": [25, 40]}, [180, 30, NAN]),
        ({"summary": "between", "range": [60, 100], "window": [0, 40]}, [60, 100 / 3, NAN]),
    ],
)
def test_summaries_match_hand_computed_values(raw: dict[str, object], expected: list[float]) -> None:
    np.testing.assert_allclose(summary(raw), expected, equal_nan=True)


def test_change_from_baseline_absolute_relative_and_threshold_responses() -> None:
    raw = {
        "base": {"observation": "cgm", "summary": "first"},
    }
    measures = parse_measures("baseline", raw, CTX)
    endpoints = parse_endpoints(
        "endpoints",
        {
            "late": {"kind": "measure", "observation": "cgm", "summary": "last"},
            "change": {"kind": "measure", "observation": "cgm", "summary": "last", "baseline": "base"},
            "pct": {"kind": "measure", "observation": "cgm", "summary": "last", "baseline": "base", "relative": True},
            "shrunk": {"kind": "response", "of": "pct", "below": -40},
            "high": {"kind": "response", "of": "late", "above": 50},
        },
        CTX,
    )
    base = measure_values(measures, DATA)
    out = endpoint_values(endpoints, DATA, base)
    assert list(out.columns) == ["late", "change", "pct", "shrunk", "high"]
    np.testing.assert_allclose(out["change"], [-50, -60, NAN], equal_nan=True)
    np.testing.assert_allclose(out["pct"], [-50, -200 / 3, NAN], equal_nan=True)
    np.testing.assert_allclose(out["shrunk"], [1, 1, NAN], equal_nan=True)  # missing stays missing
    np.testing.assert_allclose(out["high"], [0, 0, NAN], equal_nan=True)  # strictly above


def test_log_ratio_to_baseline_and_non_positive_values_give_nan() -> None:
    measures = parse_measures("baseline", {"base": {"observation": "ct", "summary": "first"}}, CTX)
    log = {"kind": "measure", "observation": "ct", "summary": "last", "baseline": "base", "relative": "log"}
    endpoints = parse_endpoints("endpoints", {"lr": log, "lr_up": {"kind": "response", "of": "lr", "above": 0}}, CTX)
    assert endpoints["lr"].to_dict()["relative"] == "log"
    assert parse_endpoints("endpoints", {"lr": endpoints["lr"].to_dict()}, CTX)["lr"] == endpoints["lr"]
    # baselines 100, 80, 0, 50, -; last readings 50, 120, 30, 0 (a vanished tumour), -
    times = np.tile([0.0, 42, 84], (5, 1))
    values = np.array([[100.0, 70, 50], [80, 100, 120], [0, 10, 30], [50, 20, 0], [NAN] * 3])
    data = {"ct": (times, values)}
    out = endpoint_values(endpoints, data, measure_values(measures, data))
    np.testing.assert_allclose(out["lr"], [np.log(0.5), np.log(1.5), NAN, NAN, NAN], equal_nan=True)
    np.testing.assert_allclose(out["lr"][:2], [-0.6931471805599453, 0.4054651081081644], rtol=1e-15)
    np.testing.assert_allclose(out["lr_up"], [0, 1, NAN, NAN, NAN], equal_nan=True)


def test_crossing_time_is_the_first_reading_beyond_censored_at_the_last() -> None:
    endpoints = parse_endpoints(
        "endpoints",
        {
            "hyper": {"kind": "time_to_event", "observation": "cgm", "above": 150},
            "low": {"kind": "time_to_event", "observation": "cgm", "below": 60},
            "late_low": {"kind": "time_to_event", "observation": "cgm", "below": 55, "window": [5, 35]},
        },
        CTX,
    )
    out = endpoint_values(endpoints, DATA, pd.DataFrame(index=range(3)))
    np.testing.assert_allclose(out["hyper"], [30, 20, NAN], equal_nan=True)
    assert out["hyper_event"].tolist() == [True, True, False]
    np.testing.assert_allclose(out["low"], [40, 40, NAN], equal_nan=True)  # 60 is not below 60
    assert out["low_event"].tolist() == [True, True, False]
    np.testing.assert_allclose(out["late_low"], [30, 20, NAN], equal_nan=True)  # censored at the window's last
    assert out["late_low_event"].tolist() == [False, False, False]


def test_recist_endpoints_by_hand() -> None:
    days = np.tile([0.0, 42, 84, 126], (5, 1))
    sld = np.array(
        [
            [50, 30, 20, 40],  # PR at 42, nadir 20; 40 >= 24 and +20 mm: PD at 126
            [50, 45, 48, 49],  # SD throughout: no response, censored at 126
            [50, NAN, NAN, NAN],  # baseline only (dropout): NE, a non-responder, censored at 0
            [NAN, NAN, NAN, NAN],  # no scan: nothing to evaluate
            [50, 0.5, NAN, 4],  # CR at 42, then 4 mm is +3.5 mm (< 5 mm): not PD
        ]
    )
    response, time, event = recist_endpoints(days, sld)
    np.testing.assert_array_equal(response, [1, 0, 0, NAN, 1])
    np.testing.assert_array_equal(time, [126, 126, 0, NAN, 126])
    np.testing.assert_array_equal(event, [True, False, False, False, False])


def test_recist_endpoints_match_the_per_patient_reference() -> None:
    rng = np.random.default_rng(4)
    n, k = 400, 9
    days = np.sort(np.arange(k) * 42.0 + rng.uniform(-7, 7, (n, k)), axis=1)
    days[:, 0] = 0.0
    sld = 60 * rng.uniform(0.5, 1.5, (n, 1)) * np.exp(np.cumsum(rng.normal(-0.04, 0.2, (n, k)), axis=1))
    sld[:, 0] = 60.0
    sld[rng.random((n, k)) < 0.15] = NAN
    ref = recist(days, sld)
    response, time, event = recist_endpoints(days, sld)
    first = np.where(np.isfinite(sld), days, np.inf).min(axis=1)
    assert event.sum() > 50 and 0 < np.nansum(response) < n  # both outcomes occur
    np.testing.assert_array_equal(response == 1, ref["objective_response"].to_numpy())
    np.testing.assert_array_equal(event, ref["progression_event"].to_numpy())
    np.testing.assert_allclose(time, ref["pfs_days"].to_numpy() + np.where(np.isfinite(first), first, 0))


def test_recist_endpoint_columns_and_kinds() -> None:
    raw = {"orr": {"kind": "response", "recist": "ct"}, "pfs": {"kind": "time_to_event", "recist": "ct"}}
    endpoints = parse_endpoints("endpoints", raw, CTX)
    assert {k: e.kind_of for k, e in endpoints.items()} == {"orr": "binary", "pfs": "time_to_event"}
    assert endpoint_kinds(raw) == {"orr": "binary", "pfs": "time_to_event"}
    days = np.array([[0.0, 42, 84]])
    out = endpoint_values(endpoints, {"ct": (days, np.array([[40.0, 20, 30]]))}, pd.DataFrame(index=range(1)))
    assert list(out.columns) == ["orr", "pfs", "pfs_event"]
    assert out.iloc[0].tolist() == [1.0, 84.0, True]


def test_sections_round_trip() -> None:
    raw = {
        "sld_change": {
            "kind": "measure",
            "observation": "ct",
            "summary": "nearest",
            "at": 168,
            "window": [140, 196],
            "baseline": "base",
            "relative": True,
        },
        "orr": {"kind": "response", "recist": "ct"},
        "pfs": {"kind": "time_to_event", "recist": "ct", "window": [0, 364]},
        "tir": {"kind": "measure", "observation": "cgm", "summary": "between", "range": [70, 180]},
        "tir70": {"kind": "response", "of": "tir", "above": 70},
        "hypo": {"kind": "time_to_event", "observation": "cgm", "below": 54},
    }
    endpoints = parse_endpoints("endpoints", raw, CTX)
    assert parse_endpoints("endpoints", {k: e.to_dict() for k, e in endpoints.items()}, CTX) == endpoints
    measures = parse_measures("baseline", {"base": {"observation": "ct", "summary": "mean", "window": [0, 7]}}, CTX)
    assert parse_measures("baseline", {k: m.to_dict() for k, m in measures.items()}, CTX) == measures


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"kind": "score"}, r"endpoints\.e\.kind must be one of measure, response, time_to_event"),
        ({"kind": "measure", "observation": "mri"}, r"endpoints\.e\.observation is 'mri'; it must name"),
        ({"kind": "measure", "observation": "ct", "summary": "mode"}, r"endpoints\.e\.summary must be one of"),
        ({"kind": "measure", "observation": "ct", "summary": "nearest"}, r"endpoints\.e\.at .* is needed"),
        ({"kind": "measure", "observation": "ct", "at": 3}, r"endpoints\.e\.at .* only with it"),
        ({"kind": "measure", "observation": "ct", "summary": "between"}, r"endpoints\.e\.range"),
        ({"kind": "measure", "observation": "ct", "window": [10, 5]}, r"endpoints\.e\.window is \[10, 5\]"),
        ({"kind": "measure", "observation": "ct", "window": [0, "end"]}, r"endpoints\.e\.window\[1\] must be a"),
        (
            {"kind": "measure", "observation": "ct", "summary": "nearest", "at": 300, "window": [0, 200]},
            r"endpoints\.e\.at \(300\) must lie within",
        ),
        ({"kind": "measure", "observation": "ct", "baseline": "bl"}, r"endpoints\.e\.baseline is 'bl'"),
        ({"kind": "measure", "observation": "ct", "relative": True}, r"endpoints\.e\.relative needs"),
        ({"kind": "measure", "observation": "ct", "relative": "log"}, r"endpoints\.e\.relative needs"),
        (
            {"kind": "measure", "observation": "ct", "baseline": "base", "relative": "ln"},
            r"endpoints\.e\.relative must be true .*, false .* or 'log' .*; got 'ln'",
        ),
        ({"kind": "measure", "observation": "ct", "baseline": "base", "relative": 1}, r"endpoints\.e\.relative must"),
        ({"kind": "measure", "observation": "ct", "recist": "ct"}, r"endpoints\.e has unknown keys \['recist'\]"),
        ({"kind": "response", "recist": "mri"}, r"endpoints\.e\.recist is 'mri'"),
        ({"kind": "response", "recist": "ct", "above": 3}, r"endpoints\.e: 'recist' cannot be combined"),
        ({"kind": "response", "of": "m", "above": 1, "below": 0}, r"endpoints\.e needs exactly one of"),
        ({"kind": "response", "of": "nothing", "above": 1}, r"endpoints\.e\.of is 'nothing'; it must name"),
        ({"kind": "response", "of": "e", "above": 1}, r"endpoints\.e\.of is 'e', the endpoint itself \(a cycle\)"),
        ({"kind": "response", "of": "r", "above": 1}, r"endpoints\.e\.of is 'r', a binary endpoint"),
        ({"kind": "time_to_event", "observation": "cgm"}, r"endpoints\.e needs exactly one of"),
        ({"kind": "time_to_event", "observation": "cgm", "below": True}, r"endpoints\.e\.below must be a finite"),
        ({"kind": "time_to_event", "recist": "ct", "min_sd_days": 42}, r"endpoints\.e has unknown keys"),
    ],
)
def test_bad_endpoints_are_refused_with_their_key_path(raw: dict[str, object], match: str) -> None:
    others = {"m": {"kind": "measure", "observation": "ct"}, "r": {"kind": "response", "recist": "ct"}}
    with pytest.raises(InputError, match=match):
        parse_endpoints("endpoints", {**others, "e": raw}, CTX)


def test_bad_sections_are_refused() -> None:
    late = {"e": {"kind": "measure", "observation": "ct", "summary": "nearest", "at": 400}}
    assert parse_endpoints("endpoints", late, CTX)["e"].measure is not None  # duration unknown: accepted
    with pytest.raises(InputError, match=r"endpoints\.e\.at is 400; it must not be after the trial's duration \(364\)"):
        parse_endpoints("endpoints", late, CTX, duration=364)
    long = {"e": {"kind": "time_to_event", "recist": "ct", "window": [0, 400]}}
    with pytest.raises(InputError, match=r"endpoints\.e\.window is \[0\.0, 400\.0\]; it must end by"):
        parse_endpoints("endpoints", long, CTX, duration=364)
    with pytest.raises(InputError, match=r"endpoints is empty"):
        parse_endpoints("endpoints", {}, CTX)
    with pytest.raises(InputError, match=r"endpoints has the name 'sld change'"):
        parse_endpoints("endpoints", {"sld change": {"kind": "response", "recist": "ct"}}, CTX)
    with pytest.raises(InputError, match=r"baseline\.b has unknown keys \['relative'\]"):
        parse_measures("baseline", {"b": {"observation": "ct", "relative": True}}, CTX)
    with pytest.raises(InputError, match=r"baseline\.b\.observation is None"):
        Measure.parse("baseline", "b", {}, CTX)
    # two response cycles cannot be written: an 'of' source must be a continuous measure
    cycle = {"x": {"kind": "response", "of": "y", "above": 0}, "y": {"kind": "response", "of": "x", "above": 0}}
    with pytest.raises(InputError, match=r"endpoints\.x\.of is 'y', a binary endpoint"):
        parse_endpoints("endpoints", cycle, CTX)
    with pytest.raises(InputError, match=r"endpoints\.x\.kind"):
        Endpoint.parse("endpoints", "x", {"kind": None}, CTX)
