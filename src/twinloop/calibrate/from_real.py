"""Synthetic cohorts from real data: fit a population, sample a new cohort, write it as a product.

``synthesize_from_real`` reads an observed cohort, fits its population
(:mod:`twinloop.calibrate.population_fit`), writes the fit as an artifact
(``fit/``: the fitted population as YAML, the posterior summary, the ELBO trace and
a visual predictive check) and generates a product from the fitted population
(``product/``), whose PROV graph names the fit, which names the data by content hash.
Only population-level quantities leave the fit; the synthetic patients are new draws.
"""

from __future__ import annotations

import itertools
import json
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from twinloop._atomic import write_atomic
from twinloop._provenance import Activity, Source
from twinloop.calibrate.observed import ObservedCohort, read_observed
from twinloop.calibrate.population_fit import FitSettings, PopulationFit, fit_population, single_group
from twinloop.cohort.population import Population
from twinloop.errors import InputError
from twinloop.models.registry import get as get_model
from twinloop.products.dataset import generate
from twinloop.products.spec import ProductSpec
from twinloop.simulate import simulate

DATA_FILES = ("patients.parquet", "observations.parquet", "doses.parquet")


@dataclass(frozen=True)
class FromReal:
    """What :func:`synthesize_from_real` wrote."""

    fit: Path
    product: Path
    summary: dict[str, Any]


def product_template(data: Path, spec: Path | None) -> dict[str, Any]:
    """The product spec (arms, observation protocol, outcomes) the synthetic cohort is written
    under: ``spec`` if given, else the spec recorded in ``data``'s manifest."""
    if spec is not None:
        return dict(ProductSpec.from_yaml(spec).raw)
    manifest = data / "manifest.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text()).get("spec")
        if isinstance(recorded, Mapping):
            return {k: v for k, v in recorded.items() if k != "population_hash"}
    raise InputError(
        f"'{data}' records no product spec; give --spec with the arms, observation protocol and outcomes "
        "the synthetic cohort should be written under (see examples/)."
    )


def synthesize_from_real(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    population: str | Path = "default",
    parameters: Sequence[str] | None = None,
    spec: str | Path | None = None,
    n: int | None = None,
    seed: int = 0,
    targets: Mapping[str, Mapping[str, float]] | None = None,
    population_draws: int = 20,
    settings: FitSettings | None = None,
    subjects: Sequence[str] | None = None,
    progress: bool = True,
) -> FromReal:
    """Fit the population of the cohort in ``data`` and write ``out/fit`` and ``out/product``.

    Arguments:
        model: the mechanistic core (a registry id).
        population: the base population (``"default"`` or a YAML file): its structure,
            covariate families and priors for the typical values.
        parameters: the parameters to fit (default: those with random effects).
        spec: product spec for the synthetic cohort (default: the one in ``data``'s manifest).
        n: patients in the synthetic cohort (default: as many as were fitted).
        targets: target shares of categorical covariates (reweighting).
        population_draws: the synthetic population mixes this many posterior draws (0: point estimate).
        subjects: fit only these subject ids (e.g. the training half).
    """
    data, out = Path(data), Path(out)
    settings = settings or FitSettings(seed=seed)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"'{out}' exists and is not empty; choose another --out or delete it.")
    core = get_model(model)
    base = Population.default(core) if str(population) == "default" else Population.from_yaml(population)
    _check_targets(base, targets)
    covariates = [c.name for c in single_group(base).covariates]
    observed = read_observed(data, core, covariates)
    if subjects is not None:
        observed = observed.subset(list(subjects))
    template = product_template(data, Path(spec) if spec is not None else None)
    activity = Activity(
        "fit-population",
        settings={**settings.to_dict(), "parameters": list(parameters or []), "subjects": len(observed.ids)},
        seeds={"seed": settings.seed},
        used=[
            *(Source.file(data / f, "data", "data-file") for f in DATA_FILES if (data / f).is_file()),
            Source.content("base-population", "population", base.name, base.to_dict()),
        ],
    )
    created = not out.exists()
    try:
        fit = fit_population(observed, base, parameters, settings, progress=progress)
        fitted = fit.population(draws=population_draws, targets=targets, seed=seed)
        fit_dir = write_fit(fit, fitted, observed, out / "fit", targets)
        activity.record(fit_dir, "population-fit")
        raw = {**template, "population": fitted.to_dict(), "condition": None, "seed": seed,
               "n": n or observed.n, "name": f"{template.get('name', 'cohort')}-from-real"}  # fmt: skip
        raw["chunk_size"] = min(int(raw.get("chunk_size", 500)), raw["n"])
        generate(ProductSpec.from_dict(raw), out / "product", progress=progress,
                 sources=[Source.artifact(fit_dir, "population-fit")])  # fmt: skip
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in ("fit", "product"):
                shutil.rmtree(out / child, ignore_errors=True)
        raise
    summary = json.loads((fit_dir / "fit.json").read_text())
    return FromReal(fit_dir, out / "product", summary)


