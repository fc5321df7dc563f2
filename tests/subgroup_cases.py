"""Direct-data cases for the subgroup analysis, shared by ``tests/test_trials_subgroups.py``
and ``benchmarks/trials_subgroups.py``: trials with a prognostic baseline and age, unit
noise, and a treatment effect planted where a biomarker lies in [0.6, 1.0] (20 % of
patients) or the same everywhere, and the recovery and false-discovery figures over replicates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twinloop.cohort.expressions import Formula
from twinloop.trials.context import SpecContext
from twinloop.trials.subgroups import SubgroupResult, SubgroupSpec, jaccard, virtual_twins

CTX = SpecContext(
    "any-model",
    ("control", "drug", "other"),
    "control",
    ("group", "age", "sex", "biomarker"),
    ("baseline",),
    {"pfs": "time_to_event", "y": "continuous", "response": "binary"},
)
REGION = (0.6, 1.0)  # the planted subgroup: biomarker in [0.6, 1.0] (20 % of patients)


def covariates(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": "all",
            "age": rng.normal(60, 10, n),
            "sex": rng.choice(["female", "male"], n),
            "biomarker": rng.uniform(0, 2, n),
            "baseline": rng.normal(50, 10, n),
        }
    )


def in_region(frame: pd.DataFrame) -> np.ndarray:
    return ((frame["biomarker"] >= REGION[0]) & (frame["biomarker"] <= REGION[1])).to_numpy()


def trial(n: int, effect: float, seed: int, *, homogeneous: float = 0.0, replicates: int = 1) -> pd.DataFrame:
    """Participants as run_trial gives them: a prognostic baseline and age, unit noise, and a
    treatment effect ``effect`` inside the region (plus ``homogeneous`` everywhere)."""
    rng = np.random.default_rng(seed)
    frame = covariates(n * replicates, rng)
    arm = np.where(rng.random(len(frame)) < 0.5, "drug", "control")
    lift = np.where(arm == "drug", homogeneous + effect * in_region(frame), 0.0)
    y = 0.05 * (frame["baseline"] - 50) + 0.02 * (frame["age"] - 60) + rng.normal(0, 1, len(frame)) + lift
    response = (rng.random(len(frame)) < np.where(lift > 0.5, 0.8, 0.25)).astype(float)
    return frame.assign(
        replicate=np.repeat(np.arange(replicates), n),
        subject_id=[f"p{i}" for i in range(len(frame))],
        arm=arm,
        y=y,
        response=response,
        simulation_failed=False,
    )


def recovered(result: SubgroupResult, effect: float, reference: pd.DataFrame) -> tuple[bool, float]:
    """Whether the reported subgroup with the largest effect is the planted one (Jaccard >= 0.7
    on a fresh sample) with its true mean effect inside the reported interval; and the Jaccard."""
    table = result.candidates
    reported = table[table["reported"]]
    if reported.empty:
        return False, 0.0
    best = reported.sort_values("estimate").iloc[-1]
    mask = np.asarray(Formula(best["label"], "rule")({c: reference[c].to_numpy() for c in reference}), dtype=bool)
    truth, score = in_region(reference), jaccard(mask, in_region(reference))
    true_effect = effect * (mask & truth).sum() / mask.sum()
    return bool(score >= 0.7 and best["ci_low"] <= true_effect <= best["ci_high"]), score


def operating(
    replicates: int, n: int, effect: float, *, homogeneous: float = 0.0, trees: int = 200, seed: int = 0
) -> dict[str, Any]:
    """Virtual Twins over ``replicates`` trials of ``n``: the share reporting any subgroup, the
    share recovering the planted one (with its true effect covered), the mean Jaccard of the
    best reported rule, each with its Monte Carlo standard error."""
    spec = SubgroupSpec.parse("subgroups", {"endpoint": "y", "discover": {"trees": trees}}, CTX)
    reference = covariates(20_000, np.random.default_rng(seed + 1))
    data = trial(n, effect, seed, homogeneous=homogeneous, replicates=replicates)
    results = [virtual_twins(data, spec, replicate=r, seed=seed + r) for r in range(replicates)]
    hits = [recovered(result, effect, reference) for result in results]
    any_rate = float(np.mean([bool(result.reported) for result in results]))
    hit_rate = float(np.mean([hit for hit, _ in hits]))
    fdr = spec.discover.fdr if spec.discover else math.nan
    return {
        "replicates": replicates, "n": n, "effect_inside": effect, "homogeneous_effect": homogeneous, "fdr": fdr,
        "any_reported": any_rate, "any_reported_mc_se": math.sqrt(any_rate * (1 - any_rate) / replicates),
        "recovered": hit_rate, "recovered_mc_se": math.sqrt(hit_rate * (1 - hit_rate) / replicates),
        "mean_jaccard": float(np.mean([score for _, score in hits])),
    }  # fmt: skip


def claret_trial_spec(n: int, replicates: int, seed: int) -> Any:
    """A tgi-claret trial of chemotherapy against no treatment in which the drug acts (KD) only
    where a biomarker lies in [0.6, 1.0] (a range covariate effect; KD x 0.02 elsewhere) and
    tumours double in 100 days or more;
    endpoint: relative change in tumour size at day 126 (percent)."""
    import yaml

    from twinloop.trials.spec import TrialSpec

    path = Path(__file__).parents[1] / "src" / "twinloop" / "models" / "tgi_claret.population.yaml"
    population = yaml.safe_load(path.read_text())
    population["constraints"][0]["lower"] = 100.0  # tumour doubling time >= 100 days: no +1000 % outliers at day 126
    population["covariates"]["biomarker"] = {"distribution": "uniform", "low": 0.0, "high": 2.0}
    population["effects"].append(
        {"parameter": "KD", "covariate": "biomarker", "kind": "range", "lower": REGION[0], "upper": REGION[1],
         "inside": 1.0, "outside": 0.02}
    )  # fmt: skip
    chemo = {"kind": "chemotherapy", "dose_mg": 1600, "cycle_days": 21, "days_on": 1, "n_cycles": 6}
    error = {"kind": "combined", "sd": 1.0, "cv": 0.05}
    ct = {"name": "ct", "observable": "sum_of_diameters", "schedule": {"every": 42}, "error": error}
    change = {"kind": "measure", "observation": "ct", "summary": "nearest", "at": 126, "window": [100, 150],
              "baseline": "sld_baseline", "relative": True}  # fmt: skip
    return TrialSpec.from_dict(
        {
            "name": "planted-biomarker", "model": "tgi-claret", "population": population, "n": n,
            "replicates": replicates, "seed": seed, "duration": 150, "resolution": 1, "chunk_size": 5000,
            "arms": {"control": {"kind": "none"}, "chemo": chemo}, "observations": [ct],
            "baseline": {"sld_baseline": {"observation": "ct", "summary": "first"}},
            "endpoints": {"sld_change": change},
            "subgroups": {"endpoint": "sld_change", "discover": {}},
        }
    )  # fmt: skip


def model_based(replicates: int, n: int, *, seed: int = 0) -> dict[str, Any]:
    """Virtual Twins on tgi-claret trials with the planted biomarker subgroup: the share of
    replicates whose reported subgroup with the most negative effect (shrinkage) overlaps
    the true region (Jaccard >= 0.7, over the replicate's participants) with its true effect
    (mean potential-outcome difference, from the hidden truth) inside the interval; ``found``
    counts the overlap alone."""
    from twinloop.trials.run import run_trial

    spec = claret_trial_spec(n, replicates, seed)
    data = run_trial(spec, potential_outcomes=True)
    truth = data.truth.set_index(["replicate", "subject_id"])
    individual = truth["sld_change@chemo"] - truth["sld_change@control"]
    hits, scores, any_reported = [], [], []
    for r in range(replicates):
        result = virtual_twins(data.participants, spec, replicate=r, seed=seed + r)
        rows = data.participants[data.participants["replicate"] == r]
        reported = result.candidates[result.candidates["reported"]]
        any_reported.append(not reported.empty)
        if reported.empty:
            hits.append(False)
            scores.append(0.0)
            continue
        best = reported.sort_values("estimate").iloc[0]
        names = {c: rows[c].to_numpy() for c in ("biomarker", "age", "weight", "sld_baseline", "sex", "group")}
        mask = np.asarray(Formula(best["label"], "rule")(names), dtype=bool)
        effect = individual.loc[[(r, s) for s in rows["subject_id"][mask]]].mean()
        scores.append(jaccard(mask, in_region(rows)))
        hits.append(scores[-1] >= 0.7 and best["ci_low"] <= effect <= best["ci_high"])
    inside = individual[in_region(data.participants.set_index(["replicate", "subject_id"]).loc[individual.index])]
    return {
        "replicates": replicates, "n": n, "any_reported": float(np.mean(any_reported)),
        "recovered": float(np.mean(hits)), "found": float(np.mean(np.asarray(scores) >= 0.7)),
        "mean_jaccard": float(np.mean(scores)), "true_effect_inside": float(inside.mean()),
        "true_effect_outside": float(individual.drop(inside.index).mean()),
    }  # fmt: skip
