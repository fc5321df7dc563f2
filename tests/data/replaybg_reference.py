"""ReplayBG peer reference for twinloop's held-out twin check on simglucose weeks.

For each patient of a simglucose week record (``make_simglucose_weeks.py``, one row per
minute) this identifies a ReplayBG twin (py-replay-bg, blueprint "multi-meal", yts = 5,
MAP twinning) on the last 2 of the 6 training days (days 5 and 6, minutes 5760-8640),
replays day 7 (minutes 8640-10080) with the recorded inputs and scores the replayed
subcutaneous glucose against simglucose's true subcutaneous glucose and its CGM readings
at the same 5-minute instants.

What ReplayBG 1.4.0 does, read from its source (``py_replay_bg/``), and what is done here:

* Data table: one row per 5 min, ``t`` (naive datetime, here UTC), ``glucose`` (mg/dL,
  NaN allowed), ``cho`` (g/min), ``bolus`` and ``basal`` (U/min), ``cho_label``,
  ``bolus_label``, ``exercise``; row j holds its values over minutes [5j, 5j + 5) of the
  simulation (``ReplayBGData``), and its glucose is compared with the model state at
  minute 5j. The table must carry a RangeIndex (ReplayBG indexes columns by label).
  Built here from the per-minute record: ``cho`` = grams announced in the row's 5 min / 5,
  ``basal`` = the week's minimum insulin rate (checked to be the rate of most minutes),
  ``bolus`` = mean over the row of (insulin - basal), ``glucose`` = the CGM reading at the
  row's time. Meal labels B/L/D/S come from the meal's announcement time, using the main
  meal windows of simglucose's RandomScenario (breakfast 5-9 h, lunch 10-14 h, dinner
  16-20 h, edges included, as in ``make_simglucose_weeks.MAIN_MEAL_WINDOWS``), anything
  else a snack ``S``; each label gets its own absorption rate and delay in the twin.
  ReplayBG's insulin sensitivities SI_B/SI_L/SI_D follow the hour of day (4-11, 11-17,
  else) by themselves.
* MAP restarts: ``MAP.__init__`` hard-codes ``n_rerun = 128`` (one start at the
  population guess, the rest drawn from the prior with ``seed``); ``ReplayBG.twin`` offers
  no argument for it. It is set here by handing ``twin`` a ``MAP`` subclass with another
  ``n_rerun`` (module attribute patched for the duration of the call only). With the same
  seed, the starts are the first ``n`` of the 128 default ones. Each restart is a scipy
  Powell minimisation (maxiter = maxfev = 100000) of the negative log posterior.
* Output time bases: ``replay()["glucose"]`` has one value per minute (``tsteps`` =
  minutes spanned by the table) and is the *plasma* glucose state x[0]; the twin is fitted
  on, and ReplayBG's CGM is simulated from, the *interstitial* state x[-1] (a 7-min
  first-order lag of plasma). ``replay()["cgm"]`` has one value per 5 min (``tysteps``),
  entry j taken at minute 5j. The interstitial trace is read from the replay's model
  (``replay()["model"].x[-1]``, per minute) and scored at the day-7 CGM timestamps;
  the plasma output is scored as a diagnostic too.
* Initial conditions: without ``x0`` a replay starts at steady state (basal insulin, empty
  gut) with glucose equal to the table's first non-NaN ``glucose``. The twin was fitted
  from exactly that start on day 5, so the day-7 replay here is one continuous replay of
  days 5-7 from the twinning start (days 5-6 with their CGM, day 7 with its CGM removed),
  scored on day 7 only: the state entering day 7 is the twin's own open-loop trajectory
  through the training days, and nothing of day 7 but its recorded inputs is used. Three
  alternatives are reported as diagnostics: ReplayBG's own chaining (replay days 5-6, then
  day 7 with ``x0`` = the end state and ``previous_data_name``, as in its
  ``*_intervals_*`` examples), which should equal the continuous replay but does not
  quite: in 1.4.0 the carried-over meal appearance ``previous_Ra`` already includes the
  bioavailability ``f`` and the model step multiplies it by ``f`` again, so the chained
  replay gets 0.81 instead of 0.9 of the gut content left from day 6; a replay of days
  6-7 from steady state at day 6's first CGM reading; and a cold start on day 7 alone
  from day 7's first CGM reading (uses one day-7 reading).
* Intervals: with MAP twinning ``Replayer`` simulates a single realization (``n_replay``
  is ignored), so median = the one trace and the 5th/95th percentile bands collapse onto
  it; no 90 % coverage is available (``coverage90`` is null). Bands would need MCMC
  twinning (50 walkers x 50000 steps by default).

Usage (niced; a few minutes of MAP per patient):

    nice -n 10 .venv/bin/python tests/data/replaybg_reference.py \
        [--patients adolescent#003 ...] [--source FILE] [--out FILE] [--restarts 32]

Defaults: all patients of ``tests/data/simglucose_weeks.csv.gz`` and
``tests/data/replaybg_day7.json``. ``replaybg_day7(rows)`` is the importable entry point
(``rows``: the per-minute record of one patient, columns as in the CSV).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
DEFAULT_SOURCE = HERE / "simglucose_weeks.csv.gz"
DEFAULT_OUT = HERE / "replaybg_day7.json"
START = pd.Timestamp("2026-01-05T00:00:00")  # the record's minute 0, UTC (naive for ReplayBG)
YTS = 5
DAY = 1440
TRAIN = (4 * DAY, 6 * DAY)  # days 5 and 6: minutes [5760, 8640)
TEST = (6 * DAY, 7 * DAY)  # day 7: minutes [8640, 10080)
MAP_RESTARTS = 32
SEED = 1
# simglucose RandomScenario main-meal windows (minutes of the day, edges included).
MEAL_WINDOWS = (("B", 300, 540), ("L", 600, 840), ("D", 960, 1200))
SETTINGS = {
    "blueprint": "multi-meal",
    "yts": YTS,
    "exercise": False,
    "twinning_method": "map",
    "map_optimizer": "scipy Powell, maxiter=100000, maxfev=100000 (ReplayBG MAP defaults)",
    "map_starts": "population guess + prior draws (ReplayBG MAP, rng seeded with seed)",
    "seed": SEED,
    "u2ss": "ReplayBG default: mean basal of the twinning table (the constant basal)",
    "extended": False,
    "find_start_guess_first": False,
    "n_replay": "1 (ignored by ReplayBG for MAP: one realization)",
    "sensor_cgm": "Vettoretti19CGM (only for ReplayBG's simulated CGM, not scored)",
    "twin_minutes": list(TRAIN),
    "scored_minutes": list(TEST),
    "table": {
        "rows": "5 min, t = 2026-01-05 00:00 + minute (naive UTC)",
        "glucose": "CGM reading at the row's time (mg/dL)",
        "cho": "grams announced within the row / 5 (g/min over the row)",
        "basal": "the week's minimum insulin rate (U/min), constant",
        "bolus": "mean over the row of (insulin - basal) (U/min)",
        "labels": "B 5-9 h, L 10-14 h, D 16-20 h (simglucose RandomScenario windows, edges included), else S",
    },
    "replay_init": "continuous replay of days 5-7 from the twinning start (steady state, G0 = first CGM of "
    "day 5), day-7 CGM removed from the replay table; scored on day 7",
    "scored_signal": "interstitial glucose state x[-1] of the replay (per minute), at the day-7 CGM times",
}


def meal_label(minute_of_day: int) -> str:
    for label, lo, hi in MEAL_WINDOWS:
        if lo <= minute_of_day <= hi:
            return label
    return "S"


def constant_basal(rows: pd.DataFrame) -> float:
    """The week's basal rate (U/min): its minimum insulin rate, checked to be the usual one."""
    rate = rows["insulin_U_per_min"].to_numpy(dtype=float)
    basal = float(rate.min())
    at_basal = float(np.isclose(rate, basal, rtol=1e-9, atol=0.0).mean())
    if at_basal < 0.5:
        raise ValueError(f"insulin is at its minimum rate on only {100 * at_basal:.1f} % of minutes: no constant basal")
    return basal


