"""The ``twinloop`` command (Typer + Rich). It assembles the core; the core never imports it."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from twinloop.cli._guard import GuardedGroup
from twinloop.cli.cohort import cohort_app, lineage_command
from twinloop.cli.control import control_app
from twinloop.cli.govern import govern_app
from twinloop.cli.learn import learn_app
from twinloop.cli.models import models_app
from twinloop.cli.trial import trial_app
from twinloop.cli.twin import twin_app

app = typer.Typer(
    cls=GuardedGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="twinloop: hybrid medical digital twins.",
)
app.add_typer(models_app, name="models")
app.add_typer(cohort_app, name="cohort")
app.add_typer(twin_app, name="twin")
app.add_typer(learn_app, name="learn")
app.add_typer(govern_app, name="govern")
app.add_typer(control_app, name="control")
app.add_typer(trial_app, name="trial")
app.command("lineage")(lineage_command)
console = Console()
DEMO_MAX_COHORT = 200_000


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an unexpected failure")] = False,
) -> None:
    """twinloop: hybrid medical digital twins."""


def column_name(name: str, unit: str) -> str:
    """``plasma_glucose`` + ``mg/dL`` -> ``plasma_glucose_mg_dl``."""
    return f"{name}_{re.sub(r'[^0-9a-z]+', '_', unit.lower()).strip('_')}"


@app.command()
def simulate(
    inputs: Annotated[Path, typer.Option(help="CSV with columns minute,insulin_U_per_min,carbs_g")],
    out: Annotated[Path, typer.Option(help="output file, .csv or .parquet")],
    model: Annotated[
        str | None,
        typer.Option(help="model id (default: the registered model with per-minute insulin and carbs inputs)"),
    ] = None,
    patient: Annotated[str, typer.Option(help="virtual patient name (e.g. adult#001) or 'all'")] = "adult#001",
    rtol: Annotated[float, typer.Option(help="relative tolerance")] = 1e-6,
    atol: Annotated[float, typer.Option(help="absolute tolerance")] = 1e-6,
) -> None:
    """Replay recorded per-minute inputs through virtual patients; one row per minute."""
    import numpy as np

    import twinloop as tl
    from twinloop._atomic import write_atomic
    from twinloop.cli.replay import read_recorded_inputs, recorded_plan, replay_model
    from twinloop.products.dataset import check_out_dir

    if out.suffix not in (".csv", ".parquet"):
        raise tl.InputError(f"--out must end in .csv or .parquet; got '{out.name}'.")
    if out.is_dir():
        raise tl.InputError(f"--out '{out}' is a directory; give a file path ending in .csv or .parquet.")
    check_out_dir(out.parent, "the folder of --out")
    m = replay_model(model)
    names = list(m.presets) if patient == "all" else [patient]
    params = np.stack([m.preset(name) for name in names])
    table = read_recorded_inputs(inputs)
    plan = recorded_plan(table)
    minutes = np.arange(float(table["minute"].iloc[0]), float(table["minute"].iloc[-1]) + 1.0)
    settings = tl.SolverSettings(rtol=rtol, atol=atol)
    traj = tl.simulate(m, params, plan, times=minutes, patient_ids=names, settings=settings, progress=False)
    if traj.failures:
        raise tl.SimulationError(f"Integration failed for {traj.failures}.")
    frame = traj.to_dataframe("wide").rename(columns={"time": "minute"})
    frame = frame.rename(columns={n: column_name(n, u) for n, u in traj.units.items()})
    if out.suffix == ".csv" and patient != "all":
        frame = frame.drop(columns="patient")
    if out.suffix == ".csv":
        write_atomic(out, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6f"))
    else:
        write_atomic(out, lambda tmp: frame.to_parquet(tmp, index=False))
    console.print(f"wrote {len(frame)} rows for {len(names)} patient(s) to {out}", markup=False, highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("out/demo"),
    cohort: Annotated[int, typer.Option(help="size of the cohort sampled from the default T1D population")] = 10_000,
    seed: Annotated[int, typer.Option(help="seed of the sampled cohort")] = 0,
) -> None:
    """The end-to-end demo: 30 published patients and a virtual cohort for one day."""
    from twinloop.errors import InputError
    from twinloop.products.dataset import check_out_dir
    from twinloop.products.limits import size_text

    if cohort < 1:
        raise InputError(f"--cohort must be >= 1; got {cohort}.")
    if cohort > DEMO_MAX_COHORT:
        need = size_text(cohort * 289 * 2 * 8.0)
        raise InputError(
            f"--cohort is {cohort}; the largest accepted is {DEMO_MAX_COHORT}: the demo holds the whole "
            f"cohort's day in memory ({cohort} patients x 289 output points x 2 observables x 8 bytes = {need})."
            " For larger cohorts write a product with `twinloop cohort generate`, which works in chunks."
        )
    check_out_dir(out, "--out")
    from twinloop.cli.demo import run_demo

    run_demo(out, cohort_size=cohort, seed=seed, console=console)


def main() -> None:
    """Entry point of the ``twinloop`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
