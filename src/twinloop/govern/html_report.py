"""Render a governance report (:func:`twinloop.govern.report.build_report`) as one offline HTML page."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from twinloop._html import Page, table
from twinloop._html import fmt as _fmt


def render(report: Mapping[str, Any]) -> str:
    page = Page(f"Governance report: {report['artifact']['name']}")
    model = report["artifact"]["model"]
    page.add(f"<p>Product <code>{html.escape(report['artifact']['path'])}</code>, model "
             f"{html.escape(model['id'])} {html.escape(model['version'])}.</p>")  # fmt: skip
    _core(page, report["core"])
    _product(page, report["product"])
    _ai(page, report["ai"])
    _clinical(page, report["clinical"])
    return page.render()


def _core(page: Page, core: Mapping[str, Any]) -> None:
    page.add("<h2>1. Mechanistic core</h2><h3>Verification</h3>")
    ver = core["verification"]
    fig = go.Figure()
    for solver, v in ver["convergence"].items():
        fig.add_scatter(x=v["steps"], y=v["errors"], mode="lines+markers",
                        name=f"{solver}: order {v['observed_order']:.2f} (expected {v['expected_order']})")  # fmt: skip
    fig.update_layout(title="Fixed-step convergence on the Stein closed form", height=380,
                      xaxis={"type": "log", "title": "step (days)"},
                      yaxis={"type": "log", "title": "max rel. error"})  # fmt: skip
    page.figure(fig)
    tol = ver["tolerance"]
    rows = [{"rtol": r, "Stein rel. error": e} | ({"model rel. error": m} if "model_relative_error" in tol else {})
            for r, e, m in zip(tol["rtol"], tol["stein_relative_error"], tol.get("model_relative_error", tol["rtol"]),
                               strict=True)]  # fmt: skip
    page.add("<p>Tolerance study</p>" + table(rows))
    mb = ver["mass_balance"]
    page.add(f"<p>Mass balance ({mb['model']}, {mb['dose_mg']:g} mg IV): max relative imbalance "
             f"{mb['max_relative_imbalance']:.2e}.</p>" + table(ver["model_checks"]))  # fmt: skip
    page.add("<h3>Validation against references</h3>" + table(core["validation"]))
    sens = core["sensitivity"]
    page.add(f"<h3>Sensitivity</h3><p>{html.escape(sens['outcome'])}; {html.escape(sens['design'])}; "
             f"{sens['evaluations']} runs.</p>")  # fmt: skip
    idx = sens["indices"]
    bar = go.Figure()
    bar.add_bar(x=[r["parameter"] for r in idx], y=[r["ST"] for r in idx], name="total (ST)",
                error_y={"array": [r["ST_conf"] for r in idx]})  # fmt: skip
    bar.add_bar(x=[r["parameter"] for r in idx], y=[r["S1"] for r in idx], name="first order (S1)",
                error_y={"array": [r["S1_conf"] for r in idx]})  # fmt: skip
    bar.update_layout(title="Sobol indices", height=350)
    page.figure(bar)
    card = core["model_card"]
    page.add(f"<h3>Model card</h3><p>{html.escape(card['name'])}: {html.escape(card['description'])}</p>")
    page.add(table(card["parameters"]) + "<p>Sources:</p><ul>"
             + "".join(f"<li>{html.escape(r)}</li>" for r in card["references"]) + "</ul>")  # fmt: skip


def _product(page: Page, product: Mapping[str, Any]) -> None:
    page.add("<h2>2. Synthetic data product</h2>")
    if "note" in product:
        page.add(f"<p class=note>{html.escape(product['note'])}</p>")
    if "fidelity" in product:
        fid = product["fidelity"]
        page.add(f"<h3>Fidelity against {html.escape(product['reference']['name'])}</h3>"
                 f"<p>Detection AUC <b>{fid['detection']['auc']:.3f}</b> (0.5: indistinguishable); correlation "
                 f"difference max {fid['correlation']['max_abs_difference']:.3f}, mean "
                 f"{fid['correlation']['mean_abs_difference']:.3f}.</p>")  # fmt: skip
        rows = [{"column": c, **{k: v for k, v in d.items() if k in ("kind", "ks", "wasserstein_sd", "tvd",
                                                                        "mean_real", "mean_synthetic")}}
                for c, d in fid["columns"].items()]  # fmt: skip
        page.add(table(rows, ["column", "kind", "ks", "wasserstein_sd", "tvd", "mean_real", "mean_synthetic"]))
        page.add("<p>Observed values per variable</p>"
                 + table([{"variable": k, **v} for k, v in product["observations"].items()]))  # fmt: skip
    if "utility" in product:
        page.add("<h3>Utility (train on synthetic, test on real)</h3>")
        u = product["utility"]
        page.add(table([{"setting": k, **u[k]} for k in ("tstr", "trtr")]) if "tstr" in u
                 else f"<p class=note>{html.escape(u['note'])}</p>")  # fmt: skip
    if "privacy" in product:
        _privacy(page, product["privacy"])
    page.add("<h3>Representation</h3>")
    for column, rows in product["representation"].items():
        page.add(f"<p>{html.escape(column)}</p>" + table(rows))


def _privacy(page: Page, priv: Mapping[str, Any]) -> None:
    an = priv["anonymeter"]
    page.add(f"<h3>Privacy</h3><p class=note>{html.escape(priv.get('note', ''))}</p>")
    rows = [{"attack": "singling out", **an["singling_out"]}, {"attack": "linkability", **an["linkability"]}]
    rows += [{"attack": f"inference of {k}", **v} for k, v in an["inference"].items()]
    page.add(table(rows, ["attack", "risk", "ci95", "attack_rate", "control_rate", "baseline_rate", "n_attacks"]))
    fig = go.Figure(go.Bar(x=[r["attack"] for r in rows], y=[r.get("risk", 0) for r in rows],
                           error_y={"type": "data", "symmetric": False,
                                    "array": [r.get("ci95", [0, 0])[1] - r.get("risk", 0) for r in rows],
                                    "arrayminus": [r.get("risk", 0) - r.get("ci95", [0, 0])[0]
                                                   for r in rows]}))  # fmt: skip
    fig.update_layout(title="anonymeter risks (95 % interval)", yaxis={"range": [0, 1]}, height=330)
    page.figure(fig)
    page.add(table([{k: v for k, v in priv["dcr"].items() if k != "columns"}]))


def _ai(page: Page, ai: Mapping[str, Any]) -> None:
    page.add("<h2>3. AI components</h2>")
    if "posterior" in ai:
        page.add("<p>Amortized posterior, SBC KS p-values: "
                 + html.escape(", ".join(f"{k} {v:.2f}" for k, v in ai["posterior"]["sbc_ks_pvalues"].items()))
                 + "</p>")  # fmt: skip
    if "note" in ai:
        page.add(f"<p class=note>{html.escape(ai['note'])}</p>")
    if "performance" not in ai:
        return
    perf = ai["performance"]
    page.add(f"<p>Predictor <code>{html.escape(ai['predictor']['path'])}</code> "
             f"({html.escape(ai['predictor']['task'])})"
             f" on {perf['n']} reference patients: AUROC <b>{perf['auroc']:.3f}</b> {_fmt(perf['auroc_ci95'])}, "
             f"Brier {perf['brier']:.3f}.</p>")  # fmt: skip
    rel = perf["reliability"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Reliability", "AUROC by subgroup (95 % CI)"))
    fig.add_scatter(
        x=rel["mean_predicted"], y=rel["observed_fraction"], mode="lines+markers", name="observed", row=1, col=1
    )
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot"}, name="ideal", row=1, col=1)
    names, values, low, high = [], [], [], []
    for feature, entry in ai["subgroups"].items():
        for group, m in entry["groups"].items():
            names.append(f"{feature}={group}")
            values.append(m["auroc"] or 0.0)
            low.append((m["auroc"] or 0.0) - (m["auroc_ci95"][0] or 0.0))
            high.append((m["auroc_ci95"][1] or 0.0) - (m["auroc"] or 0.0))
    fig.add_bar(x=names, y=values, error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low},
                name="AUROC", row=1, col=2)  # fmt: skip
    fig.update_layout(height=380)
    page.figure(fig)
    rows = [{"feature": f, "group": g, **m} for f, e in ai["subgroups"].items() for g, m in e["groups"].items()]
    page.add("<p>Subgroup metrics (fairlearn MetricFrame)</p>" + table(rows))
    page.add("<h3>Input drift (PSI, KS) against the training data</h3>")
    page.add(table([{"feature": f, **v} for f, v in ai["drift"]["features"].items()]))
    windows = ai["drift_windows"]
    features = list(ai["drift"]["features"])
    heat = go.Figure(go.Heatmap(z=[[w["features"][f]["psi"] for w in windows] for f in features],
                                x=[w["window_start"] for w in windows], y=features, colorscale="Reds", zmin=0,
                                zmax=0.5, colorbar={"title": "PSI"}))  # fmt: skip
    heat.update_layout(title="PSI per weekly window of prediction time", height=350)
    page.figure(heat)


def _clinical(page: Page, clinical: Mapping[str, Any]) -> None:
    cou = clinical["context_of_use"]
    page.add("<h2>4. Clinical workflow</h2>"
             f"<p><b>Question:</b> {html.escape(cou['question'])}<br><b>Use:</b> {html.escape(cou['use'])}<br>"
             f"Model influence {cou['model_influence']} × decision consequence {cou['decision_consequence']} "
             f"→ <b>model risk {cou['model_risk']}</b> (of 5).</p>"
             f"<p>{html.escape(clinical['verdict'])}</p>")  # fmt: skip
    rows = "".join(
        f"<tr><td>{html.escape(r['activity'])}</td><td>{html.escape(r['factor'])}</td><td>{r['required_from_risk']}</td>"
        f"<td class={r['status'].replace(' ', '-')}>{r['status']}</td><td>{html.escape(r['evidence'])}</td></tr>"
        for r in clinical["checklist"]
    )
    page.add("<table><tr><th>activity</th><th>V&amp;V 40 factor</th><th>required from risk</th><th>status</th>"
             f"<th>evidence</th></tr>{rows}</table>")  # fmt: skip
    page.add(
        "<h3>Audit log</h3>" + table(clinical["audit_log"], ["at", "twin", "actor", "action", "version", "uncertainty"])
    )
