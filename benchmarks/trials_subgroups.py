"""Virtual Twins subgroup discovery over many replicate trials (direct data).

Planted: a treatment effect of 2 (noise sd 1) only where a biomarker lies in [0.6, 1.0]
(20 % of patients), trials of 1,000: the share of replicates whose best reported subgroup
overlaps the true region (Jaccard >= 0.7) with the true effect inside its interval.
Homogeneous: the same effect (0.5) for everyone, trials of 600: the share of replicates
reporting any subgroup, against the nominal false-discovery rate (0.1). tgi-claret:
chemotherapy against none with the drug acting only inside the biomarker range, truth
from the potential outcomes. The cases are
``tests/subgroup_cases.py``'s. Prints the figures and writes JSON.

    .venv/bin/python benchmarks/trials_subgroups.py [--replicates 200] [--model-replicates 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def subgroup_figures(replicates: int = 200) -> dict[str, Any]:
    """Recovery of a planted subgroup and false discoveries under a homogeneous effect."""
    from subgroup_cases import operating

    out: dict[str, Any] = {}
    for name, settings in {
        "planted": {"n": 1000, "effect": 2.0, "seed": 100},
        "homogeneous": {"n": 600, "effect": 0.0, "homogeneous": 0.5, "seed": 300},
    }.items():
        start = time.perf_counter()
        out[name] = operating(replicates, **settings)
        out[name]["seconds_per_replicate"] = (time.perf_counter() - start) / replicates
    return out


def model_figures(replicates: int = 20, n: int = 800) -> dict[str, Any]:
    """The planted biomarker subgroup on tgi-claret trials (chemotherapy against none)."""
    from subgroup_cases import model_based

    start = time.perf_counter()
    out = model_based(replicates, n, seed=1)
    return {**out, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--model-replicates", type=int, default=20)
    args = parser.parse_args()
    figures = subgroup_figures(args.replicates)
    figures["tgi_claret"] = model = model_figures(args.model_replicates)
    planted, null = figures["planted"], figures["homogeneous"]
    print(
        f"planted subgroup recovered in {planted['recovered']:.1%} ± {planted['recovered_mc_se']:.1%} "
        f"of {planted['replicates']} trials (mean Jaccard {planted['mean_jaccard']:.2f}; any subgroup reported "
        f"{planted['any_reported']:.1%})"
    )
    print(
        f"homogeneous effect: a subgroup reported in {null['any_reported']:.1%} ± {null['any_reported_mc_se']:.1%} "
        f"of {null['replicates']} trials (nominal false-discovery rate {null['fdr']:.0%})"
    )
    print(
        f"tgi-claret, biomarker subgroup (true effect {model['true_effect_inside']:.1f} inside, "
        f"{model['true_effect_outside']:.1f} outside): recovered in {model['recovered']:.1%} of {model['replicates']} "
        f"trials of {model['n']} (region found in {model['found']:.1%}, mean Jaccard {model['mean_jaccard']:.2f}), "
        f"{model['seconds']:.0f} s"
    )
    for name in ("planted", "homogeneous"):
        print(f"{name}: {figures[name]['seconds_per_replicate']:.2f} s per replicate")
    RESULTS.mkdir(exist_ok=True)
    payload = {"figures": figures, "machine": platform.platform(), "python": platform.python_version()}
    (RESULTS / "trials_subgroups.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
