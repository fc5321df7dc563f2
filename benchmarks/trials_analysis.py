"""Trial analyses at full replicate counts: speed, type-I error and power against the closed form.

Functions ``benchmarks/bench_trials.py`` calls (each returns a JSON-ready dict), and a script:

- :func:`analysis_speed`: seconds to analyse R replicate trials with each analysis (direct data).
- :func:`type_one_error_direct`: rejection rates under the null on directly drawn trials
  (normal, logistic and exponential-survival endpoints; tests/data/trials_data.py).
- :func:`type_one_error_model`: the same on a model-based null trial (tgi-claret, both arms
  the same chemotherapy) run with ``run_trial``; tumour size at week 24 as log ratio and as
  percent change to baseline, with the PROCOVA-adjusted ANCOVA once ``twinloop.trials.procova`` has it.
- :func:`power_direct` / :func:`power_model`: simulated power of the normal (resp. tumour-size
  log ratio and percent change) endpoint against ``closed_form_power`` over a grid of n; for the
  model, delta and sd come from a large pilot trial (the percent change is strongly skewed: the
  formula is only approximate there).

Each rate comes with its binomial 99 % interval around the nominal level (type-I) or its
Monte Carlo SE (power).

    .venv/bin/python benchmarks/trials_analysis.py [--replicates 2000] [--skip-model]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests" / "data"))

ALL_METHODS = {
    "y": ["ancova", {"method": "ancova", "covariates": ["base", "sex"]}, "procova"],
    "resp": [{"method": "logistic", "covariates": ["base"]}],
    "pfs": ["logrank", {"method": "cox", "covariates": ["base"]}],
}


def _plan(methods: dict[str, Any]) -> Any:
    from trials_data import context

    from twinloop.trials.analysis import AnalysisPlan

    return AnalysisPlan.parse("analysis", {"methods": methods}, context())


def _rates(results: Any, alpha: float) -> dict[str, Any]:
    from scipy import stats

    out: dict[str, Any] = {}
    for method, rows in results.groupby("method", sort=False):
        count = len(rows)
        low, high = stats.binom.interval(0.99, count, alpha)
        rate = float(rows["reject"].mean())
        out[str(method)] = {
            "replicates": count,
            "rejection_rate": rate,
            "binomial_99": [low / count, high / count],
            "inside": bool(low <= rows["reject"].sum() <= high),
            "failed_fits": int(rows["estimate"].isna().sum()),
        }
    return out


def analysis_speed(replicates: int = 2000, n: int = 200, seed: int = 1) -> dict[str, Any]:
    """Seconds to analyse ``replicates`` trials of ``n`` with each of the five analyses (one core)."""
    from trials_data import participants

    from twinloop.trials.analysis import analyse

    table = participants(replicates, n, seed=seed, missing=0.05, scan_days=7.0)
    single = {
        "ancova": {"y": ["ancova"]},
        "ancova(base+sex)": {"y": [{"method": "ancova", "covariates": ["base", "sex"]}]},
        "procova": {"y": ["procova"]},
        "logistic": {"resp": [{"method": "logistic", "covariates": ["base"]}]},
        "logrank": {"pfs": ["logrank"]},
        "cox": {"pfs": [{"method": "cox", "covariates": ["base"]}]},
    }
    analyse(table[table["replicate"] < 2], _plan(ALL_METHODS))  # imports
    seconds = {}
    for name, methods in single.items():
        start = time.perf_counter()
        analyse(table, _plan(methods))
        seconds[name] = time.perf_counter() - start
    return {"replicates": replicates, "n": n, "seconds": seconds, "total_s": sum(seconds.values())}


def type_one_error_direct(replicates: int = 2000, n: int = 200, seed: int = 2) -> dict[str, Any]:
    """Rejection rates of every analysis under the null, on directly drawn trials."""
    from trials_data import participants

    from twinloop.trials.analysis import analyse

    table = participants(replicates, n, seed=seed, missing=0.05, scan_days=7.0)
    return {"replicates": replicates, "n": n, "methods": _rates(analyse(table, _plan(ALL_METHODS)), 0.05)}


def power_direct(replicates: int = 10_000, seed: int = 3) -> dict[str, Any]:
    """Simulated power of the two-sample comparison (effect 0.5 SD) against the closed form."""
    from trials_data import participants

    from twinloop.trials.power import closed_form_power, operating_characteristics

    grid = [20, 40, 60, 80, 100, 130, 160, 200]
    table = participants(replicates, max(grid), seed=seed, effect=0.5, block=2)
    result = operating_characteristics(table, _plan({"y": ["ancova"]}), grid)
    expected = closed_form_power(0.5, 1.0, np.asarray(grid) / 2)
    return _against(result.table, expected, replicates)


def _against(table: Any, expected: np.ndarray, replicates: int) -> dict[str, Any]:
    gap = table["power"].to_numpy() - expected
    return {
        "replicates": replicates,
        "n": table["n"].tolist(),
        "simulated": table["power"].tolist(),
        "mc_se": table["mc_se"].tolist(),
        "closed_form": expected.tolist(),
        "max_abs_gap": float(np.abs(gap).max()),
        "within_2_points": bool(np.abs(gap).max() <= 0.02),
    }


def type_one_error_model(replicates: int = 2000, n: int = 200, seed: int = 5) -> dict[str, Any]:
    """Rejection rates under the null on model-based trials (both arms the same treatment), per
    endpoint and analysis; the tumour-size endpoints' skewness and kurtosis (pooled over replicates)
    say how far from normal they are. With PROCOVA available (``twinloop.trials.procova``'s
    ``with_prognostic``), the log ratio is also analysed adjusting for the twins' prognostic score."""
    from trials_data import model_spec

    from twinloop.trials.analysis import analyse
    from twinloop.trials.run import run_trial

    section = _prognostic()
    spec = model_spec(null=True, n=n, seed=seed, prognostic=section)
    start = time.perf_counter()
    data = run_trial(spec, replicates=replicates)
    simulated = time.perf_counter() - start
    if section:
        from twinloop.trials.procova import with_prognostic

        start = time.perf_counter()
        data = with_prognostic(spec, data, seed=seed)
        simulated += time.perf_counter() - start
    start = time.perf_counter()
    results = analyse(data.participants, spec)
    return {
        "replicates": replicates,
        "n": n,
        "simulate_s": simulated,
        "analyse_s": time.perf_counter() - start,
        "shape": _shape(data.participants, ["sld_log", "sld_change"]),
        "methods": {f"{e}:{m}": v for (e, rows) in results.groupby("endpoint") for m, v in _rates(rows, 0.05).items()},
    }


