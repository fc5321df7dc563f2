"""Twins of models twinloop has never seen, declared here through the public spec: state-only,
parameter-only and joint assimilation, dimensionless model time with a declared clock, and
truths that are not drawn from the twin's prior, each scored against persistence."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop.calibrate import GaussianPrior
from twinloop.models.base import Model, Observable, Parameter, State
from twinloop.twin import PatientTwin, TwinConfig
from twinloop.twin.ensemble import propagate

ORIGIN = pd.Timestamp("2026-01-05T00:00:00Z")
L63_X0 = np.array([1.509, -1.531, 25.46])
L63_TRUTH = np.array([10.0, 32.0, 8.0 / 3.0])  # rho = 32: not the model's default of 28
MINUTE = 60.0  # one unit of Lorenz time lasts a minute of clock time (declared by the twin)


def lorenz63() -> Model:
    """Lorenz-63 in dimensionless time, its states signed (the default)."""

    def rhs(t: Any, x: Any, u: Any, p: Any) -> Any:
        return jnp.stack(
            [p["sigma"] * (x[1] - x[0]), p["rho"] * x[0] - x[1] - x[0] * x[2], x[0] * x[1] - p["beta"] * x[2]]
        )

    def initial_state(p: Any) -> Any:
        zero = 0.0 * p["rho"]
        return jnp.stack([zero + L63_X0[0], zero + L63_X0[1], zero + L63_X0[2]])

    return Model(
        id="lorenz-63-test",
        version="1",
        name="Lorenz-63",
        description="Lorenz (1963).",
        time_unit="1",
        states=tuple(State(n, "1") for n in "xyz"),
        parameters=(
            Parameter("sigma", "1", 10.0, 1.0, 100.0),
            Parameter("rho", "1", 28.0, 1.0, 100.0),
            Parameter("beta", "1", 8.0 / 3.0, 0.1, 10.0),
        ),
        inputs=(),
        observables=tuple(Observable(n, "1", lambda x, p, i=i: x[i], nonnegative=False) for i, n in enumerate("xyz")),
        rhs=rhs,
        initial_state=initial_state,
        standard_scenario=lambda p: (tl.Inputs(), 1.0),
    )


def logistic() -> Model:
    """Logistic growth in dimensionless time that declares its clock (one unit is a day)."""
    return Model(
        id="logistic-test",
        version="1",
        name="Logistic growth",
        description="dN/dt = r N (1 - N/K).",
        time_unit="1",
        clock_seconds=86400.0,
        states=(State("N", "1", nonnegative=True),),
        parameters=(
            Parameter("r", "1", 0.4, 0.01, 5.0),
            Parameter("K", "1", 30.0, 1.0, 1000.0),
            Parameter("N0", "1", 2.0, 0.1, 100.0),
        ),
        inputs=(),
        observables=(Observable("y", "1", lambda x, p: x[0]),),
        rhs=lambda t, x, u, p: jnp.stack([p["r"] * x[0] * (1.0 - x[0] / p["K"])]),
        initial_state=lambda p: jnp.stack([p["N0"]]),
        standard_scenario=lambda p: (tl.Inputs(), 10.0),
    )


def _record(model: Model, params: np.ndarray, times: np.ndarray, sd: float, clock: float, **kw: Any) -> tuple:
    """(observation table, true states at ``times``, observed values) of one noisy patient."""
    settings = tl.SolverSettings(rtol=1e-9, atol=1e-9)
    traj = tl.simulate(model, params, tl.Inputs(), times=np.r_[0.0, times], save="all", settings=settings, **kw)
    assert traj.states is not None
    truth = traj.observables[0, 1:]
    values = truth + sd * np.random.default_rng(0).standard_normal(truth.shape)
    rows = [
        {"subject_id": "p1", "time": ORIGIN + pd.Timedelta(seconds=float(t) * clock), "variable": name,
         "value": values[k, j], "unit": "1", "code": "", "source": "synthetic"}
        for k, t in enumerate(times)
        for j, name in enumerate(model.observable_names)
    ]  # fmt: skip
    return pd.DataFrame(rows), truth, values


def _at(obs: pd.DataFrame, t: float, clock: float) -> pd.DataFrame:
    return obs[obs["time"] == ORIGIN + pd.Timedelta(seconds=t * clock)]


def _run(twin: PatientTwin, obs: pd.DataFrame, times: np.ndarray, truth: np.ndarray, values: np.ndarray, first: int):
    """Sync one observation time after another; the twin's and persistence's errors in
    predicting the next (true) state, and the sync reports."""
    ours, persistence, reports = [], [], []
    for k in range(first, times.size - 1):
        reports.append(twin.sync(_at(obs, times[k], twin.clock)))
        ahead = twin.run_members(tl.Inputs(), times[k + 1 : k + 2])[:, 0, :].mean(axis=0)
        ours.append(np.sqrt(np.mean((ahead - truth[k + 1]) ** 2)))
        persistence.append(np.sqrt(np.mean((values[k] - truth[k + 1]) ** 2)))
    half = len(ours) // 2  # scored after the start-up
    return float(np.mean(ours[half:])), float(np.mean(persistence[half:])), reports


L63_TIMES = np.round(np.arange(0.1, 4.01, 0.1), 10)
L63_NOISE = {v: {"additive": 1.0, "proportional": 0.0} for v in "xyz"}


@pytest.fixture(scope="module")
def l63_case() -> dict[str, Any]:
    model = lorenz63()
    x0 = L63_X0 + np.array([1.0, -1.0, 1.5])
    obs, truth, values = _record(model, L63_TRUTH, L63_TIMES, 1.0, MINUTE, y0=x0, progress=False)
    # the members' initial states: a spread centred 3 sd away from the truth's
    y0 = x0 + np.array([3.0, 3.0, -3.0]) + np.random.default_rng(5).standard_normal((200, 3))
    return {"model": model, "obs": obs, "truth": truth, "values": values, "y0": y0}


def _l63_twin(case: dict[str, Any], *, fit: tuple[str, ...], prior: Any, base: np.ndarray, **config: Any):
    cfg = TwinConfig(clock_seconds=MINUTE, window=0.1, noise=L63_NOISE, seed=1, **config)
    first = case["obs"][case["obs"]["time"] <= ORIGIN + pd.Timedelta(seconds=0.3 * MINUTE)]
    return PatientTwin.create(
        case["model"], first, prior=prior, fit=fit, method="enkf", config=cfg, y0=case["y0"], origin=ORIGIN, base=base
    )


@pytest.mark.parametrize(
    ("assimilation", "members", "tuning"), [("enkf", 40, {}), ("pf", 100, {"regularization": 2.4})]
)
def test_state_only_twin_tracks_lorenz63_from_uncertain_initial_states(l63_case, assimilation, members, tuning) -> None:
    """fit=(): no parameter estimated (the particle filter too, with DAPPER's Lorenz-63
    jitter), the states from a spread of initial states that misses the truth's; the next
    state is predicted far better than by persistence."""
    twin = _l63_twin(l63_case, fit=(), prior=None, base=L63_TRUTH, assimilation=assimilation, members=members, **tuning)
    assert twin.ensemble.theta.shape == (members, 0)
    ours, persistence, reports = _run(twin, l63_case["obs"], L63_TIMES, l63_case["truth"], l63_case["values"], 3)
    assert ours < 0.25 * persistence, (ours, persistence)
    assert all(r.clipped == 0 for r in reports)  # no state of this model is declared non-negative


def test_joint_twin_estimates_a_parameter_its_prior_misses(l63_case) -> None:
    """rho's prior is log-normal around 24 (sd 10 %); the truth, 32, lies 3 prior sds away."""
    prior = GaussianPrior(("rho",), np.log([24.0]), np.array([[0.1**2]]))
    twin = _l63_twin(l63_case, fit=("rho",), prior=prior, base=np.array([10.0, 24.0, 8.0 / 3.0]), members=40)
    ours, persistence, _ = _run(twin, l63_case["obs"], L63_TIMES, l63_case["truth"], l63_case["values"], 3)
    summary = twin.parameter_summary()
    assert 29.0 < summary["median"][0] < 35.0, summary
    assert ours < 0.25 * persistence, (ours, persistence)


