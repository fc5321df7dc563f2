"""Default populations of the built-in models.

* ``t1d-uva-padova``: fitted to simglucose's 30 published virtual patients. Log
  parameters (with the therapy's carbohydrate ratio and correction factor and the
  latent basal glucose production) get one mean per age group (child, adolescent,
  adult) and a covariance pooled over groups, shrunk 25 % towards its diagonal because
  27 degrees of freedom cannot fill a 31 x 31 covariance. The parameters the basal
  steady state fixes are derived (``t1d_uva_padova.steady_state_parameters``), so every
  sampled patient starts at its own steady state. Age is uniform over each group's
  published range; sex is recorded but has no effect (the model has none).
* ``tgi-claret``: the inter-individual variances of Claret et al. 2009; baseline size
  log-normal around 90 mm (variance 0.25, assumed); clearance and volume scale
  allometrically with body weight (exponents 0.75 and 1); tumour doubling time
  restricted to 30 days - 10 years.
* ``tgi-stein``, ``tgi-simeoni``: the typical values of each model file with its
  declared log-scale variability.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from twinloop.cohort.population import Population
from twinloop.errors import InputError
from twinloop.models import t1d_uva_padova, tgi_claret, tgi_simeoni, tgi_stein
from twinloop.models.registry import get as get_model

T1D_GROUPS = ("child", "adolescent", "adult")
SHRINKAGE = 0.25
_ADULT_COVARIATES = {
    "age": {"distribution": "normal", "mean": 63.0, "sd": 10.0, "lower": 18.0, "upper": 90.0, "unit": "a"},
    "sex": {"distribution": "categorical", "levels": {"female": 0.45, "male": 0.55}},
    "weight": {"distribution": "lognormal", "median": 72.0, "cv": 0.2, "lower": 35.0, "upper": 180.0, "unit": "kg"},
}


@cache
def default_population(model_id: str) -> Population:
    builders = {
        "t1d-uva-padova": t1d_population,
        "tgi-claret": lambda: claret_population("tgi-claret"),
        "tgi-claret-2cmt": lambda: claret_population("tgi-claret-2cmt"),
        "tgi-stein": stein_population,
        "tgi-simeoni": simeoni_population,
    }
    if model_id not in builders:
        raise InputError(f"Model '{model_id}' has no default population; write one (see twinloop.cohort.spec).")
    return builders[model_id]()


def t1d_fit_table() -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """The 30 published patients as (names, variable -> values, group index)."""
    patients = t1d_uva_padova.patients()
    therapies = t1d_uva_padova.therapies()
    names = list(patients)
    model = get_model(t1d_uva_padova.ID)
    free = [p for p in model.parameter_names if p not in model.derived_parameters]
    table = {p: np.array([patients[n][p] for n in names]) for p in free}
    table["EGPb"] = np.array([t1d_uva_padova.basal_production(patients[n]) for n in names])
    # The carbohydrate ratio enters as its dosing rule, ratio x basal insulin per day (the
    # "500 rule" constant of each patient, about 200 g): the ratio of a sampled patient
    # then follows its own insulin needs.
    basal_per_day = np.array([t1d_uva_padova.basal_rate_U_per_min(patients[n]) * 1440.0 for n in names])
    table["carb_ratio_rule"] = np.array([therapies[n].carb_ratio_g_per_U for n in names]) * basal_per_day
    table["correction_factor"] = np.array([therapies[n].correction_factor_mg_dl_per_U for n in names])
    table["age"] = np.array([therapies[n].age_years for n in names])
    group = np.array([T1D_GROUPS.index(n.split("#")[0]) for n in names])
    return names, table, group


def t1d_population(exclude: tuple[str, ...] = ()) -> Population:
    """The default T1D population; ``exclude`` leaves published patients out of the fit
    (a leave-one-out prior, to judge a twin on a patient its prior never saw)."""
    names, table, group = t1d_fit_table()
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise InputError(f"exclude={unknown}: not published patients; expected names like 'adult#001'.")
    keep = np.array([n not in exclude for n in names])
    table, group = {k: v[keep] for k, v in table.items()}, group[keep]
    varying = [k for k, v in table.items() if k != "age" and np.ptp(v) > 0]
    constant = {k: float(v[0]) for k, v in table.items() if k != "age" and np.ptp(v) == 0}
    logs = np.log(np.stack([table[k] for k in varying], axis=1))
    means = np.stack([logs[group == g].mean(axis=0) for g in range(len(T1D_GROUPS))])
    resid = logs - means[group]
    pooled = resid.T @ resid / (len(logs) - len(T1D_GROUPS))
    omega = (1 - SHRINKAGE) * pooled + SHRINKAGE * np.diag(np.diag(pooled))
    model_params = set(get_model(t1d_uva_padova.ID).parameter_names)
    groups: dict[str, Any] = {}
    for g, name in enumerate(T1D_GROUPS):
        ages = table["age"][group == g]
        groups[name] = {
            "fraction": 1.0 / 3.0 if g < 2 else 1.0 - 2.0 / 3.0,
            "covariates": {
                "age": {
                    "distribution": "uniform",
                    "low": float(ages.min()),
                    "high": float(ages.max()) + 1.0,
                    "unit": "a",
                },
                "sex": {"distribution": "categorical", "levels": {"female": 0.5, "male": 0.5}},
            },
            "typical": {k: float(np.exp(means[g, i])) for i, k in enumerate(varying)},
        }
    return Population.from_dict(
        {
            "model": t1d_uva_padova.ID,
            "name": "t1d-default" if not exclude else f"t1d-default without {', '.join(exclude)}",
            "description": "Fitted to the 30 published UVA/Padova virtual patients (log-normal, by age group).",
            "groups": groups,
            "omega": {"names": varying, "matrix": omega.tolist()},
            "fixed": {k: v for k, v in constant.items() if k in model_params},
            "derived": {"carb_ratio": "carb_ratio_rule / (u2ss * BW / 6000 * 1440)"},
            "constraints": [
                {"expression": "Gpb / Vg", "lower": 70.0, "upper": 200.0, "name": "basal_glucose_mg_dL"},
                {"expression": "carb_ratio", "lower": 2.0, "upper": 50.0, "name": "carb_ratio_g_per_U"},
            ],
        }
    )


def claret_population(model_id: str) -> Population:
    typical = {"y0": 90.0, "KL": 0.015 / 7, "KD": 0.058 / 1000, "lam": 0.042 / 7, "CL": 1200.0, "V": 150.0}
    return Population.from_dict(
        {
            "model": model_id,
            "name": "claret-default",
            "description": "Claret et al. 2009 (fluorouracil arm) inter-individual variability.",
            "covariates": _ADULT_COVARIATES,
            "typical": typical,
            "omega": {**tgi_claret.OMEGA, "y0": 0.25, "CL": 0.09, "V": 0.04},
            "effects": [
                {"parameter": "CL", "covariate": "weight", "kind": "power", "reference": 70.0, "exponent": 0.75},
                {"parameter": "V", "covariate": "weight", "kind": "power", "reference": 70.0, "exponent": 1.0},
            ],
            "constraints": [{"expression": "log(2) / KL", "lower": 30.0, "upper": 3650.0, "name": "doubling_time_d"}],
        }
    )


def stein_population() -> Population:
    return Population.from_dict(
        {
            "model": tgi_stein.ID,
            "name": "stein-default",
            "covariates": _ADULT_COVARIATES,
            "typical": {"y0": 90.0, "g": 0.0008, "d": 0.004},
            "omega": {**tgi_stein.OMEGA, "y0": 0.25},
            "constraints": [{"expression": "log(2) / g", "lower": 30.0, "upper": 1e5, "name": "regrowth_doubling_d"}],
        }
    )


def simeoni_population() -> Population:
    return Population.from_dict(
        {
            "model": tgi_simeoni.ID,
            "name": "simeoni-default",
            "typical": {"w0": 0.1, "lambda0": 0.273, "lambda1": 0.814, "k1": 0.968, "k2": 0.629},
            "omega": {**tgi_simeoni.OMEGA, "w0": 0.09},
            "constraints": [{"expression": "log(2) / lambda0", "lower": 0.5, "upper": 30.0, "name": "doubling_time_d"}],
        }
    )
