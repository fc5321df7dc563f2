"""Governance: PROV graphs and lineage, RO-Crate, privacy (leaky baseline), drift, credibility, verification."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prov.model import ProvDocument
from typer.testing import CliRunner

from twinloop._provenance import read
from twinloop._provenance import sha256_file as file_hash
from twinloop.calibrate.from_real import synthesize_from_real
from twinloop.calibrate.population_fit import FitSettings
from twinloop.cli.app import app
from twinloop.cohort.spec import load_yaml
from twinloop.errors import InputError
from twinloop.govern import credibility, verification
from twinloop.govern.drift import drift, drift_over_windows, psi
from twinloop.govern.lineage import walk
from twinloop.govern.privacy import leaky_copy, privacy_report, split_halves
from twinloop.govern.records import subject_records
from twinloop.learn.jobs import train_predictor
from twinloop.products.dataset import Product, generate
from twinloop.products.spec import ProductSpec

runner = CliRunner()
EXAMPLE = Path(__file__).parents[1] / "examples" / "nsclc_two_schedules.yaml"


def nsclc(n: int, seed: int, name: str) -> ProductSpec:
    raw = load_yaml(EXAMPLE)
    return ProductSpec.from_dict({**raw, "name": name, "n": n, "seed": seed, "chunk_size": n})


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two independent NSCLC products: 'real' patients and a mechanistic synthetic cohort."""
    root = tmp_path_factory.mktemp("govern")
    out = {"real": root / "real", "synthetic": root / "synthetic"}
    generate(nsclc(600, 1, "real-like"), out["real"], progress=False)
    generate(nsclc(600, 2, "synthetic"), out["synthetic"], progress=False)
    return out


def test_prov_graphs_round_trip_and_lineage_walks_back_to_the_sources(products: dict[str, Path], tmp_path: Path):
    predictor = tmp_path / "predictor"
    train_predictor(products["synthetic"], predictor, real=products["real"])
    for artifact in (products["real"], predictor):
        doc = read(artifact)
        text = doc.serialize(format="json")
        assert ProvDocument.deserialize(content=text, format="json") == doc  # PROV-JSON validates and round-trips
    tree = walk(predictor, [products["real"].parent, tmp_path])
    assert tree.kind == "predictor" and tree.activity["type"] == "train-predictor"
    inputs = {n.role: n for n in tree.inputs}
    assert set(inputs) == {"training data", "evaluation data"}
    product = inputs["training data"]
    assert product.kind == "product" and product.activity["seeds"]["seed"] == 2
    sources = {n.role: n for n in product.inputs}
    assert {"model", "population", "specification"} <= set(sources)
    manifest = json.loads((products["synthetic"] / "manifest.json").read_text())
    assert sources["model"].id == f"urn:sha256:{manifest['model']['content_hash']}"
    assert sources["specification"].id == f"urn:sha256:{manifest['spec_hash']}"
    # every file of the product is a member of its entity, by content hash
    members = {str(r.identifier.uri) for r in read(products["synthetic"]).get_records() if "file" in str(r)}
    assert {f"urn:sha256:{v['sha256']}" for v in manifest["files"].values()} <= members
    shown = runner.invoke(app, ["lineage", str(predictor), "--search", str(products["real"].parent)])
    assert shown.exit_code == 0 and "train-predictor" in shown.output and "generate-product" in shown.output
    # a product packaged as an RO-Crate that ro-crate-py reads back
    crate = runner.invoke(app, ["govern", "crate", str(products["real"]), "--out", str(tmp_path / "crate")])
    assert crate.exit_code == 0, crate.output
    from rocrate.rocrate import ROCrate

    ids = {e.id for e in ROCrate(tmp_path / "crate").data_entities}
    assert {"observations.parquet", "manifest.json", "prov.json"} <= ids
    again = runner.invoke(app, ["govern", "crate", str(products["real"]), "--out", str(tmp_path / "crate")])
    assert again.exit_code == 2 and "already exists" in again.output


