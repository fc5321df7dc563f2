"""Reading an SBML file with python-libsbml into plain, libsbml-free descriptions.

Everything twinloop does not support is refused here, with the element's type and id:
algebraic rules, delays, fast reactions, event delays, non-constant stoichiometry,
compartments whose size changes, and SBML packages other than layout and render.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinloop.errors import InputError, ModelError

SUPPORTED = (
    "twinloop supports species, compartments of constant size, parameters, reactions with "
    "kinetic laws, assignment and rate rules, initial assignments, function definitions and "
    "events triggered by time without delays"
)
IGNORED_PACKAGES = {"layout", "render"}  # graphical information only


@dataclass(frozen=True)
class Node:
    """One MathML node: ``kind`` is libsbml's AST type without ``AST_`` (``"PLUS"``,
    ``"NAME"``, ``"FUNCTION_EXP"``, ...); ``name`` a symbol or function id."""

    kind: str
    name: str = ""
    value: float = 0.0
    children: tuple[Node, ...] = ()

    def names(self) -> set[str]:
        """Every symbol id this expression refers to (function calls not expanded)."""
        found = {self.name} if self.kind == "NAME" else set()
        for child in self.children:
            found |= child.names()
        return found

    def calls(self) -> set[str]:
        found = {self.name} if self.kind == "FUNCTION" else set()
        for child in self.children:
            found |= child.calls()
        return found

    def uses(self, kind: str) -> bool:
        return self.kind == kind or any(c.uses(kind) for c in self.children)


@dataclass(frozen=True)
class Species:
    id: str
    compartment: str
    initial_amount: float | None
    initial_concentration: float | None
    only_substance: bool
    boundary: bool
    constant: bool
    substance_units: str
    conversion_factor: str | None
    name: str = ""


@dataclass(frozen=True)
class Quantity:
    """A compartment or a global parameter."""

    id: str
    value: float | None
    constant: bool
    units: str
    name: str = ""
    dimensions: float = 3.0


@dataclass(frozen=True)
class Reaction:
    id: str
    rate: Node
    local: dict[str, float]
    stoichiometry: dict[str, float]  # species id -> net stoichiometry (products minus reactants)
    reference_ids: dict[str, float] = field(default_factory=dict)  # species reference id -> stoichiometry


@dataclass(frozen=True)
class Event:
    id: str
    trigger: Node
    initial_value: bool | None
    priority: Node | None
    assignments: tuple[tuple[str, Node], ...]


@dataclass(frozen=True)
class Document:
    """The parts of an SBML model twinloop uses."""

    id: str
    name: str
    level: int
    version: int
    time_units: str
    substance_units: str
    volume_units: str
    extent_units: str
    conversion_factor: str | None
    units: dict[str, tuple[tuple[str, float, int, float], ...]]  # id -> (kind, exponent, scale, multiplier)
    functions: dict[str, tuple[tuple[str, ...], Node]]
    compartments: dict[str, Quantity]
    species: dict[str, Species]
    parameters: dict[str, Quantity]
    reactions: dict[str, Reaction]
    initial_assignments: dict[str, Node]
    assignment_rules: dict[str, Node]
    rate_rules: dict[str, Node]
    events: tuple[Event, ...]
    notes: str = ""


def refuse(element: str, ident: str, what: str) -> ModelError:
    return ModelError(f"SBML {element} '{ident}' uses {what}, which twinloop does not support; {SUPPORTED}.")


def _libsbml() -> Any:
    try:
        import libsbml
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ModelError("SBML import needs python-libsbml; install it with `pip install python-libsbml`.") from e
    return libsbml


_KINDS: dict[int, str] = {}


def to_node(ast: Any, where: str) -> Node:
    """Convert a libsbml ASTNode into a :class:`Node` tree."""
    libsbml = _libsbml()
    if not _KINDS:
        _KINDS.update({getattr(libsbml, n): n[4:] for n in dir(libsbml) if n.startswith("AST_")})
    if ast is None:
        raise ModelError(f"SBML {where} has no math; give it a MathML expression.")
    kind = _KINDS.get(ast.getType(), "UNKNOWN")
    children = tuple(to_node(ast.getChild(i), where) for i in range(ast.getNumChildren()))
    if kind == "INTEGER":
        return Node(kind, value=float(ast.getInteger()))
    if kind in ("REAL", "REAL_E", "RATIONAL", "NAME_AVOGADRO"):
        return Node(kind, value=float(ast.getReal()))
    if kind in ("NAME", "FUNCTION", "CSYMBOL_FUNCTION"):
        return Node(kind, name=str(ast.getName()), children=children)
    return Node(kind, children=children)


def _packages(doc: Any) -> list[str]:
    namespaces = doc.getNamespaces()
    found = []
    for i in range(namespaces.getLength()):
        m = re.match(r"http://www\.sbml\.org/sbml/level3/version\d/([a-z]+)/version\d", namespaces.getURI(i))
        if m and m.group(1) not in IGNORED_PACKAGES:
            found.append(m.group(1))
    return found


def read(path: str | Path) -> Document:
    """Read and check an SBML file; refuse what twinloop does not support."""
    libsbml = _libsbml()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"SBML file '{path}' does not exist; give the path of an SBML (.xml) file.")
    doc = libsbml.readSBMLFromFile(str(path))
    errors = [
        doc.getError(i) for i in range(doc.getNumErrors()) if doc.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR
    ]
    if errors or doc.getModel() is None:
        shown = "; ".join(f"line {e.getLine()}: {e.getShortMessage()}" for e in errors[:3]) or "no model element"
        raise InputError(f"'{path}' is not a valid SBML document ({shown}); check it with an SBML validator.")
    for package in _packages(doc):
        _check_package(doc, package)
    return _describe(doc.getModel(), doc.getLevel(), doc.getVersion(), libsbml)


def _check_package(doc: Any, package: str) -> None:
    """Refuse a package that changes the model's meaning. A flat model that uses ``comp``
    only for ports, or ``fbc`` only for species formulas and charges, is read as core SBML."""
    model = doc.getModel()
    if package == "fbc" and model.getPlugin("fbc") is not None and model.getPlugin("fbc").getNumObjectives() == 0:
        return
    if package == "comp":
        mplug, dplug = model.getPlugin("comp"), doc.getPlugin("comp")
        if (
            mplug is not None
            and mplug.getNumSubmodels() == 0
            and (dplug is None or dplug.getNumModelDefinitions() + dplug.getNumExternalModelDefinitions() == 0)
        ):
            return
    what = {"fbc": "flux balance constraints", "comp": "submodels (hierarchical composition)"}
    raise refuse("package", package, what.get(package, f"the '{package}' package"))


def _units(model: Any, libsbml: Any) -> dict[str, tuple[tuple[str, float, int, float], ...]]:
    out = {}
    for ud in model.getListOfUnitDefinitions():
        out[ud.getId()] = tuple(
            (
                libsbml.UnitKind_toString(u.getKind()),
                float(u.getExponentAsDouble()),
                int(u.getScale()),
                float(u.getMultiplier()),
            )
            for u in ud.getListOfUnits()
        )
    return out


def _opt(obj: Any, attr: str) -> str:
    return str(getattr(obj, "get" + attr)()) if getattr(obj, "isSet" + attr)() else ""


def _describe(model: Any, level: int, version: int, libsbml: Any) -> Document:
    functions = {}
    for fd in model.getListOfFunctionDefinitions():
        body = to_node(fd.getMath(), f"function definition '{fd.getId()}'")
        if body.kind != "LAMBDA":
            raise refuse("function definition", fd.getId(), "a body that is not a lambda")
        args = tuple(c.name for c in body.children[:-1])
        functions[fd.getId()] = (args, body.children[-1])
    compartments = {
        c.getId(): Quantity(
            c.getId(),
            c.getSize() if c.isSetSize() else None,
            c.getConstant(),
            _opt(c, "Units"),
            c.getName(),
            float(c.getSpatialDimensionsAsDouble()) if c.isSetSpatialDimensions() else 3.0,
        )
        for c in model.getListOfCompartments()
    }
    species = {
        s.getId(): Species(
            s.getId(),
            s.getCompartment(),
            s.getInitialAmount() if s.isSetInitialAmount() else None,
            s.getInitialConcentration() if s.isSetInitialConcentration() else None,
            s.getHasOnlySubstanceUnits(),
            s.getBoundaryCondition(),
            s.getConstant(),
            _opt(s, "SubstanceUnits"),
            _opt(s, "ConversionFactor") or None,
            s.getName(),
        )
        for s in model.getListOfSpecies()
    }
    parameters = {
        p.getId(): Quantity(p.getId(), p.getValue() if p.isSetValue() else None, p.getConstant(), _opt(p, "Units"),
                            p.getName())
        for p in model.getListOfParameters()
    }  # fmt: skip
    initial = {
        ia.getSymbol(): to_node(ia.getMath(), f"initial assignment to '{ia.getSymbol()}'")
        for ia in model.getListOfInitialAssignments()
    }
    assignment, rate = _rules(model)
    reactions = {r.getId(): _reaction(r) for r in model.getListOfReactions()}
    events = tuple(_event(e, i) for i, e in enumerate(model.getListOfEvents()))
    for var in rate:
        if var in compartments:
            raise refuse("rate rule", var, "a compartment whose size changes in time")
    for event in events:
        for var, _ in event.assignments:
            if var in compartments:
                raise refuse("event", event.id, f"an assignment to the size of compartment '{var}'")
    return Document(
        id=model.getId() or "sbml_model",
        name=model.getName() or model.getId(),
        level=level,
        version=version,
        time_units=_opt(model, "TimeUnits") if level >= 3 else "",
        substance_units=_opt(model, "SubstanceUnits") if level >= 3 else "",
        volume_units=_opt(model, "VolumeUnits") if level >= 3 else "",
        extent_units=_opt(model, "ExtentUnits") if level >= 3 else "",
        conversion_factor=(_opt(model, "ConversionFactor") or None) if level >= 3 else None,
        units=_units(model, libsbml),
        functions=functions,
        compartments=compartments,
        species=species,
        parameters=parameters,
        reactions=reactions,
        initial_assignments=initial,
        assignment_rules=assignment,
        rate_rules=rate,
        events=events,
    )


def _rules(model: Any) -> tuple[dict[str, Node], dict[str, Node]]:
    assignment: dict[str, Node] = {}
    rate: dict[str, Node] = {}
    for index, rule in enumerate(model.getListOfRules()):
        if rule.isAlgebraic():
            ident = rule.getIdAttribute() or rule.getMetaId() or f"number {index + 1} in the list of rules"
            raise refuse("algebraic rule", ident, "an algebraic rule (a DAE)")
        target = assignment if rule.isAssignment() else rate
        kind = "assignment rule" if rule.isAssignment() else "rate rule"
        target[rule.getVariable()] = to_node(rule.getMath(), f"{kind} for '{rule.getVariable()}'")
    return assignment, rate


def _reaction(r: Any) -> Reaction:
    rid = r.getId()
    if r.isSetFast() and r.getFast():
        raise refuse("reaction", rid, "a fast reaction (fast='true')")
    if not r.isSetKineticLaw() or not r.getKineticLaw().isSetMath():
        raise refuse("reaction", rid, "no kinetic law")
    law = r.getKineticLaw()
    local = {}
    for lp in list(law.getListOfParameters()) + list(getattr(law, "getListOfLocalParameters", list)()):
        local[lp.getId()] = float(lp.getValue())
    stoich: dict[str, float] = {}
    refs: dict[str, float] = {}
    for sign, refs_list in ((-1.0, r.getListOfReactants()), (1.0, r.getListOfProducts())):
        for ref in refs_list:
            if ref.isSetStoichiometryMath():
                raise refuse(
                    "reaction", rid, f"stoichiometryMath for species '{ref.getSpecies()}' (non-constant stoichiometry)"
                )
            if ref.getLevel() >= 3 and not ref.getConstant():
                raise refuse("species reference", ref.getId() or ref.getSpecies(),
                             f"non-constant stoichiometry in reaction '{rid}'")  # fmt: skip
            value = float(ref.getStoichiometry())
            if math.isnan(value):
                value = 1.0
            stoich[ref.getSpecies()] = stoich.get(ref.getSpecies(), 0.0) + sign * value
            if ref.isSetId():
                refs[ref.getId()] = value
    return Reaction(rid, to_node(law.getMath(), f"kinetic law of reaction '{rid}'"), local, stoich, refs)


def _event(e: Any, index: int) -> Event:
    eid = e.getId() or f"event#{index}"
    if e.isSetDelay():
        raise refuse("event", eid, "a delay")
    if not e.isSetTrigger() or not e.getTrigger().isSetMath():
        raise refuse("event", eid, "no trigger")
    trigger = e.getTrigger()
    initial = bool(trigger.getInitialValue()) if trigger.isSetInitialValue() else None
    priority = to_node(e.getPriority().getMath(), f"priority of event '{eid}'") if e.isSetPriority() else None
    assignments = tuple(
        (a.getVariable(), to_node(a.getMath(), f"assignment to '{a.getVariable()}' in event '{eid}'"))
        for a in e.getListOfEventAssignments()
        if a.isSetMath()
    )
    return Event(eid, to_node(trigger.getMath(), f"trigger of event '{eid}'"), initial, priority, assignments)
