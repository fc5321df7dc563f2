"""Verification of the engine and a core: does the code solve the equations it states?

* **Convergence order.** The Stein regrowth-decay equations (a regressing part
  ``R' = -d R`` and a regrowing part ``G' = g (G + y0)``) have a closed-form solution,
  ``y(t) = y0 (exp(-d t) + exp(g t) - 1)``. Solved with fixed steps ``h, h/2, h/4...``
  each explicit solver's error must fall as ``h^p`` with its textbook order ``p``.
* **Tolerance study.** The adaptive solver's error against the closed form, and the
  artifact's own model against a run at rtol 1e-10, as the tolerance tightens.
* **Positivity and conservation.** Non-negative states stay non-negative and a declared
  steady state holds (:mod:`twinloop.testing`); a one-compartment IV bolus keeps
  its mass: drug in the body plus drug eliminated equals the dose.

The two test problems are declared here, as fixtures of the engine (not registered models).
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import numpy as np

from twinloop.models.base import Input, Model, Observable, Parameter, State
from twinloop.models.inputs import Inputs
from twinloop.simulate import simulate
from twinloop.simulate.engine import SolverSettings
from twinloop.testing import check_model

STEIN = {"y0": 60.0, "g": 0.004, "d": 0.02}
HORIZON = 365.0
ORDERS = {"heun": 2, "bosh3": 3, "tsit5": 5}


@cache
def stein_problem() -> Model:
    """Regrowth-decay: ``[R, G]`` with ``R' = -d R``, ``G' = g (G + y0)``, observed ``R + G``."""
    import jax.numpy as jnp

    return Model(
        id="verification-regrowth-decay",
        version="1",
        name="Regrowth-decay test problem",
        description="Two linear ODEs with a closed-form sum.",
        time_unit="d",
        states=(State("regressing", "mm"), State("regrowing", "mm")),
        parameters=(
            Parameter("y0", "mm", 60.0, 1.0, 400.0),
            Parameter("g", "1/d", 0.004, 1e-6, 0.05),
            Parameter("d", "1/d", 0.02, 1e-6, 0.2),
        ),
        inputs=(),
        observables=(Observable("size", "mm", lambda x, p: x[0] + x[1]),),
        rhs=lambda t, x, u, p: jnp.stack([-p["d"] * x[0], p["g"] * (x[1] + p["y0"])]),
        initial_state=lambda p: jnp.stack([p["y0"] * 1.0, p["y0"] * 0.0]),
        standard_scenario=lambda p: (Inputs(), HORIZON),
    )


@cache
def one_compartment_problem() -> Model:
    """One-compartment PK: ``[depot, central]``, absorption ``ka``, elimination ``CL / V``."""
    import jax.numpy as jnp

    return Model(
        id="verification-one-compartment",
        version="1",
        name="One-compartment test problem",
        description="An IV bolus into central, eliminated at CL / V.",
        time_unit="h",
        states=(State("depot", "mg"), State("central", "mg")),
        parameters=(
            Parameter("CL", "L/h", 5.0, 0.01, 500.0),
            Parameter("V", "L", 50.0, 0.1, 5000.0),
            Parameter("ka", "1/h", 1.0, 0.01, 50.0),
        ),
        inputs=(Input("dose_iv", "mg", "bolus", target="central"),),
        observables=(Observable("concentration", "mg/L", lambda x, p: x[1] / p["V"]),),
        rhs=lambda t, x, u, p: jnp.stack([-p["ka"] * x[0], p["ka"] * x[0] - p["CL"] / p["V"] * x[1]]),
        initial_state=lambda p: jnp.zeros((2, *jnp.shape(p["V"]))),
        standard_scenario=lambda p: (Inputs.bolus("dose_iv", [(0.0, 100.0)]), 48.0),
    )


def stein_exact(t: np.ndarray, y0: float, g: float, d: float) -> np.ndarray:
    return y0 * (np.exp(-d * t) + np.exp(g * t) - 1.0)


def _stein_error(settings: SolverSettings) -> float:
    model = stein_problem()
    params = np.array([[STEIN.get(p.name, p.default) for p in model.parameters]])
    times = np.linspace(0.0, HORIZON, 6)
    traj = simulate(model, params, Inputs(), times=times, settings=settings, progress=False)
    observed = traj[model.observables[0].name][0]
    exact = stein_exact(times, STEIN["y0"], STEIN["g"], STEIN["d"])
    return float(np.max(np.abs(observed - exact) / exact))


def convergence_order(steps: tuple[float, ...] = (18.25, 9.125, 4.5625, 2.28125)) -> dict[str, Any]:
    """Observed order of each fixed-step solver on the Stein closed form (from the two finest steps;
    the least-squares slope over all steps is given beside it)."""
    out: dict[str, Any] = {}
    for solver, expected in ORDERS.items():
        errors = [_stein_error(SolverSettings(solver=solver, fixed_dt=h, max_steps=100_000)) for h in steps]
        slope = float(np.polyfit(np.log(steps), np.log(errors), 1)[0])
        finest = float(np.log(errors[-2] / errors[-1]) / np.log(steps[-2] / steps[-1]))
        out[solver] = {"steps": list(steps), "errors": errors, "fitted_order": slope, "observed_order": finest,
                       "expected_order": expected, "passed": bool(abs(finest - expected) < 0.5)}  # fmt: skip
    return out


def tolerance_study(model: Model | None = None, rtols: tuple[float, ...] = (1e-3, 1e-5, 1e-7, 1e-9)) -> dict[str, Any]:
    """Error against the closed form (Stein) and against a tight run of ``model``, per rtol."""
    stein = [_stein_error(SolverSettings(rtol=r, atol=r * 1e-2)) for r in rtols]
    out: dict[str, Any] = {"rtol": list(rtols), "stein_relative_error": stein}
    if model is not None:
        defaults = dict(zip(model.parameter_names, model.default_parameters, strict=True))
        scenario, horizon = model.standard_scenario(defaults)
        params = model.default_parameters[None, :]
        times = np.linspace(0.0, horizon, 25)

        def run(rtol: float) -> np.ndarray:
            settings = SolverSettings(rtol=rtol, atol=rtol, max_steps=200_000)
            traj = simulate(model, params, scenario, times=times, settings=settings, progress=False)
            return np.stack([traj[o.name][0] for o in model.observables])

        reference = run(1e-10)
        scale = np.maximum(np.abs(reference), 1e-9)
        out["model"] = model.id
        out["model_relative_error"] = [float(np.max(np.abs(run(r) - reference) / scale)) for r in rtols]
    out["passed"] = bool(stein[-1] < 1e-6 and all(a >= b * 0.5 for a, b in itertools.pairwise(stein)))
    return out


def mass_balance(dose: float = 100.0, horizon: float = 48.0) -> dict[str, Any]:
    """One-compartment IV bolus: central amount + cumulative elimination = dose."""
    model = one_compartment_problem()
    params = model.default_parameters[None, :]
    p = dict(zip(model.parameter_names, model.default_parameters, strict=True))
    times = np.linspace(0.0, horizon, 4801)
    traj = simulate(model, params, Inputs.bolus("dose_iv", [(0.0, dose)]), times=times, save="all",
                    settings=SolverSettings(rtol=1e-9, atol=1e-9), progress=False)  # fmt: skip
    central = traj["central"][0]
    flux = p["CL"] / p["V"] * central
    eliminated = np.concatenate([[0.0], np.cumsum(0.5 * (flux[1:] + flux[:-1]) * np.diff(times))])
    error = float(np.max(np.abs(central + traj["depot"][0] + eliminated - dose)) / dose)
    return {"model": model.id, "dose_mg": dose, "max_relative_imbalance": error, "passed": error < 1e-4}


def model_checks(model: Model) -> list[dict[str, Any]]:
    """The model contract (units, JAX, gradients, positivity, steady state), one row per check."""
    return [
        {"check": r.name, "passed": r.passed, "detail": r.detail} for r in check_model(model, raise_on_failure=False)
    ]


def verify(model: Model) -> dict[str, Any]:
    """All verification evidence for ``model``."""
    order = convergence_order()
    tolerance = tolerance_study(model)
    balance = mass_balance()
    checks = model_checks(model)
    passed = all(v["passed"] for v in order.values()) and tolerance["passed"] and balance["passed"]
    return {"convergence": order, "tolerance": tolerance, "mass_balance": balance, "model_checks": checks,
            "passed": bool(passed and all(c["passed"] for c in checks))}  # fmt: skip
