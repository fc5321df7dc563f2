"""Claret et al. (2009) tumour growth inhibition: exponential growth, exposure-driven
kill and resistance.

The tumour size ``y`` (sum of longest diameters, mm) grows exponentially at ``KL`` and
is killed in proportion to drug exposure, with a kill rate that decays at ``lam`` as
resistance emerges::

    dy/dt = KL * y - KD * E(t) * exp(-lam * t) * y

Claret et al. used the daily dose as the exposure ``E``. Here ``E`` is the drug
elimination rate ``CL * C(t)`` of a one- or two-compartment PK model (mg/day), the
K-PD exposure of Jacqmin et al. (2007): for a drug cleared within hours it equals the
dose rate over each day, so the published ``KD`` per gram per week carries over
(``KD = 0.058 / 1000 / 7 * 7 = 5.8e-5 per mg``). With a constant exposure the model has
the closed form ``y = y0 * exp(KL t - KD E (1 - exp(-lam t)) / lam)``.

Defaults are the fluorouracil arm of Claret et al. 2009 (KL 0.015 /week, KD 0.058
/g/week, lambda 0.042 /week; inter-individual variances 0.556, 0.540, 0.450 on the log
scale), converted to days. Baseline sum of diameters 90 mm (Claret et al. 2014). The
PK defaults describe a rapidly cleared IV cytotoxic (half-life ~ 2 h); replace them
with the drug's own population PK. Radiotherapy fractions multiply the diameter by
``SF ** (1/3)`` (see :mod:`twinloop.models.radiotherapy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from twinloop.models import radiotherapy
from twinloop.models.base import Model, Observable, Parameter, ParamMap, State
from twinloop.models.inputs import Inputs
from twinloop.models.noise import NoiseModel
from twinloop.models.pk import ASSAY, PKComponent, PKDefaults
from twinloop.models.pk import REFERENCE as PK_REFERENCE
from twinloop.models.profile import ClosureFeature, ClosureSpec, ContextOfUse, ModelProfile, closed_form
from twinloop.models.treatments import CHEMOTHERAPY, RADIOTHERAPY
from twinloop.models.treatments import chemotherapy as chemotherapy

ID = "tgi-claret"
VERSION = "1.0.0"
PK = PKComponent(compartments=1, time_unit="d", defaults=PKDefaults(CL=1200.0, V=150.0, ka=24.0, F=0.8))

# Inter-individual variability (variance of log-parameter) reported by Claret et al. 2009.
OMEGA = {"KL": 0.556, "KD": 0.540, "lam": 0.450}

REFERENCES = (
    "Claret L, Girard P, Hoff PM, et al. Model-based prediction of phase III overall survival in colorectal "
    "cancer on the basis of phase II tumor dynamics. J Clin Oncol. 2009;27(25):4103-4108.",
    "Claret L, Bruno R, Lu JF, et al. Exploratory modeling and simulation to support development of motesanib "
    "in Asian patients with non-small cell lung cancer based on MONET1 study results. Clin Pharmacol Ther. "
    "2014;95(4):446-451.",
    "Jacqmin P, Snelder N, et al. Modelling response time profiles in the absence of drug concentrations: "
    "definition and performance evaluation of the K-PD model. J Pharmacokinet Pharmacodyn. 2007;34:57-85.",
    PK_REFERENCE,
    radiotherapy.REFERENCE,
)


# Measurement noise of RECIST (CT) readings of the sum of diameters.
CT_DIAMETERS = NoiseModel(additive=1.0, proportional=0.1)
ONCOLOGY_CONTEXT = ContextOfUse(
    question="How will this patient's tumour burden evolve under the planned chemotherapy schedule?",
    use="Research and tumour-board discussion support; the treating team decides. Not a device.",
    model_influence="medium",
    decision_consequence="medium",
)


def _after_iv_bolus(p: Mapping[str, float], t: np.ndarray, dose: float = 2000.0) -> np.ndarray:
    """The closed form after one IV bolus of ``dose`` mg at t = 0 (one-compartment PK):
    the exposure ``CL C(t)`` decays at ``k = CL / V`` and its kill is integrated analytically."""
    k = p["CL"] / p["V"]
    kill = p["KD"] * k * dose * (1 - np.exp(-(k + p["lam"]) * t)) / (k + p["lam"])
    return np.asarray(p["y0"] * np.exp(p["KL"] * t - kill))


def resistance_closure() -> ClosureSpec:
    """For the model run without its resistance term (``lam`` at its floor): the fraction of the
    drug kill that is lost over time on treatment, learned from tumour series.

    Term on d(tumour_size)/dt: ``+ KD * E(t) * exp(-lam t) * y * f(t)``, ``f`` in [0, 1].
    The true missing term under Claret's resistance is ``f(t) = 1 - exp(-lam t)``.
    """

    def gate(t: Any, x: Any, u: Any, p: ParamMap) -> Any:
        exposure = p["CL"] / p["V"] * x[1]
        return p["KD"] * exposure * jnp.exp(-p["lam"] * t) * x[2]

    return ClosureSpec(
        name="resistance",
        target="tumour_size",
        features=(
            ClosureFeature("time_on_treatment", "d", lambda t, x, u, p: t, scale=365.0, description="model time"),
        ),
        unit="1",
        lower=0.0,
        upper=1.0,
        gate=gate,
        gate_description="the core's drug kill KD * E(t) * exp(-lam t) * y (mm/d)",
        width=16,
        depth=2,
        description="fraction of the drug kill lost to acquired resistance",
    )


def profile(compartments: int) -> ModelProfile:
    """Population, treatments, closed form and resistance closure (the last two for one
    PK compartment, where the exposure has the closed form they use)."""
    one = compartments == 1
    reference = closed_form(
        "closed form after an IV bolus (exposure integrated analytically)",
        "sum_of_diameters",
        np.linspace(0.0, 200.0, 101),
        _after_iv_bolus,
        scenario=lambda p: Inputs.bolus("dose_iv", [(0.0, 2000.0)]),
    )
    return ModelProfile(
        population=Path(__file__).with_name("tgi_claret.population.yaml"),
        treatments=(CHEMOTHERAPY, RADIOTHERAPY),
        validation=(reference,) if one else (),
        closures=(resistance_closure(),) if one else (),
        context=ONCOLOGY_CONTEXT,
    )


def build(compartments: int = 1) -> Model:
    """The model with a one- (default) or two-compartment PK component."""
    pk = PK if compartments == 1 else PKComponent(2, "d", PKDefaults(CL=1200.0, V=150.0, ka=24.0, F=0.8, Q=300, V2=300))
    tumour = pk.n_states

    def rhs(t: Any, x: Any, u: Any, p: ParamMap) -> Any:
        exposure = pk.elimination_rate(x, p)
        kill = p["KD"] * exposure * jnp.exp(-p["lam"] * t)
        dy = (p["KL"] - kill) * x[tumour]
        return jnp.concatenate([pk.rhs(x, u[0], p), dy[None]])

    def initial_state(p: ParamMap) -> Any:
        return jnp.concatenate([pk.initial_state(p), jnp.asarray(p["y0"])[None] * 1.0])

    return Model(
        id=ID if compartments == 1 else f"{ID}-2cmt",
        version=VERSION,
        name="Claret 2009 tumour growth inhibition (exposure-driven kill, resistance)",
        description=__doc__ or "",
        time_unit="d",
        states=(
            *pk.states(),
            State("tumour_size", "mm", "sum of longest diameters of the target lesions", nonnegative=True),
        ),
        parameters=(
            *pk.parameters(),
            Parameter("y0", "mm", 90.0, 10.0, 400.0, "baseline sum of longest diameters"),
            Parameter("KL", "1/d", 0.015 / 7, 1e-5, 0.05, "tumour growth rate"),
            Parameter("KD", "1/mg", 0.058 / 1000, 1e-7, 1e-2, "drug kill rate per mg/day of exposure"),
            Parameter("lam", "1/d", 0.042 / 7, 1e-5, 0.2, "rate at which the kill decays (resistance)"),
            *radiotherapy.parameters(),
        ),
        inputs=(*pk.inputs(), radiotherapy.fraction_input([tumour], exponent=1.0 / 3.0)),
        observables=(
            Observable("sum_of_diameters", "mm", lambda x, p: x[tumour], "tumour size", noise=CT_DIAMETERS),
            Observable("concentration", "mg/L", pk.concentration, "central drug concentration", noise=ASSAY),
        ),
        rhs=rhs,
        initial_state=initial_state,
        standard_scenario=standard_scenario,
        identifiable=("y0", "KL", "KD", "lam"),
        references=REFERENCES,
        profile=profile(compartments),
    )


def standard_scenario(p: Mapping[str, float]) -> tuple[Inputs, float]:
    """Fluorouracil 765 mg (425 mg/m2 for 1.8 m2) daily on days 1-5 every 4 weeks for
    6 cycles, then 30 x 2 Gy radiotherapy from week 26; 40 weeks."""
    del p
    return chemotherapy(765.0) + radiotherapy.schedule(182.0, 30, 2.0), 280.0
