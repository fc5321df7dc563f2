"""SBML import checked against libroadrunner on the curated models of tests/data/sbml.

Each model is imported with ``twinloop.models.sbml.load_sbml``, simulated by twinloop
(diffrax or the batched engine, tight tolerances) and by libroadrunner (CVODE, rtol 1e-12,
atol 1e-16) at the same 51 output times, and compared with the relative error of
``tests/sbml_reference.py`` (a floor of 1e-6 of each output's largest value near zero).
Prints the table (model, features used, sizes, max relative error, twinloop import +
compile + run time, libroadrunner time) and writes it as JSON.

    .venv/bin/python benchmarks/bench_sbml.py [--models BIOMD0000000003 van_der_pol ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import traceback
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def _features(row: dict) -> str:
    short = {"events": "ev", "assignment_rules": "AR", "rate_rules": "RR", "initial_assignments": "IA",
             "function_definitions": "FD", "piecewise": "pw"}  # fmt: skip
    return " ".join(f"{v}{short[k]}" for k, v in row["features"].items() if k in short and v) or "-"


def main() -> None:
    import sbml_reference as ref

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=list(ref.CASES))
    args = parser.parse_args()
    rows = []
    for name in args.models:
        try:
            row = ref.compare(name)
        except Exception as e:  # noqa: BLE001 - a model that fails is a row of the table, not the end of the run
            traceback.print_exc()
            row = {"model": name, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    header = f"{'model':24} {'features':22} {'sp/rx/st/ev':>12} {'max rel err':>12} {'twinloop s':>10} {'rr s':>7}"
    print("\n" + header)
    for row in rows:
        if "error" in row:
            print(f"{row['model']:24} FAILED: {row['error'][:90]}")
            continue
        f = row["features"]
        sizes = f"{f['species']}/{f['reactions']}/{row['states']}/{f['events']}"
        print(f"{row['model']:24} {_features(row):22} {sizes:>12} {row['max_rel_error']:12.2e} "
              f"{row['twinloop_s']:10.1f} {row['roadrunner_s']:7.2f}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_sbml.json"
    if args.models != list(ref.CASES) and out.exists():  # a partial run updates its rows of the last table
        kept = [r for r in json.loads(out.read_text())["rows"] if r["model"] not in args.models]
        rows = sorted(kept + rows, key=lambda r: list(ref.CASES).index(r["model"]))
    out.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