def test_a_dimensionless_twin_without_a_clock_is_refused_with_the_fix(l63_case) -> None:
    cfg = TwinConfig(noise=L63_NOISE, members=8)
    with pytest.raises(tl.InputError, match=r"'1' cannot be mapped to clock time.*clock_seconds"):
        PatientTwin.create(l63_case["model"], l63_case["obs"].iloc[:3], fit=(), method="enkf", config=cfg)


def test_state_only_needs_no_prior_but_says_how_to_ask_for_it(l63_case) -> None:
    with pytest.raises(tl.InputError, match=r"declares no identifiable set\. Pass fit=\(\)"):
        PatientTwin.create(l63_case["model"], l63_case["obs"].iloc[:3], config=TwinConfig(clock_seconds=MINUTE))
    with pytest.raises(tl.InputError, match="fit=\\(\\) names none; use method='enkf'"):
        PatientTwin.create(
            l63_case["model"], l63_case["obs"].iloc[:3], fit=(), method="nuts", config=TwinConfig(clock_seconds=MINUTE)
        )


GROWTH_TIMES = np.arange(0.5, 12.01, 0.5)
GROWTH_TRUTH = np.array([0.8, 60.0, 2.0])  # r and K twice the prior's medians (2.3 prior sds)


@pytest.fixture(scope="module")
def growth_case() -> dict[str, Any]:
    model = logistic()
    obs, truth, values = _record(model, GROWTH_TRUTH, GROWTH_TIMES, 2.0, 86400.0, progress=False)
    prior = GaussianPrior(("r", "K"), np.log([0.4, 30.0]), np.diag([0.3**2, 0.3**2]))
    return {"model": model, "obs": obs, "truth": truth, "values": values, "prior": prior}


