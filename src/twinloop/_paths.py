"""Names that become file names, and paths read from specs.

A leaf module like ``_config``. :func:`check_name` holds a twin, product or
subject name to :data:`NAME_PATTERN` (letters, digits, ``.``, ``_``, ``-``; no
separators, no leading dot), so a name never leaves the folder it is written
into. :func:`spec_path` resolves a relative path written in a spec inside the
spec's folder and refuses one that climbs out of it.
"""

from __future__ import annotations

import re
from pathlib import Path

from twinloop.errors import InputError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"


def check_name(field: str, value: object) -> str:
    """``value`` if it is a safe file-name component; else :class:`InputError`."""
    if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
        raise InputError(
            f"{field} is {value!r}; it becomes a file name, so it must be {NAME_RULE}. Choose another name, "
            "e.g. 'patient-001'."
        )
    return value


def spec_path(folder: str | Path, value: object, field: str) -> Path:
    """The path ``value`` written in a spec in ``folder``: absolute as given, relative ones
    inside ``folder`` (``..`` may not climb out of it)."""
    if not isinstance(value, str | Path) or not str(value).strip():
        raise InputError(f"{field} must be a file path; got {type(value).__name__}.")
    path = Path(value)
    if path.is_absolute():
        return path
    base = Path(folder).resolve()
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(base):
        raise InputError(
            f"{field} is {str(value)!r}, which leads outside the spec's folder '{base}'; move the file into "
            "that folder (or a subfolder) or give its absolute path."
        )
    return resolved


def check_output(path: Path, option: str, kind: str = "file") -> None:
    """Refuse an output ``path`` that cannot be written as a ``kind`` ("file" or "folder"):
    one lying under a file, a folder where a file is wanted (or the reverse), or one whose
    nearest existing folder is not writable. Nothing is created."""
    import os

    if kind == "folder" and path.exists() and not path.is_dir():
        raise InputError(f"{option} '{path}' is a file; give a folder (it is created if missing).")
    if kind == "file" and path.is_dir():
        raise InputError(f"{option} '{path}' is a folder; give a file path in it, e.g. '{path / 'result'}'.")
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"{option} '{path}' lies under the file '{folder}'; give a path in a folder.")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise InputError(f"{option} '{path}': the folder '{folder}' is not writable; choose another {option}.")
            return
