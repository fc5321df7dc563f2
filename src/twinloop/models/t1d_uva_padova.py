"""UVA/Padova type 1 diabetes model (Dalla Man et al. 2007), as simglucose implements it.

Thirteen physiological states: a three-compartment gastro-intestinal tract whose
gastric emptying slows with the size of the meal being eaten, two-compartment glucose
kinetics with endogenous production, insulin-dependent utilisation and renal
excretion, plasma and liver insulin, delayed insulin action, two subcutaneous insulin
compartments and a subcutaneous glucose compartment. A fourteenth state, ``meal_size``,
is the model's meal memory (stomach content when eating began plus the grams eaten
since, in mg); it changes only in discrete time, at the start of each minute.

Input semantics follow simglucose: ``insulin`` is a rate in U/min (basal and bolus
alike; a pump bolus of B units is B U/min for one minute); ``carbs`` is the
carbohydrate eaten, in g/min, held constant over each minute. Build announced meals
with :meth:`twinloop.Inputs.meals` (5 g/min by default).

The 30 virtual patients (10 children, 10 adolescents, 10 adults) are simglucose's
published parameter sets, MIT licence (see ``data/LICENSE-simglucose.txt``).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from twinloop.errors import InputError
from twinloop.models.base import Input, Model, Observable, Parameter, ParamMap, State
from twinloop.models.inputs import Inputs
from twinloop.models.noise import NoiseModel
from twinloop.models.profile import (
    ContextOfUse,
    ControlInterface,
    FastPath,
    ModelProfile,
    ReferenceCase,
    Treatment,
    ValidationReference,
)
from twinloop.models.treatments import check_events, number

ID = "t1d-uva-padova"
VERSION = "1.0.0"
U_TO_PMOL = 6000.0  # 1 U of insulin = 6000 pmol
INSULIN, CARBS = 0, 1  # rate-input indices
MEAL_SIZE = 13  # index of the meal-memory state

# (name, unit, description, nonnegative)
_STATES = (
    ("stomach_solid", "mg", "Qsto1: glucose in the stomach, solid phase", True),
    ("stomach_liquid", "mg", "Qsto2: glucose in the stomach, liquid phase", True),
    ("gut", "mg", "Qgut: glucose in the intestine", True),
    ("glucose_plasma", "mg/kg", "Gp: glucose mass in plasma and fast tissues", True),
    ("glucose_tissue", "mg/kg", "Gt: glucose mass in slowly equilibrating tissues", True),
    ("insulin_plasma", "pmol/kg", "Ip: insulin mass in plasma", True),
    ("insulin_action", "pmol/L", "X: insulin action on glucose utilisation (can be < 0)", False),
    ("insulin_delay_1", "pmol/L", "I1: first delay compartment of insulin action on production", True),
    ("insulin_delay_2", "pmol/L", "Id: delayed insulin signal acting on production", True),
    ("insulin_liver", "pmol/kg", "Il: insulin mass in the liver", True),
    ("insulin_sc_1", "pmol/kg", "Isc1: subcutaneous insulin, non-monomeric", True),
    ("insulin_sc_2", "pmol/kg", "Isc2: subcutaneous insulin, monomeric", True),
    ("glucose_sc", "mg/kg", "Gs: subcutaneous glucose mass", True),
    ("meal_size", "mg", "Dbar: stomach content at eating onset + amount eaten since", True),
)

_FLUX = "mg/kg/min"
_PER_MIN = "1/min"
_ACTION = "mg.L/(kg.min.pmol)"
# (name, unit, description); bounds come from the published patients.
_PARAMETERS = (
    ("BW", "kg", "body weight"),
    ("kabs", _PER_MIN, "rate of intestinal absorption"),
    ("kmax", _PER_MIN, "maximum rate of gastric emptying"),
    ("kmin", _PER_MIN, "minimum rate of gastric emptying"),
    ("b", "1", "fraction of the meal at which gastric emptying first falls to half"),
    ("d", "1", "fraction of the meal at which gastric emptying recovers to half"),
    ("f", "1", "fraction of intestinal absorption that appears in plasma"),
    ("Vg", "dL/kg", "distribution volume of glucose"),
    ("Vi", "L/kg", "distribution volume of insulin"),
    ("kp1", _FLUX, "extrapolated endogenous glucose production at zero glucose and insulin"),
    ("kp2", _PER_MIN, "liver glucose effectiveness"),
    ("kp3", _ACTION, "effect of delayed insulin on glucose production"),
    ("Fsnc", _FLUX, "insulin-independent glucose utilisation"),
    ("ke1", _PER_MIN, "glomerular filtration rate"),
    ("ke2", "mg/kg", "renal threshold of glucose"),
    ("k1", _PER_MIN, "rate from plasma to tissue glucose"),
    ("k2", _PER_MIN, "rate from tissue to plasma glucose"),
    ("Vm0", _FLUX, "basal insulin-dependent utilisation capacity"),
    ("Vmx", _ACTION, "insulin sensitivity of glucose utilisation"),
    ("Km0", "mg/kg", "Michaelis-Menten constant of utilisation"),
    ("m1", _PER_MIN, "rate from liver to plasma insulin"),
    ("m2", _PER_MIN, "rate from plasma to liver insulin"),
    ("m4", _PER_MIN, "peripheral insulin degradation"),
    ("m30", _PER_MIN, "hepatic insulin extraction"),
    ("ka1", _PER_MIN, "absorption of non-monomeric subcutaneous insulin"),
    ("ka2", _PER_MIN, "absorption of monomeric subcutaneous insulin"),
    ("kd", _PER_MIN, "dissociation of subcutaneous insulin"),
    ("Ib", "pmol/L", "basal plasma insulin concentration"),
    ("p2u", _PER_MIN, "rate of insulin action on utilisation"),
    ("ki", _PER_MIN, "rate of delayed insulin action on production"),
    ("ksc", _PER_MIN, "rate of subcutaneous glucose equilibration"),
    ("u2ss", "pmol/kg/min", "basal (steady-state) insulin infusion rate"),
    ("Gpb", "mg/kg", "basal plasma glucose mass"),
    ("Gtb", "mg/kg", "basal tissue glucose mass"),
    ("Ipb", "pmol/kg", "basal plasma insulin mass"),
    ("Ilb", "pmol/kg", "basal liver insulin mass"),
    ("isc1ss", "pmol/kg", "basal subcutaneous insulin, compartment 1"),
    ("isc2ss", "pmol/kg", "basal subcutaneous insulin, compartment 2"),
)
# Parameters that are the same for every published patient get physiological bounds.
_FIXED_BOUNDS = {"f": (0.5, 1.0), "Fsnc": (0.5, 2.0), "ke1": (0.0, 0.005), "ke2": (200.0, 500.0)}

# What a twin estimates from a CGM record with its insulin and meals (the rest come from the
# population given the patient's body weight). Chosen as ReplayBG chooses its ~15: basal
# glucose (Gpb), basal insulin (Ib, which with the recorded basal rate sets the insulin
# steady state), insulin sensitivity of utilisation (Vmx) and of production (kp3, and its
# delay ki), glucose effectiveness (kp2) and the plasma-tissue exchange (k1, k2), the
# meal route (gastric emptying kmax and kmin, intestinal absorption kabs), insulin action
# (p2u) and subcutaneous absorption (ka1, ka2): the parameters that vary most between the
# 30 published patients (log-sd 0.29-1.0) and that shape the glucose response to meals and
# insulin. Volumes, renal and hepatic constants vary little (log-sd < 0.23) or are shared.
IDENTIFIABLE = ("Gpb", "Ib", "Vmx", "kp2", "kp3", "ki", "k1", "k2", "kabs", "kmax", "kmin", "p2u", "ka1", "ka2")

# Measurement noise: a CGM (readings below 40 or above 400 mg/dL are shown as the limit,
# "LOW" / "HIGH"), a laboratory glucose analyser and an insulin immunoassay.
CGM = NoiseModel(additive=8.0, proportional=0.05, lower=40.0, upper=400.0)
LAB_GLUCOSE = NoiseModel(additive=5.0, proportional=0.05)
INSULIN_ASSAY = NoiseModel(additive=5.0, proportional=0.1)

REFERENCES = (
    "Dalla Man C, Rizza RA, Cobelli C. Meal simulation model of the glucose-insulin system. "
    "IEEE Trans Biomed Eng. 2007;54(10):1740-1749. doi:10.1109/TBME.2007.893506",
    "Kovatchev BP, Breton M, Dalla Man C, Cobelli C. In silico preclinical trials: a proof of "
    "concept in closed-loop control of type 1 diabetes. J Diabetes Sci Technol. 2009;3(1):44-55.",
    "Xie J. Simglucose v0.2.1 (2018), github.com/jxx123/simglucose: the implementation, "
    "patient parameters and input semantics reproduced here (MIT licence).",
)


@dataclass(frozen=True)
class Therapy:
    """A virtual patient's insulin therapy settings (simglucose's Quest.csv)."""

    carb_ratio_g_per_U: float
    correction_factor_mg_dl_per_U: float
    age_years: float
    total_daily_insulin_U: float


def _read_csv(name: str) -> list[dict[str, str]]:
    text = resources.files("twinloop.models").joinpath("data", name).read_text()
    return list(csv.DictReader(text.splitlines()))


@cache
def patients() -> dict[str, dict[str, float]]:
    """The 30 published virtual patients: name -> parameter values."""
    rows = _read_csv("uva_padova_patients.csv")
    names = [p[0] for p in _PARAMETERS]
    return {row["Name"]: {n: float(row[n]) for n in names} for row in rows}


@cache
def therapies() -> dict[str, Therapy]:
    """Carbohydrate ratio, correction factor, age and daily insulin of each patient."""
    return {
        row["Name"]: Therapy(float(row["CR"]), float(row["CF"]), float(row["Age"]), float(row["TDI"]))
        for row in _read_csv("uva_padova_therapy.csv")
    }


def basal_rate_U_per_min(p: ParamMap) -> Any:
    """The basal insulin rate that keeps the patient at steady state (U/min)."""
    return p["u2ss"] * p["BW"] / U_TO_PMOL


def rhs(t: Any, x: Any, u: Any, p: ParamMap) -> Any:
    """dx/dt of the 14 states; ``u = [insulin U/min, carbs g/min]``."""
    del t
    carbs_mg = u[CARBS] * 1000.0
    insulin = u[INSULIN] * U_TO_PMOL / p["BW"]  # pmol/kg/min
    qsto = x[0] + x[1]
    dbar = x[MEAL_SIZE]
    safe_dbar = jnp.where(dbar > 0, dbar, 1.0)
    aa = 5.0 / (2.0 * safe_dbar * (1.0 - p["b"]))
    cc = 5.0 / (2.0 * safe_dbar * p["d"])
    kgut_meal = p["kmin"] + (p["kmax"] - p["kmin"]) / 2.0 * (
        jnp.tanh(aa * (qsto - p["b"] * safe_dbar)) - jnp.tanh(cc * (qsto - p["d"] * safe_dbar)) + 2.0
    )
    kgut = jnp.where(dbar > 0, kgut_meal, p["kmax"])

    rate_appearance = p["f"] * p["kabs"] * x[2] / p["BW"]
    egp = p["kp1"] - p["kp2"] * x[3] - p["kp3"] * x[8]
    renal = jnp.where(x[3] > p["ke2"], p["ke1"] * (x[3] - p["ke2"]), 0.0)
    utilisation = (p["Vm0"] + p["Vmx"] * x[6]) * x[4] / (p["Km0"] + x[4])
    plasma_insulin = x[5] / p["Vi"]

    dx = jnp.stack(
        [
            -p["kmax"] * x[0] + carbs_mg,
            p["kmax"] * x[0] - kgut * x[1],
            kgut * x[1] - p["kabs"] * x[2],
            jnp.maximum(egp, 0.0) + rate_appearance - p["Fsnc"] - renal - p["k1"] * x[3] + p["k2"] * x[4],
            -utilisation + p["k1"] * x[3] - p["k2"] * x[4],
            -(p["m2"] + p["m4"]) * x[5] + p["m1"] * x[9] + p["ka1"] * x[10] + p["ka2"] * x[11],
            -p["p2u"] * x[6] + p["p2u"] * (plasma_insulin - p["Ib"]),
            -p["ki"] * (x[7] - plasma_insulin),
            -p["ki"] * (x[8] - x[7]),
            -(p["m1"] + p["m30"]) * x[9] + p["m2"] * x[5],
            insulin - (p["ka1"] + p["kd"]) * x[10],
            p["kd"] * x[10] - p["ka2"] * x[11],
            -p["ksc"] * x[12] + p["ksc"] * x[3],
            0.0 * dbar,
        ]
    )
    # As in simglucose: compartments that went negative stop changing.
    frozen = jnp.array([False, False, False, True, True, True, False, False, False, True, True, True, True, False])
    frozen = frozen.reshape(frozen.shape + (1,) * (x.ndim - 1))
    return jnp.where(frozen & (x < 0), 0.0, dx)


def meal_memory(x: Any, u_prev: Any, u_next: Any, p: ParamMap) -> Any:
    """At each minute: start a new meal memory when eating begins, add what is eaten."""
    del p
    grams = u_next[CARBS] * 1.0  # g/min held for one minute
    eating, was_eating = u_next[CARBS] > 0, u_prev[CARBS] > 0
    onset = eating & ~was_eating
    dbar = jnp.where(onset, x[0] + x[1], x[MEAL_SIZE]) + jnp.where(eating, grams * 1000.0, 0.0)
    return x.at[MEAL_SIZE].set(dbar)


def initial_state(p: ParamMap) -> Any:
    """The basal steady state of the patient (simglucose's x0), no meal in memory."""
    zero = 0.0 * p["Gpb"]
    return jnp.stack(
        [
            zero, zero, zero, p["Gpb"], p["Gtb"], p["Ipb"], zero, p["Ib"], p["Ib"],
            p["Ilb"], p["isc1ss"], p["isc2ss"], p["Gpb"], zero,
        ]
    )  # fmt: skip


def steady_state_inputs(p: ParamMap) -> Any:
    """Basal insulin and no carbohydrate: the inputs under which x0 is a steady state."""
    return jnp.stack([basal_rate_U_per_min(p), 0.0 * p["BW"]])


def _number_or_array(value: Any) -> Any:
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array


DERIVED = ("Gtb", "Vm0", "kp1", "Ipb", "Ilb", "u2ss", "isc1ss", "isc2ss")


def basal_production(p: Mapping[str, Any]) -> Any:
    """Basal endogenous glucose production EGPb (mg/kg/min) of a complete parameter set."""
    return p["kp1"] - p["kp2"] * p["Gpb"] - p["kp3"] * p["Ib"]


def steady_state_parameters(v: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters fixed by the basal steady state (Dalla Man et al. 2007).

    From basal glucose ``Gpb``, basal insulin ``Ib``, basal production ``EGPb`` (a
    latent quantity, not a model parameter) and the kinetic parameters: tissue glucose
    and ``Vm0`` balance utilisation against production, ``kp1`` makes production equal
    ``EGPb`` at basal, and the insulin masses and basal rate ``u2ss`` balance insulin
    kinetics. Renal excretion counts when basal glucose is above the renal threshold
    (no published patient is).
    """
    excess = v["Gpb"] - v["ke2"]
    renal = (abs(excess) + excess) / 2.0 * v["ke1"]  # max(excess, 0), traceable by JAX
    uptake = v["EGPb"] - v["Fsnc"] - renal  # insulin-dependent utilisation at basal
    gtb = (v["k1"] * v["Gpb"] - uptake) / v["k2"]
    ipb = v["Ib"] * v["Vi"]
    ilb = v["m2"] * ipb / (v["m1"] + v["m30"])
    u2ss = (v["m2"] + v["m4"]) * ipb - v["m1"] * ilb
    isc1 = u2ss / (v["kd"] + v["ka1"])
    return {
        "Gtb": gtb,
        "Vm0": uptake * (v["Km0"] + gtb) / gtb,
        "kp1": v["EGPb"] + v["kp2"] * v["Gpb"] + v["kp3"] * v["Ib"],
        "Ipb": ipb,
        "Ilb": ilb,
        "u2ss": u2ss,
        "isc1ss": isc1,
        "isc2ss": v["kd"] * isc1 / v["ka2"],
    }


def default_carb_ratio(p: Mapping[str, Any]) -> Any:
    """Carbohydrate ratio by the '500 rule', taking basal as half of daily insulin."""
    daily_insulin = 2.0 * _number_or_array(basal_rate_U_per_min(p)) * 1440.0
    return 500.0 / daily_insulin


def basal_bolus(
    p: Mapping[str, Any],
    meals: Iterable[tuple[float, float]],
    *,
    carb_ratio_g_per_U: Any = None,
    t_end: float = 1440.0,
    eat_rate_g_per_min: float = 5.0,
) -> Inputs:
    """Meals plus open-loop basal-bolus insulin.

    Basal at the steady-state rate over ``[0, t_end)``; at each meal a bolus of
    ``grams / carb_ratio`` units delivered over one minute (as simglucose's pump does).
    Without ``carb_ratio_g_per_U`` the '500 rule' estimate is used. Parameters given
    as arrays (one value per patient) give one cohort plan with per-patient doses.
    """
    meals = list(meals)
    cr = _number_or_array(carb_ratio_g_per_U) if carb_ratio_g_per_U is not None else default_carb_ratio(p)
    plan = Inputs.meals(meals, rate_g_per_min=eat_rate_g_per_min) + Inputs.rate(
        "insulin", 0.0, t_end, _number_or_array(basal_rate_U_per_min(p))
    )
    for time, grams in meals:
        if grams > 0:
            plan = plan + Inputs.pulse("insulin", float(time), grams / cr, 1.0)
    return plan


def recorded_inputs(minutes: Any, insulin_U_per_min: Any, carbs_g: Any, *, eat_rate_g_per_min: float = 5.0) -> Inputs:
    """Inputs from a per-minute record, as simglucose delivers them.

    ``insulin_U_per_min[i]`` holds over ``[minutes[i], minutes[i+1])``; ``carbs_g[i]`` is
    carbohydrate announced at ``minutes[i]``, eaten at ``eat_rate_g_per_min``. The last
    row only closes the record (its values apply after its end).
    """
    t = np.asarray(minutes, dtype=np.float64)
    insulin = np.nan_to_num(np.asarray(insulin_U_per_min, dtype=np.float64))
    carbs = np.nan_to_num(np.asarray(carbs_g, dtype=np.float64))
    plan = Inputs.series("insulin", t[:-1], insulin[:-1], end=float(t[-1])) if t.size > 1 else Inputs()
    meals = [(float(m), float(g)) for m, g in zip(t[:-1], carbs[:-1], strict=True) if g > 0]
    return plan + Inputs.meals(meals, rate_g_per_min=eat_rate_g_per_min)


STANDARD_MEALS = ((420.0, 50.0), (720.0, 70.0), (1140.0, 80.0))


def standard_scenario(p: Mapping[str, float]) -> tuple[Inputs, float]:
    """One day, breakfast 50 g at 07:00, lunch 70 g at 12:00, dinner 80 g at 19:00."""
    return basal_bolus(p, STANDARD_MEALS), 1440.0


def _check_basal_bolus(at: str, item: Mapping[str, Any], duration: float | None) -> None:
    meals = item.get("meals", [])
    if not isinstance(meals, list) or len(meals) > 48:
        raise InputError(f"{at}.meals must be a list of at most 48 [minute of the day, grams]; got {meals!r}.")
    for j, meal in enumerate(meals):
        if not (isinstance(meal, list | tuple) and len(meal) == 2):
            raise InputError(f"{at}.meals[{j}] must be [minute of the day, grams], e.g. [420, 50]; got {meal!r}.")
        minute = number(f"{at}.meals[{j}]", {"minute": meal[0]}, "minute", None)
        number(f"{at}.meals[{j}]", {"grams": meal[1]}, "grams", None)
        if minute >= 1440:
            raise InputError(f"{at}.meals[{j}]: the minute of the day must be below 1440; got {meal[0]!r}.")
    number(at, item, "carb_ratio_scale", 1.0, positive=True)
    if duration is not None:
        check_events(f"{at}.meals over 'duration'", len(meals) * math.ceil(duration / 1440.0))


def _build_basal_bolus(item: Mapping[str, Any], params: Mapping[str, Any], latent: Any, duration: float) -> Inputs:
    """Daily meals with open-loop basal and meal boluses of grams / carbohydrate ratio (the
    patient's own ratio when the population samples one, as the latent ``carb_ratio``)."""
    days = max(1, math.ceil(duration / 1440.0))
    meals = [(day * 1440.0 + float(t), float(g)) for day in range(days) for t, g in item.get("meals", [])]
    ratio = latent["carb_ratio"].to_numpy() if "carb_ratio" in getattr(latent, "columns", ()) else None
    if ratio is not None:
        ratio = ratio * float(item.get("carb_ratio_scale", 1.0))
    return basal_bolus(params, meals, carb_ratio_g_per_U=ratio, t_end=days * 1440.0)


BASAL_BOLUS = Treatment(
    kind="basal_bolus",
    keys=("meals", "carb_ratio_scale"),
    check=_check_basal_bolus,
    build=_build_basal_bolus,
    channels=lambda item: ("insulin",),
    description="daily meals [[minute, grams], ...] with basal insulin and meal boluses (carb_ratio_scale x ratio)",
)


def simglucose_reference() -> Path | None:
    """The stored simglucose trajectories (``TWINLOOP_SIMGLUCOSE_REFERENCE``, or
    ``tests/data/simglucose_reference.csv.gz`` in a checkout), None when absent."""
    configured = os.environ.get("TWINLOOP_SIMGLUCOSE_REFERENCE")
    for candidate in (configured, "tests/data/simglucose_reference.csv.gz"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def simglucose_cases(table: Any, first: int | None = None, observable: str = "plasma_glucose") -> list[ReferenceCase]:
    """Each patient of a simglucose record (minutes 0..1439) replayed open-loop: its recorded
    insulin and meals, and the peer's glucose (``<observable>_mg_dl``) as the expected values."""
    names = list(dict.fromkeys(table["patient"]))[:first]
    published = patients()
    out = []
    for name in names:
        rows = table[table["patient"] == name]
        minutes = np.append(rows["minute"].to_numpy(float), 1440.0)  # add the closing minute 1440
        insulin = np.append(rows["insulin_U_per_min"].to_numpy(), np.nan)
        carbs = np.append(rows["carbs_g"].to_numpy(), np.nan)
        plan = recorded_inputs(minutes, insulin, carbs)
        expected = rows[f"{observable}_mg_dl"].to_numpy(float)
        out.append(ReferenceCase(name, published[name], plan, np.arange(0.0, 1440.0), expected))
    return out


def _simglucose_validation(model: Model) -> list[ReferenceCase]:
    import pandas as pd

    path = simglucose_reference()
    return [] if path is None else simglucose_cases(pd.read_csv(path), first=5)


def therapy_settings(params: Mapping[str, Any], ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Each patient's carbohydrate ratio, correction factor and age.

    A published patient has simglucose's (``Quest.csv``); another takes ``carb_ratio``,
    ``correction_factor`` and ``age`` when its population drew them, else the 500 rule
    for the ratio and the 1800 rule for the factor, with daily insulin twice the basal.
    """
    n = len(ids)
    daily = 2.0 * np.broadcast_to(np.asarray(basal_rate_U_per_min(params), dtype=np.float64), (n,)) * 1440.0
    drawn = {
        "carb_ratio": params.get("carb_ratio", 500.0 / daily),
        "correction_factor": params.get("correction_factor", 1800.0 / daily),
        "age": params.get("age", np.full(n, np.nan)),
    }
    out = {key: np.array(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))) for key, v in drawn.items()}
    published = therapies()
    for i, name in enumerate(ids):
        if name in published:
            t = published[name]
            out["carb_ratio"][i], out["correction_factor"][i] = t.carb_ratio_g_per_U, t.correction_factor_mg_dl_per_U
            out["age"][i] = t.age_years
    return out


CONTROL = ControlInterface(
    sensed="subcutaneous_glucose",
    insulin="insulin",
    carbs="carbs",
    basal=basal_rate_U_per_min,
    therapy=therapy_settings,
    eat_rate_g_per_min=5.0,
    plasma="plasma_glucose",
)


# Half-minute RK4 steps: 0.02 mg/dL from the accurate path at worst over 2,000 perturbed patients
# (one-minute steps reach 0.53: the insulin compartments' fastest rate is ~1/min).
FAST_PATH = FastPath(step=0.5, tolerance={"plasma_glucose": 0.5, "subcutaneous_glucose": 0.5}, rtol=1e-2)


def profile() -> ModelProfile:
    """The default population, treatments, peer reference and context of use."""
    return ModelProfile(
        population=Path(__file__).with_name("t1d_uva_padova.population.yaml"),
        treatments=(BASAL_BOLUS,),
        validation=(
            ValidationReference(
                "simglucose 0.2.11, 5 patients over 24 h with meals (mg/dL)",
                "plasma_glucose",
                _simglucose_validation,
                tolerance=0.5,
                error="absolute",
            ),
        ),
        context=ContextOfUse(
            question="What glucose trajectory follows a proposed insulin dose change?",
            use="Decision support reviewed by a clinician before any dose change.",
            model_influence="medium",
            decision_consequence="high",
        ),
        control=CONTROL,
        fast=FAST_PATH,
    )


def _bounds(name: str, values: list[float]) -> tuple[float, float]:
    if name in _FIXED_BOUNDS:
        return _FIXED_BOUNDS[name]
    return 0.5 * min(values), 2.0 * max(values)


def build() -> Model:
    """Construct the model specification (called once by the registry)."""
    table = patients()
    reference = table["adult#001"]
    parameters = tuple(
        Parameter(name, unit, reference[name], *_bounds(name, [v[name] for v in table.values()]), description=desc)
        for name, unit, desc in _PARAMETERS
    )
    return Model(
        id=ID,
        version=VERSION,
        name="UVA/Padova type 1 diabetes simulator (simglucose variant)",
        description=__doc__ or "",
        time_unit="min",
        states=tuple(State(n, u, d, nonneg) for n, u, d, nonneg in _STATES),
        parameters=parameters,
        inputs=(
            Input("insulin", "U/min", "rate", "subcutaneous insulin delivery, basal and bolus"),
            Input("carbs", "g/min", "rate", "carbohydrate eaten per minute"),
        ),
        observables=(
            Observable("plasma_glucose", "mg/dL", lambda x, p: x[3] / p["Vg"], "Gp / Vg", noise=LAB_GLUCOSE),
            Observable(
                "subcutaneous_glucose", "mg/dL", lambda x, p: x[12] / p["Vg"], "Gs / Vg (simglucose's BG)", noise=CGM
            ),
            Observable("plasma_insulin", "pmol/L", lambda x, p: x[5] / p["Vi"], "Ip / Vi", noise=INSULIN_ASSAY),
        ),
        rhs=rhs,
        initial_state=initial_state,
        standard_scenario=standard_scenario,
        steady_state_inputs=steady_state_inputs,
        discrete_update=meal_memory,
        sample_time=1.0,
        discrete_update_inputs=("carbs",),
        derived_parameters=DERIVED,
        derive=steady_state_parameters,
        latent=lambda p: {"EGPb": basal_production(p)},
        presets=table,
        identifiable=IDENTIFIABLE,
        references=REFERENCES,
        profile=profile(),
    )
