"""A small tgi-claret trial for the model-based PROCOVA and external-control tests: CT scans
every 6 weeks, the baseline scan, tumour size at week 18 (``sld_126``)."""

from __future__ import annotations

from typing import Any

CHEMO = {"kind": "chemotherapy", "cycle_days": 21, "days_on": 1, "n_cycles": 6}


def claret_trial(name: str, doses: dict[str, int], **extra: Any) -> dict[str, Any]:
    """The spec mapping: one arm per dose (mg every 3 weeks, 6 cycles), ``extra`` keys added."""
    return {
        "name": name,
        "model": "tgi-claret",
        "duration": 130,
        "chunk_size": 512,
        "arms": {arm: {**CHEMO, "dose_mg": dose} for arm, dose in doses.items()},
        "observations": [{"name": "ct", "observable": "sum_of_diameters", "schedule": {"every": 42},
                          "error": {"kind": "combined", "sd": 1.0, "cv": 0.05}}],
        "baseline": {"sld_baseline": {"observation": "ct", "summary": "first"}},
        "endpoints": {"sld_126": {"kind": "measure", "observation": "ct", "summary": "nearest", "at": 126,
                                  "window": [100, 130]}},
        **extra,
    }  # fmt: skip
