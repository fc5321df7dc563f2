"""Property tests of the learn job-spec readers: whatever a spec holds, checking it either
accepts it or raises a :class:`~twinloop.errors.TwinloopError`, never anything else.

Specs are the examples (``examples/learn/*.yaml``) with a few fields replaced by values
of the wrong type or range (near-valid numbers, NaN, infinities, huge integers, other
models' names, nested junk), deleted or joined by unknown keys; and raw YAML text, the
examples' text with characters inserted or removed. The closure CSV reader gets random
text. No training runs: only the checks before it. The default run draws a few hundred
examples; the ``slow`` run 10,000 per property.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinloop._yaml import parse_yaml
from twinloop.cohort.spec import load_yaml
from twinloop.errors import TwinloopError
from twinloop.learn.job_spec import check_closure, check_posterior, check_surrogate
from twinloop.learn.series_csv import read_series
from twinloop.models.inputs import Inputs

ROOT = Path(__file__).parents[1] / "examples" / "learn"
BASES: dict[str, tuple[dict[str, Any], Callable[[Any], dict[str, Any]]]] = {
    "posterior": (load_yaml(ROOT / "npe_tgi_stein.yaml"), check_posterior),
    "surrogate": (load_yaml(ROOT / "surrogate_tgi_stein.yaml"), check_surrogate),
    "closure": (load_yaml(ROOT / "closure_claret_resistance.yaml"), check_closure),
}
TEXTS = {kind: (ROOT / name).read_text() for kind, name in
         (("posterior", "npe_tgi_stein.yaml"), ("surrogate", "surrogate_tgi_stein.yaml"),
          ("closure", "closure_claret_resistance.yaml"))}  # fmt: skip
NAMES = ["tgi-stein", "tgi-claret", "t1d-uva-padova", "tgi-claret:resistance", "y0", "g", "d", "KL", "lam",
         "sum_of_diameters", "subcutaneous_glucose", "log", "none", "default", "chemotherapy", "basal_bolus",
         ""]  # fmt: skip
NUMBERS = [0, -1, 1, 0.5, -0.0, 99, 100, 1e300, -1e300, 2**63, -(2**70), float("nan"), float("inf"), float("-inf")]
KEYS = ["epochs", "n_simulations", "times", "start", "every", "noise", "additive", "kind", "model", "1", "__class__"]

EXAMPLES = [pytest.param(60, id="default"), pytest.param(10_000, id="10000", marks=pytest.mark.slow)]

leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(NAMES)
    | st.sampled_from(NUMBERS)
)
junk = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into the nested mappings and lists of a spec."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with one to four fields replaced, deleted or joined by an unknown one."""
    spec = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(spec)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = spec
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "near", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(junk)
        elif action == "near":
            parent[path[-1]] = draw(st.sampled_from(NUMBERS + NAMES))
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS) | st.text(max_size=6))] = draw(junk)
    return spec


@st.composite
def edited_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few characters inserted, removed or replaced."""
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#,\n .0123456789eE")),
                                         max_size=4)) + text[at + cut:]  # fmt: skip
    return text


def accepts_or_refuses(check: Callable[[Any], dict[str, Any]], spec: Any) -> None:
    """The property: a checked spec comes back as a mapping, or a TwinloopError is raised."""
    try:
        checked = check(spec)
    except TwinloopError:
        return
    assert isinstance(checked, dict)


def run(count: int, strategy: st.SearchStrategy[Any], prop: Callable[[Any], None]) -> None:
    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings(max_examples=count, deadline=None, database=None, suppress_health_check=quiet)(given(strategy)(prop))()


@pytest.mark.parametrize("count", EXAMPLES)
@pytest.mark.parametrize("kind", sorted(BASES))
def test_a_spec_with_wrong_fields_is_accepted_or_refused_cleanly(kind: str, count: int) -> None:
    base, check = BASES[kind]
    run(count, mutated(base), lambda spec: accepts_or_refuses(check, spec))


@pytest.mark.parametrize("count", EXAMPLES)
@pytest.mark.parametrize("kind", sorted(BASES))
def test_raw_yaml_text_is_accepted_or_refused_cleanly(kind: str, count: int) -> None:
    _, check = BASES[kind]
    texts = edited_text(TEXTS[kind]) | st.text(max_size=200) | mutated(BASES[kind][0]).map(yaml.safe_dump)

    def prop(text: str) -> None:
        try:
            spec = parse_yaml(text, "spec.yaml")
        except TwinloopError:
            return
        accepts_or_refuses(check, spec)

    run(count, texts, prop)


def test_the_examples_themselves_are_accepted() -> None:
    for base, check in BASES.values():
        assert check(copy.deepcopy(base))["parameters"] == base["parameters"]


CSV_LINES = ["subject_id,time,value", "p1,0,50", "p1,42,45", "p2,0,60", "p1,0,51", "p3,-1,5", "p4,1,nan",
             "p5,1e400,3", ",1,2", "p6,1", "p7,2,3,4", '"p8,2,3']  # fmt: skip


@pytest.mark.parametrize("count", EXAMPLES)
def test_the_closure_csv_reader_accepts_or_refuses_cleanly(count: int) -> None:
    lines = st.lists(st.sampled_from(CSV_LINES) | st.text(max_size=20), max_size=8).map("\n".join)
    contents = lines.map(str.encode) | st.binary(max_size=60)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "series.csv"

        def prop(content: bytes) -> None:
            path.write_bytes(content)
            try:
                series, subjects = read_series(path, "sum_of_diameters", Inputs())
            except TwinloopError:
                return
            assert len(subjects) == series.values.shape[0] > 0

        run(count, contents, prop)
