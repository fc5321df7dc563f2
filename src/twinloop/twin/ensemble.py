"""A twin's ensemble: members with their own fitted parameters (on their declared scale)
and current state, and its propagation through the engine (one batched solve from the
members' states)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from twinloop.calibrate.problem import ParameterMap
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.simulate.engine import SimulationWarning, SolverSettings, padded_batch, simulate_chunks
from twinloop.simulate.trajectories import Trajectories


@dataclass(frozen=True)
class Ensemble:
    """``theta`` (N, k) fitted parameters on their transformed scale (see
    :class:`~twinloop.calibrate.ParameterMap`; k may be 0: state-only assimilation),
    ``states`` (N, S) at model time ``time``, and optional importance ``weights`` (N,)
    summing to one (``None``: equally weighted).

    Only the particle filter leaves weights on an ensemble: it keeps them from one update
    to the next and resamples when they degenerate. The Kalman filters resample a weighted
    ensemble before their update; anything else that summarizes an ensemble (means,
    quantiles) should weigh its members by :meth:`normalized_weights`, and code that
    rebuilds an ensemble should carry ``weights`` over (``dataclasses.replace`` does)."""

    theta: np.ndarray
    states: np.ndarray
    time: float
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.weights is None:
            return
        w = np.asarray(self.weights, dtype=np.float64)
        n = self.theta.shape[0]
        if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise InputError(
                f"Ensemble weights must be {n} finite non-negative numbers summing to 1 (one per member); "
                f"got shape {w.shape} summing to {float(np.nansum(w)):.6g}. Pass weights=None for an equally "
                "weighted ensemble."
            )
        object.__setattr__(self, "weights", w)

    @property
    def size(self) -> int:
        return int(self.theta.shape[0])

    def normalized_weights(self) -> np.ndarray:
        """The members' weights, ``1/N`` each for an unweighted ensemble."""
        return np.full(self.size, 1.0 / self.size) if self.weights is None else self.weights

    @property
    def effective_size(self) -> float:
        """Kish's effective sample size ``1 / sum(w**2)`` (``N`` when unweighted)."""
        w = self.normalized_weights()
        return float(1.0 / np.sum(w**2))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {"theta": self.theta, "states": self.states, "time": np.array(self.time)}
        if self.weights is not None:
            arrays["weights"] = self.weights
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ensemble:
        """Read :meth:`to_bytes`'s blob; blobs written before weights existed read as unweighted."""
        with np.load(io.BytesIO(raw)) as data:
            weights = data["weights"] if "weights" in data.files else None
            return cls(data["theta"], data["states"], float(data["time"]), weights)


def initial_states(model: Model, params: np.ndarray) -> np.ndarray:
    """``(N, S)`` initial states of the full parameter vectors ``params`` ``(N, P)``."""
    import jax.numpy as jnp

    p = {name: jnp.asarray(params[:, i]) for i, name in enumerate(model.parameter_names)}
    return np.asarray(model.initial_state(p), dtype=np.float64).T


def start_states(model: Model, y0: Any) -> np.ndarray | None:
    """Initial states given for a twin's members: ``(m, S)`` from one state vector or ``m``
    draws (``None`` stays ``None``: the model's rule)."""
    if y0 is None:
        return None
    states = np.atleast_2d(np.asarray(y0, dtype=np.float64))
    n_states = len(model.states)
    if states.ndim != 2 or states.shape[1] != n_states or states.shape[0] == 0 or not np.all(np.isfinite(states)):
        raise InputError(
            f"y0 must be one finite state vector ({n_states},) or draws (m, {n_states}) of the states "
            f"{list(model.state_names)} of '{model.id}'; got shape {np.shape(y0)}."
        )
    return states


def _bucket(n: int) -> int:
    """A fixed output count holding ``n`` (8, 12, 16, 24, 32, 48, ...: few compiled solves).
    Steps of 1.5 leave the engine's power-of-two grid room for the input breakpoints, so a
    forecast over a meal reuses the solve of one without (a padded count of exactly a power
    of two would push the grid to the next one and compile again)."""
    return padded_batch(max(n, 2), 1 << 62)


def propagate(
    model: Model,
    pmap: ParameterMap,
    ensemble: Ensemble,
    inputs: Inputs,
    times: np.ndarray,
    settings: SolverSettings,
    *,
    record: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray, Ensemble]:
    """Run every member from ``ensemble.time`` through ``times`` (absolute model times,
    the last one the new ensemble time) under ``inputs`` given relative to ``ensemble.time``.

    Returns the observables ``(N, len(times), O)`` and the ensemble at ``times[-1]``.
    Members whose solve failed keep non-finite observables (the filters down-weight them).
    ``record``: a list that gets the :func:`solver_record` of this solve.
    """
    traj, idx, n_real = solve(model, pmap, ensemble, inputs, times, settings, states=True)
    if record is not None:
        record.append(solver_record(traj))
    assert traj.states is not None
    end = traj.states[:, n_real - 1, :]
    return traj.observables[:, idx, :], replace(ensemble, states=end, time=float(times[-1]))


def solver_record(traj: Trajectories) -> dict[str, Any]:
    """The path a solve ran on (``"fast"`` or ``"accurate"``) and, on the fast path, its
    self-check: the largest error per observable against the accurate path, whether it
    was within the model's tolerance, and whether a chunk fell back to the accurate path."""
    check = getattr(traj, "check", None) or {}
    out: dict[str, Any] = {"path": str(traj.settings.get("path", "accurate"))}
    if "max_error" in check:
        out |= {
            "max_error": {k: float(v) for k, v in check["max_error"].items()},
            "passed": bool(check["passed"]),
            "fallback": bool(check.get("fallback_chunks")),
        }
    return out


def merged_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One :func:`solver_record` for several solves (a sync's windows): every path that
    ran, the largest error per observable, whether all passed, whether any fell back."""
    if not records:
        return {}
    out: dict[str, Any] = {"path": "+".join(sorted({r["path"] for r in records})), "solves": len(records)}
    checked = [r for r in records if "max_error" in r]
    if checked:
        names = checked[0]["max_error"]
        out |= {
            "max_error": {k: max(r["max_error"][k] for r in checked) for k in names},
            "passed": all(r["passed"] for r in checked),
            "fallback": any(r["fallback"] for r in checked),
        }
    return out


def solve(
    model: Model, pmap: ParameterMap, ensemble: Ensemble, inputs: Inputs, times: Any, settings: Any, *, states: bool
) -> tuple[Trajectories, np.ndarray | slice, int]:
    """One batched solve of every member over ``times`` (output count padded to a bucket):
    the trajectories, the index of ``times`` among their outputs, and the count of real
    outputs. One chunk: no copy of the members' trajectories into a concatenation."""
    rel = np.asarray(times, dtype=np.float64) - ensemble.time
    t_out = np.unique(np.r_[0.0, rel])
    n_real = t_out.size
    pad = _bucket(n_real) - n_real
    step = 1e-6 * max(1.0, float(t_out[-1]))
    t_out = np.r_[t_out, t_out[-1] + step * np.arange(1, pad + 1)]
    params = pmap.full_batch(ensemble.theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimulationWarning)
        (traj,) = simulate_chunks(
            model,
            params,
            inputs,
            y0=ensemble.states,
            times=t_out,
            settings=settings,
            save="all" if states else "observables",
            chunk_size=ensemble.size,
        )
    idx = np.searchsorted(t_out[:n_real], rel)
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return traj, slice(int(idx[0]), int(idx[0]) + idx.size), n_real  # a view, not a copy
    return traj, idx, n_real
