"""Two-compartment pharmacokinetics with first-order oral absorption.

Central and peripheral compartments exchange at the intercompartmental clearance
``Q``; elimination is ``CL`` from central; oral doses are absorbed at ``ka`` with
bioavailability ``F``. Its IV-bolus, infusion and oral solutions are sums of
exponentials (Gabrielsson & Weiner), the reference for the two-compartment component
that drives the oncology models' exposure.
"""

from __future__ import annotations

from collections.abc import Mapping

from twinloop.models.base import Model, Observable
from twinloop.models.inputs import Inputs
from twinloop.models.pk import ASSAY, CONTEXT, REFERENCE, PKComponent, PKDefaults
from twinloop.models.profile import ModelProfile
from twinloop.models.treatments import CHEMOTHERAPY

ID = "pk-two-compartment"
VERSION = "1.0.0"
PK = PKComponent(compartments=2, time_unit="h", defaults=PKDefaults(CL=5.0, V=20.0, ka=1.0, F=1.0, Q=10.0, V2=50.0))


def standard_scenario(p: Mapping[str, float]) -> tuple[Inputs, float]:
    """100 mg IV at 0 h, 10 mg/h over 12-24 h, 200 mg orally at 36 h; 96 h."""
    del p
    plan = (
        Inputs.bolus("dose_iv", [(0.0, 100.0)])
        + Inputs.infusion("infusion", 12.0, 12.0, 10.0)
        + Inputs.bolus("dose_oral", [(36.0, 200.0)])
    )
    return plan, 96.0


def build() -> Model:
    return Model(
        id=ID,
        version=VERSION,
        name="Two-compartment pharmacokinetics (IV bolus, infusion, oral)",
        description=__doc__ or "",
        time_unit="h",
        states=PK.states(),
        parameters=PK.parameters(),
        inputs=PK.inputs(),
        observables=(Observable("concentration", "mg/L", PK.concentration, "central / V", noise=ASSAY),),
        rhs=lambda t, x, u, p: PK.rhs(x, u[0], p),
        initial_state=PK.initial_state,
        standard_scenario=standard_scenario,
        steady_state_inputs=lambda p: PK.initial_state(p)[:1],
        references=(REFERENCE,),
        profile=ModelProfile(treatments=(CHEMOTHERAPY,), context=CONTEXT),
    )
