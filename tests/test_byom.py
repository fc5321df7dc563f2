"""Bring your own model, end to end, with no edit to twinloop.

(a) Lorenz-63, defined in a temporary Python file, and (b) an SIR epidemic model written
as SBML, each added with one command to a temporary model directory and taken through
``check_model`` -> a population (a YAML the test writes for (a), the population from the
parameter bounds for (b)) -> a synthetic product with lineage (``twinloop cohort
generate``) -> a twin created on one virtual patient's data, synced with the rest and
forecast -> the governance report. The forecasts are checked against the virtual patient's
true trajectory, integrated here by an independent fixed-step RK4 in numpy.

Small cohorts and short horizons keep every step to a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import twinloop as tl
from twinloop.cli.app import app

runner = CliRunner()

LORENZ = '''
"""Lorenz-63 (Lorenz 1963): a chaotic system in dimensionless time, one unit lasting an hour."""

import jax.numpy as jnp

from twinloop.models import Inputs, Model, Observable, Parameter, State
from twinloop.models.noise import NoiseModel

NOISE = NoiseModel(additive=1.4, proportional=0.0)  # R = 2, the observation error of Sakov et al. (2012)


def rhs(t, x, u, p):
    return jnp.stack([p["sigma"] * (x[1] - x[0]), x[0] * (p["rho"] - x[2]) - x[1], x[0] * x[1] - p["beta"] * x[2]])


def build() -> Model:
    return Model(
        id="lorenz63",
        version="1.0.0",
        name="Lorenz-63",
        description=__doc__,
        time_unit="1",
        clock_seconds=3600.0,
        states=tuple(State(name, "1", nonnegative=False) for name in ("x", "y", "z")),
        parameters=(
            Parameter("sigma", "1", 10.0, 5.0, 15.0, "Prandtl number"),
            Parameter("rho", "1", 28.0, 20.0, 35.0, "Rayleigh number"),
            Parameter("beta", "1", 8.0 / 3.0, 1.5, 4.0, "aspect ratio"),
            Parameter("x0", "1", 1.509, -20.0, 20.0, "initial x"),
            Parameter("y0", "1", -1.531, -20.0, 20.0, "initial y"),
            Parameter("z0", "1", 25.46, 5.0, 45.0, "initial z"),
        ),
        inputs=(),
        observables=tuple(
            Observable(name, "1", (lambda i: lambda x, p: x[i])(i), f"component {name}", nonnegative=False, noise=NOISE)
            for i, name in enumerate(("x", "y", "z"))
        ),
        rhs=rhs,
        initial_state=lambda p: jnp.stack([p["x0"] * 1.0, p["y0"] * 1.0, p["z0"] * 1.0]),
        standard_scenario=lambda p: (Inputs(), 2.0),
        identifiable=("rho",),
        references=("Lorenz EN. Deterministic nonperiodic flow. J Atmos Sci. 1963;20(2):130-141.",),
    )
'''

SIR = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="sir_epidemic" name="SIR epidemic (Kermack-McKendrick)" timeUnits="day" substanceUnits="item"
         extentUnits="item" volumeUnits="dimensionless">
    <listOfUnitDefinitions>
      <unitDefinition id="day">
        <listOfUnits><unit kind="second" exponent="1" scale="0" multiplier="86400"/></listOfUnits>
      </unitDefinition>
      <unitDefinition id="per_day">
        <listOfUnits><unit kind="second" exponent="-1" scale="0" multiplier="86400"/></listOfUnits>
      </unitDefinition>
    </listOfUnitDefinitions>
    <listOfCompartments>
      <compartment id="population" spatialDimensions="3" size="1" units="dimensionless" constant="true"/>
    </listOfCompartments>
    <listOfSpecies>
      <species id="S" compartment="population" initialAmount="990" substanceUnits="item"
               hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
      <species id="I" compartment="population" initialAmount="10" substanceUnits="item"
               hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
      <species id="R" compartment="population" initialAmount="0" substanceUnits="item"
               hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
    </listOfSpecies>
    <listOfParameters>
      <parameter id="beta" value="0.3" units="per_day" constant="true"/>
      <parameter id="gamma" value="0.1" units="per_day" constant="true"/>
    </listOfParameters>
    <listOfReactions>
      <reaction id="infection" reversible="false">
        <listOfReactants><speciesReference species="S" stoichiometry="1" constant="true"/></listOfReactants>
        <listOfProducts><speciesReference species="I" stoichiometry="1" constant="true"/></listOfProducts>
        <kineticLaw>
          <math xmlns="http://www.w3.org/1998/Math/MathML">
            <apply><divide/><apply><times/><ci>beta</ci><ci>S</ci><ci>I</ci></apply>
              <apply><plus/><ci>S</ci><ci>I</ci><ci>R</ci></apply></apply>
          </math>
        </kineticLaw>
      </reaction>
      <reaction id="recovery" reversible="false">
        <listOfReactants><speciesReference species="I" stoichiometry="1" constant="true"/></listOfReactants>
        <listOfProducts><speciesReference species="R" stoichiometry="1" constant="true"/></listOfProducts>
        <kineticLaw>
          <math xmlns="http://www.w3.org/1998/Math/MathML">
            <apply><times/><ci>gamma</ci><ci>I</ci></apply>
          </math>
        </kineticLaw>
      </reaction>
    </listOfReactions>
  </model>
</sbml>
"""


