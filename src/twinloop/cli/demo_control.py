"""The demo's controller comparison: simglucose's PID against the zone MPC on a cohort
sampled from the default T1D population, with the CVGA and glucose percentile bands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import twinloop as tl
from twinloop._html import table
from twinloop.control import Patients, Scenario, evaluate, mpc, pid
from twinloop.control.report import bands_figure, cvga_figure, metric_table

SHOWN = ("cgm_tir_70_180_pct", "cgm_tbr_70_pct", "cgm_tbr_54_pct", "cgm_tar_250_pct", "cgm_mean_mg_dl", "cgm_lbgi")
# A realistic day: meal times and sizes vary, carbohydrate is miscounted, the sensor errs.
SCENARIO = Scenario(days=1, meal_time_sd_min=15.0, meal_size_cv=0.1, carb_count_error_cv=0.1, noise=True)


def run_control_demo(out: Path, n_patients: int, seed: int) -> tuple[dict[str, Any], str]:
    """Evaluate PID and MPC on ``n_patients`` sampled patients; write the evaluation under
    ``out/control`` and return its headline figures and the page section."""
    model = tl.models.get("t1d-uva-padova")
    patients = Patients.from_population(model, n_patients, seed)
    evaluation = evaluate(model, patients, [pid(), mpc()], SCENARIO, seed=seed, accurate=False)
    evaluation.write(out / "control", traces=False, overwrite=True)
    rows: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in evaluation.summary.to_dict("records")]
    shown = [r for r in metric_table(rows, "all") if r["metric"] in SHOWN]
    cvga = evaluation.cvga
    zones = {row["controller"]: {z: int(row[z]) for z in "ABCDE"} for _, row in cvga[cvga["signal"] == "bg"].iterrows()}
    pairs = evaluation.comparisons
    tir = pairs[(pairs["metric"] == "cgm_tir_70_180_pct") & (pairs["group"] == "all")].iloc[0]
    headline = {(r["controller"], r["metric"]): r["mean"] for r in rows if r["group"] == "all"}
    summary = {
        "patients": n_patients,
        "time_in_range_pct": {c: headline[c, "cgm_tir_70_180_pct"] for c in evaluation.controllers},
        "time_below_54_pct": {c: headline[c, "cgm_tbr_54_pct"] for c in evaluation.controllers},
        "mpc_minus_pid_time_in_range": {
            "mean": float(tir["mean_difference"]),
            "ci": [float(tir["ci_low"]), float(tir["ci_high"])],
            "p_wilcoxon": float(tir["p_wilcoxon"]),
        },
        "cvga_zones": zones,
    }
    by = {c: evaluation.per_patient[evaluation.per_patient["controller"] == c] for c in evaluation.controllers}
    points = {c: (list(f["patient"]), f["bg_cvga_min_mg_dl"].to_numpy(), f["bg_cvga_max_mg_dl"].to_numpy())
              for c, f in by.items()}  # fmt: skip
    bands = {r.controller: (r.minutes, r.bg) for r in evaluation.results}
    html = (
        "<h2>Controllers compared: PID and model-predictive control</h2>"
        f"<p>{n_patients} patients sampled from the default T1D population, one day with meal times scattered "
        "by 15 min, sizes by 10 % and carbohydrate counted with a 10 % error, noisy GuardianRT CGM, Insulet pump, "
        "rescue carbohydrate. simglucose's PID controller (its gains) against the zone MPC of the UCSB/Harvard "
        "artificial pancreas (<code>twinloop.control.mpc</code>). Mean over patients [95 % confidence interval]; "
        f"time in range, MPC minus PID: {tir['mean_difference']:+.1f} points [{tir['ci_low']:.1f}, "
        f"{tir['ci_high']:.1f}]. Full evaluation: <a href='control/report.html'>control/report.html</a>.</p>"
        + table(shown)
        + cvga_figure(points).to_html(full_html=False, include_plotlyjs=False)
        + bands_figure(bands, "plasma glucose").to_html(full_html=False, include_plotlyjs=False)
    )
    return summary, html
