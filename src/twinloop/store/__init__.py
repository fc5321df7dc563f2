"""Persistence: the twin registry (SQLAlchemy; SQLite by default, PostgreSQL by URL)."""

from twinloop.store.registry import TwinRegistry as TwinRegistry
