"""The twinloop :class:`Model` of an SBML document.

States: every species not set by an assignment rule (in its SBML meaning, amount or
concentration), and every non-constant parameter changed by a rate rule or an event.
Parameters: every constant global parameter and compartment size, and every local
parameter of a kinetic law (named ``<reaction>_<local>``), with the SBML value as default
and bounds [v/10, 10 v] for v > 0 (log scale), [0, 1] for 0 and [10 v, -10 v] for v < 0.
Parameters that an event trigger reads are fixed constants of the model (the firing
times are computed once). Observables: every species (concentration unless
``hasOnlySubstanceUnits``, as libroadrunner reports it) and every parameter set by a rule
or event. The standard scenario has no inputs and ends at 1.5 times the last event
(100 time units without events).
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from twinloop.errors import ModelError
from twinloop.models.base import Model, Observable, Parameter, State, TimedEvent
from twinloop.models.inputs import Inputs
from twinloop.models.sbml import events as sbml_events
from twinloop.models.sbml.document import Document, refuse
from twinloop.models.sbml.mathml import Frame
from twinloop.models.sbml.symbols import Symbols, local_name
from twinloop.models.sbml.units import divide, unit_string

DEFAULT_HORIZON = 100.0


def _bounds(v: float) -> tuple[float, float]:
    if v > 0:
        return v / 10.0, v * 10.0
    if v < 0:
        return 10.0 * v, -10.0 * v
    return 0.0, 1.0


def _roles(doc: Document) -> Symbols:
    """Sort the document's symbols into states, parameters and fixed constants."""
    event_targets = {var for e in doc.events for var, _ in e.assignments}
    for ref_id in (r for reaction in doc.reactions.values() for r in reaction.reference_ids):
        if ref_id in doc.assignment_rules or ref_id in doc.rate_rules or ref_id in event_targets:
            raise refuse("species reference", ref_id, "non-constant stoichiometry (a rule or event changes it)")
        if ref_id in doc.initial_assignments:
            raise refuse("species reference", ref_id, "an initial assignment to its stoichiometry")
    states = [s for s in doc.species if s not in doc.assignment_rules]
    states += [
        p for p, q in doc.parameters.items()
        if p not in doc.assignment_rules and (p in doc.rate_rules or p in event_targets)
    ]  # fmt: skip
    for var in list(doc.rate_rules) + list(event_targets):
        if var in doc.parameters and doc.parameters[var].constant:
            raise refuse("parameter", var, "a rule or event assignment although it is declared constant")
    symbols = Symbols(doc, states, {}, {})
    for cid in doc.compartments:
        if cid in doc.assignment_rules and not symbols.is_constant(cid):
            raise refuse("assignment rule", cid, "a compartment whose size changes in time")
    trigger_reads = _reads(doc, symbols, [e.trigger for e in doc.events])
    for sid, quantity in list(doc.parameters.items()) + list(doc.compartments.items()):
        if sid in states or sid in doc.assignment_rules or sid in doc.initial_assignments:
            continue
        if quantity.value is None:
            raise refuse("parameter" if sid in doc.parameters else "compartment", sid,
                         "no value (set one, or give it an initial assignment)")  # fmt: skip
        if sid in trigger_reads:
            symbols.fixed[sid] = float(quantity.value)
        else:
            symbols.parameters[sid] = sid
    for rid, reaction in doc.reactions.items():
        for lid in reaction.local:
            symbols.parameters[local_name(rid, lid, doc)] = f"{rid}.{lid}"
    return symbols


def _reads(doc: Document, symbols: Symbols, nodes: list[Any]) -> set[str]:
    """The symbols some expressions read, through the rules and initial assignments they use."""
    seen: set[str] = set()
    todo = [n for node in nodes for n in symbols.expand(node)]
    while todo:
        sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        for source in (doc.assignment_rules, doc.initial_assignments):
            if sid in source:
                todo += symbols.expand(source[sid])
    return seen


