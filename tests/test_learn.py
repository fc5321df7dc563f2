"""AI components: a hybrid model whose learned closure recovers a missing mechanism and
beats the mechanistic core on held-out patients; predictors trained on synthetic data
and tested on a shifted real-like cohort (TSTR vs TRTR); surrogates; model cards."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import twinloop as tl
from twinloop.calibrate import GaussianPrior, NoiseModel, ParameterMap
from twinloop.cli.demo_learn import real_like
from twinloop.cohort import Population
from twinloop.cohort import sensitivity as sa
from twinloop.learn import ClosureTrainer, ModelCard, SeriesSet, Surrogate, map_estimates, tstr
from twinloop.learn.closures import get as get_closure
from twinloop.learn.predictor import product_features
from twinloop.models import check_model
from twinloop.products.dataset import Product, generate
from twinloop.products.spec import ProductSpec

SCANS = np.arange(0.0, 281.0, 42.0)  # baseline and a CT scan every 6 weeks for 40 weeks
SCAN_NOISE = NoiseModel(additive=1.0, proportional=0.05)
LAM = 0.006  # Claret et al. 2009 resistance rate (0.042 per week), per day


def _chemotherapy() -> tl.Inputs:
    plan = tl.Inputs()
    for cycle in range(6):
        plan = plan + tl.Inputs.infusion("infusion", 28.0 * cycle, 5.0, 765.0)
    return plan


@pytest.fixture(scope="module")
def resistance() -> dict:
    """Truth: Claret's model with resistance. Core: the same without it (lam at its floor)."""
    _, closure = get_closure("tgi-claret:resistance")
    model = tl.models.get("tgi-claret")
    pop = Population.default(model)
    cohort = pop.sample(36, seed=4)
    truth = np.stack([cohort.parameter(p) for p in model.parameter_names], axis=1)
    truth[:, model.parameter_names.index("lam")] = LAM
    plan = _chemotherapy()
    traj = tl.simulate(model, truth, plan, times=SCANS, progress=False)
    scans = SCAN_NOISE.sample(traj["sum_of_diameters"], np.random.default_rng(0))
    names = ("y0", "KL", "KD")
    prior = GaussianPrior.from_population(pop, names, n=4000, seed=1)
    base = model.default_parameters.copy()
    base[model.parameter_names.index("lam")] = 1e-5
    pmap = ParameterMap(model, names, base)
    train = SeriesSet("sum_of_diameters", SCANS, scans[:16], np.ones((16, SCANS.size), bool), plan)
    trainer = ClosureTrainer(model, closure, pmap, prior, noise=SCAN_NOISE, steps=200, learning_rate=0.05).fit(train)
    return {"model": model, "closure": closure, "trainer": trainer, "scans": scans, "plan": plan,
            "prior": prior, "base": base, "names": names}  # fmt: skip


def test_learned_closure_recovers_the_missing_resistance_term(resistance: dict) -> None:
    trainer, closure = resistance["trainer"], resistance["closure"]
    assert trainer.loss_history_[-1] < 0.2 * trainer.loss_history_[0]
    t = np.linspace(0.0, 280.0, 15)
    learned = np.asarray(closure.bounded(trainer.network_, (t / 365.0)[:, None]))
    true = 1.0 - np.exp(-LAM * t)  # the fraction of the kill Claret's resistance removes
    assert np.corrcoef(learned, true)[0, 1] > 0.9, learned
    assert learned[-1] - learned[0] > 0.25
    assert np.mean(np.abs(learned[5:] - true[5:])) < 0.2  # where drug has acted long enough to tell


@pytest.mark.slow  # about 50 s; `make test-all` runs it
def test_hybrid_forecasts_held_out_patients_better_than_the_core(resistance: dict) -> None:
    r = resistance
    early, held = 4, slice(16, 36)
    scans = r["scans"][held]
    series = SeriesSet("sum_of_diameters", SCANS[:early], scans[:, :early], np.ones((20, early), bool), r["plan"])
    errors = {}
    for name, model in (("core", r["model"]), ("hybrid", r["trainer"].model)):
        pmap = ParameterMap(model, r["names"], r["base"])
        theta = map_estimates(model, pmap, r["prior"], series, noise=SCAN_NOISE, steps=300)
        forecast = tl.simulate(model, pmap.full_batch(theta), r["plan"], times=SCANS, progress=False)
        residual = forecast["sum_of_diameters"][:, early:] - scans[:, early:]
        errors[name] = np.sqrt(np.mean(residual**2, axis=1))
    print({k: float(np.median(v)) for k, v in errors.items()})
    # measured: median 10.0 vs 11.1 mm, hybrid better for 14 of 20 patients (see the closing note of issue 5)
    assert np.median(errors["hybrid"]) < 0.95 * np.median(errors["core"]), errors
    assert np.mean(errors["hybrid"] < errors["core"]) >= 0.6


