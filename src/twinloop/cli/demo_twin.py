"""The demo's closed loop: a T1D twin of one patient (whose recorded days ran under a
closed-loop insulin pump) identified on three days of CGM, synchronized day by day, its
day-ahead forecast judged against what then happened (beside "repeat yesterday"), a 24-h
forecast (fan chart) and a comparison of two insulin plans, kept in a registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import twinloop as tl
from twinloop._atomic import write_atomic
from twinloop.calibrate import NoiseModel
from twinloop.cohort import Population
from twinloop.control import Patients, RescueCarbs, Scenario, basal_bolus, closed_loop, delivered_inputs
from twinloop.models import t1d_uva_padova as t1d
from twinloop.store import TwinRegistry
from twinloop.twin import PatientTwin, TwinConfig, synthetic_record
from twinloop.twin.figures import comparison_chart, fan_chart
from twinloop.twin.registered import RegisteredTwins
from twinloop.twin.synthetic import ORIGIN, window

DAYS = 8  # three days to identify the twin, then daily syncs; the last day is held out
CREATE_DAYS = 3
PATIENT = "adult#004"


def closed_loop_history(model: Any) -> tl.Inputs:
    """The patient's insulin and meals over the recorded days and the day after: its pump
    under simglucose's basal-bolus controller (with corrections) on a noisy CGM, meals
    scattered by about 15 min and 12 % from day to day, rescue carbohydrate below 70 mg/dL."""
    scenario = Scenario(days=DAYS + 1, meals=t1d.STANDARD_MEALS, meal_time_sd_min=15.0, meal_size_cv=0.12,
                        rescue=RescueCarbs(), sensor="GuardianRT", noise=True)  # fmt: skip
    result = closed_loop(model, Patients.published(model, [PATIENT]), basal_bolus(), scenario, seed=11)
    return delivered_inputs(model, result.insulin, result.carbs)


def pm_bw(model: Any, p: np.ndarray) -> float:
    return float(p[model.parameter_names.index("BW")])


def day_ahead_check(forecast: Any, obs: pd.DataFrame, truth: pd.Series) -> dict[str, float]:
    """The held-out day: the forecast's median and "repeat yesterday" against the truth."""
    start, end = forecast.times[0], forecast.times[-1]
    day = obs[(obs["time"] >= start) & (obs["time"] <= end)]
    o = forecast.observables.index("subcutaneous_glucose")
    median = pd.Series(np.median(forecast.members[:, :, o], axis=0), index=forecast.times)
    true = truth.reindex(day["time"]).to_numpy()
    repeat = obs.set_index("time")["value"].reindex(day["time"] - pd.Timedelta("1D")).to_numpy()
    twin = median.reindex(day["time"]).to_numpy()
    return {
        "readings": len(day),
        "twin_rmse_truth": float(np.sqrt(np.nanmean((twin - true) ** 2))),
        "repeat_rmse_truth": float(np.sqrt(np.nanmean((repeat - true) ** 2))),
    }


