"""What a twin needs from persistence: a small repository interface.

The twin orchestrates load -> sync -> save (:mod:`twinloop.twin.registered`); a
repository only keeps rows and state blobs. :class:`twinloop.store.TwinRegistry`
implements these protocols (structurally: ``store/`` never imports ``twin/``), and
any other store that does can keep twins too.

A *state* is the mapping :meth:`PatientTwin.state_dict` returns (``meta`` plus
``ensemble``, ``observations``, ``doses``, ``snapshots`` and ``forecasts`` as bytes);
the repository stores it as it is and hands it back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd


class TwinChange(Protocol):
    """One atomic change of one twin, its row locked until the change ends.

    Everything written through it is committed together when the ``with`` block ends,
    or not at all when it raises.
    """

    @property
    def current_version(self) -> int:
        """The twin's current version number (0 while the twin is being created)."""
        ...

    def state(self) -> Mapping[str, Any]:
        """The state of the current version."""
        ...

    def log(self, observations: pd.DataFrame, doses: pd.DataFrame, version: int) -> tuple[int, int]:
        """Append the canonical observation and dose rows not logged before (the same row
        twice is kept once), marked with ``version``; return how many of each were new."""
        ...

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
        """Store a new version (``kind`` "create" or "sync") and make it the current one."""
        ...

    def replace_state(self, version: int, state: Mapping[str, Any]) -> None:
        """Replace the stored state of ``version`` (e.g. after a forecast was added to it)."""
        ...

    def add_forecast(self, forecast_id: str, version: int, hours: float, quantiles: bytes) -> None:
        """Store a forecast made from ``version``: its horizon and its quantile table (Parquet)."""
        ...

    def audit(self, action: str, version: int | None, detail: Mapping[str, Any]) -> None:
        """Append an audit entry (who, what, when) for the twin."""
        ...


class TwinRepository(Protocol):
    """Where twins are kept: rows and state blobs, changed one locked twin at a time."""

    def exists(self, twin_id: str) -> bool:
        """Whether a twin of this id is kept."""
        ...

    def create(
        self, twin_id: str, *, subject_id: str, model_id: str, model_version: str
    ) -> AbstractContextManager[TwinChange]:
        """A change that first adds the twin's row.

        Raises:
            RegistryError: a twin of this id exists already, or the id is not a safe name.
        """
        ...

    def change(self, twin_id: str) -> AbstractContextManager[TwinChange]:
        """A change of an existing twin, its row locked (concurrent changes queue).

        Raises:
            RegistryError: no twin of this id.
        """
        ...

    def state(self, twin_id: str, version: int | None = None) -> Mapping[str, Any]:
        """The stored state of the current (or a given) version.

        Raises:
            RegistryError: no such twin or version.
        """
        ...
