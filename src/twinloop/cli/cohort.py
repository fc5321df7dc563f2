"""``twinloop cohort ...`` and ``twinloop lineage``: generate, describe and trace
synthetic data products."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import pandas as pd

cohort_app = typer.Typer(help="Generate and describe synthetic cohorts and data products.", no_args_is_help=True)
console = Console()
LONG_RUN_S = 10.0
"""Runs predicted to take longer print their estimate first."""


@cohort_app.command("generate")
def generate(
    spec: Annotated[Path, typer.Argument(help="product spec (YAML), see examples/")],
    out: Annotated[Path, typer.Option("--out", help="directory to write the product into")],
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run in --out")] = False,
    csv: Annotated[bool, typer.Option("--csv", help="also write every table as CSV")] = False,
    n: Annotated[int | None, typer.Option("--n", help="override the number of patients")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override the seed")] = None,
    max_chunks: Annotated[int | None, typer.Option("--max-chunks", help="stop after this many chunks")] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="local worker processes, one core each (default: one per core for big runs)"),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="run the chunks on the Dask cluster at this address (tcp://...)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the predicted wall time, memory and size; write nothing")
    ] = False,
) -> None:
    """Generate a product (patients, observations, outcomes, doses, manifest) from a spec.

    Before a long run (predicted over 10 s) the estimate from the cost model calibrated on
    this machine is printed; afterwards, predicted against actual. A small run of a model
    not yet calibrated here is not estimated (--dry-run calibrates it)."""
    import math

    from twinloop.errors import InputError
    from twinloop.products.dataset import check_out_dir
    from twinloop.products.dataset import generate as run
    from twinloop.products.spec import ProductSpec
    from twinloop.scale import check_scheduler, check_workers, default_workers, open_runner

    if workers is not None:
        check_workers(workers)
    if scheduler is not None:
        check_scheduler(scheduler)
    if max_chunks is not None and max_chunks < 1:
        raise InputError(f"--max-chunks must be >= 1 (chunks to process in this call); got {max_chunks}.")
    if n is not None and n < 1:
        raise InputError(f"--n must be >= 1 (the number of patients); got {n}.")
    if seed is not None and seed < 0:
        raise InputError(f"--seed must be >= 0; got {seed}.")
    parsed = ProductSpec.from_yaml(spec)
    overrides = {k: v for k, v in {"n": n, "seed": seed}.items() if v is not None}
    if overrides:
        parsed = ProductSpec.from_dict(
            {**parsed.raw, "population": parsed.population.to_dict(), "condition": None, **overrides}
        )
    from twinloop.products import envelope as cost

    chunks = math.ceil(parsed.n / parsed.chunk_size)
    estimate = cost.estimate(parsed) if dry_run or cost.worth_estimating(parsed) else None
    if workers is None and scheduler is None:
        predicted = estimate.wall_s if estimate is not None else None
        workers = default_workers(min(chunks, max_chunks or chunks), parsed.n, predicted_wall_s=predicted)
    if estimate is not None and (workers or 1) > 1:
        estimate = cost.estimate(parsed, workers=workers or 1)
    if estimate is not None and (dry_run or estimate.wall_s > LONG_RUN_S):
        console.print(estimate.render(), markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        return
    whole = not resume and max_chunks is None  # one call does the whole run: its time is comparable
    envelope = estimate.to_dict() if estimate is not None and whole and scheduler is None else None
    check_out_dir(out, "--out")  # before a cluster starts
    with open_runner(workers, scheduler) as runner:
        if runner.where != "in this process":  # a cluster takes seconds to start: say so before the first chunk
            console.print(f"chunks run {runner.where}", markup=False, highlight=False)
        options: dict[str, Any] = {"resume": resume, "csv": csv, "max_chunks": max_chunks, "runner": runner,
                                   "envelope": envelope}  # fmt: skip
        if parsed.control:  # closed-loop arms: the controllers plan them
            from twinloop.control.product import generate_product

            result = generate_product(parsed, out, **options)
        else:
            result = run(parsed, out, **options)
        where = f"chunks ran {runner.where}"
    if result.complete:
        console.print(f"wrote {parsed.n} patients of '{parsed.name}' to {out} ({where})", markup=False, highlight=False)
        if envelope is not None:
            console.print(_predicted_vs_actual(out, parsed), markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(
            f"{result.chunks_done} of {result.chunks_total} chunks done in {out}; continue with --resume",
            markup=False,
            highlight=False,
        )


def _predicted_vs_actual(out: Path, spec: Any) -> str:
    """One line of predicted against actual, after recording the run in the cost model."""
    from twinloop.products import envelope as cost
    from twinloop.products.dataset import Product
    from twinloop.products.limits import size_text

    manifest = Product.open(out).manifest
    env = manifest["envelope"]
    cost.record(manifest, spec, out)
    return (
        f"predicted {env['predicted_wall_s']:.1f} s, {size_text(env['predicted_peak_rss_bytes'])} peak; "
        f"actual {env['actual_wall_s']:.1f} s, {size_text(env['actual_peak_rss_bytes'])} peak"
    )


@cohort_app.command("describe")
def describe(product: Annotated[Path, typer.Argument(help="a product directory")]) -> None:
    """Summarise a product: counts, acceptance, covariate and outcome distributions."""

    summary = summarize(product)
    console.print(
        Text.assemble((str(summary["name"]), "bold"), f"  model {summary['model']}, population {summary['population']}")
    )
    console.print(
        f"{summary['patients']} patients in arms {summary['arms']}; {summary['observations']} observations "
        f"({summary['variables']}); acceptance rate {summary['acceptance_rate']:.1%}; "
        f"{summary['simulation_failures']} simulation failures",
        markup=False,
    )
    for title, rows in (("Covariates", summary["covariates"]), ("Outcomes", summary["outcomes"])):
        table = Table(title=title)
        for col in ("name", "summary"):
            table.add_column(col, no_wrap=col == "name")
        for name, text in rows.items():
            table.add_row(Text(str(name)), Text(text))
        console.print(table)


def _numeric_summary(series: pd.Series) -> str:
    import numpy as np

    q = np.nanpercentile(series.to_numpy(dtype=np.float64), [5, 50, 95])
    return f"median {q[1]:.4g} (5-95 %: {q[0]:.4g} - {q[2]:.4g})"


def _describe_column(series: pd.Series) -> str:
    import pandas as pd

    if series.dtype == bool or not pd.api.types.is_numeric_dtype(series):
        shares = series.astype(str).value_counts(normalize=True).head(6)
        return ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
    return _numeric_summary(series)


def summarize(path: Path) -> dict[str, Any]:
    """The numbers ``describe`` prints, as a mapping."""
    from twinloop.errors import InputError
    from twinloop.models.registry import get
    from twinloop.products.dataset import Product

    product = Product.open(path)
    manifest = product.manifest
    model = get(manifest["model"]["id"])
    patients = product.table("patients")
    outcomes = product.table("outcomes")
    observations = product.table("observations", columns=["variable"])
    altered = product.verify()  # the tables are the ones written with the manifest, so any error below is a bug
    if altered:
        raise InputError(
            f"Product '{path}': {', '.join(altered)} are missing or differ from its manifest (changed since the "
            "product was written); generate it again."
        )
    return _summary(manifest, model, patients, outcomes, observations)


def _summary(
    manifest: dict[str, Any], model: Any, patients: pd.DataFrame, outcomes: pd.DataFrame, observations: pd.DataFrame
) -> dict[str, Any]:
    variables = observations["variable"].astype(str).value_counts()
    skip = set(model.parameter_names) | {"subject_id", "chunk", "simulation_failed"}
    acceptance = manifest.get("acceptance", {})
    return {
        "name": manifest["name"],
        "model": f"{model.id} {model.version}",
        "population": manifest["population"]["name"],
        "patients": len(patients),
        "arms": patients["arm"].value_counts().to_dict(),
        "observations": manifest["files"]["observations.parquet"]["rows"],
        "variables": ", ".join(f"{k}: {v}" for k, v in variables.items()),
        "acceptance_rate": float(acceptance.get("rate", float("nan"))),
        "simulation_failures": manifest.get("simulation_failures", 0),
        "covariates": {c: _describe_column(patients[c]) for c in patients.columns if c not in skip},
        "outcomes": {c: _describe_column(outcomes[c]) for c in outcomes.columns if c not in ("subject_id",)},
    }


@cohort_app.command("fhir")
def fhir(
    product: Annotated[Path, typer.Argument(help="a product directory")],
    out: Annotated[Path, typer.Option("--out", help="directory for one Bundle JSON per patient")],
    limit: Annotated[int | None, typer.Option("--limit", help="only the first N patients")] = None,
) -> None:
    """Export FHIR R4 bundles (validated with fhir.resources)."""
    from twinloop.products.fhir import export

    written = export(product, out, limit=limit)
    console.print(f"wrote {len(written)} FHIR bundles to {out}", markup=False, highlight=False)


def parse_targets(raw: list[str] | None) -> dict[str, dict[str, float]]:
    """``["sex=female:0.5,male:0.5"]`` -> ``{"sex": {"female": 0.5, "male": 0.5}}``."""
    from twinloop.errors import InputError

    targets: dict[str, dict[str, float]] = {}
    for item in raw or []:
        name, _, shares = item.partition("=")
        try:
            targets[name.strip()] = {
                level.strip(): float(share) for level, share in (pair.split(":") for pair in shares.split(","))
            }
        except ValueError:
            raise InputError(
                f"--target {item!r}: write COVARIATE=LEVEL:SHARE,LEVEL:SHARE, e.g. sex=female:0.5,male:0.5."
            ) from None
    return targets


@cohort_app.command("from-real")
def from_real(
    data: Annotated[Path, typer.Argument(help="folder with patients.parquet, observations.parquet (, doses.parquet)")],
    model: Annotated[str, typer.Option("--model", help="the mechanistic core: a model id (see `twinloop models`)")],
    out: Annotated[Path, typer.Option("--out", help="new directory for fit/ and product/")],
    population: Annotated[str, typer.Option("--population", help="base population YAML, or 'default'")] = "default",
    parameters: Annotated[
        str | None, typer.Option("--parameters", help="comma-separated parameters to fit (default: random effects)")
    ] = None,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="product spec for the synthetic cohort (default: DATA's)")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="synthetic patients (default: as many as fitted)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the fit and of the cohort")] = 0,
    steps: Annotated[int, typer.Option("--steps", help="SVI steps")] = 400,
    target: Annotated[
        list[str] | None, typer.Option("--target", help="target shares, e.g. sex=female:0.5,male:0.5 (repeatable)")
    ] = None,
    draws: Annotated[
        int, typer.Option("--population-draws", help="posterior draws mixed into the population (0: point estimate)")
    ] = 20,
) -> None:
    """Fit a population (hierarchical Bayesian, numpyro SVI) to real data; write a synthetic product from it."""
    from twinloop._config import progress_shown
    from twinloop.calibrate.from_real import synthesize_from_real
    from twinloop.calibrate.population_fit import FitSettings

    _check_from_real(data, out, n, steps, draws, seed)
    result = synthesize_from_real(
        data,
        out,
        model=model,
        population=population,
        parameters=[p.strip() for p in parameters.split(",")] if parameters else None,
        spec=spec,
        n=n,
        seed=seed,
        targets=parse_targets(target),
        population_draws=draws,
        settings=FitSettings(steps=steps, seed=seed),
        progress=progress_shown(),
    )
    table = Table(title=f"Fitted population ({result.summary['data']['patients']} patients)")
    for col in ("parameter", "typical (90 % CI)", "omega variance (90 % CI)"):
        table.add_column(col)
    estimates = result.summary["estimates"]
    for name, t in estimates["typical"].items():
        w = estimates["omega_variance"][name]
        table.add_row(name, f"{t['median']:.4g} ({t['q05']:.4g}-{t['q95']:.4g})",
                      f"{w['median']:.3g} ({w['q05']:.3g}-{w['q95']:.3g})")  # fmt: skip
    console.print(table)
    console.print(
        f"wrote the fit to {result.fit} and the synthetic product to {result.product}", markup=False, highlight=False
    )


def _check_from_real(data: Path, out: Path, n: int | None, steps: int, draws: int, seed: int) -> None:
    """Refuse bad numbers and paths of ``cohort from-real`` before the fit starts."""
    from twinloop.errors import InputError
    from twinloop.products.dataset import check_out_dir
    from twinloop.products.limits import MAX_PATIENTS

    for option, value, low in (
        ("--n", n, 1),
        ("--steps", steps, 1),
        ("--population-draws", draws, 0),
        ("--seed", seed, 0),
    ):
        if value is not None and value < low:
            raise InputError(f"{option} must be >= {low}; got {value}.")
    if n is not None and n > MAX_PATIENTS:
        raise InputError(f"--n is {n}; the largest accepted is {MAX_PATIENTS} patients.")
    if not data.is_dir():
        raise InputError(
            f"DATA '{data}' is not a folder; give the folder with patients.parquet and observations.parquet."
        )
    check_out_dir(out, "--out")


def lineage_command(
    artifact: Annotated[Path, typer.Argument(help="an artifact directory (product, trained model, report)")],
    patient: Annotated[
        str | None, typer.Option("--patient", help="trace one subject of a product, e.g. vp00042")
    ] = None,
    search: Annotated[
        list[Path] | None, typer.Option("--search", help="folders holding the inputs (default: the parent)")
    ] = None,
    prov_json: Annotated[bool, typer.Option("--prov-json", help="print the artifact's PROV-JSON document")] = False,
) -> None:
    """Walk an artifact's PROV graph back to its sources, or trace one patient of a product."""
    from twinloop.govern.lineage import walk
    from twinloop.products.lineage import lineage

    if patient is not None:
        console.print_json(json.dumps(lineage(artifact, patient), default=str))
    elif prov_json:
        walk(artifact, search or ())
        console.print((artifact / "prov.json").read_text(), highlight=False, soft_wrap=True, markup=False)
    else:
        for line in walk(artifact, search or ()).lines():
            console.print(line, highlight=False, soft_wrap=True, markup=False)
