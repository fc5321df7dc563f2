"""Model profiles: what belongs to a model besides its equations, declared with it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop._yaml import load_yaml
from twinloop.cohort import Population
from twinloop.cohort.defaults import MAX_LOG_SD
from twinloop.govern import validation
from twinloop.govern.report import GENERIC_CONTEXT, model_context
from twinloop.learn import closures
from twinloop.models import registry
from twinloop.models.base import Model, Observable, Parameter, State
from twinloop.models.noise import NoiseModel, noise_for
from twinloop.models.profile import ClosureFeature, ClosureSpec, ModelProfile, Treatment, closed_form
from twinloop.models.t1d_population import population_spec
from twinloop.models.treatments import CHEMOTHERAPY
from twinloop.products.treatments import build_plan, validate_treatment

SRC = Path(tl.__file__).parent


def decay(model_id: str = "profile-test-decay", *, noise: NoiseModel | None = None, **profile: object) -> Model:
    """``x' = -k x`` from ``x0``: closed form ``x0 exp(-k t)``; no population file."""
    return Model(
        id=model_id,
        version="1",
        name="decay",
        description="first-order decay",
        time_unit="h",
        states=(State("x", "mg", nonnegative=True),),
        parameters=(Parameter("x0", "mg", 10.0, 1.0, 100.0), Parameter("k", "1/h", 0.2, 0.02, 2.0)),
        inputs=(),
        observables=(Observable("amount", "mg", lambda x, p: x[0], noise=noise),),
        rhs=lambda t, x, u, p: -p["k"] * x,
        initial_state=lambda p: jnp.stack([p["x0"] * 1.0]),
        standard_scenario=lambda p: (tl.Inputs(), 10.0),
        profile=ModelProfile(**profile),  # type: ignore[arg-type]
    )


# --- the built-ins declare their profile -------------------------------------
def test_t1d_population_file_is_the_fit_to_the_published_patients() -> None:
    """The YAML next to the model is what the fit to the 30 patients gives today."""
    stored = load_yaml(SRC / "models" / "t1d_uva_padova.population.yaml")
    assert stored == population_spec()
    assert len(stored["omega"]["names"]) == 29 and set(stored["groups"]) == {"child", "adolescent", "adult"}


def test_every_builtin_declares_noise_and_the_population_of_a_profile() -> None:
    for model_id in registry.available():
        model = tl.models.get(model_id)
        assert all(isinstance(o.noise, NoiseModel) for o in model.observables), model_id
        assert model.profile.context is not None, model_id
        if model.profile.population is not None:
            assert Population.default(model).model_id == model_id
    assert tl.models.get("tgi-claret-2cmt").profile.population == tl.models.get("tgi-claret").profile.population
    cgm = noise_for(tl.models.get("t1d-uva-padova"), "subcutaneous_glucose")
    assert cgm.range == (40.0, 400.0)


def test_closed_form_references_of_the_builtins_pass() -> None:
    rows = {m: validation.validate(tl.models.get(m)) for m in ("tgi-stein", "pk-one-compartment")}
    for model_id, found in rows.items():
        assert len(found) == 1 and found[0]["passed"], (model_id, found)
        assert found[0]["max_relative_error"] < 1e-6


def test_treatments_come_from_the_profile() -> None:
    claret, stein = tl.models.get("tgi-claret"), tl.models.get("tgi-stein")
    items = validate_treatment("arm", {"kind": "chemotherapy", "dose_mg": 100.0, "n_cycles": 2, "days_on": 1}, claret)
    plan = build_plan(items, claret.param_map(claret.default_parameters[:, None]), pd.DataFrame(index=[0]), 60.0,
                      claret)  # fmt: skip
    assert [(b.channel, b.time) for b in plan.boluses] == [("dose_iv", 0.0), ("dose_iv", 21.0)]
    with pytest.raises(tl.InputError, match=r"arm\[0\]\.kind must be one of none \(the treatments model 'tgi-stein'"):
        validate_treatment("arm", {"kind": "chemotherapy", "dose_mg": 100.0}, stein)
    assert validate_treatment("arm", None, stein) == [{"kind": "none"}]


def test_closures_are_named_after_the_model_that_declares_them() -> None:
    assert "tgi-claret:resistance" in closures.available()
    core_id, closure = closures.get("tgi-claret:resistance")
    assert core_id == "tgi-claret" and closure.target == "tumour_size" and closure.upper == 1.0
    with pytest.raises(tl.ModelError, match="Unknown closure 'tgi-stein:resistance'"):
        closures.get("tgi-stein:resistance")