def _prognostic() -> dict[str, Any] | None:
    """The PROCOVA section of the model-based null trial, or None before the procova lane lands."""
    try:
        from twinloop.trials.procova import with_prognostic  # noqa: F401
    except ImportError:
        return None
    return {"endpoint": "sld_log", "population": "default", "bank": 4000, "features": ["sld_baseline", "age"]}


def _shape(table: Any, endpoints: list[str]) -> dict[str, Any]:
    """Skewness, excess kurtosis and the observed share of each endpoint, per arm."""
    out: dict[str, Any] = {}
    for e in endpoints:
        for arm, values in table.groupby("arm")[e]:
            out[f"{e}@{arm}"] = {
                "skewness": float(values.skew()),
                "excess_kurtosis": float(values.kurt()),
                "observed": float(values.notna().mean()),
            }
    return out


def power_model(
    replicates: int = 2000,
    pilot: int = 20_000,
    seed: int = 6,
    grid: tuple[int, ...] = (20, 40, 60, 80, 100, 150, 200),
    endpoints: tuple[str, ...] = ("sld_log", "sld_change"),
    draws: int = 20_000,
) -> dict[str, Any]:
    """Simulated power of the unadjusted ANCOVA (the t-test) of tumour size at week 24 (weekly
    chemotherapy against none), as log ratio and as percent change, against the closed form.

    delta and the pooled sd come from a pilot trial of ``pilot`` participants; the closed form is
    evaluated at the participants analysed per arm (n / 2 times the harmonic mean of the arms'
    observed shares). The closed form assumes a normal endpoint. To tell the endpoint's shape from
    everything else, each n also gets the t-test's power in ``draws`` trials resampled from the pilot
    (``resampled``: the real shape) and drawn normal with the pilot arms' means, sds and missing
    shares (``normal``). The percent change is strongly right-skewed (skewness 10 to 12): its sd is
    made by rare huge tumours that small trials seldom contain, so its simulated power lies far above
    the formula; the log ratio is much nearer normal, but the untreated arm's still has skewness
    about 2 and kurtosis about 8, which shows at the smallest n.
    """
    from trials_data import model_spec, pilot_moments, resampled_power

    from twinloop.trials.power import closed_form_power, power
    from twinloop.trials.run import run_trial

    spec = model_spec(null=False, n=max(grid), seed=seed, control={"kind": "none"})
    table = run_trial(spec, n=pilot, replicates=1, seed=seed + 1).participants
    result = power(spec, list(grid), replicates=replicates, methods={e: ["ancova"] for e in endpoints})
    out: dict[str, Any] = {"pilot": pilot, "grid": list(grid), "draws": draws}
    for e in endpoints:
        delta, sd, share = pilot_moments(table, e)
        rows = result.table[result.table["endpoint"] == e].sort_values("n")
        expected = closed_form_power(delta, sd, rows["n"].to_numpy() / 2 * share)
        worst = int(np.abs(rows["power"].to_numpy() - expected).argmax())
        shape = {
            kind: [resampled_power(table, e, n, draws=draws, seed=seed, normal=kind == "normal") for n in grid]
            for kind in ("resampled", "normal")
        }
        out[e] = (
            {"delta": delta, "sd": sd, "observed_per_arm": share, "shape": _shape(table, [e])}
            | _against(rows, np.asarray(expected), replicates)
            | {"max_gap_n": int(rows["n"].iloc[worst]), "max_gap_mc_se": float(rows["mc_se"].iloc[worst])}
            | {"pilot_resampled": shape["resampled"], "pilot_normal": shape["normal"]}
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--skip-model", action="store_true", help="only the directly drawn trials")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "analysis_speed": analysis_speed(args.replicates),
        "type_one_error_direct": type_one_error_direct(args.replicates),
        "power_direct": power_direct(),
    }
    if not args.skip_model:
        report["type_one_error_model"] = type_one_error_model(args.replicates)
        report["power_model"] = power_model(args.replicates)
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trials_analysis.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
