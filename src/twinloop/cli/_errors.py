"""How the CLI reports a refused command: one mapper from exceptions to exit codes.

:func:`refusal` decides, for any exception that escaped a command, whether the command
was refused (a :class:`~twinloop.errors.TwinloopError` the code meant, or the system's
refusal of a named file: permission denied, disk full), which prints one ``error:``
line and exits with :data:`EXIT_REFUSED`, or hit a bug (:data:`EXIT_BUG`). The root
guard (:mod:`twinloop.cli._guard`) applies it to every command, so commands raise
domain errors and never catch them to print them.

The message is printed to stderr as plain text, never as Rich markup, because it
quotes what the user gave (names, paths, formulas): ``[/bold]`` in a twin name
must not crash the printer, ``[link=...]`` must not become a link and ``:x:``
must not become an emoji. Passwords in it are masked first (:mod:`twinloop._secrets`).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

EXIT_REFUSED = 2  # the command refused its input or the system refused a file
EXIT_BUG = 1  # twinloop failed unexpectedly
EXIT_CHECK_FAILED = 1  # the command ran and what it checked failed (e.g. a model's contract)

errors = Console(stderr=True)


def print_error(message: str) -> None:
    """Print ``error: message`` to stderr: secrets masked, no markup, never wrapped."""
    from twinloop._secrets import mask_secrets

    errors.print(Text.assemble(("error:", "bold red"), " ", mask_secrets(str(message))), highlight=False,
                 soft_wrap=True)  # fmt: skip


def refusal(exc: BaseException) -> str | None:
    """The one line to print when ``exc`` refuses a command, or ``None`` when it is a bug."""
    from twinloop.errors import TwinloopError

    if isinstance(exc, TwinloopError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:  # the system refused: permissions, disk full
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}; check the path and its permissions."
    return None


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` (secrets masked, no markup) and return the exit to raise."""
    print_error(message)
    return typer.Exit(code=EXIT_REFUSED)
