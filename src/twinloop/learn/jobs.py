"""Training jobs described by YAML specs, each writing its artifacts with a manifest,
a model card and a figure: what ``twinloop learn ...`` and the demo run.

- ``train_posterior``: an amortized posterior (NPE), checked by SBC (rank histograms).
- ``train_surrogate``: a neural emulator of an observable at chosen times.
- ``train_closure``: a hybrid model's learned closure, from observed series (CSV).
- ``train_predictor``: a classifier on a synthetic product, tested on a real-like one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twinloop._atomic import write_atomic
from twinloop._paths import spec_path
from twinloop._provenance import Activity, Source, sha256_file
from twinloop.calibrate.amortized import AmortizedPosterior, NPESettings
from twinloop.calibrate.checks import sbc
from twinloop.calibrate.design import ObservationDesign
from twinloop.calibrate.noise import NoiseModel
from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import ParameterMap
from twinloop.errors import InputError
from twinloop.learn import figures
from twinloop.learn.card import ModelCard
from twinloop.learn.closures import get as get_closure
from twinloop.learn.job_spec import check_closure, check_posterior, check_surrogate
from twinloop.learn.predictor import TASKS, Predictor, evaluate, tstr
from twinloop.learn.series_csv import read_series
from twinloop.learn.surrogate import Surrogate
from twinloop.learn.ude import ClosureTrainer
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.models.registry import get as get_model
from twinloop.products.spec import population_from
from twinloop.products.treatments import build_plan, validate_treatment
from twinloop.simulate import COHORT_SOLVER, simulate


# --- spec helpers ----------------------------------------------------------
def _require(spec: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in spec:
        raise InputError(f"{where} needs '{key}'; it has {sorted(spec)}.")
    return spec[key]


def _times(raw: Any, where: str) -> tuple[float, ...]:
    """A list of times, or ``{start, stop, every}`` (stop included when on the grid)."""
    if isinstance(raw, Mapping):
        start, stop, every = (float(_require(raw, k, where)) for k in ("start", "stop", "every"))
        if every <= 0 or stop < start:
            raise InputError(f"{where} needs every > 0 and stop >= start; got {dict(raw)}.")
        return tuple(np.arange(start, stop + 1e-9, every).tolist())
    if isinstance(raw, list) and raw and all(isinstance(t, int | float) for t in raw):
        return tuple(float(t) for t in raw)
    raise InputError(f"{where} must be a list of numbers or {{start, stop, every}}; got {raw!r}.")


def _core(spec: Mapping[str, Any], where: str) -> tuple[Model, GaussianPrior, ParameterMap, Inputs]:
    """Model, prior (moment-matched to the population), parameter map and treatment plan."""
    model = get_model(_require(spec, "model", where))
    names = tuple(_require(spec, "parameters", where))
    unknown = [n for n in names if n not in model.parameter_names]
    if unknown:
        raise InputError(f"{where}.parameters {unknown} are not parameters of '{model.id}'.")
    population = population_from(spec.get("population", "default"), model.id)
    prior = GaussianPrior.from_population(population, names, n=4000, seed=int(spec.get("prior_seed", 1)))
    base = model.default_parameters.copy()
    for name, value in dict(spec.get("base") or {}).items():
        if name not in model.parameter_names:
            raise InputError(f"{where}.base names '{name}', which is not a parameter of '{model.id}'.")
        base[model.parameter_names.index(name)] = float(value)
    plan = Inputs()
    if spec.get("treatment"):
        items = validate_treatment(f"{where}.treatment", spec["treatment"], model)
        columns = model.param_map(base[:, None])
        plan = build_plan(items, columns, pd.DataFrame(index=[0]), float(spec.get("duration", 365.0)), model)
    return model, prior, ParameterMap(model, names, base), plan


def _activity(name: str, spec: Mapping[str, Any], *used: Source) -> Activity:
    """The PROV activity of a learn job: its spec (by value and hash) and its inputs."""
    spec_source = Source.content("specification", "learn-spec", str(spec.get("name", name)), dict(spec))
    return Activity(name, settings=dict(spec), seeds={"seed": spec.get("seed", 0)}, used=[spec_source, *used])


def _write_json(path: Path, payload: Any) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2, default=float)))


# --- amortized posterior ---------------------------------------------------
def train_posterior(spec: Mapping[str, Any], out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train an NPE, run SBC, write ``npe/``, ``sbc.json``, ``sbc.html`` and the model card."""
    spec = check_posterior(spec)
    activity = _activity("train-posterior", spec)
    model, prior, pmap, plan = _core(spec, "posterior spec")
    d = dict(_require(spec, "design", "posterior spec"))
    design = ObservationDesign(
        observable=_require(d, "observable", "design"),
        times=_times(_require(d, "times", "design"), "design.times"),
        jitter=float(d.get("jitter", 0.0)),
        missing=float(d.get("missing", 0.0)),
        resolution=float(d.get("resolution", 1.0)),
        noise=NoiseModel(**d["noise"]) if "noise" in d else None,
        inputs=plan,
    )
    settings = NPESettings(**dict(spec.get("settings") or {}))
    npe = AmortizedPosterior(model, pmap, prior, design, settings).fit()
    checks = dict(spec.get("checks") or {})
    calibration = sbc(npe, int(checks.get("sbc_simulations", 300)), int(checks.get("sbc_draws", 100)), seed=12345)
    out.mkdir(parents=True, exist_ok=True)
    npe.save(out / "npe")
    _write_json(out / "sbc.json", calibration.to_dict())
    figures.sbc_histogram(calibration).write_html(out / "sbc.html", include_plotlyjs=True)
    manifest = npe.manifest_
    card = ModelCard(
        name=str(spec.get("name", f"npe-{model.id}")),
        kind="amortized posterior: masked autoregressive flow (flowjax) with a visit-slot embedding",
        intended_use=(
            f"Posterior of {', '.join(prior.names)} for one patient of '{model.id}' observed as the design "
            "says (same observable, noise, treatment; times may be jittered, scans missing)."
        ),
        training_data={k: manifest[k] for k in ("model", "prior", "design", "simulation_budget", "seed")},
        metrics={
            **{f"sbc_ks_p[{k}]": v for k, v in calibration.ks_pvalues.items()},
            "final_validation_nll": manifest["final_validation_loss"],
            "epochs": manifest["epochs"],
        },
        limitations=(
            "Valid only inside the prior and the observation design it was trained for; check SBC after retraining.",
            "Compare against NUTS (C2ST) on representative patients before relying on it for decisions.",
        ),
    )
    card.write(out)
    summary = {"kind": "amortized-posterior", "estimator": "npe/manifest.json", "sbc": "sbc.json"}
    _write_json(out / "manifest.json", {**summary, "model": manifest["model"], "seed": manifest["seed"]})
    activity.record(out, "amortized-posterior")
    return {"kind": "amortized-posterior", "out": str(out), "sbc_ks_pvalues": calibration.ks_pvalues,
            "epochs": manifest["epochs"], "simulations": manifest["simulation_budget"]}  # fmt: skip


