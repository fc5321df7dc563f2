"""Twins kept in a repository: the twin orchestrates load -> sync -> save.

:class:`RegisteredTwins` wraps any :class:`~twinloop.twin.repository.TwinRepository`
(the SQL :class:`twinloop.store.TwinRegistry` by default). Each call runs in one
change of the repository, which locks the twin: concurrent syncs of one twin are
serialized, each sees the version the previous one wrote, and a failure leaves the
stored twin as it was.

Example:
    >>> from twinloop.store import TwinRegistry  # doctest: +SKIP
    >>> twins = RegisteredTwins(TwinRegistry("sqlite:///twins.db"))  # doctest: +SKIP
    >>> twins.add(twin); twins.sync(twin.id, new_obs); twins.forecast(twin.id, 24)  # doctest: +SKIP
"""

from __future__ import annotations

import io
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from twinloop._provenance import content_sha256

if TYPE_CHECKING:
    import pandas as pd

    from twinloop.twin.forecast import Forecast
    from twinloop.twin.patient import PatientTwin, SyncReport
    from twinloop.twin.repository import TwinRepository


def plan_sha256(inputs: Any) -> str | None:
    """Content hash of a forecast's treatment plan (a dose table or ``Inputs``); None without one."""
    import pandas as pd

    if inputs is None:
        return None
    if isinstance(inputs, pd.DataFrame):
        return content_sha256(inputs.reset_index(drop=True).to_dict("list"))
    return content_sha256(asdict(inputs) if is_dataclass(inputs) and not isinstance(inputs, type) else repr(inputs))


def _code_version() -> str:
    from twinloop import __version__

    return __version__


def _provenance(twin: PatientTwin, kind: str) -> dict[str, Any]:
    """What a version's PROV activity needs beyond its row: the code version, and at
    creation the model, the prior and the seed."""
    recorded: dict[str, Any] = {"code_version": _code_version()}
    if kind == "create":
        recorded |= {
            "model_sha256": twin.model.content_hash(),
            "prior_sha256": content_sha256(twin.prior.to_dict()),
            "fit": list(twin.pmap.names),
            "seeds": {"seed": twin.config.seed},
        }
    return recorded


def _sync_summary(report: SyncReport, new_observations: int, new_doses: int) -> dict[str, Any]:
    return {
        "assimilated": report.assimilated,
        "late": report.late,
        "clipped": report.clipped,
        "replayed": report.replayed,
        "innovation": report.innovation,
        "drift": report.drift,
        "recalibrated": report.recalibrated,
        "new_observations": new_observations,
        "new_doses": new_doses,
        "scored_forecasts": report.scored_forecasts,
        "solver": report.solver,
    }


class RegisteredTwins:
    """Create, load, sync and forecast twins kept in ``repository``.

    Arguments:
        repository: where the twins are kept, e.g. ``TwinRegistry("sqlite:///twins.db")``.
    """

    def __init__(self, repository: TwinRepository) -> None:
        self.repository = repository

    def __repr__(self) -> str:
        return f"RegisteredTwins({self.repository!r})"

    def exists(self, twin_id: str) -> bool:
        return self.repository.exists(twin_id)

    def add(self, twin: PatientTwin) -> None:
        """Keep a newly created twin (version 1) with the data it was calibrated on.

        Raises:
            RegistryError: a twin of this id is kept already.
        """
        created = self.repository.create(
            twin.id, subject_id=twin.subject_id, model_id=twin.model.id, model_version=twin.model.version
        )
        with created as change:
            change.log(twin.observations, twin.doses, twin.version)
            calibration = {k: v for k, v in twin.calibration.items() if k != "summary"}
            self._save(change, twin, "create", None, {"calibration": calibration})
            detail = {"observations": len(twin.observations), "method": twin.calibration.get("method")}
            change.audit("create", twin.version, detail)

    def load(self, twin_id: str, version: int | None = None) -> PatientTwin:
        """The twin at its current (or a given) version."""
        from twinloop.twin.patient import PatientTwin

        return PatientTwin.from_state_dict(self.repository.state(twin_id, version))

    def sync(self, twin_id: str, observations: pd.DataFrame, doses: pd.DataFrame | None = None) -> SyncReport:
        """Log the data (idempotently) and assimilate what is new: one new version, atomically.

        Data already assimilated change nothing: no version, no log, no audit entry.
        """
        from twinloop.twin.patient import PatientTwin

        with self.repository.change(twin_id) as change:
            twin = PatientTwin.from_state_dict(change.state())
            parent = twin.version
            report = twin.sync(observations, doses)
            if report.unchanged:
                return report
            new_obs, new_doses = change.log(twin.observations, twin.doses, twin.version)
            summary = _sync_summary(report, new_obs, new_doses)
            self._save(change, twin, "sync", parent, summary)
            change.audit("sync", twin.version, summary)
            if report.drift:
                change.audit("drift", twin.version, {"event": twin.drift_events[-1]})
            for forecast_id in report.scored_forecasts:
                change.audit("score", twin.version, {"forecast": forecast_id})
        return report

    def forecast(self, twin_id: str, hours: float, inputs: Any = None) -> Forecast:
        """Forecast from the current version; keep it with the twin (to be scored as data
        arrive) and in the repository's forecast table."""
        from twinloop.twin.patient import PatientTwin

        with self.repository.change(twin_id) as change:
            twin = PatientTwin.from_state_dict(change.state())
            fc = twin.forecast(hours, inputs)
            buffer = io.BytesIO()
            fc.quantiles().to_parquet(buffer)
            change.add_forecast(fc.id, twin.version, hours, buffer.getvalue())
            change.replace_state(twin.version, twin.state_dict())
            detail = {
                "forecast": fc.id,
                "hours": hours,
                "ensemble_size": fc.ensemble_size,
                "inputs_sha256": plan_sha256(inputs),
                "provenance": {"code_version": _code_version()},
            }
            change.audit("forecast", twin.version, detail)
        return fc

    def record(self, twin_id: str, action: str, detail: dict[str, Any]) -> None:
        """Add an audit entry (e.g. a what-if comparison shown to a clinician)."""
        with self.repository.change(twin_id) as change:
            change.audit(action, change.current_version, detail)

    @staticmethod
    def _save(change: Any, twin: PatientTwin, kind: str, parent: int | None, summary: dict[str, Any]) -> None:
        change.add_version(
            twin.version,
            parent=parent,
            kind=kind,
            state_time=float(twin.ensemble.time),
            summary={**summary, "provenance": _provenance(twin, kind)},
            state=twin.state_dict(),
        )
