"""``make demo``: the 30 published virtual patients and a cohort sampled from the default
T1D population for one day under closed-loop basal-bolus insulin (corrections and rescue
carbohydrate, a noisy CGM), then a T1D and an oncology synthetic data product.

Writes Parquet trajectories, the two product directories, an HTML page with glucose
plots (percentile bands across the cohort) and the products' figures, and
``summary.json`` with the throughput and the products' headline figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from rich.console import Console

import twinloop as tl
from twinloop._atomic import write_atomic
from twinloop.cli.demo_control import run_control_demo
from twinloop.cli.demo_learn import run_learn_demo
from twinloop.cli.demo_products import make_products, section
from twinloop.cli.demo_trials import run_trials_demo
from twinloop.cli.demo_twin import run_twin_demo
from twinloop.cohort import Population
from twinloop.control import ClosedLoopResult, Patients, RescueCarbs, Scenario, basal_bolus, closed_loop
from twinloop.models import t1d_uva_padova as t1d

MEALS = t1d.STANDARD_MEALS
# One day, three meals, simglucose's basal-bolus controller with correction boluses, 15 g of
# rescue carbohydrate when the noisy GuardianRT CGM reads below 70 mg/dL (at most hourly).
SCENARIO = Scenario(days=1, meals=MEALS, rescue=RescueCarbs(), sensor="GuardianRT", noise=True, pump="Insulet")
EVERY_MIN = 5  # the cohort's trajectories are stored every 5 minutes


def run_patients(model: tl.models.Model, patients: Patients, seed: int) -> ClosedLoopResult:
    """The demo's closed loop for ``patients``. One Tsit5 step per minute: 10,000 patients in
    about 15 s instead of minutes, glucose within 0.6 mg/dL of adaptive steps (median 0.006)."""
    return closed_loop(model, patients, basal_bolus(), SCENARIO, seed=seed, accurate=False)


def trajectory_frame(result: ClosedLoopResult, every: int = 1) -> pd.DataFrame:
    """One row per patient and stored minute: glucose, CGM, insulin delivered, carbohydrate eaten."""
    columns = {"plasma_glucose_mg_dl": result.bg, "subcutaneous_glucose_mg_dl": result.sg, "cgm_mg_dl": result.cgm,
               "insulin_U_per_min": result.insulin, "carbs_g_per_min": result.carbs}  # fmt: skip
    minutes = result.minutes[::every]
    return pd.DataFrame(
        {
            "patient": np.repeat(np.asarray(result.ids, dtype=object), minutes.size),
            "group": np.repeat(np.asarray(result.groups, dtype=object), minutes.size),
            "minute": np.tile(minutes, result.n),
            **{name: values[:, ::every].ravel() for name, values in columns.items()},
        }
    )


def low_glucose(result: ClosedLoopResult) -> dict[str, Any]:
    """The lowest plasma glucose, and the share of patients (by group) who went below 54 and 70 mg/dL."""
    lowest = result.bg.min(axis=1)
    groups = np.asarray(result.groups)
    by_group = {
        str(g): {"below_54_pct": 100.0 * float(np.mean(lowest[groups == g] < 54)),
                 "below_70_pct": 100.0 * float(np.mean(lowest[groups == g] < 70))}
        for g in sorted(set(result.groups))
    }  # fmt: skip
    return {
        "min_glucose_mg_dl": float(lowest.min()),
        "below_54_pct": 100.0 * float(np.mean(lowest < 54)),
        "below_70_pct": 100.0 * float(np.mean(lowest < 70)),
        "rescue_g_per_patient": float(result.rescue_g.sum(axis=1).mean()),
        "by_group": by_group,
    }


def _figure(patients: ClosedLoopResult, cohort: ClosedLoopResult) -> go.Figure:
    fig = make_subplots(
        rows=2, cols=1, vertical_spacing=0.12,
        subplot_titles=(
            "Plasma glucose of the 30 published virtual patients",
            f"Plasma glucose across the cohort (n = {cohort.n}): median, 25-75 % and 5-95 % bands",
        ),
    )  # fmt: skip
    hours = patients.minutes / 60.0
    glucose = patients.bg
    for i, name in enumerate(patients.ids):
        group = name.split("#")[0]
        color = {"adolescent": "#1f77b4", "adult": "#2ca02c", "child": "#d62728"}[group]
        fig.add_trace(
            go.Scatter(x=hours, y=glucose[i], mode="lines", line={"width": 1, "color": color}, name=name,
                       legendgroup=group, showlegend=False, hovertemplate=f"{name}<br>%{{x:.2f}} h: %{{y:.0f}} mg/dL"),
            row=1, col=1,
        )  # fmt: skip
    cohort_hours = cohort.minutes[::EVERY_MIN] / 60.0
    q = np.nanpercentile(cohort.bg[:, ::EVERY_MIN], [5, 25, 50, 75, 95], axis=0)
    for lo, hi, alpha, label in ((0, 4, 0.15, "5-95 %"), (1, 3, 0.3, "25-75 %")):
        fig.add_trace(
            go.Scatter(x=cohort_hours, y=q[hi], mode="lines", line={"width": 0}, showlegend=False), row=2, col=1
        )
        fig.add_trace(
            go.Scatter(x=cohort_hours, y=q[lo], mode="lines", line={"width": 0}, fill="tonexty",
                       fillcolor=f"rgba(31,119,180,{alpha})", name=label),
            row=2, col=1,
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=cohort_hours, y=q[2], mode="lines", line={"color": "#1f77b4"}, name="median"), row=2, col=1
    )
    for row in (1, 2):
        for level in (70, 180):
            fig.add_hline(y=level, line={"dash": "dot", "color": "grey"}, row=row, col=1)
        fig.update_yaxes(title_text="mg/dL", row=row, col=1)
        fig.update_xaxes(title_text="hour of day", row=row, col=1)
    fig.update_layout(height=900, template="plotly_white", margin={"t": 60})
    return fig


def _time_in_range(glucose: np.ndarray) -> np.ndarray:
    return np.mean((glucose >= 70) & (glucose <= 180), axis=1) * 100.0


def run_governance(out: Path) -> tuple[dict[str, str], str]:
    """The four-layer governance report of the demo's NSCLC product and what was built on it."""
    import html

    from twinloop._config import progress_shown
    from twinloop.cli.govern import demo_inputs, write_report

    found = demo_inputs(out)
    paths = {k: found[k] for k in ("reference", "predictor", "posterior")}
    target = out / "governance" / "report.html"
    rows = write_report(found["product"] or out, target, paths, str(found["registry"]), 300, progress_shown())
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in rows)
    page = (
        "<h2>Governance</h2><p>The four-layer report (mechanistic core, data product, AI components, clinical "
        f"workflow) of the NSCLC product: <a href='governance/report.html'>governance/report.html</a> "
        f"(JSON beside it).</p><ul>{items}</ul>"
    )
    return dict(rows), page


