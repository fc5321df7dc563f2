"""``twinloop control ...``: insulin controllers in the loop; ``evaluate`` compares them on a
virtual cohort with the consensus CGM metrics, CVGA and an HTML report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from twinloop.control.patients import Patients
    from twinloop.control.types import Controller
    from twinloop.models.base import Model

control_app = typer.Typer(help="Insulin controllers in the loop: evaluate them on a virtual cohort.",
                          no_args_is_help=True)  # fmt: skip
# the names a --controller may take, and the factory in twinloop.control that builds it
MAX_VALUES = 2_000_000_000  # per-minute values held in memory (8 bytes each): 16 GB
SHOWN = ("tir_70_180_pct", "tbr_70_pct", "tbr_54_pct", "tar_180_pct", "tar_250_pct", "mean_mg_dl", "cv_pct",
         "gmi_pct", "lbgi", "hbgi", "hypo_events_70", "hypo_events_54")  # fmt: skip


def parse_controller(spec: str) -> Controller:
    """A controller from ``NAME`` or ``NAME:key=value,...`` (e.g. ``pid:P=0.002,I=1e-6``); values
    are numbers, keys the factory's arguments. One with settings is named after them."""
    import dataclasses
    import inspect

    from twinloop.control.named import BUILT_IN, by_name
    from twinloop.errors import InputError

    name, _, rest = spec.strip().partition(":")
    if name not in BUILT_IN:
        raise InputError(f"--controller '{spec}': unknown controller '{name}'; expected one of "
                         f"{', '.join(BUILT_IN)}, optionally with settings, e.g. pid:P=0.002,I=1e-6.")  # fmt: skip
    accepted = list(inspect.signature(BUILT_IN[name]).parameters)
    settings: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in accepted:
            raise InputError(f"--controller '{spec}': '{item}' must be key=value with a key among {accepted}.")
        settings[key] = _number(value, f"--controller '{spec}': {key}")
    controller = by_name(name, settings)
    if settings:
        label = ",".join(f"{k}={v:g}" for k, v in settings.items())
        controller = dataclasses.replace(controller, name=f"{controller.name}({label})")
    return controller


def _number(text: str, field: str) -> float:
    from twinloop.errors import InputError

    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{field} must be a number; got {text.strip()!r}.") from None
    if not math.isfinite(value):
        raise InputError(f"{field} must be finite; got {text.strip()!r}.")
    return value


def parse_meals(text: str) -> tuple[tuple[float, float], ...]:
    """``"420:50,720:70"`` -> ``((420, 50), (720, 70))``; ``"none"`` -> no meals."""
    from twinloop.errors import InputError

    if text.strip().lower() == "none":
        return ()
    meals = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        minute, colon, grams = item.partition(":")
        if not colon:
            raise InputError(f"--meals item '{item}' must be MINUTE:GRAMS (minutes after midnight), e.g. 420:50.")
        meals.append((_number(minute, f"--meals '{item}' minute"), _number(grams, f"--meals '{item}' grams")))
    return tuple(meals)


def control_model(model_id: str | None) -> Model:
    """``model_id``, or the first registered model with a control interface."""
    from twinloop.errors import InputError
    from twinloop.models.registry import available, get

    if model_id is not None:
        return get(model_id)
    found = next((m for m in map(get, available()) if m.profile.control is not None), None)
    if found is None:
        raise InputError("No registered model declares a control interface; name one with --model.")
    return found


def parse_patients(model: Model, text: str, seed: int) -> Patients:
    """``published`` (all), published names separated by commas, or a number drawn from the
    model's default population (with ``seed``)."""
    from twinloop.control.patients import Patients
    from twinloop.errors import InputError

    text = text.strip()
    if text == "published":
        return Patients.published(model)
    if text.isdigit():
        return Patients.from_population(model, int(text), seed)
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in model.presets]
    if not names or unknown:
        raise InputError(f"--patients '{text}': expected 'published', a number of patients to draw, or published "
                         f"names such as {', '.join(list(model.presets)[:3])}; unknown: {unknown}.")  # fmt: skip
    return Patients.published(model, names)


def summary_text(evaluation: Any) -> str:
    """The plain-text summary: per signal, metric rows by controller columns, then CVGA."""
    lines = []
    for signal, words in (("cgm", "CGM at the sensor's sample times"), ("bg", "plasma glucose")):
        table = evaluation.table("all", signal)
        table = table.loc[[f"{signal}_{k}" for k in SHOWN]]
        lines += [f"{words}: mean over {len(evaluation.results[0].ids)} patients [95 % CI]", table.to_string(), ""]
    zones = evaluation.cvga[evaluation.cvga["signal"] == "bg"].set_index("controller")[list("ABCDE")]
    lines += ["CVGA zones of plasma glucose (patients)", zones.to_string()]
    return "\n".join(lines)


