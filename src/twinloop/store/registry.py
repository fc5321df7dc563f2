"""The twin registry: twins, their versions, observation and dose logs, forecasts and
an audit log in a SQL database (SQLAlchemy; a SQLite file by default, PostgreSQL by URL).

It stores rows and state blobs and implements the twin's repository interface
(:class:`twinloop.twin.repository.TwinRepository`); the twin orchestrates load -> sync
-> save through it (:class:`twinloop.twin.registered.RegisteredTwins`), never the
reverse, so this module imports nothing from ``twin/``.

- Every change runs in one transaction that first locks the twin (``SELECT ... FOR
  UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite), so concurrent syncs of one
  twin are serialized: each sees the version the previous one wrote.
- The observation and dose logs are append-only with a content key unique per twin:
  the same observation ingested twice is stored once.
- Each sync writes a new version row (version numbers are consecutive, the pair
  (twin, version) is a primary key); each forecast references the version it came
  from; every change writes an audit row (who, what, when).
"""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prov.model import ProvDocument
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError

from twinloop._paths import check_name
from twinloop._secrets import mask_secrets
from twinloop.errors import RegistryError
from twinloop.store.provenance import TwinProvenance, version_sha256

metadata = MetaData()
twins = Table(
    "twins",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("subject_id", String(256), nullable=False),
    Column("model_id", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("current_version", Integer, nullable=False),
)
versions = Table(
    "twin_versions",
    metadata,
    Column("twin_id", String(128), ForeignKey("twins.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("parent", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state_time", Float, nullable=False),
    Column("summary", Text, nullable=False),
    Column("state", LargeBinary, nullable=False),
)
observations = Table(
    "observations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("twin_id", String(128), ForeignKey("twins.id"), nullable=False),
    Column("obs_key", String(64), nullable=False),
    Column("subject_id", String(256), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("variable", String(128), nullable=False),
    Column("value", Float, nullable=False),
    Column("unit", String(64), nullable=False),
    Column("code", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("version", Integer, nullable=False),
    UniqueConstraint("twin_id", "obs_key", name="uq_observation"),
)
doses = Table(
    "doses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("twin_id", String(128), ForeignKey("twins.id"), nullable=False),
    Column("dose_key", String(64), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("input", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", Float, nullable=False),
    Column("duration", Float, nullable=False),
    Column("unit", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    UniqueConstraint("twin_id", "dose_key", name="uq_dose"),
)
forecasts = Table(
    "forecasts",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("twin_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("hours", Float, nullable=False),
    Column("quantiles", LargeBinary, nullable=False),
    ForeignKeyConstraint(["twin_id", "version"], ["twin_versions.twin_id", "twin_versions.version"]),
)
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("twin_id", String(128), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("version", Integer, nullable=True),
    Column("detail", Text, nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _key(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]


def _iso(time: Any) -> str:
    return pd.Timestamp(time).isoformat()


def _pack(state: Mapping[str, Any]) -> bytes:
    """A twin's state (its ``state_dict``) as one binary blob (JSON header + length-prefixed blobs)."""
    blobs = [state["ensemble"], state["observations"], state["doses"], *state["snapshots"], *state["forecasts"]]
    header = json.dumps(
        {
            "meta": state["meta"],
            "n_snapshots": len(state["snapshots"]),
            "n_forecasts": len(state["forecasts"]),
            "sizes": [len(b) for b in blobs],
        }
    ).encode()
    return len(header).to_bytes(8, "big") + header + b"".join(blobs)


def _unpack(raw: bytes) -> dict[str, Any]:
    n = int.from_bytes(raw[:8], "big")
    header = json.loads(raw[8 : 8 + n])
    blobs, pos = [], 8 + n
    for size in header["sizes"]:
        blobs.append(raw[pos : pos + size])
        pos += size
    s, f = header["n_snapshots"], header["n_forecasts"]
    return {
        "meta": header["meta"],
        "ensemble": blobs[0],
        "observations": blobs[1],
        "doses": blobs[2],
        "snapshots": blobs[3 : 3 + s],
        "forecasts": blobs[3 + s : 3 + s + f],
    }


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _ensemble_sha256(state: bytes) -> str:
    """Hash of a version's ensemble (the rest of its state blob gains forecasts later)."""
    return _sha256(_unpack(state)["ensemble"])


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 120})

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock at the start

    return engine


class _Change:
    """One locked change of one twin in an open transaction (see ``TwinChange``)."""

    def __init__(self, registry: TwinRegistry, conn: Connection, twin_id: str, current_version: int) -> None:
        self._registry, self._conn, self._twin_id = registry, conn, twin_id
        self._current = current_version

    @property
    def current_version(self) -> int:
        return self._current

    def state(self) -> dict[str, Any]:
        return self._registry._read_state(self._conn, self._twin_id, self._current)

    def log(self, observations: pd.DataFrame, doses: pd.DataFrame, version: int) -> tuple[int, int]:
        return _log(self._conn, self._twin_id, observations, doses, version)

    def add_version(
        self,
        version: int,
        *,
        parent: int | None,
        kind: str,
        state_time: float,
        summary: Mapping[str, Any],
        state: Mapping[str, Any],
    ) -> None:
        self._conn.execute(
            insert(versions).values(
                twin_id=self._twin_id,
                version=version,
                parent=parent,
                created_at=_now(),
                kind=kind,
                state_time=float(state_time),
                summary=json.dumps(dict(summary), default=str),
                state=_pack(state),
            )
        )
        self._conn.execute(twins.update().where(twins.c.id == self._twin_id).values(current_version=version))
        self._current = version

    def replace_state(self, version: int, state: Mapping[str, Any]) -> None:
        self._conn.execute(
            versions.update()
            .where(versions.c.twin_id == self._twin_id, versions.c.version == version)
            .values(state=_pack(state))
        )

    def add_forecast(self, forecast_id: str, version: int, hours: float, quantiles: bytes) -> None:
        self._conn.execute(
            insert(forecasts).values(
                id=forecast_id,
                twin_id=self._twin_id,
                version=version,
                created_at=_now(),
                hours=hours,
                quantiles=quantiles,
            )
        )

    def audit(self, action: str, version: int | None, detail: Mapping[str, Any]) -> None:
        self._conn.execute(
            insert(audit).values(
                twin_id=self._twin_id,
                at=_now(),
                actor=self._registry.actor,
                action=action,
                version=version,
                detail=json.dumps(dict(detail), default=str),
            )
        )


def _log(conn: Connection, twin_id: str, obs: pd.DataFrame, dose: pd.DataFrame, version: int) -> tuple[int, int]:
    """Append observations and doses not already logged; returns how many were new."""
    existing = {r[0] for r in conn.execute(select(observations.c.obs_key).where(observations.c.twin_id == twin_id))}
    rows = []
    for r in obs.to_dict("records"):
        key = _key(
            r["subject_id"], pd.Timestamp(r["time"]).isoformat(), r["variable"], repr(float(r["value"])), r["unit"]
        )
        if key not in existing:
            existing.add(key)
            rows.append(
                {
                    "twin_id": twin_id,
                    "obs_key": key,
                    "subject_id": r["subject_id"],
                    "time": r["time"],
                    "variable": r["variable"],
                    "value": float(r["value"]),
                    "unit": r["unit"],
                    "code": r["code"],
                    "source": r["source"],
                    "version": version,
                }
            )
    if rows:
        conn.execute(insert(observations), rows)
    dkeys = {r[0] for r in conn.execute(select(doses.c.dose_key).where(doses.c.twin_id == twin_id))}
    drows = []
    for d in dose.to_dict("records"):
        key = _key(
            pd.Timestamp(d["time"]).isoformat(),
            d["input"],
            d["kind"],
            repr(float(d["amount"])),
            d["duration"],
            d["unit"],
        )
        if key not in dkeys:
            dkeys.add(key)
            drows.append(
                {
                    "twin_id": twin_id,
                    "dose_key": key,
                    "time": d["time"],
                    "input": d["input"],
                    "kind": d["kind"],
                    "amount": float(d["amount"]),
                    "duration": float(d["duration"]),
                    "unit": d["unit"],
                    "version": version,
                }
            )
    if drows:
        conn.execute(insert(doses), drows)
    return len(rows), len(drows)


class TwinRegistry:
    """Keep twins in a SQL database: ``TwinRegistry("sqlite:///twins.db")`` or a PostgreSQL URL.

    A :class:`~twinloop.twin.repository.TwinRepository`: load, sync and forecast twins
    through :class:`~twinloop.twin.registered.RegisteredTwins`; read the logs, the audit
    trail and the PROV history here.

    Example:
        >>> from twinloop.twin.registered import RegisteredTwins  # doctest: +SKIP
        >>> registry = TwinRegistry("sqlite:///twins.db")  # doctest: +SKIP
        >>> RegisteredTwins(registry).add(twin); registry.table("audit", twin.id)  # doctest: +SKIP
    """

    def __init__(self, url: str = "sqlite:///twins.db", actor: str | None = None) -> None:
        self.url = url
        self.where = mask_secrets(url)  # the URL as messages show it: never its password
        self.actor = actor or f"{getpass.getuser()}@twinloop"
        try:
            self.engine = _sqlite_engine(url) if url.startswith("sqlite") else create_engine(url, pool_pre_ping=True)
            metadata.create_all(self.engine)
        except (ArgumentError, NoSuchModuleError, ImportError, DBAPIError, ValueError) as e:
            reason = mask_secrets(str(getattr(e, "orig", None) or e).splitlines()[0]).rstrip(".")
            raise RegistryError(
                f"Cannot open the twin registry at {self.where}: {reason}. Check the URL "
                "(sqlite:///file.db or postgresql+psycopg://user:password@host/db), the server and its driver."
            ) from None

    def __repr__(self) -> str:
        return f"TwinRegistry({self.where!r})"

    def _read_state(self, conn: Connection, twin_id: str, version: int) -> dict[str, Any]:
        blob = conn.execute(
            select(versions.c.state).where(versions.c.twin_id == twin_id, versions.c.version == version)
        ).scalar()
        if blob is None:
            raise RegistryError(f"Twin {twin_id!r} has no version {version}.")
        return _unpack(blob)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction; a failure of the database itself becomes a ``RegistryError``."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as e:
            reason = mask_secrets(str(e.orig))
            raise RegistryError(f"The registry at {self.where} could not complete the change: {reason}") from None

    # --- the repository interface (twinloop.twin.repository) -------------------
    @contextmanager
    def create(self, twin_id: str, *, subject_id: str, model_id: str, model_version: str) -> Iterator[_Change]:
        """A change that first adds the twin's row (current version 0 until one is added)."""
        check_name("twin id", twin_id)
        try:
            with self._transaction() as conn:
                conn.execute(
                    insert(twins).values(
                        id=twin_id,
                        subject_id=subject_id,
                        model_id=model_id,
                        model_version=model_version,
                        created_at=_now(),
                        current_version=0,
                    )
                )
                yield _Change(self, conn, twin_id, 0)
        except IntegrityError as e:
            raise RegistryError(f"A twin named {twin_id!r} already exists in {self.where}; choose another name.") from e

    @contextmanager
    def change(self, twin_id: str) -> Iterator[_Change]:
        """A change of an existing twin holding its row lock (``SELECT ... FOR UPDATE`` on
        PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite)."""
        with self._transaction() as conn:
            query = select(twins).where(twins.c.id == twin_id)
            if self.engine.dialect.name != "sqlite":
                query = query.with_for_update()
            row = conn.execute(query).mappings().first()
            if row is None:
                raise RegistryError(f"No twin {twin_id!r} in {self.where}; create it first (twinloop twin create).")
            yield _Change(self, conn, twin_id, int(row["current_version"]))

    def state(self, twin_id: str, version: int | None = None) -> dict[str, Any]:
        """The stored state of the twin's current (or a given) version."""
        with self.engine.connect() as conn:
            current = conn.execute(select(twins.c.current_version).where(twins.c.id == twin_id)).scalar()
            if current is None:
                raise RegistryError(f"No twin {twin_id!r} in {self.where}.")
            return self._read_state(conn, twin_id, version or current)

    def exists(self, twin_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(twins.c.id).where(twins.c.id == twin_id)).first() is not None

    # --- reading the logs and the history ----------------------------------------
    def table(self, name: str, twin_id: str) -> pd.DataFrame:
        """One of ``observations``, ``doses``, ``versions``, ``forecasts``, ``audit`` for a twin."""
        tables = {
            "observations": observations,
            "doses": doses,
            "versions": versions,
            "forecasts": forecasts,
            "audit": audit,
        }
        if name not in tables:
            raise RegistryError(f"Unknown table {name!r}; choose one of {sorted(tables)}.")
        t = tables[name]
        cols = [c for c in t.c if c.name not in ("state", "quantiles")]
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(select(*cols).where(t.c.twin_id == twin_id)).mappings().all())

    def provenance(self, twin_id: str) -> ProvDocument:
        """The twin's history as a W3C PROV document: versions, the data each assimilated,
        forecasts, scores and recorded decisions (see :mod:`twinloop.store.provenance`)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(twins).where(twins.c.id == twin_id)).mappings().first()
            if row is None:
                raise RegistryError(f"No twin {twin_id!r} in {self.where}.")
            rows = conn.execute(select(versions).where(versions.c.twin_id == twin_id)).mappings().all()
            version_rows = [
                {**{k: v for k, v in r.items() if k != "state"}, "ensemble_sha256": _ensemble_sha256(r["state"])}
                for r in rows
            ]
            fc_rows = [
                {**{k: v for k, v in r.items() if k != "quantiles"}, "quantiles_sha256": _sha256(r["quantiles"])}
                for r in conn.execute(select(forecasts).where(forecasts.c.twin_id == twin_id)).mappings().all()
            ]
        return TwinProvenance(
            dict(row),
            pd.DataFrame(version_rows),
            self.table("observations", twin_id),
            self.table("doses", twin_id),
            pd.DataFrame(fc_rows),
            self.table("audit", twin_id),
        ).document()

    def version_identity(self, twin_id: str, version: int | None = None) -> str:
        """The content hash naming a twin version (the current one by default) in PROV graphs."""
        with self.engine.connect() as conn:
            current = conn.execute(select(twins.c.current_version).where(twins.c.id == twin_id)).scalar()
            if current is None:
                raise RegistryError(f"No twin {twin_id!r} in {self.where}.")
            row = (
                conn.execute(
                    select(versions).where(
                        versions.c.twin_id == twin_id, versions.c.version == (current if version is None else version)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise RegistryError(f"Twin {twin_id!r} has no version {version}; its versions are 1 to {current}.")
        return version_sha256(row, _ensemble_sha256(row["state"]))

    def twins(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(select(twins)).mappings().all())
