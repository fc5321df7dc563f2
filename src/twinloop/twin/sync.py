"""Synchronization: a twin assimilates new observations window by window, rewinds for
late ones, keeps every member inside the model's box, and recalibrates after a drift."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twinloop.calibrate.noise import kalman_readings
from twinloop.connect.batch import Rows
from twinloop.connect.timebase import unit_seconds
from twinloop.errors import InputError
from twinloop.twin.assimilation import innovation
from twinloop.twin.ensemble import Ensemble, merged_records, propagate
from twinloop.twin.log import Readings

SNAPSHOTS = 12  # kept ensembles, one per recent version (recalibration and late data start from them)
# Snapshots are kept in memory as copies and serialized only when the twin is saved (state.pack).


@dataclass
class SyncReport:
    version: int
    assimilated: int
    late: int
    innovation: dict[str, Any]
    drift: bool
    recalibrated: bool
    scored_forecasts: list[str]
    replayed: int = 0  # logged observations re-assimilated after a rewind for late data
    unchanged: bool = False  # nothing new in the data: no new version was made
    clipped: int = 0  # state values the filter clipped at zero (declared non-negative states)
    solver: dict[str, Any] = dataclasses.field(default_factory=dict)  # path and self-check of the propagations


def apply(twin: Any, obs: Rows, doses: Rows) -> SyncReport:
    """One new version: record the new rows, score stored forecasts, assimilate (rewinding
    for late data)."""
    twin.version += 1
    twin.reseed()
    times = twin.model_time_ns(obs.ns)
    record(twin, obs, doses, times)
    scored = twin.score_forecasts(obs)
    new = Readings(times, obs.data["variable"], obs.data["value"])
    late = times <= twin.ensemble.time + 1e-9
    todo, replayed, unassimilated = new.take(~late), 0, int(late.sum())
    if late.any():
        start = kept_ensemble_before(twin, float(times[late].min()))
        if start is not None:
            todo = twin.obs_log.readings(start.time)
            replayed, unassimilated = len(todo) - len(new), 0
            twin.ensemble = start
    before = len(twin.innovations)
    assimilated, last, drift, recalibrated = assimilate(twin, todo, detect=True)
    snapshot(twin)
    entries = twin.innovations[before:]
    clipped = sum(int(e.get("clipped", 0)) for e in entries)
    return SyncReport(
        twin.version,
        assimilated - replayed,
        unassimilated,
        last,
        drift,
        recalibrated,
        scored,
        replayed,
        clipped=clipped,
        solver=merged_records([e["solver"] for e in entries if "solver" in e]),
    )


def record(twin: Any, obs: Rows, doses: Rows, times: np.ndarray) -> None:
    """Log the new rows (``times``: the observations' model times)."""
    if len(doses):
        twin.dose_log.append(doses, twin.model_time_ns(doses.ns))
    twin.obs_log.append(obs, times)


def kept_ensemble_before(twin: Any, time: float) -> Ensemble | None:
    """The latest kept ensemble (one per recent version) strictly before ``time`` (a copy)."""
    for _, ens in reversed(twin.snapshots):
        if ens.time < time - 1e-9:
            return copied(ens)
    return None


def assimilate(twin: Any, obs: Readings, *, detect: bool) -> tuple[int, dict[str, Any], bool, bool]:
    """Assimilate ``obs`` (all after the ensemble's time) window by window; returns the
    count, the last innovation, and whether drift was flagged and recalibrated."""
    drift = recalibrated = False
    last: dict[str, Any] = {}
    if len(obs) == 0:
        return 0, last, drift, recalibrated
    t_new = obs.t
    span = default_window(twin)
    edges = np.arange(twin.ensemble.time, t_new.max() + span, span)[1:]
    lo = twin.ensemble.time
    for hi in edges:
        inside = (t_new > lo + 1e-9) & (t_new <= hi + 1e-9)
        if inside.any():
            entry = update(twin, obs.take(inside))
            last = entry or last
            if detect and entry and twin.detector.observe_dict(entry):
                drift = True
                twin.drift_events.append({"version": twin.version, "time": str(twin.now), **last})
                if twin.config.recalibration == "reassimilate":
                    recalibrate(twin)
                    recalibrated = True
        lo = hi
    return len(obs), last, drift, recalibrated


def default_window(twin: Any) -> float:
    """The assimilation window in model time: the config's ``window``, else an hour for a
    model in seconds or minutes, 7 units of model time otherwise."""
    if twin.config.window is not None:
        return float(twin.config.window)
    return 60.0 * 60.0 / unit_seconds(twin.model.time_unit) if twin.model.time_unit in ("min", "s") else 7.0


def update(twin: Any, obs: Readings) -> dict[str, Any]:
    """Propagate to the last of the readings' times and assimilate them there; the
    innovation entry, or ``{}`` when no reading could inform the update (see
    ``kalman_readings``)."""
    obs = obs.take(np.argsort(obs.t, kind="stable"))
    times = obs.t
    inputs = twin.logged_inputs(twin.ensemble.time)
    t_unique = np.unique(times)
    solves: list[dict[str, Any]] = []
    predicted_all, forecast_ens = propagate(
        twin.model, twin.pmap, twin.ensemble, inputs, t_unique, twin.config.settings, record=solves
    )
    cols = [twin.model.observable_names.index(v) for v in obs.variable]
    rows = np.searchsorted(t_unique, times)
    predicted = predicted_all[:, rows, cols]
    good = np.all(np.isfinite(predicted), axis=1)
    if good.sum() < max(3, forecast_ens.size // 2):
        raise InputError(_integration_failure(twin, int((~good).sum()), forecast_ens.size, float(times.min())))
    if not good.all():  # failed members restart from a good one
        donors = twin.rng.choice(np.flatnonzero(good), size=int((~good).sum()))
        predicted[~good] = predicted[donors]
        forecast_ens = replace_members(forecast_ens, ~good, donors)
    noise = {v: twin.config.noise_model(v, twin.model) for v in dict.fromkeys(obs.variable)}
    models = [noise[v] for v in obs.variable]
    mean = predicted.mean(axis=0)
    used, y = kalman_readings(models, np.asarray(obs.value, dtype=float), mean)
    if not used.any():  # only censored readings the forecast agrees with: nothing to update
        twin.ensemble = forecast_ens
        return {}
    predicted, y = predicted[:, used], y[used]
    r = np.array([m.sd(float(p)) ** 2 for m, p, u in zip(models, mean, used, strict=True) if u])
    inn = innovation(predicted, y, r)
    nonneg = np.array([s.nonnegative for s in twin.model.states], dtype=bool)
    assimilator = twin.config.filter()
    analysed = assimilator.update(forecast_ens, predicted, y, r, nonneg, twin.rng)
    analysed = restricted(twin.config.estimate, forecast_ens, analysed, assimilator.last_index)
    twin.ensemble = within_box(twin, walked(twin, analysed))
    clipped = 0 if twin.config.estimate == "parameters" else int(assimilator.last_clipped)
    entry = {"version": twin.version, "time": float(twin.ensemble.time), **inn.to_dict(), "clipped": clipped,
             "solver": solves[0]}  # fmt: skip
    twin.innovations.append(entry)
    return entry


def restricted(estimate: str, forecast: Ensemble, analysed: Ensemble, index: np.ndarray | None) -> Ensemble:
    """The analysis with what ``estimate`` leaves alone taken back from the forecast members
    each analysis member descends from (``index``; None: the same member): the fitted
    parameters for ``"states"``, the states for ``"parameters"``; ``"joint"`` keeps both."""
    if estimate == "joint":
        return analysed
    rows = np.arange(forecast.size) if index is None else np.asarray(index)
    if estimate == "states":
        return dataclasses.replace(analysed, theta=forecast.theta[rows].copy())
    return dataclasses.replace(analysed, states=forecast.states[rows].copy())


def walked(twin: Any, ens: Ensemble) -> Ensemble:
    """The analysis with the fitted parameters' random walk (none when the parameters are
    frozen, ``TwinConfig.estimate="states"``, or none is fitted)."""
    if twin.config.estimate == "states" or ens.theta.shape[1] == 0:
        return ens
    walk = twin.rng.standard_normal(ens.theta.shape) * twin.config.param_walk_sd
    return dataclasses.replace(ens, theta=ens.theta + walk)


GAP_DAYS = 14.0  # a jump in the data longer than this is named when members fail across it


def _integration_failure(twin: Any, failed: int, size: int, first: float) -> str:
    """Why members failed: a long gap since the twin's state is named as such."""
    days = (first - twin.ensemble.time) * twin.clock / 86400.0
    if days > GAP_DAYS:
        start, end = (twin.origin + pd.Timedelta(seconds=t * twin.clock)
                      for t in (twin.ensemble.time, first))  # fmt: skip
        return (
            f"Twin {twin.id}: the new data start {days:.0f} days after the twin's state ({start:%Y-%m-%d %H:%M} -> "
            f"{end:%Y-%m-%d %H:%M} UTC), a gap the model cannot bridge ({failed} of {size} members failed to "
            "integrate across it). Sync the data of the gap first, or create a new twin from the recent data."
        )
    return f"Twin {twin.id}: {failed} of {size} members failed to integrate; check the inputs (units, rates)."


def within_box(twin: Any, ens: Ensemble) -> Ensemble:
    """Members whose parameters (derived ones included) left the model's bounds restart
    from members inside them, so every member stays physiologically valid."""
    inside = twin.pmap.inside_box(ens.theta)
    if inside.all():
        return ens
    if not inside.any():
        raise InputError(
            f"Twin {twin.id}: every member left the parameter bounds of '{twin.model.id}' in this update; "
            "check the units of the new observations."
        )
    donors = twin.rng.choice(np.flatnonzero(inside), size=int((~inside).sum()))
    return replace_members(ens, ~inside, donors)


def replace_members(ens: Ensemble, which: np.ndarray, donors: np.ndarray) -> Ensemble:
    """``ens`` with the members ``which`` replaced by copies of ``donors`` (their weights too,
    renormalized, for a weighted particle ensemble)."""
    theta, states = ens.theta.copy(), ens.states.copy()
    theta[which], states[which] = theta[donors], states[donors]
    weights = None
    if ens.weights is not None:
        weights = ens.weights.copy()
        weights[which] = weights[donors]
        weights = weights / weights.sum()
    return dataclasses.replace(ens, theta=theta, states=states, weights=weights)


def snapshot(twin: Any, *, first: bool = False) -> None:
    """Keep a copy of the current ensemble for this version (the only one with ``first``)."""
    kept = [] if first else twin.snapshots
    twin.snapshots = [*kept, (twin.version, copied(twin.ensemble))][-SNAPSHOTS:]


def copied(ens: Ensemble) -> Ensemble:
    """``ens`` with its own arrays (a kept ensemble never shares memory with a live one)."""
    weights = None if ens.weights is None else ens.weights.copy()
    return Ensemble(ens.theta.copy(), ens.states.copy(), ens.time, weights)


def recalibrate(twin: Any) -> None:
    """Restart from the ensemble of ``recalibration_lookback`` syncs ago with widened
    parameters and re-assimilate everything observed since (the recent window)."""
    back = [ens for v, ens in twin.snapshots if v <= twin.version - twin.config.recalibration_lookback]
    start = copied(back[-1] if back else twin.snapshots[0][1])
    theta = start.theta
    if twin.config.estimate != "states":  # widen the parameters, unless they are not estimated
        theta = theta + twin.rng.standard_normal(theta.shape) * (twin.config.recalibration_spread * twin.prior.sd)
    target = twin.ensemble.time
    twin.ensemble = Ensemble(theta, start.states, start.time)
    replay = twin.obs_log.readings(start.time, target)
    twin.detector.reset()
    assimilate(twin, replay, detect=False)
    twin.drift_events[-1]["recalibrated_from_time"] = float(start.time)