def _parameters(doc: Document, symbols: Symbols) -> tuple[Parameter, ...]:
    out = []
    for name, source in symbols.parameters.items():
        if "." in source:
            rid, lid = source.split(".", 1)
            value, unit, text = doc.reactions[rid].local[lid], "1", f"local parameter '{lid}' of reaction '{rid}'"
        elif source in doc.compartments:
            c = doc.compartments[source]
            value, unit, text = float(c.value or 0.0), _compartment_unit(doc, source), f"size of compartment {c.name}"
        else:
            q = doc.parameters[source]
            value, unit, text = float(q.value or 0.0), unit_string(q.units, doc.units), q.name
        if not math.isfinite(value):
            raise refuse("parameter", source, f"the non-finite value {value}")
        lower, upper = _bounds(value)
        out.append(Parameter(name, unit, value, lower, upper, text or name))
    return tuple(out)


def _compartment_unit(doc: Document, cid: str) -> str:
    c = doc.compartments[cid]
    if c.units:
        return unit_string(c.units, doc.units)
    if doc.level < 3:
        return unit_string({3.0: "volume", 2.0: "area", 1.0: "length"}.get(c.dimensions, "dimensionless"), doc.units)
    return unit_string(doc.volume_units, doc.units) if c.dimensions == 3.0 else "1"


def _species_unit(doc: Document, sid: str) -> str:
    s = doc.species[sid]
    substance = unit_string(s.substance_units or doc.substance_units or ("substance" if doc.level < 3 else ""),
                            doc.units)  # fmt: skip
    return substance if s.only_substance else divide(substance, _compartment_unit(doc, s.compartment))


def _unit_of(doc: Document, sid: str) -> str:
    if sid in doc.species:
        return _species_unit(doc, sid)
    return unit_string(doc.parameters[sid].units, doc.units)


def _derivatives(doc: Document, symbols: Symbols) -> list[Any]:
    """One closure per state: its time derivative."""
    rates = {rid: symbols.reaction_rate(rid) for rid in doc.reactions}
    out: list[Any] = []
    for sid in symbols.states:
        if sid in doc.rate_rules:
            out.append(symbols.compile(doc.rate_rules[sid], "current", f"rate rule for '{sid}'"))
            continue
        s = doc.species.get(sid)
        terms = [(rid, r.stoichiometry[sid]) for rid, r in doc.reactions.items() if s and sid in r.stoichiometry]
        if s is None or s.boundary or s.constant or not terms:
            out.append(lambda f: 0.0)
            continue
        factor = s.conversion_factor or doc.conversion_factor
        cf = symbols.symbol(factor, "current") if factor else (lambda f: 1.0)
        volume = None if s.only_substance else symbols.symbol(s.compartment, "current")
        out.append(_species_rate(terms, rates, cf, volume))
    return out


def _species_rate(terms: list[tuple[str, float]], rates: dict[str, Any], cf: Any, volume: Any) -> Any:
    def rate(f: Frame) -> Any:
        total = sum(n * rates[rid](f) for rid, n in terms) * cf(f)
        return total if volume is None else total / volume(f)

    return rate


def _stack(values: list[Any], batch: tuple[int, ...]) -> Any:
    return jnp.stack([jnp.broadcast_to(jnp.asarray(v, dtype=jnp.float64), batch) for v in values])


def _batch(p: Any) -> tuple[int, ...]:
    shapes = [jnp.shape(v) for v in p.values()]
    return tuple(jnp.broadcast_shapes(*shapes)) if shapes else ()


def _timed_events(doc: Document, symbols: Symbols) -> tuple[TimedEvent, ...]:
    """The firing times and state changes of the document's events."""
    frame_p: dict[str, Any] = {}  # triggers read fixed constants only, never model parameters
    firings: list[tuple[float, float, int, TimedEvent]] = []
    for order, event in enumerate(doc.events):
        sbml_events.state_dependent(event, symbols.is_constant, symbols.expand)
        where = f"trigger of event '{event.id}'"
        truth_fn = symbols.compile(event.trigger, "current", where)

        def value_of(node: Any, _where: str = where) -> float:
            return float(symbols.compile(node, "current", _where)(Frame(0.0, None, frame_p)))

        def truth(t: float, fn: Any = truth_fn) -> Any:
            return fn(Frame(t, None, frame_p))

        candidates = sbml_events.thresholds(event, event.trigger, value_of)
        times = sbml_events.firing_times(event, truth, candidates)
        priority = value_of(event.priority) if event.priority is not None else 0.0
        for t, after in times:
            firings.append((t, -priority, order, TimedEvent(event.id, t, _effect(event, symbols, t), after)))
    return tuple(f[3] for f in sorted(firings, key=lambda f: f[:3]))