def test_hybrid_is_a_model_like_any_other(resistance: dict) -> None:
    hybrid = resistance["trainer"].model
    assert hybrid.id == "tgi-claret+resistance" and "+" in hybrid.version
    assert all(r.passed for r in check_model(hybrid, raise_on_failure=False))
    tl.models.register(f"{hybrid.id}-test", lambda: hybrid)
    assert tl.models.get(f"{hybrid.id}-test") is hybrid


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> tuple[Product, Product]:
    """A synthetic NSCLC product and a 'real-like' one: shifted population (weaker drug
    effect, larger and older patients, more men) and another protocol (scans every 8
    weeks +-10 days, 12 % measurement error)."""
    with open("examples/nsclc_two_schedules.yaml") as file:
        raw = yaml.safe_load(file)
    raw.update(n=1500, chunk_size=1500, seed=11)
    real = real_like(raw, 1500)
    root = tmp_path_factory.mktemp("tstr")
    generate(ProductSpec.from_dict(raw), root / "synthetic", progress=False)
    generate(ProductSpec.from_dict(real), root / "real", progress=False)
    return Product.open(root / "synthetic"), Product.open(root / "real")


def test_train_on_synthetic_test_on_real(products: tuple[Product, Product], tmp_path) -> None:
    synthetic, real = products
    s, r = product_features(synthetic), product_features(real)
    assert s["baseline_mm"].median() < r["baseline_mm"].median()  # the shift is real
    report = tstr(s, r, synthetic_manifest={"spec_hash": synthetic.manifest.get("spec_hash")}, seed=0)
    ts, tr = report["tstr"], report["trtr"]
    print({k: (report[k]["auroc"], report[k]["brier"]) for k in ("tstr", "trtr")})
    base_brier = ts["prevalence"] * (1 - ts["prevalence"])  # a constant predictor's Brier score
    for result in (ts, tr):
        assert result["auroc"] > 0.8 and result["brier"] < 0.8 * base_brier
        assert set(result["subgroups"]) == {"age_group=65+", "age_group=<65", "sex=female", "sex=male"}
        assert sum(result["subgroups"][f"sex={x}"]["n"] for x in ("female", "male")) == result["n"]
    assert ts["auroc"] > tr["auroc"] - 0.1  # synthetic training transfers to the shifted cohort
    card = ModelCard(
        name="responder-tstr", kind="gradient boosting (scikit-learn)",
        intended_use="Research: objective response from baseline and first-scan kinetics.",
        training_data=report["predictors"]["tstr"].training_,
        metrics={"auroc_real": ts["auroc"], "brier_real": ts["brier"], "auroc_trtr": tr["auroc"]},
        subgroup_metrics=ts["subgroups"],
        limitations=("Synthetic training data; validated on simulated real-like data only.",),
    )  # fmt: skip
    md, page = card.write(tmp_path / "card")
    assert "| auroc_real |" in md.read_text() and "sex=female" in page.read_text()


