"""Run a trial: screen candidates, randomize the eligible ones, simulate and measure them.

``run_trial`` runs R replicate trials of ``n`` participants at once:

1. **Screening.** Candidates are drawn from the (conditioned) population in blocks
   (``screening.block_size``; block ``b`` seeded by ``(seed, b)``, whatever the ``chunk_size``),
   their baseline measures taken and the eligibility criteria applied; the eligible candidates,
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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twinloop.cohort.population import Cohort
from twinloop.errors import InputError
from twinloop.products.dataset import PatientBar, engine_summary
from twinloop.trials.measure import (
    Block,
    Plans,
    Runner,
    engine_units,
    make_runner,
    measure_potential,
    measure_unit,
    seed_of,
)
from twinloop.trials.screening import baselines, block_size, screen
from twinloop.trials.spec import TrialSpec

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
    ``subject_id, time, protocol, value`` (when kept); ``lineage`` hashes, seeds, version and
    the engine's settings, path and fast-path self-check.
    """

    spec: TrialSpec
    participants: pd.DataFrame
    flow: pd.DataFrame
    truth: pd.DataFrame
    observations: pd.DataFrame | None
    lineage: dict[str, Any]


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
    runner = make_runner(spec)
    blocks, last = screen(runner)
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
        lineage={**lineage(spec), "engine": result["engine"]},
    )


def simulate_participants(spec: TrialSpec, cohort: Cohort, arm: Sequence[str], *, seed: int) -> pd.DataFrame:
    """Baseline measures and endpoints of an already drawn cohort, each patient under ``arm[i]``.

    No screening or randomization: the PROCOVA bank and external control arms use it.
    Columns: ``subject_id, arm, group``, covariates, baseline measures, endpoints,
    ``simulation_failed``. Draws derive from ``seed`` and the block of ``block_size(spec)`` rows.
    """
    arms = np.asarray(list(arm), dtype=object)
    if cohort.n == 0 or arms.shape != (cohort.n,) or not set(arms) <= set(spec.arms):
        raise InputError(
            f"arm must name one of the arms {list(spec.arms)} for each of the {cohort.n} patients (at least one)."
        )
    runner = make_runner(spec, seed)
    blocks = []
    size = block_size(spec)
    for b, lo in enumerate(range(0, cohort.n, size)):
        part = cohort[lo : lo + size]
        baseline, start = baselines(runner, b, part)
        blocks.append(Block(b, part.n, np.arange(part.n), part, baseline, start))
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
        "seeds": {"seed": spec.seed, "block": block_size(spec), "derivation": DERIVATION},
        "code_version": __version__,
    }


def randomization_seed(seed: int) -> int:
    """The seed ``Randomization.assign`` gets in a trial run with ``seed``."""
    return seed_of(np.random.default_rng(np.random.SeedSequence([seed, 8])))


def _enrolled(spec: TrialSpec, blocks: list[Block]) -> pd.DataFrame:
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


def _simulate(
    runner: Runner, blocks: list[Block], arms: np.ndarray, potential: bool, keep: bool, progress: bool
) -> dict[str, Any]:
    """Endpoints (and potential outcomes, observations) of every block's participants, in order."""
    spec = runner.spec
    endpoints, failed, completed, observations, potentials, engine = [], [], [], [], [], []
    offset = 0
    groups = engine_units(blocks, spec.chunk_size, bool(spec.product.control))
    with PatientBar(progress, len(arms), f"trial {spec.name}") as advance:
        for unit in groups:
            m = sum(blk.rows.size for blk in unit)
            arm = arms[offset : offset + m]
            plans = Plans(runner, unit)
            run = measure_unit(runner, unit, arm, keep, plans)
            endpoints.append(run["endpoints"])
            failed.append(run["failed"])
            completed.append(run["completed"])
            observations.extend(run["observations"])
            engine.append(run["engine"])
            if potential:
                potentials.append(measure_potential(runner, unit, m, plans))
            offset += m
            advance(m)
    return {
        "endpoints": pd.concat(endpoints, ignore_index=True),
        "failed": np.concatenate(failed),
        "completed": np.concatenate(completed),
        "observations": pd.concat(observations, ignore_index=True) if keep else None,
        "potential": pd.concat(potentials, ignore_index=True) if potential else None,
        "engine": engine_summary(spec.product, engine),
    }


# --- assembly ------------------------------------------------------------------------
def _participants(
    spec: TrialSpec, table: pd.DataFrame, arms: np.ndarray, strata: np.ndarray, blocks: list[Block],
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


def _truth(runner: Runner, table: pd.DataFrame, blocks: list[Block], result: dict[str, Any]) -> pd.DataFrame:
    names = list(runner.model.parameter_names)
    params = np.concatenate([blk.cohort.parameters for blk in blocks])
    truth = pd.concat([table[["replicate", "subject_id"]], pd.DataFrame(params, columns=names)], axis=1)
    if result["potential"] is not None:
        truth = pd.concat([truth, result["potential"]], axis=1)
    return truth
