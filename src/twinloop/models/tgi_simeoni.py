"""Simeoni et al. (2004) tumour growth inhibition with transit compartments.

Proliferating tumour mass ``x1`` grows exponentially (``lambda0``) while small and
linearly (``lambda1``) once large, with ``psi = 20`` making the switch sharp. The drug
moves proliferating cells into damaged states at rate ``k2 * C(t)``; damaged cells
pass through three transit compartments at ``k1`` and die::

    dx1/dt = lambda0 x1 / (1 + (lambda0 w / lambda1)^psi)^(1/psi) - k2 C x1
    dx2/dt = k2 C x1 - k1 x2,  dx3/dt = k1 (x2 - x3),  dx4/dt = k1 (x3 - x4)
    w = x1 + x2 + x3 + x4   (tumour weight, g)

Defaults are the paclitaxel estimates of experiment 1 in Simeoni et al. 2004, Table 2
(k1 0.968 /day, k2 0.000629 per ng/mL per day = 0.629 L/mg/day, lambda0 0.273 /day,
lambda1 0.814 g/day), with an initial tumour weight of 0.1 g. The two-compartment
PK defaults are illustrative for a mouse, per kg of body weight (doses in mg/kg,
volumes and clearances per kg); replace them with the drug's own PK. Radiotherapy
fractions kill proliferating cells (``x1`` times ``SF``). The sum of diameters is
that of a sphere of the tumour's volume (1 g ~ 1 cm3).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from twinloop.models import radiotherapy
from twinloop.models.base import Model, Observable, Parameter, ParamMap, State
from twinloop.models.inputs import Inputs
from twinloop.models.noise import NoiseModel
from twinloop.models.pk import ASSAY, PKComponent, PKDefaults
from twinloop.models.pk import REFERENCE as PK_REFERENCE
from twinloop.models.profile import ModelProfile
from twinloop.models.tgi_claret import CT_DIAMETERS, ONCOLOGY_CONTEXT
from twinloop.models.treatments import CHEMOTHERAPY, RADIOTHERAPY

ID = "tgi-simeoni"
VERSION = "1.0.0"
PK = PKComponent(compartments=2, time_unit="d", defaults=PKDefaults(CL=12.0, V=1.0, ka=10.0, F=0.5, Q=4.0, V2=2.0))
OMEGA = {"lambda0": 0.09, "lambda1": 0.09, "k1": 0.09, "k2": 0.09}  # 30 % CV, an assumption

REFERENCES = (
    "Simeoni M, Magni P, Cammia C, et al. Predictive pharmacokinetic-pharmacodynamic modeling of tumor growth "
    "kinetics in xenograft models after administration of anticancer agents. Cancer Res. 2004;64(3):1094-1101.",
    PK_REFERENCE,
    radiotherapy.REFERENCE,
)


# A xenograft weighed from calliper volume, and the sphere diameter derived from it.
WEIGHT_NOISE = NoiseModel(additive=0.01, proportional=0.1)
PROFILE = ModelProfile(
    population=Path(__file__).with_name("tgi_simeoni.population.yaml"),
    treatments=(CHEMOTHERAPY, RADIOTHERAPY),
    context=ONCOLOGY_CONTEXT,
)


def sphere_diameter_mm(weight_g: Any) -> Any:
    """Diameter (mm) of a sphere of ``weight_g`` grams at unit density."""
    return 10.0 * (6.0 * jnp.maximum(weight_g, 0.0) / jnp.pi) ** (1.0 / 3.0)


def _switch(ratio: Any, psi: Any) -> Any:
    """``(1 + ratio**psi) ** (-1/psi)`` without overflow: 1 while small, 1/ratio once large."""
    log_ratio = jnp.log(jnp.maximum(ratio, 1e-300))
    return jnp.exp(-jnp.logaddexp(0.0, psi * log_ratio) / psi)


def build() -> Model:
    pk = PK
    x1 = pk.n_states

    def rhs(t: Any, x: Any, u: Any, p: ParamMap) -> Any:
        del t
        c = pk.concentration(x, p)
        w = x[x1] + x[x1 + 1] + x[x1 + 2] + x[x1 + 3]
        growth = p["lambda0"] * x[x1] * _switch(p["lambda0"] * w / p["lambda1"], p["psi"])
        damage = p["k2"] * c * x[x1]
        tumour = jnp.stack(
            [
                growth - damage,
                damage - p["k1"] * x[x1 + 1],
                p["k1"] * (x[x1 + 1] - x[x1 + 2]),
                p["k1"] * (x[x1 + 2] - x[x1 + 3]),
            ]
        )
        return jnp.concatenate([pk.rhs(x, u[0], p), tumour])

    def initial_state(p: ParamMap) -> Any:
        zero = 0.0 * p["w0"]
        return jnp.concatenate([pk.initial_state(p), jnp.stack([p["w0"] * 1.0, zero, zero, zero])])

    def weight(x: Any, p: ParamMap) -> Any:
        return x[x1] + x[x1 + 1] + x[x1 + 2] + x[x1 + 3]

    return Model(
        id=ID,
        version=VERSION,
        name="Simeoni 2004 tumour growth inhibition (transit compartments)",
        description=__doc__ or "",
        time_unit="d",
        states=(
            *pk.states(),
            State("proliferating", "g", "x1: proliferating tumour mass", nonnegative=True),
            State("damaged_1", "g", "x2: damaged cells, first transit compartment", nonnegative=True),
            State("damaged_2", "g", "x3: damaged cells, second transit compartment", nonnegative=True),
            State("damaged_3", "g", "x4: damaged cells, third transit compartment", nonnegative=True),
        ),
        parameters=(
            *pk.parameters(),
            Parameter("w0", "g", 0.1, 0.005, 2.0, "initial tumour weight"),
            Parameter("lambda0", "1/d", 0.273, 0.01, 2.0, "exponential growth rate"),
            Parameter("lambda1", "g/d", 0.814, 0.01, 5.0, "linear growth rate"),
            Parameter("k1", "1/d", 0.968, 0.05, 10.0, "transit rate of damaged cells"),
            Parameter("k2", "L/(mg.d)", 0.629, 1e-3, 50.0, "drug potency on proliferating cells"),
            Parameter("psi", "1", 20.0, 1.0, 50.0, "sharpness of the exponential-to-linear switch"),
            *radiotherapy.parameters(),
        ),
        inputs=(*pk.inputs(), radiotherapy.fraction_input([x1], exponent=1.0)),
        observables=(
            Observable("tumour_weight", "g", weight, "x1 + x2 + x3 + x4", noise=WEIGHT_NOISE),
            Observable(
                "sum_of_diameters",
                "mm",
                lambda x, p: sphere_diameter_mm(weight(x, p)),
                "sphere diameter",
                noise=CT_DIAMETERS,
            ),
            Observable("concentration", "mg/L", pk.concentration, "central drug concentration", noise=ASSAY),
        ),
        rhs=rhs,
        initial_state=initial_state,
        standard_scenario=standard_scenario,
        identifiable=("w0", "lambda0", "lambda1", "k2"),
        references=REFERENCES,
        profile=PROFILE,
    )


def standard_scenario(p: Mapping[str, float]) -> tuple[Inputs, float]:
    """Paclitaxel 30 mg/kg IV every 4 days x 3 from day 9; 40 days."""
    del p
    return Inputs.bolus("dose_iv", [(9.0, 30.0), (13.0, 30.0), (17.0, 30.0)]), 40.0