def _check_targets(base: Population, targets: Mapping[str, Mapping[str, float]] | None) -> None:
    """Fail before any work if a target names no categorical covariate of the population."""
    if not targets:
        return
    kinds = {c.name: c.distribution for c in single_group(base).covariates}
    bad = {k: kinds.get(k, "absent") for k in targets if kinds.get(k) != "categorical"}
    if bad:
        raise InputError(
            f"Targets are shares of categorical covariates; {bad} are not (categorical covariates: "
            f"{sorted(k for k, v in kinds.items() if v == 'categorical')})."
        )


def write_fit(
    fit: PopulationFit,
    fitted: Population,
    observed: ObservedCohort,
    folder: Path,
    targets: Mapping[str, Mapping[str, float]] | None,
) -> Path:
    """``population.yaml``, ``fit.json``, ``fit.png`` and ``manifest.json`` of a population fit."""
    folder.mkdir(parents=True, exist_ok=False)
    population_text = yaml.safe_dump(_plain(fitted.to_dict()), sort_keys=False)
    write_atomic(folder / "population.yaml", lambda tmp: Path(tmp).write_text(population_text))
    check = predictive_check(fitted, observed)
    summary = {
        "model": fit.model.id,
        "base_population": fit.base.name,
        "fitted_parameters": list(fit.names),
        "data": fit.data_summary,
        "settings": fit.settings.to_dict(),
        "estimates": fit.summary(),
        "targets": {k: dict(v) for k, v in (targets or {}).items()},
        "predictive_check": check,
        "privacy": "Only population-level quantities are written; no individual estimate leaves the fit.",
    }
    write_atomic(folder / "fit.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2, default=float)))
    _figure(fit, check, folder / "fit.png")
    manifest = {
        "kind": "twinloop.population-fit",
        "model": fit.model.id,
        "population": {"name": fitted.name, "content_hash": fitted.content_hash()},
        "fitted_parameters": list(fit.names),
        "patients": observed.n,
        "observations": int(observed.values.size),
        "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
    }
    write_atomic(folder / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2)))
    return folder


def predictive_check(fitted: Population, observed: ObservedCohort, n: int = 500, seed: int = 1) -> dict[str, Any]:
    """A visual predictive check: 10/50/90th percentiles of the observations in time bins
    against those of new patients from the fitted population under the observed
    treatments (each simulated patient takes the inputs of an observed one)."""
    observable = max(set(observed.observables), key=observed.observables.count)
    rows = np.flatnonzero(np.asarray(observed.observables) == observable)
    times, values = observed.times[rows], observed.values[rows]
    edges = np.unique(np.quantile(times, np.linspace(0, 1, 7)))
    cohort = fitted.sample(n, seed=seed)
    rng = np.random.default_rng(seed)
    donors = rng.integers(0, observed.n, n)
    grid = observed.output_times
    index = observed.model.observable_names.index(observable)
    plans = [observed.inputs[d] for d in donors]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = simulate(observed.model, cohort.parameters, plans, times=grid, progress=False)
    simulated = traj.observables[:, :, index]
    sim_times = np.broadcast_to(grid, simulated.shape)
    bins = []
    for lo, hi in itertools.pairwise(edges):
        inside = (times >= lo) & (times <= hi)
        sim_inside = (sim_times >= lo) & (sim_times <= hi) & np.isfinite(simulated)
        if inside.sum() < 5:
            continue
        bins.append({
            "from": float(lo), "to": float(hi), "observations": int(inside.sum()),
            "observed": np.quantile(values[inside], [0.1, 0.5, 0.9]).tolist(),
            "simulated": np.quantile(simulated[sim_inside], [0.1, 0.5, 0.9]).tolist(),
        })  # fmt: skip
    return {"observable": observable, "bins": bins,
            "note": "simulated percentiles are of noise-free model outputs"}  # fmt: skip


def _figure(fit: PopulationFit, check: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(fit.losses)
    left.set(yscale="symlog", xlabel="SVI step", ylabel="negative ELBO", title="Optimization")
    mids = [(b["from"] + b["to"]) / 2 for b in check["bins"]]
    for k, style in enumerate(("--", "-", "--")):
        left_label = "observed" if k == 1 else None
        right.plot(mids, [b["observed"][k] for b in check["bins"]], "o" + style, color="black", label=left_label)
        right.plot(mids, [b["simulated"][k] for b in check["bins"]], style, color="tab:blue",
                   label="fitted population" if k == 1 else None)  # fmt: skip
    right.set(xlabel=f"time ({fit.model.time_unit})", ylabel=check["observable"],
              title="Predictive check: 10/50/90th percentiles")  # fmt: skip
    right.legend()
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _plain(value: Any) -> Any:
    """Plain YAML types (no numpy scalars)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value