def _growth_twin(case: dict[str, Any], estimate: str, assimilation: str = "pf", members: int = 200):
    cfg = TwinConfig(
        members=members, window=0.5, noise={"y": {"additive": 2.0, "proportional": 0.0}}, seed=1,
        estimate=estimate, assimilation=assimilation, recalibration="none",
    )  # fmt: skip
    return PatientTwin.create(
        case["model"], case["obs"].iloc[:2], prior=case["prior"], fit=("r", "K"), method="enkf", config=cfg,
        origin=ORIGIN, base=GROWTH_TRUTH,
    )  # fmt: skip


def _day_ahead(twin: PatientTwin, case: dict[str, Any], first: int) -> tuple[float, float]:
    """Mean absolute error of the twin's and of persistence's predictions a day (two
    observations) ahead, syncing one observation after another from ``first`` on."""
    ours, persistence = [], []
    for k in range(first, GROWTH_TIMES.size - 2):
        twin.sync(case["obs"].iloc[[k]])
        ahead = twin.run_members(tl.Inputs(), GROWTH_TIMES[k + 2 : k + 3])[:, 0, 0].mean()
        ours.append(abs(ahead - case["truth"][k + 2, 0]))
        persistence.append(abs(case["values"][k, 0] - case["truth"][k + 2, 0]))
    return float(np.mean(ours)), float(np.mean(persistence))


def _recovered(twin: PatientTwin) -> bool:
    r, k = twin.parameter_summary()["median"]
    return abs(k - 60.0) < 6.0 and abs(np.log(r / 0.8)) < 0.35


def test_parameter_only_twin_learns_the_growth_parameters_and_leaves_the_states_to_the_model(growth_case) -> None:
    """The analysis moves the parameters only: after a sync each member's state is the
    model's forecast of it (from the member it descends from after resampling)."""
    twin = _growth_twin(growth_case, "parameters")
    before = twin.ensemble
    twin.sync(growth_case["obs"].iloc[[2]])
    _, forecast = propagate(twin.model, twin.pmap, before, tl.Inputs(), GROWTH_TIMES[2:3], twin.config.settings)
    assert set(np.round(twin.ensemble.states[:, 0], 9)) <= set(np.round(forecast.states[:, 0], 9))
    ours, persistence = _day_ahead(twin, growth_case, 3)
    assert _recovered(twin), twin.parameter_summary()
    assert ours < 0.6 * persistence, (ours, persistence)


def test_joint_twin_learns_the_growth_parameters(growth_case) -> None:
    twin = _growth_twin(growth_case, "joint")
    ours, persistence = _day_ahead(twin, growth_case, 2)
    assert _recovered(twin), twin.parameter_summary()
    assert ours < 0.6 * persistence, (ours, persistence)


def test_state_only_estimate_keeps_the_calibrated_parameters(growth_case) -> None:
    twin = _growth_twin(growth_case, "states", "enkf", members=50)
    theta = twin.ensemble.theta.copy()
    for k in range(2, 6):
        twin.sync(growth_case["obs"].iloc[[k]])
    np.testing.assert_array_equal(np.sort(twin.ensemble.theta, axis=0), np.sort(theta, axis=0))


def test_a_twin_reports_the_states_its_filter_clipped(growth_case) -> None:
    """N is declared non-negative: a reading below zero pulls members under it, the filter
    clips them and the sync says how many values it clipped (method "prior": no data used)."""
    cfg = TwinConfig(members=50, noise={"y": {"additive": 1.0, "proportional": 0.0}}, seed=1, assimilation="etkf")
    y0 = np.random.default_rng(3).uniform(0.1, 8.0, (50, 1))
    twin = PatientTwin.create(
        growth_case["model"], growth_case["obs"].iloc[:1], fit=(), method="prior", config=cfg, y0=y0,
        origin=ORIGIN, base=GROWTH_TRUTH,
    )  # fmt: skip
    assert twin.ensemble.states.min() > 0
    report = twin.sync(growth_case["obs"].iloc[[1]].assign(value=-4.0))
    last = twin.innovations[-1]["clipped"]
    assert last == int((twin.ensemble.states == 0.0).sum()) > 0
    assert report.clipped >= last and twin.ensemble.states.min() == 0.0
