"""Readings at an instrument's limits are censored, not values: a CGM's "LOW", a drug
concentration below the assay's limit of quantification (Beal's M3 method)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

import twinloop as tl
from twinloop.calibrate import GaussianPrior, NoiseModel, ParameterMap
from twinloop.calibrate.noise import kalman_readings
from twinloop.calibrate.problem import CalibrationProblem
from twinloop.errors import InputError
from twinloop.twin.identify import IdentifySettings, censored_residuals, identify

LLOQ = 0.25  # mg/L


def test_a_noise_model_knows_its_range_and_which_readings_it_censors() -> None:
    cgm = NoiseModel(8.0, 0.05, lower=40.0, upper=400.0)
    assert cgm.censoring(np.array([39.0, 40.0, 41.0, 399.0, 400.0, 512.0])).tolist() == [-1, -1, 0, 0, 1, 1]
    assert cgm.read(np.array([12.0, 100.0, 600.0])).tolist() == [40.0, 100.0, 400.0]
    assert NoiseModel(**cgm.to_dict()) == cgm
    assert NoiseModel(1.0, 0.1).to_dict() == {"additive": 1.0, "proportional": 0.1}
    assert NoiseModel(1.0, 0.1).censoring(np.array([-1e9, 1e9])).tolist() == [0, 0]
    with pytest.raises(InputError, match="lower < upper"):
        NoiseModel(1.0, 0.1, lower=50.0, upper=40.0)


def test_the_censored_residual_is_the_tobit_likelihood() -> None:
    y, w = np.full(4, 40.0), np.full(4, 0.1)
    pred = np.array([0.0, 40.0, 55.0, 400.0])
    r = np.asarray(censored_residuals(y, pred, w, np.full(4, -1)))
    np.testing.assert_allclose(r**2, -2.0 * norm.logcdf((40.0 - pred) * 0.1), rtol=1e-9, atol=1e-300)
    assert r[0] < 0.05 and r[-1] > 35.0  # far below the floor: no cost; far above: a plain residual
    upper = np.asarray(censored_residuals(np.full(2, 400.0), np.array([450.0, 300.0]), w[:2], np.ones(2)))
    np.testing.assert_allclose(upper**2, -2.0 * norm.logcdf((np.array([450.0, 300.0]) - 400.0) * 0.1))
    plain = np.asarray(censored_residuals(y, pred, w, np.zeros(4)))
    np.testing.assert_allclose(plain, (y - pred) * w)


def test_a_kalman_update_uses_a_censored_reading_only_when_the_forecast_disagrees() -> None:
    cgm = NoiseModel(8.0, 0.05, lower=40.0, upper=400.0)
    used, y = kalman_readings([cgm] * 4, np.array([39.0, 39.0, 120.0, 400.0]), np.array([30.0, 70.0, 118.0, 380.0]))
    assert used.tolist() == [False, True, True, True]
    assert y.tolist() == [40.0, 40.0, 120.0, 400.0]


def _one_compartment_oral(t: np.ndarray, dose: float, cl: float, v: float, ka: float) -> np.ndarray:
    """The textbook closed form (Gibaldi & Perrier), not twinloop's engine."""
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


def test_concentrations_below_the_limit_of_quantification_do_not_bias_clearance() -> None:
    """A dense profile whose second half is below the LLOQ: the M3 likelihood recovers the
    clearance, while reading each "<LLOQ" as the LLOQ itself (what a fit without censoring
    does) makes the drug look eliminated far more slowly."""
    model = tl.models.get("pk-one-compartment")
    names = ("CL", "V", "ka")
    truth = {"CL": 6.0, "V": 40.0, "ka": 1.2}
    times = np.r_[np.linspace(0.25, 6.0, 12), np.linspace(8.0, 72.0, 24)]
    rng = np.random.default_rng(7)
    exact = _one_compartment_oral(times, 100.0, **{k.lower(): v for k, v in truth.items()})
    observed = exact * (1.0 + 0.1 * rng.standard_normal(times.size)) + 0.01 * rng.standard_normal(times.size)
    shown = np.maximum(observed, LLOQ)  # the lab reports "<LLOQ" as the limit
    assert 0.3 < np.mean(shown == LLOQ) < 0.7
    pmap = ParameterMap(model, names, model.default_parameters, bounded=True)
    prior = GaussianPrior(names, pmap.unconstrain(np.array([5.0, 50.0, 1.0])), np.eye(3) * 4.0)
    inputs = tl.Inputs.bolus("dose_oral", [(0.0, 100.0)])

    def clearance(noise: NoiseModel) -> tuple[float, int]:
        problem = CalibrationProblem(
            model, pmap, times, ("concentration",) * times.size, shown, inputs, noise={"concentration": noise}
        )
        found = identify(problem, prior, IdentifySettings(starts=4, iterations=25, refine=0))
        return float(found.summary()["CL"]["map"]), found.censored

    m3, censored = clearance(NoiseModel(0.01, 0.1, lower=LLOQ))
    as_values, none = clearance(NoiseModel(0.01, 0.1))
    assert censored == int(np.sum(shown == LLOQ)) and none == 0
    assert abs(np.log(m3 / truth["CL"])) < 0.1, m3
    assert as_values < 0.7 * truth["CL"], as_values


def test_a_declared_cgm_noise_keeps_the_sensor_range_unless_removed() -> None:
    from twinloop.twin import TwinConfig

    t1d = tl.models.get("t1d-uva-padova")

    declared = TwinConfig(noise={"subcutaneous_glucose": {"additive": 10.0, "proportional": 0.05}})
    assert declared.noise_model("subcutaneous_glucose", t1d).range == (40.0, 400.0)
    assert TwinConfig().noise_model("subcutaneous_glucose", t1d).range == (40.0, 400.0)
    removed = TwinConfig(noise={"subcutaneous_glucose": {"additive": 10.0, "lower": None, "upper": None}})
    assert removed.noise_model("subcutaneous_glucose", t1d).range == (-np.inf, np.inf)
    assert TwinConfig.from_dict(declared.to_dict()).noise_model("subcutaneous_glucose", t1d) == NoiseModel(
        10.0, 0.05, lower=40.0, upper=400.0
    )


def test_the_sparse_path_likelihood_censors_at_the_limits_too() -> None:
    from twinloop.calibrate.bayes import censored_log_likelihood

    values = np.array([0.25, 1.0, 0.1, 9.0])
    mu, sd = np.array([0.4, 1.2, 0.2, 7.0]), np.array([0.05, 0.1, 0.05, 1.0])
    lower, upper = np.full(4, 0.25), np.array([np.inf, np.inf, np.inf, 8.0])
    expected = (
        norm.logcdf((0.25 - 0.4) / 0.05)  # at the LLOQ: below it
        + norm.logpdf(1.0, 1.2, 0.1)
        + norm.logcdf((0.25 - 0.2) / 0.05)  # reported below the LLOQ: below the limit, not at 0.1
        + norm.logcdf((7.0 - 8.0) / 1.0)  # above the upper limit
    )
    assert float(censored_log_likelihood(values, mu, sd, lower, upper)) == pytest.approx(expected, rel=1e-9)
