"""A new twin's consistency with the record it was built from.

Calibration estimates the model's error (the dense path from its residuals, the sparse
path as a posterior sampled with the parameters); the twin widens its noise by it, so
forecasts and syncs use it (:func:`adopt_model_error`). Two checks follow, each a
:class:`TwinConsistencyWarning` and a ``"fit"`` drift event when it fails:

* the model-error scale is above ``MODEL_ERROR_WARNING`` times the sensor noise: the
  model explains this patient only approximately;
* on the sparse path, the normalized innovation squared (NIS) of the record against the
  members' predictions (their spread plus the widened noise) exceeds the chi-square
  upper ``1 - FIT_ALPHA`` quantile: the twin's intervals do not hold its own data,
  which a posterior fitted to them normally does (its NIS is below its ``m``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from twinloop.calibrate.noise import kalman_readings
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.twin.assimilation import innovation
from twinloop.twin.config import TwinConfig
from twinloop.twin.ensemble import Ensemble, initial_states, propagate

MODEL_ERROR_WARNING = 3.0  # residual sd / declared sensor sd above which a fit is called approximate
FIT_ALPHA = 0.01


class TwinConsistencyWarning(UserWarning):
    """The data disagree with the twin more than its noise model allows."""


def adopt_model_error(config: TwinConfig, scale: Mapping[str, float], model: Model) -> TwinConfig:
    """``config`` with each observable's noise widened by its model-error scale (never below
    the sensor's)."""
    noise = dict(config.noise)
    for name, factor in scale.items():
        declared = config.noise_model(name, model)
        noise[name] = declared.widened(max(float(factor), 1.0)).to_dict()
    return replace(config, noise=noise)


def fit_innovation(twin: Any, obs: pd.DataFrame, inputs: Inputs, times: np.ndarray) -> dict[str, Any]:
    """The innovation statistics of the record ``obs`` (at model ``times``) against the
    twin's members run from time 0, with the twin's (widened) noise."""
    theta = twin.ensemble.theta
    start = Ensemble(theta, initial_states(twin.model, twin.pmap.full_batch(theta)), 0.0)
    grid = np.unique(times)
    members, _ = propagate(twin.model, twin.pmap, start, inputs, grid, twin.config.settings)
    cols = [twin.model.observable_names.index(v) for v in obs["variable"]]
    predicted = members[:, np.searchsorted(grid, times), cols]
    predicted = predicted[np.all(np.isfinite(predicted), axis=1)]
    centre = predicted.mean(axis=0)
    models = [twin.config.noise_model(v, twin.model) for v in obs["variable"]]
    used, y = kalman_readings(models, obs["value"].to_numpy(dtype=float), centre)  # censored: as a sync would
    r = np.array([m.sd(float(c)) ** 2 for m, c in zip(models, centre, strict=True)])
    return innovation(predicted[:, used], y[used], r[used]).to_dict()


def check_fit(twin: Any, diagnostics: Mapping[str, Any]) -> None:
    """Warn (and record a ``"fit"`` event) when the model error or the fit's NIS says the
    twin is inconsistent with its record."""
    notes = []
    large = {k: v for k, v in diagnostics.get("error_scale", {}).items() if v > MODEL_ERROR_WARNING}
    if large:
        text = ", ".join(f"{k} {v:.1f}x" for k, v in large.items())
        notes.append(
            f"the fit's residuals are {text} the declared sensor noise; the model explains this patient "
            "only approximately, and its intervals were widened to match"
        )
    if diagnostics.get("screen", {}).get("none_consistent"):
        notes.append(
            "no member drawn from its Laplace posterior is consistent with the record (chi-square tail "
            f"1e-6, median D {diagnostics['screen']['median_d']:.0f}): the Gaussian approximation failed here"
        )
    fit = diagnostics.get("fit_innovation")
    if fit and fit["p_value"] < FIT_ALPHA:
        notes.append(
            f"the NIS of its {fit['m']} observations is {fit['nis']:.1f} (chi-square p = {fit['p_value']:.1g}): "
            "its intervals do not hold the record it was built from"
        )
    if notes:
        message = f"Twin {twin.id}: " + "; ".join(notes) + "."
        warnings.warn(message, TwinConsistencyWarning, stacklevel=4)
        twin.drift_events.append({"version": twin.version, "time": str(twin.now), "kind": "fit", "note": message})
