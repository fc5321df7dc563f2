"""The four-layer governance report of a synthetic data product and what was built on it.

``build_report`` gathers the evidence as one JSON-ready mapping:

* **core** — the product's mechanistic model: verification (convergence order,
  tolerance study, mass balance, model contract), validation against closed forms,
  a Sobol sensitivity analysis and the model card (assumptions, parameter sources).
* **product** — fidelity against a reference dataset, utility (TSTR), privacy (DCR and
  anonymeter) and representation of subgroups against target shares.
* **ai** — the predictor trained on the product: performance and calibration on the
  reference data, subgroup metrics (fairlearn ``MetricFrame`` with bootstrap
  intervals), input drift per time window (PSI, KS).
* **clinical** — context of use, V&V 40 credibility checklist filled from the
  sections above, and the twin registry's audit log.

:mod:`twinloop.govern.html_report` renders it; the CLI (``twinloop govern report``) writes both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import Progress

from twinloop.errors import InputError
from twinloop.govern import credibility, fidelity, privacy, validation, verification
from twinloop.govern.drift import drift, drift_over_windows
from twinloop.govern.records import subject_records
from twinloop.models.base import Model
from twinloop.models.registry import get as get_model

QUASI_IDENTIFIERS = ("age", "sex", "weight")


@dataclass
class ReportInputs:
    """What a report covers; everything but ``product`` is optional."""

    product: Path
    reference: Path | None = None
    predictor: Path | None = None
    posterior: Path | None = None
    audit: pd.DataFrame | None = None
    target_shares: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    context: credibility.ContextOfUse | None = None
    sobol_n: int = 256
    n_attacks: int = 300
    seed: int = 0


def build_report(inputs: ReportInputs, *, progress: bool = False) -> dict[str, Any]:
    """All four sections as a JSON-ready mapping."""
    from twinloop.products.dataset import Product

    product = Product.open(inputs.product)
    model = get_model(product.manifest["model"]["id"])
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("core", lambda: core_section(model, inputs)),
        ("product", lambda: product_section(product, inputs)),
        ("ai", lambda: ai_section(inputs)),
    ]
    report: dict[str, Any] = {
        "artifact": {"path": str(inputs.product), "name": product.manifest["name"], "model": product.manifest["model"]}
    }
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("governance report", total=len(steps) + 1)
        for name, run in steps:
            bar.update(task, description=f"report: {name}")
            report[name] = run()
            bar.advance(task)
        report["clinical"] = clinical_section(model, report, inputs)
        bar.advance(task)
    return report


# --- mechanistic core ---------------------------------------------------------
def core_section(model: Model, inputs: ReportInputs) -> dict[str, Any]:
    return {
        "model_card": model_card(model),
        "verification": verification.verify(model),
        "validation": validation.validate(model),
        "sensitivity": sensitivity(model, inputs),
    }


def model_card(model: Model) -> dict[str, Any]:
    """Assumptions and parameter sources: what the model states about itself."""
    return {
        "id": model.id,
        "version": model.version,
        "name": model.name,
        "description": model.description,
        "time_unit": model.time_unit,
        "states": [{"name": s.name, "unit": s.unit, "description": s.description} for s in model.states],
        "parameters": [
            {
                "name": p.name,
                "unit": p.unit,
                "default": p.default,
                "lower": p.lower,
                "upper": p.upper,
                "description": p.description,
            }
            for p in model.parameters
        ],
        "references": list(model.references),
    }


def sensitivity(model: Model, inputs: ReportInputs) -> dict[str, Any]:
    """Sobol indices of the log first observable at the end of the model's standard scenario,
    each varied parameter log-uniform over half to twice its default."""
    from twinloop.cohort.sensitivity import sobol
    from twinloop.simulate import simulate

    defaults = dict(zip(model.parameter_names, model.default_parameters, strict=True))
    plan, horizon = model.standard_scenario(defaults)
    names = [
        p.name
        for p in model.parameters
        if p.name not in model.derived_parameters and 0 < p.lower <= p.default / 2 and 2 * p.default <= p.upper
    ][:8]  # log-uniform needs positive bounds: parameters that may be <= 0 (linear scale) are not varied
    observable = model.observables[0].name
    if not names:
        return {"outcome": f"log {observable} at {horizon:g} {model.time_unit} (standard scenario)",
                "design": "no parameter is positive with [default/2, 2 x default] inside its bounds; none varied",
                "evaluations": 0, "indices": []}  # fmt: skip
    problem = {"num_vars": len(names), "names": names,
               "bounds": [[float(np.log(defaults[n] / 2)), float(np.log(defaults[n] * 2))] for n in names]}  # fmt: skip

    def outcome(params: np.ndarray) -> np.ndarray:
        log_cols = [model.parameter_names.index(n) for n in names]
        full = params.copy()
        full[:, log_cols] = np.exp(full[:, log_cols])
        traj = simulate(model, full, plan, times=np.array([0.0, horizon]), progress=False)
        return np.log(np.maximum(traj[observable][:, -1], 1e-12))

    result = sobol(outcome, problem, n=inputs.sobol_n, model=model, base=_log_base(model, names), seed=inputs.seed)
    return {
        "outcome": f"log {observable} at {horizon:g} {model.time_unit} (standard scenario)",
        "design": "each parameter log-uniform on [default/2, 2 x default]",
        "evaluations": result.n_evaluations,
        "indices": result.indices.reset_index(names="parameter").to_dict(orient="records"),
    }


def _log_base(model: Model, names: list[str]) -> np.ndarray:
    base = np.asarray(model.default_parameters, dtype=float).copy()
    for n in names:
        i = model.parameter_names.index(n)
        base[i] = np.log(base[i])
    return base


# --- synthetic data product ----------------------------------------------------
def product_section(product: Any, inputs: ReportInputs) -> dict[str, Any]:
    from twinloop.products.dataset import Product

    synthetic = subject_records(product)
    out: dict[str, Any] = {"manifest": {k: product.manifest[k] for k in ("name", "spec_hash", "code_version")}}
    out["representation"] = representation(synthetic, inputs.target_shares, None)
    if inputs.reference is None:
        out["note"] = "No reference dataset was given: fidelity, utility and privacy need one (--reference)."
        return out
    reference = Product.open(inputs.reference)
    real = subject_records(reference)
    out["reference"] = {"path": str(inputs.reference), "name": reference.manifest["name"], "subjects": len(real)}
    out["fidelity"] = fidelity.fidelity(real, synthetic, seed=inputs.seed)
    out["observations"] = fidelity.observation_marginals(reference.table("observations"), product.table("observations"))
    out["representation"] = representation(synthetic, inputs.target_shares, real)
    out["utility"] = utility(inputs)
    secrets = [c for c in ("best_change_pct", "pfs_days", "mean_glucose_mg_dl", "time_in_range_pct") if c in real]
    qi = [c for c in QUASI_IDENTIFIERS if c in real and c in synthetic]
    train, holdout = privacy.split_halves(real, inputs.seed)
    sample = synthetic.sample(min(len(synthetic), len(train)), random_state=inputs.seed)
    out["privacy"] = privacy.privacy_report(real, sample, quasi_identifiers=qi, secrets=secrets[:2], train=train,
                                            holdout=holdout, n_attacks=inputs.n_attacks, seed=inputs.seed)  # fmt: skip
    out["privacy"]["note"] = (
        "The reference here did not train the generator: the risks measure how close the synthetic product "
        "comes to these patients by chance (expected near 0). For a cohort fitted to real data, run "
        "`twinloop govern privacy` with its training and holdout halves."
    )
    return out


def representation(
    synthetic: pd.DataFrame, target: Mapping[str, Mapping[str, float]], real: pd.DataFrame | None
) -> dict[str, Any]:
    """Subgroup counts and shares against target shares (the reference's shares by default)."""
    table = (
        synthetic.assign(age_group=np.where(synthetic["age"] >= 65, "65+", "<65")) if "age" in synthetic else synthetic
    )
    ref = (
        real.assign(age_group=np.where(real["age"] >= 65, "65+", "<65")) if real is not None and "age" in real else real
    )
    out: dict[str, Any] = {}
    for column in ("sex", "age_group"):
        if column not in table:
            continue
        counts = table[column].astype(str).value_counts()
        wanted = {str(k): float(v) for k, v in target.get(column, {}).items()}
        if not wanted and ref is not None and column in ref:
            wanted = {str(k): float(v) for k, v in ref[column].astype(str).value_counts(normalize=True).items()}
        rows = []
        for lv in sorted(set(counts.index) | set(wanted)):
            share = float(counts.get(lv, 0) / len(table))
            goal = wanted.get(lv)
            rows.append({"level": lv, "count": int(counts.get(lv, 0)), "share": share, "target": goal,
                         "ratio": share / goal if goal else None})  # fmt: skip
        out[column] = rows
    return out


def utility(inputs: ReportInputs) -> dict[str, Any]:
    """TSTR against TRTR as recorded by the predictor trained on this product."""
    if inputs.predictor is None or not (inputs.predictor / "report.json").is_file():
        return {"note": "No predictor trained on this product was given (--predictor)."}
    report = json.loads((inputs.predictor / "report.json").read_text())
    if "tstr" not in report:
        return {"note": "The predictor was evaluated on its training data only (no TSTR)."}
    keep = ("n", "prevalence", "auroc", "auroc_ci95", "brier")
    return {"task": report["task"], "tstr": {k: report["tstr"][k] for k in keep},
            "trtr": {k: report["trtr"][k] for k in keep}}  # fmt: skip


# --- AI components --------------------------------------------------------------
def ai_section(inputs: ReportInputs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if inputs.posterior is not None and (inputs.posterior / "sbc.json").is_file():
        sbc = json.loads((inputs.posterior / "sbc.json").read_text())
        out["posterior"] = {"path": str(inputs.posterior), "sbc_ks_pvalues": sbc.get("ks_pvalues", {}),
                            "simulations": sbc.get("n_simulations")}  # fmt: skip
    if inputs.predictor is None or inputs.reference is None:
        out["note"] = "Predictor performance, subgroups and drift need --predictor and --reference."
        return out
    out.update(predictor_evidence(inputs.predictor, inputs.reference, inputs.product, inputs.seed))
    return out


def predictor_evidence(folder: Path, reference: Path, training: Path, seed: int) -> dict[str, Any]:
    """Performance, calibration, fairlearn subgroup metrics and drift of a saved predictor."""
    from twinloop.learn.predictor import TASKS, evaluate
    from twinloop.learn.predictor_file import load_predictor
    from twinloop.products.dataset import Product

    predictor = load_predictor(folder)  # verified against its manifest before unpickling
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("task") not in TASKS:
        raise InputError(f"--predictor '{folder}': its manifest's task must be one of {sorted(TASKS)}.")
    features_of, _ = TASKS[manifest["task"]]
    reference_product = Product.open(reference)
    real = features_of(reference_product)
    p = predictor.predict_proba(real)
    y = real["label"].to_numpy(dtype=int)
    performance = evaluate(y, p, real[["age_group", "sex"]], seed=seed)
    train = features_of(Product.open(training))
    columns = list(predictor.features)
    stamps = _prediction_times(reference_product, real.index)
    current = real[columns].assign(prediction_time=stamps)
    return {
        "predictor": {"path": str(folder), "task": manifest["task"], "features": columns},
        "performance": {k: performance[k] for k in ("auroc", "auroc_ci95", "brier", "reliability")} | {"n": len(y)},
        "subgroups": subgroup_metrics(y, p, real[["sex", "age_group"]], seed=seed),
        "drift": drift(train[columns], real[columns]),
        "drift_windows": drift_over_windows(train[columns], current, "prediction_time", freq="W", features=columns),
    }


def _prediction_times(product: Any, subjects: pd.Index) -> pd.Series:
    """When each patient's prediction could first be made: the time of their second observation."""
    obs = product.table("observations").sort_values(["subject_id", "time"])
    second = obs.groupby("subject_id")["time"].nth(1)
    return pd.Series(obs.loc[second.index, "time"].to_numpy(), index=obs.loc[second.index, "subject_id"]).reindex(
        subjects
    )


def subgroup_metrics(y: np.ndarray, p: np.ndarray, groups: pd.DataFrame, *, seed: int = 0) -> dict[str, Any]:
    """fairlearn MetricFrame per sensitive feature: AUROC, Brier, prevalence, with 95 % bootstrap intervals."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import brier_score_loss, roc_auc_score

    def auroc(yt: np.ndarray, yp: np.ndarray) -> float:
        return float(roc_auc_score(yt, yp)) if len(np.unique(yt)) == 2 else float("nan")

    metrics = {"auroc": auroc, "brier": brier_score_loss, "prevalence": lambda yt, yp: float(np.mean(yt)),
               "count": lambda yt, yp: float(len(yt))}  # fmt: skip
    out: dict[str, Any] = {}
    for column in groups.columns:
        frame = MetricFrame(metrics=metrics, y_true=y, y_pred=p, sensitive_features=groups[column].to_numpy(),
                            n_boot=200, ci_quantiles=[0.025, 0.975], random_state=seed)  # fmt: skip
        low, high = frame.by_group_ci
        by_group = frame.by_group
        out[column] = {
            "groups": {
                str(g): {m: _num(by_group.loc[g, m]) for m in metrics}
                | {f"{m}_ci95": [_num(low.loc[g, m]), _num(high.loc[g, m])] for m in ("auroc", "brier")}
                for g in by_group.index
            },
            "auroc_difference": _num(frame.difference()["auroc"]),
        }
    return out


def _num(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# --- clinical workflow ------------------------------------------------------------
GENERIC_CONTEXT = credibility.ContextOfUse(
    question="What does the model forecast for this patient under the planned inputs?",
    use="Research use; a person reviews every result before it informs a decision. Not a device.",
    model_influence="medium",
    decision_consequence="medium",
)


def model_context(model: Model) -> credibility.ContextOfUse:
    """The context of use the model's profile declares (a generic research context if none)."""
    declared = model.profile.context
    if declared is None:
        return GENERIC_CONTEXT
    return credibility.ContextOfUse(
        declared.question, declared.use, declared.model_influence, declared.decision_consequence
    )


def clinical_section(model: Model, report: Mapping[str, Any], inputs: ReportInputs) -> dict[str, Any]:
    context = inputs.context or model_context(model)
    assessment = credibility.assess(context, evidence(report, inputs.audit))
    return {**assessment, "audit_log": audit_rows(inputs.audit)}


def evidence(report: Mapping[str, Any], audit: pd.DataFrame | None) -> dict[str, str | None]:
    """What each credibility activity found in the report (None where nothing was found)."""
    core, product, ai = report["core"], report["product"], report["ai"]
    ver = core["verification"]
    orders = ", ".join(f"{k} {v['observed_order']:.2f} (expected {v['expected_order']})"
                       for k, v in ver["convergence"].items())  # fmt: skip
    found: dict[str, str | None] = {
        "code_verification": f"observed orders {orders}" if all(v["passed"] for v in ver["convergence"].values())
        else None,
        "model_contract": f"{sum(c['passed'] for c in ver['model_checks'])}/{len(ver['model_checks'])} checks passed"
        if all(c["passed"] for c in ver["model_checks"]) else None,
        "calculation_verification": "error falls with rtol to "
        f"{ver['tolerance']['stein_relative_error'][-1]:.1e}" if ver["tolerance"]["passed"] else None,
        "conservation": f"mass balance to {ver['mass_balance']['max_relative_imbalance']:.1e}"
        if ver["mass_balance"]["passed"] else None,
        "validation_reference": "; ".join(f"{v['reference']}: max rel. error {v['max_relative_error']:.1e}"
                                          for v in core["validation"] if v["passed"]) or None,
        "sensitivity": f"Sobol indices over {core['sensitivity']['evaluations']} runs",
    }  # fmt: skip
    if "posterior" in ai:
        pvals = ai["posterior"]["sbc_ks_pvalues"]
        found["uncertainty_calibration"] = "SBC KS p " + ", ".join(f"{k} {v:.2f}" for k, v in pvals.items())
    if "fidelity" in product:
        found["data_fidelity"] = f"detection AUC {product['fidelity']['detection']['auc']:.2f}, " + (
            f"median KS {product['fidelity']['summary']['median_ks']:.2f}"
        )
    if "privacy" in product:
        found["privacy"] = f"max anonymeter risk {product['privacy']['max_risk']:.3f}"
    if "performance" in ai:
        perf = ai["performance"]
        found["ai_performance"] = f"AUROC {perf['auroc']:.3f}, Brier {perf['brier']:.3f} on {perf['n']} patients"
        found["subgroups"] = "fairlearn MetricFrame by " + ", ".join(ai["subgroups"])
        found["drift_monitoring"] = f"PSI/KS over {len(ai['drift_windows'])} windows"
    if audit is not None and not audit.empty:
        found["audit_trail"] = f"{len(audit)} audit entries"
    return found


def audit_rows(audit: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The audit log with the uncertainty each entry showed (spread, intervals, coverage)."""
    if audit is None or audit.empty:
        return []
    rows = []
    for _, row in audit.iterrows():
        detail = json.loads(row["detail"]) if isinstance(row["detail"], str) else dict(row["detail"])
        rows.append({"at": str(row["at"]), "twin": row["twin_id"], "actor": row["actor"], "action": row["action"],
                     "version": None if pd.isna(row["version"]) else int(row["version"]),
                     "uncertainty": _uncertainty(detail), "detail": detail})  # fmt: skip
    return rows


def _uncertainty(detail: Mapping[str, Any]) -> str:
    """The uncertainty an audit entry recorded, in words."""
    parts = []
    flat = {**detail, **(detail.get("innovation") or {}), **(detail.get("event") or {})}
    for key, text in (("spread", "ensemble spread {:.3g}"), ("members", "{:.0f} members"),
                      ("coverage90", "90 % coverage {:.2f}"), ("p_value", "innovation p {:.3g}"),
                      ("quantiles", "quantiles {}")):  # fmt: skip
        if key in flat and flat[key] is not None:
            value = flat[key]
            parts.append(text.format(value if not isinstance(value, list) else ", ".join(map(str, value))))
    return "; ".join(parts)


def write_json(report: Mapping[str, Any], path: Path) -> Path:
    from twinloop._atomic import write_atomic

    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2, default=_jsonable)))
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
