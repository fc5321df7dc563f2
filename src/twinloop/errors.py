"""Domain exceptions. The edges (CLI, service) map them to exit codes and statuses."""

from __future__ import annotations


class TwinloopError(Exception):
    """Base class of every error twinloop raises on purpose."""


class ModelError(TwinloopError, ValueError):
    """A model is unknown, or its specification is inconsistent."""


class InputError(TwinloopError, ValueError):
    """Inputs, parameters or data given by the user are invalid."""


class SimulationError(TwinloopError, RuntimeError):
    """A simulation could not be carried out as asked."""
