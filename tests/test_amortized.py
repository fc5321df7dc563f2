"""Amortized calibration (NPE): simulation-based calibration, C2ST against NUTS,
persistence with its manifest, and seeding NUTS from the amortized posterior.

The default run trains a small flow (fast variant); the ``slow`` test trains at full
budget and holds the C2ST target of 0.6."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import twinloop as tl
from twinloop.calibrate import (
    AmortizedPosterior,
    CalibrationProblem,
    CalibrationWarning,
    Calibrator,
    GaussianPrior,
    NoiseModel,
    NPESettings,
    ObservationDesign,
    ParameterMap,
    c2st,
    sbc,
)
from twinloop.cohort import Population
from twinloop.twin import PatientTwin, TwinConfig, synthetic_record
from twinloop.twin.synthetic import ORIGIN

NOISE = NoiseModel(additive=1.0, proportional=0.1)
TIMES = np.arange(42.0, 400.0, 49.0)  # a scan every 7 weeks, as in test_calibrate


def _setup() -> tuple[tl.models.Model, GaussianPrior, ParameterMap, ObservationDesign]:
    model = tl.models.get("tgi-stein")
    prior = GaussianPrior.from_population(Population.default(model), ("y0", "g", "d"), n=4000, seed=1)
    pmap = ParameterMap(model, ("y0", "g", "d"), model.default_parameters)
    design = ObservationDesign("sum_of_diameters", tuple(TIMES), jitter=7.0, missing=0.15, noise=NOISE)
    return model, prior, pmap, design


def _train(n_simulations: int, max_epochs: int) -> AmortizedPosterior:
    model, prior, pmap, design = _setup()
    settings = NPESettings(n_simulations=n_simulations, max_epochs=max_epochs, seed=0)
    return AmortizedPosterior(model, pmap, prior, design, settings).fit()


@pytest.fixture(scope="module")
def npe() -> AmortizedPosterior:
    return _train(6000, 40)


def _nuts_vs_npe(npe: AmortizedPosterior, n_patients: int) -> list[float]:
    """C2ST between NUTS and NPE posteriors of patients scanned at the nominal times."""
    model, prior, pmap = npe.model, npe.prior, npe.parameters
    rng = np.random.default_rng(11)
    truth = prior.sample(n_patients, rng)
    traj = tl.simulate(model, pmap.full_batch(truth), tl.Inputs(), times=np.r_[0.0, TIMES], progress=False)
    scans = NOISE.sample(traj["sum_of_diameters"][:, 1:], rng)
    cal = Calibrator(prior, num_warmup=500, num_samples=500, num_chains=2, seed=3)
    scores = []
    for i in range(n_patients):
        problem = CalibrationProblem(model, pmap, TIMES, ("sum_of_diameters",) * TIMES.size, scans[i],
                                     noise={"sum_of_diameters": NOISE})  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            reference = cal.fit(problem).posterior.draws()
        scores.append(c2st(npe.posterior(TIMES, scans[i], n=1000, seed=i).draws(), reference, seed=i))
    return scores


def test_sbc_ranks_are_uniform(npe: AmortizedPosterior) -> None:
    result = sbc(npe, n_simulations=300, n_draws=100, seed=5)
    assert result.ranks.shape == (300, 3)
    assert all(p > 1e-3 for p in result.ks_pvalues.values()), result.ks_pvalues
    hist = result.histogram(bins=10)
    assert all(h.sum() == 300 for h in hist.values())


def test_c2st_detects_different_samples_and_accepts_equal_ones() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    assert c2st(a, b) < 0.58
    assert c2st(a, b + np.array([1.5, 0.0, 0.0])) > 0.68  # Bayes-optimal accuracy 0.77


def test_fast_npe_is_close_to_nuts(npe: AmortizedPosterior) -> None:
    scores = _nuts_vs_npe(npe, 2)
    assert np.mean(scores) < 0.85, scores  # the small training budget; the slow test holds 0.6


@pytest.mark.slow
def test_full_budget_npe_meets_the_c2st_target() -> None:
    full = _train(20_000, 150)
    scores = _nuts_vs_npe(full, 5)
    assert np.mean(scores) <= 0.62, scores
    assert all(p > 1e-3 for p in sbc(full, 300, 100, seed=5).ks_pvalues.values())


def test_irregular_missing_series_and_persistence(npe: AmortizedPosterior, tmp_path) -> None:
    # two observations only, at off-nominal times: still a proper posterior (wider than with all scans)
    few = npe.posterior(np.array([40.0, 100.0]), np.array([80.0, 70.0]), n=500)
    many = npe.posterior(TIMES, np.linspace(80.0, 60.0, TIMES.size), n=500)
    assert few.draws().shape == (500, 3)
    assert few.draws()[:, 0].std() > many.draws()[:, 0].std()
    folder = npe.save(tmp_path / "npe")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"]["id"] == "tgi-stein" and manifest["simulation_budget"]["requested"] == 6000
    assert manifest["seed"] == 0 and manifest["prior"]["names"] == ["y0", "g", "d"]
    again = AmortizedPosterior.load(folder)
    flat = np.full(TIMES.size, 70.0)
    np.testing.assert_array_equal(
        again.posterior(TIMES, flat, seed=3).draws(), npe.posterior(TIMES, flat, seed=3).draws()
    )
    with pytest.raises(tl.InputError, match="matching, finite times and values"):
        npe.posterior(np.array([1.0, 2.0]), np.array([1.0]))


def test_npe_starts_nuts_where_the_posterior_is(npe: AmortizedPosterior) -> None:
    model, prior, pmap = npe.model, npe.prior, npe.parameters
    rng = np.random.default_rng(21)
    truth = prior.sample(1, rng)
    traj = tl.simulate(model, pmap.full_batch(truth), tl.Inputs(), times=np.r_[0.0, TIMES], progress=False)
    scans = NOISE.sample(traj["sum_of_diameters"][:, 1:], rng)[0]
    problem = CalibrationProblem(model, pmap, TIMES, ("sum_of_diameters",) * TIMES.size, scans,
                                 noise={"sum_of_diameters": NOISE})  # fmt: skip
    start = npe.posterior(TIMES, scans, n=2, seed=1).draws()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        seeded = Calibrator(prior, num_warmup=60, num_samples=300, num_chains=2, seed=2).fit(problem, init=start)
        full = Calibrator(prior, num_warmup=500, num_samples=500, num_chains=2, seed=4).fit(problem)
    # a fifth of the warm-up from NPE starts reaches the posterior a full-length run finds
    assert max(seeded.posterior.diagnostics()["rhat"].values()) < 1.05
    reference = full.posterior.draws()
    gap = np.abs(np.median(seeded.posterior.draws(), axis=0) - np.median(reference, axis=0)) / reference.std(axis=0)
    assert np.all(gap < 0.25), gap
    with pytest.raises(tl.InputError, match="one start per chain"):
        Calibrator(prior, num_chains=2).fit(problem, init=start[:1])


def test_npe_seeded_twins_forecast_held_out_scans_with_calibrated_intervals(npe: AmortizedPosterior) -> None:
    """Twins whose ensemble is drawn from the amortized posterior of their first three
    scans (no MCMC) forecast the next five with calibrated 90 % intervals."""
    model, prior, pmap = npe.model, npe.prior, npe.parameters
    rng = np.random.default_rng(77)
    config = TwinConfig(members=400, noise={"sum_of_diameters": {"additive": 1.0, "proportional": 0.1}})
    inside = total = 0
    for i in range(30):
        truth = pmap.full_batch(prior.sample(1, rng))[0]
        obs, _, _ = synthetic_record(model, truth, tl.Inputs(), TIMES, observable="sum_of_diameters", noise=NOISE,
                                     seed=2000 + i, subject_id=f"p{i}")  # fmt: skip
        twin = PatientTwin.create(model, obs.iloc[:3], method="npe", amortized=npe, config=config, origin=ORIGIN)
        assert twin.calibration["method"] == "npe" and twin.ensemble.theta.shape == (400, 3)
        twin.forecast(hours=(TIMES[-1] - TIMES[2]) * 24.0 + 1.0)
        twin.sync(obs.iloc[3:])
        scores = twin.forecasts[0].scores
        inside, total = inside + scores["in90"], total + scores["n"]
    print(f"90 % interval coverage of later scans: {inside}/{total}")
    assert total == 150
    assert 0.82 <= inside / total <= 0.97, inside / total


def test_npe_seeds_a_nuts_twin_and_refuses_data_it_was_not_trained_for(npe: AmortizedPosterior) -> None:
    model, prior, pmap = npe.model, npe.prior, npe.parameters
    obs, _, _ = synthetic_record(model, pmap.full_batch(prior.sample(1, np.random.default_rng(5)))[0], tl.Inputs(),
                                 TIMES, observable="sum_of_diameters", noise=NOISE, seed=9, subject_id="p")  # fmt: skip
    config = TwinConfig(members=200, noise={"sum_of_diameters": {"additive": 1.0, "proportional": 0.1}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        twin = PatientTwin.create(model, obs, amortized=npe, config=config, origin=ORIGIN,
                                  calibrator={"num_warmup": 100, "num_samples": 200, "num_chains": 2})  # fmt: skip
    assert twin.calibration["method"] == "nuts" and max(twin.calibration["rhat"].values()) < 1.05
    with pytest.raises(tl.InputError, match="trained on tgi-stein"):
        PatientTwin.create(tl.models.get("tgi-claret"), obs, amortized=npe, method="npe", origin=ORIGIN)
    with pytest.raises(tl.InputError, match="needs amortized="):
        PatientTwin.create(model, obs, prior=prior, method="npe", origin=ORIGIN)
    with pytest.raises(tl.InputError, match="seeds method 'npe' or 'nuts'"):
        PatientTwin.create(model, obs, amortized=npe, method="enkf", origin=ORIGIN)


def test_an_ensemble_of_flows_mixes_its_members_and_persists(tmp_path) -> None:
    """Two flows trained from different seeds: draws are an equal mixture (wider than the
    members on average, as a mixture must be), log_prob is the mixture density, and both
    flows are saved and loaded."""
    model, prior, pmap, design = _setup()
    settings = NPESettings(n_simulations=1000, max_epochs=4, n_flows=2, seed=3)  # structure, not accuracy
    ensemble = AmortizedPosterior(model, pmap, prior, design, settings).fit()
    assert len(ensemble.estimators_) == 2 and len(ensemble.manifest_["epochs"]) == 2
    scans = np.linspace(70.0, 55.0, TIMES.size)
    members = []
    for est in ensemble.estimators_:
        single = AmortizedPosterior(model, pmap, prior, design, settings)
        single.estimators_ = [est]
        members.append(single)
    mixed = ensemble.posterior(TIMES, scans, n=4000, seed=1).draws()
    parts = [m.posterior(TIMES, scans, n=4000, seed=1).draws() for m in members]
    assert np.all(mixed.var(axis=0) > 0.9 * np.mean([p.var(axis=0) for p in parts], axis=0))
    point = mixed[:5]
    densities = np.stack([m.log_prob(point, TIMES, scans) for m in members])
    np.testing.assert_allclose(ensemble.log_prob(point, TIMES, scans), np.logaddexp(*densities) - np.log(2), rtol=1e-9)
    again = AmortizedPosterior.load(ensemble.save(tmp_path / "ensemble"))
    assert len(again.estimators_) == 2
    np.testing.assert_allclose(again.log_prob(point, TIMES, scans), ensemble.log_prob(point, TIMES, scans))
