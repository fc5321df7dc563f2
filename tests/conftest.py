"""Shared fixtures. Every random draw in the tests takes an explicit seed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# the user's own model directory stays out of the tests (tests that need one set their own)
os.environ["TWINLOOP_MODELS_DIR"] = os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "no-user-models")
os.environ.setdefault("TWINLOOP_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "twinloop"))

import twinloop as tl

# The files whose tests take longest go first, so that with two workers (pytest-xdist,
# ``--dist loadfile``, as `make test` runs) neither is left alone with a long file at the end.
LONGEST_FIRST = ("test_cli.py", "test_amortized.py", "test_heldout.py", "test_learn.py", "test_twin.py",
                 "test_calibrate.py", "test_govern.py", "test_models.py")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the other files keep their order


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code() -> Iterator[None]:
    """Drop compiled XLA executables after each test module.

    Every loaded CPU executable holds memory mappings; one process running the whole
    suite passes the kernel's limit (vm.max_map_count, 65,530 by default) and the next
    executable to load aborts the interpreter. Clearing the caches keeps one process
    at the size of its largest module."""
    yield
    import gc

    import jax

    from twinloop.calibrate import bayes
    from twinloop.simulate import engine

    engine._COMPILED.clear()
    bayes._COMPILED_NUTS.clear()
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def t1d() -> tl.models.Model:
    return tl.models.get("t1d-uva-padova")


@pytest.fixture(scope="session")
def pk() -> tl.models.Model:
    return tl.models.get("pk-one-compartment")


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on loopback for the session (``make test`` installs
    the Debian package when it is missing). Skipped only if no server binaries exist."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (make test installs the postgresql package)")
    root = Path(tempfile.mkdtemp(prefix="twinloop-pg-"))  # directly under /tmp: the server's account can enter it
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the postgres account
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "twinloop"], check=True,
                   capture_output=True)  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
                    "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg://twinloop@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