@control_app.command("evaluate")
def evaluate_command(
    out: Annotated[Path, typer.Option("--out", help="folder for the Parquet tables, report.html and manifest")],
    controller: Annotated[
        list[str] | None,
        typer.Option(
            "--controller",
            "-c",
            metavar="SPEC",
            help="bb, pid or mpc, optionally with settings: pid:P=0.002 (repeatable)",
        ),
    ] = None,
    patients: Annotated[
        str, typer.Option(help="'published', a number drawn from the default population, or names (adult#001,...)")
    ] = "published",
    model: Annotated[str | None, typer.Option(help="model id (default: the one with a control interface)")] = None,
    days: Annotated[float, typer.Option(help="days to simulate")] = 1.0,
    meals: Annotated[str, typer.Option(help="MINUTE:GRAMS,... eaten every day, or 'none'")] = "420:50,720:70,1140:80",
    meal_time_sd: Annotated[float, typer.Option(help="scatter of meal times (min, SD)")] = 0.0,
    meal_size_cv: Annotated[float, typer.Option(help="scatter of meal sizes (CV)")] = 0.0,
    carb_error_cv: Annotated[float, typer.Option(help="carbohydrate-counting error told to the controller (CV)")] = 0.0,
    sensor: Annotated[str, typer.Option(help="CGM sensor: GuardianRT, Dexcom, Navigator")] = "GuardianRT",
    noise: Annotated[bool, typer.Option("--noise/--no-noise", help="sensor error model on or off")] = True,
    pump: Annotated[str, typer.Option(help="insulin pump: Insulet or Cozmo")] = "Insulet",
    rescue: Annotated[bool, typer.Option("--rescue/--no-rescue", help="15 g rescue carbs below 70 mg/dL")] = True,
    seed: Annotated[int, typer.Option(help="seed of meals, sensor errors and drawn patients")] = 0,
    fast: Annotated[bool, typer.Option("--fast", help="one Tsit5 step per minute instead of adaptive steps")] = False,
    ci: Annotated[str, typer.Option(help="confidence intervals over patients: t or bootstrap")] = "t",
    traces: Annotated[bool, typer.Option("--traces/--no-traces", help="write the per-minute traces")] = True,
    force: Annotated[bool, typer.Option("--force", help="overwrite an earlier evaluation in --out")] = False,
) -> None:
    """Run controllers closed-loop on the same patients and scenario; report the consensus CGM metrics."""
    from twinloop._paths import check_output
    from twinloop.control.evaluate import evaluate
    from twinloop.control.scenario import RescueCarbs, Scenario
    from twinloop.errors import InputError

    check_output(out, "--out", "folder")
    if (out / "manifest.json").exists() and not force:
        raise InputError(f"--out '{out}' already holds an artifact (manifest.json); choose another folder or "
                         "add --force to overwrite it.")  # fmt: skip
    if ci not in ("t", "bootstrap"):
        raise InputError(f"--ci must be 't' or 'bootstrap'; got {ci!r}.")
    controllers = [parse_controller(s) for s in (controller or ["bb"])]
    scenario = Scenario(days=days, meals=parse_meals(meals), meal_time_sd_min=meal_time_sd, meal_size_cv=meal_size_cv,
                        carb_count_error_cv=carb_error_cv, rescue=RescueCarbs() if rescue else None, sensor=sensor,
                        noise=noise, pump=pump)  # fmt: skip
    m = control_model(model)
    if patients.strip().isdigit() and int(patients) * scenario.minutes * 5 * len(controllers) > MAX_VALUES:
        raise InputError(f"--patients {patients} over {days:g} days holds more per-minute traces in memory than "
                         f"{MAX_VALUES * 8 / 1e9:.0f} GB; evaluate fewer patients or days per run.")  # fmt: skip
    cohort = parse_patients(m, patients, seed)
    evaluation = evaluate(m, cohort, controllers, scenario, seed=seed, accurate=not fast, ci_method=ci)
    evaluation.write(out, traces=traces, overwrite=force)
    typer.echo(summary_text(evaluation))
    typer.echo(f"\nwrote {out} (patients, summary, comparisons, cvga{', traces' if traces else ''}; report.html)")
