"""The T1D twin on held-out days of patients it was not built from, against naive
baselines and the peer ReplayBG.

Data: one week per simglucose patient, made by simglucose 0.2.11 itself (its random
meals and snacks, basal-bolus controller with corrections, Insulet pump, GuardianRT
sensor noise; seeds in ``tests/data/make_simglucose_weeks.py``, not used to tune
anything). Make the data first (about 30 min of one core; one file per age group runs
three at once):

    for g in adolescent adult child; do .venv/bin/python tests/data/make_simglucose_weeks.py \
        --patients $(printf "$g#%03d " $(seq 1 10)) --out benchmarks/results/simglucose_weeks_$g.csv.gz & done

For each patient, a twin is identified on days 1-6 with only the body weight known
(the prior: the default T1D population, or with ``--leave-one-out`` that population
refitted without the patient), then forecasts day 7 from the recorded insulin and
meals. Scored on day 7 at the CGM's 5-min times: RMSE of the ensemble median against
the true glucose, 50/90 % interval coverage of the CGM, CRPS, identification time;
the same for "repeat day 6", the prior-only forecast and ReplayBG's MAP twin (on the
patients given by ``--replaybg``, identified on days 5-6: its 6-day MAP is impractical).

    .venv/bin/python benchmarks/bench_twin_heldout.py [--patients adult#001 ...] [--leave-one-out]
        [--replaybg adolescent#001 adolescent#006 adult#001 adult#006 child#001 child#006] [--members 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DATA = [RESULTS / f"simglucose_weeks_{group}.csv.gz" for group in ("adolescent", "adult", "child")]
sys.path.insert(0, str(HERE.parent / "tests" / "data"))
REPLAYBG_DEFAULT = ["adolescent#001", "adolescent#006", "adult#001", "adult#006", "child#001", "child#006"]


def run_twinloop(week: object, leave_one_out: bool, members: int) -> dict:
    import twinloop as tl
    from twinloop.cohort import Population
    from twinloop.models.t1d_population import population_spec
    from twinloop.twin import TwinConfig
    from twinloop.twin.heldout import heldout_check

    model = tl.models.get("t1d-uva-padova")
    prior = Population.from_dict(population_spec((week.patient,))) if leave_one_out else Population.default(model)  # type: ignore[attr-defined]
    check = heldout_check(
        model,
        week.observations,  # type: ignore[attr-defined]
        week.doses,  # type: ignore[attr-defined]
        split=pd.Timestamp("2026-01-11T00:00:00Z"),
        prior=prior,
        truth=week.truth,  # type: ignore[attr-defined]
        known={"BW": week.body_weight_kg},  # type: ignore[attr-defined]
        config=TwinConfig(members=members, seed=0),
    )
    calibration = check.identification["calibration"]
    out = {k: v.to_dict() for k, v in check.scores.items()}
    out["identification"] = {
        "error_scale": calibration["error_scale"],
        "fit_rmse": calibration["rmse"],
        "residual_autocorrelation": calibration["residual_autocorrelation"],
        "wall_s": calibration["wall_s"],
    }
    return out


def run_replaybg(frame: pd.DataFrame, patient: str) -> dict:
    from replaybg_reference import replaybg_day7

    return replaybg_day7(frame[frame["patient"] == patient])


def pooled(rows: dict[str, dict], method: str) -> dict:
    scores = [r[method] for r in rows.values() if method in r]
    if not scores:
        return {"patients": 0}
    n = np.array([s["n"] for s in scores], dtype=float)

    def weighted(key: str) -> float:
        values = np.array([s.get(key, np.nan) for s in scores], dtype=float)
        ok = np.isfinite(values)
        return float(np.sum(values[ok] * n[ok]) / np.sum(n[ok])) if ok.any() else float("nan")

    rmse = np.array([s["rmse_truth"] for s in scores])
    return {
        "patients": len(scores),
        "median_rmse_truth": float(np.median(rmse)),
        "max_rmse_truth": float(np.max(rmse)),
        "coverage50": weighted("coverage50"),
        "coverage90": weighted("coverage90"),
        "crps": weighted("crps"),
        "median_wall_s": float(np.median([s.get("wall_s", np.nan) for s in scores])),
    }


def main() -> None:
    from simglucose_weeks import read_weeks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", default=DATA)
    parser.add_argument("--patients", nargs="*", default=None)
    parser.add_argument("--replaybg", nargs="*", default=REPLAYBG_DEFAULT)
    parser.add_argument("--leave-one-out", action="store_true")
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default results/bench_twin_heldout.json)")
    args = parser.parse_args()
    missing = [str(p) for p in args.data if not p.exists()]
    if missing:
        raise SystemExit(f"{missing} missing; make them with tests/data/make_simglucose_weeks.py (see above).")
    weeks = {k: v for path in args.data for k, v in read_weeks(path).items()}
    frame = pd.concat([pd.read_csv(p) for p in args.data], ignore_index=True) if args.replaybg else None
    rows: dict[str, dict] = {}
    for name in args.patients or list(weeks):
        t0 = time.perf_counter()
        rows[name] = run_twinloop(weeks[name], args.leave_one_out, args.members)
        if frame is not None and name in args.replaybg:
            peer = run_replaybg(frame, name)
            rows[name]["replaybg"] = {
                "rmse_truth": peer["rmse_truth"],
                "coverage90": peer.get("coverage90", float("nan")),
                "wall_s": peer["twin_wall_s"],
                "n": 288,
            }
        r = rows[name]
        print(
            f"{name:15s} twin {r['twin']['rmse_truth']:6.1f}  repeat {r['repeat_previous_day']['rmse_truth']:6.1f}"
            f"  prior {r['prior_only']['rmse_truth']:6.1f}"
            + (f"  replaybg {r['replaybg']['rmse_truth']:6.1f}" if "replaybg" in r else "")
            + f"  cov90 {r['twin']['coverage90']:.2f}  cov50 {r['twin']['coverage50']:.2f}"
            f"  crps {r['twin']['crps']:5.1f}  identify {r['identification']['wall_s']:5.1f} s"
            f"  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    summary = {m: pooled(rows, m) for m in ("twin", "repeat_previous_day", "prior_only", "replaybg")}
    peer_names = [n for n in rows if "replaybg" in rows[n]]
    if peer_names:
        summary["twin_on_replaybg_patients"] = pooled({n: rows[n] for n in peer_names}, "twin")
    worse = [n for n, r in rows.items() if r["twin"]["rmse_truth"] >= r["repeat_previous_day"]["rmse_truth"]]
    targets = {
        "median_rmse_below_replaybg": bool(
            peer_names
            and summary["twin_on_replaybg_patients"]["median_rmse_truth"] < summary["replaybg"]["median_rmse_truth"]
        ),
        "no_patient_worse_than_repeat_day_6": not worse,
        "pooled_coverage90_in_0.85_0.95": bool(0.85 <= summary["twin"]["coverage90"] <= 0.95),
        "identification_5x_faster_than_replaybg": bool(
            peer_names
            and summary["replaybg"]["median_wall_s"] >= 5 * summary["twin_on_replaybg_patients"]["median_wall_s"]
        ),
    }
    result = {
        "benchmark": "bench_twin_heldout",
        "data": [str(p) for p in args.data],
        "leave_one_out": args.leave_one_out,
        "members": args.members,
        "machine": platform.platform(),
        "summary": summary,
        "targets": targets,
        "worse_than_repeat": worse,
        "patients": rows,
    }
    print(json.dumps({"summary": summary, "targets": targets}, indent=2))
    RESULTS.mkdir(exist_ok=True)
    suffix = "_loo" if args.leave_one_out else ""
    out = args.out or RESULTS / f"bench_twin_heldout{suffix}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
