"""Where models are found: the built-ins, the user's model directory, and installed plugins.

:func:`get` looks an id up among

1. the built-in models (one line each in ``BUILTINS``) and those registered in this
   session with :func:`register`;
2. the model directory (:mod:`twinloop.models.user`): ``<id>.py`` and ``<id>.xml`` files;
3. the entry points of group ``twinloop.models`` of installed distributions (name: the
   model id; value: a ``Model`` or a callable returning one).

An id found in more than one place is refused with a message naming each place. Listing
ids (:func:`available`, :func:`sources`) imports no model module and builds no model:
it reads the built-in table, the directory's file names and the installed packages'
entry-point metadata. A model is built on first lookup and cached (a directory model
until its file changes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from twinloop.errors import ModelError, TwinloopError
from twinloop.models.base import Model
from twinloop.models.user import MODEL_ID_PATTERN, directory_files, load_file, models_dir

ENTRY_POINT_GROUP = "twinloop.models"

# id -> (module, builder, keyword arguments); the module is imported on first lookup.
BUILTINS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "t1d-uva-padova": ("twinloop.models.t1d_uva_padova", "build", {}),
    "pk-one-compartment": ("twinloop.models.pk_one_compartment", "build", {}),
    "pk-two-compartment": ("twinloop.models.pk_two_compartment", "build", {}),
    "tgi-claret": ("twinloop.models.tgi_claret", "build", {}),
    "tgi-claret-2cmt": ("twinloop.models.tgi_claret", "build", {"compartments": 2}),
    "tgi-stein": ("twinloop.models.tgi_stein", "build", {}),
    "tgi-simeoni": ("twinloop.models.tgi_simeoni", "build", {}),
}
_REGISTERED: dict[str, Callable[[], Model]] = {}
_CACHE: dict[tuple[Any, ...], Model] = {}
_ENTRY_POINTS: dict[tuple[str, ...], list[Any]] = {}

Kind = Literal["built-in", "registered", "directory", "entry point"]


@dataclass(frozen=True)
class ModelSource:
    """Where one model id comes from: its kind and, for files and plugins, where exactly."""

    model_id: str
    kind: Kind
    where: str = ""
    path: Path | None = None

    def describe(self) -> str:
        """``directory (/path/lorenz63.py)``, ``entry point (my-plugin 1.0: pkg:build)``, ``built-in``."""
        return f"{self.kind} ({self.where})" if self.where else self.kind


def _entry_points() -> list[Any]:
    """The installed entry points of the group (read again whenever ``sys.path`` changes)."""
    import sys
    from importlib.metadata import entry_points

    key = tuple(sys.path)
    if key not in _ENTRY_POINTS:
        _ENTRY_POINTS.clear()
        _ENTRY_POINTS[key] = list(entry_points(group=ENTRY_POINT_GROUP))
    return _ENTRY_POINTS[key]


def _entry_point_origin(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    package = f"{dist.name} {dist.version}: " if dist is not None else ""
    return f"{package}{ep.value}"


def all_sources() -> dict[str, list[ModelSource]]:
    """Every id found, with every place it is found in (two or more: a collision)."""
    found: dict[str, list[ModelSource]] = {}
    for model_id in BUILTINS:
        found.setdefault(model_id, []).append(ModelSource(model_id, "built-in"))
    for model_id in _REGISTERED:
        found.setdefault(model_id, []).append(ModelSource(model_id, "registered", "twinloop.models.register"))
    for model_id, paths in directory_files().items():
        for path in paths:
            found.setdefault(model_id, []).append(ModelSource(model_id, "directory", str(path), path))
    for ep in _entry_points():
        if MODEL_ID_PATTERN.fullmatch(ep.name):
            found.setdefault(ep.name, []).append(ModelSource(ep.name, "entry point", _entry_point_origin(ep)))
    return found


def sources() -> dict[str, ModelSource]:
    """Id -> where the model comes from, for every id found exactly once (imports no model)."""
    return {model_id: places[0] for model_id, places in sorted(all_sources().items()) if len(places) == 1}


def conflicts() -> dict[str, list[ModelSource]]:
    """The ids found in more than one place; :func:`get` refuses them."""
    return {model_id: places for model_id, places in sorted(all_sources().items()) if len(places) > 1}


def available() -> list[str]:
    """Return the ids of all models that can be looked up, sorted (builds none of them)."""
    return sorted(sources())


def source(model_id: str) -> ModelSource:
    """Where the model ``model_id`` comes from.

    Raises:
        ModelError: no model has this id, or more than one place defines it.
    """
    places = all_sources().get(model_id, [])
    if not places:
        raise ModelError(
            f"Unknown model '{model_id}'; available models: {', '.join(available())}. Add your own with "
            "`twinloop models add FILE.py` or `twinloop models import FILE.xml`."
        )
    if len(places) > 1:
        listed = "; ".join(place.describe() for place in places)
        raise ModelError(
            f"The model id '{model_id}' is defined {len(places)} times ({listed}); ids must be unique: "
            "remove or rename all but one (a directory model with `twinloop models remove`)."
        )
    return places[0]


def _build(place: ModelSource) -> Model:
    from twinloop.models.user import as_model

    if place.kind == "built-in":
        module, attribute, kwargs = BUILTINS[place.model_id]
        return getattr(importlib.import_module(module), attribute)(**kwargs)
    if place.kind == "registered":
        return as_model(_REGISTERED[place.model_id], f"Registered model '{place.model_id}'", None)
    if place.kind == "directory":
        assert place.path is not None
        return load_file(place.path, place.model_id)
    (ep,) = [ep for ep in _entry_points() if ep.name == place.model_id]
    origin = f"Entry point '{place.model_id}' ({place.where})"
    try:
        value = ep.load()
    except Exception as exc:  # a plugin may fail in any way
        raise ModelError(f"{origin} failed to load: {type(exc).__name__}: {exc}") from exc
    return as_model(value, origin, place.model_id)


def _cache_key(place: ModelSource) -> tuple[Any, ...]:
    if place.path is None:
        return (place.kind, place.model_id, place.where)
    stat = place.path.stat()
    return (place.kind, place.model_id, str(place.path), stat.st_mtime_ns, stat.st_size)


def get(model_id: str) -> Model:
    """Return the model with this id (built once, then cached).

    Raises:
        ModelError: no model has this id, more than one place defines it, or its file or
            plugin does not give a valid model of this id.

    Example:
        >>> import twinloop as tl
        >>> tl.models.get("tgi-stein").time_unit
        'd'
    """
    place = source(model_id)
    key = _cache_key(place)
    if key not in _CACHE:
        _CACHE[key] = _build(place)
    return _CACHE[key]


def get_or_error(model_id: str) -> Model | TwinloopError:
    """The model with this id, or the error that refuses it (for listings that go on)."""
    try:
        return get(model_id)
    except TwinloopError as exc:
        return exc


def register(model_id: str, builder: Callable[[], Model]) -> None:
    """Register a model for this session under ``model_id`` (its builder is called lazily).

    To keep a model for later sessions, add its file to the model directory
    (`twinloop models add FILE.py`) or publish it as an entry point of group ``twinloop.models``.

    Raises:
        ModelError: the id is empty or holds a path separator, or a model with this id exists already.
    """
    if not isinstance(model_id, str) or not model_id.strip() or any(c in model_id for c in "/\\\0"):
        raise ModelError(f"The model id {model_id!r} must be a non-empty name without '/', '\\' or NUL.")
    if model_id in all_sources():
        raise ModelError(f"A model with id '{model_id}' exists already ({source_text(model_id)}); choose another id.")
    _REGISTERED[model_id] = builder


def source_text(model_id: str) -> str:
    """Where ``model_id`` is defined, in words (every place, when several)."""
    return "; ".join(place.describe() for place in all_sources().get(model_id, []))


__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "ModelSource",
    "all_sources",
    "available",
    "conflicts",
    "get",
    "models_dir",
    "register",
    "source",
    "sources",
]
