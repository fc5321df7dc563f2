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
