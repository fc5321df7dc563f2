"""The HTML report of an artificial-pancreas evaluation: metric tables with confidence intervals,
paired comparisons, the control-variability grid (CVGA) and glucose percentile bands.

One offline page (plotly.js embedded once); every string that came from the user (controller
names and settings, patient ids, groups) is escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop._html import Page, table
from twinloop.control.metrics import CVGA_MAX_CLIP, CVGA_MIN_CLIP, cvga_counts, cvga_zone

if TYPE_CHECKING:
    import plotly.graph_objects as go


BAND_COLOURS = ("31,119,180", "214,39,40", "44,160,44", "148,103,189", "255,127,14", "140,86,75")
# the nine CVGA rectangles: (name, min BG from, to, max BG from, to, colour) as Magni et al. (2008) draw them
CVGA_RECTANGLES = (
    ("A", 90, 110, 110, 180, "#32cd32"),
    ("Lower B", 70, 90, 110, 180, "#2e8b2e"),
    ("Upper B", 90, 110, 180, 300, "#2e8b2e"),
    ("B", 70, 90, 180, 300, "#2e8b2e"),
    ("Lower C", 50, 70, 110, 180, "#f0e130"),
    ("Upper C", 90, 110, 300, 400, "#f0e130"),
    ("Lower D", 50, 70, 180, 300, "#ffa500"),
    ("Upper D", 70, 90, 300, 400, "#ffa500"),
    ("E", 50, 70, 300, 400, "#e03030"),
)


def interval(row: Mapping[str, Any]) -> str:
    """``mean [low, high]`` of a summary row."""
    if not np.isfinite(row["mean"]):
        return "n/a"
    if not np.isfinite(row["ci_low"]):
        return f"{row['mean']:.3g}"
    return f"{row['mean']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"


def metric_table(summary: Sequence[Mapping[str, Any]], group: str = "all") -> list[dict[str, str]]:
    """One row per metric, one column per controller: ``mean [CI]`` over the patients of ``group``."""
    rows: dict[str, dict[str, str]] = {}
    for r in summary:
        if r["group"] == group:
            rows.setdefault(r["metric"], {"metric": r["metric"]})[r["controller"]] = interval(r)
    return list(rows.values())


def cvga_figure(points: Mapping[str, tuple[Sequence[str], Any, Any]]) -> go.Figure:
    """The CVGA plot: the zone grid and, per controller, one point per patient (min, max BG)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, x0, x1, y0, y1, colour in CVGA_RECTANGLES:
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, fillcolor=colour, opacity=0.35,
                      line={"color": "white", "width": 2}, layer="below")  # fmt: skip
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=name, showarrow=False,
                           font={"size": 11, "color": "#333"})  # fmt: skip
    for j, (controller, (ids, lo, hi)) in enumerate(points.items()):
        counts = cvga_counts(cvga_zone(lo, hi))
        total = max(1, sum(counts.values()))
        share = ", ".join(f"{z} {100 * c / total:.0f}%" for z, c in counts.items())
        fig.add_trace(go.Scatter(x=np.asarray(lo), y=np.asarray(hi), mode="markers", name=f"{controller} ({share})",
                                 text=[str(i) for i in ids], hovertemplate="%{text}: min %{x:.0f}, max %{y:.0f}",
                                 marker={"size": 8, "color": f"rgb({BAND_COLOURS[j % len(BAND_COLOURS)]})",
                                         "line": {"width": 1, "color": "black"}}))  # fmt: skip
    fig.update_layout(
        title="Control-variability grid analysis (CVGA)",
        xaxis={"title": "minimum BG: 2.5th percentile (mg/dL)", "range": [CVGA_MIN_CLIP[1], CVGA_MIN_CLIP[0] - 1],
               "tickvals": [110, 90, 70, 50], "ticktext": ["110", "90", "70", "<50"]},
        yaxis={"title": "maximum BG: 97.5th percentile (mg/dL)", "range": [CVGA_MAX_CLIP[0] - 5, CVGA_MAX_CLIP[1] + 5],
               "tickvals": [110, 180, 300, 400], "ticktext": ["110", "180", "300", ">400"]},
        template="plotly_white", height=560, legend={"orientation": "h", "y": -0.15},
    )  # fmt: skip
    return fig


