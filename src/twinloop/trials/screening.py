"""Screening a trial's candidates: draw them in blocks, take their baseline measures, apply
the eligibility criteria (see :mod:`twinloop.trials.run` for the whole procedure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from twinloop.cohort.population import Cohort
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.products.simulation import grid_of, observe_protocols, simulate_arms
from twinloop.trials.measure import Block, Runner, matrices, observe, seed_of
from twinloop.trials.spec import TrialSpec

BLOCK = 512
"""Candidates per screening block; every random draw of a candidate derives from ``(seed, block)``."""
RUN_IN_BLOCK = 64
"""Candidates per block of a trial with a run-in (every candidate of a block runs it, so smaller blocks
screen fewer than needed beyond the last participant)."""
SCREEN_FACTOR = 20
"""``max_screened`` defaults to ``SCREEN_FACTOR x n x replicates`` candidates."""


def block_size(spec: TrialSpec) -> int:
    """Candidates per screening block of ``spec`` (:data:`RUN_IN_BLOCK` with a run-in, else :data:`BLOCK`)."""
    return RUN_IN_BLOCK if spec.run_in is not None else BLOCK


def screen(runner: Runner) -> tuple[list[Block], np.ndarray]:
    """The blocks holding the enrolled candidates, and each replicate's last candidate index."""
    spec = runner.spec
    need = spec.n * spec.replicates
    limit = spec.max_screened or SCREEN_FACTOR * need
    blocks: list[Block] = []
    taken: list[np.ndarray] = []
    excluded = np.zeros(len(spec.eligibility), dtype=np.int64)
    count, b, size = 0, 0, block_size(spec)
    while count < need:
        if b * size >= limit:
            _too_few(spec, count, need, limit, excluded)
        cohort = _candidates(spec, runner.seed, b)
        baseline, start = baselines(runner, b, cohort)
        ok, fails = _eligible(spec, cohort, baseline)
        excluded += fails
        rows = np.flatnonzero(ok)
        rows = rows[b * size + rows < limit][: need - count]
        if rows.size:
            part = cohort[rows]
            blocks.append(Block(b, cohort.n, rows, part, baseline.iloc[rows].reset_index(drop=True), start[rows]))
            taken.append(b * size + rows)
            count += rows.size
        b += 1
    index = np.concatenate(taken)
    return blocks, index[spec.n - 1 :: spec.n]


def _candidates(spec: TrialSpec, seed: int, b: int) -> Cohort:
    size = block_size(spec)
    return spec.population.sample_chunk((b + 1) * size, seed, size, b, 8)


def _too_few(spec: TrialSpec, count: int, need: int, limit: int, excluded: np.ndarray) -> None:
    worst = ""
    if excluded.size:
        i = int(np.argmax(excluded))
        worst = f"; the criterion excluding most was eligibility[{i}] '{spec.eligibility[i].text}' ({excluded[i]})"
    raise InputError(
        f"Only {count} of the {need} participants needed (n {spec.n} x replicates {spec.replicates}) were eligible "
        f"among the {limit} candidates allowed by max_screened{worst}. Relax the eligibility criteria, condition "
        "the population towards them, or raise max_screened."
    )


def _eligible(spec: TrialSpec, cohort: Cohort, baseline: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Which candidates meet every criterion, and how many each criterion excluded."""
    ok = np.ones(cohort.n, dtype=bool)
    fails = np.zeros(len(spec.eligibility), dtype=np.int64)
    if not spec.eligibility:
        return ok, fails
    names: dict[str, Any] = {"group": cohort.groups}
    names.update({c: cohort.covariates[c].to_numpy() for c in cohort.covariates.columns})
    names.update({c: baseline[c].to_numpy(dtype=np.float64) for c in baseline.columns})
    for i, formula in enumerate(spec.eligibility):
        value = np.broadcast_to(np.asarray(formula(names)), (cohort.n,))
        if value.dtype != bool:
            raise InputError(
                f"{formula.where} is {formula.text!r}, which gives {value.dtype} values; an eligibility criterion "
                "must be a condition such as 'age >= 18' (true or false for each candidate)."
            )
        meets = value.copy()  # a comparison with NaN (a missing baseline measure) is false
        fails[i] = int((~meets).sum())
        ok &= meets
    return ok, fails


def baselines(runner: Runner, b: int, cohort: Cohort) -> tuple[pd.DataFrame, np.ndarray]:
    """Baseline measures of block ``b``'s candidates and their observables at time 0 (untreated)."""
    spec, model = runner.spec, runner.model
    start = _initial_observables(model, cohort.parameters)
    if not spec.baseline:
        return pd.DataFrame(index=pd.RangeIndex(cohort.n)), start
    from twinloop.trials.endpoints import measure_values

    if spec.run_in is None:
        truth = np.full((cohort.n, runner.grid.size, start.shape[1]), np.nan)
        truth[:, 0, :] = start
        data = observe(runner, b, cohort.ids, runner.grid, truth, np.arange(cohort.n))[0]
    else:
        data = _run_in(runner, b, cohort)
    return measure_values(spec.baseline, data).reset_index(drop=True), start


def _run_in(runner: Runner, b: int, cohort: Cohort) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Run every candidate on the run-in arm for its duration; the protocols' observations of it."""
    spec, model = runner.spec, runner.model
    assert spec.run_in is not None
    product = dataclasses.replace(spec.product, duration=spec.run_in.duration)
    planner = runner.planner
    if planner is not None and spec.run_in.arm in product.control:
        from twinloop.control.product import ClosedLoopPlanner, arm_loops, loop_is_accurate

        planner = ClosedLoopPlanner(model, arm_loops(product, model), accurate=loop_is_accurate(product))
    grid = grid_of(product)
    arm = np.full(cohort.n, spec.run_in.arm, dtype=object)
    run = simulate_arms(product, model, cohort, arm, grid, planner=planner, doses=False, pad=True,
                        plan_seed=lambda a: seed_of(runner.rng(b, 7)))  # fmt: skip
    frames, _ = observe_protocols(product.observations, model, cohort.ids, grid, run.observables,
                                  runner.rng(b, 5), lambda j: runner.rng(b, 6, j))  # fmt: skip
    return {
        p.name: matrices(f, np.arange(cohort.n), cohort.n) for p, f in zip(product.observations, frames, strict=True)
    }


_INITIAL: dict[str, Callable[[Any], Any]] = {}


def _initial_observables(model: Model, params: np.ndarray) -> np.ndarray:
    """Every observable at time 0 from the model's initial state, before any input: ``(n, n_obs)``."""
    import jax
    import jax.numpy as jnp

    key = model.content_hash()
    if key not in _INITIAL:

        def one(row: Any) -> Any:
            p = model.param_map(row)
            return model.observe(jnp.asarray(model.initial_state(p), dtype=jnp.float64), p)

        _INITIAL[key] = jax.jit(jax.vmap(one))
    return np.asarray(_INITIAL[key](jnp.asarray(params, dtype=jnp.float64)), dtype=np.float64)
