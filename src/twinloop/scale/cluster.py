"""Opening a chunk runner: this process, a local cluster of one worker per core, or a scheduler.

Each local worker is one process with one thread (the engine's compiled solves use one
core per process), so ``n`` workers use ``n`` cores; the workers share this process's
persistent compilation cache (``TWINLOOP_CACHE_DIR``), so a solve compiled once is
loaded, not compiled again, by the others. Workers of an existing cluster are started by whoever
runs it; ``docs/scale.md`` shows the environment they should have.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twinloop._chunks import ChunkRunner, InProcessRunner
from twinloop.errors import InputError

MIN_PATIENTS = 20_000
"""Without a predicted wall time, a run of fewer patients stays in this process: two local
workers take ~8 s to start and ~20 s more to import twinloop and load the compiled solves
(measured on the 2-core machine under load), so a run must last well over that in one
process to gain (a 4,000-patient day: 8.6 s in-process, 6.2 s on two warm workers, 34 s
including their start-up)."""
MIN_WALL_S = 30.0
"""With a predicted in-process wall time, a shorter run stays in this process."""
CONNECT_TIMEOUT_S = 10
WORKERS_TIMEOUT_S = 30
ADDRESS = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):([0-9]{1,5})$")


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(chunks: int, patients: int, *, predicted_wall_s: float | None = None) -> int:
    """How many local worker processes a run of ``chunks`` chunks should get by default.

    One per core (at most one per chunk) when there is more than one core, at least two
    chunks, and the run is worth a cluster's start-up: a predicted in-process wall time of
    at least :data:`MIN_WALL_S` when one is given, else at least :data:`MIN_PATIENTS`
    patients. Otherwise 1 (in this process).

    Example:
        >>> default_workers(1, 100_000)
        1
    """
    n = min(cores(), chunks)
    if n < 2:
        return 1
    worth = predicted_wall_s >= MIN_WALL_S if predicted_wall_s is not None else patients >= MIN_PATIENTS
    return n if worth else 1


def check_workers(workers: Any, field: str = "--workers") -> int:
    """``workers`` as a whole number >= 1, or an InputError naming ``field``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(
            f"{field} must be a whole number >= 1 (worker processes, one core each; 1 runs in this process); "
            f"got {workers!r}."
        )
    return workers


def check_scheduler(address: Any, field: str = "--scheduler") -> str:
    """A Dask scheduler address ``tcp://host:port`` (or ``tls://``), or an InputError naming ``field``."""
    match = ADDRESS.match(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match.group(4)) <= 65535:
        raise InputError(
            f"{field} must be a Dask scheduler address such as tcp://127.0.0.1:8786 (tcp:// or tls://, a host and "
            f"a port from 1 to 65535, as `dask scheduler` prints it); got {address!r}."
        )
    return str(address)


@contextmanager
def open_runner(workers: int | None = None, scheduler: str | None = None) -> Iterator[ChunkRunner]:
    """A chunk runner for the duration of the ``with`` block; a cluster it started is shut down after.

    Arguments:
        workers: local worker processes (one thread each); 1 runs the chunks in this
            process; default one per core (:func:`cores`).
        scheduler: the address of an existing cluster's scheduler (``tcp://host:port``);
            its workers must see the output folder at the same path (a shared file system)
            and have the same twinloop installed.

    Raises:
        InputError: a bad ``workers`` or ``scheduler``, both given, no scheduler answering
            at the address, or a cluster without workers.

    Example:
        >>> with open_runner(workers=1) as runner:
        ...     runner.where
        'in this process'
    """
    if workers is not None:
        check_workers(workers)
    if scheduler is not None:
        address = check_scheduler(scheduler)
        if workers is not None:
            raise InputError(
                f"Give either --workers ({workers}) or --scheduler ({address}), not both: a cluster's workers are "
                "started with it (`dask worker ADDRESS`)."
            )
        with _remote(address) as runner:
            yield runner
        return
    n = cores() if workers is None else workers
    if n == 1:
        yield InProcessRunner()
        return
    with _local(n) as runner:
        yield runner


@contextmanager
def _remote(address: str) -> Iterator[ChunkRunner]:
    from distributed import Client

    from twinloop.scale.runner import DaskRunner

    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"--scheduler {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s ({exc}); check the "
            "address, or start one with `dask scheduler`."
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise InputError(
                f"--scheduler {address}: the cluster has no workers after {WORKERS_TIMEOUT_S} s; start some with "
                f"`dask worker {address} --nthreads 1`."
            ) from None
        n = len(client.scheduler_info().get("workers", {}))
        yield DaskRunner(client, f"on the Dask cluster at {address} ({n} worker{'s' if n != 1 else ''})")


def worker_env() -> dict[str, str]:
    """The environment of a local worker: this process's compilation cache, no progress bars.

    XLA_FLAGS is left as it is: the engine's compiled solves run on one core per process
    already (measured: CPU time = wall time), and the flags are part of JAX's cache key,
    so workers with other flags would compile every solve again instead of loading it.
    """
    from twinloop._config import cache_dir

    return {
        "TWINLOOP_CACHE_DIR": str(cache_dir().parent),
        "TWINLOOP_PROGRESS": "0",
        "OMP_NUM_THREADS": "1",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # workers sharing one GPU take memory as they need it
    }


@contextmanager
def _local(n: int) -> Iterator[ChunkRunner]:
    from distributed import Client, LocalCluster

    from twinloop.scale.runner import DaskRunner

    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR, env=worker_env())  # fmt: skip
    with cluster, Client(cluster) as client:
        yield DaskRunner(client, f"on {n} local Dask worker processes (one core each)")
