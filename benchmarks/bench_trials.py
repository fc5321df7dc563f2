"""In-silico trials at full replicate counts: the figures issue 19 asks for, in one run.

- Throughput of ``run_trial`` (tgi-claret, ``examples/trial_nsclc.yaml``): R replicate trials of
  n participants in one chunked run, patient-days per second (the compiling run timed apart).
- Analyses (``benchmarks/trials_analysis.py``): speed over replicates, type-I error under the
  null on directly drawn and on model-based trials (binomial 99 % interval around 5 %), power
  against the two-sample closed form.
- PROCOVA and external control (``benchmarks/trials_procova.py``): observed variance ratio
  against 1 - rho^2, type-I error of the adjusted analysis, bias of a synthetic external arm
  from a correctly specified and from shifted populations.
- Subgroups (``benchmarks/trials_subgroups.py``): recovery of a planted subgroup and the share
  of homogeneous-effect trials reporting one.

Prints each part's figures and writes them together as JSON. ``--quick`` runs every part at
small replicate counts (minutes); the default sizes are those quoted in the closing note of
issue 19 and take about an hour on 2 cores.

    .venv/bin/python benchmarks/bench_trials.py [--quick] [--only run analysis procova subgroups]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

PARTS = ("run", "analysis", "procova", "subgroups")


def run_throughput(replicates: int, n: int) -> dict[str, Any]:
    """Seconds and patient-days per second of ``replicates`` trials of ``n`` (tgi-claret, 364 days)."""
    from twinloop.trials import TrialSpec, run_trial

    spec = TrialSpec.from_yaml(ROOT / "examples" / "trial_nsclc.yaml").with_(n=n, replicates=replicates)
    start = time.perf_counter()
    run_trial(spec.with_(n=n, replicates=1))
    first = time.perf_counter() - start
    start = time.perf_counter()
    data = run_trial(spec)
    seconds = time.perf_counter() - start
    days = len(data.participants) * spec.product.duration
    return {
        "replicates": replicates,
        "n": n,
        "participants": len(data.participants),
        "screened": int(data.flow["screened"].sum()),
        "first_run_s": first,
        "seconds": seconds,
        "patient_days_per_s": days / seconds,
    }


def analysis_part(quick: bool) -> dict[str, Any]:
    import trials_analysis as t

    r = 400 if quick else 2000
    return {
        "speed": t.analysis_speed(r),
        "type_one_direct": t.type_one_error_direct(r),
        "power_direct": t.power_direct(2000 if quick else 10_000),
        "type_one_model": t.type_one_error_model(200 if quick else 2000),
        "power_model": t.power_model(200 if quick else 2000, pilot=4000 if quick else 20_000),
    }


def procova_part(quick: bool) -> dict[str, Any]:
    import trials_procova as t

    return {
        "procova": t.procova_figures("size", 200 if quick else 2000, 60, 2000 if quick else 4000),
        "external": t.external_figures(20 if quick else 100, 120, 4000),
    }


def subgroups_part(quick: bool) -> dict[str, Any]:
    import trials_subgroups as t

    return {"direct": t.subgroup_figures(40 if quick else 200)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small replicate counts (minutes, not an hour)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": platform.platform(), "quick": args.quick}
    parts = {
        "run": lambda: run_throughput(100 if args.quick else 2000, 100),
        "analysis": lambda: analysis_part(args.quick),
        "procova": lambda: procova_part(args.quick),
        "subgroups": lambda: subgroups_part(args.quick),
    }
    for name in args.only:
        start = time.perf_counter()
        out[name] = parts[name]()
        out[name]["part_seconds"] = time.perf_counter() - start
        print(f"== {name}\n{json.dumps(out[name], indent=2, default=str)}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / ("bench_trials_quick.json" if args.quick else "bench_trials.json")
    target.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
