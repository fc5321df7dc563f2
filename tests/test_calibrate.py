"""Calibration: parameter recovery with coverage on 50 synthetic patients, diagnostics,
SVI against NUTS, ArviZ export, and the reverse-mode rule of the predictor."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import twinloop as tl
from twinloop.calibrate import (
    CalibrationProblem,
    CalibrationWarning,
    Calibrator,
    GaussianPrior,
    NoiseModel,
    ParameterMap,
)
from twinloop.calibrate.problem import reverse_via_forward
from twinloop.cohort import Population

NOISE = NoiseModel(additive=1.0, proportional=0.1)
TIMES = np.arange(42.0, 400.0, 49.0)  # a scan every 7 weeks


@pytest.fixture(scope="module")
def stein() -> tuple[tl.models.Model, GaussianPrior, ParameterMap]:
    model = tl.models.get("tgi-stein")
    prior = GaussianPrior.from_population(Population.default(model), ("y0", "g", "d"), n=4000, seed=1)
    return model, prior, ParameterMap(model, ("y0", "g", "d"), model.default_parameters)


def _patients(
    model: tl.models.Model, prior: GaussianPrior, pmap: ParameterMap, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Truths drawn from the prior and their noisy scans."""
    rng = np.random.default_rng(seed)
    truth = prior.sample(n, rng)
    traj = tl.simulate(model, pmap.full_batch(truth), tl.Inputs(), times=np.r_[0.0, TIMES], progress=False)
    return truth, NOISE.sample(traj["sum_of_diameters"][:, 1:], rng)


def _problem(model: tl.models.Model, pmap: ParameterMap, y: np.ndarray) -> CalibrationProblem:
    return CalibrationProblem(
        model, pmap, TIMES, ("sum_of_diameters",) * TIMES.size, y, noise={"sum_of_diameters": NOISE}
    )