# --- surrogate -------------------------------------------------------------
def train_surrogate(spec: Mapping[str, Any], out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Simulate a cohort from the prior, fit a :class:`Surrogate`, save it with its accuracy."""
    spec = check_surrogate(spec)
    activity = _activity("train-surrogate", spec)
    model, prior, pmap, plan = _core(spec, "surrogate spec")
    observable = _require(spec, "observable", "surrogate spec")
    if observable not in model.observable_names:
        raise InputError(f"surrogate spec: '{observable}' is not an observable of '{model.id}'.")
    times = np.asarray(_times(_require(spec, "times", "surrogate spec"), "surrogate spec.times"))
    transform = spec.get("transform", "log")
    if transform not in ("log", "none"):
        raise InputError(f"surrogate spec.transform must be 'log' or 'none'; got {transform!r}.")
    n = int(spec.get("n_simulations", 4000))
    seed = int(spec.get("seed", 0))
    theta = prior.sample(n, np.random.default_rng(seed))
    grid = np.unique(np.r_[0.0, times])

    engine: list[dict[str, Any]] = []

    def run(th: np.ndarray) -> np.ndarray:
        traj = simulate(model, pmap.full_batch(th), plan, times=grid, progress=False, chunk_size=min(len(th), 4096),
                        settings=COHORT_SOLVER)  # fmt: skip
        engine.append({"path": traj.settings["path"], **traj.check})
        return traj[observable][:, np.searchsorted(grid, times)]

    raw = run(theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.log(raw) if transform == "log" else raw
    prefix = "log_" if transform == "log" else ""
    outputs = tuple(f"{prefix}{observable}_t{t:g}" for t in times)
    settings = {k: spec[k] for k in ("width", "depth", "steps", "learning_rate", "batch_size") if k in spec}
    sur = Surrogate(tuple(prior.names), outputs, seed=seed, **settings)
    training = {"model": {"id": model.id, "version": model.version}, "prior": prior.to_dict(),
                "parameters": {"names": list(pmap.names), "base": pmap.base.tolist()},
                "inputs": repr(plan), "observable": observable, "transform": transform, "seed": seed,
                "engine": engine[0]}  # fmt: skip
    sur.fit(theta, values, manifest=training)
    sur.measure_speedup(run, theta[: min(n, 2000)])
    sur.save(out)
    worst = min(a["r2"] for a in sur.accuracy_.values())
    card = ModelCard(
        name=str(spec.get("name", f"surrogate-{model.id}")),
        kind="neural surrogate: MLP (equinox + optax) from log-parameters to outputs",
        intended_use=f"Fast emulation of {observable} of '{model.id}' over its population, e.g. for sensitivity "
        "analysis; report the accuracy next to every result that uses it.",
        training_data=sur.training_,
        metrics={
            **{f"r2[{k}]": v["r2"] for k, v in sur.accuracy_.items()},
            **{f"max_abs_error[{k}]": v["max_abs_error"] for k, v in sur.accuracy_.items()},
            "speedup": sur.speedup_ or float("nan"),
        },
        limitations=("Trained on prior draws: do not extrapolate beyond the population it emulates.",),
    )
    card.write(out)
    activity.record(out, "surrogate")
    return {"kind": "surrogate", "out": str(out), "min_r2": worst, "speedup": sur.speedup_, "outputs": list(outputs)}


# --- closure ----------------------------------------------------------------
def save_hybrid(trainer: ClosureTrainer, key: str, out: Path, extra: Mapping[str, Any]) -> Path:
    """Write the closure network and the manifest that rebuilds the hybrid model."""
    import equinox as eqx

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "closure.eqx", lambda tmp: eqx.tree_serialise_leaves(tmp, trainer.network_))
    model = trainer.model
    manifest = {
        "kind": "hybrid-model",
        "closure": key,
        "core": {"id": trainer.core.id, "version": trainer.core.version},
        "hybrid": {"id": model.id, "version": model.version},
        "digest": trainer.digest(),
        "files": ["closure.eqx"],
        **extra,
    }
    _write_json(out / "manifest.json", manifest)
    return out


def load_hybrid(path: str | Path) -> Model:
    """Rebuild a saved hybrid model (its closure is looked up in the closure registry)."""
    import equinox as eqx
    import jax

    from twinloop.learn.closure import hybrid_model

    folder = Path(path)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("kind") != "hybrid-model":
        raise InputError(f"{folder} does not hold a hybrid model (manifest kind {manifest.get('kind')!r}).")
    core_id, closure = get_closure(manifest["closure"])
    core = get_model(core_id)
    if core.version != manifest["core"]["version"]:
        raise InputError(
            f"{folder} was trained on {core_id} {manifest['core']['version']}; the core is {core.version}."
        )
    network = eqx.tree_deserialise_leaves(folder / "closure.eqx", closure.network(jax.random.key(0)))
    model = hybrid_model(core, closure, network)
    if model.version != manifest["hybrid"]["version"]:
        raise InputError(f"{folder}: the rebuilt weights do not match the saved digest ({manifest['digest']}).")
    return model


def train_closure(
    spec: Mapping[str, Any], out: Path, *, base_dir: Path = Path("."), progress: bool = True
) -> dict[str, Any]:
    """Train a registered closure on observed series; write the hybrid model, a plot and a card."""
    spec = check_closure(spec)
    key = _require(spec, "closure", "closure spec")
    core_id, closure = get_closure(key)
    model, prior, pmap, plan = _core({**spec, "model": core_id}, "closure spec")
    observable = spec.get("observable", model.observables[0].name)
    data = spec_path(base_dir, _require(spec, "data", "closure spec"), "closure spec.data")
    series, subjects = read_series(data, observable, plan)
    activity = _activity("train-closure", spec, Source.file(data, "training data", "dataset"))
    noise = NoiseModel(**spec["noise"]) if "noise" in spec else None
    trainer = ClosureTrainer(
        model, closure, pmap, prior, noise=noise, steps=int(spec.get("steps", 300)),
        learning_rate=float(spec.get("learning_rate", 0.05)), seed=int(spec.get("seed", 0)),
    )  # fmt: skip
    trainer.fit(series, progress=progress)
    history = trainer.loss_history_
    data_record = {"path": str(data), "sha256": sha256_file(data), "subjects": len(subjects)}
    extra = {"data": data_record,
             "parameters": {"names": list(pmap.names), "base": pmap.base.tolist()}, "prior": prior.to_dict(),
             "inputs": repr(plan), "steps": trainer.steps, "learning_rate": trainer.learning_rate,
             "loss": {"first": history[0], "last": history[-1]}}  # fmt: skip
    save_hybrid(trainer, key, out, extra)
    figures.closure_curve(closure, trainer.network_, float(series.times.max()), truth=None).write_html(
        out / "closure.html", include_plotlyjs=True
    )
    card = ModelCard(
        name=str(spec.get("name", trainer.model.id)),
        kind=f"hybrid model: {core_id} + learned closure '{closure.name}' (universal differential equation)",
        intended_use=f"{closure.description}; trained through the ODE solver on {len(subjects)} patients' series.",
        training_data=data_record,
        metrics={"loss_first": history[0], "loss_last": history[-1], "steps": len(history)},
        limitations=(
            f"The closure only sees {', '.join(f.name for f in closure.features)}; "
            "outside the training window its output is an extrapolation.",
        ),
    )
    card.write(out)
    activity.record(out, "hybrid-model")
    return {"kind": "hybrid-model", "out": str(out), "model": trainer.model.id, "version": trainer.model.version,
            "loss_first": history[0], "loss_last": history[-1], "subjects": len(subjects)}  # fmt: skip


# --- predictor ----------------------------------------------------------------
def train_predictor(
    synthetic: Path, out: Path, *, real: Path | None = None, task: str = "responder", seed: int = 0
) -> dict[str, Any]:
    """Train on a synthetic product; with ``real``, TSTR against TRTR on its held-out half."""
    from twinloop.learn.predictor_file import FILE as PREDICTOR_FILE
    from twinloop.learn.predictor_file import save_predictor
    from twinloop.products.checked import open_product

    if task not in TASKS:
        raise InputError(f"--task is {task!r}; expected one of {', '.join(sorted(TASKS))}. Choose one of them.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise InputError(f"--seed is {seed!r}; expected a whole number from 0 to {2**32 - 1}. Choose another seed.")
    features_of, columns = TASKS[task]
    product = task_product(open_product(synthetic, "SYNTHETIC"), task, "SYNTHETIC")
    real_product = task_product(open_product(real, "--real"), task, "--real") if real is not None else None
    used = [Source.artifact(synthetic, "training data")] + ([Source.artifact(real, "evaluation data")] if real else [])
    activity = Activity("train-predictor", settings={"task": task}, seeds={"seed": seed}, used=used)
    s = features_of(product)
    manifest = {
        "path": str(synthetic),
        "name": product.manifest["name"],
        "spec_hash": product.manifest.get("spec_hash"),
    }
    out.mkdir(parents=True, exist_ok=True)
    if real is not None and real_product is not None:
        r = features_of(real_product)
        real_manifest = {"path": str(real), "name": real_product.manifest["name"]}
        report = tstr(s, r, features=columns, synthetic_manifest=manifest, real_manifest=real_manifest, seed=seed)
        predictor: Predictor = report["predictors"]["tstr"]
        result, reference = report["tstr"], report["trtr"]
        metrics = {
            "auroc_real": result["auroc"], "auroc_real_ci95": list(result["auroc_ci95"]), "brier_real": result["brier"],
            "auroc_trtr": reference["auroc"], "brier_trtr": reference["brier"],
        }  # fmt: skip
        payload = {k: v for k, v in report.items() if k != "predictors"}
    else:
        predictor = Predictor(features=columns, seed=seed).fit(s, manifest=manifest)
        result = evaluate(s["label"].to_numpy(), predictor.predict_proba(s), s[["age_group", "sex"]], seed=seed)
        reference = None
        metrics = {"auroc_train": result["auroc"], "brier_train": result["brier"]}
        payload = {"train": result}
    digest = save_predictor(predictor, out)
    _write_json(out / "report.json", {"task": task, **payload})
    _write_json(out / "manifest.json", {"kind": "predictor", "task": task, "training": predictor.training_,
                                        "files": [PREDICTOR_FILE, "report.json"],
                                        "sha256": {PREDICTOR_FILE: digest}})  # fmt: skip
    title = "Reliability on held-out real-like patients" if real is not None else "Reliability on the training data"
    figures.reliability(result, reference, title).write_html(out / "reliability.html", include_plotlyjs=True)
    ModelCard(
        name=f"{task}-predictor",
        kind=f"{predictor.training_['estimator']} (scikit-learn) on {len(columns)} features",
        intended_use=TASKS_USE[task],
        training_data=predictor.training_,
        metrics=metrics,
        subgroup_metrics=result["subgroups"],
        limitations=(
            "Trained on synthetic patients; its transfer was measured on real-like (simulated, shifted) data only."
            if real is not None
            else "Evaluated on its own training data only: give --real to measure transfer (TSTR).",
        ),
    ).write(out)
    activity.record(out, "predictor")
    return {"kind": "predictor", "out": str(out), "task": task, **metrics}


TASK_OBSERVABLES = {"responder": "sum_of_diameters", "nocturnal-hypo": "subcutaneous_glucose"}


def task_product(product: Any, task: str, field: str) -> Any:
    """``product`` if its model observes what ``task`` is computed from; else :class:`InputError`."""
    model = get_model(product.manifest["model"]["id"])
    needed = TASK_OBSERVABLES[task]
    if needed not in model.observable_names:
        fits = [t for t, v in TASK_OBSERVABLES.items() if v in model.observable_names]
        hint = f"use --task {fits[0]}" if fits else "give a product of a model that has it"
        raise InputError(
            f"{field} '{product.path}' is a product of '{model.id}', which has no '{needed}' observable; "
            f"--task {task} needs one. {hint[0].upper()}{hint[1:]}."
        )
    return product


TASKS_USE = {
    "responder": "Research: objective response (RECIST) from baseline and first-scan tumour kinetics.",
    "nocturnal-hypo": "Research: hypoglycaemia (< 70 mg/dL) in the 6 h after midnight from the day's CGM.",
}
