"""PROCOVA and external control arms on tgi-claret at full replicate counts.

``procova_figures``: a three-arm trial (two identical schedules, a doubled dose) replicated
R times; each participant's twin (kernel posterior over a bank simulated from the default
population, or gradient boosting) predicts the control-arm endpoint from baseline data;
reports rho, the predicted variance ratio 1 - rho^2 against the observed one (bootstrap CI),
the mean squared-SE ratio, the equivalent sample size, the type-I error of the PROCOVA
ANCOVA on the null comparison (with its binomial 99 % interval) and the bias against the
potential outcomes. Three endpoints: tumour size at week 18 (baseline size informs it),
percent change at week 18 (it barely does), and percent change with a 6-week run-in on the
control schedule whose scans enter the twin's features.

``external_figures``: an external control arm from the trial's own population (correctly
specified) over R replicates (effect bias against the potential outcomes, CI coverage,
bias against the randomized control), and from two shifted populations (35 years younger;
tumours growing twice as fast) with the flags raised.

    .venv/bin/python benchmarks/trials_procova.py [--replicates 2000] [--external-replicates 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
CHEMO = {"kind": "chemotherapy", "cycle_days": 21, "days_on": 1, "n_cycles": 6}
CT = {"name": "ct", "observable": "sum_of_diameters", "schedule": {"every": 42},
      "error": {"kind": "combined", "sd": 1.0, "cv": 0.05}}  # fmt: skip
WEEK_18 = {"kind": "measure", "observation": "ct", "summary": "nearest", "at": 126, "window": [100, 130]}
DESIGNS: dict[str, dict[str, Any]] = {
    "size": {
        "baseline": {"sld_baseline": {"observation": "ct", "summary": "first"}},
        "endpoints": {"y": WEEK_18},
        "features": ["sld_baseline", "age", "weight"],
    },
    "change": {
        "baseline": {"sld_baseline": {"observation": "ct", "summary": "first"}},
        "endpoints": {"y": {**WEEK_18, "baseline": "sld_baseline", "relative": True}},
        "features": ["sld_baseline", "age", "weight"],
    },
    "change-run-in": {
        "run_in": {"arm": "low", "duration": 42},
        "baseline": {"sld_screen": {"observation": "ct", "summary": "first", "window": [0, 0]},
                     "sld_baseline": {"observation": "ct", "summary": "last", "window": [0, 42]}},
        "endpoints": {"y": {**WEEK_18, "baseline": "sld_baseline", "relative": True}},
        "features": ["sld_screen", "sld_baseline", "age", "weight"],
    },
}  # fmt: skip


def procova_trial(design: str, replicates: int, n: int, bank: int, method: str = "twin", seed: int = 4) -> Any:
    """The trial spec of ``design`` (see :data:`DESIGNS`)."""
    from twinloop.trials.spec import TrialSpec

    d = DESIGNS[design]
    raw = {
        "name": f"procova-{design}",
        "model": "tgi-claret",
        "n": n,
        "replicates": replicates,
        "seed": seed,
        "duration": 130,
        "chunk_size": 4096,
        "arms": {"low": {**CHEMO, "dose_mg": 800}, "low-again": {**CHEMO, "dose_mg": 800},
                 "high": {**CHEMO, "dose_mg": 1600}},
        "observations": [CT],
        **{k: v for k, v in d.items() if k != "features"},
        "prognostic": {"endpoint": "y", "bank": bank, "features": d["features"], "method": method},
    }  # fmt: skip
    return TrialSpec.from_dict(raw)


def procova_figures(
    design: str = "size", replicates: int = 2000, n: int = 60, bank: int = 4000, method: str = "twin"
) -> dict[str, Any]:
    """Variance reduction, equivalent n, type-I error and bias of PROCOVA on one design."""
    from scipy import stats

    from twinloop.trials.procova import procova_summary, with_prognostic
    from twinloop.trials.run import run_trial

    start = time.perf_counter()
    spec = procova_trial(design, replicates, n, bank, method)
    data = with_prognostic(spec, run_trial(spec, potential_outcomes=True))
    summary = procova_summary(data.participants, "y", "low")
    comps = {c["comparison"]: c for c in summary["comparisons"]}
    null, high = comps["low-again vs low"], comps["high vs low"]
    truth = data.truth
    effect = float((truth["y@high"] - truth["y@low"]).mean())
    return {
        "design": design,
        "method": method,
        "replicates": replicates,
        "n": n,
        "bank": bank,
        "rho": summary["rho"],
        "predicted_variance_ratio": summary["predicted_variance_ratio"],
        "observed_variance_ratio": {k: c["variance_ratio"] for k, c in comps.items()},
        "observed_variance_ratio_ci": {k: c["variance_ratio_ci"] for k, c in comps.items()},
        "se2_ratio": summary["se2_ratio"],
        "equivalent_n": summary["equivalent_n"],
        "saving_fraction": summary["saving_fraction"],
        "type_one_adjusted": null["rejection_adjusted"],
        "type_one_unadjusted": null["rejection_unadjusted"],
        "type_one_99_interval": [float(stats.binom.ppf(q, replicates, 0.05) / replicates) for q in (0.005, 0.995)],
        "power_adjusted": high["rejection_adjusted"],
        "power_unadjusted": high["rejection_unadjusted"],
        "true_effect": effect,
        "estimate_adjusted": high["estimate_adjusted"],
        "estimate_mc_se": high["se_adjusted"] / np.sqrt(replicates),
        "ess_min": data.lineage["prognostic"].get("ess", {}).get("min"),
        "seconds": time.perf_counter() - start,
    }


def external_figures(replicates: int = 200, n: int = 120, pool: int = 4000) -> dict[str, Any]:
    """An external arm from the trial's own population over R replicates, and two shifted pools."""
    from twinloop.cohort.spec import load_yaml
    from twinloop.trials.external import external_control
    from twinloop.trials.run import run_trial
    from twinloop.trials.spec import TrialSpec

    start = time.perf_counter()
    source = Path(__file__).parents[1] / "src/twinloop/models/tgi_claret.population.yaml"

    def population(age: float = 63.0, kl_factor: float = 1.0) -> dict[str, Any]:
        raw = load_yaml(source)
        raw.pop("model")
        raw["covariates"]["age"]["mean"] = age
        raw["typical"]["KL"] *= kl_factor
        return raw

    def trial(pop: Any, reps: int) -> tuple[Any, Any]:
        raw = {
            "name": "external", "model": "tgi-claret", "n": n, "replicates": reps, "seed": 5, "duration": 130,
            "chunk_size": 4096, "eligibility": ["age <= 75"],
            "arms": {"low": {**CHEMO, "dose_mg": 800}, "high": {**CHEMO, "dose_mg": 1600}},
            "observations": [CT], "baseline": {"sld_baseline": {"observation": "ct", "summary": "first"}},
            "endpoints": {"y": WEEK_18}, "external_control": {"population": pop, "n": pool,
                          "covariates": ["age", "sex", "weight", "sld_baseline"]},
        }  # fmt: skip
        spec = TrialSpec.from_dict(raw)
        return spec, run_trial(spec, potential_outcomes=True)

    spec, data = trial("default", replicates)
    ext = external_control(spec, data)
    truth = data.truth.groupby("replicate")[["y@high", "y@low"]].mean()
    effects = ext.effects.set_index("replicate")
    true_effect = (truth["y@high"] - truth["y@low"]).reindex(effects.index)
    covered = (effects["ci_low"] <= true_effect) & (true_effect <= effects["ci_high"])
    error = effects["estimate"] - true_effect
    out: dict[str, Any] = {
        "replicates": replicates,
        "pool": pool,
        "effect_bias": float(error.mean()),
        "effect_bias_mc_se": float(error.std(ddof=1) / np.sqrt(len(error))),
        "effect_ci_coverage": float(covered.mean()),
        "bias_vs_randomized_control": float(ext.bias["estimate"].mean()),
        "bias_ci_excludes_0": float(((ext.bias["ci_low"] > 0) | (ext.bias["ci_high"] < 0)).mean()),
        "ess_median": float(ext.diagnostics["ess"].median()),
        "flags": ext.flags,
    }
    for name, pop in (("younger_by_35", population(age=28.0)), ("growth_x2", population(kl_factor=2.0))):
        spec, data = trial(pop, 1)
        shifted = external_control(spec, data)
        out[name] = {"flags": shifted.flags, "bias": float(shifted.bias["estimate"].iloc[0])}
    out["seconds"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--bank", type=int, default=4000)
    parser.add_argument("--external-replicates", type=int, default=200)
    parser.add_argument("--designs", default="size,change,change-run-in")
    args = parser.parse_args()
    figures: dict[str, Any] = {
        "procova": [procova_figures(d, args.replicates, args.n, args.bank) for d in args.designs.split(",")],
        "procova_regression": procova_figures("size", args.replicates, args.n, args.bank, "regression"),
        "external": external_figures(args.external_replicates),
    }
    text = json.dumps(figures, indent=2, default=float)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trials_procova.json").write_text(text)


if __name__ == "__main__":
    main()
