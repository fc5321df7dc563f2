"""Offline HTML pages shared by the reports (governance, artificial-pancreas evaluation):
escaped tables and plotly figures, plotly.js embedded once."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{border-bottom:2px solid #446}h2{margin-top:2em;color:#335}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#eef}
.met{color:#070}.missing{color:#b00;font-weight:bold}.note{color:#555;font-style:italic}code{font-size:12px}"""


def fmt(value: Any) -> str:
    """A cell: numbers to 4 significant digits (NaN empty), lists of numbers in brackets,
    anything else as escaped text."""
    import numpy as np

    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.3g}" for v in value) + "]"
    return html.escape(str(value))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of ``rows`` (escaped), in the order of ``columns``."""
    if not rows:
        return "<p class=note>none</p>"
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class Page:
    """Sections of HTML and plotly figures; plotly.js is embedded once (never with
    ``plotlyjs=False``, for a part of a page that already has it)."""

    def __init__(self, title: str, *, plotlyjs: bool = True) -> None:
        self.title, self.parts, self._js = title, [f"<h1>{html.escape(title)}</h1>"], plotlyjs

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: go.Figure) -> None:
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=self._js))
        self._js = False

    def body(self) -> str:
        """The sections without the title, to place inside another page."""
        return "".join(self.parts[1:])

    def render(self) -> str:
        return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(self.title)}</title>"
                f"<style>{STYLE}</style></head><body>{''.join(self.parts)}</body></html>")  # fmt: skip
