"""Run a trial: screen candidates, randomize the eligible ones, simulate and measure them.

``run_trial`` runs R replicate trials of ``n`` participants at once:

1. **Screening.** Candidates are drawn from the (conditioned) population in blocks of
   :data:`BLOCK` (block ``b`` seeded by ``(seed, b)``, whatever the ``chunk_size``), their
   baseline measures taken and the eligibility criteria applied; the eligible candidates,
   in draw order, fill replicate 0, then 1, ... (replicate ``r`` gets eligible candidates
   ``r*n .. r*n+n-1``).
2. **Baseline.** Without a run-in, baseline measures summarize the observations at time 0,
   taken before the first dose: the protocols observe the block once with the block's
   generators, and the trial's own observations later draw from the same generators, so
   the day-0 scan that decided eligibility is the trial's baseline scan, noise and all.
   With ``run_in: {arm, duration}``, every candidate first runs that arm (treatment or
   controller) for ``duration``; baseline measures summarize the run-in's observations
   (run-in time) and the randomized period then starts from the model's initial state.
3. **Randomization** of each replicate (``spec.randomization``), in enrolment order.
4. **Simulation** of all replicates' participants in chunks of about ``chunk_size``
   (closed-loop arms block by block, so the controller's draws do not depend on it),
   observed by the protocols (dropout included), and the endpoints computed.

Every draw derives from the spec's seed and the block, so the same spec and seed give the
same frames whatever the ``chunk_size``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twinloop.cohort.population import Cohort
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.products.dataset import PatientBar
from twinloop.products.simulation import Planner, grid_of, observe_protocols, simulate_arms
from twinloop.trials.spec import TrialSpec

BLOCK = 512
"""Candidates per screening block; every random draw of a candidate derives from ``(seed, block)``."""
SCREEN_FACTOR = 20
"""``max_screened`` defaults to ``SCREEN_FACTOR x n x replicates`` candidates."""
# SeedSequence tails: population [seed, b]; dropout [seed, b, 2]; protocol j [seed, b, 3, j];
# closed-loop arm a [seed, b, 4, a]; run-in dropout [seed, b, 5]; run-in protocol j [seed, b, 6, j];
# run-in closed loop [seed, b, 7]; randomization [seed, 8].
DERIVATION = ("population block b: SeedSequence([seed, b]); dropout [seed, b, 2]; protocol j [seed, b, 3, j]; "
              "closed-loop arm a [seed, b, 4, a]; run-in dropout [seed, b, 5], protocol j [seed, b, 6, j], closed "
              "loop [seed, b, 7]; randomization [seed, 8]")  # fmt: skip


@dataclass(frozen=True)
class TrialData:
    """What :func:`run_trial` returns (columns in ``twinloop.trials``' contract).

    ``participants`` one row per randomized participant of every replicate; ``flow`` the
    CONSORT counts per replicate; ``truth`` the hidden truth (parameters, and potential
    outcomes ``<endpoint>@<arm>`` when asked for); ``observations`` the long table
    ``subject_id, time, protocol, value`` (when kept); ``lineage`` hashes, seeds and version.
    """

    spec: TrialSpec
    participants: pd.DataFrame
    flow: pd.DataFrame
    truth: pd.DataFrame
    observations: pd.DataFrame | None
    lineage: dict[str, Any]


@dataclass(frozen=True)
class _Block:
    """The participants of one screening block: ``rows`` their positions among the block's
    ``size`` candidates, ``start`` their observables at time 0 before any treatment."""

    index: int
    size: int
    rows: np.ndarray
    cohort: Cohort
    baseline: pd.DataFrame
    start: np.ndarray


@dataclass(frozen=True)
class _Runner:
    """What simulating and measuring participants needs, built once per call."""

    spec: TrialSpec
    model: Model
    seed: int
    grid: np.ndarray
    planner: Planner | None

    def rng(self, *tail: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *tail]))


def run_trial(
    spec: TrialSpec,
    *,
    n: int | None = None,
    replicates: int | None = None,
    seed: int | None = None,
    potential_outcomes: bool = False,
    keep_observations: bool = False,
    progress: bool = False,
) -> TrialData:
    """Screen, randomize, simulate and measure ``replicates`` trials of ``n`` participants.

    Arguments:
        n, replicates, seed: override the spec's.
        potential_outcomes: also simulate every participant under every arm, with the
            same observation noise, into ``truth`` columns ``<endpoint>@<arm>`` (and
            ``<endpoint>_event@<arm>`` for a time to event).
        keep_observations: return the participants' observations (long table).
        progress: show a progress bar of the simulation.

    Raises:
        InputError: fewer eligible candidates than needed within ``max_screened`` (with the
            count and the criterion that excluded most).

    Example:
        >>> data = run_trial(TrialSpec.from_yaml("examples/trial_nsclc.yaml"), n=40)  # doctest: +SKIP
        >>> data.flow[["screened", "eligible", "randomized"]]  # doctest: +SKIP
    """
    if n is not None or replicates is not None or seed is not None:
        spec = spec.with_(n=n, replicates=replicates, seed=seed)
    runner = _runner(spec)
    blocks, last = _screen(runner)
    table = _enrolled(spec, blocks)
    arms = np.asarray(spec.randomization.assign(table, list(spec.arms), randomization_seed(runner.seed)), dtype=object)
    strata = np.asarray(spec.randomization.strata_labels(table), dtype=object).astype(str)
    result = _simulate(runner, blocks, arms, potential_outcomes, keep_observations, progress)
    participants = _participants(spec, table, arms, strata, blocks, result)
    return TrialData(
        spec=spec,
        participants=participants,
        flow=_flow(spec, participants, result["completed"], last),
        truth=_truth(runner, table, blocks, result),
        observations=result["observations"],
        lineage=lineage(spec),
    )


def simulate_participants(spec: TrialSpec, cohort: Cohort, arm: Sequence[str], *, seed: int) -> pd.DataFrame:
    """Baseline measures and endpoints of an already drawn cohort, each patient under ``arm[i]``.

    No screening or randomization: the PROCOVA bank and external control arms use it.
    Columns: ``subject_id, arm, group``, covariates, baseline measures, endpoints,
    ``simulation_failed``. Draws derive from ``seed`` and the block of :data:`BLOCK` rows.
    """
    arms = np.asarray(list(arm), dtype=object)
    if arms.shape != (cohort.n,) or not set(arms) <= set(spec.arms):
        raise InputError(f"arm must name one of the arms {list(spec.arms)} for each of the {cohort.n} patients.")
    runner = _runner(spec, seed)
    blocks = []
    for b, lo in enumerate(range(0, cohort.n, BLOCK)):
        part = cohort[lo : lo + BLOCK]
        baseline, start = _baselines(runner, b, part)
        blocks.append(_Block(b, part.n, np.arange(part.n), part, baseline, start))
    result = _simulate(runner, blocks, arms, False, False, False)
    front = pd.DataFrame({"subject_id": cohort.ids, "arm": arms.astype(str), "group": cohort.groups.astype(str)})
    covariates = cohort.covariates.reset_index(drop=True)
    baseline = pd.concat([blk.baseline for blk in blocks], ignore_index=True)
    frame = pd.concat([front, covariates, baseline, result["endpoints"]], axis=1)
    frame["simulation_failed"] = result["failed"]
    return frame


def lineage(spec: TrialSpec) -> dict[str, Any]:
    """Spec hash, model and population hashes, seeds and the package version of a trial run."""
    from twinloop import __version__
    from twinloop.models.registry import get as get_model

    model = get_model(spec.model_id)
    return {
        "spec_hash": spec.content_hash(),
        "model": {"id": model.id, "version": model.version, "content_hash": model.content_hash()},
        "population": {"name": spec.population.name, "content_hash": spec.population.content_hash()},
        "seeds": {"seed": spec.seed, "block": BLOCK, "derivation": DERIVATION},
        "code_version": __version__,
    }


# --- set-up -----------------------------------------------------------------------
def _runner(spec: TrialSpec, seed: int | None = None) -> _Runner:
    from twinloop.models.registry import get as get_model

    model = get_model(spec.model_id)
    planner = None
    if spec.product.control:
        from twinloop.control.product import ClosedLoopPlanner, arm_loops

        planner = ClosedLoopPlanner(model, arm_loops(spec.product, model))
    seed = spec.seed if seed is None else int(seed)
    return _Runner(spec, model, seed, grid_of(spec.product), planner)


def randomization_seed(seed: int) -> int:
    """The seed ``Randomization.assign`` gets in a trial run with ``seed``."""
    return _seed_of(np.random.default_rng(np.random.SeedSequence([seed, 8])))


def _seed_of(rng: np.random.Generator) -> int:
    return int(rng.integers(2**63 - 1))


# --- screening ----------------------------------------------------------------------
def _screen(runner: _Runner) -> tuple[list[_Block], np.ndarray]:
    """The blocks holding the enrolled candidates, and each replicate's last candidate index."""
    spec = runner.spec
    need = spec.n * spec.replicates
    limit = spec.max_screened or SCREEN_FACTOR * need
    blocks: list[_Block] = []
    taken: list[np.ndarray] = []
    excluded = np.zeros(len(spec.eligibility), dtype=np.int64)
    count, b = 0, 0
    while count < need:
        if b * BLOCK >= limit:
            _too_few(spec, count, need, limit, excluded)
        cohort = _candidates(spec, runner.seed, b)
        baseline, start = _baselines(runner, b, cohort)
        ok, fails = _eligible(spec, cohort, baseline)
        excluded += fails
        rows = np.flatnonzero(ok)
        rows = rows[b * BLOCK + rows < limit][: need - count]
        if rows.size:
            part = cohort[rows]
            blocks.append(_Block(b, cohort.n, rows, part, baseline.iloc[rows].reset_index(drop=True), start[rows]))
            taken.append(b * BLOCK + rows)
            count += rows.size
        b += 1
    index = np.concatenate(taken)
    return blocks, index[spec.n - 1 :: spec.n]


def _candidates(spec: TrialSpec, seed: int, b: int) -> Cohort:
    total = (b + 1) * BLOCK
    return spec.population.sample_chunk(total, seed, BLOCK, b, 8)


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
        meets = np.asarray(value == True, dtype=bool)  # noqa: E712 (NaN and text compare False)
        fails[i] = int((~meets).sum())
        ok &= meets
    return ok, fails


def _baselines(runner: _Runner, b: int, cohort: Cohort) -> tuple[pd.DataFrame, np.ndarray]:
    """Baseline measures of block ``b``'s candidates and their observables at time 0 (untreated)."""
    spec, model = runner.spec, runner.model
    start = _initial_observables(model, cohort.parameters)
    if not spec.baseline:
        return pd.DataFrame(index=pd.RangeIndex(cohort.n)), start
    from twinloop.trials.endpoints import measure_values

    if spec.run_in is None:
        truth = np.full((cohort.n, runner.grid.size, start.shape[1]), np.nan)
        truth[:, 0, :] = start
        data = _observe(runner, b, cohort.ids, runner.grid, truth, np.arange(cohort.n))[0]
    else:
        data = _run_in(runner, b, cohort)
    return measure_values(spec.baseline, data).reset_index(drop=True), start


def _run_in(runner: _Runner, b: int, cohort: Cohort) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Run every candidate on the run-in arm for its duration; the protocols' observations of it."""
    spec, model = runner.spec, runner.model
    assert spec.run_in is not None
    product = dataclasses.replace(spec.product, duration=spec.run_in.duration)
    planner = runner.planner
    if planner is not None and spec.run_in.arm in product.control:
        from twinloop.control.product import ClosedLoopPlanner, arm_loops

        planner = ClosedLoopPlanner(model, arm_loops(product, model))
    grid = grid_of(product)
    arm = np.full(cohort.n, spec.run_in.arm, dtype=object)
    run = simulate_arms(product, model, cohort, arm, grid, planner=planner, doses=False, pad=True,
                        plan_seed=lambda a: _seed_of(runner.rng(b, 7)))  # fmt: skip
    frames, _ = observe_protocols(product.observations, model, cohort.ids, grid, run.observables,
                                  runner.rng(b, 5), lambda j: runner.rng(b, 6, j))  # fmt: skip
    return {
        p.name: _matrices(f, np.arange(cohort.n), cohort.n) for p, f in zip(product.observations, frames, strict=True)
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


def _enrolled(spec: TrialSpec, blocks: list[_Block]) -> pd.DataFrame:
    """The randomization table: replicate, order, group, covariates and baseline measures."""
    total = sum(blk.rows.size for blk in blocks)
    g = np.arange(total)
    front = pd.DataFrame({"replicate": g // spec.n, "order": g % spec.n})
    ids = [i for blk in blocks for i in blk.cohort.ids]
    groups = np.concatenate([blk.cohort.groups for blk in blocks]).astype(str)
    covariates = pd.concat([blk.cohort.covariates for blk in blocks], ignore_index=True)
    baseline = pd.concat([blk.baseline for blk in blocks], ignore_index=True)
    front["subject_id"] = ids
    front["group"] = groups
    return pd.concat([front, covariates, baseline], axis=1)


# --- simulation and measurement -------------------------------------------------------
def _simulate(
    runner: _Runner, blocks: list[_Block], arms: np.ndarray, potential: bool, keep: bool, progress: bool
) -> dict[str, Any]:
    """Endpoints (and potential outcomes, observations) of every block's participants, in order."""
    spec = runner.spec
    endpoints, failed, completed, observations, potentials = [], [], [], [], []
    offset = 0
    units = _units(blocks, spec.chunk_size, bool(spec.product.control))
    with PatientBar(progress, len(arms), f"trial {spec.name}") as advance:
        for unit in units:
            m = sum(blk.rows.size for blk in unit)
            arm = arms[offset : offset + m]
            run = _measure(runner, unit, arm, keep)
            endpoints.append(run["endpoints"])
            failed.append(run["failed"])
            completed.append(run["completed"])
            observations.extend(run["observations"])
            if potential:
                potentials.append(_potential(runner, unit, m))
            offset += m
            advance(m)
    return {
        "endpoints": pd.concat(endpoints, ignore_index=True),
        "failed": np.concatenate(failed),
        "completed": np.concatenate(completed),
        "observations": pd.concat(observations, ignore_index=True) if keep else None,
        "potential": pd.concat(potentials, ignore_index=True) if potential else None,
    }


def _units(blocks: list[_Block], chunk_size: int, per_block: bool) -> list[list[_Block]]:
    """Blocks grouped into engine runs of at least ``chunk_size`` participants (one block
    each for closed-loop arms, whose planner draws per block)."""
    units: list[list[_Block]] = []
    size = 0
    for blk in blocks:
        if not units or per_block or size >= chunk_size:
            units.append([])
            size = 0
        units[-1].append(blk)
        size += blk.rows.size
    return units


def _measure(runner: _Runner, unit: list[_Block], arm: np.ndarray, keep: bool) -> dict[str, Any]:
    """Simulate one unit's participants under ``arm``, observe them block by block, compute endpoints."""
    from twinloop.trials.endpoints import endpoint_values

    spec, model = runner.spec, runner.model
    cohort = Cohort.concat([blk.cohort for blk in unit]) if len(unit) > 1 else unit[0].cohort
    b0 = unit[0].index
    run = simulate_arms(spec.product, model, cohort, arm, runner.grid, planner=runner.planner, doses=False,
                        plan_seed=lambda a: _seed_of(runner.rng(b0, 4, a)),
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
        data, dropout, obs = _observe(runner, blk.index, ids, runner.grid, truth, blk.rows, keep)
        values = endpoint_values(spec.endpoints, data, blk.baseline).reset_index(drop=True)
        frames.append(values)
        ended = np.all(dropout > spec.duration, axis=0) & ~run.failed[lo : lo + m]
        completed.append(ended)
        if obs is not None:
            kept.append(obs)
        lo += m
    return {"endpoints": pd.concat(frames, ignore_index=True), "failed": run.failed, "completed":
            np.concatenate(completed), "observations": kept}  # fmt: skip


def _potential(runner: _Runner, unit: list[_Block], m: int) -> pd.DataFrame:
    """Every endpoint of the unit's participants under every arm: ``<endpoint>@<arm>`` columns."""
    columns = {}
    for name in runner.spec.arms:
        values = _measure(runner, unit, np.full(m, name, dtype=object), False)["endpoints"]
        columns.update({f"{c}@{name}": values[c].to_numpy() for c in values.columns})
    return pd.DataFrame(columns)


def _block_ids(blk: _Block) -> list[str]:
    ids = [f"c{blk.index}-{i}" for i in range(blk.size)]
    for i, row in enumerate(blk.rows):
        ids[row] = blk.cohort.ids[i]
    return ids


def _observe(
    runner: _Runner, b: int, ids: list[str], grid: np.ndarray, truth: np.ndarray, rows: np.ndarray, keep: bool = False
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, pd.DataFrame | None]:
    """Block ``b``'s observations of ``truth`` (every candidate of the block, NaN rows for those
    not simulated) with the block's generators; the ``(times, values)`` matrices of ``rows``,
    their dropout times ``(n_protocols, len(rows))`` and, if ``keep``, their long table."""
    protocols = runner.spec.product.observations
    frames, dropout = observe_protocols(protocols, runner.model, ids, grid, truth, runner.rng(b, 2),
                                        lambda j: runner.rng(b, 3, j))  # fmt: skip
    data = {p.name: _matrices(f, rows, len(ids)) for p, f in zip(protocols, frames, strict=True)}
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


def _matrices(frame: pd.DataFrame, rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
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


# --- assembly ------------------------------------------------------------------------
def _participants(
    spec: TrialSpec, table: pd.DataFrame, arms: np.ndarray, strata: np.ndarray, blocks: list[_Block],
    result: dict[str, Any],
) -> pd.DataFrame:  # fmt: skip
    front = table[["replicate", "order", "subject_id"]].copy()
    front["arm"] = arms.astype(str)
    front["stratum"] = strata
    rest = table.drop(columns=["replicate", "order", "subject_id"])
    frame = pd.concat([front, rest, result["endpoints"]], axis=1)
    frame["simulation_failed"] = result["failed"]
    return frame


def _flow(spec: TrialSpec, participants: pd.DataFrame, completed: np.ndarray, last: np.ndarray) -> pd.DataFrame:
    """CONSORT counts per replicate."""
    r = participants["replicate"].to_numpy()
    flow = pd.DataFrame({"replicate": np.arange(spec.replicates)})
    flow["screened"] = np.diff(np.r_[-1, last])
    flow["eligible"] = spec.n
    flow["randomized"] = spec.n
    arm = participants["arm"].to_numpy()
    for name in spec.arms:
        flow[f"randomized:{name}"] = np.bincount(r[arm == name], minlength=spec.replicates)
    for name in spec.arms:
        flow[f"completed:{name}"] = np.bincount(r[(arm == name) & completed], minlength=spec.replicates)
    primary = getattr(spec.analysis, "primary", None) or next(iter(spec.endpoints), None)
    ok = ~participants["simulation_failed"].to_numpy()
    if primary is not None:
        ok &= participants[primary].notna().to_numpy()
    flow["analysed"] = np.bincount(r[ok], minlength=spec.replicates)
    return flow


def _truth(runner: _Runner, table: pd.DataFrame, blocks: list[_Block], result: dict[str, Any]) -> pd.DataFrame:
    names = list(runner.model.parameter_names)
    params = np.concatenate([blk.cohort.parameters for blk in blocks])
    truth = pd.concat([table[["replicate", "subject_id"]], pd.DataFrame(params, columns=names)], axis=1)
    if result["potential"] is not None:
        truth = pd.concat([truth, result["potential"]], axis=1)
    return truth
