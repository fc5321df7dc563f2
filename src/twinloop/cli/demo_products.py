"""The demo's synthetic data products: a closed-loop T1D CGM product labelled by
hypoglycaemia and an oncology product with two chemotherapy schedules and RECIST outcomes, with figures
for the demo page. The specs mirror ``examples/`` at demo size."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from twinloop.control.product import generate_product
from twinloop.products.dataset import Product
from twinloop.products.spec import ProductSpec

T1D_DEMO: dict[str, Any] = {
    "name": "demo-t1d-adolescents",
    "model": "t1d-uva-padova",
    "population": "default",
    "condition": {"group": ["adolescent"]},
    "n": 2000,
    "seed": 7,
    "duration": 1440,
    "resolution": 5,
    "chunk_size": 1000,
    "treatment": {"kind": "basal_bolus", "meals": [[420, 50], [720, 70], [1140, 80]]},
    "observations": [{"name": "cgm", "observable": "subcutaneous_glucose", "schedule": {"every": 5},
                      "error": {"kind": "cgm", "sensor": "GuardianRT"}, "missing": {"mcar": 0.02}}],
    "outcomes": {"kind": "glycaemic", "observable": "plasma_glucose"},
    "control": {"controller": "basal-bolus", "rescue": {"threshold_mg_dl": 70, "grams": 15, "refractory_min": 60},
                "sensor": "GuardianRT", "noise": True, "pump": "Insulet"},
}  # fmt: skip
NSCLC_DEMO: dict[str, Any] = {
    "name": "demo-nsclc-two-schedules",
    "model": "tgi-claret",
    "population": "default",
    "n": 1000,
    "seed": 11,
    "duration": 364,
    "resolution": 1,
    "chunk_size": 500,
    "arms": {
        "three-weekly": {"kind": "chemotherapy", "dose_mg": 1200, "cycle_days": 21, "days_on": 1, "n_cycles": 6},
        "weekly": {"kind": "chemotherapy", "dose_mg": 400, "cycle_days": 7, "days_on": 1, "n_cycles": 18},
    },
    "observations": [{"name": "ct", "observable": "sum_of_diameters", "schedule": {"every": 42, "jitter": 7},
                      "error": {"kind": "combined", "sd": 1.0, "cv": 0.05}, "dropout": {"hazard": 0.001}}],
    "outcomes": {"kind": "recist", "observation": "ct"},
}  # fmt: skip


def make_products(out: Path, scale: float = 1.0) -> dict[str, Product]:
    """Generate both products under ``out`` (replacing earlier demo products), with
    ``scale`` times the demo's patient numbers."""
    products = {}
    for key, raw in (("t1d", T1D_DEMO), ("nsclc", NSCLC_DEMO)):
        target = out / f"{key}-product"
        shutil.rmtree(target, ignore_errors=True)
        n = max(20, round(raw["n"] * scale))
        spec = ProductSpec.from_dict({**raw, "n": n, "chunk_size": min(raw["chunk_size"], n)})
        generate_product(spec, target, progress=True)
        products[key] = Product.open(target)
    return products


