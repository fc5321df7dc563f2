"""A twin's ensemble: members with their own fitted log-parameters and current state,
and its propagation through the engine (the restartable model, one batched solve)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace

import numpy as np

from twinloop.calibrate.problem import ParameterMap
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.models.restart import restart_parameters, restartable
from twinloop.simulate.engine import SimulationWarning, SolverSettings, simulate


@dataclass(frozen=True)
class Ensemble:
    """``theta`` (N, k) log fitted parameters, ``states`` (N, S) at model time ``time``."""

    theta: np.ndarray
    states: np.ndarray
    time: float

    @property
    def size(self) -> int:
        return int(self.theta.shape[0])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, theta=self.theta, states=self.states, time=np.array(self.time))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ensemble:
        with np.load(io.BytesIO(raw)) as data:
            return cls(data["theta"], data["states"], float(data["time"]))


def _bucket(n: int) -> int:
    return max(8, 1 << int(np.ceil(np.log2(max(n, 2)))))


def propagate(
    model: Model,
    pmap: ParameterMap,
    ensemble: Ensemble,
    inputs: Inputs,
    times: np.ndarray,
    settings: SolverSettings,
) -> tuple[np.ndarray, Ensemble]:
    """Run every member from ``ensemble.time`` through ``times`` (absolute model times,
    the last one the new ensemble time) under ``inputs`` given relative to ``ensemble.time``.

    Returns the observables ``(N, len(times), O)`` and the ensemble at ``times[-1]``.
    Members whose solve failed keep non-finite observables (the filters down-weight them).
    """
    rel = np.asarray(times, dtype=np.float64) - ensemble.time
    t_out = np.unique(np.r_[0.0, rel])
    n_real = t_out.size
    pad = _bucket(n_real) - n_real  # a few fixed output counts -> few compiled solves
    step = 1e-6 * max(1.0, float(t_out[-1]))
    t_out = np.r_[t_out, t_out[-1] + step * np.arange(1, pad + 1)]
    params = restart_parameters(pmap.full_batch(ensemble.theta), ensemble.states)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimulationWarning)
        traj = simulate(
            restartable(model),
            params,
            inputs,
            times=t_out,
            settings=settings,
            save="all",
            chunk_size=ensemble.size,
            progress=False,
        )
    idx = np.searchsorted(t_out[:n_real], rel)
    observables = traj.observables[:, idx, :]
    assert traj.states is not None
    end = traj.states[:, n_real - 1, :]
    return observables, replace(ensemble, states=end, time=float(times[-1]))
