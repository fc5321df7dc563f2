"""The top-level guard of every ``twinloop`` command.

A refusal the code meant (any :class:`~twinloop.errors.TwinloopError` that escaped its
command) or the system's (an ``OSError`` on a named file: permission denied, disk full)
is printed as one ``error:`` line with exit code 2 (the mapping is
:func:`twinloop.cli._errors.refusal`, the only one). Anything else is a bug in
twinloop: one line says so and where its traceback was written, and the exit code is 1.
``twinloop --debug ...`` (or ``TWINLOOP_DEBUG=1``) lets the exception through instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from twinloop.cli._errors import EXIT_BUG, fail, print_error, refusal

# Typer's own exits, aborts and usage errors (it carries its own copy of click) keep their meaning
_PASSED_THROUGH = (TyperException, typer.Exit, typer.Abort, KeyboardInterrupt)


def debugging(ctx: typer.Context) -> bool:
    """Whether ``--debug`` was given (or ``TWINLOOP_DEBUG`` is set to a true value)."""
    env = os.environ.get("TWINLOOP_DEBUG", "").strip().lower()
    return bool(ctx.params.get("debug")) or env in ("1", "true", "yes", "on")


def write_crash_report(exc: BaseException, argv: list[str]) -> Path:
    """Write the traceback (secrets masked) to a new file in the system's temporary folder."""
    from twinloop._secrets import mask_secrets

    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"twinloop-crash-{stamp}-", suffix=".txt")
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    header = f"twinloop crashed running: twinloop {' '.join(argv)}\n\n"
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(mask_secrets(header + text))
    return Path(name)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class GuardedGroup(TyperGroup):
    """The root command group: turns escaped exceptions into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context's base (its own copy of click's)
        argv = [*getattr(ctx, "_protected_args", sys.argv[1:]), *ctx.args]  # the command line, for the report
        try:
            return super().invoke(ctx)
        except _PASSED_THROUGH:
            raise
        except Exception as exc:
            if debugging(ctx):
                raise
            message = refusal(exc)
            if message is not None:
                raise fail(message) from None
            report = write_crash_report(exc, argv)
            print_error(
                f"twinloop failed unexpectedly; this is a bug, please report it ({type(exc).__name__}: "
                f"{one_line(str(exc))}). The traceback is in {report}; rerun with --debug to see it here."
            )
            raise typer.Exit(code=EXIT_BUG) from None
