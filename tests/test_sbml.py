"""SBML import: MathML translation, units, model assembly and the refusal of what
twinloop does not support (each naming the element)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import twinloop as tl
from twinloop.errors import InputError, ModelError
from twinloop.models.sbml import load_sbml
from twinloop.models.sbml.document import to_node
from twinloop.models.sbml.mathml import Frame, compile_math
from twinloop.models.sbml.units import ucum, unit_string

libsbml = pytest.importorskip("libsbml")

MATH = '<math xmlns="http://www.w3.org/1998/Math/MathML">{}</math>'
TIME = '<csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">t</csymbol>'


def document(
    *, level: str = "3", version: str = "2", body: str = "", reactions: str = "", species: str = "", extra: str = ""
) -> str:
    """A small SBML model: compartment c, species S (decaying by reaction R), parameter k."""
    fast = ' fast="false"' if version == "1" else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level{level}/version{version}/core" level="{level}" version="{version}">
  <model id="small" timeUnits="second">
    <listOfUnitDefinitions>
      <unitDefinition id="per_min"><listOfUnits>
        <unit kind="second" exponent="-1" scale="0" multiplier="60"/></listOfUnits></unitDefinition>
      <unitDefinition id="mM"><listOfUnits><unit kind="mole" exponent="1" scale="-3" multiplier="1"/>
        <unit kind="litre" exponent="-1" scale="0" multiplier="1"/></listOfUnits></unitDefinition>
    </listOfUnitDefinitions>
    <listOfCompartments>
      <compartment id="c" size="2" constant="true" spatialDimensions="3" units="litre"/>
    </listOfCompartments>
    <listOfSpecies>
      <species id="S" compartment="c" initialConcentration="1" substanceUnits="mole"
        hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
      {species}
    </listOfSpecies>
    <listOfParameters>
      <parameter id="k" value="0.5" constant="true" units="per_min"/>
      <parameter id="neg" value="-2" constant="true"/>
      <parameter id="P" value="0" constant="false"/>
    </listOfParameters>
    {body}
    <listOfReactions>
      <reaction id="R" reversible="false"{fast}>
        <listOfReactants><speciesReference species="S" stoichiometry="1" constant="true"/></listOfReactants>
        <kineticLaw>{MATH.format("<apply><times/><ci>k</ci><ci>S</ci><ci>c</ci></apply>")}</kineticLaw>
      </reaction>
      {reactions}
    </listOfReactions>
    {extra}
  </model>
</sbml>"""


def write(tmp_path, text: str, name: str = "m.xml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def evaluate(formula: str, **symbols: float) -> float:
    node = to_node(libsbml.parseL3Formula(formula), "test formula")
    fn = compile_math(node, lambda name: lambda f, v=symbols[name]: v, {}, "test formula")
    return float(fn(Frame(2.0, None, {})))


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("1 + 2 * 3 - 4 / 8", 6.5),
        ("-x^2", -9.0),
        ("exp(ln(x))", 3.0),
        ("log(100)", 2.0),
        ("log(2, 8)", 3.0),
        ("root(3, 27)", 3.0),
        ("sqrt(x * 3)", 3.0),
        ("piecewise(1, x > 5, 2, x > 2, 3)", 2.0),
        ("piecewise(1, x > 5, 7)", 7.0),
        ("max(1, x, 2) + min(4, x)", 6.0),
        ("abs(-x) + floor(2.5) + ceil(2.5)", 8.0),
        ("rem(7, 3) + quotient(7, 2)", 4.0),
        ("factorial(4)", 24.0),
        ("sin(0) + cos(0) + tanh(0) + arctan(0)", 1.0),
        ("time * x", 6.0),
        ("pi", math.pi),
        ("(x > 1 && x < 2) || x == 3", 1.0),
        ("!(x >= 3)", 0.0),
        ("avogadro / 1e23", 6.02214179),
    ],
)
def test_mathml_is_translated_into_jax_closures(formula, expected):
    assert evaluate(formula, x=3.0) == pytest.approx(expected, rel=1e-12)


def test_a_power_has_a_finite_derivative_in_its_exponent_at_a_zero_base():
    import jax

    node = to_node(libsbml.parseL3Formula("S^n"), "test formula")
    fn = compile_math(node, lambda name: lambda f: f.p[name], {}, "test formula")
    grad = jax.grad(lambda n, s: fn(Frame(0.0, None, {"S": s, "n": n})), argnums=(0, 1))
    assert [float(g) for g in grad(2.5, 0.0)] == [0.0, 0.0]
    assert [float(g) for g in grad(1.0, 0.0)] == [0.0, 1.0]
    assert float(grad(2.0, 3.0)[0]) == pytest.approx(9.0 * math.log(3.0))