def cli(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def rk4(f, x0: np.ndarray, times: np.ndarray, dt: float) -> np.ndarray:
    """The states at ``times`` (from 0), by classical RK4 with step ``dt`` (an independent reference)."""
    out, x, t = [], np.asarray(x0, dtype=np.float64), 0.0
    for target in times:
        while t < target - 1e-12:
            h = min(dt, target - t)
            k1 = f(x)
            k2 = f(x + 0.5 * h * k1)
            k3 = f(x + 0.5 * h * k2)
            k4 = f(x + h * k3)
            x, t = x + h / 6.0 * (k1 + 2.0 * (k2 + k3) + k4), t + h
        out.append(x.copy())
    return np.array(out)


def lorenz_truth(p: pd.Series, times: np.ndarray) -> np.ndarray:
    def f(x: np.ndarray) -> np.ndarray:
        return np.array([p["sigma"] * (x[1] - x[0]), x[0] * (p["rho"] - x[2]) - x[1], x[0] * x[1] - p["beta"] * x[2]])

    return rk4(f, np.array([p["x0"], p["y0"], p["z0"]]), times, 1e-3)


def sir_truth(p: pd.Series, times: np.ndarray) -> np.ndarray:
    def f(x: np.ndarray) -> np.ndarray:
        infection = p["beta"] * x[0] * x[1] / x.sum()
        return np.array([-infection, infection - p["gamma"] * x[1], p["gamma"] * x[1]])

    initial = [float(p.get(name, amount)) for name, amount in (("S", 990.0), ("I", 10.0), ("R", 0.0))]
    return rk4(f, np.array(initial), times, 0.01)


def generate(tmp: Path, spec: dict, name: str) -> Any:
    """``twinloop cohort generate`` on a spec the test writes; the product, with lineage checked."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    cli("cohort", "generate", path, "--out", tmp / name)
    from twinloop.products.dataset import Product

    product = Product.open(tmp / name)
    manifest = product.manifest
    assert manifest["model"]["id"] == spec["model"] and product.verify() == []
    patients = product.table("patients")
    assert len(patients) == spec["n"]
    first = str(patients["subject_id"].iloc[0])
    lineage = cli("lineage", tmp / name, "--patient", first)
    assert first in lineage and spec["model"] in lineage
    return product


def twin_through(
    model_id: str, product: Any, subject: str, prior: Any, noise: dict | None, fit: tuple[str, ...], **kwargs: Any
) -> Any:
    """A twin on the first half of ``subject``'s observations, synced with the second half.

    Model time 0 is the product's time origin; ``kwargs`` go to ``PatientTwin.create``
    (``y0``: the members' initial states, ``base``: the values of what is not fitted)."""
    from twinloop.twin import PatientTwin, TwinConfig

    obs = product.table("observations")
    obs = obs[obs["subject_id"] == subject].sort_values("time").reset_index(drop=True)
    doses = product.table("doses")
    doses = doses[doses["subject_id"] == subject]
    half = obs["time"] <= obs["time"].iloc[len(obs) // 2]
    config = TwinConfig(members=64, seed=3, **({"noise": noise} if noise else {}))
    origin = pd.Timestamp(product.manifest["time_origin"])
    twin = PatientTwin.create(
        model_id, obs[half], doses, prior=prior, fit=fit, method="enkf", config=config, twin_id=f"{model_id}-twin",
        origin=origin, **kwargs,
    )  # fmt: skip
    report = twin.sync(obs[~half], doses)
    assert report.assimilated == int((~half).sum())
    return twin


def governance_report(tmp: Path, product_dir: Path, model_id: str) -> dict:
    cli("govern", "report", product_dir, "--out", tmp / "report" / "report.html", "--n-attacks", "20")
    report = json.loads((tmp / "report" / "report.json").read_text())
    assert model_id in json.dumps(report)
    return report


def in_model_time(q: pd.DataFrame, product: Any, seconds_per_unit: float) -> pd.DataFrame:
    origin = pd.Timestamp(product.manifest["time_origin"])
    return q.assign(t=(pd.to_datetime(q["time"], utc=True) - origin).dt.total_seconds() / seconds_per_unit)


# --- (a) Lorenz-63 from a Python file --------------------------------------------------------

LORENZ_POPULATION = {
    "model": "lorenz63",
    "name": "lorenz-varied",
    "typical": {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0, "z0": 25.46},
    "omega": {"sigma": 0.01, "rho": 0.01, "beta": 0.01, "z0": 0.01},
}


@pytest.fixture(scope="module")
def lorenz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """Lorenz-63 added with `twinloop models add` (checked), and a product of 4 patients."""
    tmp = tmp_path_factory.mktemp("lorenz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINLOOP_MODELS_DIR", str(tmp / "models"))
        source = tmp / "my_lorenz.py"
        source.write_text(LORENZ)
        assert "added model 'lorenz63'" in cli("models", "add", source)  # check_model runs inside
        (tmp / "population.yaml").write_text(yaml.safe_dump(LORENZ_POPULATION))
        observations = [
            {"name": f"obs_{c}", "observable": c, "schedule": {"every": 0.25}, "error": {"kind": "additive", "sd": 1.4}}
            for c in ("x", "y", "z")
        ]  # every component every 0.25 units with R = 2, as Sakov et al. (2012)
        spec = {"name": "lorenz-product", "model": "lorenz63", "population": "population.yaml", "n": 4, "seed": 5,
                "duration": 4.0, "resolution": 0.25, "observations": observations}  # fmt: skip
        product = generate(tmp, spec, "lorenz-product")
        yield tmp, product


def test_lorenz63_is_added_with_one_command_and_passes_its_contract(lorenz):
    tmp, product = lorenz
    assert sorted(p.name for p in (tmp / "models").iterdir()) == ["lorenz63.py"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINLOOP_MODELS_DIR", str(tmp / "models"))
        assert tl.models.source("lorenz63").kind == "directory"
    patients = product.table("patients")
    assert {"sigma", "rho", "beta"} <= set(patients.columns)
    assert np.all(patients["y0"] == -1.531)  # not in the population: the model default


# joint estimation of a Lorenz-63 twin is also in the default run of tests/test_twin_modes.py
@pytest.mark.parametrize("fit", [pytest.param(("rho",), marks=pytest.mark.slow), ()], ids=["joint", "state-only"])
def test_lorenz63_twin_syncs_and_forecasts_the_true_trajectory(lorenz, fit):
    tmp, product = lorenz
    truth_p = product.table("patients").iloc[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINLOOP_MODELS_DIR", str(tmp / "models"))
        model = tl.models.get("lorenz63")
        # the members start from a spread of initial states around the model's (the truth's z0 differs)
        y0 = np.array([1.509, -1.531, 25.46]) + 2.0 * np.random.default_rng(7).standard_normal((64, 3))
        if fit:  # joint: rho from the population, the states from the spread
            prior = tl.cohort.Population.from_dict(LORENZ_POPULATION)
            twin = twin_through("lorenz63", product, str(truth_p["subject_id"]), prior, None, fit=fit, y0=y0)
        else:  # state-only: the patient's parameters are known, its states are not
            known = truth_p[list(model.parameter_names)].to_numpy(dtype=float)
            twin = twin_through("lorenz63", product, str(truth_p["subject_id"]), None, None, fit=fit, y0=y0,
                                base=known)  # fmt: skip
        q = in_model_time(twin.forecast(hours=0.5).quantiles(), product, 3600.0)
    truth = lorenz_truth(truth_p, np.sort(q["t"].unique()))
    inside = []
    for j, c in enumerate(("x", "y", "z")):
        rows = q[q["variable"] == c].sort_values("t")
        reference = truth[:, j]
        inside.append((rows["q05"].to_numpy() - 1.0 <= reference) & (reference <= rows["q95"].to_numpy() + 1.0))
        assert abs(rows["q50"].iloc[0] - reference[0]) < 3.0, (c, rows["q50"].iloc[0], reference[0])
    assert np.mean(inside) >= 0.8


@pytest.mark.slow
def test_lorenz63_governance_report(lorenz):
    tmp, _ = lorenz
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINLOOP_MODELS_DIR", str(tmp / "models"))
        governance_report(tmp, tmp / "lorenz-product", "lorenz63")


# --- (b) an SIR epidemic from an SBML file ---------------------------------------------------


@pytest.fixture(scope="module")
def sir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any, str]]:
    """The SIR model imported with `twinloop models import` (checked), and a product of 4 patients
    from the population the parameter bounds give ("default")."""
    tmp = tmp_path_factory.mktemp("sir")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINLOOP_MODELS_DIR", str(tmp / "models"))
        (tmp / "sir.xml").write_text(SIR)
        assert "added model 'sir'" in cli("models", "import", tmp / "sir.xml", "--id", "sir")
        infected = next(o.name for o in tl.models.get("sir").observables if o.name.endswith("I"))
        error = {"kind": "combined", "sd": 2.0, "cv": 0.05}
        spec = {"name": "sir-product", "model": "sir", "population": "default", "n": 4, "seed": 2, "duration": 60.0,
                "resolution": 1.0, "observations": [{"name": "cases", "observable": infected,
                                                      "schedule": {"every": 3}, "error": error}]}  # fmt: skip
        product = generate(tmp, spec, "sir-product")
        yield tmp, product, infected


def test_sir_is_imported_with_one_command_stored_as_is_and_passes_its_contract(sir):
    tmp, product, _ = sir
    assert (tmp / "models" / "sir.xml").read_text() == SIR
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINLOOP_MODELS_DIR", str(tmp / "models"))
        model = tl.models.get("sir")
    assert model.time_unit == "d" and {"beta", "gamma"} <= set(model.parameter_names)
    assert len(product.table("patients")) == 4


def test_sir_twin_syncs_and_forecasts_the_true_epidemic(sir):
    tmp, product, infected = sir
    truth_p = product.table("patients").iloc[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINLOOP_MODELS_DIR", str(tmp / "models"))
        prior = tl.cohort.Population.default(tl.models.get("sir"))
        # SBML declares no observation noise: the user gives it for every observable the twin reports
        noise = {name: {"additive": 2.0, "proportional": 0.05} for name in tl.models.get("sir").observable_names}
        twin = twin_through("sir", product, str(truth_p["subject_id"]), prior, noise, fit=("beta", "gamma"))
        q = in_model_time(twin.forecast(hours=240.0).quantiles(), product, 86400.0)
    rows = q[q["variable"] == infected].sort_values("t")
    reference = sir_truth(truth_p, rows["t"].to_numpy())[:, 1]
    np.testing.assert_allclose(rows["q50"].to_numpy(), reference, rtol=0.25, atol=5.0)


@pytest.mark.slow
def test_sir_governance_report(sir):
    tmp, _, _ = sir
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINLOOP_MODELS_DIR", str(tmp / "models"))
        governance_report(tmp, tmp / "sir-product", "sir")
