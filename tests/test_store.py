"""The twin registry on SQLite and on a real PostgreSQL server: persistence, idempotent
ingest, versions, forecasts referencing versions, audit, and 8 concurrent syncs, with the
twin orchestrating load -> sync -> save through the registry (never the reverse)."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prov.model import ProvAgent, ProvDocument

import twinloop as tl
from twinloop._provenance import TL
from twinloop.calibrate import GaussianPrior, NoiseModel
from twinloop.cohort import Population
from twinloop.govern.lineage import uses_of, walk_document
from twinloop.store import TwinRegistry
from twinloop.twin import PatientTwin, TwinConfig, synthetic_record
from twinloop.twin.registered import RegisteredTwins
from twinloop.twin.synthetic import ORIGIN

SCANS = np.arange(1, 26) * 7.0  # weekly for 25 weeks


def _record() -> pd.DataFrame:
    model = tl.models.get("tgi-stein")
    obs, _, _ = synthetic_record(
        model,
        model.default_parameters,
        tl.Inputs(),
        SCANS,
        observable="sum_of_diameters",
        noise=NoiseModel(1.0, 0.1),
        seed=5,
    )
    return obs


def _twin(name: str) -> PatientTwin:
    model = tl.models.get("tgi-stein")
    prior = GaussianPrior.from_population(Population.default(model), ("y0", "g", "d"), n=2000, seed=1)
    return PatientTwin.create(
        model,
        _record().iloc[:5],
        prior=prior,
        base=model.default_parameters,
        method="enkf",
        config=TwinConfig(members=64, seed=2),
        twin_id=name,
        origin=ORIGIN,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'twins.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_registry_round_trip_versions_forecasts_and_audit(url: str) -> None:
    name = f"onc-{abs(hash(url)) % 10_000}"
    reg = TwinRegistry(url, actor="test-suite")
    twins = RegisteredTwins(reg)
    twin = _twin(name)
    twins.add(twin)
    with pytest.raises(tl.errors.RegistryError, match="already exists"):
        twins.add(twin)
    obs = _record()
    new = obs.iloc[5:8]
    report = twins.sync(name, new)
    assert report.version == 2 and report.assimilated == 3
    again = twins.sync(name, pd.concat([new, obs.iloc[8:9]]))  # the same three plus one new
    assert again.version == 3 and again.assimilated == 1
    logged = reg.table("observations", name)
    assert len(logged) == 9 and logged["obs_key"].is_unique
    fc = twins.forecast(name, hours=24 * 21)
    forecasts = reg.table("forecasts", name)
    assert forecasts["version"].tolist() == [3] and forecasts["id"].tolist() == [fc.id]
    twins.sync(name, obs.iloc[9:12])
    loaded = twins.load(name)
    assert loaded.version == 4 and loaded.forecasts[0].scores["n"] == 3
    np.testing.assert_array_equal(twins.load(name, version=2).ensemble.theta.shape, (64, 3))
    versions = reg.table("versions", name).sort_values("version")
    assert versions["version"].tolist() == [1, 2, 3, 4] and versions["parent"].tolist()[1:] == [1, 2, 3]
    audit = reg.table("audit", name)
    assert audit["action"].tolist() == ["create", "sync", "sync", "forecast", "sync", "score"]
    assert set(audit["actor"]) == {"test-suite"}
    with pytest.raises(tl.errors.RegistryError, match="No twin 'nobody'"):
        twins.sync("nobody", new)


def test_the_registry_path_draws_the_same_numbers_as_the_python_api(tmp_path: Path) -> None:
    # an in-memory twin and one reloaded from the registry before every sync end identical
    reg = TwinRegistry(f"sqlite:///{tmp_path / 'rng.db'}")
    twins = RegisteredTwins(reg)
    memory = _twin("same")
    twins.add(memory)
    obs = _record()
    for part in (obs.iloc[5:8], obs.iloc[8:12]):
        memory.sync(part)
        twins.sync("same", part)
    stored = twins.load("same")
    assert stored.version == memory.version == 3
    np.testing.assert_array_equal(stored.ensemble.theta, memory.ensemble.theta)
    np.testing.assert_array_equal(stored.ensemble.states, memory.ensemble.states)
    a, b = memory.forecast(24 * 14.0), stored.forecast(24 * 14.0)
    np.testing.assert_array_equal(a.predictive, b.predictive)


def test_late_observations_are_assimilated_by_rewinding() -> None:
    obs = _record()
    in_order, shuffled = _twin("in-order"), _twin("shuffled")
    in_order.sync(obs.iloc[5:10])
    first = shuffled.sync(obs.iloc[8:10])
    late = shuffled.sync(obs.iloc[5:8])  # older than the twin's state: a backfill
    assert (first.assimilated, late.assimilated, late.replayed, late.late) == (2, 3, 2, 0)
    assert shuffled.ensemble.time == in_order.ensemble.time == SCANS[9]
    spread = in_order.ensemble.theta.std(axis=0)
    gap = np.abs(shuffled.ensemble.theta.mean(axis=0) - in_order.ensemble.theta.mean(axis=0))
    assert np.all(gap < 0.5 * spread), (gap, spread)  # the same information, within Monte Carlo error
    too_old = shuffled.sync(obs.iloc[[0]].assign(value=obs["value"].iloc[0] + 1.0))  # before every kept ensemble
    assert too_old.late == 1 and too_old.assimilated == 0


def test_a_failed_sync_changes_nothing(url: str) -> None:
    name = f"fail-{abs(hash(url)) % 10_000}"
    reg = TwinRegistry(url)
    twins = RegisteredTwins(reg)
    twins.add(_twin(name))
    bad = _record().iloc[5:7].assign(unit="mg/dL")  # a concentration cannot become a length in mm
    with pytest.raises(tl.InputError, match="rejected"):
        twins.sync(name, bad)
    assert len(reg.table("versions", name)) == 1 and len(reg.table("observations", name)) == 5


def _leaves(node: Any) -> list[Any]:
    return [node] if not node.inputs else [leaf for child in node.inputs for leaf in _leaves(child)]


def _chain(node: Any) -> list[str]:
    """Activity types from a node back through its previous versions."""
    out = [node.activity["type"]]
    for child in node.inputs:
        if child.role in ("previous-version", "twin-version"):
            out += _chain(child)
    return out


def test_a_twins_history_is_a_prov_graph_from_each_forecast_back_to_its_data(url: str) -> None:
    name = f"prov-{abs(hash(url)) % 10_000}"
    reg = TwinRegistry(url, actor="dr-lovelace")
    twins = RegisteredTwins(reg)
    twin = _twin(name)
    twins.add(twin)
    obs = _record()
    twins.sync(name, obs.iloc[5:8])
    fc = twins.forecast(name, hours=24 * 21)
    twins.sync(name, obs.iloc[8:12])  # scores the forecast
    twins.record(name, "compare", {"endpoint": "final:sum_of_diameters", "ensemble_size": 64})
    doc = reg.provenance(name)

    # PROV-JSON round-trips, and the document is rebuilt identically from the same rows
    text = doc.serialize(format="json")
    assert ProvDocument.deserialize(content=text, format="json") == doc
    assert reg.provenance(name).serialize(format="json") == text

    # the forecast leads back through versions 2 and 1 to the data, the model and the prior
    forecast_id = next(str(r.identifier.uri) for r in doc.get_records() if fc.id in str(r.get_attribute("prov:label")))
    tree = walk_document(doc, forecast_id)
    assert tree.kind == "forecast" and _chain(tree) == ["twin-forecast", "twin-sync", "twin-create"]
    leaves = _leaves(tree)
    assert sorted(leaf.role for leaf in leaves) == ["model", "observations", "observations", "prior"]
    counted = [int(next(iter(doc.get_record(leaf.id)[0].get_attribute(TL["count"])))) for leaf in leaves
               if leaf.kind == "observations"]  # fmt: skip
    assert sorted(counted) == [3, 5]  # the batches logged with versions 2 and 1
    model = next(leaf for leaf in leaves if leaf.kind == "model")
    assert model.id == f"urn:sha256:{tl.models.get('tgi-stein').content_hash()}"
    assert tree.activity["agent"] == tl.__version__ and tree.inputs[0].activity["settings"]["assimilated"] == 3

    # the current version names its parent, the new data, and is named by the same hash everywhere
    current = f"urn:sha256:{reg.version_identity(name)}"
    node = walk_document(doc, current)
    assert node.label == f"{name} v3" and [c.role for c in node.inputs] == ["previous-version", "observations"]
    assert reg.version_identity(name, 3) == reg.version_identity(name)
    assert reg.version_identity(name, 2) != reg.version_identity(name)

    # the forward view: scoring used the forecast; the recorded comparison used version 3; all by the actor
    assert [u["type"] for u in uses_of(doc, forecast_id)] == ["twin-score"]
    assert [u["type"] for u in uses_of(doc, current)] == ["twin-compare"]
    scoring_data = next(c for c in node.inputs if c.role == "observations")
    assert [u["type"] for u in uses_of(doc, scoring_data.id)] == ["twin-sync", "twin-score"]
    people = {
        str(a.get_attribute("prov:label").pop()) for a in doc.get_records(ProvAgent) if "user-" in str(a.identifier)
    }
    assert people == {"dr-lovelace"}
    with pytest.raises(tl.errors.RegistryError, match="No twin 'nobody'"):
        reg.provenance("nobody")


def _sync_worker(url: str, name: str, rows: list[int]) -> int:
    obs = _record().iloc[rows]
    return RegisteredTwins(TwinRegistry(url, actor=f"worker-{rows[0]}")).sync(name, obs).version


@pytest.fixture(scope="module")
def pools() -> Iterator[Callable[[int], Any]]:
    """Pools of spawned processes, one per size, kept for the module: the SQLite and the
    PostgreSQL runs share the processes, so each pays for its start-up and compilation once."""
    made: dict[int, Any] = {}

    def pool(size: int) -> Any:
        if size not in made:
            made[size] = mp.get_context("spawn").Pool(size)
        return made[size]

    yield pool
    for each in made.values():
        each.close()
        each.join()


@pytest.mark.parametrize("workers", [3, pytest.param(8, marks=pytest.mark.slow)])
def test_processes_syncing_one_twin_at_once_lose_nothing_and_duplicate_nothing(
    url: str, workers: int, pools: Callable[[int], Any]
) -> None:
    """Processes sync overlapping batches into one twin at once (3 by default, 8 in the
    slow run: each process pays for its own start-up and compilation, once per module)."""
    name = f"busy-{workers}-{abs(hash(url)) % 10_000}"
    reg = TwinRegistry(url)
    twins = RegisteredTwins(reg)
    twins.add(_twin(name))
    # overlapping batches of 5: every observation from 5 on is sent by two workers
    span = 5 * workers // 2
    batches = [[5 + (2 * i + j) % span for j in range(5)] for i in range(workers)]
    expected = {r for b in batches for r in b} | set(range(5))
    versions = pools(workers).starmap(_sync_worker, [(url, name, b) for b in batches])
    # a batch whose rows the others already logged makes no version (it reports the current one)
    made = sorted(set(versions))
    last = made[-1]
    assert made == list(range(2, last + 1)) and last >= 3
    logged = reg.table("observations", name)
    assert len(logged) == len(expected) and logged["obs_key"].is_unique
    table = reg.table("versions", name).sort_values("version")
    assert table["version"].tolist() == list(range(1, last + 1))
    assert table["parent"].tolist()[1:] == list(range(1, last))
    twin = twins.load(name)
    assert twin.version == last and len(twin.observations) == len(expected)
    # batches that arrived out of order were assimilated by rewinding, none left unassimilated
    summaries = [json.loads(s) for s in table["summary"].iloc[1:]]
    assert all(s["late"] == 0 for s in summaries), summaries
    assert twin.ensemble.time == pytest.approx(SCANS[max(expected)])
    assert (reg.table("audit", name)["action"] == "sync").sum() == last - 1
    # the PROV graph chains the versions in order and credits each sync to the process that made it
    doc = reg.provenance(name)
    chain = walk_document(doc, f"urn:sha256:{reg.version_identity(name)}")
    assert _chain(chain) == ["twin-sync"] * (last - 1) + ["twin-create"]
    people = {
        str(a.get_attribute("prov:label").pop()) for a in doc.get_records(ProvAgent) if "user-" in str(a.identifier)
    }
    assert len(people & {f"worker-{b[0]}" for b in batches}) == last - 1  # each worker that made a version


def test_the_registry_imports_nothing_of_the_twin() -> None:
    """Persistence stores rows and state blobs; the twin drives it (the arrow points down)."""
    import subprocess
    import sys

    code = "import sys, twinloop.store.registry; print(sorted(m for m in sys.modules if m.startswith('twinloop.twin')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_failed_create_keeps_no_row(tmp_path: Path) -> None:
    """The twin's row and its first version are written in one transaction."""
    reg = TwinRegistry(f"sqlite:///{tmp_path / 'atomic.db'}")
    created = reg.create("half", subject_id="p1", model_id="tgi-stein", model_version="1")
    with pytest.raises(RuntimeError, match="disk on fire"), created as change:
        change.audit("create", None, {})
        raise RuntimeError("disk on fire")
    assert not reg.exists("half") and reg.table("audit", "half").empty
    with pytest.raises(tl.errors.RegistryError, match="No twin 'half'"):
        reg.state("half")
