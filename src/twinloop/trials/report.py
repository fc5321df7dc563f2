"""The HTML report of a trial: CONSORT flow, effect estimates, Kaplan-Meier curves, power curve,
forest plot of subgroups, PROCOVA and external-control sections.

One offline page (plotly.js embedded once) rendered from a
:class:`~twinloop.trials.artifact.TrialArtifact` alone, so ``twinloop trial report DIR`` draws it
again from the files. Every string that came from the user (arm, endpoint, subgroup names,
formulas) is escaped. The tables it draws from, by column:

- ``km`` (its ``curves`` table): ``endpoint, arm, time, survival, ci_low, ci_high`` (and ``replicate``:
  the first is drawn);
- ``power``: ``n, endpoint, method, power`` with ``rejections`` and ``replicates`` (Clopper-Pearson
  bands are computed when ``ci_low``/``ci_high`` are absent) and optionally ``closed_form``;
- ``subgroups`` (its ``forest`` table): ``label, kind, estimate, ci_low, ci_high`` (``kind``: overall,
  prespecified or discovered; ``n``, ``measure`` optional).

Any other table or summary of a section is shown as a table.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twinloop._html import Page, table

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from twinloop.trials.artifact import TrialArtifact

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
FLOW_STYLE = (".flow{display:flex;flex-direction:column;align-items:center;gap:4px;margin:1em 0}"
              ".flow .row{display:flex;gap:24px;justify-content:center}.flow .box{border:2px solid #446;"
              "border-radius:4px;padding:6px 14px;min-width:150px;text-align:center;background:#f7f7fc;"
              "font-size:13px}.flow .side{border-style:dashed;color:#555}"
              ".flow .arrow{color:#446;font-size:18px}")  # fmt: skip
NULL_VALUE = {"difference": 0.0, "odds_ratio": 1.0, "hazard_ratio": 1.0, "ratio": 1.0}
SHOWN_ROWS = 200


def render(artifact: TrialArtifact, *, part: bool = False) -> tuple[str, list[str]]:
    """The report page and the names of the figures it draws; with ``part``, its sections
    (no run table, headings one level down, no plotly.js) to place in another page."""
    spec = artifact.spec
    page = Page(f"In-silico trial: {spec.get('name', '')}", plotlyjs=not part)
    figures: list[str] = []
    if not part:
        page.add(run_section(artifact))
    flow = artifact.table("flow")
    if flow is not None:
        page.add(flow_section(flow, artifact.table("participants"), spec))
        figures.append("consort")
    results = artifact.table("results")
    if results is not None:
        page.add(effects_section(results, spec))
        figures.append("effects")
    drawers = (("km", km_section), ("power", power_section), ("subgroups", subgroups_section),
               ("procova", procova_section), ("external", external_section))  # fmt: skip
    for name, draw in drawers:
        if artifact.has(name):
            figures += draw(page, artifact)
    if part:
        return page.body().replace("<h3>", "<h5>").replace("</h3>", "</h5>").replace("<h2>", "<h4>").replace(
            "</h2>", "</h4>"
        ), figures
    return page.render(), figures


def run_section(artifact: TrialArtifact) -> str:
    """What was run: model, arms, size, replicates, seed, spec hash."""
    spec, manifest = artifact.spec, artifact.manifest
    arms = list(spec.get("arms", {}))
    rows = [
        {"item": "model", "value": spec.get("model", "")},
        {"item": "arms", "value": ", ".join(arms)},
        {"item": "control arm", "value": spec.get("control_arm") or (arms[0] if arms else "")},
        {"item": "participants randomized per trial", "value": spec.get("n", "")},
        {"item": "replicate trials", "value": spec.get("replicates", "")},
        {"item": "seed", "value": spec.get("seed", "")},
        {"item": "primary endpoint", "value": primary(spec)},
        {"item": "spec SHA-256", "value": manifest.get("spec_hash", "")},
        {"item": "twinloop", "value": manifest.get("twinloop_version", "")},
    ]
    return "<h2>Trial</h2>" + table(rows)


def primary(spec: Mapping[str, Any]) -> str:
    analysis = spec.get("analysis") or {}
    found = analysis.get("primary") if isinstance(analysis, Mapping) else None
    return str(found or next(iter(spec.get("endpoints") or {}), ""))


def alpha(spec: Mapping[str, Any]) -> float:
    analysis = spec.get("analysis") or {}
    return float(analysis.get("alpha", 0.05)) if isinstance(analysis, Mapping) else 0.05


# --- CONSORT flow --------------------------------------------------------------------------
def flow_section(flow: pd.DataFrame, participants: pd.DataFrame | None, spec: Mapping[str, Any]) -> str:
    """The CONSORT diagram as boxes: totals for one trial, means per trial over replicates."""
    import numpy as np

    replicates = len(flow)
    per = flow.drop(columns=["replicate"], errors="ignore").mean(numeric_only=True)

    def count(column: str) -> str:
        value = float(per.get(column, np.nan))
        if not np.isfinite(value):
            return "?"
        return f"{value:,.0f}" if replicates == 1 else f"{value:,.1f}"

    arms = [c.removeprefix("randomized:") for c in flow.columns if c.startswith("randomized:")]
    analysed = _analysed_by_arm(participants, primary(spec), replicates)
    excluded = per.get("screened", np.nan) - per.get("eligible", np.nan)
    digits = 0 if replicates == 1 else 1
    excluded_text = f"{excluded:,.{digits}f}" if np.isfinite(excluded) else "?"

    def box(text: str, side: bool = False) -> str:
        return f"<div class='box{' side' if side else ''}'>{text}</div>"

    arrow = "<div class=arrow>&#8595;</div>"
    arm_boxes = "".join(
        "<div style='display:flex;flex-direction:column;align-items:center;gap:4px'>"
        + box(f"<b>{html.escape(arm)}</b><br>randomized {count('randomized:' + arm)}")
        + arrow
        + box(f"completed {count('completed:' + arm)}")
        + arrow
        + box(f"analysed {analysed.get(arm, '?')}")
        + "</div>"
        for arm in arms
    )
    note = "" if replicates == 1 else f"<p class=note>Mean count per trial over {replicates} replicate trials.</p>"
    return (
        f"<h2>Participant flow (CONSORT)</h2><style>{FLOW_STYLE}</style>{note}<div class=flow>"
        + box(f"screened {count('screened')}")
        + arrow
        + "<div class=row>"
        + box(f"eligible {count('eligible')}")
        + box(f"not eligible {excluded_text}", True)
        + "</div>"
        + arrow
        + box(f"randomized {count('randomized')}")
        + arrow
        + f"<div class=row>{arm_boxes}</div>"
        + f"</div><p class=note>Analysed: participants whose primary endpoint ({html.escape(primary(spec))}) was "
        f"observed ({count('analysed')} in all); completed: followed to the end of the trial.</p>"
    )


def _analysed_by_arm(participants: pd.DataFrame | None, endpoint: str, replicates: int) -> dict[str, str]:
    if participants is None or endpoint not in participants.columns or "arm" not in participants.columns:
        return {}
    seen = participants[endpoint].notna()
    if "simulation_failed" in participants.columns:
        seen &= ~participants["simulation_failed"].astype(bool)
    counts = participants[seen].groupby("arm").size() / max(replicates, 1)
    return {str(k): (f"{v:,.0f}" if replicates == 1 else f"{v:,.1f}") for k, v in counts.items()}


# --- effect estimates ----------------------------------------------------------------------
def ordered(results: pd.DataFrame, spec: Mapping[str, Any]) -> pd.DataFrame:
    """``results`` with the primary endpoint first, then the spec's endpoint order."""
    names = [primary(spec), *[e for e in (spec.get("endpoints") or {}) if e != primary(spec)]]
    rank = {name: k for k, name in enumerate(names)}
    key = results["endpoint"].map(lambda e: rank.get(e, len(rank)))
    return results.assign(_rank=key).sort_values(["_rank", "replicate"], kind="stable").drop(columns="_rank")