def test_nuts_recovers_parameters_with_calibrated_90_percent_intervals(stein: tuple) -> None:
    model, prior, pmap = stein
    n = 30
    truth, scans = _patients(model, prior, pmap, n, seed=2024)
    cal = Calibrator(prior, num_warmup=250, num_samples=250, num_chains=2, seed=7)
    inside = np.zeros((n, 3), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        for i in range(n):
            lo, hi = cal.fit(_problem(model, pmap, scans[i])).posterior.interval(0.9)
            inside[i] = (np.exp(truth[i]) >= lo) & (np.exp(truth[i]) <= hi)
    # pooled over 90 intervals: inside the central 99 % range of Binomial(90, 0.9)
    lo_count, hi_count = stats.binom.interval(0.99, inside.size, 0.9)
    assert lo_count <= inside.sum() <= hi_count, inside.mean(axis=0)
    for j in range(3):  # and per parameter, Binomial(30, 0.9) at 99.9 %
        lo_j, hi_j = stats.binom.interval(0.999, n, 0.9)
        assert lo_j <= inside[:, j].sum() <= hi_j, (pmap.names[j], inside[:, j].mean())


def test_diagnostics_warn_or_refuse_when_sampling_is_too_short(stein: tuple) -> None:
    model, prior, pmap = stein
    _, scans = _patients(model, prior, pmap, 1, seed=3)
    problem = _problem(model, pmap, scans[0])
    with pytest.warns(CalibrationWarning, match="effective sample size"):
        Calibrator(prior, num_warmup=5, num_samples=8, num_chains=2).fit(problem)
    with pytest.raises(tl.CalibrationError, match="Calibration diagnostics failed"):
        Calibrator(prior, num_warmup=5, num_samples=8, num_chains=2, strict=True).fit(problem)


def test_svi_agrees_with_nuts_and_arviz_export(stein: tuple) -> None:
    model, prior, pmap = stein
    _, scans = _patients(model, prior, pmap, 1, seed=11)
    problem = _problem(model, pmap, scans[0])
    # the recovery test's settings: the compiled sampler is reused
    nuts = Calibrator(prior, num_warmup=250, num_samples=250, num_chains=2).fit(problem).posterior
    svi = Calibrator(prior, method="svi").fit(problem).posterior
    assert nuts.problems() == []
    d = nuts.diagnostics()
    assert set(d["rhat"]) == {"y0", "g", "d"} and max(d["rhat"].values()) < 1.05
    # the Gaussian approximation's means are within a third of a posterior sd of NUTS's
    diff = np.abs(svi.draws().mean(0) - nuts.draws().mean(0)) / nuts.draws().std(0)
    assert np.all(diff < 0.35), diff
    idata = nuts.to_arviz()
    assert set(idata.posterior.data_vars) >= {"y0", "g", "d", "log_y0"}
    assert idata.posterior["y0"].shape == (2, 250)
    assert "diverging" in idata.sample_stats


def test_model_error_is_sampled_with_the_parameters(stein: tuple) -> None:
    """Scans 2.5 times noisier than declared raise the model-error scale; scans with the
    declared noise leave it near 1. Eight scans move it only so far from its prior
    (E[s^2] = 1.25, light-tailed on purpose, see calibrate/model_error.py)."""
    model, prior, pmap = stein
    truth = prior.mean[None]
    traj = tl.simulate(model, pmap.full_batch(truth), tl.Inputs(), times=np.r_[0.0, TIMES], progress=False)
    clean = traj["sum_of_diameters"][0, 1:]
    z = np.random.default_rng(5).standard_normal(TIMES.size)
    cal = Calibrator(prior, num_warmup=250, num_samples=250, num_chains=2, seed=3, model_error=0.5)
    scales = {}
    for factor in (1.0, 2.5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            posterior = cal.fit(_problem(model, pmap, clean + factor * NOISE.sd(clean) * z)).posterior
        scales[factor] = posterior.error_scale()["sum_of_diameters"]
        d = posterior.diagnostics()
        assert d["ess"]["model_error[sum_of_diameters]"] > 100 and d["rhat"]["model_error[sum_of_diameters]"] < 1.05
        assert d["model_error"]["sum_of_diameters"]["q05"] >= 1.0
    assert scales[1.0] < 1.15 < 1.2 < scales[2.5], scales
    assert Calibrator(prior).model_error == 0.0  # the declared noise is exact unless asked


def test_reverse_mode_rule_equals_forward_jacobian() -> None:
    def f(x: jax.Array) -> jax.Array:
        return jnp.array([jnp.sin(x[0]) * x[1], jnp.exp(x[1]), x[0] ** 3])

    x = jnp.array([0.3, -0.7])
    np.testing.assert_allclose(jax.jacrev(reverse_via_forward(f))(x), jax.jacfwd(f)(x), rtol=1e-12)


def test_problem_errors_name_the_field(stein: tuple) -> None:
    model, _prior, pmap = stein
    with pytest.raises(tl.InputError, match="not observables"):
        CalibrationProblem(model, pmap, np.array([1.0]), ("glucose",), np.array([1.0]))
    with pytest.raises(tl.InputError, match="derived"):
        ParameterMap(tl.models.get("t1d-uva-padova"), ("Vm0",), tl.models.get("t1d-uva-padova").default_parameters)
    with pytest.raises(tl.InputError, match="same names"):
        Calibrator(GaussianPrior(("y0",), np.zeros(1), np.eye(1))).fit(_problem(model, pmap, np.ones(TIMES.size)))


# --- each parameter on its declared scale -----------------------------------------------
def _pk_with_linear_ka() -> tl.models.Model:
    pk = tl.models.get("pk-one-compartment")
    cl, v, ka = pk.parameters
    return dataclasses.replace(pk, id="pk-linear-ka", parameters=(cl, v, dataclasses.replace(ka, scale="linear")))


def test_parameter_map_treats_each_parameter_on_its_scale() -> None:
    model = _pk_with_linear_ka()
    assert [p.scale for p in model.parameters] == ["log", "log", "linear"]
    free = ParameterMap(model, ("V", "ka"), model.default_parameters)
    theta = np.array([[np.log(30.0), 0.7], [np.log(10.0), -0.2]])
    np.testing.assert_allclose(free.values(theta), [[30.0, 0.7], [10.0, -0.2]])  # ka as it is, V from its log
    np.testing.assert_allclose(free.unconstrain(free.values(theta)), theta)
    np.testing.assert_allclose(np.asarray(free.full(jnp.asarray(theta[0]))), [model.default_parameters[0], 30.0, 0.7])
    box = ParameterMap(model, ("V", "ka"), model.default_parameters, bounded=True)
    (v_lo, v_hi), (k_lo, k_hi) = box.bounds
    middle = box.values(np.zeros((1, 2)))[0]  # z = 0: the middle of each bound on its own scale
    np.testing.assert_allclose(middle, [np.sqrt(v_lo * v_hi), (k_lo + k_hi) / 2])
    extreme = box.values(np.array([[-40.0, 40.0], [40.0, -40.0]]))
    lo, hi = box.bounds[:, 0], box.bounds[:, 1]
    assert np.all((extreme >= lo * (1 - 1e-12)) & (extreme <= hi * (1 + 1e-12)))
    assert box.to_dict()["scales"] == ["log", "linear"]


def test_gaussian_prior_moment_matches_on_each_scale() -> None:
    rng = np.random.default_rng(0)
    values = np.column_stack([np.exp(rng.normal(1.0, 0.2, 5000)), rng.normal(-3.0, 2.0, 5000)])
    prior = GaussianPrior.from_samples(("k", "offset"), values, scales=("log", "linear"))
    np.testing.assert_allclose(prior.mean, [1.0, -3.0], atol=0.07)
    np.testing.assert_allclose(prior.sd, [0.2, 2.0], rtol=0.05)
    with pytest.raises(tl.InputError, match=r"'offset' takes values <= 0.*scale='linear'"):
        GaussianPrior.from_samples(("k", "offset"), values)  # both on the log scale


def test_a_calibration_problem_starts_from_a_given_state() -> None:
    pk = tl.models.get("pk-one-compartment")
    pmap = ParameterMap(pk, ("V",), pk.default_parameters)
    times, x0 = np.array([1.0, 2.0, 6.0]), np.array([0.0, 120.0])
    problem = CalibrationProblem(
        pk, pmap, times, ("concentration",) * 3, np.ones(3), initial_state=x0, noise={"concentration": NOISE}
    )
    predicted = np.asarray(problem.predictor()(jnp.log(jnp.array([40.0]))))
    params = pmap.full_batch(np.log([[40.0]]))
    expected = tl.simulate(pk, params, tl.Inputs(), times=np.r_[0.0, times], y0=x0, progress=False)
    np.testing.assert_allclose(predicted, expected["concentration"][0, 1:], rtol=1e-5)