PRIVACY_OPTIONS = {"quasi_identifiers": ["age", "sex", "weight"], "secrets": ["best_change_pct", "pfs_days"]}


def assert_flagged(leaky: dict) -> None:
    """A leaky copy's risks are at least 0.2, with 0.2 inside or below their 95 % intervals."""
    an_leaky = leaky["anonymeter"]
    assert an_leaky["linkability"]["risk"] >= 0.2 and an_leaky["linkability"]["ci95"][0] >= 0.2
    worst = max(an_leaky["inference"].values(), key=lambda v: v["risk"])
    assert worst["risk"] >= 0.2 and worst["ci95"][0] >= 0.2
    assert leaky["dcr"]["share_closer_to_train"] > 0.9 and leaky["dcr"]["share_below_holdout_p05"] > 0.5


def assert_private(safe: dict) -> None:
    """A cohort with no tie to the training rows: linkability (a precise estimate) at most
    0.05; inference and singling out are noisy at 300 attacks (such cohorts score 0 to 0.2),
    so their 95 % intervals must reach down to 0.05: no evidence of a risk above it."""
    an_safe = safe["anonymeter"]
    assert an_safe["linkability"]["risk"] <= 0.05
    assert all(v["ci95"][0] <= 0.05 for v in an_safe["inference"].values())
    assert an_safe["singling_out"]["risk"] <= 0.1 and an_safe["singling_out"]["ci95"][0] <= 0.05
    assert 0.4 <= safe["dcr"]["share_closer_to_train"] <= 0.6


def test_a_leaky_copy_is_flagged_while_an_independent_cohort_stays_private(products: dict[str, Path]):
    """The fast variant of the test below: the private cohort is drawn independently from the
    mechanistic generator (another seed) instead of from a population fitted to the data."""
    real = subject_records(Product.open(products["real"]))
    train, holdout = split_halves(real, seed=0)
    options = {**PRIVACY_OPTIONS, "train": train, "holdout": holdout, "n_attacks": len(train)}
    assert_flagged(privacy_report(real, leaky_copy(train, noise=0.01, seed=1), **options))
    assert_private(privacy_report(real, subject_records(Product.open(products["synthetic"])), **options))


@pytest.mark.slow  # the population fit and the cohort drawn from it take about two minutes
def test_a_leaky_baseline_is_flagged_while_a_cohort_from_the_fitted_population_stays_private(
    products: dict[str, Path], tmp_path: Path
):
    """Fit the population on the training half of the real-like cohort, sample a new cohort
    from it, and compare both it and a leaky copy of the training rows against the halves."""
    real = subject_records(Product.open(products["real"]))
    train, holdout = split_halves(real, seed=0)
    result = synthesize_from_real(
        products["real"], tmp_path / "from-real", model="tgi-claret", parameters=["y0", "KL", "KD", "lam"],
        subjects=list(train.index), n=len(train), seed=3, settings=FitSettings(steps=200, seed=3), progress=False,
    )  # fmt: skip
    # the fit recovers what the data identify: baseline size, growth rate and residual error
    truth = Product.open(products["real"]).table("patients").set_index("subject_id").loc[train.index]
    typical = result.summary["estimates"]["typical"]
    assert typical["y0"]["median"] == pytest.approx(np.exp(np.log(truth["y0"]).mean()), rel=0.1)
    assert typical["KL"]["median"] == pytest.approx(np.exp(np.log(truth["KL"]).mean()), rel=0.35)
    assert result.summary["estimates"]["omega_variance"]["y0"]["median"] == pytest.approx(
        np.log(truth["y0"]).var(), rel=0.35
    )
    residual = result.summary["estimates"]["residual_error"]["sum_of_diameters"]["proportional"]["median"]
    assert 0.03 < residual < 0.1  # the example's protocol: cv 0.05
    # lineage: synthetic product -> population fit -> the real data files, by content hash
    tree = walk(result.product, [tmp_path / "from-real", products["real"].parent])
    fit = next(n for n in tree.inputs if n.role == "population-fit")
    assert fit.kind == "population-fit" and {"data", "base-population"} <= {n.role for n in fit.inputs}
    assert f"urn:sha256:{file_hash(products['real'] / 'observations.parquet')}" in {n.id for n in fit.inputs}
    synthetic = subject_records(Product.open(result.product))
    copied = synthetic[["age", "weight"]].round(6).merge(train[["age", "weight"]].round(6))
    assert copied.empty  # new patients: no training row's covariates reappear
    options = {**PRIVACY_OPTIONS, "train": train, "holdout": holdout, "n_attacks": len(train)}
    assert_flagged(privacy_report(real, leaky_copy(train, noise=0.01, seed=1), **options))
    assert_private(privacy_report(real, synthetic, **options))


