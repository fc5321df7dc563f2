"""How each SBML symbol is evaluated, at time 0 (``initial``) and during the simulation
(``current``), as closures over a :class:`Frame`.

States are species (in their SBML meaning: a concentration unless
``hasOnlySubstanceUnits``), and parameters changed by rate rules or events. Assignment
rules are evaluated inside the right-hand side; constants with an initial assignment are
evaluated from the parameters; everything else constant is a model parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twinloop.errors import ModelError
from twinloop.models.sbml.document import Document, Node, refuse
from twinloop.models.sbml.mathml import Compiled, Frame, compile_math


@dataclass
class Symbols:
    """The roles of a document's symbols and their compiled closures."""

    doc: Document
    states: list[str]  # SBML ids, in state order
    parameters: dict[str, str]  # model parameter name -> SBML id (or reaction.local id)
    fixed: dict[str, float]  # constants baked into the model (e.g. event thresholds)
    _compiled: dict[tuple[str, str], Compiled] = field(default_factory=dict)
    _busy: set[tuple[str, str]] = field(default_factory=set)

    # --- roles ---------------------------------------------------------------
    def state_index(self, sid: str) -> int | None:
        return self.states.index(sid) if sid in self.states else None

    def parameter_name(self, sid: str) -> str | None:
        for name, source in self.parameters.items():
            if source == sid:
                return name
        return None

    def is_constant(self, sid: str) -> bool:
        """True for a symbol whose value cannot change during a simulation."""
        doc = self.doc
        if sid in self.states or sid in doc.reactions:
            return False
        if sid in doc.assignment_rules:
            return all(self.is_constant(n) for n in self.expand(doc.assignment_rules[sid])) and not (
                self.uses_time(doc.assignment_rules[sid])
            )
        return True

    def expand(self, node: Node) -> set[str]:
        """The symbol ids an expression reads, through the bodies of the functions it calls."""
        names = node.names()
        for fname in node.calls():
            params, body = self.doc.functions.get(fname, ((), Node("INTEGER")))
            names |= self.expand(body) - set(params)
        return names

    def uses_time(self, node: Node) -> bool:
        if node.uses("NAME_TIME"):
            return True
        return any(self.uses_time(self.doc.functions[f][1]) for f in node.calls() if f in self.doc.functions)

    def depends_on_time(self, sid: str, seen: frozenset[str] = frozenset()) -> bool:
        """True for an assigned symbol whose rule reads time (directly or through rules)."""
        rule = self.doc.assignment_rules.get(sid)
        if rule is None or sid in seen:
            return False
        return self.uses_time(rule) or any(self.depends_on_time(n, seen | {sid}) for n in self.expand(rule))

    # --- closures --------------------------------------------------------------
    def compile(self, node: Node, mode: str, where: str, local: Mapping[str, str] | None = None) -> Compiled:
        """An expression's closure; ``local`` maps a kinetic law's local parameters to names."""

        def resolve(name: str) -> Compiled:
            if local and name in local:
                pname = local[name]
                return lambda f: f.p[pname]
            return self.symbol(name, mode)

        return compile_math(node, resolve, self.doc.functions, where)

    def symbol(self, sid: str, mode: str) -> Compiled:
        key = (mode, sid)
        if key not in self._compiled:
            if key in self._busy:
                raise ModelError(f"SBML symbol '{sid}' is defined in terms of itself (a cycle of rules).")
            self._busy.add(key)
            try:
                raw = self._initial(sid) if mode == "initial" else self._current(sid)
            finally:
                self._busy.discard(key)
            self._compiled[key] = _memo(key, raw)
        return self._compiled[key]

    def _current(self, sid: str) -> Compiled:
        doc = self.doc
        i = self.state_index(sid)
        if i is not None:
            return lambda f: f.x[i]
        if sid in doc.assignment_rules:
            return self.compile(doc.assignment_rules[sid], "current", f"assignment rule for '{sid}'")
        if sid in doc.reactions:
            return self.reaction_rate(sid)
        return self._constant(sid)

    def _constant(self, sid: str) -> Compiled:
        if sid in self.fixed:
            value = self.fixed[sid]
            return lambda f: value
        name = self.parameter_name(sid)
        if name is not None:
            return lambda f: f.p[name]
        if sid in self.doc.initial_assignments or sid in self.doc.species:
            initial = self.symbol(sid, "initial")
            return lambda f: initial(Frame(0.0, None, f.p, f.memo))
        for reaction in self.doc.reactions.values():
            if sid in reaction.reference_ids:
                stoich = reaction.reference_ids[sid]
                return lambda f: stoich
        raise ModelError(
            f"The SBML model refers to '{sid}', which is neither a species, compartment, parameter, "
            "reaction nor species reference of the model."
        )

    def _initial(self, sid: str) -> Compiled:
        doc = self.doc
        if sid in doc.initial_assignments:
            return self.compile(doc.initial_assignments[sid], "initial", f"initial assignment to '{sid}'")
        if sid in doc.assignment_rules:
            return self.compile(doc.assignment_rules[sid], "initial", f"assignment rule for '{sid}'")
        if sid in doc.reactions:
            return self.reaction_rate(sid, "initial")
        if sid in doc.species:
            return self._species_initial(sid)
        quantity = doc.parameters.get(sid) or doc.compartments.get(sid)
        if quantity is not None and self.parameter_name(sid) is None and sid not in self.fixed:
            if quantity.value is None:
                raise refuse("parameter", sid, "no value (set its value or give it an initial assignment)")
            declared = quantity.value
            return lambda f: declared
        return self._constant(sid)

    def _species_initial(self, sid: str) -> Compiled:
        s = self.doc.species[sid]
        volume = self.symbol(s.compartment, "initial")
        if s.initial_amount is None and s.initial_concentration is None:
            raise refuse("species", sid, "no initial amount or concentration (give one, or an initial assignment)")
        if s.only_substance:
            if s.initial_amount is not None:
                amount = s.initial_amount
                return lambda f: amount
            conc = float(s.initial_concentration or 0.0)
            return lambda f: conc * volume(f)
        if s.initial_concentration is not None:
            conc2 = s.initial_concentration
            return lambda f: conc2
        amount2 = float(s.initial_amount or 0.0)
        return lambda f: amount2 / volume(f)

    def reaction_rate(self, rid: str, mode: str = "current") -> Compiled:
        reaction = self.doc.reactions[rid]
        local = {lid: local_name(rid, lid, self.doc) for lid in reaction.local}
        return self.compile(reaction.rate, mode, f"kinetic law of reaction '{rid}'", local)


def local_name(rid: str, lid: str, doc: Document) -> str:
    """The model parameter name of a reaction's local parameter: ``<reaction>_<local>``."""
    name = f"{rid}_{lid}"
    taken = set(doc.parameters) | set(doc.compartments) | set(doc.species) | set(doc.reactions)
    while name in taken:
        name += "_local"
    return name


def _memo(key: tuple[str, str], fn: Compiled) -> Callable[[Frame], Any]:
    """Evaluate a symbol once per frame (rules are read by many expressions)."""

    def cached(f: Frame) -> Any:
        mkey = (key, id(f.x))
        if mkey not in f.memo:
            f.memo[mkey] = fn(f)
        return f.memo[mkey]

    return cached
