"""The one way the CLI reports a refused command: ``raise fail(message)``.

The message is printed to stderr as plain text, never as Rich markup, because it
quotes what the user gave (names, paths, formulas): ``[/bold]`` in a twin name
must not crash the printer, ``[link=...]`` must not become a link and ``:x:``
must not become an emoji. Passwords in it are masked first (:mod:`twinloop._secrets`).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

errors = Console(stderr=True)


def print_error(message: str) -> None:
    """Print ``error: message`` to stderr: secrets masked, no markup, never wrapped."""
    from twinloop._secrets import mask_secrets

    errors.print(Text.assemble(("error:", "bold red"), " ", mask_secrets(str(message))), highlight=False,
                 soft_wrap=True)  # fmt: skip


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` (secrets masked, no markup) and return the exit (code 2) to raise."""
    print_error(message)
    return typer.Exit(code=2)
