"""Credibility assessment in the manner of ASME V&V 40 (and FDA's 2023 guidance).

The context of use states the question the model answers and how its answer is
used. Model influence (how much the decision rests on the model rather than on other
evidence) and decision consequence (the harm of a wrong decision) give the model
risk, 1 to 5. Each credibility activity is required from some risk level upward;
the checklist marks each as met when the evidence is present in the report
(``evidence`` maps activity keys to a short statement of what was found, or to
nothing). Activities no software can perform (independent review, prospective
clinical validation) stay open until a person records them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twinloop.errors import InputError

LEVELS = ("low", "medium", "high")

# (key, activity, V&V 40 credibility factor, lowest model risk at which it is required)
ACTIVITIES: tuple[tuple[str, str, str, int], ...] = (
    ("code_verification", "Solver convergence order on a problem with a known answer", "code verification", 1),
    ("model_contract", "Model contract: units, positivity, steady state, gradients", "software quality assurance", 1),
    ("calculation_verification", "Tolerance study of the numerical error", "calculation verification", 2),
    ("conservation", "Conservation law (mass balance) holds numerically", "calculation verification", 2),
    ("validation_reference", "Agreement with an independent reference or peer implementation", "output comparison", 2),
    ("sensitivity", "Global sensitivity analysis of the outputs used", "model inputs", 3),
    ("uncertainty_calibration", "Posterior calibration checked (SBC or interval coverage)", "uncertainty", 3),
    ("data_fidelity", "Synthetic data fidelity against a reference dataset", "comparator", 3),
    ("privacy", "Privacy risk of data derived from patients measured", "comparator (data governance)", 3),
    ("ai_performance", "AI component performance and calibration on held-out real-like data", "output comparison", 3),
    ("subgroups", "Subgroup performance (bias) with confidence intervals", "applicability", 3),
    ("drift_monitoring", "Input drift monitored over time windows", "applicability", 4),
    ("audit_trail", "Audit log of twin queries and decisions with the uncertainty shown", "applicability", 4),
    ("independent_review", "Independent expert review of the evidence", "applicability", 4),
    ("clinical_validation", "Prospective validation against clinical outcomes", "output comparison", 5),
)


def model_risk(influence: str, consequence: str) -> int:
    """V&V 40 risk matrix: influence × consequence (low/medium/high each) -> 1..5."""
    for name, value in (("model_influence", influence), ("decision_consequence", consequence)):
        if value not in LEVELS:
            raise InputError(f"{name} must be one of {list(LEVELS)}; got {value!r}.")
    return LEVELS.index(influence) + LEVELS.index(consequence) + 1


@dataclass(frozen=True)
class ContextOfUse:
    """The question, the decision it informs and the two risk judgements."""

    question: str
    use: str
    model_influence: str = "medium"
    decision_consequence: str = "medium"

    @property
    def risk(self) -> int:
        return model_risk(self.model_influence, self.decision_consequence)

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "use": self.use, "model_influence": self.model_influence,
                "decision_consequence": self.decision_consequence, "model_risk": self.risk}  # fmt: skip


def assess(context: ContextOfUse, evidence: Mapping[str, str | None]) -> dict[str, Any]:
    """The evidence checklist for ``context``'s risk and the verdict."""
    rows = []
    for key, activity, factor, from_risk in ACTIVITIES:
        found = evidence.get(key)
        required = context.risk >= from_risk
        status = "met" if found else ("missing" if required else "not required")
        rows.append({"key": key, "activity": activity, "factor": factor, "required_from_risk": from_risk,
                     "required": required, "status": status, "evidence": found or ""})  # fmt: skip
    gaps = [r["activity"] for r in rows if r["status"] == "missing"]
    return {
        "context_of_use": context.to_dict(),
        "checklist": rows,
        "gaps": gaps,
        "verdict": (
            f"The evidence meets what model risk {context.risk} requires."
            if not gaps
            else f"Model risk {context.risk}: {len(gaps)} required activit{'y is' if len(gaps) == 1 else 'ies are'} "
            "still open; the model should not inform this decision until they are done."
        ),
    }
