"""Validation of a core against references it was not built from.

The references are the model's own (``model.profile.validation``): closed forms under a
simple regimen, and peer implementations' outputs (for the UVA/Padova core the stored
simglucose trajectories, when the reference file is present). Each reference gives its
runs (parameters, inputs, times, expected values); they are simulated (a closed form,
judged by relative error, at tight tolerances; a peer, judged by absolute error, at the
engine's defaults, as the product runs it) and the worst error over every run and time
is compared with the reference's tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from twinloop.models.base import Model
from twinloop.models.profile import ReferenceCase, ValidationReference
from twinloop.simulate import simulate
from twinloop.simulate.engine import SolverSettings

TIGHT = SolverSettings(rtol=1e-9, atol=1e-9)


def replay(model: Model, cases: Sequence[ReferenceCase], settings: SolverSettings | None = None) -> Any:
    """Simulate every case (one patient each, on the first case's times; the cases of one
    reference share their times); the trajectories carry the cases' labels as patient ids."""
    params = np.stack([[float(c.params[n]) for n in model.parameter_names] for c in cases])
    plans = [c.inputs for c in cases]
    return simulate(model, params, plans if len(plans) > 1 else plans[0], times=cases[0].times,
                    patient_ids=[c.label for c in cases], settings=settings, progress=False)  # fmt: skip


def compare(model: Model, reference: ValidationReference) -> dict[str, Any] | None:
    """One reference's comparison row, None when it has no runs (its data are absent)."""
    cases = list(reference.cases(model))
    if not cases:
        return None
    settings = TIGHT if reference.error == "relative" else None
    got = replay(model, cases, settings)[reference.observable]
    expected = np.stack([c.expected for c in cases])
    absolute = float(np.max(np.abs(got - expected)))
    relative = float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-300)))
    error = relative if reference.error == "relative" else absolute
    unit = next(o.unit for o in model.observables if o.name == reference.observable)
    return {"reference": reference.name, "observable": reference.observable, "cases": len(cases),
            "max_abs_error": absolute, "unit": unit, "max_relative_error": relative, "error": reference.error,
            "tolerance": reference.tolerance, "passed": bool(error < reference.tolerance)}  # fmt: skip


def validate(model: Model) -> list[dict[str, Any]]:
    """Each available reference comparison for ``model``: the reference, the error, pass/fail."""
    rows = (compare(model, ref) for ref in model.profile.validation)
    return [row for row in rows if row is not None]
