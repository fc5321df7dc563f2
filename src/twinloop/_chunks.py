"""Where the chunks of a long run are computed: the runner protocol.

A leaf module like ``_atomic``: products (and anything else that works chunk by chunk)
hand their chunks to a :class:`ChunkRunner` without knowing where it runs them. The
in-process runner is here; ``twinloop.scale`` supplies the Dask ones (a ``LocalCluster``
with one worker process per core, or an existing cluster's scheduler).

A chunk function given to a runner that is not in-process must be picklable: a
top-level function, or an instance of a top-level class whose fields pickle (specs as
plain data, not model objects or closures), and it must write its results where the
caller can read them (a shared file system) or return them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ChunkRunner(Protocol):
    """Runs ``fn`` on each item, yielding ``(item, fn(item))`` in the order the chunks finish.

    ``where`` says in words where the chunks run (printed by the CLI). A failed chunk raises
    an error naming it, and chunks not yet started are not run.
    """

    where: str

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]: ...

    def worker_peak_rss_bytes(self) -> dict[str, int]:
        """Peak resident memory of each worker process (empty when the chunks run in this process)."""
        ...


class InProcessRunner:
    """Runs the chunks one after another in this process.

    Example:
        >>> list(InProcessRunner().map(lambda k: k * k, [1, 2, 3]))
        [(1, 1), (2, 4), (3, 9)]
    """

    where = "in this process"

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
        for item in items:
            yield item, fn(item)

    def worker_peak_rss_bytes(self) -> dict[str, int]:
        return {}


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes (Linux and macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