def effects_section(results: pd.DataFrame, spec: Mapping[str, Any]) -> str:
    """Estimates with CIs and p-values (one trial), or rejection rates with Clopper-Pearson
    intervals and the spread of estimates (replicate trials)."""
    if results.empty:
        return "<h2>Effect estimates</h2><p class=note>No analysis was planned or none could be fitted.</p>"
    results = ordered(results, spec)
    level = 100 * (1 - alpha(spec))
    if results["replicate"].nunique() == 1:
        rows = [{**r, "primary": "yes" if r["endpoint"] == primary(spec) else ""} for r in _records(results)]
        columns = ["endpoint", "primary", "method", "comparison", "measure", "estimate", "ci_low", "ci_high",
                   "p_value", "n", "reject"]  # fmt: skip
        return (f"<h2>Effect estimates</h2><p class=note>{level:.0f} % confidence intervals; reject: p below "
                f"alpha = {alpha(spec):g}.</p>" + table(rows, columns))  # fmt: skip
    return ("<h2>Effect estimates over replicate trials</h2><p class=note>Per analysis: the share of trials "
            f"that rejected the null (p below alpha = {alpha(spec):g}) with its Clopper-Pearson 95 % interval, "
            "and the mean and 2.5-97.5 % range of the estimates.</p>" + table(operating(results)))  # fmt: skip


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial proportion ``k / n``."""
    from scipy.stats import binomtest

    if n <= 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def operating(results: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per endpoint, method, comparison and measure: rejection rate [CP 95 %] and estimates."""
    rows = []
    keys = ["endpoint", "method", "comparison", "measure"]
    for key, group in results.groupby(keys, sort=False):
        fitted = group[group["p_value"].notna()]
        k, n = int(fitted["reject"].astype(bool).sum()), len(fitted)
        low, high = clopper_pearson(k, n)
        estimates = fitted["estimate"]
        rows.append({**dict(zip(keys, key, strict=True)), "trials": n, "rejected": k,
                     "rejection_rate": k / n if n else float("nan"), "cp_low": low, "cp_high": high,
                     "mean_estimate": float(estimates.mean()), "estimate_p2.5": float(estimates.quantile(0.025)),
                     "estimate_p97.5": float(estimates.quantile(0.975))})  # fmt: skip
    return rows


