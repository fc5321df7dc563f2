"""The comparison of imported SBML models with libroadrunner, shared by
``tests/test_sbml_reference.py`` and ``benchmarks/bench_sbml.py``.

Relative error at output time t of output j: ``|ours - ref| / max(|ref|, floor_j)``
with ``floor_j = max(1e-6 * max_t |ref_j|, 1e-10)``: values near zero (below a
millionth of the output's largest value) are compared on that floor rather than on
themselves, where both simulators only carry absolute error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "data" / "sbml"
RTOL_REFERENCE, ATOL_REFERENCE = 1e-12, 1e-16  # CVODE; 1e-10 left an oscillator 8e-6 off


@dataclass(frozen=True)
class Case:
    file: str
    t_end: float
    backend: str = "batched"
    solver: str = "tsit5"
    rtol: float = 1e-12
    atol: float = 1e-14
    n_times: int = 51


CASES = {
    "BIOMD0000000001": Case("BIOMD0000000001.xml", 100.0, "diffrax", "kvaerno5", 1e-12, 1e-16),
    "BIOMD0000000002": Case("BIOMD0000000002.xml", 100.0, "diffrax", "kvaerno5", 1e-10, 1e-16),
    "BIOMD0000000003": Case("BIOMD0000000003.xml", 100.0),
    "BIOMD0000000004": Case("BIOMD0000000004.xml", 100.0),
    "BIOMD0000000012": Case("BIOMD0000000012.xml", 100.0),
    "BIOMD0000000507": Case("BIOMD0000000507.xml", 100.0, "diffrax", "kvaerno5", 1e-10, 1e-14),
    "Hepatic_glucose_3": Case("Hepatic_glucose_3.xml", 100.0, "diffrax", "kvaerno5", 1e-12, 1e-12),
    "galactose_30": Case("galactose_30.xml", 1000.0, rtol=1e-10),
    "van_der_pol": Case("van_der_pol.xml", 20.0),
    "Koenig_demo_v15": Case("Koenig_demo_v15.xml", 100.0),
    "roadrunner_feedback": Case("roadrunner_feedback.xml", 100.0),
    "roadrunner_test_1": Case("roadrunner_test_1.xml", 20.0),
    "sbmlutils_assignment": Case("sbmlutils_assignment.xml", 10.0),
    "twinloop_timed_events": Case("twinloop_timed_events.xml", 10.0),
}
FAST = ("BIOMD0000000003", "van_der_pol", "twinloop_timed_events")
# Models left out of the comparison, with the reason (none at present). Hepatic_glucose_3 is
# stiff (Jacobian eigenvalues down to -2e8): explicit solvers cannot cross it; Kvaerno5 with
# rtol = atol = 1e-12 matches (an atol of 1e-14 made it run out of steps).
UNCHECKED: dict[str, str] = {}


def features(path: Path) -> dict[str, int]:
    """What the SBML file uses (counts), for the comparison table."""
    from twinloop.models.sbml.document import read

    doc = read(path)
    every = [r.rate for r in doc.reactions.values()] + list(doc.assignment_rules.values())
    every += list(doc.rate_rules.values()) + list(doc.initial_assignments.values())
    return {
        "species": len(doc.species),
        "reactions": len(doc.reactions),
        "events": len(doc.events),
        "assignment_rules": len(doc.assignment_rules),
        "rate_rules": len(doc.rate_rules),
        "initial_assignments": len(doc.initial_assignments),
        "function_definitions": len(doc.functions),
        "piecewise": sum(node.uses("FUNCTION_PIECEWISE") for node in every),
    }


def selections(path: Path, names: tuple[str, ...]) -> list[str]:
    """libroadrunner's name of each observable: ``[S]`` for a concentration."""
    from twinloop.models.sbml.document import read

    doc = read(path)
    return [f"[{n}]" if n in doc.species and not doc.species[n].only_substance else n for n in names]


def reference(path: Path, names: tuple[str, ...], times: np.ndarray) -> tuple[np.ndarray, float]:
    """libroadrunner (CVODE, tight tolerances) at ``times``, and its wall time."""
    import roadrunner

    start = time.perf_counter()
    rr = roadrunner.RoadRunner(str(path))
    rr.integrator.relative_tolerance = RTOL_REFERENCE
    rr.integrator.absolute_tolerance = ATOL_REFERENCE
    rr.integrator.maximum_num_steps = 1_000_000
    rr.timeCourseSelections = ["time", *selections(path, names)]
    result = np.asarray(rr.simulate(float(times[0]), float(times[-1]), len(times)))
    return result[:, 1:], time.perf_counter() - start


def simulate(case: Case) -> tuple[Any, np.ndarray, np.ndarray, float]:
    """Import and simulate one case with twinloop: (model, times, outputs (T, n_obs), seconds)."""
    import twinloop as tl
    from twinloop.models.sbml import load_sbml
    from twinloop.simulate.engine import SolverSettings

    start = time.perf_counter()
    model = load_sbml(DATA / case.file)
    times = np.linspace(0.0, case.t_end, case.n_times)
    settings = SolverSettings(
        backend=case.backend, solver=case.solver, rtol=case.rtol, atol=case.atol, max_steps=200_000
    )  # type: ignore[arg-type]
    traj = tl.simulate(model, model.default_parameters, tl.models.Inputs(), times=times, settings=settings,
                       progress=False)  # fmt: skip
    return model, times, np.asarray(traj.observables)[0], time.perf_counter() - start


def relative_error(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative error with a floor near zero (see the module docstring)."""
    floor = np.maximum(1e-6 * np.max(np.abs(ref), axis=0, keepdims=True), 1e-10)
    return np.abs(ours - ref) / np.maximum(np.abs(ref), floor)


def compare(name: str) -> dict[str, Any]:
    """One row of the comparison table."""
    case = CASES[name]
    model, times, ours, seconds = simulate(case)
    ref, rr_seconds = reference(DATA / case.file, model.observable_names, times)
    err = relative_error(ours, ref)
    worst = np.unravel_index(int(np.nanargmax(np.where(np.isnan(err), np.inf, err))), err.shape)
    return {
        "model": name,
        "features": features(DATA / case.file),
        "states": len(model.states),
        "parameters": len(model.parameters),
        "observables": len(model.observables),
        "model_events": len(model.events),
        "max_rel_error": float(np.max(np.where(np.isnan(err), np.inf, err))),
        "worst": f"{model.observable_names[worst[1]]} at t={times[worst[0]]:g}",
        "twinloop_s": seconds,
        "roadrunner_s": rr_seconds,
        "solver": f"{case.backend}/{case.solver} rtol={case.rtol:g}",
    }
