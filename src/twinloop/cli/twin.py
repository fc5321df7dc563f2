"""``twinloop twin ...``: create, sync, forecast, compare, show and trace patient twins kept in a registry."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from twinloop.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

twin_app = typer.Typer(
    help="Patient twins: create, synchronize, forecast, compare, show, lineage.", no_args_is_help=True
)
console = Console()
DB_HELP = "registry URL (sqlite:///file.db or postgresql+psycopg://...); default $TWINLOOP_DB or sqlite:///twins.db"
Db = Annotated[str | None, typer.Option("--db", help=DB_HELP)]


MIN_MEMBERS = 8  # TwinConfig's smallest ensemble


def _registry(db: str | None) -> Any:
    """The registry at ``--db`` (or ``$TWINLOOP_DB``): its tables, audit trail and history."""
    from twinloop.store import TwinRegistry

    return TwinRegistry(db or os.environ.get("TWINLOOP_DB", "sqlite:///twins.db"))


def _twins(registry: Any) -> Any:
    """The twins kept in ``registry``: the twin loads, syncs and saves itself through it."""
    from twinloop.twin.registered import RegisteredTwins

    return RegisteredTwins(registry)


def _data(
    path: Path, columns: Path | None, subject: str | None, model: Any, config: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    from twinloop.twin.records import patient_records

    return patient_records(path, model, columns=columns, subject=subject, config=config)


def _doses(path: Path, option: str = "--inputs") -> pd.DataFrame:
    """A dose plan file: CSV in the canonical dose columns (time, input, kind, amount, duration, unit)."""
    import pandas as pd

    from twinloop.errors import DataError

    if not path.is_file():
        raise DataError(
            f"{option} {path} is not a file; give a dose plan CSV (time, input, kind, amount, duration, unit)."
        )
    try:
        frame = pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{option} {path} is not UTF-8 text; save the dose plan as a UTF-8 CSV.") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(
            f"{option}: cannot read the dose plan {path} ({' '.join(str(e).split())}); fix its CSV syntax."
        ) from None
    missing = [c for c in ("time", "input", "amount", "unit") if c not in frame]
    if missing:
        raise DataError(
            f"{option} {path} lacks the column(s) {missing}; a dose plan has time, input, kind, amount, duration, unit."
        )
    if frame.empty:
        raise DataError(f"{option} {path} has no dose rows; give at least one dose (or omit {option}).")
    if "subject_id" not in frame:
        frame["subject_id"] = "plan"
    return frame


def _check_out(path: Path, option: str, folder: bool = False) -> None:
    """Refuse an output path that cannot be written (see :func:`twinloop._paths.check_output`)."""
    from twinloop._paths import check_output

    check_output(path, option, "folder" if folder else "file")


@twin_app.command("create")
def create(
    model: Annotated[str, typer.Option("--model", help="model id (see `twinloop models`)")],
    data: Annotated[Path, typer.Option("--data", help="FHIR bundle (.json), NDJSON folder or CSV")],
    name: Annotated[str, typer.Option("--name", help="the twin's id in the registry")],
    columns: Annotated[Path | None, typer.Option("--columns", help="column map (YAML) of a generic CSV")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="the patient, when the data hold several")] = None,
    method: Annotated[
        str, typer.Option("--method", help="auto (laplace for dense data, else nuts), laplace, nuts, svi or enkf")
    ] = "auto",
    known: Annotated[
        list[str] | None,
        typer.Option("--set", help="a known parameter or covariate, NAME=VALUE (e.g. BW=62, age=15); repeatable"),
    ] = None,
    fit: Annotated[
        str | None, typer.Option("--fit", help="comma-separated parameters to estimate (default: the model's set)")
    ] = None,
    members: Annotated[int, typer.Option("--members", help="ensemble size")] = 500,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    ranges: Annotated[
        list[str] | None,
        typer.Option(
            "--range",
            help="an instrument's measurable range, OBSERVABLE=LOW:HIGH (e.g. subcutaneous_glucose=40:500 for a "
            "sensor reading up to 500 mg/dL; default 40:400 for CGM); readings at a limit are censored; repeatable",
        ),
    ] = None,
    db: Db = None,
) -> None:
    """Identify a twin on a patient's data and store it (version 1)."""
    from twinloop._paths import check_name
    from twinloop.cohort import Population
    from twinloop.models import get
    from twinloop.twin import PatientTwin, TwinConfig

    check_name("--name", name)
    if members < MIN_MEMBERS:
        raise InputError(f"--members must be >= {MIN_MEMBERS} (the smallest ensemble a twin keeps); got {members}.")
    registry = _registry(db)
    if registry.exists(name):
        raise InputError(f"A twin named {name!r} already exists; choose another --name.")
    values = _assignments(known or [])
    m = get(model)
    config = TwinConfig(members=members, seed=seed, noise=_measurable_ranges(ranges or [], m))
    obs, doses, note = _data(data, columns, subject, m, config)
    if obs.empty:
        raise InputError(
            f"--data {data} holds no observation of {[o.name for o in m.observables]}"
            + (f" ({note})" if note else "")
            + "; a twin is identified on them."
        )
    with console.status("identifying the twin", spinner="dots") as status:
        twin = PatientTwin.create(
            m,
            obs,
            doses,
            prior=Population.default(m),
            fit=tuple(f.strip() for f in fit.split(",") if f.strip()) if fit else None,
            known=values,
            method=method,  # type: ignore[arg-type]
            config=config,
            twin_id=name,
            progress=lambda line: status.update(Text(f"identifying the twin: {line}")),
        )
    _twins(registry).add(twin)
    console.print(
        Text(
            f"created twin {name} ({model}, {len(obs)} observations, {twin.calibration.get('method', method)}, "
            f"{members} members), state at {twin.now:%Y-%m-%d %H:%M} UTC"
        )
    )
    if note:
        console.print(Text(note))
    _print_identification(twin)