def replaybg_table(rows: pd.DataFrame, lo: int, hi: int, basal: float) -> pd.DataFrame:
    """ReplayBG's 5-min table for minutes [lo, hi) of one patient's per-minute record."""
    r = rows[(rows["minute"] >= lo) & (rows["minute"] < hi)].sort_values("minute")
    minutes = r["minute"].to_numpy()
    if lo % YTS or hi % YTS or not np.array_equal(minutes, np.arange(lo, hi)):
        raise ValueError(f"the record does not hold every minute of [{lo}, {hi}) on the {YTS}-min grid")
    n = (hi - lo) // YTS
    start = minutes.reshape(n, YTS)[:, 0]
    insulin = r["insulin_U_per_min"].to_numpy(dtype=float).reshape(n, YTS)
    carbs = r["carbs_g"].fillna(0.0).to_numpy(dtype=float).reshape(n, YTS)
    cgm = r["cgm_mg_dl"].to_numpy(dtype=float).reshape(n, YTS)
    if np.isfinite(cgm[:, 1:]).any():
        raise ValueError("CGM readings off the 5-min grid")
    grams = carbs.sum(axis=1)
    bolus = np.clip(insulin - basal, 0.0, None).mean(axis=1)
    first_meal = np.where(carbs > 0, np.arange(YTS), YTS).min(axis=1)  # announcement minute within the row
    cho_label = [
        meal_label(int((s + k) % DAY)) if g > 0 else "" for s, k, g in zip(start, first_meal, grams, strict=True)
    ]
    bolus_label = [meal_label(int(s % DAY)) if b > 0 else "" for s, b in zip(start, bolus, strict=True)]
    return pd.DataFrame(
        {
            "t": START + pd.to_timedelta(start, unit="min"),
            "glucose": cgm[:, 0],
            "cho": grams / YTS,
            "bolus": bolus,
            "basal": basal,
            "cho_label": cho_label,
            "bolus_label": bolus_label,
            "exercise": 0.0,
        }
    )


