"""The trial specification: round trip, overrides and refusals naming the key path."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from twinloop.errors import InputError
from twinloop.trials.spec import TrialSpec

sys.path.insert(0, str(Path(__file__).parent / "data"))
from trials_data import BASELINE_SLD, RECIST_ENDPOINTS, ct_protocol, size_change

SPEC: dict[str, Any] = {
    "name": "nsclc-schedules",
    "model": "tgi-claret",
    "population": "default",
    "eligibility": ["sld_baseline >= 20", "age <= 80"],
    "n": 20,
    "replicates": 2,
    "seed": 3,
    "duration": 364,
    "arms": {
        "three-weekly": {"kind": "chemotherapy", "dose_mg": 1200, "cycle_days": 21, "days_on": 1, "n_cycles": 6},
        "weekly": {"kind": "chemotherapy", "dose_mg": 400, "cycle_days": 7, "days_on": 1, "n_cycles": 18},
    },
    "observations": [ct_protocol(0.001)],
    "baseline": BASELINE_SLD,
    "endpoints": {"sld_change": size_change(168, [140, 196]), **RECIST_ENDPOINTS},
}


def changed(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(SPEC)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def test_round_trip_keeps_the_hash() -> None:
    spec = TrialSpec.from_dict(SPEC)
    again = TrialSpec.from_dict(spec.to_dict())
    assert again.content_hash() == spec.content_hash()
    assert again.to_dict() == spec.to_dict()
    assert spec.control_arm == "three-weekly" and spec.arms == ("three-weekly", "weekly")
    assert spec.context.endpoints == {"sld_change": "continuous", "objective_response": "binary",
                                      "pfs": "time_to_event"}  # fmt: skip
    assert spec.context.columns == ("group", "age", "sex", "weight", "sld_baseline")


def test_a_conditioned_population_round_trips() -> None:
    spec = TrialSpec.from_dict(changed(condition={"sex": ["female"]}))
    assert TrialSpec.from_dict(spec.to_dict()).content_hash() == spec.content_hash()
    assert "female" in spec.population.name


def test_with_overrides_and_validates() -> None:
    spec = TrialSpec.from_dict(SPEC)
    other = spec.with_(n=50, replicates=7, seed=9)
    assert (other.n, other.replicates, other.seed, other.product.seed) == (50, 7, 9, 9)
    assert (spec.chunk_size, other.chunk_size) == (40, 350)  # a chunk holds every participant up to 10,000
    assert other.content_hash() != spec.content_hash()
    assert TrialSpec.from_dict(other.to_dict()).content_hash() == other.content_hash()
    with pytest.raises(InputError, match="'n' must be an integer >= 4"):
        spec.with_(n=2)
    with pytest.raises(InputError, match="replicates"):
        spec.with_(replicates=0)


def test_from_yaml_resolves_the_population_beside_the_spec(tmp_path: Path) -> None:
    (tmp_path / "pop.yaml").write_text(yaml.safe_dump(TrialSpec.from_dict(SPEC).population.to_dict()))
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(changed(population="pop.yaml")))
    spec = TrialSpec.from_yaml(tmp_path / "trial.yaml")
    assert spec.base_dir == tmp_path
    assert spec.population.content_hash() == TrialSpec.from_dict(SPEC).population.content_hash()
    (tmp_path / "out.yaml").write_text(yaml.safe_dump(changed(population="../elsewhere/pop.yaml")))
    with pytest.raises(InputError, match=r"population.*outside the spec's folder"):
        TrialSpec.from_yaml(tmp_path / "out.yaml")


BAD = [
    ({"colour": "red"}, r"unknown keys \['colour'\]"),
    ({"n": 3}, "'n' must be an integer >= 4"),
    ({"n": "many"}, "'n' must be an integer"),
    ({"replicates": 0}, "'replicates' must be an integer >= 1"),
    ({"replicates": 100_001}, "'replicates' is 100001; the largest accepted is 100000"),
    ({"max_screened": 10}, "'max_screened' must be an integer >= 40"),
    ({"control_arm": "placebo"}, "control_arm is 'placebo'; it must be one of the arms"),
    ({"arms": None}, "needs 'arms'"),
    ({"arms": {"a b": {"kind": "none"}, "c": {"kind": "none"}}}, "arms.a b: the name 'a b'"),
    ({"duration": -1}, "'duration' must be > 0"),
    ({"run_in": {"arm": "weekly"}}, r"run_in must be a mapping \{arm: NAME, duration: T\}"),
    ({"run_in": {"arm": "x", "duration": 14}}, "run_in.arm is 'x'"),
    ({"run_in": {"arm": "weekly", "duration": -3}}, "'run_in.duration' must be > 0"),
    ({"eligibility": "age > 3"}, "eligibility must be a list"),
    ({"eligibility": ["age > 3", 4]}, r"eligibility\[1\] must be a formula"),
    ({"eligibility": ["height > 150"]}, r"eligibility\[0\] is 'height > 150': it uses unknown names \['height'\]"),
    ({"eligibility": ["__import__('os').system('true')"]}, r"eligibility\[0\] is"),
    ({"eligibility": ["age.real > 3"]}, r"eligibility\[0\] is"),
    ({"baseline": {"age": {"observation": "ct", "summary": "first"}}}, "baseline.age: the name 'age' is already"),
    ({"baseline": {"sld-0": {"observation": "ct", "summary": "first"}}}, "baseline.sld-0: the name 'sld-0'"),
    ({"baseline": {"b": {"observation": "ct", "summary": "mean", "window": [0, 42]}}},
     r"baseline.b.window is \[0.*without a run_in"),
    ({"baseline": ["sld"]}, "baseline must be a mapping"),
    ({"endpoints": {"arm": {"kind": "response", "recist": "ct"}}}, "endpoints.arm: the name 'arm' is already"),
    ({"endpoints": {"pfs": {"kind": "survival", "recist": "ct"}}}, "endpoints.pfs.kind must be one of"),
    ({"endpoints": {"../x": {"kind": "response", "recist": "ct"}}}, r"endpoints.../x: the name"),
    ({"duration": 100}, r"endpoints\.sld_change\.window is \[140\.0, 196\.0\]; it must end by the trial's duration"),
    ({"randomization": {"kind": "coin"}}, r"randomization\.kind"),
    ({"randomization": {"kind": "block", "ratio": {"three-weekly": 1}}}, r"randomization\.ratio"),
    ({"analysis": {"primary": "survival"}}, r"analysis\.primary"),
    ({"prognostic": [1]}, "prognostic"),
    ({"external_control": "yes"}, "external_control"),
    ({"subgroups": 3}, "subgroups"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_values_are_refused_with_the_key_path(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        TrialSpec.from_dict(changed(**changes))


def test_a_time_to_event_column_may_not_clash() -> None:
    endpoints = {**SPEC["endpoints"], "pfs_event": {"kind": "response", "recist": "ct"}}
    with pytest.raises(InputError, match=r"endpoints\.pfs_event: the name 'pfs_event' is already"):
        TrialSpec.from_dict(changed(endpoints=endpoints))


def test_run_in_windows_lie_within_the_run_in() -> None:
    baseline = {"sld_baseline": {"observation": "ct", "summary": "mean", "window": [0, 84]}}
    spec = TrialSpec.from_dict(changed(baseline=baseline, run_in={"arm": "weekly", "duration": 84}))
    assert spec.run_in is not None and spec.run_in.duration == 84.0
    with pytest.raises(InputError, match=r"within the run-in \[0, 42\]"):
        TrialSpec.from_dict(changed(baseline=baseline, run_in={"arm": "weekly", "duration": 42}))


def test_not_a_mapping() -> None:
    with pytest.raises(InputError, match="must be a mapping"):
        TrialSpec.from_dict(["n", 3])
