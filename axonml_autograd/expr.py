"""The expression language of the op registry: one rule, two interpreters.

A pointwise op's forward and its gradient rules are written once, as Python expressions over the op's
operands (``x``; or ``a`` and ``b``), its output ``y``, the incoming gradient ``g`` and its scalar
parameters. Python's grammar is the parser (``ast``), so a rule reads as it would in numpy code:

    "g * 0.5 if a == b else (0 if a < b else g)"

Two interpreters walk the same tree:

- :func:`render` writes OpenCL C for the eager kernel: numbers become ``L(...)`` literals of the
  tensor's float type, ``t if c else f`` becomes ``c ? t : f``, ``and``/``or``/``not`` become
  ``&&``/``||``/``!`` and a few names become OpenCL's (``abs`` is ``fabs``, ``round`` is ``rint``).
  Every sub-expression is parenthesised, which keeps C's order of evaluation the tree's.
- :func:`evaluate` runs the rule on values (Variables, so that ``create_graph=True`` records a graph of
  the gradient, and Python numbers); comparisons give masks that carry no gradient, and a conditional
  whose mask is a tensor selects elementwise. The caller supplies the functions and the selector, so
  this module knows nothing of Variables.

>>> render("g * 0.5 if a == b else (0 if a < b else g)")
'((a == b) ? (g * L(0.5)) : ((a < b) ? L(0.0) : g))'
>>> evaluate("-g * s / (x * x)", {"g": 2.0, "x": 4.0, "s": 3.0}, {})
-0.375
>>> names("g * cos(x) + y")
('g', 'x', 'y')
"""

from __future__ import annotations

import ast
import math
from functools import lru_cache

# OpenCL's spelling of the functions whose registry name differs, and of the constants.
OPENCL_NAMES = {"abs": "fabs", "round": "rint", "min": "fmin", "max": "fmax"}
CONSTANTS = {"nan": ("(T)NAN", math.nan), "inf": ("(T)INFINITY", math.inf)}

_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


class ExpressionError(ValueError):
    """A rule uses something the language does not have (a name it cannot resolve, an operator...)."""


@lru_cache(maxsize=None)
def parse(text: str) -> ast.expr:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as err:
        raise ExpressionError(f"expression {text!r}: {err.msg}") from None


@lru_cache(maxsize=None)
def names(text: str) -> tuple:
    """The variables ``text`` reads (not the functions it calls), sorted."""
    called = {id(n.func) for n in ast.walk(parse(text)) if isinstance(n, ast.Call)}
    return tuple(sorted({n.id for n in ast.walk(parse(text))
                         if isinstance(n, ast.Name) and id(n) not in called and n.id not in CONSTANTS}))


@lru_cache(maxsize=None)
def render(text: str) -> str:
    """``text`` as OpenCL C."""
    return _render(parse(text), text)


def _render(node, text) -> str:
    r = lambda n: _render(n, text)   # noqa: E731
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return f"L({float(node.value)!r})"
    if isinstance(node, ast.Name):
        return CONSTANTS[node.id][0] if node.id in CONSTANTS else node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = r(node.operand)
        return f"-({operand})" if operand.startswith("-") else f"-{operand}"   # never C's "--"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return f"!{r(node.operand)}"
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return f"({r(node.left)} {_ARITHMETIC[type(node.op)]} {r(node.right)})"
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        return f"({r(node.left)} {_COMPARE[type(node.ops[0])]} {r(node.comparators[0])})"
    if isinstance(node, ast.BoolOp):
        joint = " && " if isinstance(node.op, ast.And) else " || "
        return "(" + joint.join(r(v) for v in node.values) + ")"
    if isinstance(node, ast.IfExp):
        return f"({r(node.test)} ? {r(node.body)} : {r(node.orelse)})"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name = OPENCL_NAMES.get(node.func.id, node.func.id)
        return f"{name}({', '.join(r(a) for a in node.args)})"
    raise ExpressionError(f"expression {text!r}: {ast.unparse(node)!r} is not part of the language")


# -- evaluation -----------------------------------------------------------------------------------------
def evaluate(text: str, env: dict, functions: dict, select=None, mask_of=None):
    """``text`` over the values in ``env``.

    ``functions[name](*args)`` applies a function; ``mask_of(value)`` turns a value into something
    comparisons work on without recording (a Variable's tensor); ``select(mask, t, f)`` picks elementwise
    where a condition is a tensor. Conditions on plain numbers pick their branch in Python, so a rule
    like ``0 if p == 0 else g * p * pow(x, p - 1)`` builds only the branch it needs.
    """
    return _Evaluator(env, functions, select, mask_of or (lambda v: v)).run(parse(text))


class _Evaluator:
    def __init__(self, env, functions, select, mask_of):
        self.env, self.functions, self.select, self.mask_of = env, functions, select, mask_of

    def run(self, node):
        run = self.run
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return self.env[node.id] if node.id in self.env else CONSTANTS[node.id][1]
        if isinstance(node, ast.UnaryOp):
            value = run(node.operand)
            return -value if isinstance(node.op, ast.USub) else _not(value)
        if isinstance(node, ast.BinOp):
            left, right = run(node.left), run(node.right)
            op = type(node.op)
            return (left + right if op is ast.Add else left - right if op is ast.Sub
                    else left * right if op is ast.Mult else left / right)
        if isinstance(node, ast.Compare):
            left, right = self._masked(run(node.left)), self._masked(run(node.comparators[0]))
            op = type(node.ops[0])
            return (left == right if op is ast.Eq else left != right if op is ast.NotEq else left < right
                    if op is ast.Lt else left <= right if op is ast.LtE else left > right if op is ast.Gt
                    else left >= right)
        if isinstance(node, ast.BoolOp):
            values = [run(v) for v in node.values]
            out = values[0]
            for v in values[1:]:
                out = _and(out, v) if isinstance(node.op, ast.And) else _or(out, v)
            return out
        if isinstance(node, ast.IfExp):
            test = run(node.test)
            if isinstance(test, bool):
                return run(node.body) if test else run(node.orelse)
            return self.select(test, run(node.body), run(node.orelse))
        if isinstance(node, ast.Call):
            name = node.func.id
            args = [run(a) for a in node.args]
            if all(isinstance(a, float) for a in args) and hasattr(math, name):
                return getattr(math, name)(*args)
            if name not in self.functions:
                raise ExpressionError(f"{name}() has no differentiable form for create_graph")
            return self.functions[name](*args)
        raise ExpressionError(f"{ast.unparse(node)!r} is not part of the language")

    def _masked(self, value):
        return value if isinstance(value, (float, bool)) else self.mask_of(value)


# Masks are Python bools (conditions on numbers) or bool tensors; these combine either kind.
def _not(m):
    return (not m) if isinstance(m, bool) else m.logical_not()


def _and(p, q):
    if isinstance(p, bool) or isinstance(q, bool):
        fixed, other = (p, q) if isinstance(p, bool) else (q, p)
        return other if fixed else False
    return p.logical_and(q)


def _or(p, q):
    if isinstance(p, bool) or isinstance(q, bool):
        fixed, other = (p, q) if isinstance(p, bool) else (q, p)
        return True if fixed else other
    return p.logical_or(q)
