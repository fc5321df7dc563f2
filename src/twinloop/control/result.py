"""The outcome of a closed-loop run: per-minute traces, actions and their lineage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from twinloop.control.patients import Patients
    from twinloop.control.scenario import Scenario
    from twinloop.control.types import Controller
    from twinloop.models.base import Model


@dataclass(frozen=True)
class ClosedLoopResult:
    """Traces of a closed-loop run, patient-first.

    Per minute ``(n, T)``: ``bg`` plasma glucose and ``sg`` subcutaneous glucose (mg/dL)
    at the start of the minute, ``cgm`` the sensor reading then shown, ``insulin`` the
    delivered rate (U/min) and ``carbs`` the carbohydrate eaten (g/min) over the minute.
    Per control period ``(n, K)``: the requested ``basal`` (U/min) and ``bolus`` (U),
    the ``cgm_seen`` by the controller and the ``rescue_g`` taken. ``failed`` marks
    patients whose integration failed (their traces are not to be trusted).
    """

    ids: tuple[str, ...]
    groups: tuple[str, ...]
    minutes: np.ndarray
    period_starts: np.ndarray
    bg: np.ndarray
    sg: np.ndarray
    cgm: np.ndarray
    insulin: np.ndarray
    carbs: np.ndarray
    basal: np.ndarray
    bolus: np.ndarray
    cgm_seen: np.ndarray
    rescue_g: np.ndarray
    failed: np.ndarray
    controller: str
    controller_settings: dict[str, Any]
    scenario: dict[str, Any]
    model: dict[str, str]
    seed: int
    accurate: bool

    @classmethod
    def from_arrays(
        cls,
        model: Model,
        patients: Patients,
        controller: Controller,
        scenario: Scenario,
        seed: int,
        accurate: bool,
        period: int,
        arrays: dict[str, np.ndarray],
    ) -> ClosedLoopResult:
        minutes = np.arange(arrays["bg"].shape[1], dtype=np.float64)
        return cls(
            ids=patients.ids,
            groups=patients.groups,
            minutes=minutes,
            period_starts=minutes[::period],
            bg=arrays["bg"],
            sg=arrays["sg"],
            cgm=arrays["cgm"],
            insulin=arrays["insulin"],
            carbs=arrays["carbs"],
            basal=arrays["basal"],
            bolus=arrays["bolus"],
            cgm_seen=arrays["seen"],
            rescue_g=arrays["rescue"],
            failed=arrays["code"] != 0,
            controller=controller.name,
            controller_settings={k: _plain(v) for k, v in controller.settings.items()},
            scenario=scenario.to_dict(),
            model={"id": model.id, "version": model.version, "content_hash": model.content_hash()},
            seed=int(seed),
            accurate=bool(accurate),
        )

    @property
    def n(self) -> int:
        return len(self.ids)

    def sensor_times(self) -> np.ndarray:
        """The minutes at which the sensor sampled (readings hold in between)."""
        from twinloop.models.t1d_cgm import CGMSensor

        step = round(CGMSensor(self.scenario["sensor"]).spec.sample_time_min)
        return self.minutes[::step]

    def lineage(self) -> dict[str, Any]:
        """What produced these traces: model, controller and settings, scenario, seed, path."""
        from twinloop import __version__

        return {
            "model": dict(self.model),
            "controller": {"name": self.controller, "settings": dict(self.controller_settings)},
            "scenario": dict(self.scenario),
            "seed": self.seed,
            "integration": "adaptive Tsit5 per minute" if self.accurate else "one Tsit5 step per minute",
            "twinloop_version": __version__,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per patient and minute."""
        import pandas as pd

        n, t = self.bg.shape
        return pd.DataFrame(
            {
                "patient": np.repeat(np.asarray(self.ids, dtype=object), t),
                "group": np.repeat(np.asarray(self.groups, dtype=object), t),
                "controller": self.controller,
                "minute": np.tile(self.minutes, n),
                "plasma_glucose_mg_dl": self.bg.ravel(),
                "subcutaneous_glucose_mg_dl": self.sg.ravel(),
                "cgm_mg_dl": self.cgm.ravel(),
                "insulin_U_per_min": self.insulin.ravel(),
                "carbs_g_per_min": self.carbs.ravel(),
            }
        )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
