"""The demo's AI components: an amortized posterior of tumour kinetics checked by SBC,
used on one held-out patient, and a responder predictor trained on the demo's synthetic
NSCLC product and tested on a shifted real-like one (TSTR vs TRTR)."""

from __future__ import annotations

import copy
import html
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import twinloop as tl
from twinloop.calibrate import AmortizedPosterior, NoiseModel
from twinloop.calibrate.checks import SBCResult
from twinloop.cli.demo_products import NSCLC_DEMO
from twinloop.cohort import Population
from twinloop.learn import figures
from twinloop.learn.jobs import train_posterior, train_predictor
from twinloop.products.dataset import generate
from twinloop.products.spec import ProductSpec

NPE_DEMO: dict[str, Any] = {
    "name": "demo-npe-tgi-stein",
    "model": "tgi-stein",
    "parameters": ["y0", "g", "d"],
    "design": {"observable": "sum_of_diameters", "times": {"start": 42, "stop": 400, "every": 49}, "jitter": 7,
               "missing": 0.15, "noise": {"additive": 1.0, "proportional": 0.1}},
    "settings": {"n_simulations": 8000, "max_epochs": 60, "seed": 0},
    "checks": {"sbc_simulations": 300, "sbc_draws": 100},
}  # fmt: skip


def real_like(spec: dict[str, Any], n: int) -> dict[str, Any]:
    """An NSCLC product spec moved to a shifted population (weaker drug, larger and older
    patients, more men) under another protocol (CT every 8 weeks +- 10 days, 12 % error)."""
    shifted = copy.deepcopy(Population.default(tl.models.get("tgi-claret")).to_dict())
    group = shifted["groups"]["all"]
    group["typical"].update(KD=group["typical"]["KD"] * 0.75, y0=110.0, lam=group["typical"]["lam"] * 1.3)
    group["covariates"]["age"]["mean"] = 69.0
    group["covariates"]["sex"]["levels"] = {"female": 0.35, "male": 0.65}
    protocol = dict(spec["observations"][0], schedule={"every": 56, "jitter": 10},
                    error={"kind": "combined", "sd": 2.0, "cv": 0.12})  # fmt: skip
    return dict(spec, name=f"{spec['name']}-real-like", seed=99, n=n, chunk_size=min(n, 500),
                population=shifted, observations=[protocol])  # fmt: skip


def _one_patient(npe: AmortizedPosterior) -> dict[str, Any]:
    """Amortized posterior of one held-out patient: timing and intervals against the truth."""
    times = np.asarray(npe.design.times)
    rng = np.random.default_rng(2024)
    truth = npe.prior.sample(1, rng)
    traj = tl.simulate(
        npe.model, npe.parameters.full_batch(truth), tl.Inputs(), times=np.r_[0.0, times], progress=False
    )
    scans = NoiseModel(1.0, 0.1).sample(traj["sum_of_diameters"][:, 1:], rng)[0]
    npe.posterior(times, scans, n=1000, seed=1)  # compiled once
    start = time.perf_counter()
    post = npe.posterior(times, scans, n=1000, seed=2)
    elapsed_ms = 1e3 * (time.perf_counter() - start)
    draws = np.exp(post.draws())
    rows = {name: {"truth": float(np.exp(truth[0, j])), "median": float(np.median(draws[:, j])),
                   "q05": float(np.quantile(draws[:, j], 0.05)), "q95": float(np.quantile(draws[:, j], 0.95))}
            for j, name in enumerate(post.names)}  # fmt: skip
    return {"ms_for_1000_draws": elapsed_ms, "parameters": rows}


def _coverage(npe: AmortizedPosterior, n: int = 200) -> dict[str, float]:
    """Share of ``n`` fresh simulated patients whose true value lies in the 90 % interval."""
    import jax

    data = npe.simulate(n, seed=777)
    z = npe.sample_z_batch(jax.random.key(7), 1000, data.times, data.values, data.mask.astype(float))
    draws = npe.prior.mean + z @ npe.prior.chol.T
    lo, hi = np.quantile(draws, 0.05, axis=1), np.quantile(draws, 0.95, axis=1)
    inside = (data.log_theta >= lo) & (data.log_theta <= hi)
    return {name: float(inside[:, j].mean()) for j, name in enumerate(npe.prior.names)}


