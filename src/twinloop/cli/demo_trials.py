"""The demo's in-silico trials: the oncology example (two chemotherapy schedules) with a power
curve over a few replicate trials, and the T1D example (two controllers after a run-in), each
written beside the page as a trial artifact with its own report."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def demo_spec(name: str, scale: float, **sizes: int) -> Any:
    """The example spec ``name`` with its sizes (``n``, the PROCOVA bank, the external arm)
    shrunk by ``scale`` for a quick run."""
    from twinloop._yaml import load_yaml
    from twinloop.trials.spec import TrialSpec

    path = EXAMPLES / name
    raw = load_yaml(path)
    raw["n"] = max(sizes.get("n", 8), int(raw["n"] * scale))
    if raw.get("prognostic"):
        raw["prognostic"]["bank"] = max(sizes.get("bank", 200), int(raw["prognostic"]["bank"] * scale))
    if raw.get("external_control"):
        raw["external_control"]["n"] = max(sizes.get("external", 200), int(raw["external_control"]["n"] * scale))
    return TrialSpec.from_dict(raw, base_dir=path.parent)


def run_one(out: Path, spec: Any) -> tuple[Any, Any]:
    """Run a trial and everything its spec asks for; write it under ``out``."""
    from twinloop.cli.trial import run_sections
    from twinloop.trials.artifact import write_trial
    from twinloop.trials.run import run_trial

    data = run_trial(spec)
    data, results, sections = run_sections(spec, data)
    write_trial(out, data, results, **sections)
    return data, results


def run_trials_demo(
    out: Path, scale: float, power_replicates: int = 20, *, t1d: bool = True
) -> tuple[dict[str, Any], str]:
    """Both example trials at ``scale`` of their size (the T1D one only with ``t1d``: its closed
    loops compile for minutes on a cold cache), and the oncology trial's power over a grid of
    sample sizes with ``power_replicates`` trials; the summary and the page's section."""
    import shutil

    from twinloop.cli.trial import power_curve
    from twinloop.trials.artifact import read_trial, write_trial
    from twinloop.trials.report import render

    root = out / "trials"
    shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {}
    parts = []
    nsclc = demo_spec("trial_nsclc.yaml", scale, n=40)
    trials = {"nsclc": nsclc}
    if t1d:
        trials["t1d"] = demo_spec("trial_t1d_controllers.yaml", scale, n=8)
    for key, spec in trials.items():
        data, results = run_one(root / key, spec)
        summary[key] = _headline(spec, data, results)
    grid = sorted({max(8, int(nsclc.n * f)) for f in (0.5, 1.0, 1.5, 2.0)})
    data, results, section = power_curve(nsclc.with_(n=max(grid), replicates=power_replicates), grid, 0.8)
    write_trial(root / "nsclc-power", data, results, power=section)
    summary["nsclc-power"] = {"n": grid, "replicates": power_replicates, "sample_size": section["sample_size"]}
    shown = [("nsclc", ONCOLOGY), ("nsclc-power", POWER)] + ([("t1d", DIABETES)] if t1d else [])
    for key, words in shown:
        artifact = read_trial(root / key)
        body, figures = render(artifact, part=True)
        summary.setdefault(key, {})["figures"] = figures
        link = f"trials/{key}/report.html"
        parts.append(f"<h3>{html.escape(words)}</h3><p>Full report: <a href='{link}'>{link}</a>.</p>{body}")
    return summary, "<h2>In-silico trials</h2>" + INTRO + "".join(parts)


INTRO = (
    "<p>Trials specified in YAML (<code>examples/trial_nsclc.yaml</code>, <code>examples/trial_t1d_controllers.yaml"
    "</code>), run on virtual cohorts: screening on eligibility criteria, randomization, the observation protocol, "
    "endpoints with dropout and censoring, and the planned analyses (statsmodels, lifelines). Shrunk here to run in "
    "seconds; <code>twinloop trial run SPEC --out DIR</code> runs them at their own sizes.</p>"
)
ONCOLOGY = "NSCLC: three-weekly against weekly chemotherapy (tgi-claret)"
DIABETES = "Type 1 diabetes: basal-bolus against zone MPC after a basal-bolus run-in"
POWER = "NSCLC: power by simulation over a few replicate trials"


def _headline(spec: Any, data: Any, results: Any) -> dict[str, Any]:
    primary = results[results["endpoint"] == spec.analysis.primary]
    first = primary.iloc[0] if len(primary) else None
    return {
        "randomized": int(data.flow["randomized"].sum()),
        "primary": spec.analysis.primary,
        "estimate": None if first is None else float(first["estimate"]),
        "ci": None if first is None else [float(first["ci_low"]), float(first["ci_high"])],
        "p_value": None if first is None else float(first["p_value"]),
    }
