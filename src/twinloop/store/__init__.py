"""Persistence: the twin registry (SQLAlchemy; SQLite by default, PostgreSQL by URL), a
repository of rows and state blobs the twin loads, syncs and saves itself through
(:class:`twinloop.twin.RegisteredTwins`)."""

from typing import TYPE_CHECKING

from twinloop._lazy import attach

if TYPE_CHECKING:
    from twinloop.store.registry import TwinRegistry as TwinRegistry

__getattr__, __dir__, __all__ = attach(__name__, __file__)