@contextlib.contextmanager
def map_restarts(n: int) -> Iterator[None]:
    """Make ``ReplayBG.twin`` use ``n`` MAP restarts (ReplayBG hard-codes 128)."""
    import py_replay_bg.py_replay_bg as rbg_module
    from py_replay_bg.twinning.map import MAP

    class RestartsMAP(MAP):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.n_rerun = n

    original = rbg_module.MAP
    rbg_module.MAP = RestartsMAP  # type: ignore[misc]
    try:
        yield
    finally:
        rbg_module.MAP = original  # type: ignore[misc]


def _warm_up(table: pd.DataFrame, bw: float, folder: str) -> None:
    """Compile ReplayBG's numba kernels outside the timed twinning."""
    from py_replay_bg.data import ReplayBGData
    from py_replay_bg.environment import Environment
    from py_replay_bg.model.t1d_model_multi_meal import T1DModelMultiMeal

    env = Environment(blueprint="multi-meal", save_folder=folder, yts=YTS, seed=SEED, plot_mode=False, verbose=False)
    model = T1DModelMultiMeal(data=table, bw=bw, environment=env, twinning_method="map", is_twin=True)
    model.neg_log_posterior(model.start_guess, ReplayBGData(data=table, model=model, environment=env))


def _interstitial(replay: dict) -> pd.Series:
    """The replay's interstitial glucose (mg/dL), one value per simulated minute, indexed by time."""
    model = replay["model"]
    ig = np.asarray(model.x[model.nx - 1], dtype=float)
    t0 = pd.Timestamp(replay["rbg_data"].t_data[0])
    if ig.size != model.tsteps:
        raise AssertionError("interstitial trace is not one value per simulated minute")
    return pd.Series(ig, index=t0 + pd.to_timedelta(np.arange(ig.size), unit="min"))


def _per_minute(values: np.ndarray, t0: pd.Timestamp) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=float), index=t0 + pd.to_timedelta(np.arange(len(values)), unit="min"))


def _per_sample(values: np.ndarray, t0: pd.Timestamp) -> pd.Series:
    return pd.Series(
        np.asarray(values, dtype=float), index=t0 + pd.to_timedelta(YTS * np.arange(len(values)), unit="min")
    )


def _meals(table: pd.DataFrame) -> list[list]:
    """[time, grams, label] of a table's meal rows."""
    meals = table[table["cho"] > 0]
    return [
        [t.strftime("%a %H:%M"), g * YTS, lab]
        for t, g, lab in zip(meals["t"], meals["cho"], meals["cho_label"], strict=True)
    ]