def run_demo(
    out: Path,
    *,
    cohort_size: int,
    seed: int,
    console: Console,
    product_scale: float = 1.0,
    twin_members: int = 300,
    control_patients: int = 500,
    trial_scale: float = 0.5,
    trial_replicates: int = 40,
    t1d_trial: bool = True,
) -> dict[str, object]:
    """Run the demo, write its outputs under ``out`` and return the summary (``product_scale``,
    ``twin_members``, ``control_patients``, ``trial_scale`` and ``trial_replicates`` shrink it
    for a quick check; ``t1d_trial=False`` leaves out the T1D trial, whose loops compile slowly)."""
    model = tl.models.get("t1d-uva-padova")
    out.mkdir(parents=True, exist_ok=True)
    patients = run_patients(model, Patients.published(model), seed)
    write_atomic(out / "published_patients.parquet", lambda tmp: trajectory_frame(patients).to_parquet(tmp))
    console.print(f"30 published patients run closed-loop -> {out / 'published_patients.parquet'}")

    sampled = Patients.from_cohort(model, Population.default(model).sample(cohort_size, seed=seed))
    start = time.perf_counter()
    cohort = run_patients(model, sampled, seed)
    elapsed = time.perf_counter() - start
    frame = trajectory_frame(cohort, EVERY_MIN)
    write_atomic(out / "cohort.parquet", lambda tmp: frame.to_parquet(tmp))
    rate = cohort_size / elapsed
    console.print(
        f"cohort of {cohort_size} patients run closed-loop in {elapsed:.1f} s: {rate:,.0f} patient-days/s (1 process)"
    )

    tir = _time_in_range(cohort.bg)
    lows = low_glucose(cohort)
    summary: dict[str, object] = {
        "model": {"id": model.id, "version": model.version},
        "published_patients": patients.n,
        "cohort_size": cohort_size,
        "seed": seed,
        "cohort_seconds": elapsed,
        "patient_days_per_second": rate,
        "cohort_failures": int(cohort.failed.sum()),
        "closed_loop": {**cohort.lineage(), "published_patients": low_glucose(patients), "cohort": lows},
        "time_in_range_percent": {"median": float(np.median(tir)), "p5": float(np.percentile(tir, 5)),
                                  "p95": float(np.percentile(tir, 95))},
    }  # fmt: skip
    products = make_products(out, product_scale)
    console.print(f"products -> {out / 't1d-product'}, {out / 'nsclc-product'}")
    summary["products"] = {k: {"name": p.manifest["name"], "files": p.manifest["files"]} for k, p in products.items()}
    learn_summary, learn_html = run_learn_demo(out, out / "nsclc-product", product_scale)
    summary["learn"] = learn_summary
    console.print(f"AI components -> {out / 'learn'}")
    twin_summary, twin_html = run_twin_demo(out, twin_members)
    summary["twin"] = twin_summary
    console.print(f"twin {twin_summary['twin']}: {twin_summary['versions']} versions -> {twin_summary['registry']}")
    control_summary, control_html = run_control_demo(out, control_patients, seed)
    summary["controllers"] = control_summary
    console.print(f"PID and MPC compared on {control_patients} patients -> {out / 'control'}")
    trials_summary, trials_html = run_trials_demo(out, trial_scale, trial_replicates, t1d=t1d_trial)
    summary["trials"] = trials_summary
    console.print(f"in-silico trials -> {out / 'trials'}")
    governance, governance_html = run_governance(out)
    summary["governance"] = governance
    fig = _figure(patients, cohort)
    page = (
        "<html><head><meta charset='utf-8'><title>twinloop demo</title></head><body style='font-family:sans-serif'>"
        f"<h1>twinloop demo: {model.name}</h1>"
        f"<p>One day, meals of 50/70/80 g at 07:00/12:00/19:00, closed-loop: simglucose's basal-bolus "
        f"controller (meal and correction boluses) reads a noisy GuardianRT CGM every 5 min through an Insulet "
        f"pump, and a patient takes 15 g of rescue carbohydrate when the CGM reads below 70 mg/dL. "
        f"Cohort: {cohort_size} patients sampled from the default T1D population, {elapsed:.1f} s "
        f"({rate:,.0f} patient-days/s on one process); "
        f"time in range 70-180 mg/dL: median {np.median(tir):.0f} %; lowest plasma glucose "
        f"{lows['min_glucose_mg_dl']:.0f} mg/dL; {lows['below_54_pct']:.1f} % of patients below 54 mg/dL and "
        f"{lows['below_70_pct']:.1f} % below 70 mg/dL at some time, "
        f"{lows['rescue_g_per_patient']:.0f} g of rescue carbohydrate per patient on average.</p>"
        + fig.to_html(full_html=False, include_plotlyjs=True)
        + section(products)
        + learn_html
        + twin_html
        + control_html
        + trials_html
        + governance_html
        + "</body></html>"
    )
    write_atomic(out / "index.html", lambda tmp: Path(tmp).write_text(page))
    write_atomic(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    console.print(f"HTML page -> {out / 'index.html'}")
    return summary