def time_of_day_quantiles(
    minutes: Any, glucose: Any, q: Sequence[float] = (5, 25, 50, 75, 95)
) -> tuple[np.ndarray, np.ndarray]:
    """Percentiles of ``(n, T)`` glucose over patients and days at each minute of the day.

    Returns the minutes of the day ``(M,)`` and the percentiles ``(len(q), M)`` (NaN skipped).
    """
    t = np.asarray(minutes, dtype=np.float64) % 1440.0
    g = np.atleast_2d(np.asarray(glucose, dtype=np.float64))
    day_minutes, where = np.unique(t, return_inverse=True)
    out = np.full((len(q), day_minutes.size), np.nan)
    for k in range(day_minutes.size):
        values = g[:, where == k].ravel()
        values = values[np.isfinite(values)]
        if values.size:
            out[:, k] = np.percentile(values, q)
    return day_minutes, out


def bands_figure(bands: Mapping[str, tuple[Any, Any]], signal: str) -> go.Figure:
    """Per controller the 5-95 % and 25-75 % bands and the median of glucose by time of day."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(bands)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=names)  # fmt: skip
    for j, name in enumerate(names):
        hours, pct = time_of_day_quantiles(*bands[name])
        hours = hours / 60.0
        colour = BAND_COLOURS[j % len(BAND_COLOURS)]
        for lo, hi, alpha, label in ((0, 4, 0.18, "5-95 %"), (1, 3, 0.38, "25-75 %")):
            fig.add_trace(go.Scatter(x=hours, y=pct[hi], line={"width": 0}, showlegend=False, hoverinfo="skip"),
                          row=j + 1, col=1)  # fmt: skip
            fig.add_trace(go.Scatter(x=hours, y=pct[lo], fill="tonexty", line={"width": 0},
                                     fillcolor=f"rgba({colour},{alpha})", name=f"{name} {label}"),
                          row=j + 1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=hours, y=pct[2], line={"color": f"rgb({colour})"}, name=f"{name} median"),
                      row=j + 1, col=1)  # fmt: skip
        for level in (70, 180):
            fig.add_hline(y=level, line={"dash": "dot", "color": "grey", "width": 1}, row=j + 1, col=1)
        fig.update_yaxes(title_text="mg/dL", row=j + 1, col=1)
    fig.update_xaxes(title_text="time of day (h)", row=len(names), col=1)
    fig.update_layout(title=f"{signal}: percentiles over patients and days by time of day", template="plotly_white",
                      height=260 * len(names) + 120)  # fmt: skip
    return fig


def render(
    *,
    title: str,
    lineage: Mapping[str, Any],
    summary: Sequence[Mapping[str, Any]],
    comparisons: Sequence[Mapping[str, Any]],
    cvga: Mapping[str, tuple[Sequence[str], Any, Any]],
    bands: Mapping[str, tuple[Any, Any]],
    signal: str,
) -> str:
    """The report page.

    Arguments:
        summary: rows of :func:`twinloop.control.metrics.summarize` with a ``controller`` key.
        comparisons: rows of :func:`twinloop.control.metrics.paired` with ``first`` and ``second``.
        cvga: per controller (patient ids, min BG, max BG).
        bands: per controller (minutes, ``(n, T)`` glucose) for the percentile bands.
        signal: what the CVGA and bands are computed on, in words.
    """
    page = Page(title)
    page.add("<h2>Run</h2>" + table([{"item": k, "value": _plain(v)} for k, v in lineage.items()]))
    groups = list(dict.fromkeys(r["group"] for r in summary))
    ci: Mapping[str, Any] = summary[0] if summary else {"ci_level": 0.95, "ci_method": "t"}
    page.add(f"<h2>Metrics</h2><p class=note>Mean over patients [{100 * ci['ci_level']:.0f} % confidence interval, "
             f"{html.escape(str(ci['ci_method']))}]. Column prefixes say the signal: <code>cgm_</code> the sensor's "
             "readings at its sample times, <code>bg_</code> plasma glucose every minute. Intervals are not clipped to "
             "a metric's range (a t interval over few patients may reach below 0 %).</p>")  # fmt: skip
    for group in groups:
        page.add(f"<h3>{'All patients' if group == 'all' else 'Group: ' + html.escape(str(group))}</h3>")
        page.add(table(metric_table(summary, group)))
    page.add("<h2>Paired comparisons</h2><p class=note>Difference second minus first over the same patients: mean "
             "[t interval], paired t-test and Wilcoxon signed-rank p-values.</p>")  # fmt: skip
    columns = ["first", "second", "group", "metric", "n", "mean_first", "mean_second", "mean_difference", "ci_low",
               "ci_high", "p_paired_t", "p_wilcoxon"]  # fmt: skip
    page.add(table(comparisons, columns))
    page.add(f"<h2>Control-variability grid</h2><p class=note>On {html.escape(signal)}.</p>")
    page.figure(cvga_figure(cvga))
    page.add("<h2>Glucose by time of day</h2>")
    page.figure(bands_figure(bands, signal))
    return page.render()


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