def test_privacy_command_reports_the_risks(products: dict[str, Path], tmp_path: Path):
    result = runner.invoke(app, ["govern", "privacy", str(products["real"]), str(products["synthetic"]),
                                 "--n-attacks", "100", "--out", str(tmp_path / "privacy.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "privacy.json").read_text())
    assert {"dcr", "anonymeter", "max_risk"} <= set(saved) and "linkability" in result.output
    drifted = runner.invoke(app, ["govern", "drift", str(products["real"]), str(products["synthetic"])])
    assert drifted.exit_code == 0 and "PSI" in drifted.output
    bad = runner.invoke(app, ["govern", "drift", str(tmp_path), str(products["synthetic"])])
    assert bad.exit_code == 2 and "manifest.json" in bad.output


def test_psi_and_ks_detect_a_shift_and_stay_quiet_without_one():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 4000), "sex": rng.choice(["f", "m"], 4000)})
    same = pd.DataFrame({"x": rng.normal(0, 1, 4000), "sex": rng.choice(["f", "m"], 4000)})
    shifted = pd.DataFrame({"x": rng.normal(1.0, 1, 4000), "sex": rng.choice(["f", "m"], 4000, p=[0.8, 0.2])})
    assert psi(reference["x"], same["x"]) < 0.02
    result = drift(reference, shifted)
    assert result["features"]["x"]["level"] == "major" and result["features"]["x"]["ks"] > 0.3
    assert result["features"]["sex"]["psi"] > 0.25 and set(result["shifted"]) == {"x", "sex"}
    # one quiet week, then a shifted one
    stream = pd.concat([same.iloc[:500], shifted.iloc[:500]], ignore_index=True)
    stream["at"] = pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(np.r_[np.zeros(500), np.full(500, 7)], "D")
    windows = drift_over_windows(reference, stream, "at", freq="W")
    assert [w["shifted"] for w in windows] == [[], ["x", "sex"]]


def test_credibility_follows_the_vv40_risk_matrix():
    assert credibility.model_risk("low", "low") == 1 and credibility.model_risk("high", "high") == 5
    assert credibility.model_risk("medium", "high") == 4
    with pytest.raises(InputError, match="model_influence must be one of"):
        credibility.model_risk("huge", "low")
    evidence = {"code_verification": "ok", "model_contract": "ok"}
    low = credibility.assess(credibility.ContextOfUse("q", "research", "low", "low"), evidence)
    assert low["gaps"] == [] and "meets" in low["verdict"]
    high = credibility.assess(credibility.ContextOfUse("q", "dosing", "high", "high"), {"code_verification": "ok"})
    keys = {r["key"] for r in high["checklist"] if r["status"] == "missing"}
    assert {"clinical_validation", "independent_review", "privacy"} <= keys and "code_verification" not in keys


def test_solvers_converge_at_their_order_and_a_bolus_keeps_its_mass():
    orders = verification.convergence_order()
    for solver, result in orders.items():
        assert result["passed"], (solver, result["observed_order"])
    assert verification.mass_balance()["max_relative_imbalance"] < 1e-6