def kaplan_meier(times: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Kaplan-Meier survival curve as step coordinates."""
    order = np.argsort(times, kind="stable")
    t, e = times[order], events[order]
    at_risk = len(t) - np.arange(len(t))
    surv = np.cumprod(np.where(e, 1 - 1 / at_risk, 1.0))
    return np.r_[0.0, t], np.r_[1.0, surv]


def t1d_figure(product: Product) -> go.Figure:
    obs = product.table("observations", filters=[("subject_id", "in", [f"vp{i:05d}" for i in range(12)])])
    outcomes = product.table("outcomes")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("CGM readings, 12 virtual adolescents (mg/dL)",
                                                        "Time in range 70-180 mg/dL, all patients (%)"))  # fmt: skip
    for sid, rows in obs.groupby("subject_id", observed=True):
        fig.add_trace(go.Scatter(x=rows["time"], y=rows["value"], mode="lines", name=str(sid), line={"width": 1}), 1, 1)
    fig.add_trace(go.Histogram(x=outcomes["time_in_range_pct"], nbinsx=40, name="time in range"), 1, 2)
    fig.update_layout(height=420, showlegend=False)
    return fig


def nsclc_figure(product: Product) -> go.Figure:
    outcomes = product.table("outcomes")
    obs = product.table("observations", filters=[("subject_id", "in", list(outcomes["subject_id"][:60]))])
    arms = sorted(outcomes["arm"].unique())
    colours = dict(zip(arms, ("#1f77b4", "#d62728", "#2ca02c"), strict=False))
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Sum of diameters at CT scans (mm)", "Best overall response",
                                                        "Progression-free survival"))  # fmt: skip
    arm_of = outcomes.set_index("subject_id")["arm"]
    for sid, rows in obs.groupby("subject_id", observed=True):
        arm = arm_of[str(sid)]
        fig.add_trace(go.Scatter(x=rows["time"], y=rows["value"], mode="lines+markers", line={"color": colours[arm],
                                 "width": 1}, marker={"size": 3}, name=arm, showlegend=False), 1, 1)  # fmt: skip
    responses = ["CR", "PR", "SD", "PD", "NE"]
    for arm in arms:
        share = outcomes[outcomes["arm"] == arm]["best_overall_response"].value_counts(normalize=True)
        fig.add_trace(go.Bar(x=responses, y=[100 * share.get(r, 0.0) for r in responses], name=arm,
                             marker_color=colours[arm]), 1, 2)  # fmt: skip
        rows = outcomes[outcomes["arm"] == arm]
        t, s = kaplan_meier(rows["pfs_days"].to_numpy(), rows["progression_event"].to_numpy())
        fig.add_trace(go.Scatter(x=t, y=s, mode="lines", line={"shape": "hv", "color": colours[arm]}, name=arm,
                                 showlegend=False), 1, 3)  # fmt: skip
    fig.update_yaxes(title_text="% of patients", row=1, col=2)
    fig.update_xaxes(title_text="days", row=1, col=3)
    fig.update_layout(height=420)
    return fig


def section(products: dict[str, Product]) -> str:
    """HTML for the products part of the demo page."""
    t1d, nsclc = products["t1d"], products["nsclc"]
    t1d_out = t1d.table("outcomes")
    onc_out = nsclc.table("outcomes")
    orr = onc_out.groupby("arm")["objective_response"].mean().mul(100).round(1).to_dict()
    median_pfs = {arm: _median_survival(rows) for arm, rows in onc_out.groupby("arm")}
    return (
        "<h2>Synthetic data products</h2>"
        f"<p><b>{t1d.manifest['name']}</b>: {len(t1d_out)} adolescents with type 1 diabetes, one day under "
        f"closed-loop basal-bolus insulin with correction boluses and 15 g rescue carbohydrate below 70 mg/dL "
        f"(the controller's own noisy CGM), observed as 5-min GuardianRT CGM with sensor noise, "
        f"{t1d.manifest['files']['observations.parquet']['rows']:,} observations; "
        f"{100 * t1d_out['hypoglycaemia'].mean():.1f} % labelled with hypoglycaemia (at least 15 min below 70 mg/dL). "
        f"Directory <code>t1d-product/</code>; trace a row with <code>twinloop lineage</code>.</p>"
        + t1d_figure(t1d).to_html(full_html=False, include_plotlyjs=False)
        + f"<p><b>{nsclc.manifest['name']}</b>: {len(onc_out)} patients randomized to two chemotherapy schedules "
        f"(Claret 2009 TGI core), CT scans every 6 weeks +- 1 week with 5 % measurement error and dropout; "
        f"objective response rate {orr}; median PFS (Kaplan-Meier) {median_pfs} days. "
        f"Directory <code>nsclc-product/</code>.</p>"
        + nsclc_figure(nsclc).to_html(full_html=False, include_plotlyjs=False)
    )


def _median_survival(rows: pd.DataFrame) -> float | None:
    t, s = kaplan_meier(rows["pfs_days"].to_numpy(), rows["progression_event"].to_numpy())
    below = np.flatnonzero(s <= 0.5)
    return float(t[below[0]]) if below.size else None
