"""Randomization: exact ratios in blocks, balance within strata, simple draws' proportions, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from twinloop.errors import InputError
from twinloop.trials.context import SpecContext
from twinloop.trials.randomize import Randomization

ARMS = ("control", "weekly")
CTX = SpecContext(
    model_id="m",
    arms=ARMS,
    control_arm="control",
    covariates=("group", "sex", "age"),
    baselines=("sld_baseline",),
    endpoints={},
)


def table(replicates: int, n: int, seed: int = 0, shuffle: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(
        {
            "replicate": np.repeat(np.arange(replicates), n),
            "order": np.tile(np.arange(n), replicates),
            "sex": rng.choice(["female", "male"], replicates * n, p=[0.3, 0.7]),
            "age": rng.uniform(20, 90, replicates * n),
            "sld_baseline": rng.uniform(10, 100, replicates * n),
        }
    )
    return out.sample(frac=1.0, random_state=seed).reset_index(drop=True) if shuffle else out


def parse(raw: object, ctx: SpecContext = CTX) -> Randomization:
    return Randomization.parse("randomization", raw, ctx)


def test_default_is_simple_one_to_one_and_sections_round_trip() -> None:
    assert parse(None) == Randomization("simple", {"control": 1, "weekly": 1})
    for raw in (
        None,
        {"kind": "block", "ratio": {"control": 1, "weekly": 2}},
        {"kind": "stratified", "block_size": 4, "strata": ["sex", {"name": "elderly", "formula": "age >= 65"}]},
    ):
        r = parse(raw)
        assert parse(r.to_dict()) == r
    assert parse({"kind": "block", "ratio": {"control": 1, "weekly": 2}}).block_size == 6  # 2 x sum(ratio)


def test_block_ratio_is_exact_in_every_complete_block() -> None:
    r = parse({"kind": "block", "block_size": 6, "ratio": {"control": 1, "weekly": 2}})
    t = table(300, 40)
    t["arm"] = r.assign(t, ARMS, seed=5)
    t = t.sort_values(["replicate", "order"])
    weekly = (t["arm"] == "weekly").to_numpy().reshape(300, 40)
    complete = weekly[:, :36].reshape(300, 6, 6).sum(axis=2)
    assert np.all(complete == 4)
    # blocks are permuted, not fixed: every slot of a block takes both arms across replicates
    slots = weekly[:, :36].reshape(-1, 6).mean(axis=0)
    assert np.all((slots > 0.55) & (slots < 0.78))


def test_stratified_balance_within_every_stratum() -> None:
    r = parse({"kind": "stratified", "block_size": 4, "strata": ["sex", {"name": "elderly", "formula": "age >= 65"}]})
    t = table(200, 60, seed=1)
    t["arm"] = r.assign(t, ARMS, seed=11)
    t["stratum"] = r.strata_labels(t)
    assert set(t["stratum"]) == {f"sex={s};elderly={e}" for s in ("female", "male") for e in ("yes", "no")}
    counts = t.groupby(["replicate", "stratum", "arm"]).size().unstack(fill_value=0)
    assert (counts["control"] - counts["weekly"]).abs().max() <= 2  # block size / 2
    # against block randomization ignoring strata, which leaves strata out of balance
    t["plain"] = parse({"kind": "block", "block_size": 4}).assign(t, ARMS, seed=11)
    plain = t.groupby(["replicate", "stratum", "plain"]).size().unstack(fill_value=0)
    assert (plain["control"] - plain["weekly"]).abs().max() > 2


def test_simple_draws_follow_the_ratio() -> None:
    r = parse({"ratio": {"control": 1, "weekly": 3}})
    t = table(2000, 50, shuffle=False)
    weekly = r.assign(t, ARMS, seed=2) == "weekly"
    assert stats.binomtest(int(weekly.sum()), weekly.size, 0.75).pvalue > 0.001
    # independent of the enrolment position: a chi-square test over the first ten positions
    by_position = weekly.reshape(2000, 50)[:, :10].sum(axis=0)
    table_ = np.stack([by_position, 2000 - by_position])
    assert stats.chi2_contingency(table_).pvalue > 0.001
    # and not balanced as a block design would be
    assert np.ptp(weekly.reshape(2000, 50).sum(axis=1)) > 10


def test_assignment_is_deterministic_per_replicate_and_enrolment_order() -> None:
    r = parse({"kind": "stratified", "strata": ["sex"]})
    t = table(30, 20, seed=3)
    a = pd.Series(r.assign(t, ARMS, seed=7), index=pd.MultiIndex.from_frame(t[["replicate", "order"]]))
    assert np.array_equal(r.assign(t, ARMS, seed=7), a.to_numpy())
    other = t.sample(frac=1.0, random_state=9)  # rows in another order, fewer replicates
    other = other[other["replicate"] >= 12]
    b = pd.Series(r.assign(other, ARMS, seed=7), index=pd.MultiIndex.from_frame(other[["replicate", "order"]]))
    assert a.loc[b.index].equals(b)
    assert not np.array_equal(r.assign(t, ARMS, seed=8), a.to_numpy())
    # the first n' participants of each replicate make a smaller trial with the same assignments
    head = t[t["order"] < 8]
    c = pd.Series(r.assign(head, ARMS, seed=7), index=pd.MultiIndex.from_frame(head[["replicate", "order"]]))
    assert a.loc[c.index].equals(c)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"ratio": {"control": 1, "placebo": 1}}, r"randomization\.ratio names unknown arms \['placebo'\]"),
        ({"ratio": {"control": 1}}, r"randomization\.ratio lacks the arms \['weekly'\]"),
        ({"ratio": {"control": 0, "weekly": 1}}, r"randomization\.ratio\.control is 0"),
        ({"ratio": {"control": 1.5, "weekly": 1}}, r"randomization\.ratio\.control must be a whole number"),
        ({"kind": "block", "block_size": 5}, r"randomization\.block_size is 5; it must be a multiple of .* 2"),
        ({"kind": "minimisation"}, r"randomization\.kind must be one of simple, block, stratified"),
        ({"strata": ["sex"]}, r"randomization\.strata needs kind stratified"),
        ({"kind": "block", "strata": ["sex"]}, r"randomization\.strata needs kind stratified"),
        ({"kind": "stratified", "strata": ["weight"]}, r"randomization\.strata\[0\] is 'weight', not a covariate"),
        ({"kind": "stratified"}, r"randomization\.strata must be a non-empty list"),
        (
            {"kind": "stratified", "strata": [{"name": "big", "formula": "tumour > 3"}]},
            r"randomization\.strata\[0\]\.formula 'tumour > 3' uses \['tumour'\]",
        ),
        (
            {"kind": "stratified", "strata": [{"name": "x", "formula": "__import__('os')"}]},
            r"randomization\.strata\[0\]\.formula",
        ),
        ({"kind": "simple", "block_size": 4}, r"randomization has unknown keys \['block_size'\]"),
        ("block", r"randomization must be a mapping"),
    ],
)
def test_bad_sections_are_refused_with_their_key_path(raw: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse(raw)


def test_a_continuous_covariate_stratum_is_refused() -> None:
    r = parse({"kind": "stratified", "strata": ["age"]})
    with pytest.raises(InputError, match=r"randomization\.strata\[0\]: the covariate 'age' takes .* \(continuous\)"):
        r.assign(table(2, 20), ARMS, seed=0)
    with pytest.raises(InputError, match=r"randomization\.ratio names the arms"):
        parse(None).assign(table(2, 20), ("control", "daily"), seed=0)