# --- Kaplan-Meier --------------------------------------------------------------------------
def km_section(page: Page, artifact: TrialArtifact) -> list[str]:
    """Kaplan-Meier curves with their confidence bands, one figure per endpoint."""
    tables, frame = _drawn(artifact, "km", "curves", {"endpoint", "arm", "time", "survival"})
    if frame is None:
        return _generic(page, artifact, "km", "Kaplan-Meier estimates")
    if "replicate" in frame.columns and frame["replicate"].nunique() > 1:
        frame = frame[frame["replicate"] == frame["replicate"].min()]
    page.add("<h2>Kaplan-Meier curves</h2><p class=note>Survival without the event by arm, with pointwise 95 % "
             "confidence bands; tick marks are not drawn, censoring is in the tables.</p>")  # fmt: skip
    names = []
    for endpoint, curves in frame.groupby("endpoint", sort=False):
        page.figure(km_figure(str(endpoint), curves))
        names.append(f"km:{endpoint!s}")
    _others(page, tables, frame)
    return names


def km_figure(endpoint: str, curves: pd.DataFrame) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for j, (arm, curve) in enumerate(curves.groupby("arm", sort=False)):
        colour = COLOURS[j % len(COLOURS)]
        curve = curve.sort_values("time")
        if {"ci_low", "ci_high"} <= set(curve.columns):
            fig.add_trace(go.Scatter(x=curve["time"], y=curve["ci_high"], line={"width": 0, "shape": "hv"},
                                     showlegend=False, hoverinfo="skip"))  # fmt: skip
            fig.add_trace(go.Scatter(x=curve["time"], y=curve["ci_low"], line={"width": 0, "shape": "hv"},
                                     fill="tonexty", fillcolor=_rgba(colour, 0.18), name=f"{arm} 95 % CI"))  # fmt: skip
        fig.add_trace(go.Scatter(x=curve["time"], y=curve["survival"], line={"color": colour, "shape": "hv"},
                                 name=str(arm)))  # fmt: skip
    fig.update_layout(title=f"{endpoint}: Kaplan-Meier", xaxis_title="time (model units)",
                      yaxis={"title": "probability event-free", "range": [0, 1.02]}, template="plotly_white",
                      height=420)  # fmt: skip
    return fig


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# --- power ---------------------------------------------------------------------------------
def power_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``power``, ``ci_low`` and ``ci_high`` (Clopper-Pearson) filled in from
    ``rejections`` and ``replicates`` where missing."""
    frame = frame.copy()
    if "power" not in frame.columns and {"rejections", "replicates"} <= set(frame.columns):
        frame["power"] = frame["rejections"] / frame["replicates"]
    if not {"ci_low", "ci_high"} <= set(frame.columns) and {"rejections", "replicates"} <= set(frame.columns):
        bands = [clopper_pearson(k, n) for k, n in zip(frame["rejections"], frame["replicates"], strict=True)]
        frame["ci_low"], frame["ci_high"] = [b[0] for b in bands], [b[1] for b in bands]
    return frame


def power_section(page: Page, artifact: TrialArtifact) -> list[str]:
    """Power against sample size per analysis: simulated, Clopper-Pearson band, closed form."""
    frame = artifact.section_tables("power").get("")
    if frame is None:
        frame = next(iter(artifact.section_tables("power").values()), None)
    if frame is None or "n" not in frame.columns:
        return _generic(page, artifact, "power", "Power")
    frame = power_rows(frame)
    if "power" not in frame.columns:
        return _generic(page, artifact, "power", "Power")
    summary = artifact.section("power")
    page.add("<h2>Power by simulation</h2><p class=note>Share of simulated trials that rejected the null at each "
             "sample size, with Clopper-Pearson 95 % bands (Monte Carlo error); dashed: the closed-form power where "
             "the design has one.</p>")  # fmt: skip
    page.figure(power_figure(frame, summary.get("target")))
    page.add(_summary_table(summary) + table(_records(frame)))
    return ["power"]


def power_figure(frame: pd.DataFrame, target: float | None) -> go.Figure:
    import plotly.graph_objects as go

    keys = [k for k in ("endpoint", "method") if k in frame.columns]
    groups = frame.groupby(keys, sort=False) if keys else [((), frame)]
    fig = go.Figure()
    for j, (key, curve) in enumerate(groups):
        label = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))) or "power"
        colour = COLOURS[j % len(COLOURS)]
        curve = curve.sort_values("n")
        if {"ci_low", "ci_high"} <= set(curve.columns):
            fig.add_trace(go.Scatter(x=curve["n"], y=curve["ci_high"], line={"width": 0}, showlegend=False,
                                     hoverinfo="skip"))  # fmt: skip
            fig.add_trace(go.Scatter(x=curve["n"], y=curve["ci_low"], line={"width": 0}, fill="tonexty",
                                     fillcolor=_rgba(colour, 0.2), name=f"{label} 95 % CP"))  # fmt: skip
        fig.add_trace(go.Scatter(x=curve["n"], y=curve["power"], mode="lines+markers", line={"color": colour},
                                 name=label))  # fmt: skip
        if "closed_form" in curve.columns and curve["closed_form"].notna().any():
            fig.add_trace(go.Scatter(x=curve["n"], y=curve["closed_form"], line={"color": colour, "dash": "dash"},
                                     name=f"{label} closed form"))  # fmt: skip
    if target is not None:
        fig.add_hline(y=float(target), line={"dash": "dot", "color": "grey"}, annotation_text=f"target {target:g}")
    fig.update_layout(title="Power against participants per trial", xaxis_title="participants randomized (n)",
                      yaxis={"title": "power", "range": [0, 1.02]}, template="plotly_white", height=440)  # fmt: skip
    return fig


# --- subgroups -----------------------------------------------------------------------------
def subgroups_section(page: Page, artifact: TrialArtifact) -> list[str]:
    """The forest plot of prespecified and discovered subgroups, and their table."""
    tables, frame = _drawn(artifact, "subgroups", "forest", {"label", "estimate", "ci_low", "ci_high"})
    if frame is None:
        return _generic(page, artifact, "subgroups", "Subgroups")
    page.add("<h2>Subgroups</h2><p class=note>Effect by subgroup with its interval: prespecified subgroups, and "
             "those discovered by Virtual Twins (a tree on the predicted individual effects) estimated on data the "
             "tree did not see.</p>")  # fmt: skip
    page.figure(forest_figure(frame))
    page.add(_summary_table(artifact.section("subgroups")) + table(_records(frame)))
    _others(page, tables, frame)
    return ["forest"]


def forest_figure(frame: pd.DataFrame) -> go.Figure:
    import plotly.graph_objects as go

    frame = frame.iloc[::-1]
    labels = frame["label"].astype(str)
    if "kind" in frame.columns:
        labels = frame["kind"].astype(str) + ": " + labels
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=frame["estimate"], y=list(labels), mode="markers", marker={"size": 9, "color": "#335"}, name="estimate",
        error_x={"type": "data", "symmetric": False, "array": frame["ci_high"] - frame["estimate"],
                 "arrayminus": frame["estimate"] - frame["ci_low"]},
    ))  # fmt: skip
    measure = str(frame["measure"].iloc[0]) if "measure" in frame.columns and len(frame) else "difference"
    fig.add_vline(x=NULL_VALUE.get(measure, 0.0), line={"dash": "dot", "color": "grey"})
    fig.update_layout(title="Forest plot: effect by subgroup", xaxis_title=f"effect ({measure})",
                      template="plotly_white", height=160 + 36 * len(frame), showlegend=False,
                      margin={"l": 260})  # fmt: skip
    return fig


# --- PROCOVA and external control ----------------------------------------------------------
PROCOVA_WORDS = (
    "<h2>Digital-twin covariate adjustment (PROCOVA)</h2><p class=note>Each participant's twin predicts their "
    "outcome under control; the ANCOVA adjusts for that prediction. With rho the correlation of the prediction "
    "with the outcome in the control arm, the residual variance falls by about a factor 1 - rho<sup>2</sup> and "
    "the sample size for the same power with it.</p>"
)
EXTERNAL_WORDS = (
    "<h2>Synthetic external control arm</h2><p class=note>Control participants drawn from a fitted population, "
    "matched or weighted to the trial's covariates. Balance: standardized mean differences before and after "
    "weighting (flagged above the threshold); bias: the external-control effect against the randomized one.</p>"
)


def procova_section(page: Page, artifact: TrialArtifact) -> list[str]:
    return _generic(page, artifact, "procova", "", words=PROCOVA_WORDS)


def external_section(page: Page, artifact: TrialArtifact) -> list[str]:
    return _generic(page, artifact, "external", "", words=EXTERNAL_WORDS, skip=("pool", "weights"))


def _generic(
    page: Page, artifact: TrialArtifact, name: str, title: str, words: str = "", skip: Sequence[str] = ()
) -> list[str]:
    """A section's summary and tables (but ``skip``, left in their files), as tables."""
    page.add(words or f"<h2>{html.escape(title)}</h2>")
    page.add(_summary_table(artifact.section(name)))
    left = [f"{name}_{key}.parquet" for key in artifact.section_tables(name) if key in skip]
    if left:
        page.add(f"<p class=note>Not shown: {html.escape(', '.join(left))}.</p>")
    for key, frame in artifact.section_tables(name).items():
        if key in skip:
            continue
        heading = f"<h3>{html.escape(key)}</h3>" if key else ""
        more = f"<p class=note>First {SHOWN_ROWS} of {len(frame)} rows.</p>" if len(frame) > SHOWN_ROWS else ""
        page.add(heading + table(_records(frame.head(SHOWN_ROWS))) + more)
    return []


def _drawn(
    artifact: TrialArtifact, name: str, key: str, needed: set[str]
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame | None]:
    """A section's tables and the one its figure is drawn from (the section itself or its
    ``key`` table), None when that table lacks a ``needed`` column."""
    tables = artifact.section_tables(name)
    frame = tables.get("") if "" in tables else tables.get(key)
    return tables, frame if frame is not None and needed <= set(frame.columns) else None


def _others(page: Page, tables: dict[str, pd.DataFrame], drawn: pd.DataFrame) -> None:
    """The section's tables besides the drawn one."""
    for key, other in tables.items():
        if other is not drawn:
            page.add(f"<h3>{html.escape(key)}</h3>" + table(_records(other.head(SHOWN_ROWS))))


def _summary_table(summary: Mapping[str, Any]) -> str:
    if not summary:
        return ""
    return table([{"item": k, "value": _text(v)} for k, v in summary.items()])


def _text(value: Any) -> Any:
    import json

    if isinstance(value, float | int | str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _records(frame: pd.DataFrame) -> Sequence[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]
