"""``twinloop models ...``: list, show and check models; add, import and remove the user's own.

``add`` and ``import`` load the file, hold the model to its contract (``check_model``,
unless ``--no-check``) and only then copy the file, atomically, into the model directory
(:func:`twinloop.models.models_dir`); a refused file leaves nothing there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from twinloop.cli._errors import EXIT_CHECK_FAILED

if TYPE_CHECKING:
    from twinloop.models.base import Model

models_app = typer.Typer(
    help="List, describe and check the models; add, import and remove your own.", invoke_without_command=True
)
console = Console()
IdOption = Annotated[str | None, typer.Option("--id", help="the model id (default: the one the file declares)")]
ForceOption = Annotated[bool, typer.Option("--force", help="replace a model of this id in the model directory")]
NoCheckOption = Annotated[bool, typer.Option("--no-check", help="store the model without running check_model")]


def _table(title: str | None, key: str, *others: str, keep: int = 1) -> Table:
    """A table whose first ``keep`` columns (names, ids, units) never wrap."""
    table = Table(title=title)
    for j, name in enumerate((key, *others)):
        table.add_column(name, no_wrap=j < keep)
    return table


def _list() -> None:
    from twinloop.models.registry import conflicts, get_or_error, sources

    table = _table(None, "id", "source", "version", "name", "time unit", "states", "parameters", keep=2)
    for model_id, place in sources().items():
        kind = Text(place.kind)
        m = get_or_error(model_id)
        if isinstance(m, Exception):
            table.add_row(Text(model_id), kind, "", Text(f"cannot be loaded: {m}", style="red"), "", "", "")
            continue
        table.add_row(
            Text(m.id), kind, Text(m.version), Text(m.name), m.time_unit, str(len(m.states)), str(len(m.parameters))
        )
    for model_id, places in conflicts().items():
        where = "; ".join(place.describe() for place in places)
        table.add_row(Text(model_id), Text("conflict", style="red"), "", Text(f"defined {len(places)} times: {where}"))
    console.print(table)


@models_app.callback()
def list_models(ctx: typer.Context) -> None:
    """List the models (built-in, in the model directory, from installed plugins)."""
    if ctx.invoked_subcommand is None:
        _list()


@models_app.command("list")
def list_command() -> None:
    """List the models and where each comes from (built-in, directory, entry point)."""
    _list()


@models_app.command("show")
def show_model(model_id: Annotated[str, typer.Argument(help="model id (see `twinloop models`)")]) -> None:
    """Print a model's source, states, parameters, inputs, observables, units and references."""
    from twinloop.models.registry import get, source

    m = get(model_id)
    where = source(model_id).describe()
    console.print(Text.assemble((m.name, "bold"), f"  ({m.id} {m.version}, time in {m.time_unit})"))
    console.print(Text(f"source: {where}"))
    states = _table("States", "state", "unit", "description")
    for s in m.states:
        states.add_row(Text(s.name), Text(s.unit), Text(s.description))
    params = _table("Parameters", "parameter", "unit", "default", "bounds", "description")
    for p in m.parameters:
        params.add_row(
            Text(p.name), Text(p.unit), f"{p.default:.6g}", f"[{p.lower:.4g}, {p.upper:.4g}]", Text(p.description)
        )
    inputs = _table("Inputs", "input", "kind", "unit", "description")
    for i in m.inputs:
        inputs.add_row(Text(i.name), Text(i.kind + (f" -> {i.target}" if i.target else "")), Text(i.unit),
                       Text(i.description))  # fmt: skip
    observables = _table("Observables", "observable", "unit", "definition")
    for o in m.observables:
        observables.add_row(Text(o.name), Text(o.unit), Text(o.description))
    for table in (states, params, inputs, observables):
        console.print(table)
    if m.presets:
        console.print(Text(f"Virtual patients ({len(m.presets)}): {', '.join(m.presets)}"))
    console.print("[bold]References[/]")
    for ref in m.references:
        console.print(Text(f"  - {ref}"))