def test_function_definitions_are_inlined_with_their_arguments_bound(tmp_path):
    body = f"""<listOfFunctionDefinitions><functionDefinition id="hill">{
        MATH.format(
            "<lambda><bvar><ci>v</ci></bvar><bvar><ci>n</ci></bvar>"
            "<apply><divide/><apply><power/><ci>v</ci><ci>n</ci></apply>"
            "<apply><plus/><cn>1</cn><apply><power/><ci>v</ci><ci>n</ci></apply></apply></apply></lambda>"
        )
    }
        </functionDefinition></listOfFunctionDefinitions>
      <listOfRules><assignmentRule variable="P">{
        MATH.format("<apply><ci>hill</ci><ci>S</ci><cn>2</cn></apply>")
    }</assignmentRule></listOfRules>"""
    model = load_sbml(write(tmp_path, document(body=body)))
    x0 = model.initial_state(model.param_map(model.default_parameters))
    p_value = model.observables[model.observable_names.index("P")].fn(x0, model.param_map(model.default_parameters))
    assert float(p_value) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("factors", "expected"),
    [
        ((("mole", 1, -3, 1), ("litre", -1, 0, 1)), "mmol/L"),
        ((("second", -1, 0, 60),), "1/min"),
        ((("second", 1, 0, 3600),), "h"),
        ((("gram", 1, -3, 1), ("litre", -1, -1, 1)), "mg/dL"),
        ((("metre", 2, 0, 1),), "m2"),
        ((("dimensionless", 1, 0, 1),), "1"),
        ((("litre", 1, 0, 1e-15),), "10*-15.L"),
        ((("mole", 1, 0, 1.5),), "{odd}"),
    ],
)
def test_unit_definitions_map_to_ucum(factors, expected):
    assert ucum(factors, "odd") == expected


def test_builtin_units_and_undeclared_time():
    assert unit_string("", {}, default="s") == "s"
    assert unit_string("substance", {}) == "mol"
    assert unit_string("mole", {}) == "mol"


def test_a_small_model_imports_with_states_parameters_units_and_batch_contract(tmp_path):
    model = load_sbml(write(tmp_path, document()), model_id="small-test")
    assert model.id == "small-test" and model.time_unit == "s"
    assert model.state_names == ("S",) and model.states[0].unit == "mol/L"
    params = {p.name: p for p in model.parameters}
    assert set(params) == {"c", "k", "neg", "P"}
    assert params["k"].unit == "1/min" and (params["k"].lower, params["k"].upper) == (0.05, 5.0)
    assert (params["neg"].lower, params["neg"].upper) == (-20.0, 20.0)
    assert (params["P"].lower, params["P"].upper) == (0.0, 1.0)
    # d[S]/dt = -k [S] c / c: the kinetic law is in amount per time, the state a concentration
    batch = {name: jnp.full((4,), p.default) for name, p in params.items()}
    x = jnp.ones((1, 4)) * jnp.arange(1.0, 5.0)
    dx = model.rhs(0.0, x, jnp.zeros(0), batch)
    assert dx.shape == (1, 4)
    np.testing.assert_allclose(dx[0], -0.5 * np.arange(1.0, 5.0))
    assert model.initial_state(batch).shape == (1, 4)


def test_amounts_initial_assignments_and_rules(tmp_path):
    species = (
        '<species id="A" compartment="c" initialAmount="3" substanceUnits="mole" hasOnlySubstanceUnits="true" '
        'boundaryCondition="false" constant="false"/>'
    )
    body = f"""<listOfInitialAssignments><initialAssignment symbol="S">{
        MATH.format("<apply><times/><cn>4</cn><ci>k</ci></apply>")
    }</initialAssignment></listOfInitialAssignments>
      <listOfRules><rateRule variable="P">{MATH.format("<ci>A</ci>")}</rateRule></listOfRules>"""
    model = load_sbml(write(tmp_path, document(species=species, body=body)))
    assert model.state_names == ("S", "A", "P")
    p = model.param_map(model.default_parameters)
    np.testing.assert_allclose(model.initial_state(p), [2.0, 3.0, 0.0])
    np.testing.assert_allclose(model.rhs(0.0, jnp.array([2.0, 3.0, 0.0]), jnp.zeros(0), p), [-1.0, 0.0, 3.0])
    assert {o.name: o.unit for o in model.observables}["A"] == "mol"


