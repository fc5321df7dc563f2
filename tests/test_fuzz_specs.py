"""Property tests of the spec readers: product specs, populations, conditions, treatments,
observation protocols, product manifests and recorded inputs. Whatever they are given,
they accept it or raise a :class:`twinloop.errors.TwinloopError`; nothing else escapes.

The default run tries a few hundred inputs in all; the ``slow`` run the same properties
at 10,000 examples each. None of them simulates.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinloop.cohort.population import Population
from twinloop.cohort.regions import check_condition, parse_regions
from twinloop.errors import TwinloopError
from twinloop.models.registry import get as get_model
from twinloop.products.dataset import read_manifest
from twinloop.products.protocols import ObservationProtocol
from twinloop.products.spec import ProductSpec
from twinloop.products.treatments import validate_treatment

ONCOLOGY: dict[str, Any] = {
    "name": "fuzz-onc",
    "model": "tgi-claret",
    "population": "default",
    "n": 10,
    "seed": 1,
    "duration": 84,
    "resolution": 7,
    "chunk_size": 5,
    "arms": {"a": {"kind": "chemotherapy", "dose_mg": 1200, "cycle_days": 21, "n_cycles": 2},
             "b": [{"kind": "radiotherapy", "start": 7, "fractions": 5, "dose_gy": 2.0, "weekdays_only": True}]},
    "observations": [{"name": "ct", "observable": "sum_of_diameters", "schedule": {"every": 14, "jitter": 3},
                      "error": {"kind": "combined", "sd": 1.0, "cv": 0.05}, "missing": {"mcar": 0.1},
                      "dropout": {"hazard": 0.001}}],
    "outcomes": {"kind": "recist", "observation": "ct", "min_sd_days": 42},
    "solver": {"rtol": 1e-4, "atol": 1e-4},
    "origin": "2026-01-01T00:00:00Z",
}  # fmt: skip
GLUCOSE: dict[str, Any] = {
    "name": "fuzz-t1d",
    "model": "t1d-uva-padova",
    "population": {"extends": "default", "model": "t1d-uva-padova",
                   "constraints": [{"expression": "Vmx / Km0", "lower": 0, "name": "ratio"}]},
    "n": 10,
    "duration": 1440,
    "resolution": 5,
    "treatment": {"kind": "basal_bolus", "meals": [[420, 50], [720, 70]], "carb_ratio_scale": 1.1},
    "observations": [{"name": "cgm", "observable": "subcutaneous_glucose", "schedule": {"every": 5},
                      "error": {"kind": "cgm", "sensor": "Dexcom"},
                      "missing": {"mcar": 0.02, "mar": {"intercept": -3, "slope": 0.01}}},
                     {"name": "lab", "observable": "plasma_glucose", "schedule": {"visits": [0, 480]}}],
    "outcomes": {"kind": "glycaemic", "observable": "plasma_glucose"},
}  # fmt: skip
POPULATION: dict[str, Any] = {
    "model": "tgi-claret",
    "name": "fuzz-pop",
    "covariates": {"age": {"distribution": "normal", "mean": 63, "sd": 9, "lower": 18, "upper": 90, "unit": "a"},
                   "sex": {"distribution": "categorical", "levels": {"female": 0.4, "male": 0.6}},
                   "weight": {"distribution": "lognormal", "median": 72, "cv": 0.2, "unit": "kg"}},
    "typical": {"KL": 0.00214, "KD": 5.8e-5, "lam": 0.006, "y0": 90},
    "omega": {"KL": 0.556, "KD": 0.540},
    "effects": [{"parameter": "KL", "covariate": "weight", "kind": "power", "reference": 70, "exponent": 0.75}],
    "constraints": [{"expression": "log(2) / KL", "lower": 30, "upper": 3650, "name": "doubling_time_d"}],
    "output_constraints": [{"observable": "sum_of_diameters", "statistic": "final", "lower": 1, "upper": 1000}],
    "groups": {"young": {"fraction": 0.5, "typical": {"y0": 60}}, "old": {"fraction": 0.5}},
    "derived": {"half": "y0 / 2"},
    "regions": [{"name": "KL", "lower": 0, "upper": 1, "levels": []}],
}  # fmt: skip
CONDITION = {"group": ["young"], "KL": {"quantile": [0.1, 0.9]}, "age": {"lower": 20, "upper": 80}}

KEYS = st.sampled_from(["kind", "every", "visits", "name", "n", "quantile", "lower", "upper", "levels", "model",
                        "extends", "expression", "meals", "dose_mg", "mar", "sensor", "zz"])  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.sampled_from([0, 1, -1, 2**63, 10**12, 1e308, math.inf, -math.inf, math.nan, 1e-300, 0.5]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["default", "none", "cgm", "recist", "group", "KL", "../x", "2026-01-01", "1e9", "[/bold]"]),
)
NAMES = st.one_of(KEYS, st.text(max_size=6))
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside nested dicts and lists (the root included)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += paths(child, (*prefix, i))
    return out


def mutate(base: dict[str, Any], data: st.DataObject) -> Any:
    """``base`` with one to three random changes: a value replaced by junk, a key
    deleted, an unknown key added, a value wrapped in a list or a mapping."""
    spec: Any = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths(spec)))
        action = data.draw(st.sampled_from(["replace", "delete", "add", "wrap", "nest"]))
        if not where:
            spec = data.draw(JUNK) if action == "replace" else spec
            continue
        parent = spec
        for key in where[:-1]:
            parent = parent[key]
        key = where[-1]
        if action == "replace":
            parent[key] = data.draw(JUNK)
        elif action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent[key], dict):
            parent[key][data.draw(st.one_of(KEYS, st.text(max_size=6)))] = data.draw(JUNK)
        elif action == "wrap":
            parent[key] = [parent[key]]
        elif action == "nest":
            parent[key] = {data.draw(KEYS): parent[key]}
    return spec


def mutate_value(value: Any, data: st.DataObject) -> Any:
    """A mutant of any value (a list, say): mutated inside a mapping, then taken out."""
    spec = mutate({"v": value}, data)
    return spec.get("v") if isinstance(spec, dict) else spec


def holds(check: Callable[[], Any]) -> None:
    """The property: ``check`` returns or raises a TwinloopError."""
    with contextlib.suppress(TwinloopError):
        check()


def run(count: int, strategy: st.SearchStrategy[Any], prop: Callable[[Any], None]) -> None:
    settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))(
        given(strategy)(prop)
    )()


COUNT = [pytest.param(100, id="default"), pytest.param(10_000, id="10000", marks=pytest.mark.slow)]


@pytest.mark.parametrize("count", COUNT)
@pytest.mark.parametrize("base", [ONCOLOGY, GLUCOSE], ids=["oncology", "glucose"])
def test_product_specs_accept_or_refuse_cleanly(count: int, base: dict[str, Any]) -> None:
    assert ProductSpec.from_dict(base).n == 10  # the base is valid: the mutants are near misses
    run(count, st.data(), lambda data: holds(lambda: ProductSpec.from_dict(mutate(base, data))))


@pytest.mark.parametrize("count", COUNT)
def test_populations_accept_or_refuse_cleanly(count: int) -> None:
    assert Population.from_dict(POPULATION).name == "fuzz-pop"
    run(count, st.data(), lambda data: holds(lambda: Population.from_dict(mutate(POPULATION, data))))


@pytest.mark.parametrize("count", COUNT)
def test_conditions_regions_treatments_and_protocols_accept_or_refuse_cleanly(count: int) -> None:
    population = Population.from_dict(POPULATION)
    model = get_model("tgi-claret")
    check_condition(population, model, CONDITION)
    treatment = ONCOLOGY["arms"]["b"] + [ONCOLOGY["arms"]["a"]]
    protocol = GLUCOSE["observations"][0]

    def prop(data: st.DataObject) -> None:
        holds(lambda: check_condition(population, model, mutate(CONDITION, data)))
        holds(lambda: parse_regions(mutate_value(POPULATION["regions"], data)))
        holds(lambda: validate_treatment("arms.a", mutate_value(treatment, data), model, 1e4))
        holds(lambda: ObservationProtocol.parse(0, mutate(protocol, data)))

    run(count, st.data(), prop)


@st.composite
def dumps(draw: st.DrawFn) -> str:
    """The YAML text of a mutated product spec."""
    return yaml.safe_dump(mutate(ONCOLOGY, draw(st.data())), allow_unicode=True)


def yaml_texts() -> st.SearchStrategy[str]:
    """Raw text: YAML dumps of mutated specs, mangled, and arbitrary characters."""
    dumped = dumps()
    return st.one_of(
        dumped,
        st.tuples(dumped, st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
        st.text(max_size=200),
        st.sampled_from(["a: &x [1]\nb: *x\n", "- 1\n", "{", "n: !!python/object:os.system x\n", "\x00", "a: b: c"]),
    )


@pytest.mark.parametrize("count", COUNT)
def test_yaml_text_is_read_or_refused_cleanly(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "spec.yaml"

        def prop(text: str) -> None:
            file.write_text(text, encoding="utf-8", errors="surrogatepass")
            holds(lambda: ProductSpec.from_yaml(file))
            holds(lambda: Population.from_yaml(file))

        run(count, yaml_texts(), prop)


@pytest.mark.parametrize("count", COUNT)
def test_product_manifests_and_recorded_inputs_are_read_or_refused_cleanly(count: int) -> None:
    from twinloop.cli.replay import read_recorded_inputs

    manifest = {"kind": "twinloop.product", "name": "p", "model": {"id": "tgi-claret"}, "population": {},
                "spec": {}, "seeds": {"seed": 1}, "time_origin": "2026-01-01", "code_version": "0",
                "files": {"patients.parquet": {"sha256": "0", "rows": 1}}}  # fmt: skip
    rows = st.lists(
        st.tuples(*[st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**10),
                              st.sampled_from(["", "x", "1e400", "-0"])) for _ in range(3)]),
        max_size=6,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        json_file, csv_file = Path(folder) / "manifest.json", Path(folder) / "in.csv"

        def prop(data: st.DataObject) -> None:
            import json

            json_file.write_text(json.dumps(mutate(manifest, data)))
            holds(lambda: read_manifest(json_file))
            table = data.draw(rows)
            csv_file.write_text("minute,insulin_U_per_min,carbs_g\n" + "".join(f"{a},{b},{c}\n" for a, b, c in table))
            holds(lambda: read_recorded_inputs(csv_file))

        run(count, st.data(), prop)


@pytest.mark.parametrize("name", ["nsclc_two_schedules.yaml", "t1d_adolescents.yaml"])
def test_the_example_product_specs_are_accepted(name: str) -> None:
    """Validation must not refuse what the README shows (the specs are only read, not run)."""
    from twinloop.products.spec import ProductSpec

    spec = ProductSpec.from_yaml(Path(__file__).parents[1] / "examples" / name)
    assert spec.n >= 1 and spec.name


def test_the_example_population_is_accepted() -> None:
    from twinloop.cohort.population import Population

    population = Population.from_yaml(Path(__file__).parents[1] / "examples" / "t1d_population.yaml")
    assert population.output_constraints
