"""``make demo``: the 30 published virtual patients and a cohort sampled from the default
T1D population for one day, then a T1D and an oncology synthetic data product.

Writes Parquet trajectories, the two product directories, an HTML page with glucose
plots (percentile bands across the cohort) and the products' figures, and
``summary.json`` with the throughput and the products' headline figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from rich.console import Console

import twinloop as tl
from twinloop._atomic import write_atomic
from twinloop.cli.demo_learn import run_learn_demo
from twinloop.cli.demo_products import make_products, section
from twinloop.cli.demo_twin import run_twin_demo
from twinloop.cohort import Population
from twinloop.models import t1d_uva_padova as t1d
from twinloop.simulate.trajectories import Trajectories

MEALS = t1d.STANDARD_MEALS
# Parameters that leave the basal steady state unchanged (meal absorption, insulin
# action dynamics, sensor delay); perturbing them keeps every patient's x0 valid.
PERTURBED = ("kabs", "kmax", "kmin", "Vmx", "p2u", "ki", "ksc")
CV = 0.25  # coefficient of variation of the log-normal perturbations


def published_patients(model: tl.models.Model) -> tuple[list[str], np.ndarray, list[tl.Inputs]]:
    """The 30 patients with their own carbohydrate ratios (basal-bolus, three meals)."""
    names = list(model.presets)
    params = np.stack([model.preset(n) for n in names])
    therapy = t1d.therapies()
    plans = [
        t1d.basal_bolus(model.param_map(p), MEALS, carb_ratio_g_per_U=therapy[n].carb_ratio_g_per_U)
        for n, p in zip(names, params, strict=True)
    ]
    return names, params, plans


def perturbed_cohort(model: tl.models.Model, n: int, seed: int) -> tuple[np.ndarray, list[tl.Inputs]]:
    """``n`` patients: a random published patient each, with log-normal perturbations."""
    rng = np.random.default_rng(seed)
    names, base, _ = published_patients(model)
    pick = rng.integers(0, len(names), size=n)
    params = base[pick].copy()
    lower = np.array([p.lower for p in model.parameters])
    upper = np.array([p.upper for p in model.parameters])
    for name in PERTURBED:
        j = model.parameter_names.index(name)
        params[:, j] *= np.exp(rng.normal(-0.5 * CV**2, CV, size=n))
    params = np.clip(params, lower, upper)
    therapy = t1d.therapies()
    plans = [
        t1d.basal_bolus(model.param_map(p), MEALS, carb_ratio_g_per_U=therapy[names[k]].carb_ratio_g_per_U)
        for k, p in zip(pick, params, strict=True)
    ]
    return params, plans


def _figure(patients: Trajectories, cohort: Trajectories) -> go.Figure:
    fig = make_subplots(
        rows=2, cols=1, vertical_spacing=0.12,
        subplot_titles=(
            "Plasma glucose of the 30 published virtual patients",
            f"Plasma glucose across the cohort (n = {cohort.n_patients}): median, 25-75 % and 5-95 % bands",
        ),
    )  # fmt: skip
    hours = patients.times / 60.0
    glucose = patients["plasma_glucose"]
    for i, name in enumerate(patients.patient_ids):
        group = name.split("#")[0]
        color = {"adolescent": "#1f77b4", "adult": "#2ca02c", "child": "#d62728"}[group]
        fig.add_trace(
            go.Scatter(x=hours, y=glucose[i], mode="lines", line={"width": 1, "color": color}, name=name,
                       legendgroup=group, showlegend=False, hovertemplate=f"{name}<br>%{{x:.2f}} h: %{{y:.0f}} mg/dL"),
            row=1, col=1,
        )  # fmt: skip
    cohort_hours = cohort.times / 60.0
    q = np.nanpercentile(cohort["plasma_glucose"], [5, 25, 50, 75, 95], axis=0)
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
    out: Path, *, cohort_size: int, seed: int, console: Console, product_scale: float = 1.0, twin_members: int = 300
) -> dict[str, object]:
    """Run the demo, write its outputs under ``out`` and return the summary (``product_scale``
    and ``twin_members`` shrink it for a quick check)."""
    model = tl.models.get("t1d-uva-padova")
    out.mkdir(parents=True, exist_ok=True)
    names, params, plans = published_patients(model)
    patients = tl.simulate(model, params, plans, times=np.arange(0.0, 1441.0), patient_ids=names, progress=False)
    patients.to_parquet(out / "published_patients.parquet")
    console.print(f"30 published patients simulated -> {out / 'published_patients.parquet'}")

    sampled = Population.default(model).sample(cohort_size, seed=seed)
    cohort_plan = t1d.basal_bolus(
        sampled.param_map(), MEALS, carb_ratio_g_per_U=sampled.covariates["carb_ratio"].to_numpy()
    )
    start = time.perf_counter()
    cohort = tl.simulate(model, sampled.parameters, cohort_plan, times=np.arange(0.0, 1441.0, 5.0), chunk_size=2000)
    elapsed = time.perf_counter() - start
    cohort.to_parquet(out / "cohort.parquet")
    rate = cohort_size / elapsed
    console.print(
        f"cohort of {cohort_size} patients simulated in {elapsed:.1f} s: {rate:,.0f} patient-days/s (1 process)"
    )

    tir = _time_in_range(cohort["plasma_glucose"])
    summary: dict[str, object] = {
        "model": {"id": model.id, "version": model.version},
        "published_patients": len(names),
        "cohort_size": cohort_size,
        "seed": seed,
        "cohort_seconds": elapsed,
        "patient_days_per_second": rate,
        "cohort_failures": len(cohort.failures),
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
    governance, governance_html = run_governance(out)
    summary["governance"] = governance
    fig = _figure(patients, cohort)
    page = (
        "<html><head><meta charset='utf-8'><title>twinloop demo</title></head><body style='font-family:sans-serif'>"
        f"<h1>twinloop demo: {model.name}</h1>"
        f"<p>One day, meals of 50/70/80 g at 07:00/12:00/19:00, open-loop basal-bolus insulin. "
        f"Cohort: {cohort_size} patients sampled from the default T1D population, {elapsed:.1f} s "
        f"({rate:,.0f} patient-days/s on one process); "
        f"time in range 70-180 mg/dL: median {np.median(tir):.0f} %.</p>"
        + fig.to_html(full_html=False, include_plotlyjs=True)
        + section(products)
        + learn_html
        + twin_html
        + governance_html
        + "</body></html>"
    )
    write_atomic(out / "index.html", lambda tmp: Path(tmp).write_text(page))
    write_atomic(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    console.print(f"HTML page -> {out / 'index.html'}")
    return summary
