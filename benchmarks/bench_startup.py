"""Start-up cost of ``import twinloop`` and of the command line's help pages.

Each command runs in a fresh interpreter ``--repeats`` times; its figure is the median CPU
time (user + system) of that child process, from ``resource.getrusage(RUSAGE_CHILDREN)``.
One more run under ``python -X importtime`` gives the modules that cost the most (by
cumulative import time) and the heavy libraries imported at all. The budgets (issue 16):
``import twinloop`` within 1.5 s of CPU, ``twinloop --help`` within 0.5 s.

``--before REV`` measures the same commands on the package as it was at a git revision
as well (its ``src/`` extracted with ``git archive`` into a temporary folder), so the
figures before and after come from one run on one machine. Prints the figures and writes
``benchmarks/results/bench_startup.json``.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5] [--before 912535d] [--top 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
BUDGETS_S = {"import twinloop": 1.5, "twinloop --help": 0.5}
# what the console script does: ``twinloop ARGS`` is ``python -c CLI ARGS``
CLI = "import sys; from twinloop.cli.app import main; sys.argv[0] = 'twinloop'; main()"
COMMANDS: dict[str, list[str]] = {
    "import twinloop": ["-c", "import twinloop"],
    "twinloop --help": ["-c", CLI, "--help"],
    "twinloop twin --help": ["-c", CLI, "twin", "--help"],
    "twinloop twin create --help": ["-c", CLI, "twin", "create", "--help"],
    "twinloop cohort generate --help": ["-c", CLI, "cohort", "generate", "--help"],
}
HEAVY = (
    "jax", "jaxlib", "numpy", "scipy", "pandas", "pyarrow", "numpyro", "diffrax", "equinox", "optax", "flowjax",
    "scoringrules", "numba", "plotly", "matplotlib", "statsmodels", "sqlalchemy", "fhir.resources", "sklearn",
    "xarray", "arviz", "SALib", "pint", "duckdb",
)  # fmt: skip


def cpu_seconds(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """CPU (user + system) and wall seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def parse_importtime(stderr: str) -> list[dict[str, Any]]:
    """The lines of ``-X importtime``: module, self and cumulative milliseconds, nesting depth."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append({"module": name.strip(), "self_ms": int(own) / 1e3, "cumulative_ms": int(cumulative) / 1e3,
                     "depth": depth})  # fmt: skip
    return rows


def measure(src: Path, repeats: int, top: int) -> dict[str, Any]:
    """Every command against the package in ``src``: median CPU, wall, import offenders."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)  # no .pyc writes in the timings
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": str(src), "TWINLOOP_CACHE_DIR": cache, "COLUMNS": "100"}
        out: dict[str, Any] = {}
        for name, args in COMMANDS.items():
            argv = [sys.executable, *args]
            runs = [cpu_seconds(argv, env) for _ in range(repeats)]
            imports = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, capture_output=True,
                                     text=True, check=True)  # fmt: skip
            rows = parse_importtime(imports.stderr)
            loaded = {row["module"] for row in rows}
            out[name] = {
                "cpu_s": statistics.median(cpu for cpu, _ in runs),
                "cpu_s_runs": [round(cpu, 3) for cpu, _ in runs],
                "wall_s": statistics.median(wall for _, wall in runs),
                "import_ms": sum(row["cumulative_ms"] for row in rows if row["depth"] == 0),
                "modules_imported": len(rows),
                "heavy_imported": [h for h in HEAVY if h in loaded],
                "top_cumulative": [
                    {k: row[k] for k in ("module", "cumulative_ms", "self_ms")}
                    for row in sorted(rows, key=lambda r: -r["cumulative_ms"])[:top]
                ],
            }
            print(f"  {name:34s} {out[name]['cpu_s']:6.2f} s CPU  (runs {out[name]['cpu_s_runs']})", flush=True)
    return out


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (the median is reported)")
    parser.add_argument("--before", metavar="REV", help="also measure the package at this git revision")
    parser.add_argument("--top", type=int, default=15, help="offenders listed per command")
    args = parser.parse_args()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "src"))
    trees = {"after": (ROOT / "src", git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else ""))}
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            archive = subprocess.run(["git", "archive", args.before, "src"], cwd=ROOT, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            trees = {"before": (Path(tmp) / "src", git("rev-parse", "--short", args.before)), **trees}
        for label, (src, revision) in trees.items():
            print(f"{label} ({revision}):", flush=True)
            runs[label] = {"revision": revision, "commands": measure(src, args.repeats, args.top)}

    for label, run in runs.items():
        for name, figures in run["commands"].items():
            heavy = ", ".join(figures["heavy_imported"]) or "none"
            print(f"\n{label}: {name}: {figures['cpu_s']:.2f} s CPU, {figures['wall_s']:.2f} s wall; heavy: {heavy}")
            print(f"  {'cumulative ms':>13s} {'self ms':>8s}  module (top {args.top} by cumulative import time)")
            for row in figures["top_cumulative"]:
                print(f"  {row['cumulative_ms']:13.1f} {row['self_ms']:8.1f}  {row['module']}")
    print()
    for name, budget in BUDGETS_S.items():
        figures = " -> ".join(f"{runs[label]['commands'][name]['cpu_s']:.2f} s" for label in runs)
        print(f"{name}: {figures} CPU (budget {budget} s)")

    RESULTS.mkdir(exist_ok=True)
    result = {
        "benchmark": "startup",
        "machine": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "budgets_cpu_s": BUDGETS_S,
        "runs": runs,
    }
    path = RESULTS / "bench_startup.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
