"""A twin's state as JSON metadata and binary blobs (what the registry stores), and back."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import ParameterMap
from twinloop.connect.schema import empty_doses
from twinloop.models.registry import get as get_model
from twinloop.twin.config import TwinConfig
from twinloop.twin.drift import DriftDetector
from twinloop.twin.ensemble import Ensemble
from twinloop.twin.forecast import Forecast


def pack(twin: Any) -> dict[str, Any]:
    """Everything needed to rebuild a twin (JSON metadata + binary blobs)."""

    def parquet(frame: pd.DataFrame) -> bytes:
        buffer = io.BytesIO()
        frame.reset_index(drop=True).to_parquet(buffer)
        return buffer.getvalue()

    meta = {
        "id": twin.id,
        "subject_id": twin.subject_id,
        "model_id": twin.model.id,
        "model_version": twin.model.version,
        "origin": twin.origin.isoformat(),
        "version": twin.version,
        **twin.pmap.to_dict(),
        "prior": twin.prior.to_dict(),
        "config": twin.config.to_dict(),
        "innovations": twin.innovations,
        "drift_events": twin.drift_events,
        "calibration": twin.calibration,
        "detector": twin.detector.to_dict(),
        "snapshot_versions": [v for v, _ in twin.snapshots],
        "forecasts": [{"id": f.id, "version": f.version, "scores": f.scores} for f in twin.forecasts],
    }
    return {
        "meta": json.loads(json.dumps(meta, default=float)),
        "ensemble": twin.ensemble.to_bytes(),
        "observations": parquet(twin.observations.astype({"value": float})),
        "doses": parquet(twin.doses),
        "snapshots": [ens.to_bytes() for _, ens in twin.snapshots],
        "forecasts": [f.to_bytes() for f in twin.forecasts],
    }


def restore(cls: type[Any], state: Mapping[str, Any]) -> Any:
    """The twin ``cls`` rebuilt from :func:`pack`'s output."""
    meta = state["meta"]
    model = get_model(meta["model_id"])
    pmap = ParameterMap(model, tuple(meta["fit"]), np.asarray(meta["base"]), bounded=bool(meta.get("bounded", False)))
    config = TwinConfig.from_dict(meta["config"])
    twin = cls(
        model,
        pmap,
        GaussianPrior.from_dict(meta["prior"]),
        Ensemble.from_bytes(state["ensemble"]),
        pd.Timestamp(meta["origin"]),
        config,
        meta["id"],
        meta["subject_id"],
    )
    twin.version = int(meta["version"])
    twin.observations = pd.read_parquet(io.BytesIO(state["observations"]))
    twin.doses = pd.read_parquet(io.BytesIO(state["doses"]))
    if twin.doses.empty:
        twin.doses = empty_doses()
    twin.innovations = list(meta["innovations"])
    twin.drift_events = list(meta["drift_events"])
    twin.calibration = dict(meta["calibration"])
    twin.detector = DriftDetector.from_dict(meta["detector"])
    blobs = [Ensemble.from_bytes(blob) for blob in state["snapshots"]]
    twin.snapshots = list(zip(meta["snapshot_versions"], blobs, strict=True))
    units = tuple(o.unit for o in model.observables)
    twin.forecasts = [
        Forecast.from_bytes(
            blob,
            twin_id=twin.id,
            version=f["version"],
            observables=model.observable_names,
            units=units,
            id=f["id"],
            scores=f["scores"],
        )
        for f, blob in zip(meta["forecasts"], state["forecasts"], strict=True)
    ]
    twin.reseed()
    return twin
