"""Figures of trained components (plotly): SBC rank histograms, a learned closure
against its input (and the true missing term when known), reliability curves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from twinloop.calibrate.checks import SBCResult


def sbc_histogram(result: SBCResult, bins: int = 20) -> go.Figure:
    """One rank histogram per parameter, with the 99 % band of a uniform histogram."""
    hist = result.histogram(bins)
    n = int(result.ranks.shape[0])
    lo, hi = stats.binom.ppf([0.005, 0.995], n, 1.0 / bins)
    names = list(hist)
    fig = make_subplots(
        rows=1, cols=len(names),
        subplot_titles=[f"{k} (KS p = {result.ks_pvalues[k]:.2g})" for k in names],
    )  # fmt: skip
    for j, name in enumerate(names, start=1):
        fig.add_hrect(y0=lo, y1=hi, fillcolor="grey", opacity=0.2, line_width=0, row=1, col=j)
        fig.add_trace(go.Bar(x=np.arange(bins), y=hist[name], marker_color="#1f77b4", showlegend=False), row=1, col=j)
        fig.update_xaxes(title_text="rank bin", row=1, col=j)
    fig.update_yaxes(title_text="simulations", row=1, col=1)
    fig.update_layout(
        title=f"Simulation-based calibration: ranks of the truth among {result.n_draws} draws "
        f"({n} simulations; grey: 99 % band if uniform)",
        template="plotly_white",
        height=380,
    )
    return fig


def closure_curve(
    closure: Any, network: Any, horizon: float, truth: Callable[[np.ndarray], np.ndarray] | None = None
) -> go.Figure:
    """The learned term against its first feature over ``[0, horizon]`` (model time),
    with the true missing term when it is known."""
    feature = closure.features[0]
    x = np.linspace(0.0, horizon, 200)
    rows = np.zeros((x.size, len(closure.features)))
    rows[:, 0] = x / feature.scale
    learned = np.asarray(closure.bounded(network, jnp.asarray(rows)))
    fig = go.Figure(go.Scatter(x=x, y=learned, mode="lines", name=f"learned {closure.name}"))
    if truth is not None:
        fig.add_trace(go.Scatter(x=x, y=truth(x), mode="lines", line={"dash": "dash"}, name="true missing term"))
    fig.update_layout(
        title=f"Learned closure '{closure.name}': {closure.description}",
        xaxis_title=f"{feature.name} ({feature.unit})",
        yaxis_title=f"{closure.name} ({closure.unit})",
        template="plotly_white",
        height=380,
    )
    return fig


def reliability(
    result: dict[str, Any],
    reference: dict[str, Any] | None = None,
    title: str = "Reliability on held-out real-like patients",
) -> go.Figure:
    """Reliability curve (observed fraction against mean predicted probability)."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"},
                               name="perfectly calibrated"))  # fmt: skip
    for label, res in (("train on synthetic", result), ("train on real-like", reference)):
        if res is None:
            continue
        curve = res["reliability"]
        fig.add_trace(go.Scatter(x=curve["mean_predicted"], y=curve["observed_fraction"], mode="lines+markers",
                                 name=f"{label}: AUROC {res['auroc']:.3f}, Brier {res['brier']:.3f}"))  # fmt: skip
    fig.update_layout(title=title, xaxis_title="mean predicted probability",
                      yaxis_title="observed fraction", template="plotly_white", height=420)  # fmt: skip
    return fig