# --- a model from outside ----------------------------------------------------
def test_undeclared_noise_is_refused_with_how_to_declare_it() -> None:
    bare = decay()
    with pytest.raises(tl.InputError, match=r"'amount' of model 'profile-test-decay' declares no observation noise"):
        noise_for(bare, "amount")
    given = NoiseModel(additive=0.5, proportional=0.0)
    assert noise_for(bare, "amount", {"amount": given}) is given
    assert noise_for(decay(noise=given), "amount") is given
    with pytest.raises(tl.InputError, match="'glucose' is not an observable"):
        noise_for(bare, "glucose")


def test_population_from_bounds_is_lognormal_around_the_defaults() -> None:
    model = decay("profile-test-bounds")
    registry.register(model.id, lambda: model)
    cohort = Population.default(model.id).sample(4000, seed=3)
    for p in model.parameters:
        logs = np.log(cohort.parameter(p.name))
        sd = min(np.log(p.upper / p.lower) / 6.0, MAX_LOG_SD)
        assert np.all((cohort.parameter(p.name) >= p.lower) & (cohort.parameter(p.name) <= p.upper))
        assert logs.mean() == pytest.approx(np.log(p.default), abs=0.03)
        assert logs.std() == pytest.approx(sd, rel=0.06)


def test_a_user_profile_validates_closes_and_reports() -> None:
    reference = closed_form(
        "x0 exp(-k t)", "amount", np.linspace(0, 10, 11), lambda p, t: p["x0"] * np.exp(-p["k"] * t)
    )
    model = decay(validation=(reference,))
    (row,) = validation.validate(model)
    assert row["passed"] and row["max_relative_error"] < 1e-6 and row["cases"] == 1
    wrong = closed_form("wrong", "amount", np.linspace(0, 10, 11), lambda p, t: p["x0"] * np.exp(-2 * p["k"] * t))
    assert not validation.validate(decay(validation=(wrong,)))[0]["passed"]
    assert model_context(model) is GENERIC_CONTEXT
    assert model_context(tl.models.get("t1d-uva-padova")).decision_consequence == "high"


def test_profile_declarations_are_checked() -> None:
    with pytest.raises(tl.ModelError, match="Treatment kinds must be unique and not 'none'"):
        ModelProfile(treatments=(CHEMOTHERAPY, CHEMOTHERAPY))
    with pytest.raises(tl.ModelError, match="check_horizon must be > 0"):
        ModelProfile(check_horizon=0.0)
    with pytest.raises(tl.ModelError, match=r"population file '.*nowhere\.yaml' does not exist"):
        ModelProfile(population=Path("nowhere.yaml"))
    spec = ClosureSpec("c", "y", (ClosureFeature("t", "h", lambda t, x, u, p: t),), "1", 0.0, 1.0)
    with pytest.raises(tl.ModelError, match="Closure 'c' of model 'profile-test-decay' targets state 'y'"):
        decay(closures=(spec,))
    bad = closed_form("r", "nope", [0.0, 1.0], lambda p, t: t)
    with pytest.raises(tl.ModelError, match="names observable 'nope'"):
        decay(validation=(bad,))
    odd = Treatment("dose", (), lambda at, item, d: None, lambda i, p, latent, d: tl.Inputs(), lambda i: ("nope",))
    with pytest.raises(tl.InputError, match="has no 'nope' input for dose"):
        validate_treatment(
            "arm", {"kind": "dose"}, dataclasses.replace(decay(), profile=ModelProfile(treatments=(odd,)))
        )


# --- nothing outside models/ names a model ----------------------------------
def _strings(source: str) -> list[tuple[int, str]]:
    """String constants of ``source`` that are not docstrings (comments are not in the AST)."""
    tree = ast.parse(source)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]  # fmt: skip


def model_ids_named(source: str, ids: list[str]) -> list[tuple[int, str]]:
    return [(line, model_id) for line, text in _strings(source) for model_id in ids if model_id in text]


def test_scan_finds_an_id_in_code_but_not_in_docstrings_or_comments() -> None:
    source = '"""Uses tgi-stein."""\n# tgi-stein\ndef f():\n    """tgi-stein"""\n    return get("tgi-stein")\n'
    assert model_ids_named(source, ["tgi-stein"]) == [(5, "tgi-stein")]


def test_no_module_outside_models_names_a_builtin_model() -> None:
    ids = registry.available()
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "models" or (rel.parts[0] == "cli" and rel.name.startswith("demo")):
            continue
        hits += [f"{rel}:{line} names {model_id}" for line, model_id in model_ids_named(path.read_text(), ids)]
    assert not hits, hits