def _effect(event: Any, symbols: Symbols, t: float) -> Any:
    targets = []
    for var, node in event.assignments:
        i = symbols.state_index(var)
        if i is None:
            raise refuse(
                "event", event.id, f"an assignment to '{var}', which is not a species or non-constant parameter"
            )
        targets.append((i, symbols.compile(node, "current", f"assignment to '{var}' in event '{event.id}'")))

    def effect(x: Any, p: Any) -> Any:
        frame = Frame(t, x, p)
        values = [(i, fn(frame)) for i, fn in targets]  # all read the values before the event
        for i, v in values:
            x = x.at[i].set(jnp.broadcast_to(jnp.asarray(v, dtype=jnp.float64), x.shape[1:]))
        return x

    return effect


def build(doc: Document, model_id: str, version: str) -> Model:
    """Assemble the twinloop model of a checked SBML document."""
    symbols = _roles(doc)
    parameters = _parameters(doc, symbols)
    derivatives = _derivatives(doc, symbols)
    initial = [symbols.symbol(sid, "initial") for sid in symbols.states]
    events = _timed_events(doc, symbols)

    def rhs(t: Any, x: Any, u: Any, p: Any) -> Any:
        frame = Frame(t, x, p)
        return _stack([d(frame) for d in derivatives], jnp.shape(x)[1:])

    def initial_state(p: Any) -> Any:
        frame = Frame(0.0, None, p)
        return _stack([v(frame) for v in initial], _batch(p))

    horizon = 1.5 * max(e.time for e in events) if events and max(e.time for e in events) > 0 else DEFAULT_HORIZON
    time_unit = unit_string(doc.time_units or ("time" if doc.level < 3 else ""), doc.units, default="s")
    return Model(
        id=model_id,
        version=version,
        name=doc.name or model_id,
        description=f"Imported from SBML Level {doc.level} Version {doc.version} (model '{doc.id}').",
        time_unit=time_unit,
        states=tuple(State(s, _unit_of(doc, s), _describe(doc, s), nonnegative=False) for s in symbols.states),
        parameters=parameters,
        inputs=(),
        observables=_observables(doc, symbols),
        rhs=rhs,
        initial_state=initial_state,
        standard_scenario=lambda p: (Inputs(), horizon),
        events=events,
        references=(f"SBML model '{doc.id}'",),
    )


def _describe(doc: Document, sid: str) -> str:
    if sid in doc.species:
        s = doc.species[sid]
        meaning = "amount" if s.only_substance else "concentration"
        return f"{s.name or sid} ({meaning} in compartment '{s.compartment}')"
    return doc.parameters[sid].name or sid


def _observables(doc: Document, symbols: Symbols) -> tuple[Observable, ...]:
    """Species and varying parameters, as libroadrunner reports them (rules read without time)."""
    out = []
    candidates = list(doc.species) + [p for p in doc.parameters if p in symbols.states or p in doc.assignment_rules]
    for sid in candidates:
        if symbols.depends_on_time(sid):
            continue  # an observable is a function of the state alone
        fn = symbols.symbol(sid, "current")
        out.append(
            Observable(
                sid,
                _unit_of(doc, sid),
                _observe(fn),
                _describe(doc, sid),
                nonnegative=False,
            )
        )
    if not out:
        raise ModelError(f"SBML model '{doc.id}' has no species or varying parameter to observe.")
    return tuple(out)


def _observe(fn: Any) -> Any:
    def observable(x: Any, p: Any) -> Any:
        return fn(Frame(math.nan, x, p))

    return observable
