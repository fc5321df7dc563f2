"""Safe formulas in specs: constraints and derived quantities such as ``log(2) / KL``.

A formula is parsed once with :func:`ast.parse` (``mode="eval"``) and only these
nodes are accepted: numbers, text constants as a direct operand of ``==`` or
``!=`` (``sex == 'female'``), names of quantities, ``+ - * / // % **``, unary
``+ - not``, comparisons (chained ones too), ``and``/``or``, and calls of the
functions in :data:`FUNCTIONS` by name. Anything else (attributes, subscripts,
lambdas, comprehensions, keyword arguments...) is refused with an
:class:`~twinloop.errors.InputError`, and so is a formula longer than
:data:`MAX_LENGTH` characters, of more than :data:`MAX_NODES` nodes or nested
deeper than :data:`MAX_DEPTH`. The tree is compiled to nested closures over numpy
(or ``jax.numpy``); nothing is ever passed to ``eval``, ``exec`` or ``compile``.

Arithmetic is floating point only: every constant (``True`` included) is a float,
arithmetic refuses text operands, and ``**`` is ``xp.power`` on floats, so no
formula can build a big integer or repeat a string; an overflow gives ``inf``.
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
MAX_NODES = 300  # names, constants, operations and calls
MAX_DEPTH = 100
FUNCTIONS = ("log", "log2", "log10", "exp", "sqrt", "abs", "floor", "ceil", "min", "max")
_ELEMENTWISE = {"abs": "abs", "min": "minimum", "max": "maximum"}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
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
        except (ArithmeticError, TypeError, ValueError, MemoryError, RecursionError) as err:
            raise InputError(
                f"{self.where}: {self.text!r} cannot be evaluated ({type(err).__name__}: {err}); check the formula."
            ) from None

    def numbers(self, names: Mapping[str, Any]) -> Any:
        """The value over ``names`` as a float64 numpy array; text or other non-numbers are refused."""
        import numpy as np

        value = self(names)
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"{self.where}: {self.text!r} gives {np.asarray(value).dtype} values, not numbers; "
                "a constraint or derived quantity must be numeric (compare text with == or != instead)."
            ) from None


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
    _check_size(tree, where, text)
    names: set[str] = set()
    try:
        node = _node(tree.body, where, text, names)
    except RecursionError:
        raise _fail(where, text, "it is nested too deeply") from None
    return node, frozenset(names)


def _check_size(tree: ast.Expression, where: str, text: str) -> None:
    """Refuse more than :data:`MAX_NODES` nodes or more than :data:`MAX_DEPTH` levels (walked without recursion)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        count += isinstance(node, ast.expr)
        if count > MAX_NODES:
            raise _fail(where, text, f"it has more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise _fail(where, text, f"it is nested more than {MAX_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _number(value: Any) -> Any:
    """``value`` as an operand of arithmetic: Python bools and ints become floats, text is refused."""
    if isinstance(value, bool | int):
        return float(value)
    if isinstance(value, str) or getattr(getattr(value, "dtype", None), "kind", "") in ("O", "U", "S", "V"):
        raise TypeError("arithmetic on text is not allowed")
    return value


def _power(base: Any, exponent: Any, xp: ModuleType) -> Any:
    """``base ** exponent`` in floating point (never Python's exact integer power)."""

    def real(value: Any) -> Any:
        value = _number(value)
        kind = getattr(getattr(value, "dtype", None), "kind", "f")
        return value if kind in ("f", "c") else xp.asarray(value, dtype=float)

    errstate = getattr(xp, "errstate", None)  # numpy: an overflow gives inf without a warning
    if errstate is None:
        return xp.power(real(base), real(exponent))
    with errstate(over="ignore"):
        return xp.power(real(base), real(exponent))


def _node(tree: ast.AST, where: str, text: str, names: set[str]) -> Node:
    """Compile one whitelisted node; refuse any other kind."""
    if isinstance(tree, ast.Constant) and isinstance(tree.value, str):
        raise _fail(where, text, "text is allowed only as an operand of == or !=, e.g. sex == 'female'")
    if isinstance(tree, ast.Constant) and isinstance(tree.value, bool | int | float):
        try:
            number = float(tree.value)
        except OverflowError:
            raise _fail(where, text, f"the number {str(tree.value)[:20]}... is too large") from None
        return lambda v, xp: number
    if isinstance(tree, ast.Name):
        name = tree.id
        names.add(name)
        return lambda v, xp: v[name]
    if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Pow):
        base, exponent = (_node(t, where, text, names) for t in (tree.left, tree.right))
        return lambda v, xp: _power(base(v, xp), exponent(v, xp), xp)
    if isinstance(tree, ast.BinOp) and type(tree.op) in _BINARY:
        op, left, right = _BINARY[type(tree.op)], *(_node(t, where, text, names) for t in (tree.left, tree.right))
        return lambda v, xp: op(_number(left(v, xp)), _number(right(v, xp)))
    if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub | ast.UAdd | ast.Not):
        operand, kind = _node(tree.operand, where, text, names), type(tree.op)
        if kind is ast.Not:
            return lambda v, xp: xp.logical_not(operand(v, xp))
        if kind is ast.USub:
            return lambda v, xp: -_number(operand(v, xp))
        return lambda v, xp: _number(operand(v, xp))
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
    operands = (tree.left, *tree.comparators)
    terms = [_text(t, i, tree.ops, where, text) or _node(t, where, text, names) for i, t in enumerate(operands)]
    ops = [_COMPARE[type(op)] for op in tree.ops]

    def compare(v: Mapping[str, Any], xp: ModuleType) -> Any:
        values = [t(v, xp) for t in terms]
        pairs = [op(values[i], values[i + 1]) for i, op in enumerate(ops)]
        return functools.reduce(xp.logical_and, pairs)

    return compare


def _text(tree: ast.AST, i: int, ops: list[ast.cmpop], where: str, text: str) -> Node | None:
    """A text constant at position ``i`` of a comparison, allowed only between ``==`` / ``!=``."""
    if not (isinstance(tree, ast.Constant) and isinstance(tree.value, str)):
        return None
    if len(tree.value) > 200:
        raise _fail(where, text, "a text constant may hold at most 200 characters")
    if not all(isinstance(op, ast.Eq | ast.NotEq) for op in ops[max(i - 1, 0) : i + 1]):
        raise _fail(where, text, "text is allowed only as an operand of == or !=, e.g. sex == 'female'")
    value = tree.value
    return lambda v, xp: value


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
    return lambda v, xp: getattr(xp, name)(*(_number(a(v, xp)) for a in args))