def run_learn_demo(out: Path, nsclc_product: Path, scale: float = 1.0) -> tuple[dict[str, Any], str]:
    """Train, check and apply; returns the summary and the HTML section."""
    root = out / "learn"
    shutil.rmtree(root, ignore_errors=True)
    budget = {**NPE_DEMO["settings"], "n_simulations": max(1000, round(NPE_DEMO["settings"]["n_simulations"] * scale))}
    posterior = train_posterior({**NPE_DEMO, "settings": budget}, root / "npe-tgi-stein")
    npe = AmortizedPosterior.load(root / "npe-tgi-stein" / "npe")
    patient = _one_patient(npe)
    coverage = _coverage(npe)
    sbc_result = SBCResult.from_dict(json.loads((root / "npe-tgi-stein" / "sbc.json").read_text()))

    n_real = max(40, round(NSCLC_DEMO["n"] * scale))
    generate(ProductSpec.from_dict(real_like(NSCLC_DEMO, n_real)), root / "nsclc-real-like", progress=True)
    predictor = train_predictor(nsclc_product, root / "responder", real=root / "nsclc-real-like")
    report = json.loads((root / "responder" / "report.json").read_text())
    summary = {"amortized_posterior": {**posterior, "one_patient": patient, "coverage90": coverage}, "tstr": predictor}

    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['truth']:.4g}</td><td>{v['median']:.4g}</td>"
        f"<td>{v['q05']:.4g} - {v['q95']:.4g}</td></tr>"
        for k, v in patient["parameters"].items()
    )
    ts, tr = report["tstr"], report["trtr"]
    section = (
        "<h2>AI components: amortized calibration and train-on-synthetic, test-on-real</h2>"
        f"<p>An amortized posterior (normalizing flow, flowjax) of tumour kinetics (tgi-stein: baseline size y0, "
        f"growth g, decay d) trained on {posterior['simulations']['used']:,} simulated patients with CT scans every "
        f"7 weeks (+-7 days, 15 % missing). Simulation-based calibration on 300 fresh simulations: KS p-values "
        + ", ".join(f"{k} {v:.2f}" for k, v in posterior["sbc_ks_pvalues"].items())
        + " (uniform ranks mean a calibrated posterior).</p>"
        + figures.sbc_histogram(sbc_result).to_html(full_html=False, include_plotlyjs=False)
        + f"<p>A held-out patient's posterior, 1,000 draws in {patient['ms_for_1000_draws']:.0f} ms (no MCMC):</p>"
        "<table border=1 cellpadding=4><tr><th>parameter</th><th>truth</th><th>median</th><th>90 % interval</th></tr>"
        + cells
        + "</table>"
        + "<p>Over 200 fresh simulated patients, the 90 % intervals held the true value for "
        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in coverage.items())
        + " of them.</p>"
        f"<p>Responder predictor (gradient boosting) trained on the synthetic NSCLC product above and tested on "
        f"{report['rows']['real_test']} held-out patients of a shifted real-like cohort (weaker drug effect, larger "
        f"and older patients, CT every 8 weeks with 12 % error): <b>TSTR AUROC {ts['auroc']:.3f}</b> "
        f"(95 % CI {ts['auroc_ci95'][0]:.3f}-{ts['auroc_ci95'][1]:.3f}), Brier {ts['brier']:.3f}; trained on the "
        f"real-like data itself (TRTR): AUROC {tr['auroc']:.3f}, Brier {tr['brier']:.3f}. Model card: "
        f"<code>learn/responder/model_card.html</code>.</p>"
        + figures.reliability(ts, tr).to_html(full_html=False, include_plotlyjs=False)
    )
    return summary, section
