"""Stein-Fojo regrowth-decay model of tumour size under therapy.

The tumour measured from the start of therapy is the sum of a regressing part that
decays at ``d`` and a regrowing part that grows at ``g``::

    y(t) = y0 * (exp(-d t) + exp(g t) - 1)

(Stein et al. 2008, 2011; Wilkerson et al. 2017). As ODEs: the regressing part
``R' = -d R`` with ``R(0) = y0`` and the regrowing part ``G' = g (G + y0)`` with
``G(0) = 0``; the observed size is ``R + G``. The growth rate ``g`` is the quantity
the authors link to overall survival.

Defaults (g 0.0008 /day, d 0.004 /day, log-scale inter-individual SD about 1) are
of the order of the medians reported by Stein et al. 2012 for sunitinib-treated renal
cell carcinoma; they are approximate and should be replaced by a fit to the
population at hand. Baseline sum of diameters 90 mm.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from twinloop.models.base import Model, Observable, Parameter, ParamMap, State
from twinloop.models.inputs import Inputs
from twinloop.models.profile import ModelProfile, closed_form
from twinloop.models.tgi_claret import CT_DIAMETERS, ONCOLOGY_CONTEXT

ID = "tgi-stein"
VERSION = "1.0.0"
OMEGA = {"g": 1.0, "d": 1.0}

REFERENCES = (
    "Stein WD, Figg WD, Dahut W, et al. Tumor growth rates derived from data for patients in a clinical trial "
    "correlate strongly with patient survival: a novel strategy for evaluation of clinical trial data. "
    "Oncologist. 2008;13(10):1046-1054.",
    "Stein WD, Gulley JL, Schlom J, et al. Tumor regression and growth rates determined in five intramural NCI "
    "prostate cancer trials. Clin Cancer Res. 2011;17(4):907-917.",
    "Stein WD, Wilkerson J, Kim ST, et al. Analyzing the pivotal trial that compared sunitinib and IFN-alpha in "
    "renal cell carcinoma, using a method that assesses tumor regression and growth. Clin Cancer Res. "
    "2012;18(8):2374-2381.",
    "Wilkerson J, Abdallah K, Hugh-Jones C, et al. Estimation of tumour regression and growth rates during "
    "treatment in patients with advanced prostate cancer: a retrospective analysis. Lancet Oncol. 2017;18:143-154.",
)


def rhs(t: Any, x: Any, u: Any, p: ParamMap) -> Any:
    """dx/dt of [regressing, regrowing]."""
    del t, u
    return jnp.stack([-p["d"] * x[0], p["g"] * (x[1] + p["y0"])])


def initial_state(p: ParamMap) -> Any:
    return jnp.stack([p["y0"] * 1.0, p["y0"] * 0.0])


def standard_scenario(p: Mapping[str, float]) -> tuple[Inputs, float]:
    """Therapy from day 0, followed for two years (the effect is in g and d)."""
    del p
    return Inputs(), 730.0


def exact(p: Mapping[str, float], t: np.ndarray) -> np.ndarray:
    """The closed form ``y0 (exp(-d t) + exp(g t) - 1)``."""
    return np.asarray(p["y0"] * (np.exp(-p["d"] * t) + np.exp(p["g"] * t) - 1.0))


PROFILE = ModelProfile(
    population=Path(__file__).with_name("tgi_stein.population.yaml"),
    validation=(
        closed_form(
            "closed form y0 (exp(-d t) + exp(g t) - 1)", "sum_of_diameters", np.linspace(0.0, 730.0, 74), exact
        ),
    ),
    context=ONCOLOGY_CONTEXT,
)


def build() -> Model:
    return Model(
        id=ID,
        version=VERSION,
        name="Stein-Fojo regrowth-decay tumour model",
        description=__doc__ or "",
        time_unit="d",
        states=(
            State("regressing", "mm", "part of the tumour regressing under therapy", nonnegative=True),
            State("regrowing", "mm", "part of the tumour regrowing despite therapy", nonnegative=True),
        ),
        parameters=(
            Parameter("y0", "mm", 90.0, 10.0, 400.0, "baseline sum of longest diameters"),
            Parameter("g", "1/d", 0.0008, 1e-6, 0.05, "regrowth rate"),
            Parameter("d", "1/d", 0.004, 1e-6, 0.2, "regression (decay) rate"),
        ),
        inputs=(),
        observables=(
            Observable(
                "sum_of_diameters", "mm", lambda x, p: x[0] + x[1], "regressing + regrowing", noise=CT_DIAMETERS
            ),
        ),
        rhs=rhs,
        initial_state=initial_state,
        standard_scenario=standard_scenario,
        identifiable=("y0", "g", "d"),
        references=REFERENCES,
        profile=PROFILE,
    )
