"""Safe formulas in specs: constraints and derived quantities such as ``log(2) / KL``.

A formula is parsed once with :func:`ast.parse` (``mode="eval"``) and only these
nodes are accepted: numbers (and text constants to compare with), names of
quantities, ``+ - * / // % **``, unary ``+ - not``, comparisons (chained ones
too), ``and``/``or``, and calls of the functions in :data:`FUNCTIONS` by name.
Anything else (attributes, subscripts, lambdas, comprehensions, keyword
arguments...) is refused with an :class:`~twinloop.errors.InputError`. The tree is
compiled to nested closures over numpy (or ``jax.numpy``); nothing is ever passed
to ``eval``, ``exec`` or ``compile``.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from twinloop.errors import InputError

MAX_LENGTH = 1000
FUNCTIONS = ("log", "log2", "log10", "exp", "sqrt", "abs", "floor", "ceil", "min", "max")
_ELEMENTWISE = {"abs": "abs", "min": "minimum", "max": "maximum"}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
EXPECTED = "numbers, quantity names, + - * / // % **, comparisons, and/or/not and the functions " + ", ".join(FUNCTIONS)

# A compiled node: (names -> value, array namespace) -> value
Node = Callable[[Mapping[str, Any], ModuleType], Any]


class Formula:
    """A validated formula; ``formula(names)`` evaluates it over arrays of quantities."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self._node, self.names = _compile(text, where)

    def __reduce__(self) -> tuple[Any, ...]:
        return Formula, (self.text, self.where)  # closures do not pickle; the text does

    def __call__(self, names: Mapping[str, Any], xp: ModuleType | None = None) -> Any:
        """The value over ``names`` (arrays or numbers) with numpy, or ``xp`` (e.g. ``jax.numpy``)."""
        missing = sorted(self.names - set(names))
        if missing:
            raise InputError(
                f"{self.where}: {self.text!r} uses the unknown name(s) {missing}; "
                f"use parameter, covariate or derived names ({sorted(names)[:20]})."
            )
        if xp is None:
            import numpy

            xp = numpy
        try:
            return self._node(names, xp)
        except (OverflowError, ZeroDivisionError, TypeError) as err:
            raise InputError(f"{self.where}: {self.text!r} cannot be evaluated ({err}); check the formula.") from None


def _fail(where: str, text: str, problem: str) -> InputError:
    return InputError(f"{where} is {text!r}: {problem}; a formula may use {EXPECTED}.")


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> ast.Expression:
    return ast.parse(text, mode="eval")


def _compile(text: str, where: str) -> tuple[Node, frozenset[str]]:
    if not isinstance(text, str) or not text.strip():
        raise _fail(where, str(text), "expected a non-empty formula")
    if len(text) > MAX_LENGTH:
        raise _fail(where, text[:40] + "...", f"it is longer than {MAX_LENGTH} characters")
    try:
        tree = _parsed(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _fail(where, text, "it is not a valid formula") from None
    names: set[str] = set()
    try:
        node = _node(tree.body, where, text, names)
    except RecursionError:
        raise _fail(where, text, "it is nested too deeply") from None
    return node, frozenset(names)


def _node(tree: ast.AST, where: str, text: str, names: set[str]) -> Node:
    """Compile one whitelisted node; refuse any other kind."""
    if isinstance(tree, ast.Constant) and isinstance(tree.value, bool | int | float | str):
        value = tree.value if isinstance(tree.value, bool | str) else float(tree.value)
        return lambda v, xp: value
    if isinstance(tree, ast.Name):
        name = tree.id
        names.add(name)
        return lambda v, xp: v[name]
    if isinstance(tree, ast.BinOp) and type(tree.op) in _BINARY:
        op, left, right = _BINARY[type(tree.op)], *(_node(t, where, text, names) for t in (tree.left, tree.right))
        return lambda v, xp: op(left(v, xp), right(v, xp))
    if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub | ast.UAdd | ast.Not):
        operand, kind = _node(tree.operand, where, text, names), type(tree.op)
        if kind is ast.Not:
            return lambda v, xp: xp.logical_not(operand(v, xp))
        return (lambda v, xp: -operand(v, xp)) if kind is ast.USub else operand
    if isinstance(tree, ast.BoolOp):
        parts = [_node(t, where, text, names) for t in tree.values]
        join = "logical_and" if isinstance(tree.op, ast.And) else "logical_or"
        return lambda v, xp: functools.reduce(getattr(xp, join), (p(v, xp) for p in parts))
    if isinstance(tree, ast.Compare) and all(type(op) in _COMPARE for op in tree.ops):
        return _comparison(tree, where, text, names)
    if isinstance(tree, ast.Call):
        return _call(tree, where, text, names)
    raise _fail(where, text, f"{type(tree).__name__} is not allowed")


def _comparison(tree: ast.Compare, where: str, text: str, names: set[str]) -> Node:
    """``a < b <= c`` as ``(a < b) and (b <= c)``, elementwise."""
    terms = [_node(t, where, text, names) for t in (tree.left, *tree.comparators)]
    ops = [_COMPARE[type(op)] for op in tree.ops]

    def compare(v: Mapping[str, Any], xp: ModuleType) -> Any:
        values = [t(v, xp) for t in terms]
        pairs = [op(values[i], values[i + 1]) for i, op in enumerate(ops)]
        return functools.reduce(xp.logical_and, pairs)

    return compare


def _call(tree: ast.Call, where: str, text: str, names: set[str]) -> Node:
    """A call of one of :data:`FUNCTIONS`, by bare name, with positional arguments only."""
    if not isinstance(tree.func, ast.Name) or tree.func.id not in FUNCTIONS:
        called = tree.func.id if isinstance(tree.func, ast.Name) else f"a {type(tree.func).__name__.lower()}"
        raise _fail(where, text, f"calling {called} is not allowed")
    if tree.keywords or any(isinstance(a, ast.Starred) for a in tree.args):
        raise _fail(where, text, "functions take positional arguments only")
    wanted = 2 if tree.func.id in ("min", "max") else 1
    if len(tree.args) != wanted:
        raise _fail(where, text, f"{tree.func.id} takes {wanted} argument(s)")
    name = _ELEMENTWISE.get(tree.func.id, tree.func.id)
    args = [_node(a, where, text, names) for a in tree.args]
    return lambda v, xp: getattr(xp, name)(*(a(v, xp) for a in args))
