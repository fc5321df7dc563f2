"""Atomic file writes: a temporary file in the target's folder, then a rename.

A leaf module like ``_config``: every writer in twinloop (products, trajectories,
reports, provenance, the CLI) writes through :func:`write_atomic`, so a failure
never leaves half a file where a whole one is expected.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], write: Callable[..., Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The folder is created if missing; the file gets the permissions the umask allows
    (not the private ones of a temporary file). On any failure the temporary file is
    removed and ``path`` is left as it was.

    Example:
        >>> write_atomic("out/summary.json", lambda tmp: Path(tmp).write_text("{}"))  # doctest: +SKIP
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_folder_atomic(path: str | os.PathLike[str], fill: Callable[[Path], Any]) -> Path:
    """Call ``fill(tmp)`` on a new temporary folder beside ``path``, then rename it to ``path``.

    ``path`` must not exist or be an empty folder (it is replaced). On any failure the
    temporary folder is removed and ``path`` is left as it was, so a reader never finds half
    an artifact folder.

    Example:
        >>> write_folder_atomic("out/trial", lambda tmp: (tmp / "a.json").write_text("{}"))  # doctest: +SKIP
    """
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        fill(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
