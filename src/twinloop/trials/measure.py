"""Simulating and measuring a trial's participants, block of candidates by block.

Participants come in screening blocks (:class:`Block`); every random draw of a block's
candidates (observation schedule, error, missingness, dropout, a closed loop's draws) derives
from the run's seed and the block, never from the engine's chunking. The protocols observe a
whole block at once (rows of candidates not simulated are NaN), so a candidate's observation
noise is the same whichever arm, and whichever run (screening, trial, potential outcome),
observes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twinloop.cohort.population import Cohort
from twinloop.models.base import Model
from twinloop.products.simulation import Planner, grid_of, observe_protocols, simulate_arms
from twinloop.trials.spec import TrialSpec


@dataclass(frozen=True)
class Block:
    """The participants of one screening block: ``rows`` their positions among the block's
    ``size`` candidates, ``start`` their observables at time 0 before any treatment."""

    index: int
    size: int
    rows: np.ndarray
    cohort: Cohort
    baseline: pd.DataFrame
    start: np.ndarray


@dataclass(frozen=True)
class Runner:
    """What simulating and measuring participants needs, built once per call."""

    spec: TrialSpec
    model: Model
    seed: int
    grid: np.ndarray
    planner: Planner | None

    def rng(self, *tail: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *tail]))


def make_runner(spec: TrialSpec, seed: int | None = None) -> Runner:
    """The runner of ``spec`` (draws from ``seed``, default the spec's; closed-loop arms planned)."""
    from twinloop.models.registry import get as get_model

    model = get_model(spec.model_id)
    planner = None
    if spec.product.control:
        from twinloop.control.product import ClosedLoopPlanner, arm_loops, loop_is_accurate

        planner = ClosedLoopPlanner(model, arm_loops(spec.product, model), accurate=loop_is_accurate(spec.product))
    seed = spec.seed if seed is None else int(seed)
    return Runner(spec, model, seed, grid_of(spec.product), planner)


def seed_of(rng: np.random.Generator) -> int:
    """An integer seed drawn from ``rng``."""
    return int(rng.integers(2**63 - 1))


def engine_units(blocks: list[Block], chunk_size: int, per_block: bool) -> list[list[Block]]:
    """Blocks grouped into engine runs of at least ``chunk_size`` participants (one block
    each for closed-loop arms, whose planner draws per block)."""
    units: list[list[Block]] = []
    size = 0
    for blk in blocks:
        if not units or per_block or size >= chunk_size:
            units.append([])
            size = 0
        units[-1].append(blk)
        size += blk.rows.size
    return units


def measure_unit(runner: Runner, unit: list[Block], arm: np.ndarray, keep: bool, plans: Plans) -> dict[str, Any]:
    """Simulate one unit's participants under ``arm``, observe them block by block, compute endpoints."""
    from twinloop.trials.endpoints import endpoint_values

    spec, model = runner.spec, runner.model
    cohort = _cohort(unit)
    b0 = unit[0].index
    planner = plans if runner.planner is not None else None
    run = simulate_arms(spec.product, model, cohort, arm, runner.grid, planner=planner, doses=False,
                        plan_seed=lambda a: seed_of(runner.rng(b0, 4, a)),
                        chunk_size=min(spec.product.batch_size, spec.chunk_size), pad=True)  # fmt: skip
    observables = run.observables
    observables[:, 0, :] = np.concatenate([blk.start for blk in unit])  # time 0 is observed before any dose
    frames, completed, kept = [], [], []
    lo = 0
    for blk in unit:
        m = blk.rows.size
        truth = np.full((blk.size, runner.grid.size, observables.shape[2]), np.nan)
        truth[blk.rows] = observables[lo : lo + m]
        ids = _block_ids(blk)
        data, dropout, obs = observe(runner, blk.index, ids, runner.grid, truth, blk.rows, keep)
        values = endpoint_values(spec.endpoints, data, blk.baseline).reset_index(drop=True)
        frames.append(values)
        ended = np.all(dropout > spec.duration, axis=0) & ~run.failed[lo : lo + m]
        completed.append(ended)
        if obs is not None:
            kept.append(obs)
        lo += m
    return {"endpoints": pd.concat(frames, ignore_index=True), "failed": run.failed, "completed":
            np.concatenate(completed), "observations": kept, "engine": run.engine}  # fmt: skip


def measure_potential(runner: Runner, unit: list[Block], m: int, plans: Plans) -> pd.DataFrame:
    """Every endpoint of the unit's participants under every arm: ``<endpoint>@<arm>`` columns."""
    columns = {}
    for name in runner.spec.arms:
        values = measure_unit(runner, unit, np.full(m, name, dtype=object), False, plans)["endpoints"]
        columns.update({f"{c}@{name}": values[c].to_numpy() for c in values.columns})
    return pd.DataFrame(columns)


class Plans:
    """The closed-loop plans of a unit (one block) of participants: each closed-loop arm is planned
    once for every participant of the block, and an arm's patients take their rows of it, so a
    participant's plan does not depend on who else was randomized to the arm (the observed and the
    potential outcomes then share it)."""

    def __init__(self, runner: Runner, unit: list[Block]) -> None:
        self.runner, self.unit = runner, unit
        self.cache: dict[str, Any] = {}

    def __call__(self, arm: str, patients: Cohort, seed: int) -> Any:
        assert self.runner.planner is not None
        cohort = _cohort(self.unit)
        if arm not in self.cache:
            self.cache[arm] = self.runner.planner(arm, cohort, seed)
        index = {pid: i for i, pid in enumerate(cohort.ids)}
        rows = np.asarray([index.get(pid, -1) for pid in patients.ids])
        rows = np.maximum.accumulate(rows)  # padding repeats the last patient
        return _take(self.cache[arm], rows)


def _cohort(unit: list[Block]) -> Cohort:
    return Cohort.concat([blk.cohort for blk in unit]) if len(unit) > 1 else unit[0].cohort


def _take(plan: Any, rows: np.ndarray) -> Any:
    """The cohort plan ``plan`` of the patients ``rows`` (per-patient values taken, scalars kept)."""

    def pick(value: Any) -> Any:
        return np.asarray(value)[rows] if np.ndim(value) else value

    segments = tuple(dataclasses.replace(seg, rate=pick(seg.rate)) for seg in plan.segments)
    boluses = tuple(dataclasses.replace(b, amount=pick(b.amount)) for b in plan.boluses)
    return dataclasses.replace(plan, segments=segments, boluses=boluses)


def _block_ids(blk: Block) -> list[str]:
    ids = [f"c{blk.index}-{i}" for i in range(blk.size)]
    for i, row in enumerate(blk.rows):
        ids[row] = blk.cohort.ids[i]
    return ids


def observe(
    runner: Runner, b: int, ids: list[str], grid: np.ndarray, truth: np.ndarray, rows: np.ndarray, keep: bool = False
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, pd.DataFrame | None]:
    """Block ``b``'s observations of ``truth`` (every candidate of the block, NaN rows for those
    not simulated) with the block's generators; the ``(times, values)`` matrices of ``rows``,
    their dropout times ``(n_protocols, len(rows))`` and, if ``keep``, their long table."""
    protocols = runner.spec.product.observations
    frames, dropout = observe_protocols(protocols, runner.model, ids, grid, truth, runner.rng(b, 2),
                                        lambda j: runner.rng(b, 3, j))  # fmt: skip
    data = {p.name: matrices(f, rows, len(ids)) for p, f in zip(protocols, frames, strict=True)}
    long = None
    if keep:
        long = pd.concat([_long(f, p.name, rows, ids) for p, f in zip(protocols, frames, strict=True)])
    return data, dropout[:, rows], long


def _selected(frame: pd.DataFrame, rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``rows`` of the frame's observations of those rows, and the mask of them."""
    lookup = np.full(size, -1)
    lookup[rows] = np.arange(rows.size)
    who = lookup[frame["subject_id"].cat.codes.to_numpy()]
    return who, who >= 0


def matrices(frame: pd.DataFrame, rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The observations of ``rows`` (block positions, ascending) as NaN-padded ``(len(rows), k)``
    time and value matrices (the frame is ordered by patient, then time)."""
    who, mask = _selected(frame, rows, size)
    who = who[mask]
    counts = np.bincount(who, minlength=rows.size)
    width = max(int(counts.max()) if counts.size else 0, 1)
    times = np.full((rows.size, width), np.nan)
    values = np.full((rows.size, width), np.nan)
    position = np.arange(who.size) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
    times[who, position] = frame["time"].to_numpy()[mask]
    values[who, position] = frame["value"].to_numpy()[mask]
    return times, values


def _long(frame: pd.DataFrame, protocol: str, rows: np.ndarray, ids: list[str]) -> pd.DataFrame:
    mask = _selected(frame, rows, len(ids))[1]
    codes = frame["subject_id"].cat.codes.to_numpy()[mask]
    return pd.DataFrame({"subject_id": np.asarray(ids, dtype=object)[codes], "time": frame["time"].to_numpy()[mask],
                         "protocol": protocol, "value": frame["value"].to_numpy()[mask]})  # fmt: skip
