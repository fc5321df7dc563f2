"""Population fits from observed data: the cohort solve, covariate refits, reweighting, bad input.

The fit itself (parameter recovery, lineage and privacy of the cohort sampled from it)
is checked in ``test_govern.py`` on a real-like product whose truth is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import twinloop as tl
from twinloop.calibrate.population_fit import CovariateColumn, FitSettings, PopulationFit, covariate_design
from twinloop.cli.app import app
from twinloop.cohort import Population
from twinloop.cohort.spec import Covariate
from twinloop.simulate.engine import cohort_observable_function

runner = CliRunner()


def test_the_cohort_solve_matches_the_engine_patient_by_patient():
    model = tl.models.get("tgi-claret")
    params = Population.default(model).sample(3, seed=0).parameters
    plans = [tl.Inputs.bolus("dose_iv", [(0.0, 1200.0), (21.0, 1200.0)]), tl.Inputs(),
             tl.Inputs.bolus("dose_iv", [(7.0 * k, 400.0) for k in range(6)])]  # fmt: skip
    times = np.array([0.0, 10.0, 42.0, 84.0, 200.0])
    together = np.asarray(cohort_observable_function(model, plans, times)(params))
    for i, plan in enumerate(plans):
        alone = tl.simulate(model, params[i], plan, times=times, progress=False).observables[0]
        np.testing.assert_allclose(together[i], alone, rtol=1e-5, atol=1e-6)  # within solver tolerance


def test_refitted_covariates_recover_their_distributions():
    rng = np.random.default_rng(0)
    age = Covariate("age", "normal", {"mean": 0.0, "sd": 1.0}, "a", 18, 90).fitted(rng.normal(63, 9, 5000))
    weight = Covariate("weight", "lognormal", {"median": 1.0, "cv": 1.0}, "kg").fitted(72 * rng.lognormal(0, 0.2, 5000))
    sex = Covariate("sex", "categorical", {"levels": {"female": 0.5, "male": 0.5}}).fitted(
        np.where(rng.random(5000) < 0.3, "female", "male")
    )
    assert age.params["mean"] == pytest.approx(63, abs=0.5) and age.params["sd"] == pytest.approx(9, rel=0.05)
    assert (age.lower, age.upper) == (18, 90)  # bounds of the base stay
    assert weight.params["median"] == pytest.approx(72, rel=0.02) and weight.params["cv"] == pytest.approx(
        0.2, rel=0.06
    )
    assert sex.params["levels"]["female"] == pytest.approx(0.3, abs=0.02)


def _fake_fit(n_draws: int = 50) -> PopulationFit:
    """A fit with known posterior draws (no inference): KL depends on sex, twice as high in women."""
    model = tl.models.get("tgi-claret")
    base = Population.default(model)
    rng = np.random.default_rng(1)
    covs = pd.DataFrame({"age": rng.normal(65, 8, 400), "sex": np.where(rng.random(400) < 0.2, "female", "male"),
                         "weight": 70 * rng.lognormal(0, 0.15, 400)})  # fmt: skip
    columns, _ = covariate_design(covs[["sex"]])
    assert columns == [CovariateColumn("sex", "female", pytest.approx(0.2, abs=0.05), reference="male")]
    names = ("y0", "KL")
    beta = np.zeros((n_draws, 2, 1))
    beta[:, 1, 0] = np.log(2.0)
    draws = {"mu": np.tile(np.log([100.0, 0.002]), (n_draws, 1)) + 0.01 * rng.standard_normal((n_draws, 2)),
             "omega": np.tile(np.diag([0.04, 0.09]), (n_draws, 1, 1)), "beta": beta,
             "additive": np.ones((n_draws, 1)), "proportional": np.full((n_draws, 1), 0.1)}  # fmt: skip
    return PopulationFit(model, base, names, columns, draws, np.zeros(10), ("sum_of_diameters",), {"patients": 400},
                         FitSettings(), covs, np.zeros((400, 2)))  # fmt: skip


def test_a_fitted_population_reweights_to_target_demographics_and_keeps_its_effects():
    fit = _fake_fit()
    as_observed = fit.population().sample(4000, seed=2)
    reweighted = fit.population(targets={"sex": {"female": 0.5, "male": 0.5}}).sample(4000, seed=2)
    share = (reweighted.covariates["sex"] == "female").mean()
    assert (as_observed.covariates["sex"] == "female").mean() == pytest.approx(0.2, abs=0.03)
    assert share == pytest.approx(0.5, abs=0.03)
    for cohort in (as_observed, reweighted):
        kl = pd.Series(cohort.parameter("KL")).groupby(cohort.covariates["sex"].to_numpy()).median()
        assert kl["female"] / kl["male"] == pytest.approx(2.0, rel=0.1)  # the effect moves with the mix
    mixture = fit.population(draws=5)
    assert len(mixture.groups) == 5 and sum(g.fraction for g in mixture.groups) == pytest.approx(1.0)
    with pytest.raises(tl.errors.InputError, match="categorical"):
        fit.population(targets={"age": {"old": 1.0}})


def test_from_real_rejects_bad_input_and_writes_nothing(tmp_path: Path):
    empty = tmp_path / "data"
    empty.mkdir()
    out = tmp_path / "out"
    missing = runner.invoke(app, ["cohort", "from-real", str(empty), "--model", "tgi-claret", "--out", str(out)])
    assert missing.exit_code == 2 and "patients.parquet" in missing.output and not out.exists()
    pd.DataFrame({"subject_id": ["a"], "age": [60.0], "sex": ["male"], "weight": [70.0]}).to_parquet(
        empty / "patients.parquet"
    )
    pd.DataFrame({"subject_id": ["a"], "time": pd.to_datetime(["2026-01-01"], utc=True), "variable": ["hba1c"],
                  "value": [7.0]}).to_parquet(empty / "observations.parquet")  # fmt: skip
    unknown = runner.invoke(app, ["cohort", "from-real", str(empty), "--model", "tgi-claret", "--out", str(out)])
    assert unknown.exit_code == 2 and "sum_of_diameters" in unknown.output and not out.exists()
    numeric = runner.invoke(app, ["cohort", "from-real", str(empty), "--model", "tgi-claret", "--out", str(out),
                                  "--target", "age=old:1"])  # fmt: skip
    assert numeric.exit_code == 2 and "categorical" in numeric.output and not out.exists()
    syntax = runner.invoke(app, ["cohort", "from-real", str(empty), "--model", "tgi-claret", "--out", str(out),
                                 "--target", "sex=female"])  # fmt: skip
    assert syntax.exit_code == 2 and "LEVEL:SHARE" in syntax.output and not out.exists()
