"""The default population of the UVA/Padova model, fitted to its 30 published patients.

Log parameters (with the therapy's carbohydrate ratio and correction factor and the
latent basal glucose production) get one mean per age group (child, adolescent, adult)
and a covariance pooled over groups, shrunk 25 % towards its diagonal because 27
degrees of freedom cannot fill a 29 x 29 covariance. The parameters the basal steady
state fixes are derived (``t1d_uva_padova.steady_state_parameters``), so every sampled
patient starts at its own steady state. Age is uniform over each group's published
range; sex is recorded but has no effect (the model has none).

The fit is stored as ``t1d_uva_padova.population.yaml`` (the model's default
population); :func:`population_spec` recomputes it, and a test checks the two agree.
``exclude`` leaves published patients out (a leave-one-out prior, to judge a twin on a
patient its prior never saw).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twinloop.errors import InputError
from twinloop.models import t1d_uva_padova as t1d

GROUPS = ("child", "adolescent", "adult")
SHRINKAGE = 0.25


def fit_table() -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """The 30 published patients as (names, variable -> values, group index)."""
    patients = t1d.patients()
    therapies = t1d.therapies()
    names = list(patients)
    free = [p for p, _, _ in t1d._PARAMETERS if p not in t1d.DERIVED]
    table = {p: np.array([patients[n][p] for n in names]) for p in free}
    table["EGPb"] = np.array([t1d.basal_production(patients[n]) for n in names])
    # The carbohydrate ratio enters as its dosing rule, ratio x basal insulin per day (the
    # "500 rule" constant of each patient, about 200 g): the ratio of a sampled patient
    # then follows its own insulin needs.
    basal_per_day = np.array([t1d.basal_rate_U_per_min(patients[n]) * 1440.0 for n in names])
    table["carb_ratio_rule"] = np.array([therapies[n].carb_ratio_g_per_U for n in names]) * basal_per_day
    table["correction_factor"] = np.array([therapies[n].correction_factor_mg_dl_per_U for n in names])
    table["age"] = np.array([therapies[n].age_years for n in names])
    group = np.array([GROUPS.index(n.split("#")[0]) for n in names])
    return names, table, group


def population_spec(exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The population spec (``twinloop.cohort.spec``) fitted to the published patients."""
    names, table, group = fit_table()
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise InputError(f"exclude={unknown}: not published patients; expected names like 'adult#001'.")
    keep = np.array([n not in exclude for n in names])
    table, group = {k: v[keep] for k, v in table.items()}, group[keep]
    varying = [k for k, v in table.items() if k != "age" and np.ptp(v) > 0]
    constant = {k: float(v[0]) for k, v in table.items() if k != "age" and np.ptp(v) == 0}
    logs = np.log(np.stack([table[k] for k in varying], axis=1))
    means = np.stack([logs[group == g].mean(axis=0) for g in range(len(GROUPS))])
    resid = logs - means[group]
    pooled = resid.T @ resid / (len(logs) - len(GROUPS))
    omega = (1 - SHRINKAGE) * pooled + SHRINKAGE * np.diag(np.diag(pooled))
    model_params = {p for p, _, _ in t1d._PARAMETERS}
    groups: dict[str, Any] = {}
    for g, name in enumerate(GROUPS):
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
    return {
        "model": t1d.ID,
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
