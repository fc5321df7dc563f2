"""``twinloop learn ...``: train AI components from YAML specs or products and save them
with manifests, model cards and figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

learn_app = typer.Typer(help="Train amortized posteriors, surrogates, closures and predictors.", no_args_is_help=True)
console = Console()

Spec = Annotated[Path, typer.Argument(help="job spec (YAML), see examples/learn/")]
Out = Annotated[Path, typer.Option("--out", help="directory for the artifact, its manifest, card and figure")]


def _guarded(out: Path, job: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a training job into a new ``out``; a failed job (a bad spec or input is reported
    by the root guard as one line and exit code 2) leaves no half-written ``out`` behind."""
    from twinloop.learn.outdir import artifact_folder

    with artifact_folder(out):
        return job()


def _given(**options: Any) -> dict[str, Any]:
    """The command-line overrides that were given."""
    return {k: v for k, v in options.items() if v is not None}


def _spec(path: Path, **overrides: Any) -> dict[str, Any]:
    """The YAML spec with the command-line overrides that were given; a population
    given as a path is read from the spec's folder."""
    from twinloop._paths import spec_path
    from twinloop._yaml import load_yaml

    raw = load_yaml(path, "a learn job spec (see examples/learn/)")
    population = raw.get("population")
    if isinstance(population, str) and population != "default":
        raw["population"] = str(spec_path(path.parent, population, "population"))
    return {**raw, **_given(**overrides)}


def _print(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['kind']} -> {summary['out']}")
    table.add_column("figure", no_wrap=True)
    table.add_column("value")
    for key, value in summary.items():
        if key not in ("kind", "out"):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@learn_app.command("posterior")
def posterior(
    spec: Spec,
    out: Out,
    simulations: Annotated[int | None, typer.Option("--simulations", help="override settings.n_simulations")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="override settings.max_epochs")] = None,
) -> None:
    """Train an amortized posterior (NPE) and check it by simulation-based calibration."""
    from twinloop.errors import InputError
    from twinloop.learn.jobs import train_posterior

    def job() -> dict[str, Any]:
        raw = _spec(spec)  # the overrides belong in its settings
        given = raw.get("settings") or {}
        if not isinstance(given, dict):
            raise InputError(f"posterior spec.settings is {type(given).__name__}; expected a mapping. Fix the spec.")
        settings = {**given, **_given(n_simulations=simulations, max_epochs=epochs)}
        return train_posterior({**raw, "settings": settings}, out)

    _print(_guarded(out, job))


@learn_app.command("surrogate")
def surrogate(
    spec: Spec,
    out: Out,
    simulations: Annotated[int | None, typer.Option("--simulations", help="override n_simulations")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="override the training steps")] = None,
) -> None:
    """Train a neural surrogate of an observable and report its held-out accuracy and speed-up."""
    from twinloop.learn.jobs import train_surrogate

    _print(_guarded(out, lambda: train_surrogate(_spec(spec, n_simulations=simulations, steps=steps), out)))


@learn_app.command("closure")
def closure(
    spec: Spec,
    out: Out,
    steps: Annotated[int | None, typer.Option("--steps", help="override the training steps")] = None,
) -> None:
    """Train a hybrid model's learned closure through the ODE solver on observed series (CSV)."""
    from twinloop.learn.jobs import train_closure

    _print(_guarded(out, lambda: train_closure(_spec(spec, steps=steps), out, base_dir=spec.parent)))


@learn_app.command("predictor")
def predictor(
    synthetic: Annotated[Path, typer.Argument(help="synthetic product directory to train on")],
    out: Out,
    real: Annotated[Path | None, typer.Option("--real", help="real-like product: TSTR against TRTR")] = None,
    task: Annotated[str, typer.Option("--task", help="responder (oncology) or nocturnal-hypo (T1D)")] = "responder",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Train a predictor on a synthetic product; test it on a real-like one (TSTR vs TRTR)."""
    from twinloop.learn.jobs import train_predictor

    _print(_guarded(out, lambda: train_predictor(synthetic, out, real=real, task=task, seed=seed)))
