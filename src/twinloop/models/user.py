"""A user's own models: the model directory, and loading the files kept in it.

The model directory is found again by every command, in this order:

1. ``TWINLOOP_MODELS_DIR``, when it is set;
2. ``./.twinloop/models``, a project's directory, when it exists in the working directory;
3. the user's data directory, ``$XDG_DATA_HOME/twinloop/models``
   (``~/.local/share/twinloop/models`` when ``XDG_DATA_HOME`` is unset).

It holds one file per model, named for the model's id: ``<id>.py`` (a Python model file)
or ``<id>.xml`` (an SBML file). A Python model file is the user's own code, trusted like
an installed plugin: looking the model up imports it. It defines ``build() -> Model`` or a
``MODEL`` and must declare the id its file is named for. An SBML file is data: it is only
ever read by the SBML importer (:func:`twinloop.models.sbml.load_sbml`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from twinloop._atomic import write_atomic
from twinloop.errors import InputError, ModelError
from twinloop.models.base import Model

MODEL_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MODEL_ID_RULE = "1 to 64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
SUFFIXES = {".py": "python", ".xml": "sbml"}
_MODULE_PREFIX = "twinloop_user_model_"


def check_model_id(value: object, field: str = "the model id") -> str:
    """``value`` if it is a valid model id (it becomes a file name); else :class:`InputError`."""
    if not isinstance(value, str) or MODEL_ID_PATTERN.fullmatch(value) is None or ".." in value:
        raise InputError(
            f"{field} is {value!r}; a model id becomes a file name, so it must be {MODEL_ID_RULE} "
            "(and no '..'). Choose another id, e.g. 'lorenz63'."
        )
    return value


def models_dir() -> Path:
    """The model directory (see the module's docstring for the order it is looked for in)."""
    configured = os.environ.get("TWINLOOP_MODELS_DIR")
    if configured:
        return Path(configured).expanduser()
    project = Path.cwd() / ".twinloop" / "models"
    if project.is_dir():
        return project
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "twinloop" / "models"


def directory_files(directory: Path | None = None) -> dict[str, list[Path]]:
    """Model id -> the model files for it in the model directory (more than one is a conflict).

    Files whose names are not ``<valid id>.py`` or ``<valid id>.xml`` (temporary files,
    notes) are not models and are left out. Nothing is imported or parsed.
    """
    folder = models_dir() if directory is None else directory
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    try:
        paths = sorted(folder.iterdir())
    except OSError as exc:  # unreadable: its models are missing, the built-ins still work
        warnings.warn(f"The model directory '{folder}' cannot be read ({exc}); its models are left out.", stacklevel=2)
        return found
    for path in paths:
        if path.suffix in SUFFIXES and MODEL_ID_PATTERN.fullmatch(path.stem) and path.is_file():
            found.setdefault(path.stem, []).append(path)
    return found


def as_model(value: Any, origin: str, model_id: str | None) -> Model:
    """``value`` (a ``Model`` or a callable returning one) as a ``Model`` whose id is ``model_id``."""
    if not isinstance(value, Model) and callable(value):
        try:
            value = value()
        except Exception as exc:  # the user's code may raise anything
            raise ModelError(f"{origin}: building the model failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, Model):
        raise ModelError(
            f"{origin} gives a {type(value).__name__}, not a twinloop Model; return "
            "twinloop.models.Model(...) from build()."
        )
    if model_id is not None and value.id != model_id:
        raise ModelError(
            f"{origin} declares the model id '{value.id}', not '{model_id}'; make the two the same "
            f"(Model(id='{model_id}', ...) in the file, or --id {value.id})."
        )
    return value


def load_python_file(path: str | Path, model_id: str | None = None) -> Model:
    """Import the Python model file ``path`` and return the model it defines.

    The file is the user's own code and is executed like an installed plugin. It defines
    ``build() -> Model`` (preferred) or a module-level ``MODEL``.

    Arguments:
        path: the ``.py`` file.
        model_id: the id the model must declare (``None``: any valid id).

    Raises:
        ModelError: the file cannot be imported, defines neither ``build`` nor ``MODEL``,
            builds something that is not a ``Model``, or declares another id.
    """
    file = Path(path)
    origin = f"Model file '{file}'"
    if not file.is_file():
        raise InputError(f"{origin} does not exist; give the path of a .py file that defines build().")
    digest = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    name = f"{_MODULE_PREFIX}{re.sub(r'[^0-9A-Za-z_]', '_', file.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ModelError(f"{origin} cannot be imported as a Python module; give a .py file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a syntax error, a missing import, ...
        sys.modules.pop(name, None)
        raise ModelError(f"{origin} failed to import: {type(exc).__name__}: {exc}") from exc
    builder = getattr(module, "build", None) or getattr(module, "MODEL", None)
    if builder is None:
        sys.modules.pop(name, None)
        raise ModelError(f"{origin} defines neither build() nor MODEL; add `def build() -> Model: ...`.")
    try:
        model = as_model(builder, origin, model_id)
    except ModelError:
        sys.modules.pop(name, None)
        raise
    if model_id is None:
        check_model_id(model.id, f"the id declared by {origin}")
    return model


def load_sbml_file(path: str | Path, model_id: str | None = None) -> Model:
    """Read the SBML file ``path`` with the SBML importer; the model gets ``model_id`` if given.

    Raises:
        ModelError: the importer is missing, or refuses the file (naming the element).
    """
    try:
        from twinloop.models.sbml import load_sbml
    except ImportError as exc:
        raise ModelError(
            f"SBML file '{path}' cannot be read: this installation has no SBML importer "
            f"(twinloop.models.sbml: {exc}). Install twinloop with its SBML support."
        ) from exc
    model = load_sbml(path, model_id=model_id)
    return as_model(model, f"SBML file '{path}'", model_id)


def load_file(path: Path, model_id: str | None = None) -> Model:
    """The model in a model file, by its suffix (``.py``: Python, ``.xml``: SBML)."""
    kind = SUFFIXES.get(path.suffix)
    if kind == "python":
        return load_python_file(path, model_id)
    if kind == "sbml":
        return load_sbml_file(path, model_id)
    raise InputError(f"Model file '{path}' ends in '{path.suffix}'; give a .py (Python) or .xml (SBML) file.")


def store_file(source: Path, model_id: str, *, replace: bool = False) -> Path:
    """Copy ``source`` into the model directory as ``<model_id><suffix>``, atomically.

    With ``replace``, an existing file of this id (of either kind) is replaced; without
    it, one is refused. A failure leaves the directory as it was.
    """
    check_model_id(model_id)
    folder = models_dir()
    existing = directory_files(folder).get(model_id, [])
    if existing and not replace:
        raise InputError(
            f"The model directory '{folder}' already has a model '{model_id}' ({existing[0].name}); "
            "add --force to replace it, or choose another id with --id."
        )
    target = folder / f"{model_id}{source.suffix}"
    try:
        write_atomic(target, lambda tmp: shutil.copyfile(source, tmp))
    except OSError as exc:
        raise InputError(f"The model directory '{folder}' cannot be written: {exc}; set TWINLOOP_MODELS_DIR.") from exc
    for other in existing:
        if other != target:
            other.unlink(missing_ok=True)
    return target


def remove_files(model_id: str) -> list[Path]:
    """Delete the files of ``model_id`` from the model directory; the paths deleted.

    Raises:
        InputError: the directory has no model of this id.
    """
    check_model_id(model_id)
    folder = models_dir()
    files = directory_files(folder).get(model_id, [])
    if not files:
        raise InputError(f"The model directory '{folder}' has no model '{model_id}'; see `twinloop models list`.")
    for path in files:
        path.unlink()
    return files
