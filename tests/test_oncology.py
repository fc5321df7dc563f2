"""Oncology cores against closed forms: PK (one and two compartments, every route),
Claret's TGI solution, Stein's regrowth-decay curve, Simeoni's growth phases and an
independent scipy integration, and exact linear-quadratic radiotherapy jumps. The model
contract (`check_model`) of every registered model runs in test_models.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import twinloop as tl
from twinloop.models import radiotherapy, tgi_simeoni

TIGHT = tl.SolverSettings(rtol=1e-10, atol=1e-10)


def params_of(model: tl.models.Model, **overrides: float) -> dict[str, float]:
    values = dict(zip(model.parameter_names, model.default_parameters.tolist(), strict=True))
    values.update(overrides)
    return values


def run(model: tl.models.Model, values: dict[str, float], plan: tl.Inputs, times: np.ndarray, name: str) -> np.ndarray:
    traj = tl.simulate(model, model.parameters_from({k: [v] for k, v in values.items()}), plan,
                       times=times, settings=TIGHT, progress=False)  # fmt: skip
    return traj[name][0]


def test_two_compartment_iv_bolus_is_biexponential() -> None:
    model = tl.models.get("pk-two-compartment")
    p = params_of(model)
    times = np.linspace(0, 48, 97)
    conc = run(model, p, tl.Inputs.bolus("dose_iv", [(0.0, 100.0)]), times, "concentration")
    k10, k12, k21 = p["CL"] / p["V"], p["Q"] / p["V"], p["Q"] / p["V2"]
    s = k10 + k12 + k21
    alpha = (s + np.sqrt(s**2 - 4 * k10 * k21)) / 2
    beta = (s - np.sqrt(s**2 - 4 * k10 * k21)) / 2
    a = (alpha - k21) / (alpha - beta)
    expected = 100.0 / p["V"] * (a * np.exp(-alpha * times) + (1 - a) * np.exp(-beta * times))
    np.testing.assert_allclose(conc, expected, rtol=1e-7, atol=1e-9)


def linear_pk_solution(p: dict[str, float], times: np.ndarray, x0: np.ndarray, infusion: float) -> np.ndarray:
    """Exact solution of the linear two-compartment system with a constant infusion."""
    k10, k12, k21 = p["CL"] / p["V"], p["Q"] / p["V"], p["Q"] / p["V2"]
    a = np.array([[-p["ka"], 0, 0], [p["ka"], -(k10 + k12), k21], [0, k12, -k21]])
    b = np.array([0.0, infusion, 0.0])
    steady = -np.linalg.solve(a, b)
    return np.stack([steady + expm(a * t) @ (x0 - steady) for t in times])


@pytest.mark.parametrize("route", ["infusion", "oral"])
def test_two_compartment_infusion_and_oral_match_matrix_exponential(route: str) -> None:
    model = tl.models.get("pk-two-compartment")
    p = params_of(model, F=0.7)
    times = np.linspace(0, 24, 49)
    if route == "infusion":
        plan, x0, rate = tl.Inputs.infusion("infusion", 0.0, 48.0, 10.0), np.zeros(3), 10.0
    else:
        plan, x0, rate = tl.Inputs.bolus("dose_oral", [(0.0, 200.0)]), np.array([0.7 * 200.0, 0, 0]), 0.0
    conc = run(model, p, plan, times, "concentration")
    expected = linear_pk_solution(p, times, x0, rate)[:, 1] / p["V"]
    np.testing.assert_allclose(conc, expected, rtol=1e-7, atol=1e-9)


def test_claret_matches_its_closed_form_after_an_iv_dose() -> None:
    model = tl.models.get("tgi-claret")
    p = params_of(model, KD=4e-4)
    dose = 2000.0
    times = np.linspace(0, 200, 101)
    size = run(model, p, tl.Inputs.bolus("dose_iv", [(0.0, dose)]), times, "sum_of_diameters")
    k = p["CL"] / p["V"]
    # exposure CL*C = k*D*exp(-k t); its integral against exp(-lam t) is closed-form
    kill = p["KD"] * k * dose * (1 - np.exp(-(k + p["lam"]) * times)) / (k + p["lam"])
    expected = p["y0"] * np.exp(p["KL"] * times - kill)
    np.testing.assert_allclose(size, expected, rtol=1e-7)
    assert size.min() < 0.8 * p["y0"]  # the dose did shrink the tumour


def test_claret_constant_exposure_closed_form() -> None:
    model = tl.models.get("tgi-claret")
    p = params_of(model)
    rate = 500.0  # mg/day infused from day 0; after ~1 day CL*C equals the infusion rate
    times = np.linspace(0, 150, 76)
    size = run(model, p, tl.Inputs.infusion("infusion", 0.0, 400.0, rate), times, "sum_of_diameters")
    k = p["CL"] / p["V"]
    # exact: exposure(t) = rate * (1 - exp(-k t)); integrate the kill analytically
    lam = p["lam"]
    integral = (1 - np.exp(-lam * times)) / lam - (1 - np.exp(-(k + lam) * times)) / (k + lam)
    expected = p["y0"] * np.exp(p["KL"] * times - p["KD"] * rate * integral)
    np.testing.assert_allclose(size, expected, rtol=1e-7)


def test_radiotherapy_fractions_are_exact_lq_jumps() -> None:
    model = tl.models.get("tgi-claret")
    p = params_of(model)
    plan = radiotherapy.schedule(10.0, 5, 2.0)  # days 10-14
    times = np.array([0.0, 9.0, 10.0, 15.0, 30.0])
    size = run(model, p, plan, times, "sum_of_diameters")
    sf = float(np.exp(-p["alpha"] * 2.0 - p["beta"] * 4.0))
    growth = np.exp(p["KL"] * times)
    n_given = np.array([0, 0, 1, 5, 5])  # right-continuous: the fraction at day 10 is in
    np.testing.assert_allclose(size, p["y0"] * growth * sf ** (n_given / 3.0), rtol=1e-9)
    assert radiotherapy.total_dose(plan) == 10.0


def test_stein_matches_regrowth_decay_formula() -> None:
    model = tl.models.get("tgi-stein")
    p = params_of(model, g=0.003, d=0.02)
    times = np.linspace(0, 720, 61)
    size = run(model, p, tl.Inputs(), times, "sum_of_diameters")
    expected = p["y0"] * (np.exp(-p["d"] * times) + np.exp(p["g"] * times) - 1)
    np.testing.assert_allclose(size, expected, rtol=1e-8)


def test_simeoni_growth_is_exponential_then_linear() -> None:
    model = tl.models.get("tgi-simeoni")
    p = params_of(model, w0=0.01)
    early = np.linspace(0, 6, 13)  # w stays far below lambda1/lambda0 ~ 3 g
    weight = run(model, p, tl.Inputs(), early, "tumour_weight")
    np.testing.assert_allclose(weight, p["w0"] * np.exp(p["lambda0"] * early), rtol=1e-6)
    times = np.linspace(0, 60, 61)  # well past the switch (days 40-60): slope lambda1
    weight = run(model, p, tl.Inputs(), times, "tumour_weight")[40:]
    np.testing.assert_allclose(np.diff(weight), p["lambda1"], rtol=1e-6)


def test_simeoni_matches_an_independent_scipy_integration() -> None:
    model = tl.models.get("tgi-simeoni")
    p = params_of(model)
    dose = 30.0
    times = np.linspace(0, 30, 61)
    weight = run(model, p, tl.Inputs.bolus("dose_iv", [(0.0, dose)]), times, "tumour_weight")

    def published(t: float, x: np.ndarray) -> list[float]:
        x1, x2, x3, x4, cen, per = x
        w = x1 + x2 + x3 + x4
        conc = cen / p["V"]
        growth = p["lambda0"] * x1 / (1 + (p["lambda0"] * w / p["lambda1"]) ** p["psi"]) ** (1 / p["psi"])
        k10, k12, k21 = p["CL"] / p["V"], p["Q"] / p["V"], p["Q"] / p["V2"]
        return [growth - p["k2"] * conc * x1, p["k2"] * conc * x1 - p["k1"] * x2, p["k1"] * (x2 - x3),
                p["k1"] * (x3 - x4), -(k10 + k12) * cen + k21 * per, k12 * cen - k21 * per]  # fmt: skip

    ref = solve_ivp(published, (0, 30), [p["w0"], 0, 0, 0, dose, 0], t_eval=times, rtol=1e-11, atol=1e-12,
                    method="DOP853")  # fmt: skip
    np.testing.assert_allclose(weight, ref.y[:4].sum(axis=0), rtol=1e-6)
    assert weight[20] < p["w0"] * np.exp(p["lambda0"] * times[20])  # the drug slowed growth


def test_simeoni_radiotherapy_kills_proliferating_mass_exactly() -> None:
    model = tl.models.get("tgi-simeoni")
    p = params_of(model, w0=0.01)
    times = np.array([0.0, 5.0])
    weight = run(model, p, radiotherapy.schedule(5.0, 1, 4.0, weekdays_only=False), times, "tumour_weight")
    sf = np.exp(-p["alpha"] * 4.0 - p["beta"] * 16.0)
    np.testing.assert_allclose(weight[1], p["w0"] * np.exp(p["lambda0"] * 5.0) * sf, rtol=1e-7)


def test_sphere_diameter() -> None:
    assert float(tgi_simeoni.sphere_diameter_mm(np.pi / 6)) == pytest.approx(10.0)


def test_bad_radiotherapy_schedule_is_refused() -> None:
    with pytest.raises(tl.InputError, match="fraction"):
        radiotherapy.schedule(0.0, 0, 2.0)
