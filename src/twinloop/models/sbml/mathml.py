"""MathML -> JAX: an SBML expression becomes a composed Python closure over ``jax.numpy``.

No source is generated. :func:`compile_math` walks the :class:`Node` tree once and
returns ``f(frame) -> value``; symbols are looked up through ``resolve(name)``, which
returns the closure of that symbol, and calls of function definitions are inlined by
binding their arguments. Every operation is elementwise, so the closures follow the
batch contract of :mod:`twinloop.models.base`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

from twinloop.errors import ModelError
from twinloop.models.sbml.document import SUPPORTED, Node


@dataclass
class Frame:
    """The values an expression is evaluated at: time, state vector, parameters, and a
    memo of the symbols already evaluated in this frame."""

    t: Any
    x: Any
    p: Mapping[str, Any]
    memo: dict[Any, Any] = field(default_factory=dict)


Compiled = Callable[[Frame], Any]
Resolver = Callable[[str], Compiled]
Functions = Mapping[str, tuple[tuple[str, ...], Node]]

_UNARY: dict[str, Callable[[Any], Any]] = {
    "FUNCTION_ABS": jnp.abs,
    "FUNCTION_ARCCOS": jnp.arccos,
    "FUNCTION_ARCCOSH": jnp.arccosh,
    "FUNCTION_ARCCOT": lambda a: jnp.arctan(1.0 / a),
    "FUNCTION_ARCCOTH": lambda a: jnp.arctanh(1.0 / a),
    "FUNCTION_ARCCSC": lambda a: jnp.arcsin(1.0 / a),
    "FUNCTION_ARCCSCH": lambda a: jnp.arcsinh(1.0 / a),
    "FUNCTION_ARCSEC": lambda a: jnp.arccos(1.0 / a),
    "FUNCTION_ARCSECH": lambda a: jnp.arccosh(1.0 / a),
    "FUNCTION_ARCSIN": jnp.arcsin,
    "FUNCTION_ARCSINH": jnp.arcsinh,
    "FUNCTION_ARCTAN": jnp.arctan,
    "FUNCTION_ARCTANH": jnp.arctanh,
    "FUNCTION_CEILING": jnp.ceil,
    "FUNCTION_COS": jnp.cos,
    "FUNCTION_COSH": jnp.cosh,
    "FUNCTION_COT": lambda a: 1.0 / jnp.tan(a),
    "FUNCTION_COTH": lambda a: 1.0 / jnp.tanh(a),
    "FUNCTION_CSC": lambda a: 1.0 / jnp.sin(a),
    "FUNCTION_CSCH": lambda a: 1.0 / jnp.sinh(a),
    "FUNCTION_EXP": jnp.exp,
    "FUNCTION_FACTORIAL": lambda a: jsp.gamma(a + 1.0),
    "FUNCTION_FLOOR": jnp.floor,
    "FUNCTION_LN": jnp.log,
    "FUNCTION_SEC": lambda a: 1.0 / jnp.cos(a),
    "FUNCTION_SECH": lambda a: 1.0 / jnp.cosh(a),
    "FUNCTION_SIN": jnp.sin,
    "FUNCTION_SINH": jnp.sinh,
    "FUNCTION_TAN": jnp.tan,
    "FUNCTION_TANH": jnp.tanh,
    "LOGICAL_NOT": jnp.logical_not,
}
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "DIVIDE": jnp.divide,
    "POWER": lambda a, b: _power(a, b),
    "FUNCTION_POWER": lambda a, b: _power(a, b),
    "FUNCTION_REM": jnp.fmod,
    "FUNCTION_QUOTIENT": lambda a, b: jnp.trunc(a / b),
    "LOGICAL_IMPLIES": lambda a, b: jnp.logical_or(jnp.logical_not(a), b),
    "RELATIONAL_NEQ": jnp.not_equal,
}
_FOLD: dict[str, Callable[[Any, Any], Any]] = {
    "PLUS": jnp.add,
    "TIMES": jnp.multiply,
    "LOGICAL_AND": jnp.logical_and,
    "LOGICAL_OR": jnp.logical_or,
    "LOGICAL_XOR": jnp.logical_xor,
    "FUNCTION_MAX": jnp.maximum,
    "FUNCTION_MIN": jnp.minimum,
}
_EMPTY = {"PLUS": 0.0, "TIMES": 1.0, "LOGICAL_AND": True, "LOGICAL_OR": False, "LOGICAL_XOR": False}
_CHAIN: dict[str, Callable[[Any, Any], Any]] = {
    "RELATIONAL_EQ": jnp.equal,
    "RELATIONAL_GEQ": jnp.greater_equal,
    "RELATIONAL_GT": jnp.greater,
    "RELATIONAL_LEQ": jnp.less_equal,
    "RELATIONAL_LT": jnp.less,
}
_CONSTANTS = {
    "CONSTANT_E": math.e,
    "CONSTANT_PI": math.pi,
    "CONSTANT_TRUE": True,
    "CONSTANT_FALSE": False,
}
_REFUSED = {
    "FUNCTION_DELAY": "the delay function",
    "FUNCTION_RATE_OF": "the rateOf function",
    "CSYMBOL_FUNCTION": "a csymbol function",
}


def _power(a: Any, b: Any) -> Any:
    """``a ** b`` whose derivative in ``b`` is 0 (not NaN) where ``a == 0``, e.g. a Hill
    term ``S^n`` at ``S = 0`` with a fitted exponent ``n``."""
    if isinstance(b, (int, float)):
        return jnp.power(a, b)
    zero = a == 0
    return jnp.where(zero, jnp.power(a, jax.lax.stop_gradient(b)), jnp.power(jnp.where(zero, 1.0, a), b))


def compile_math(node: Node, resolve: Resolver, functions: Functions, where: str) -> Compiled:
    """The closure ``f(frame) -> value`` of one SBML expression found in ``where``."""
    kind = node.kind
    args = [compile_math(c, resolve, functions, where) for c in node.children] if kind != "FUNCTION" else []
    if kind in ("INTEGER", "REAL", "REAL_E", "RATIONAL", "NAME_AVOGADRO"):
        value = node.value
        return lambda f: value
    if kind in _CONSTANTS:
        constant = _CONSTANTS[kind]
        return lambda f: constant
    if kind == "NAME_TIME":
        return lambda f: f.t
    if kind == "NAME":
        return resolve(node.name)
    if kind == "FUNCTION":
        return _call(node, resolve, functions, where)
    if kind == "MINUS":
        if len(args) == 1:
            return lambda f: -args[0](f)
        return _binary(jnp.subtract, args, kind, where)
    if kind in _UNARY:
        return _unary(_UNARY[kind], args, kind, where)
    if kind in _BINARY:
        return _binary(_BINARY[kind], args, kind, where)
    if kind in _FOLD:
        return _fold(_FOLD[kind], args, _EMPTY.get(kind), kind, where)
    if kind in _CHAIN:
        return _chain(_CHAIN[kind], args, kind, where)
    if kind == "FUNCTION_LOG":
        if len(args) == 2:
            base, arg = args
            return lambda f: jnp.log(arg(f)) / jnp.log(base(f))
        return _unary(jnp.log10, args, kind, where)
    if kind == "FUNCTION_ROOT":
        if len(args) == 2:
            degree, radicand = args
            return lambda f: jnp.power(radicand(f), 1.0 / degree(f))
        return _unary(jnp.sqrt, args, kind, where)
    if kind == "FUNCTION_PIECEWISE":
        return _piecewise(args)
    what = _REFUSED.get(kind, f"the MathML element {kind.lower()}")
    raise ModelError(f"The {where} uses {what}, which twinloop does not support; {SUPPORTED}.")


def _arity(args: list[Compiled], n: int, kind: str, where: str) -> None:
    if len(args) != n:
        raise ModelError(f"The {where} applies {kind.lower()} to {len(args)} arguments; it takes {n}.")


def _unary(op: Callable[[Any], Any], args: list[Compiled], kind: str, where: str) -> Compiled:
    _arity(args, 1, kind, where)
    (a,) = args
    return lambda f: op(a(f))


def _binary(op: Callable[[Any, Any], Any], args: list[Compiled], kind: str, where: str) -> Compiled:
    _arity(args, 2, kind, where)
    a, b = args
    return lambda f: op(a(f), b(f))


def _fold(op: Callable[[Any, Any], Any], args: list[Compiled], empty: Any, kind: str, where: str) -> Compiled:
    if not args:
        if empty is None:
            raise ModelError(f"The {where} applies {kind.lower()} to no arguments.")
        return lambda f: empty
    if len(args) == 1:
        return args[0]
    return lambda f: functools.reduce(op, (a(f) for a in args))


def _chain(op: Callable[[Any, Any], Any], args: list[Compiled], kind: str, where: str) -> Compiled:
    if len(args) < 2:
        raise ModelError(f"The {where} applies {kind.lower()} to {len(args)} argument(s); it takes two or more.")
    pairs = list(itertools.pairwise(args))
    return lambda f: functools.reduce(jnp.logical_and, (op(a(f), b(f)) for a, b in pairs))


def _piecewise(args: list[Compiled]) -> Compiled:
    """``piecewise(v1, c1, v2, c2, ..., otherwise)``: the first value whose condition holds."""
    pieces = list(zip(args[0::2], args[1::2], strict=False))
    otherwise = args[-1] if len(args) % 2 == 1 else (lambda f: jnp.nan)

    def value(f: Frame) -> Any:
        out = otherwise(f)
        for v, c in reversed(pieces):
            out = jnp.where(c(f), v(f), out)
        return out

    return value


def _call(node: Node, resolve: Resolver, functions: Functions, where: str) -> Compiled:
    """Inline a call of a function definition: its body compiled with the arguments bound."""
    if node.name not in functions:
        raise ModelError(f"The {where} calls '{node.name}', which is not a function definition of the model.")
    params, body = functions[node.name]
    if len(params) != len(node.children):
        raise ModelError(
            f"The {where} calls '{node.name}' with {len(node.children)} arguments; it takes {len(params)}."
        )
    bound = {
        name: compile_math(arg, resolve, functions, where) for name, arg in zip(params, node.children, strict=True)
    }

    def inner(name: str) -> Compiled:
        return bound[name] if name in bound else resolve(name)

    return compile_math(body, inner, functions, f"function definition '{node.name}' (called by the {where})")