def _measurable_ranges(items: list[str], model: Any) -> dict[str, dict[str, Any]]:
    """``--range OBSERVABLE=LOW:HIGH`` options as the twin's noise declarations (the
    observable's default noise with this measurable range)."""
    import math

    from twinloop.calibrate.noise import noise_for

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, bounds = item.partition("=")
        low, sep, high = bounds.partition(":")
        try:
            lower, upper = float(low), float(high)
        except ValueError:
            lower = upper = math.nan
        if not sep or not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
            raise InputError(
                f"--range expects OBSERVABLE=LOW:HIGH with LOW < HIGH (e.g. subcutaneous_glucose=40:500); got {item!r}."
            )
        if name.strip() not in model.observable_names:
            raise InputError(
                f"--range names {name.strip()!r}, not an observable of {model.id} "
                f"({', '.join(model.observable_names)})."
            )
        default = noise_for(model, name.strip())
        out[name.strip()] = {"additive": default.additive, "proportional": default.proportional,
                             "lower": lower, "upper": upper}  # fmt: skip
    return out


def _assignments(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` options as a mapping (numbers where they parse, text otherwise)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise InputError(f"--set expects NAME=VALUE (e.g. BW=62); got {item!r}.")
        try:
            out[key.strip()] = float(raw)
        except ValueError:
            out[key.strip()] = raw.strip()
    return out


def _print_identification(twin: Any) -> None:
    """The estimated parameters with their 90 % intervals, the fit's error and its consistency."""
    cal = twin.calibration
    summary = twin.parameter_summary()
    table = Table(title="identified parameters (90 % interval over the members)")
    for col in ("parameter", "median", "q05", "q95"):
        table.add_column(col)
    for i, p in enumerate(summary["parameter"]):
        table.add_row(p, *(f"{summary[k][i]:.4g}" for k in ("median", "q05", "q95")))
    console.print(table)
    if "rmse" in cal:
        for name, rmse in cal["rmse"].items():
            scale = cal["error_scale"][name]
            console.print(Text(f"fit RMSE {name}: {rmse:.2f} ({scale:.2f} x the declared sensor noise)"))
        if cal.get("censored"):
            console.print(Text(f"{cal['censored']} readings at the instrument's limits were fitted as censored"))
    if twin.innovations:
        last = twin.innovations[-1]
        console.print(Text(f"last NIS {last['nis']:.1f} on {last['m']} observations (p = {last['p_value']:.2g})"))


@twin_app.command("sync")
def sync(
    twin_id: Annotated[str, typer.Argument(help="the twin's id")],
    data: Annotated[Path, typer.Option("--data", help="new observations (and doses): FHIR, NDJSON or CSV")],
    columns: Annotated[Path | None, typer.Option("--columns", help="column map of a generic CSV")] = None,
    db: Db = None,
) -> None:
    """Assimilate new data: one new version; drift is checked and scored forecasts updated.

    Data already in the twin make no new version (the command says so and exits 0);
    data that hold nothing for the twin (another patient, no rows) are an error."""

    registry = _registry(db)
    twin = _twins(registry).load(twin_id)
    subject = twin.subject_id if data.suffix.lower() != ".csv" or columns else None
    obs, doses, note = _data(data, columns, subject, twin.model, twin.config)
    if obs.empty and doses.empty:
        raise InputError(f"--data {data} holds nothing twin {twin_id} can use ({note}).")
    obs, doses = obs.assign(subject_id=twin.subject_id), doses.assign(subject_id=twin.subject_id)
    report = _twins(registry).sync(twin_id, obs, doses)
    if note:
        console.print(Text(note))
    if report.unchanged:
        console.print(Text(f"{twin_id}: nothing new in {data} (all of it is already in the twin); "
                           f"version {report.version} unchanged, no new version written"))  # fmt: skip
        return
    inn = report.innovation
    console.print(
        f"{escape(twin_id)} version {report.version}: {report.assimilated} assimilated"
        + (f" (rewound: {report.replayed} logged re-assimilated)" if report.replayed else "")
        + f", {report.late} too old to assimilate; "
        f"NIS {inn.get('nis', float('nan')):.1f} on {inn.get('m', 0)} observations"
        + (" [bold red]DRIFT[/] (recalibrated)" if report.drift else "")
        + (f"; {report.clipped} negative state values clipped to 0" if report.clipped else "")
    )


@twin_app.command("forecast")
def forecast(
    twin_id: Annotated[str, typer.Argument(help="the twin's id")],
    hours: Annotated[float, typer.Option("--hours", help="horizon in hours")] = 24.0,
    inputs: Annotated[Path | None, typer.Option("--inputs", help="dose plan CSV (canonical dose columns)")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write the quantiles as CSV here (its PROV-JSON beside it)")
    ] = None,
    db: Db = None,
) -> None:
    """Ensemble forecast from the current version (stored, scored as data arrive)."""
    from twinloop._atomic import write_atomic

    if out:
        _check_out(out, "--out")
        _check_out(out.with_suffix(".prov.json"), "--out (its PROV-JSON beside it)")
    plan = _doses(inputs) if inputs else None
    registry = _registry(db)
    fc = _twins(registry).forecast(twin_id, hours, plan)  # a horizon beyond the limit is refused before any write
    q = fc.quantiles()
    if out:
        write_atomic(out, lambda tmp: q.to_csv(tmp, index=False))
        _write_prov(registry, twin_id, out.with_suffix(".prov.json"))
    table = Table(title=f"{twin_id} forecast {fc.id} ({fc.ensemble_size} members)")
    for col in ("time", "variable", "q05", "q50", "q95", "unit"):
        table.add_column(col, no_wrap=col == "time")
    step = max(1, len(q) // (12 * len(fc.observables)))
    for row in q.iloc[::step].itertuples():
        table.add_row(
            f"{row.time:%m-%d %H:%M}", row.variable, f"{row.q05:.3g}", f"{row.q50:.3g}", f"{row.q95:.3g}", row.unit
        )
    console.print(table)


@twin_app.command("compare")
def compare(
    twin_id: Annotated[str, typer.Argument(help="the twin's id")],
    inputs: Annotated[
        list[str], typer.Option("--inputs", help="an arm as NAME=FILE (dose plan CSV); give two or more")
    ],
    endpoint: Annotated[str, typer.Option("--endpoint", help="time_in_range, mean_glucose, final:<observable>, ...")],
    hours: Annotated[float, typer.Option("--hours", help="horizon in hours")] = 24.0,
    db: Db = None,
) -> None:
    """What-if comparison of dose plans on the twin's ensemble (paired members)."""

    arms = {}
    for item in inputs:
        if "=" not in item:
            raise InputError(f"--inputs must be NAME=FILE; got {item!r}.")
        key, path = item.split("=", 1)
        if not key.strip() or key in arms:
            raise InputError(f"--inputs needs a distinct NAME per arm (NAME=FILE); got {item!r}.")
        arms[key] = _doses(Path(path), f"--inputs {key}")
    if len(arms) < 2:
        raise InputError(f"--inputs: give two or more arms to compare (NAME=FILE each); got {len(arms)}.")
    registry = _registry(db)
    result = _twins(registry).load(twin_id).compare(arms, endpoint, hours=hours)
    _twins(registry).record(twin_id, "compare", result.to_dict())
    table = Table(
        title=Text(
            f"{twin_id}: {result.endpoint} ({result.unit}, {result.better} is better) "
            f"over {hours:g} h, {result.ensemble_size} members"
        )
    )
    for col in ("arm", "mean", "q05", "q50", "q95"):
        table.add_column(col)
    for arm, s in result.arms.items():
        table.add_row(Text(arm), *(f"{s[k]:.3g}" for k in ("mean", "q05", "q50", "q95")))
    d = result.difference
    table.add_row(Text(d["arms"]), *(f"{d[k]:.3g}" for k in ("mean", "q05", "q50", "q95")))
    console.print(table)
    console.print(Text(f"P({next(iter(arms))} better than {list(arms)[1]}) = {result.p_first_better:.3f}"))


@twin_app.command("show")
def show(
    twin_id: Annotated[str, typer.Argument(help="the twin's id")],
    out: Annotated[Path | None, typer.Option("--out", help="folder for the fan chart (HTML)")] = None,
    db: Db = None,
) -> None:
    """History (versions), drift events, forecast scores and a fan chart."""
    from twinloop._atomic import write_atomic
    from twinloop._paths import check_name
    from twinloop.twin.figures import fan_chart

    if out:
        check_name("the twin's id (it names the fan chart file)", twin_id)
        _check_out(out, "--out", folder=True)
    registry = _registry(db)
    twin = _twins(registry).load(twin_id)
    versions = registry.table("versions", twin_id)
    table = Table(title=f"twin {twin_id} ({twin.model.id}, patient {twin.subject_id})")
    for col in ("version", "kind", "created", "state time", "summary"):
        table.add_column(col)
    for row in versions.sort_values("version").itertuples():
        summary = json.loads(row.summary)
        brief = {k: summary[k] for k in ("assimilated", "late", "drift") if k in summary}
        table.add_row(
            str(row.version), row.kind, f"{row.created_at:%Y-%m-%d %H:%M:%S}", f"{row.state_time:g}", json.dumps(brief)
        )
    console.print(table)
    console.print(
        f"drift events: {len(twin.drift_events)}"
        + "".join(
            f"\n  version {e['version']} at {e['time']}: NIS {e['nis']:.1f} on {e['m']}" for e in twin.drift_events
        )
    )
    scores = twin.scores()
    if not scores.empty:
        console.print(scores[["forecast", "n", "crps", "coverage50", "coverage90"]].to_string(index=False))
    if out:
        fc = twin.forecasts[-1] if twin.forecasts else twin.forecast(24.0, store=False)
        variable = fc.observables[0] if twin.observations.empty else str(twin.observations["variable"].iloc[-1])
        path = out / f"{twin_id}-fan-chart.html"
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(
            path, lambda tmp: fan_chart(fc, twin.observations, variable).write_html(tmp, include_plotlyjs=True)
        )
        console.print(f"fan chart: {path}")


@twin_app.command("lineage")
def lineage(
    twin_id: Annotated[str, typer.Argument(help="the twin's id")],
    version: Annotated[int | None, typer.Option("--version", help="a version (default: the current one)")] = None,
    forecast_id: Annotated[str | None, typer.Option("--forecast", help="a stored forecast's id instead")] = None,
    prov_json: Annotated[Path | None, typer.Option("--prov-json", help="write the twin's PROV-JSON here")] = None,
    db: Db = None,
) -> None:
    """Walk a twin version or forecast back to the data, model and prior it came from."""
    from twinloop.govern.lineage import uses_of, walk_document

    if version is not None and version < 1:
        raise InputError(f"--version must be >= 1 (versions count from 1); got {version}.")
    if prov_json:
        _check_out(prov_json, "--prov-json")
    registry = _registry(db)
    doc = registry.provenance(twin_id)
    target = _forecast_entity(doc, forecast_id) if forecast_id else _version_entity(registry, twin_id, version)
    tree = walk_document(doc, target)
    for line in tree.lines():
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    for use in uses_of(doc, target):
        console.print(
            f"used by {use['type']} ({use['ended']}) as {use['role']}", highlight=False, markup=False, soft_wrap=True
        )
    if prov_json:
        _write_prov(registry, twin_id, prov_json)
        console.print(f"PROV-JSON: {prov_json}")


def _version_entity(registry: Any, twin_id: str, version: int | None) -> str:
    return f"urn:sha256:{registry.version_identity(twin_id, version)}"


def _forecast_entity(doc: Any, forecast_id: str) -> str:
    from twinloop._provenance import TL
    from twinloop.errors import RegistryError

    for record in doc.get_records():
        if str(next(iter(record.get_attribute(TL["forecast_id"])), "")) == forecast_id:
            return str(record.identifier.uri)
    raise RegistryError(f"The twin has no stored forecast {forecast_id!r}; `twinloop twin show` lists them.")


def _write_prov(registry: Any, twin_id: str, path: Path) -> None:
    from twinloop._atomic import write_atomic

    text = str(registry.provenance(twin_id).serialize(format="json", indent=2))
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))
