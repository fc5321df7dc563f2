"""Lazy public names for package ``__init__`` files (PEP 562).

A package lists its public API once, as ``from twinloop.x.y import Name as Name`` lines
inside ``if TYPE_CHECKING:`` (so mypy and IDEs see every name), and ends with::

    __getattr__, __dir__, __all__ = attach(__name__, __file__)

``attach`` reads those lines from the file and imports each module on first use of one
of its names, the way ``lazy_loader.attach_stub`` does for SciPy and scikit-image. A
name the package imports from itself (``from twinloop.models import pk as pk``) is its
submodule.

A public name may also be the name of a submodule: ``twinloop.simulate`` is a function and
a subpackage, ``twinloop.connect.ingest`` a function and a module. When Python first loads
such a submodule it binds it to the package's attribute of that name, which would hide the
function; ``attach`` makes the package a ``LazyPackage``, which keeps the public name there,
as the eager imports of the package used to. ``from twinloop.connect.ingest import ...``
still reads the module.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class LazyPackage(types.ModuleType):
    """A package whose public names the import system does not overwrite with submodules."""

    _lazy_keep: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: object) -> None:
        if name in self._lazy_keep and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def _declared(path: str) -> dict[str, tuple[str, str]]:
    """Public name -> (module, attribute) for each ``from M import A as Name`` under ``if TYPE_CHECKING:``."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    names: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            continue
        for statement in node.body:
            if isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
                for alias in statement.names:
                    names[alias.asname or alias.name] = (statement.module, alias.name)
    return names


def attach(
    package: str, path: str, *, defined: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Return the ``__getattr__``, ``__dir__`` and ``__all__`` of a package whose public
    names are the imports under its ``if TYPE_CHECKING:`` block, and make the package a
    ``LazyPackage``.

    Arguments:
        package: the package's ``__name__``.
        path: the package's ``__init__.py`` (its ``__file__``).
        defined: public names the package defines itself (functions, constants).

    Returns:
        ``__getattr__`` importing a name's module on first use (and keeping the value in
        the package, so the next use is a plain attribute), ``__dir__`` and ``__all__``
        listing the names declared and ``defined``.

    Raises:
        AttributeError: from ``__getattr__``, for a name the package does not declare.
    """
    lazy = _declared(path)
    module = sys.modules[package]
    namespace = module.__dict__
    module.__class__ = LazyPackage
    namespace["_lazy_keep"] = frozenset(name for name, (source, _) in lazy.items() if source != package)
    public = sorted(set(lazy) | set(defined))

    def getattr_(name: str) -> Any:
        if name not in lazy:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, attribute = lazy[name]
        if module_name == package:
            value: Any = importlib.import_module(f"{package}.{attribute}")
        else:
            value = getattr(importlib.import_module(module_name), attribute)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return list(public)

    return getattr_, dir_, public