def _rmse(pred: pd.Series, ref: pd.Series) -> float:
    """RMSE of ``pred`` against ``ref`` on ``ref``'s timestamps (all of which ``pred`` must hold)."""
    ref = ref.dropna()
    missing = ref.index.difference(pred.index)
    if len(missing):
        raise AssertionError(f"prediction lacks {len(missing)} reference times, first {missing[0]}")
    return float(np.sqrt(np.mean((pred.loc[ref.index].to_numpy() - ref.to_numpy()) ** 2)))


def replaybg_day7(rows: pd.DataFrame, restarts: int = MAP_RESTARTS, seed: int = SEED, processes: int = 1) -> dict:
    """Twin ReplayBG on days 5-6 of one patient's per-minute week, replay day 7, score it.

    ``rows``: the per-minute record of one patient (columns as in
    ``simglucose_weeks.csv.gz``) covering at least minutes 5760-10079.
    """
    from py_replay_bg.py_replay_bg import ReplayBG

    rows = rows.sort_values("minute")
    patient = str(rows["patient"].iloc[0]) if "patient" in rows else "patient"
    bw = float(rows["body_weight_kg"].iloc[0])
    basal = constant_basal(rows)
    train = replaybg_table(rows, *TRAIN, basal)
    test = replaybg_table(rows, *TEST, basal)
    test_inputs = test.assign(glucose=np.nan)  # day 7's CGM is never shown to ReplayBG
    days57 = pd.concat([train, test_inputs], ignore_index=True)

    by_time = rows.set_index(START + pd.to_timedelta(rows["minute"].to_numpy(), unit="min"))
    day7 = by_time[(by_time["minute"] >= TEST[0]) & (by_time["minute"] < TEST[1])]
    truth = day7["subcutaneous_glucose_mg_dl"][day7["cgm_mg_dl"].notna()]  # at the CGM times
    plasma_truth = day7["plasma_glucose_mg_dl"][day7["cgm_mg_dl"].notna()]
    cgm = day7["cgm_mg_dl"].dropna()
    train_cgm = train.set_index("t")["glucose"]

    save_name = "twin_" + "".join(c if c.isalnum() else "_" for c in patient)
    with tempfile.TemporaryDirectory() as folder:
        _warm_up(train, bw, folder)
        rbg = ReplayBG(
            save_folder=folder,
            blueprint="multi-meal",
            yts=YTS,
            exercise=False,
            seed=seed,
            plot_mode=False,
            verbose=False,
        )
        with map_restarts(restarts):
            tic = time.perf_counter()
            rbg.twin(
                data=train,
                bw=bw,
                save_name=save_name,
                twinning_method="map",
                parallelize=processes > 1,
                n_processes=processes if processes > 1 else None,
            )
            twin_wall = time.perf_counter() - tic

        def replay(data: pd.DataFrame, **kwargs: object) -> dict:
            np.random.seed(seed)  # ReplayBG's CGM error model draws from numpy's global generator
            return rbg.replay(data=data, bw=bw, save_name=save_name, twinning_method="map", n_replay=1, **kwargs)

        tic = time.perf_counter()
        main = replay(days57)
        replay_wall = time.perf_counter() - tic

        # Diagnostics: ReplayBG's package chaining (x0 + previous_data_name), a replay of days 6-7 from steady
        # state at day 6's first CGM reading, and a cold start on day 7 from its first CGM reading.
        fit = replay(train)
        chained = replay(
            test.drop(columns="glucose"),
            x0=fit["x_end"]["realizations"][0].tolist(),
            previous_data_name=save_name,
        )
        train_day6 = train[train["t"] >= START + pd.Timedelta(minutes=TEST[0] - DAY)]
        days67 = replay(pd.concat([train_day6, test_inputs], ignore_index=True))
        cold = replay(test.assign(glucose=np.where(np.arange(len(test)) == 0, test["glucose"], np.nan)))
        with open(Path(folder, "results", "map", f"map_{save_name}.pkl"), "rb") as file:
            twinned = pd.read_pickle(file)

    t0 = pd.Timestamp(main["rbg_data"].t_data[0])
    minutes = TEST[1] - TRAIN[0]
    if main["model"].tsteps != minutes or main["model"].tysteps != minutes // YTS:
        raise AssertionError("replay does not span days 5-7 minute by minute")
    ig = _interstitial(main)
    plasma = _per_minute(main["glucose"]["median"], t0)
    sim_cgm = _per_sample(main["cgm"]["median"], t0)
    if not np.allclose(main["glucose"]["ci5th"], main["glucose"]["ci95th"]):
        raise AssertionError("MAP replay returned a band; coverage should be computed")
    fit_ig = _interstitial(fit)
    chained_ig = _interstitial(chained)
    cold_ig = _interstitial(cold)
    days67_ig = _interstitial(days67)

    day6 = by_time[(by_time["minute"] >= TEST[0] - DAY) & (by_time["minute"] < TEST[0])]["cgm_mg_dl"].dropna()
    repeat_day6 = pd.Series(day6.to_numpy(), index=day6.index + pd.Timedelta(days=1))

    return {
        "patient": patient,
        "body_weight_kg": bw,
        "rmse_truth": _rmse(ig, truth),
        "rmse_cgm": _rmse(ig, cgm),
        "coverage90": None,
        "coverage90_note": "MAP replay is a single realization (ReplayBG ignores n_replay for MAP): no band",
        "twin_wall_s": twin_wall,
        "replay_wall_s": replay_wall,
        "map_restarts": restarts,
        "days_twinned": (TRAIN[1] - TRAIN[0]) // DAY,
        "n_scored": len(truth),
        "fit_rmse_cgm_days5_6": _rmse(fit_ig, train_cgm),
        "diagnostics": {
            "rmse_truth_replay_glucose_output": _rmse(plasma, truth),
            "rmse_plasma_truth_replay_glucose_output": _rmse(plasma, plasma_truth),
            "rmse_cgm_replaybg_simulated_cgm": _rmse(sim_cgm, cgm),
            "rmse_truth_chained_x0": _rmse(chained_ig, truth),
            "rmse_truth_days6_7_from_day6_cgm": _rmse(days67_ig, truth),
            "rmse_truth_cold_start_day7": _rmse(cold_ig, truth),
            "max_abs_diff_chained_vs_continuous": float((chained_ig - ig).loc[truth.index].abs().max()),
            "rmse_truth_repeat_day6_cgm": _rmse(repeat_day6, truth),
        },
        "basal_U_per_min": basal,
        "u2ss_mU_per_kg_min": float(twinned["u2ss"]),
        "map_parameters": {k: float(v) for k, v in twinned["draws"].items()},
        "meals_day5_6": _meals(train),
        "meals_day7": _meals(test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", nargs="*", default=None, help="default: every patient of the source")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--restarts", type=int, default=MAP_RESTARTS)
    parser.add_argument("--processes", type=int, default=1, help="ReplayBG MAP parallelize (default 1: serial)")
    args = parser.parse_args()

    frame = pd.read_csv(args.source)
    patients = args.patients or list(frame["patient"].unique())
    unknown = sorted(set(patients) - set(frame["patient"]))
    if unknown:
        parser.error(f"not in {args.source}: {unknown}")
    result: dict = {
        "reference": "ReplayBG day-7 replay after MAP twinning on days 5-6",
        "replaybg_version": importlib.metadata.version("py-replay-bg"),
        "source": str(args.source),
        "machine": platform.platform(),
        "settings": {**SETTINGS, "map_restarts": args.restarts, "map_processes": args.processes},
        "patients": {},
    }
    for name in patients:
        res = replaybg_day7(frame[frame["patient"] == name], restarts=args.restarts, processes=args.processes)
        result["patients"][name] = res
        print(
            f"{name}: rmse_truth {res['rmse_truth']:.2f}  rmse_cgm {res['rmse_cgm']:.2f}  "
            f"fit {res['fit_rmse_cgm_days5_6']:.2f}  twin {res['twin_wall_s']:.0f} s  "
            f"replay {res['replay_wall_s']:.2f} s  repeat-day-6 {res['diagnostics']['rmse_truth_repeat_day6_cgm']:.2f}",
            flush=True,
        )
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # after each patient: partial results survive
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
