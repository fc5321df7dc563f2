"""The harness of the bad-input corpus (``tests/test_badinput_*.py``).

Every case runs one ``twinloop`` command in-process (Typer's CliRunner) and asserts
what the hardening issue promises of a refused input: the exit code (2 unless said),
one ``error:`` line, no traceback, the offending field named, nothing written in the
watched folders and no registry row changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

from twinloop.cli.app import app

runner = CliRunner()


@dataclass(frozen=True)
class Case:
    """One bad input: the command line and the words its error must contain.

    ``args`` may contain ``{tmp}`` (the case's folder) and ``{db}`` (the registry URL).
    ``names`` are matched case-insensitively against the error line; none of ``absent``
    (e.g. a password) may appear in the output.
    """

    id: str
    args: Sequence[str]
    names: Sequence[str]
    exit_code: int = 2
    files: dict[str, str | bytes] = field(default_factory=dict)
    absent: Sequence[str] = ()

    def __str__(self) -> str:
        return self.id


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` with its size and modification time."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def registry_rows(db_file: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of a SQLite registry file (empty when there is none)."""
    if not db_file.exists():
        return {}
    with sqlite3.connect(db_file) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def write_files(folder: Path, files: dict[str, str | bytes]) -> None:
    """Create a case's input files (text or bytes) under ``folder``."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def check_refused(case: Case, folder: Path, db_file: Path | None = None, watch: Sequence[Path] = ()) -> str:
    """Run ``case`` in ``folder`` and assert it is refused cleanly; returns the error line."""
    write_files(folder, case.files)
    db = f"sqlite:///{db_file}" if db_file is not None else ""
    args = [a.format(tmp=folder, db=db) for a in case.args]
    watched = [folder, *watch]
    before = [tree(w) for w in watched]
    rows = registry_rows(db_file) if db_file is not None else {}
    result = runner.invoke(app, args)
    output = result.output.strip()
    assert result.exit_code == case.exit_code, f"exit {result.exit_code}, expected {case.exit_code}:\n{output}"
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line:\n{output}"
    for name in case.names:
        assert name.lower() in lines[0].lower(), f"{name!r} not named in: {lines[0]}"
    for secret in case.absent:
        assert secret not in output, f"{secret!r} shown in: {output}"
    assert [tree(w) for w in watched] == before, f"files were written or changed:\n{output}"
    if db_file is not None:
        assert registry_rows(db_file) == rows, "registry rows changed"
    return lines[0]
