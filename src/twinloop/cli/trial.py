"""``twinloop trial ...``: run an in-silico trial from its spec, estimate its power by simulation,
and render its report again from the files it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import pandas as pd

    from twinloop.trials.run import TrialData
    from twinloop.trials.spec import TrialSpec

trial_app = typer.Typer(help="In-silico trials: run one, estimate its power, render its report.", no_args_is_help=True)
SHOWN = ["endpoint", "method", "comparison", "measure", "estimate", "ci_low", "ci_high", "p_value", "n"]
MAX_GRID = 200


def load_spec(path: Path, *, n: int | None = None, replicates: int | None = None, seed: int | None = None) -> Any:
    """The trial spec at ``path`` with the command line's overrides."""
    from twinloop.trials.spec import TrialSpec

    spec = TrialSpec.from_yaml(path)
    overrides = {k: v for k, v in {"n": n, "replicates": replicates, "seed": seed}.items() if v is not None}
    return spec.with_(**overrides) if overrides else spec


def parse_grid(text: str) -> list[int]:
    """``"50:500:50"`` -> 50, 100, ..., 500 (both ends included); ``"100,200,400"`` -> those."""
    from twinloop.errors import InputError

    fix = "give START:STOP:STEP (e.g. 50:500:50) or sizes separated by commas (e.g. 100,200,400)"
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[0] > parts[1]:
                raise ValueError
            grid = list(range(parts[0], parts[1] + 1, parts[2]))
        else:
            grid = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"--n {text!r} is not a grid of sample sizes; {fix}.") from None
    if not grid or min(grid) < 2 or len(grid) > MAX_GRID:
        raise InputError(f"--n {text!r} gives {len(grid)} sizes from {min(grid, default=0)}; expected 1 to "
                         f"{MAX_GRID} sizes of at least 2 participants; {fix}.")  # fmt: skip
    return sorted(set(grid))


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that exists and is not an empty folder, before anything runs."""
    from twinloop._paths import check_output
    from twinloop.errors import InputError

    check_output(out, "--out", "folder")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out '{out}' exists and is not empty; choose a new folder for the trial.")


def run_sections(spec: TrialSpec, data: TrialData) -> tuple[TrialData, pd.DataFrame, dict[str, Any]]:
    """Everything the spec asks for after the run: the twins' prognostic scores and the
    PROCOVA summary, the planned analyses, Kaplan-Meier curves, the external control arm and
    the subgroups (the first replicate's)."""
    import pandas as pd

    from twinloop.trials.analysis import analyse, kaplan_meier, km_medians

    asked = {k for k, v in spec.to_dict().items() if v}
    sections: dict[str, Any] = {}
    seed = int(spec.seed)
    if "prognostic" in asked:
        from twinloop.trials.procova import procova_summary, with_prognostic

        data = with_prognostic(spec, data, seed)
        endpoint = spec.prognostic.endpoint
        sections["procova"] = procova_summary(data.participants, endpoint, spec.control_arm,
                                              alpha=spec.analysis.alpha, seed=seed)  # fmt: skip
    results = analyse(data.participants, spec)
    events = [name for name, kind in spec.context.endpoints.items() if kind == "time_to_event"]
    if events:
        first = int(data.participants["replicate"].min())
        curves = [kaplan_meier(data.participants, e, replicate=first).assign(endpoint=e) for e in events]
        medians = [km_medians(data.participants, e, replicate=first).assign(endpoint=e) for e in events]
        sections["km"] = {
            "curves": pd.concat(curves, ignore_index=True),
            "medians": pd.concat(medians, ignore_index=True),
        }
    if "external_control" in asked:
        from twinloop.trials.external import external_control

        sections["external"] = external_control(spec, data, seed=seed)
    if "subgroups" in asked:
        from twinloop.trials.subgroups import subgroup_analysis

        sections["subgroups"] = {"forest": subgroup_analysis(data.participants, spec, seed=seed)}
    return data, results, sections


def summary_text(results: pd.DataFrame, flow: pd.DataFrame) -> str:
    """The plain-text summary: the flow per trial and the estimates (or rejection rates)."""
    from twinloop.trials.report import operating

    lines = ["participant flow (per trial)", flow.to_string(index=False), ""]
    if results.empty:
        return "\n".join([*lines, "no analysis could be fitted"])
    if results["replicate"].nunique() == 1:
        shown = results[SHOWN].to_string(index=False, float_format=lambda v: f"{v:.4g}")
        return "\n".join([*lines, "effect estimates", shown])
    import pandas as pd

    table = pd.DataFrame(operating(results))[["endpoint", "method", "trials", "rejection_rate", "cp_low", "cp_high",
                                              "mean_estimate"]]  # fmt: skip
    return "\n".join([*lines, "rejection rates over replicate trials [Clopper-Pearson 95 %]",
                      table.to_string(index=False, float_format=lambda v: f"{v:.4g}")])  # fmt: skip


@trial_app.command("run")
def run_command(
    spec: Annotated[Path, typer.Argument(help="trial spec (YAML)")],
    out: Annotated[Path, typer.Option("--out", help="new folder for the Parquet tables, report.html and manifest")],
    replicates: Annotated[int | None, typer.Option(help="replicate trials (default: the spec's)")] = None,
    n: Annotated[int | None, typer.Option("--n", help="participants per trial (default: the spec's)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (default: the spec's)")] = None,
) -> None:
    """Run a trial: screen, randomize, simulate, analyse as planned; write the results and report."""
    from twinloop._config import progress_shown
    from twinloop.trials.artifact import write_trial
    from twinloop.trials.run import run_trial

    check_out(out)
    trial = load_spec(spec, n=n, replicates=replicates, seed=seed)
    data = run_trial(trial, progress=progress_shown())
    data, results, sections = run_sections(trial, data)
    write_trial(out, data, results, **sections)
    typer.echo(summary_text(results, data.flow))
    typer.echo(f"\nwrote {out} (participants, flow, results{''.join(', ' + s for s in sections)}; report.html)")


@trial_app.command("power")
def power_command(
    spec: Annotated[Path, typer.Argument(help="trial spec (YAML)")],
    out: Annotated[Path, typer.Option("--out", help="new folder for the power curve, results and report")],
    n: Annotated[str, typer.Option("--n", help="sample sizes: START:STOP:STEP or a,b,c")] = "50:500:50",
    replicates: Annotated[int, typer.Option(help="replicate trials per sample size")] = 200,
    seed: Annotated[int | None, typer.Option(help="seed (default: the spec's)")] = None,
    target: Annotated[float, typer.Option(help="the power to reach; the smallest n that does is reported")] = 0.8,
) -> None:
    """Estimate power over a grid of sample sizes by simulating replicate trials."""
    from twinloop.errors import InputError
    from twinloop.trials.artifact import write_trial
    from twinloop.trials.power import power

    if not 0.0 < target < 1.0:
        raise InputError(f"--target must lie between 0 and 1 (a power); got {target}.")
    if replicates < 1:
        raise InputError(f"--replicates must be >= 1; got {replicates}.")
    grid = parse_grid(n)
    check_out(out)
    trial = load_spec(spec, seed=seed)
    result = power(trial, grid, replicates, int(trial.seed))
    write_trial(out, result.data, result.results, power={**vars_of(result), "target": target})
    typer.echo(result.summary_text(target))
    typer.echo(f"\nwrote {out} (power curve, results; report.html)")


def vars_of(result: Any) -> dict[str, Any]:
    """The tables and figures of a power result, as a trial section."""
    import dataclasses

    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in ("data", "results")}


@trial_app.command("report")
def report_command(folder: Annotated[Path, typer.Argument(help="a folder written by `twinloop trial run`")]) -> None:
    """Render report.html again from a trial's files (their hashes are checked first)."""
    from twinloop._atomic import write_atomic
    from twinloop.trials.artifact import REPORT, read_trial
    from twinloop.trials.report import render

    artifact = read_trial(folder)
    page, _ = render(artifact)
    write_atomic(folder / REPORT, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    typer.echo(f"wrote {folder / REPORT}")
