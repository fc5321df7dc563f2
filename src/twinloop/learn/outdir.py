"""The folder a learn job writes its artifact into: new or empty, and gone again if the job fails.

:func:`check_out` refuses an ``--out`` that is a file, lies under a file, already
holds files or cannot be created; :func:`artifact_folder` runs a job with that folder
and, if the job fails in any way, removes what it created, so a retry with the same
``--out`` starts clean and no half-written artifact is left to be mistaken for one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from twinloop.errors import InputError


def check_out(out: Path, option: str = "--out") -> Path | None:
    """Refuse an unusable ``out``; return the first of its folders that does not exist yet
    (``None`` when ``out`` exists and is empty)."""
    from twinloop._paths import check_output

    check_output(out, option, "folder")
    first_new = next((p for p in (*reversed(out.parents), out) if not p.exists()), None)
    if out.is_dir() and any(out.iterdir()):
        raise InputError(
            f"{option} '{out}' already holds files; choose a new folder for the artifact or delete that one."
        )
    return first_new


@contextmanager
def artifact_folder(out: Path, option: str = "--out") -> Iterator[Path]:
    """``out`` checked; whatever the job wrote there is removed if it raises."""
    first_new = check_out(out, option)
    try:
        yield out
    except BaseException:
        if first_new is not None:
            shutil.rmtree(first_new, ignore_errors=True)
        elif out.is_dir():
            for child in out.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        raise