@models_app.command("check")
def check(model_id: Annotated[str, typer.Argument(help="model id")]) -> None:
    """Run the model contract (units, jit/vmap, gradients, positivity, steady state)."""
    from twinloop.models.registry import get
    from twinloop.testing import check_model

    results = check_model(get(model_id), raise_on_failure=False)
    for r in results:
        mark = ("pass", "green") if r.passed else ("FAIL", "red")
        console.print(Text.assemble(mark, f" {r.name}: {r.detail}"))
    if not all(r.passed for r in results):
        raise typer.Exit(code=EXIT_CHECK_FAILED)


def _checked(model: Model, origin: str) -> None:
    """Refuse a model that fails its contract, naming every failed check."""
    from twinloop.errors import ModelError
    from twinloop.testing import check_model

    failed = [r for r in check_model(model, raise_on_failure=False) if not r.passed]
    if failed:
        lines = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        raise ModelError(
            f"{origin} fails check_model ({lines}); fix the model, or add --no-check to store it unchecked."
        )


def _refuse_taken(model_id: str) -> None:
    """Refuse an id a built-in, a registered model or a plugin already has (any --force)."""
    from twinloop.errors import ModelError
    from twinloop.models.registry import all_sources

    taken = [place for place in all_sources().get(model_id, []) if place.kind != "directory"]
    if taken:
        raise ModelError(
            f"The model id '{model_id}' is taken by another model ({taken[0].describe()}); ids must be unique, "
            "so give this model another id (--id, or the id in the file)."
        )


def _store(file: Path, suffix: str, model_id: str | None, force: bool, no_check: bool) -> None:
    """Load ``file``, check it, store it; print where it went."""
    from twinloop.errors import InputError
    from twinloop.models.user import check_model_id, load_python_file, load_sbml_file, store_file

    if file.suffix.lower() != suffix or not file.is_file():
        raise InputError(f"'{file}' is not a {suffix} file; give the path of an existing {suffix} file.")
    if model_id is not None:
        check_model_id(model_id, "--id")
    model = load_python_file(file, model_id) if suffix == ".py" else load_sbml_file(file, model_id)
    final_id = check_model_id(model.id, f"the id declared by '{file}'")
    _refuse_taken(final_id)
    if not no_check:
        _checked(model, f"Model '{final_id}' from '{file}'")
    target = store_file(file, final_id, replace=force)
    console.print(Text(f"added model '{final_id}' ({model.name}) as {target}"))


@models_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="a Python file defining build() -> Model (or MODEL)")],
    model_id: IdOption = None,
    force: ForceOption = False,
    no_check: NoCheckOption = False,
) -> None:
    """Add a Python model file to the model directory (checked first with check_model)."""
    _store(file, ".py", model_id, force, no_check)


@models_app.command("import")
def import_sbml(
    file: Annotated[Path, typer.Argument(help="an SBML file (.xml)")],
    model_id: IdOption = None,
    force: ForceOption = False,
    no_check: NoCheckOption = False,
) -> None:
    """Import an SBML model into the model directory (stored as is, read by the SBML importer)."""
    _store(file, ".xml", model_id, force, no_check)


@models_app.command("remove")
def remove(model_id: Annotated[str, typer.Argument(help="id of a model in the model directory")]) -> None:
    """Remove a model from the model directory (built-in and plugin models cannot be removed)."""
    from twinloop.errors import InputError
    from twinloop.models.registry import all_sources
    from twinloop.models.user import remove_files

    places = all_sources().get(model_id, [])
    if places and not any(place.kind == "directory" for place in places):
        raise InputError(
            f"The model '{model_id}' is not in the model directory (it is {places[0].describe()}); "
            "only models added with `twinloop models add` or `import` can be removed."
        )
    removed = remove_files(model_id)
    console.print(Text(f"removed model '{model_id}' ({', '.join(str(p) for p in removed)})"))
