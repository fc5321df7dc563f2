"""Drift detection on normalized innovations.

``nis``: a drift event when the NIS of ``k`` consecutive syncs exceeds its chi-square
upper ``1 - alpha`` quantile (the model no longer explains the data at its stated
uncertainty). ``cusum``: a one-sided CUSUM of the standardized NIS,
``(NIS - m) / sqrt(2 m)``, with allowance ``allowance`` and threshold ``h``. After an
event the detector stays quiet for ``refractory`` updates while the recalibrated twin
settles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from scipy import stats

from twinloop.errors import InputError
from twinloop.twin.assimilation.base import Innovation


@dataclass
class DriftDetector:
    method: Literal["nis", "cusum"] = "cusum"
    k: int = 3
    alpha: float = 0.01
    allowance: float = 1.0
    h: float = 4.0
    refractory: int = 6
    run: int = 0
    quiet: int = 0
    cusum: float = 0.0
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in ("nis", "cusum"):
            raise InputError(f"drift method must be 'nis' or 'cusum'; got {self.method!r}.")
        if self.k < 1 or not 0 < self.alpha < 1:
            raise InputError(f"drift needs k >= 1 and 0 < alpha < 1; got k={self.k}, alpha={self.alpha}.")

    def observe(self, inn: Innovation) -> bool:
        """Feed one sync's innovation; True when a drift event fires (the state then resets)."""
        if inn.m == 0:
            return False
        z = (inn.nis - inn.m) / (2.0 * inn.m) ** 0.5
        self.history.append(z)
        if self.quiet > 0:  # just after an event (and its recalibration): let the twin settle
            self.quiet -= 1
            return False
        if self.method == "nis":
            self.run = self.run + 1 if inn.nis > stats.chi2.ppf(1 - self.alpha, inn.m) else 0
            fired = self.run >= self.k
        else:
            self.cusum = max(0.0, self.cusum + z - self.allowance)
            fired = self.cusum > self.h
        if fired:
            self.reset()
            self.quiet = self.refractory
        return fired

    def observe_dict(self, inn: dict[str, Any]) -> bool:
        """:meth:`observe` on an innovation's dictionary form."""
        return self.observe(
            Innovation(
                int(inn["m"]),
                float(inn["nis"]),
                float(inn["mean_innovation"]),
                float(inn["rmse"]),
                float(inn["spread"]),
            )
        )

    def reset(self) -> None:
        self.run, self.cusum = 0, 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "k": self.k,
            "alpha": self.alpha,
            "allowance": self.allowance,
            "h": self.h,
            "refractory": self.refractory,
            "run": self.run,
            "cusum": self.cusum,
            "quiet": self.quiet,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DriftDetector:
        keys = ("method", "k", "alpha", "allowance", "h", "refractory", "run", "cusum", "quiet")
        return cls(**{k: raw[k] for k in keys if k in raw})
