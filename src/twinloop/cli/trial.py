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


def load_spec(path: Path, *, n: int | None = None, replicates: int | None = None, seed: int | None = None) -> Any:
    """The trial spec at ``path`` with the command line's overrides."""
    from twinloop.trials.spec import TrialSpec

    spec = TrialSpec.from_yaml(path)
    overrides = {k: v for k, v in {"n": n, "replicates": replicates, "seed": seed}.items() if v is not None}
    return spec.with_(**overrides) if overrides else spec


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
        endpoint = str(spec.prognostic.endpoint)  # set whenever the section is given
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
        sections["subgroups"] = subgroup_section(spec, data.participants, seed)
    return data, results, sections


def subgroup_section(spec: TrialSpec, participants: pd.DataFrame, seed: int) -> dict[str, Any]:
    """The forest rows of the first replicate: prespecified subgroups, and the discovered ones
    when discovery can run (a trial too small to split is said so, not refused after its run)."""
    from twinloop.errors import InputError
    from twinloop.trials.subgroups import subgroup_analysis, subgroup_effects

    first = int(participants["replicate"].min())
    try:
        return {"forest": subgroup_analysis(participants, spec, replicate=first, seed=seed)}
    except InputError as exc:
        if spec.subgroups.discover is None:
            raise
        forest = subgroup_effects(participants, spec, replicate=first)
        return {"forest": forest, "discovery": f"not run: {exc}"}


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
    replicates: Annotated[int, typer.Option(help="replicate trials (each analysed at every n)")] = 200,
    seed: Annotated[int | None, typer.Option(help="seed (default: the spec's)")] = None,
    target: Annotated[float, typer.Option(help="the power to reach; the smallest n that does is reported")] = 0.8,
) -> None:
    """Estimate power over a grid of sample sizes by simulating replicate trials."""
    from twinloop.errors import InputError
    from twinloop.trials.artifact import write_trial
    from twinloop.trials.power import parse_n_grid

    if not 0.0 < target < 1.0:
        raise InputError(f"--target must lie between 0 and 1 (a power); got {target}.")
    if replicates < 1:
        raise InputError(f"--replicates must be >= 1; got {replicates}.")
    grid = parse_n_grid(n)
    check_out(out)
    trial = load_spec(spec, n=max(grid), replicates=replicates, seed=seed)
    data, results, section = power_curve(trial, grid, target)
    write_trial(out, data, results, power=section)
    typer.echo(power_text(section))
    typer.echo(f"\nwrote {out} (power curve, the largest trials' results; report.html)")


def power_curve(spec: TrialSpec, grid: list[int], target: float) -> tuple[TrialData, pd.DataFrame, dict[str, Any]]:
    """Simulate ``spec.replicates`` trials of ``max(grid)`` participants once and analyse the
    first n of each at every n of the grid (:func:`twinloop.trials.power.operating_characteristics`);
    the trials, their analyses at the largest n and the power section of the artifact."""
    from twinloop.trials.analysis import analyse
    from twinloop.trials.power import operating_characteristics
    from twinloop.trials.run import run_trial

    data = run_trial(spec)
    if spec.to_dict().get("prognostic"):
        from twinloop.trials.procova import with_prognostic

        data = with_prognostic(spec, data, int(spec.seed))
    result = operating_characteristics(data.participants, spec, grid)
    table, note = with_closed_form(result.table, data.participants, spec)
    section = {"curve": table, "target": target, "alpha": result.alpha, "replicates": result.replicates,
               "sample_size": result.sample_size(target).to_dict(), "closed_form": note}  # fmt: skip
    return data, analyse(data.participants, spec), section


def with_closed_form(table: pd.DataFrame, participants: pd.DataFrame, spec: TrialSpec) -> tuple[pd.DataFrame, str]:
    """``table`` with ``closed_form``: for a continuous primary endpoint of a two-arm trial, the
    two-sample t-test's power (statsmodels) at the simulated difference and SD, over the
    analysable share of each n, on the rows of the primary endpoint's first method."""
    import numpy as np

    from twinloop.trials.power import closed_form_power

    primary = spec.analysis.primary
    table = table.assign(closed_form=np.nan)
    if primary is None or spec.context.endpoints.get(primary) != "continuous" or len(spec.arms) != 2:
        return table, "none: the primary endpoint is not continuous in a two-arm trial"
    seen = participants[participants[primary].notna() & ~participants["simulation_failed"].astype(bool)]
    other = next(a for a in spec.arms if a != spec.control_arm)
    control, treated = (seen.loc[seen["arm"] == a, primary].to_numpy(float) for a in (spec.control_arm, other))
    if min(control.size, treated.size) < 3:
        return table, "none: too few participants with the primary endpoint"
    delta = float(treated.mean() - control.mean())
    sd = float(np.sqrt((control.var(ddof=1) + treated.var(ddof=1)) / 2))
    share = len(seen) / len(participants)
    first = table.loc[table["endpoint"] == primary, "method"].iloc[0]
    rows = (table["endpoint"] == primary) & (table["method"] == first)
    sizes = np.maximum(2.0, table.loc[rows, "n"].to_numpy(float) * share / 2)
    table.loc[rows, "closed_form"] = closed_form_power(delta, sd, sizes, alpha=spec.analysis.alpha)
    note = (f"two-sample t-test power (statsmodels TTestIndPower, alpha {spec.analysis.alpha:g}) at the simulated "
            f"difference {delta:.4g} and SD {sd:.4g} of {primary}, unadjusted, with {100 * share:.0f} % of each n "
            f"analysable; on the rows of {primary} by {first}")  # fmt: skip
    return table, note


def power_text(section: dict[str, Any]) -> str:
    """The plain-text summary of a power run: the curve and the sample size for the target."""
    shown = section["curve"][["n", "endpoint", "method", "power", "ci_low", "ci_high", "closed_form"]]
    size = section["sample_size"]
    found = "not reached" if size["n"] is None else f"n = {size['n']:.0f}"
    return "\n".join([f"power over {section['replicates']} replicate trials [Clopper-Pearson 95 %]",
                      shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"), "",
                      f"target power {section['target']:g} for {size['endpoint']} by {size['method']}: {found} "
                      f"({size['note']})"])  # fmt: skip


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
