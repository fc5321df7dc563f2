"""Twins: filters against the exact Kalman update, drift detection and recovery, forecast
calibration on held-out patients, what-if comparisons, persistence of the state."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop.calibrate import GaussianPrior, NoiseModel, ParameterMap
from twinloop.cohort import Population
from twinloop.models import t1d_uva_padova as t1d
from twinloop.models import tgi_claret
from twinloop.twin import ETKF, Ensemble, ParticleFilter, PatientTwin, StochasticEnKF, TwinConfig, synthetic_record
from twinloop.twin.priors import typical_parameters
from twinloop.twin.synthetic import ORIGIN, window


# --- filters against the Kalman filter's closed form -------------------------------
def _linear_gaussian(n: int, seed: int) -> tuple:
    """Prior N(m, P) on 3 quantities (two 'states', one 'parameter'), y = H x + e."""
    rng = np.random.default_rng(seed)
    m = np.array([1.0, 2.0, -0.5])
    a = rng.standard_normal((3, 3))
    cov = a @ a.T + np.eye(3)
    x = rng.multivariate_normal(m, cov, size=n)
    h = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 1.0]])
    r = np.array([0.3, 0.5])
    y = np.array([2.0, 1.0])
    gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + np.diag(r))
    exact_mean = m + gain @ (y - h @ m)
    exact_cov = (np.eye(3) - gain @ h) @ cov
    ens = Ensemble(theta=x[:, 2:], states=x[:, :2], time=0.0)
    return ens, x @ h.T, y, r, exact_mean, exact_cov


def _moments(ens: Ensemble) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([ens.states, ens.theta], axis=1)
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("method", [StochasticEnKF, ETKF, ParticleFilter])
def test_filters_reproduce_the_kalman_update_on_a_linear_gaussian_problem(method: type) -> None:
    # ETKF's update is exact for any ensemble larger than the state (300 members); the
    # stochastic filters match it only up to sampling error (20,000 members)
    ens, predicted, y, r, mean, cov = _linear_gaussian(300 if method is ETKF else 20_000, seed=1)
    # the exact update of the ensemble's own moments (sampling error of the prior removed)
    pm, pc = _moments(ens)
    h = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 1.0]])
    gain = pc @ h.T @ np.linalg.inv(h @ pc @ h.T + np.diag(r))
    mean, cov = pm + gain @ (y - h @ pm), (np.eye(3) - gain @ h) @ pc
    out = method().update(ens, predicted, y, r, np.zeros(2, dtype=bool), np.random.default_rng(2))
    got_mean, got_cov = _moments(out)
    sd = np.sqrt(np.diag(cov))
    tolerance = 1e-10 if method is ETKF else 0.05  # ETKF is exact in mean and covariance
    assert np.all(np.abs(got_mean - mean) / sd < tolerance), (got_mean, mean)
    if method is ETKF:
        np.testing.assert_allclose(got_cov, cov, atol=1e-9)
    elif method is StochasticEnKF:
        np.testing.assert_allclose(got_cov, cov, rtol=0.1, atol=0.05 * sd.max() ** 2)
    else:  # states are resampled, the parameter is jittered with shrinkage: its spread is kept
        np.testing.assert_allclose(np.diag(got_cov), np.diag(cov), rtol=0.15)


# --- T1D: a twin that tracks its patient, detects a drift and recovers ------------
CHANGE, END = 2880.0, 5760.0  # insulin sensitivity halves after 48 h; 4 days in all
NOISE = NoiseModel(8.0, 0.05)


@pytest.fixture(scope="module")
def t1d_setup() -> dict:
    model = tl.models.get("t1d-uva-padova")
    pop = Population.default(model)
    names = ("Gpb", "Vmx", "kp3", "kabs")
    prior = GaussianPrior.from_population(pop, names, seed=0)
    base = typical_parameters(pop, seed=0)
    pmap = ParameterMap(model, names, base)
    rng = np.random.default_rng(5)
    theta = prior.mean + 0.5 * (prior.sample(1, rng)[0] - prior.mean)
    p = pmap.full_batch(theta[None])[0]

    def plan(params: np.ndarray, start: float, end: float) -> tl.Inputs:
        meals = [
            (d * 1440 + t - start, g)
            for d in range(5)
            for t, g in [(420, 50), (720, 70), (1140, 80)]
            if start <= d * 1440 + t < end
        ]
        return t1d.basal_bolus(model.param_map(params), meals, t_end=end - start)

    first = np.arange(5.0, CHANGE + 1, 5.0)
    obs1, doses1, _ = synthetic_record(
        model, p, plan(p, 0, CHANGE), first, observable="subcutaneous_glucose", noise=NOISE, seed=1
    )
    settings = tl.SolverSettings(rtol=1e-7, atol=1e-8)
    state = tl.simulate(
        model, p, plan(p, 0, CHANGE), times=[0.0, CHANGE], save="all", progress=False, settings=settings
    ).states[0, -1]
    p2 = p.copy()
    p2[model.parameter_names.index("Vmx")] *= 0.5
    obs2, doses2, _ = synthetic_record(
        model,
        p2,
        plan(p2, CHANGE, END),
        np.arange(5.0, END - CHANGE + 1, 5.0),
        observable="subcutaneous_glucose",
        noise=NOISE,
        seed=2,
        origin=ORIGIN + pd.Timedelta(minutes=CHANGE),
        y0=state,
    )
    return {
        "model": model,
        "prior": prior,
        "base": base,
        "truth": p,
        "truth_after": p2,
        "plan": plan,
        "obs": pd.concat([obs1, obs2], ignore_index=True),
        "doses": pd.concat([doses1, doses2], ignore_index=True),
    }


def _run(setup: dict, config: TwinConfig, until_h: int = 96) -> tuple[PatientTwin, list]:
    obs = setup["obs"]
    day1 = window(obs, ORIGIN - pd.Timedelta("1s"), ORIGIN + pd.Timedelta("1D"))
    twin = PatientTwin.create(
        setup["model"], day1, setup["doses"], prior=setup["prior"], base=setup["base"], method="enkf", config=config
    )
    reports = [
        twin.sync(window(obs, ORIGIN + pd.Timedelta(hours=h), ORIGIN + pd.Timedelta(hours=h + 3)))
        for h in range(24, until_h, 3)
    ]
    return twin, reports


def test_t1d_twin_flags_halved_insulin_sensitivity_and_recovers(t1d_setup: dict) -> None:
    twin, reports = _run(t1d_setup, TwinConfig(members=300, seed=3))
    hours = np.arange(24, 96, 3) + 3  # the end of each sync window
    flagged = hours[[r.drift for r in reports]]
    assert flagged.size >= 1 and flagged.min() > CHANGE / 60, flagged  # no false alarm before the change
    assert flagged.min() <= CHANGE / 60 + 4 * 3, flagged  # flagged within 4 syncs of the change
    assert reports[list(hours).index(flagged.min())].recalibrated
    vmx = np.exp(twin.ensemble.theta[:, 1])
    true_vmx = t1d_setup["truth_after"][twin.model.parameter_names.index("Vmx")]
    assert abs(np.median(vmx) / true_vmx - 1) < 0.25
    _frozen, frozen_reports = _run(t1d_setup, TwinConfig(members=300, seed=3, recalibration="none", param_walk_sd=0.0))
    after = hours > flagged.min() + 3
    rmse = np.mean([r.innovation["rmse"] for r, a in zip(reports, after, strict=True) if a])
    frozen_rmse = np.mean([r.innovation["rmse"] for r, a in zip(frozen_reports, after, strict=True) if a])
    before = np.mean([r.innovation["rmse"] for r, h in zip(reports, hours, strict=True) if h <= CHANGE / 60])
    assert rmse < 0.6 * frozen_rmse, (rmse, frozen_rmse)
    assert rmse < 1.6 * before, (rmse, before)  # back near the error before the change
    assert len(twin.drift_events) >= 1 and twin.drift_events[0]["recalibrated_from_time"] < CHANGE + 360


def test_t1d_forecast_compare_and_state_round_trip(t1d_setup: dict) -> None:
    twin, _ = _run(t1d_setup, TwinConfig(members=300, seed=4), until_h=36)
    fc = twin.forecast(12.0)
    q = fc.quantiles()
    assert set(q.columns) >= {"time", "variable", "unit", "q05", "q25", "q50", "q75", "q95", "ensemble_size"}
    glucose = q[q["variable"] == "subcutaneous_glucose"]
    assert len(glucose) == 144 and (glucose["q05"] <= glucose["q50"]).all() and (glucose["q50"] <= glucose["q95"]).all()
    assert glucose["time"].iloc[0] == twin.now + pd.Timedelta(minutes=5)
    twin.sync(window(t1d_setup["obs"], twin.now, twin.now + pd.Timedelta(hours=6)))
    scores = twin.scores()
    assert scores.loc[0, "n"] == 72 and 0.6 <= scores.loc[0, "coverage90"] <= 1.0 and scores.loc[0, "crps"] > 0
    # what-if: the same meals with 30 % larger boluses lower glucose for every member (paired)
    p = twin.model.param_map(t1d_setup["truth"])
    meals = [(60.0, 60.0), (360.0, 70.0)]
    usual = t1d.basal_bolus(p, meals, t_end=720.0)
    more = t1d.basal_bolus(p, meals, carb_ratio_g_per_U=float(t1d.default_carb_ratio(p)) / 1.3, t_end=720.0)
    cmp = twin.compare({"more": more, "usual": usual}, "mean_glucose", hours=12.0)
    assert cmp.ensemble_size == 300 and cmp.p_first_better == 1.0
    assert cmp.difference["q95"] < 0 and cmp.arms["more"]["mean"] < cmp.arms["usual"]["mean"]
    tir = twin.compare({"more": more, "usual": usual}, "time_in_range", hours=12.0)
    assert 0.0 <= tir.arms["usual"]["q05"] <= tir.arms["usual"]["q95"] <= 100.0
    # the state dict rebuilds an identical twin
    again = PatientTwin.from_state_dict(twin.state_dict())
    np.testing.assert_array_equal(again.ensemble.theta, twin.ensemble.theta)
    assert again.version == twin.version and len(again.observations) == len(twin.observations)
    assert again.forecasts[0].scores["n"] == 72
    with pytest.raises(tl.InputError, match="Unknown endpoint"):
        twin.compare({"a": usual, "b": more}, "happiness")


# --- oncology: forecast calibration on held-out patients, and a what-if -------------
def test_oncology_forecasts_are_calibrated_on_held_out_patients() -> None:
    model = tl.models.get("tgi-stein")
    names = ("y0", "g", "d")
    prior = GaussianPrior.from_population(Population.default(model), names, n=4000, seed=1)
    pmap = ParameterMap(model, names, model.default_parameters)
    noise = NoiseModel(1.0, 0.1)
    scans = np.arange(1, 9) * 49.0  # every 7 weeks for a year
    rng = np.random.default_rng(77)
    inside = total = 0
    config = TwinConfig(members=400, noise={"sum_of_diameters": {"additive": 1.0, "proportional": 0.1}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.calibrate.CalibrationWarning)
        for i in range(40):
            theta = prior.sample(1, rng)
            obs, _, _ = synthetic_record(
                model,
                pmap.full_batch(theta)[0],
                tl.Inputs(),
                scans,
                observable="sum_of_diameters",
                noise=noise,
                seed=1000 + i,
                subject_id=f"held-out-{i}",
            )
            first, later = obs.iloc[:3], obs.iloc[3:]
            twin = PatientTwin.create(
                model,
                first,
                prior=prior,
                base=model.default_parameters,
                config=config,
                origin=ORIGIN,
                calibrator={"num_warmup": 250, "num_samples": 200, "num_chains": 2},
            )
            twin.forecast(hours=(scans[-1] - scans[2]) * 24.0 + 1.0)
            twin.sync(later)
            s = twin.forecasts[0].scores
            inside, total = inside + s["in90"], total + s["n"]
    assert total == 200
    assert 0.85 <= inside / total <= 0.95, inside / total


@pytest.mark.slow  # about a minute; the what-if path is also exercised by the demo test
def test_oncology_what_if_two_schedules_from_sparse_scans() -> None:
    model = tl.models.get("tgi-claret")
    pop = Population.default(model)
    truth = pop.sample(1, seed=21).parameters[0]
    weekly = tgi_claret.chemotherapy(1000.0, cycle_days=7, n_cycles=12)
    scans = np.array([0.5, 42.0, 91.0])  # baseline, then scans 6 and 7 weeks apart
    obs, doses, _ = synthetic_record(
        model, truth, weekly, scans, observable="sum_of_diameters", noise=NoiseModel(1.0, 0.05), seed=3
    )
    twin = PatientTwin.create(
        model,
        obs,
        doses,
        prior=pop,
        base=truth,
        origin=ORIGIN,
        config=TwinConfig(members=300),
        calibrator={"num_warmup": 250, "num_samples": 250, "num_chains": 2},
    )
    now = twin.ensemble.time
    chemo = tgi_claret.chemotherapy(1000.0, cycle_days=7, n_cycles=12)
    cmp = twin.compare({"continue": chemo, "stop": tl.Inputs()}, f"at:sum_of_diameters:{84.0}", hours=84 * 24.0)
    assert now == pytest.approx(91.0)
    assert cmp.better == "lower" and cmp.ensemble_size == 300
    assert cmp.p_first_better > 0.95 and cmp.arms["continue"]["q50"] < cmp.arms["stop"]["q50"]


def test_a_particle_twin_keeps_its_weights_through_syncs_forecasts_and_storage() -> None:
    model = tl.models.get("tgi-stein")
    names = ("y0", "g", "d")
    prior = GaussianPrior.from_population(Population.default(model), names, n=2000, seed=1)
    truth = ParameterMap(model, names, model.default_parameters).full_batch(prior.mean[None])[0]
    obs, _, _ = synthetic_record(
        model, truth, tl.Inputs(), np.arange(1, 13) * 14.0, observable="sum_of_diameters",
        noise=NoiseModel(1.0, 0.05), seed=4,
    )  # fmt: skip
    config = TwinConfig(members=400, assimilation="pf", resample_below=0.3, seed=2)
    twin = PatientTwin.create(model, obs.iloc[:4], prior=prior, method="enkf", config=config, origin=ORIGIN)
    for part in (obs.iloc[4:6], obs.iloc[6:8]):
        twin.sync(part)
    weights = twin.ensemble.weights
    assert weights is not None and weights.sum() == pytest.approx(1.0) and twin.ensemble.effective_size > 20
    again = PatientTwin.from_state_dict(twin.state_dict())
    np.testing.assert_array_equal(again.ensemble.weights, weights)
    fc = twin.forecast(hours=24 * 56.0)
    assert np.isfinite(fc.predictive).all() and (fc.predictive >= 0).all()
    with pytest.raises(tl.InputError, match="inflation must be a factor > 0 or 'adaptive'"):
        TwinConfig(inflation=0.0)
