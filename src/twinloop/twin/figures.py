"""Figures of a twin: the forecast fan chart over the observed history, and a what-if comparison."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from twinloop.twin.compare import Comparison
from twinloop.twin.forecast import Forecast


def fan_chart(
    forecast: Forecast, observations: pd.DataFrame, variable: str, *, history_hours: float = 24.0
) -> go.Figure:
    """Predictive 5-95 % and 25-75 % bands and the median of ``variable``, with the observations
    of the last ``history_hours`` before the forecast and any that arrived during it."""
    q = forecast.quantiles()
    q = q[q["variable"] == variable]
    unit = q["unit"].iloc[0] if len(q) else ""
    start = forecast.times[0] - pd.Timedelta(hours=history_hours)
    obs = observations[(observations["variable"] == variable) & (observations["time"] >= start)]
    fig = go.Figure()
    for lo, hi, alpha, name in (("q05", "q95", 0.18, "90 % interval"), ("q25", "q75", 0.35, "50 % interval")):
        fig.add_trace(go.Scatter(x=q["time"], y=q[hi], line={"width": 0}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(
            go.Scatter(
                x=q["time"],
                y=q[lo],
                fill="tonexty",
                line={"width": 0},
                fillcolor=f"rgba(31,119,180,{alpha})",
                name=name,
            )
        )
    fig.add_trace(go.Scatter(x=q["time"], y=q["q50"], line={"color": "rgb(31,119,180)"}, name="median forecast"))
    fig.add_trace(
        go.Scatter(x=obs["time"], y=obs["value"], mode="markers", marker={"size": 4, "color": "black"}, name="observed")
    )
    fig.update_layout(
        title=f"{variable}: forecast from version {forecast.version} ({forecast.ensemble_size} members)",
        yaxis_title=f"{variable} ({unit})",
        template="plotly_white",
        height=420,
    )
    return fig


def comparison_chart(result: Comparison) -> go.Figure:
    """Per-arm distributions of a what-if endpoint (one box per arm)."""
    fig = go.Figure()
    for arm, values in result.values.items():
        fig.add_trace(go.Box(y=values, name=arm, boxpoints=False))
    fig.update_layout(
        title=f"{result.endpoint} over {result.hours:g} h: P({next(iter(result.values))} better) = "
        f"{result.p_first_better:.2f} (n = {result.ensemble_size})",
        yaxis_title=f"{result.endpoint} ({result.unit})",
        template="plotly_white",
        height=380,
    )
    return fig
