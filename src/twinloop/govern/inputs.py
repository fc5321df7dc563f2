"""Checking what ``twinloop govern ...`` is given before anything is computed or written.

Each function refuses with one :class:`~twinloop.errors.InputError` (or
:class:`~twinloop.errors.RegistryError`) naming the option, the value, what was
expected and the fix: attack counts, quasi-identifier and secret columns, output
files, the folders of ``learn predictor`` and ``learn posterior`` (a predictor is
verified against its manifest's hash and its task checked), and the twin registry,
which is only read: a SQLite file must exist and hold a twin registry, and a URL's
password never appears in a message.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from twinloop.errors import InputError, RegistryError

MAX_ATTACKS = 100_000


def check_n_attacks(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ATTACKS:
        raise InputError(
            f"--n-attacks is {n!r}; expected a whole number from 1 to {MAX_ATTACKS} (300 is the default). "
            "Give a positive number of attacks."
        )
    return n


MIN_RECORDS = 10


def check_sizes(counts: dict[str, int]) -> None:
    """Each dataset of a privacy evaluation has at least :data:`MIN_RECORDS` patients."""
    for what, n in counts.items():
        if n < MIN_RECORDS:
            raise InputError(
                f"{what} has {n} patients; a privacy evaluation needs at least {MIN_RECORDS} in each set. "
                "Give larger products."
            )


def columns(option: str, given: str | None, available: list[str]) -> list[str] | None:
    """The comma-separated column names of ``option``, each one of ``available`` (``None`` if not given)."""
    if given is None:
        return None
    names = [c.strip() for c in given.split(",")]
    if not names or any(not c for c in names):
        raise InputError(f"{option} is {given!r}; expected column names separated by commas, none empty.")
    unknown = [c for c in names if c not in available]
    if unknown:
        raise InputError(
            f"{option} names {', '.join(repr(c[:40]) for c in unknown[:5])}, not columns of both products' "
            f"per-patient records; choose from {', '.join(available)}."
        )
    return names


def check_file_out(out: Path | None, option: str = "--out") -> None:
    """``out`` can be written as a file: not a folder, not under a file, its folder writable."""
    from twinloop._paths import check_output

    if out is not None:
        check_output(out, option, "file")


def check_predictor(folder: Path) -> str:
    """The task of the predictor saved in ``folder``, after verifying and loading it."""
    from twinloop.learn.predictor import TASKS
    from twinloop.learn.predictor_file import load_predictor

    if not folder.is_dir():
        raise InputError(
            f"--predictor '{folder}' is not a folder; give the --out folder of `twinloop learn predictor`."
        )
    load_predictor(folder)  # hash and allowlist checked before anything is used
    manifest = json.loads((folder / "manifest.json").read_text())
    task = manifest.get("task") if isinstance(manifest, dict) else None
    if task not in TASKS:
        raise InputError(
            f"--predictor '{folder}': its manifest's task is {str(task)[:40]!r}; expected one of "
            f"{', '.join(sorted(TASKS))}. Retrain it with `twinloop learn predictor`."
        )
    return str(task)


def check_posterior(folder: Path) -> None:
    """``folder`` holds what ``twinloop learn posterior`` wrote (its ``sbc.json`` is read)."""
    if not folder.is_dir():
        raise InputError(
            f"--posterior '{folder}' is not a folder; give the --out folder of `twinloop learn posterior`."
        )
    try:
        sbc = json.loads((folder / "sbc.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"--posterior '{folder}' has no sbc.json; give the --out folder of `twinloop learn posterior`."
        ) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise InputError(
            f"--posterior '{folder}': sbc.json is not valid JSON (truncated or corrupt); retrain it with "
            "`twinloop learn posterior`."
        ) from None
    if not isinstance(sbc, dict) or not isinstance(sbc.get("ks_pvalues", {}), dict):
        raise InputError(f"--posterior '{folder}': sbc.json lacks its ks_pvalues mapping; retrain it.")


def registry_url(registry: str) -> str:
    """The SQLAlchemy URL of ``--registry``; a SQLite one must be an existing twin registry."""
    from twinloop._secrets import mask_url

    shown = mask_url(registry)
    scheme, _, rest = registry.partition("://") if "://" in registry else ("", "", registry)
    if scheme and not scheme.startswith("sqlite"):
        return registry  # a server: TwinRegistry reports a failed connection with the password masked
    if scheme and (not rest.startswith("/") or not rest[1:].strip()):
        raise RegistryError(
            f"--registry '{shown}' names no SQLite file; expected sqlite:///path/to/twins.db or the file's path."
        )
    path = Path(rest[1:] if scheme else rest)
    if not path.is_file():
        raise RegistryError(
            f"--registry '{shown}' does not exist; give the SQLite file (or URL) of an existing twin registry."
        )
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        raise RegistryError(f"--registry '{shown}' is not a SQLite database; give a twin registry file.") from None
    if not {"twins", "audit"} <= tables:
        raise RegistryError(
            f"--registry '{shown}' is a SQLite database but not a twin registry (no twins and audit tables); "
            "give the file `twinloop twin create` wrote."
        )
    return f"sqlite:///{path}"
