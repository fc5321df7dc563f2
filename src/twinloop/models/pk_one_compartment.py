"""One-compartment pharmacokinetics with first-order oral absorption.

A drug given as an IV bolus (into ``central``), an oral dose (into ``depot``, absorbed
at rate ``ka``) or a zero-order IV infusion (mg/h into ``central``) is cleared with
first-order elimination ``CL / V``. Concentration is ``central / V``. The analytic
solutions for every dosing route are textbook (Gabrielsson & Weiner), which makes
this model the reference case for the engine's handling of doses and infusions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from twinloop.models.base import Input, Model, Observable, Parameter, ParamMap, State
from twinloop.models.inputs import Inputs
from twinloop.models.pk import ASSAY, CONTEXT
from twinloop.models.profile import ModelProfile, closed_form
from twinloop.models.treatments import CHEMOTHERAPY

ID = "pk-one-compartment"
VERSION = "1.0.0"


def rhs(t: Any, x: Any, u: Any, p: ParamMap) -> Any:
    """dx/dt of ``[depot, central]`` (mg/h); ``u = [infusion mg/h]``."""
    del t
    absorption = p["ka"] * x[0]
    return jnp.stack([-absorption, absorption + u[0] - p["CL"] / p["V"] * x[1]])


def initial_state(p: ParamMap) -> Any:
    """No drug in the body."""
    return jnp.zeros((2, *jnp.shape(p["V"])))


def standard_scenario(p: Mapping[str, float]) -> tuple[Inputs, float]:
    """100 mg IV at 0 h, 10 mg/h infused over 12-24 h, 200 mg orally at 36 h; 72 h."""
    del p
    plan = (
        Inputs.bolus("dose_iv", [(0.0, 100.0)])
        + Inputs.infusion("infusion", 12.0, 12.0, 10.0)
        + Inputs.bolus("dose_oral", [(36.0, 200.0)])
    )
    return plan, 72.0


def after_iv_bolus(p: Mapping[str, float], t: np.ndarray, dose: float = 100.0) -> np.ndarray:
    """The closed form ``D / V exp(-CL / V t)`` after an IV bolus of ``dose`` mg at t = 0."""
    return np.asarray(dose / p["V"] * np.exp(-p["CL"] / p["V"] * t))


PROFILE = ModelProfile(
    treatments=(CHEMOTHERAPY,),
    validation=(
        closed_form(
            "closed form D/V exp(-CL/V t) after an IV bolus",
            "concentration",
            np.linspace(0.0, 48.0, 97),
            after_iv_bolus,
            scenario=lambda p: Inputs.bolus("dose_iv", [(0.0, 100.0)]),
        ),
    ),
    context=CONTEXT,
)


def build() -> Model:
    """Construct the model specification (called once by the registry)."""
    return Model(
        id=ID,
        version=VERSION,
        name="One-compartment pharmacokinetics (IV bolus, infusion, oral)",
        description=__doc__ or "",
        time_unit="h",
        states=(
            State("depot", "mg", "drug amount at the absorption site", nonnegative=True),
            State("central", "mg", "drug amount in the central compartment", nonnegative=True),
        ),
        parameters=(
            Parameter("CL", "L/h", 5.0, 0.01, 500.0, "clearance"),
            Parameter("V", "L", 50.0, 0.1, 5000.0, "volume of distribution"),
            Parameter("ka", "1/h", 1.0, 0.01, 50.0, "first-order absorption rate"),
        ),
        inputs=(
            Input("infusion", "mg/h", "rate", "zero-order IV infusion into central"),
            Input("dose_iv", "mg", "bolus", "IV bolus dose", target="central"),
            Input("dose_oral", "mg", "bolus", "oral dose (bioavailability 1)", target="depot"),
        ),
        observables=(Observable("concentration", "mg/L", lambda x, p: x[1] / p["V"], "central / V", noise=ASSAY),),
        rhs=rhs,
        initial_state=initial_state,
        standard_scenario=standard_scenario,
        steady_state_inputs=lambda p: jnp.zeros((1, *jnp.shape(p["V"]))),
        references=(
            "Gabrielsson J, Weiner D. Pharmacokinetic and Pharmacodynamic Data Analysis: "
            "Concepts and Applications. 5th ed. Swedish Pharmaceutical Press; 2016.",
        ),
        profile=PROFILE,
    )