def test_surrogate_emulates_tumour_size_and_stands_in_for_sensitivity_analysis(tmp_path) -> None:
    model = tl.models.get("tgi-stein")
    prior = GaussianPrior.from_population(Population.default(model), ("y0", "g", "d"), n=4000, seed=1)
    pmap = ParameterMap(model, ("y0", "g", "d"), model.default_parameters)
    theta = prior.sample(3000, np.random.default_rng(0))
    times = np.array([0.0, 91.0, 182.0, 365.0])

    def run(th: np.ndarray) -> np.ndarray:
        return tl.simulate(model, pmap.full_batch(th), tl.Inputs(), times=times, progress=False)["sum_of_diameters"]

    outputs = np.log(run(theta)[:, 1:])
    sur = Surrogate(("y0", "g", "d"), ("log_sld_13w", "log_sld_26w", "log_sld_52w"), steps=1500).fit(theta, outputs)
    assert all(a["r2"] > 0.98 for a in sur.accuracy_.values()), sur.accuracy_
    assert sur.measure_speedup(run, theta) > 1.0
    with pytest.raises(tl.InputError, match=r"Surrogate\.fit needs"):
        Surrogate(("y0",), ("a",)).fit(theta, outputs)
    again = Surrogate.load(sur.save(tmp_path / "surrogate"))
    np.testing.assert_allclose(again.predict(theta[:50]), sur.predict(theta[:50]), rtol=1e-12)
    assert again.accuracy_ == sur.accuracy_

    # Sobol indices from the surrogate agree with the engine's, and carry its accuracy
    problem = sa.problem_from_population(Population.default(model), ["y0", "g", "d"])
    engine = sa.sobol(lambda p: np.log(sa.simulated_outcome(model, tl.Inputs(), times, "sum_of_diameters", "final")(p)),
                      problem, n=512, model=model, seed=4)  # fmt: skip
    emulated = sa.sobol(sa.emulated_outcome(sur, "log_sld_52w", model), problem, n=512, model=model, seed=4)
    assert engine.emulator is None and emulated.emulator["r2"] == sur.accuracy_["log_sld_52w"]["r2"]
    assert "held-out R2" in emulated.provenance()
    gap = (emulated.indices["ST"] - engine.indices["ST"]).abs()
    print(engine.indices["ST"].round(3).to_dict(), emulated.indices["ST"].round(3).to_dict())
    assert gap.max() < 0.05, gap


def test_nocturnal_hypoglycaemia_predictor_transfers_to_another_protocol(tmp_path) -> None:
    """T1D: CGM features up to midnight predict >= 15 min below 70 mg/dL in the next 6 h.
    Real-like: later, differently sized meals, 10 % more insulin per gram, another CGM
    sensor (Dexcom error model) and more missing readings."""
    from twinloop.learn.predictor import HYPO_FEATURES, product_hypo_features

    cgm = {"name": "cgm", "observable": "subcutaneous_glucose", "schedule": {"every": 5},
           "error": {"kind": "cgm", "sensor": "GuardianRT"}, "missing": {"mcar": 0.02}}  # fmt: skip
    synthetic = {"name": "t1d-night", "model": "t1d-uva-padova", "population": "default", "n": 600, "seed": 7,
                 "duration": 1800, "resolution": 5, "chunk_size": 600, "observations": [cgm],
                 "treatment": {"kind": "basal_bolus", "meals": [[420, 50], [720, 70], [1140, 80]]},
                 "outcomes": {"kind": "glycaemic", "observable": "plasma_glucose"}}  # fmt: skip
    later_meals = {"kind": "basal_bolus", "meals": [[450, 60], [750, 60], [1170, 90]], "carb_ratio_scale": 0.9}
    other_sensor = dict(cgm, error={"kind": "cgm", "sensor": "Dexcom"}, missing={"mcar": 0.05})
    real = dict(synthetic, name="t1d-night-real-like", seed=99, treatment=later_meals, observations=[other_sensor])
    for spec, folder in ((synthetic, "s"), (real, "r")):
        generate(ProductSpec.from_dict(spec), tmp_path / folder, progress=False)
    s = product_hypo_features(Product.open(tmp_path / "s"))
    r = product_hypo_features(Product.open(tmp_path / "r"))
    assert len(s) > 550 and 0.1 < s["label"].mean() < 0.9
    report = tstr(s, r, features=HYPO_FEATURES, seed=0)
    ts, tr = report["tstr"], report["trtr"]
    print({k: (report[k]["auroc"], report[k]["brier"]) for k in ("tstr", "trtr")})  # measured 0.871 / 0.892
    for result in (ts, tr):
        assert result["auroc"] > 0.78 and result["brier"] < 0.8 * ts["prevalence"] * (1 - ts["prevalence"])
        assert sum(v["n"] for k, v in result["subgroups"].items() if k.startswith("age_group")) == result["n"]
    assert ts["auroc"] > tr["auroc"] - 0.1
