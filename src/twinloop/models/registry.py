"""The explicit registry of built-in models: one line per model."""

from __future__ import annotations

from collections.abc import Callable

from twinloop.errors import ModelError
from twinloop.models.base import Model
from twinloop.models.pk_one_compartment import build as _pk_one_compartment
from twinloop.models.pk_two_compartment import build as _pk_two_compartment
from twinloop.models.t1d_uva_padova import build as _t1d_uva_padova
from twinloop.models.tgi_claret import build as _tgi_claret
from twinloop.models.tgi_simeoni import build as _tgi_simeoni
from twinloop.models.tgi_stein import build as _tgi_stein

_BUILDERS: dict[str, Callable[[], Model]] = {
    "t1d-uva-padova": _t1d_uva_padova,
    "pk-one-compartment": _pk_one_compartment,
    "pk-two-compartment": _pk_two_compartment,
    "tgi-claret": _tgi_claret,
    "tgi-claret-2cmt": lambda: _tgi_claret(compartments=2),
    "tgi-stein": _tgi_stein,
    "tgi-simeoni": _tgi_simeoni,
}
_CACHE: dict[str, Model] = {}


def available() -> list[str]:
    """Return the ids of all registered models, sorted."""
    return sorted(_BUILDERS)


def get(model_id: str) -> Model:
    """Return the registered model with this id (built once, then cached).

    Raises:
        ModelError: if no model has this id.
    """
    if model_id not in _BUILDERS:
        raise ModelError(f"Unknown model '{model_id}'; available models: {', '.join(available())}.")
    if model_id not in _CACHE:
        _CACHE[model_id] = _BUILDERS[model_id]()
    return _CACHE[model_id]


def register(model_id: str, builder: Callable[[], Model]) -> None:
    """Register a user model under ``model_id`` (its builder is called lazily)."""
    if model_id in _BUILDERS:
        raise ModelError(f"A model with id '{model_id}' is already registered; choose another id.")
    _BUILDERS[model_id] = builder