def test_time_triggered_events_fire_exactly_and_strict_ones_after_the_time(tmp_path):
    def event(eid: str, relation: str, at: float, value: float) -> str:
        trigger = MATH.format(f"<apply><{relation}/>{TIME}<cn>{at}</cn></apply>")
        assign = MATH.format(f"<cn>{value}</cn>")
        return (
            f'<event id="{eid}" useValuesFromTriggerTime="true"><trigger initialValue="false" persistent="true">'
            f'{trigger}</trigger><listOfEventAssignments><eventAssignment variable="S">{assign}'
            "</eventAssignment></listOfEventAssignments></event>"
        )

    extra = f"<listOfEvents>{event('up', 'geq', 1.0, 10.0)}{event('later', 'gt', 2.0, 5.0)}</listOfEvents>"
    model = load_sbml(write(tmp_path, document(extra=extra)))
    assert [(e.name, e.time, e.after) for e in model.events] == [("up", 1.0, False), ("later", 2.0, True)]
    times = np.array([0.0, 1.0, 2.0, 3.0])
    for backend in ("batched", "diffrax"):
        settings = tl.SolverSettings(backend=backend, rtol=1e-10, atol=1e-12)
        traj = tl.simulate(model, model.default_parameters, tl.models.Inputs(), times=times, settings=settings,
                           progress=False)  # fmt: skip
        s = traj["S"][0]
        # at 1 the event has fired (>=); at 2 not yet (>), so the value is the decayed 10
        np.testing.assert_allclose(s, [1.0, 10.0, 10.0 * math.exp(-0.5), 5.0 * math.exp(-0.5)], rtol=1e-8)


DELAY = MATH.format(
    '<apply><csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/delay">delay</csymbol>'
    "<ci>S</ci><cn>1</cn></apply>"
)
REFUSALS = [
    (
        {
            "body": f'<listOfRules><algebraicRule id="alg">{MATH.format("<apply><minus/><ci>P</ci><cn>1</cn></apply>")}'
            "</algebraicRule></listOfRules>"
        },
        r"algebraic rule 'alg'",
    ),
    (
        {"body": f'<listOfRules><assignmentRule variable="P">{DELAY}</assignmentRule></listOfRules>'},
        r"assignment rule for 'P' uses the delay function",
    ),
    (
        {
            "version": "1",
            "reactions": '<reaction id="Rfast" reversible="false" fast="true"><listOfReactants>'
            '<speciesReference species="S" stoichiometry="1" constant="true"/></listOfReactants>'
            f"<kineticLaw>{MATH.format('<ci>S</ci>')}</kineticLaw></reaction>",
        },
        r"reaction 'Rfast' uses a fast reaction",
    ),
    (
        {
            "extra": f'<listOfEvents><event id="late" useValuesFromTriggerTime="true"><trigger initialValue="false" '
            f'persistent="true">{MATH.format(f"<apply><gt/>{TIME}<cn>1</cn></apply>")}</trigger>'
            f"<delay>{MATH.format('<cn>1</cn>')}</delay></event></listOfEvents>"
        },
        r"event 'late' uses a delay",
    ),
    (
        {
            "extra": f'<listOfEvents><event id="low" useValuesFromTriggerTime="true"><trigger initialValue="false" '
            f'persistent="true">{MATH.format("<apply><lt/><ci>S</ci><cn>0.5</cn></apply>")}</trigger>'
            "</event></listOfEvents>"
        },
        r"SBML event 'low' has a trigger that depends on \['S'\]",
    ),
    (
        {"body": f'<listOfRules><rateRule variable="c">{MATH.format("<cn>1</cn>")}</rateRule></listOfRules>'},
        r"rate rule 'c' uses a compartment whose size changes",
    ),
    (
        {
            "reactions": '<reaction id="Rvar" reversible="false"><listOfReactants>'
            '<speciesReference id="sr" species="S" stoichiometry="1" constant="false"/></listOfReactants>'
            f"<kineticLaw>{MATH.format('<ci>S</ci>')}</kineticLaw></reaction>"
        },
        r"species reference 'sr' uses non-constant stoichiometry",
    ),
    (
        {
            "reactions": '<reaction id="Rnolaw" reversible="false"><listOfReactants>'
            '<speciesReference species="S" stoichiometry="1" constant="true"/></listOfReactants></reaction>'
        },
        r"reaction 'Rnolaw' uses no kinetic law",
    ),
]


@pytest.mark.parametrize(("parts", "message"), REFUSALS)
def test_unsupported_elements_are_refused_naming_the_element(tmp_path, parts, message):
    with pytest.raises(ModelError, match=message) as caught:
        load_sbml(write(tmp_path, document(**parts)))
    assert "twinloop supports" in str(caught.value)


def test_a_package_that_changes_the_model_is_refused(tmp_path):
    text = document().replace(
        'xmlns="http://www.sbml.org/sbml/level3/version2/core"',
        'xmlns="http://www.sbml.org/sbml/level3/version2/core" '
        'xmlns:qual="http://www.sbml.org/sbml/level3/version1/qual/version1" qual:required="true"',
    )
    with pytest.raises(ModelError, match=r"SBML package 'qual'"):
        load_sbml(write(tmp_path, text))


def test_missing_and_invalid_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_sbml(tmp_path / "nope.xml")
    with pytest.raises(InputError, match="is not a valid SBML document"):
        load_sbml(write(tmp_path, "<sbml><model></sbml>"))
