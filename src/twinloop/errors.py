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


class DataError(InputError):
    """Patient data could not be ingested; ``rejected`` lists every bad record and why."""

    def __init__(self, message: str, rejected: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.rejected = list(rejected or [])


class CalibrationError(TwinloopError, RuntimeError):
    """A calibration failed its diagnostics or could not run."""


class NotFittedError(TwinloopError, RuntimeError):
    """An object was used before the call that fits it."""


class RegistryError(TwinloopError, RuntimeError):
    """The twin registry cannot do what was asked (unknown twin, conflicting write)."""


class DataWarning(UserWarning):
    """Data were read, but in a way the user should check (e.g. a mostly empty rate column)."""
