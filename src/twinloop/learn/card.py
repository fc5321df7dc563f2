"""Model cards (Mitchell et al. 2019) for trained components, as Markdown and HTML."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinloop._atomic import write_atomic

REFERENCE = "Mitchell M, Wu S, Zaldivar A, et al. Model cards for model reporting. FAT* 2019:220-229."


@dataclass(frozen=True)
class ModelCard:
    """What a reader needs before trusting a trained component."""

    name: str
    kind: str
    intended_use: str
    training_data: dict[str, Any]
    metrics: dict[str, Any]
    limitations: tuple[str, ...]
    subgroup_metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        lines = [
            f"# Model card: {self.name}",
            "",
            f"**Kind:** {self.kind}",
            "",
            "## Intended use",
            self.intended_use,
            "",
        ]
        lines += ["## Training data", "```json", json.dumps(self.training_data, indent=2, default=str), "```", ""]
        lines += ["## Metrics", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in self.metrics.items()]
        if self.subgroup_metrics:
            lines += ["", "## Metrics by subgroup", "| subgroup | n | AUROC (95 % CI) | Brier |", "|---|---|---|---|"]
            for group, m in self.subgroup_metrics.items():
                lo, hi = m.get("auroc_ci95", (float("nan"), float("nan")))
                auroc = f"{_fmt(m.get('auroc'))} ({_fmt(lo)}-{_fmt(hi)})"
                lines.append(f"| {group} | {m.get('n')} | {auroc} | {_fmt(m.get('brier'))} |")
        lines += ["", "## Limitations", *[f"- {item}" for item in self.limitations]]
        if self.extra:
            lines += ["", "## Details", "```json", json.dumps(self.extra, indent=2, default=str), "```"]
        lines += ["", f"_Format after {REFERENCE}_", ""]
        return "\n".join(lines)

    def to_html(self) -> str:
        body = []
        in_code = False
        for line in self.to_markdown().splitlines():
            if line.startswith("```"):
                body.append("</pre>" if in_code else "<pre>")
                in_code = not in_code
            elif in_code:
                body.append(html.escape(line))
            elif line.startswith("# "):
                body.append(f"<h1>{html.escape(line[2:])}</h1>")
            elif line.startswith("## "):
                body.append(f"<h2>{html.escape(line[3:])}</h2>")
            elif line.startswith("|"):
                if set(line.replace("|", "").strip()) <= {"-"}:
                    continue
                cells = "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
                body.append(f"<table><tr>{cells}</tr></table>")
            elif line.startswith("- "):
                body.append(f"<li>{html.escape(line[2:])}</li>")
            elif line:
                body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
        style = (
            "body{font-family:sans-serif;max-width:60em;margin:auto}"
            "table{border-collapse:collapse}td{border:1px solid #ccc;padding:2px 8px}"
        )
        head = f"<meta charset='utf-8'><title>{html.escape(self.name)}</title><style>{style}</style>"
        return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>"

    def write(self, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``MODEL_CARD.md`` and ``model_card.html`` into ``folder`` (atomically)."""
        root = Path(folder)
        md = write_atomic(root / "MODEL_CARD.md", lambda tmp: Path(tmp).write_text(self.to_markdown()))
        page = write_atomic(root / "model_card.html", lambda tmp: Path(tmp).write_text(self.to_html()))
        return md, page


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple) and value and isinstance(value[0], float):
        return ", ".join(f"{v:.3g}" for v in value)
    return str(value)
