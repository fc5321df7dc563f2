"""The bad-input corpus of ``trial run``: each bad trial spec is refused with one error line
naming the key path, exit 2, and nothing written (see :mod:`tests.badinput`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from badinput import Case, check_refused
from twinloop.cli.app import app

if CliRunner().invoke(app, ["trial", "--help"]).exit_code != 0:  # pragma: no cover (before the CLI lands)
    pytest.skip("the trial command is not registered", allow_module_level=True)

CHEMO = {"kind": "chemotherapy", "cycle_days": 21, "days_on": 1, "n_cycles": 2}
SMALL: dict[str, Any] = {
    "name": "small-trial",
    "model": "tgi-claret",
    "n": 4,
    "seed": 1,
    "duration": 84,
    "arms": {"low": {**CHEMO, "dose_mg": 400}, "high": {**CHEMO, "dose_mg": 1600}},
    "observations": [{"name": "ct", "observable": "sum_of_diameters", "schedule": {"every": 42}}],
    "baseline": {"sld_baseline": {"observation": "ct", "summary": "first"}},
    "endpoints": {"orr": {"kind": "response", "recist": "ct"}},
}
RUN = ["trial", "run", "{tmp}/trial.yaml", "--out", "{tmp}/out"]


def trial(case_id: str, names: list[str], **changes: Any) -> Case:
    """A ``trial run`` case: SMALL with ``changes`` (None deletes a key)."""
    raw = {k: v for k, v in {**copy.deepcopy(SMALL), **changes}.items() if v is not None}
    return Case(case_id, RUN, names, files={"trial.yaml": yaml.safe_dump(raw)})


SLD = {"observation": "ct", "summary": "first"}
CASES = [
    trial("unknown-key", ["unknown keys", "colour"], colour="red"),
    trial("n-3", ["'n'", ">= 4", "3"], n=3),
    trial("n-text", ["'n'", "many"], n="many"),
    trial("n-missing", ["'n'", "None"], n=None),
    trial("replicates-0", ["'replicates'", ">= 1"], replicates=0),
    trial("replicates-huge", ["'replicates'", "100000"], replicates=10**9),
    trial("max-screened-low", ["'max_screened'", ">= 4"], max_screened=2),
    trial("control-arm-unknown", ["control_arm", "placebo", "low"], control_arm="placebo"),
    trial("arms-missing", ["arms"], arms=None),
    trial("arm-name-slash", ["arms.a/b", "letters"], arms={"a/b": {"kind": "none"}, "c": {"kind": "none"}}),
    trial("run-in-keys", ["run_in", "arm", "duration"], run_in={"arm": "low"}),
    trial("run-in-arm", ["run_in.arm", "nope"], run_in={"arm": "nope", "duration": 7}),
    trial("run-in-duration", ["run_in.duration", "> 0"], run_in={"arm": "low", "duration": -7}),
    trial("eligibility-text", ["eligibility", "list"], eligibility="age > 18"),
    trial("eligibility-number", ["eligibility[0]", "formula"], eligibility=[18]),
    trial("eligibility-unknown", ["eligibility[0]", "height"], eligibility=["height > 150"]),
    trial("eligibility-eval", ["eligibility[0]", "__import__"], eligibility=["__import__('os').getcwd()"]),
    trial("eligibility-attribute", ["eligibility[0]", "age.real"], eligibility=["age.real > 3"]),
    trial("baseline-clash", ["baseline.age", "already"], baseline={"age": SLD}),
    trial("baseline-name", ["baseline.sld-0", "letters"], baseline={"sld-0": SLD}),
    trial("baseline-window", ["baseline.b.window", "run_in"], baseline={"b": {**SLD, "window": [0, 42]}}),
    trial("baseline-list", ["baseline", "mapping"], baseline=["sld"]),
    trial("endpoint-reserved", ["endpoints.arm", "already"], endpoints={"arm": {"kind": "response", "recist": "ct"}}),
    trial("endpoint-kind", ["endpoints", "kind", "survival"], endpoints={"x": {"kind": "survival"}}),
    trial("endpoints-missing", ["endpoints"], endpoints=None),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_trial_run_refuses_bad_specs(case: Case, tmp_path: Path) -> None:
    check_refused(case, tmp_path)
    assert not (tmp_path / "out").exists()