def run_twin_demo(out: Path, members: int = 300) -> tuple[dict[str, Any], str]:
    """Build, sync, forecast and compare; returns the summary and the HTML section."""
    model = tl.models.get("t1d-uva-padova")
    p = model.preset(PATIENT)
    plan = closed_loop_history(model)
    times = np.arange(5.0, DAYS * 1440 + 1, 5.0)
    obs, doses, truth = synthetic_record(
        model,
        p,
        plan,
        times,
        observable="subcutaneous_glucose",
        noise=NoiseModel(8.0, 0.05),
        seed=3,
        subject_id=PATIENT,
    )
    db = out / "twins.db"
    db.unlink(missing_ok=True)
    registry = TwinRegistry(f"sqlite:///{db}", actor="twinloop demo")
    twins = RegisteredTwins(registry)
    day = pd.Timedelta("1D")
    twin = PatientTwin.create(
        model,
        window(obs, ORIGIN - pd.Timedelta("1s"), ORIGIN + CREATE_DAYS * day),
        doses,
        prior=Population.default(model),
        known={"BW": float(pm_bw(model, p))},
        config=TwinConfig(members=members, seed=1),
        twin_id="demo-t1d",
    )
    twins.add(twin)
    for k in range(CREATE_DAYS, DAYS):
        if k == DAYS - 1:
            held_out = twins.forecast(twin.id, 24.0)  # judged against the last day's data
        twins.sync(twin.id, window(obs, ORIGIN + k * day, ORIGIN + (k + 1) * day))
    check = day_ahead_check(held_out, obs, pd.Series(truth, index=obs["time"]))
    twin = twins.load(twin.id)
    forecast = twins.forecast(twin.id, 24.0)
    pm = model.param_map(p)
    next_meals = [(t - 0.0, g) for t, g in [(420.0, 55.0), (720.0, 70.0), (1140.0, 80.0)]]
    ratio = float(t1d.default_carb_ratio(pm))
    arms = {
        "ratio -20 %": t1d.basal_bolus(pm, next_meals, carb_ratio_g_per_U=ratio * 0.8, t_end=1440.0),
        "usual": t1d.basal_bolus(pm, next_meals, carb_ratio_g_per_U=ratio, t_end=1440.0),
    }
    result = twin.compare(arms, "time_in_range", hours=24.0)
    twins.record(twin.id, "compare", result.to_dict())
    prov = out / "twin-prov.json"
    write_atomic(prov, lambda tmp: Path(tmp).write_text(str(registry.provenance(twin.id).serialize(format="json"))))
    scores = twin.scores()
    summary = {
        "twin": twin.id,
        "patient": PATIENT,
        "versions": twin.version,
        "members": members,
        "drift_events": len(twin.drift_events),
        "identification": {k: twin.calibration.get(k) for k in ("method", "error_scale", "rmse", "wall_s")},
        "day_ahead_check": check,
        "forecast_scores": scores.to_dict("records"),
        "comparison": result.to_dict(),
        "registry": str(db),
        "provenance": str(prov),
    }
    fan = fan_chart(forecast, twin.observations, "subcutaneous_glucose")
    box = comparison_chart(result)
    scored = scores.iloc[-1] if not scores.empty else None
    score_text = (
        f"The forecast issued a day earlier met {int(scored['n'])} CGM readings it had not seen: RMSE "
        f'{check["twin_rmse_truth"]:.1f} mg/dL against the true glucose ("repeat yesterday": '
        f"{check['repeat_rmse_truth']:.1f}), CRPS {scored['crps']:.1f} mg/dL, 90 % interval coverage "
        f"{100 * scored['coverage90']:.0f} %, 50 % coverage {100 * scored['coverage50']:.0f} %. "
        if scored is not None
        else ""
    )
    fit = twin.calibration
    html = (
        "<h2>Closed loop: a patient twin</h2>"
        f"<p>Twin of {PATIENT} (synthetic CGM every 5 min, and the insulin its closed-loop basal-bolus pump delivered "
        f"and the meals it ate), {members} ensemble members, "
        f"identified on days 1-{CREATE_DAYS} with only the body weight known ({fit.get('method')}: fit RMSE "
        f"{next(iter(fit.get('rmse', {}).values()), float('nan')):.1f} mg/dL in {fit.get('wall_s', 0):.0f} s), "
        f"then synchronized day by day ({twin.version} versions in "
        f"<code>{db.name}</code>, drift events: {len(twin.drift_events)}). {score_text}</p>"
        + fan.to_html(full_html=False, include_plotlyjs=False)
        + f"<p>What if the carbohydrate ratio were 20 % lower tomorrow? Time in range "
        f"{result.arms['ratio -20 %']['q50']:.0f} % vs {result.arms['usual']['q50']:.0f} % (medians); "
        f"P(lower ratio better) = {result.p_first_better:.2f} over {result.ensemble_size} paired members.</p>"
        + box.to_html(full_html=False, include_plotlyjs=False)
        + f"<p>The twin's history (versions, the data each assimilated, forecasts, scores and the comparison) "
        f"is a W3C PROV graph in <code>{prov.name}</code>; trace it with "
        f"<code>twinloop twin lineage {twin.id} --db sqlite:///{db.name}</code>.</p>"
    )
    return summary, html
