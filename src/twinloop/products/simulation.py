"""Simulate a cohort whose patients have given arms, and observe it with the protocols.

Data products (:mod:`twinloop.products.dataset`) and in-silico trials
(:mod:`twinloop.trials.run`) both run a cohort this way: each arm's patients are
simulated with the arm's plan (a closed-loop arm's plan comes from a planner) on the
output grid, then every observation protocol draws its schedule, error, missingness and
dropout from the generators it is given.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twinloop.cohort.population import Cohort
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.products.protocols import ObservationProtocol
from twinloop.products.spec import ProductSpec
from twinloop.products.treatments import build_plan, dose_table
from twinloop.simulate import simulate
from twinloop.simulate.trajectories import Trajectories, merge_checks

Planner = Callable[[str, Cohort, int], Inputs]
"""``planner(arm, patients, seed) -> Inputs``: the cohort plan of one closed-loop arm's
patients (``twinloop.control.product``)."""


@dataclass(frozen=True)
class ArmRun:
    """What :func:`simulate_arms` gives: observables ``(n, len(grid), n_observables)`` in
    cohort order, which patients' simulation failed, each arm's dose table, and the
    engine's path and self-check over the arms (:func:`engine_record`)."""

    observables: np.ndarray
    failed: np.ndarray
    doses: list[pd.DataFrame]
    engine: dict[str, Any] = dataclasses.field(default_factory=dict)


def engine_record(parts: Sequence[Trajectories]) -> dict[str, Any]:
    """The path the engine took and its fast-path self-check, merged over runs, as JSON data."""
    if not parts:
        return {}
    check = merge_checks([p.check for p in parts])
    return json.loads(json.dumps({"path": parts[0].settings.get("path", "accurate"), **check}))


def grid_of(spec: ProductSpec, duration: float | None = None) -> np.ndarray:
    """The output grid ``0, resolution, ..., duration`` (the spec's duration by default)."""
    span = spec.duration if duration is None else duration
    return spec.resolution * np.arange(math.floor(span / spec.resolution + 1e-9) + 1)


def simulate_arms(
    spec: ProductSpec,
    model: Model,
    cohort: Cohort,
    arm: np.ndarray,
    grid: np.ndarray,
    *,
    planner: Planner | None = None,
    plan_seed: Callable[[int], int] | None = None,
    chunk_size: int | None = None,
    duration: float | None = None,
    doses: bool = True,
    pad: bool = False,
) -> ArmRun:
    """Simulate every patient of ``cohort`` under its arm (``arm[i]``, a name in ``spec.arms``).

    Arms in ``spec.control`` are planned by ``planner(name, patients, plan_seed(a))`` (``a``
    the arm's index in ``spec.arms``); the others by their treatment (``build_plan``).
    ``chunk_size`` is the engine's batch (default ``min(batch_size, chunk_size)`` of the spec);
    ``duration`` the span the treatments are planned over (default the spec's). With ``pad``,
    an arm of fewer patients than a batch is padded (repeating its last patient) to a power
    of two, so the engine compiles for a few batch shapes rather than one per arm size.
    """
    observables = np.full((cohort.n, grid.size, len(model.observables)), np.nan)
    failed = np.zeros(cohort.n, dtype=bool)
    tables: list[pd.DataFrame] = []
    runs: list[Trajectories] = []
    batch = chunk_size or min(spec.batch_size, spec.chunk_size)
    for a, name in enumerate(spec.arms):
        rows = np.flatnonzero(arm == name)
        if rows.size == 0:
            continue
        sub = _padded(cohort, rows, batch) if pad else cohort[rows]
        if planner is not None and name in spec.control:
            plan = planner(name, sub, plan_seed(a) if plan_seed is not None else a)
        else:
            span = spec.duration if duration is None else duration
            plan = build_plan(spec.arms[name], sub.param_map(), sub.covariates, span, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traj = simulate(model, sub.parameters, plan, times=grid, patient_ids=sub.ids, progress=False,
                            chunk_size=batch, settings=spec.solver)  # fmt: skip
        observables[rows] = traj.observables[: rows.size]
        runs.append(traj)
        failed[rows] = np.isin(sub.ids[: rows.size], list(traj.failures))
        if doses:
            tables.append(dose_table(model, plan, sub.ids))
    return ArmRun(observables, failed, tables, engine_record(runs))


def _padded(cohort: Cohort, rows: np.ndarray, batch: int) -> Cohort:
    """The patients ``rows``, the last one repeated (under other ids) up to a power of two
    (at least 8, at most ``batch``)."""
    if rows.size >= batch:
        return cohort[rows]
    size = min(batch, max(8, 1 << (rows.size - 1).bit_length()))
    sub = cohort[np.r_[rows, np.full(size - rows.size, rows[-1])]]
    return dataclasses.replace(sub, ids=[*sub.ids[: rows.size], *(f"pad-{i}" for i in range(size - rows.size))])


def observe_protocols(
    protocols: Sequence[ObservationProtocol],
    model: Model,
    ids: list[str],
    grid: np.ndarray,
    observables: np.ndarray,
    dropout_rng: np.random.Generator,
    protocol_rng: Callable[[int], np.random.Generator],
) -> tuple[list[pd.DataFrame], np.ndarray]:
    """Each protocol's observations (model time) of ``observables`` ``(n, len(grid), n_obs)``.

    Dropout times are drawn from ``dropout_rng`` protocol after protocol (exponential in
    the protocol's hazard; never without one); protocol ``j`` draws its schedule, error and
    missingness from ``protocol_rng(j)``. Returns the frames and the ``(n_protocols, n)``
    dropout times.
    """
    frames = []
    dropouts = np.full((len(protocols), len(ids)), np.inf)
    for j, protocol in enumerate(protocols):
        hazard = protocol.dropout_hazard
        if hazard > 0:
            dropouts[j] = dropout_rng.exponential(1.0 / hazard, len(ids))
        o = model.observable_names.index(protocol.observable)
        unit = model.observables[o].unit
        frames.append(protocol.observe(ids, grid, observables[:, :, o], unit, protocol_rng(j), dropouts[j]))
    return frames, dropouts
