"""The Dask chunk runner: chunks as tasks on a ``distributed.Client``'s workers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from twinloop._chunks import peak_rss_bytes
from twinloop.errors import SimulationError

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
R = TypeVar("R")


class DaskRunner:
    """Runs each chunk as one task on the client's cluster, yielding results as they finish.

    ``fn`` must pickle (see :mod:`twinloop._chunks`). Tasks are impure (``pure=False``),
    so a chunk sent twice runs twice. The first failed chunk cancels the rest and raises
    a :class:`~twinloop.errors.SimulationError` naming it.
    """

    def __init__(self, client: Client, where: str) -> None:
        self.client, self.where = client, where

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
        from distributed import as_completed

        items = list(items)
        if not items:
            return
        run = uuid.uuid4().hex[:8]
        keys = [f"twinloop-chunk-{item}-{run}" for item in items]
        futures = self.client.map(fn, items, key=keys, pure=False)
        item_of = {future.key: item for future, item in zip(futures, items, strict=True)}
        try:
            for future in as_completed(futures):
                item = item_of[future.key]
                try:
                    result = future.result()
                except Exception as exc:
                    raise SimulationError(
                        f"Chunk {item} failed on the Dask cluster ({type(exc).__name__}: {exc}); the chunks finished "
                        "before it are kept, so fix the cause and run again with --resume."
                    ) from exc
                future.release()
                yield item, result
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def worker_peak_rss_bytes(self) -> dict[str, int]:
        """Each worker's peak resident memory since it started, by worker address."""
        return {str(k): int(v) for k, v in self.client.run(peak_rss_bytes).items()}
