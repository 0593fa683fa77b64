"""Arithmetic: broadcasting binary ops, scalar ops and the elementwise maths functions.

A binary op's backward reduces the gradient over exactly the axes that broadcasting stretched, so a
``[3, 1] + [3, 4]`` sum sends each ``[3, 1]`` element the sum of its row.
"""

from __future__ import annotations

import math
import numbers
import re
from functools import lru_cache

import numpy as np

from . import differentiable as dv
from ..grad_fn import record
from .. import tensor as tensor_ops
from ..tensor import Tensor, as_float, elementwise, sum_to_shape


@lru_cache(maxsize=None)
def node_name(op: str) -> str:
    """``"mul_scalar"`` -> ``"MulScalarBackward"``."""
    return "".join(part.capitalize() for part in op.split("_")) + "Backward"


@lru_cache(maxsize=None)
def reads(expression, names):
    """The names among ``names`` that ``expression`` reads, so a backward saves and loads only those."""
    return tuple(n for n in names if re.search(rf"\b{n}\b", expression))


def apply_rule(expression, g, operands: dict, scalars=None):
    """Evaluate a backward expression over ``g`` and the named operands it reads."""
    if expression == "g":
        return g
    names = ("g",) + tuple(operands)
    return elementwise(expression, [g, *operands.values()], names=names, scalars=scalars)

# name: (forward expression, backward for a, backward for b); a, b are the inputs and g the gradient.
BINARY_OPS = {
    "add": ("a + b", "g", "g"),
    "sub": ("a - b", "g", "-g"),
    "mul": ("a * b", "g * b", "g * a"),
    "div": ("a / b", "g / b", "-g * a / (b * b)"),
    # NaN wins; as torch: a tie splits the gradient, and where either side is NaN both get all of it.
    "maximum": ("(a > b || a != a) ? a : b", "a == b ? g * L(0.5) : (a < b ? L(0.0) : g)",
                "a == b ? g * L(0.5) : (a > b ? L(0.0) : g)"),
    "minimum": ("(a < b || a != a) ? a : b", "a == b ? g * L(0.5) : (a > b ? L(0.0) : g)",
                "a == b ? g * L(0.5) : (a < b ? L(0.0) : g)"),
    "atan2": ("atan2(a, b)", "(a == 0 && b == 0) ? L(0.0) : g * b / (a * a + b * b)",
              "(a == 0 && b == 0) ? L(0.0) : -g * a / (a * a + b * b)"),
    "fmod": ("fmod(a, b)", "g", "-g * trunc(a / b)"),
    # Python's and torch's remainder: the sign of the divisor.
    # d/db is -g times Python's floor division a // b (which is -1, not -0, for 0.5 // -inf).
    "remainder": ("(fmod(a, b) != 0 && ((fmod(a, b) < 0) != (b < 0))) ? fmod(a, b) + b : fmod(a, b)", "g",
                  "-g * (b == 0 ? a / b : (a - fmod(a, b)) / b - "
                  "((fmod(a, b) != 0 && ((b < 0) != (fmod(a, b) < 0))) ? L(1.0) : L(0.0)))"),
    # torch's conventions at 0: no gradient through a zero exponent, none to b where a is 0 and b >= 0.
    "pow": ("pow(a, b)", "b == 0 ? L(0.0) : g * b * pow(a, b - L(1.0))",
            "(a == 0 && b >= 0) ? L(0.0) : g * pow(a, b) * log(a)"),
}

# The same backward rules over Variables (g, a, b), for create_graph=True: (for a, for b). PIECEWISE marks
# a rule that is g times a piecewise-constant factor of the inputs (the expression above with g = 1).
PIECEWISE = "piecewise"


def _pow_grad_a(g, a, b):
    taken = b.data() != 0
    return dv.select(taken, g * b * a.pow(b - 1.0), 0.0)


def _pow_grad_b(g, a, b):
    skip = (a.data() == 0).logical_and(b.data() >= 0)
    # log(a) only where it is used: the branch not taken must stay finite, or its zero gradient times
    # an infinite derivative would be NaN in the next order.
    safe = dv.select(skip, 1.0, a)
    return dv.select(skip, 0.0, g * safe.pow(b) * safe.log())


def _atan2_grad(sign_of, g, a, b):
    both_zero = (a.data() == 0).logical_and(b.data() == 0)
    denom = dv.select(both_zero, 1.0, a * a + b * b)
    return dv.select(both_zero, 0.0, g * (b if sign_of == "a" else -a) / denom)


BINARY_VJPS = {
    "add": (lambda g, a, b: g, lambda g, a, b: g),
    "sub": (lambda g, a, b: g, lambda g, a, b: -g),
    "mul": (lambda g, a, b: g * b, lambda g, a, b: g * a),
    "div": (lambda g, a, b: g / b, lambda g, a, b: -g * a / (b * b)),
    "maximum": (PIECEWISE, PIECEWISE),
    "minimum": (PIECEWISE, PIECEWISE),
    "atan2": (lambda g, a, b: _atan2_grad("a", g, a, b), lambda g, a, b: _atan2_grad("b", g, a, b)),
    "fmod": (PIECEWISE, PIECEWISE),
    "remainder": (PIECEWISE, PIECEWISE),
    "pow": (_pow_grad_a, _pow_grad_b),
}


def _binary_vrule(name):
    """The differentiable rule of BINARY_OPS[name], from BINARY_VJPS (None when it has none)."""
    if name not in BINARY_VJPS:
        return None
    _forward, expr_a, expr_b = BINARY_OPS[name]
    kept = reads(expr_a + " " + expr_b, ("a", "b"))
    rules = tuple(zip(BINARY_VJPS[name], (expr_a, expr_b)))

    def vrule(ctx, g):
        saved = ctx.saved_tensors
        ops = {n: ctx.input(0 if n == "a" else 1, t) for n, t in zip(kept, saved)}
        a, b = ops.get("a"), ops.get("b")
        out = []
        for k, (fn, expr) in enumerate(rules):
            if not ctx.needs_input_grad[k]:
                out.append(None)
                continue
            if fn is PIECEWISE:
                grad = g * dv.factor(expr, kept, saved, like=g)
            else:
                grad = fn(g, a, b)
            out.append(dv.sum_to(grad, ctx.attrs["shapes"][k]))
        return tuple(out)

    return vrule


_BINARY_VRULES = {}


def binary(name, a, b):
    """``a <name> b`` for Variables with numpy broadcasting."""
    forward, grad_a, grad_b = BINARY_OPS[name]
    x, y = a.data(), b.data()
    tensor_ops._no_bool_subtraction(name, x, y)
    if x.dtype.kind != "f" and y.dtype.kind != "f":   # integers: no gradient, the tensor op's dtype rules
        return record(node_name(name), tensor_ops.binary(name, x, y), [a, b], None)
    out = elementwise(forward, [x, y], op=name)

    # Save only what the backward expressions read (add and sub read neither input).
    kept = reads(grad_a + " " + grad_b, ("a", "b"))

    def rule(ctx, g):
        saved = dict(zip(kept, ctx.saved_tensors))
        shapes = ctx.attrs["shapes"]
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = sum_to_shape(apply_rule(grad_a, g, {n: saved[n] for n in reads(grad_a, kept)}), shapes[0])
        if ctx.needs_input_grad[1]:
            gb = sum_to_shape(apply_rule(grad_b, g, {n: saved[n] for n in reads(grad_b, kept)}), shapes[1])
        return ga, gb

    vrule = _BINARY_VRULES.get(name)
    if vrule is None and name not in _BINARY_VRULES:
        vrule = _BINARY_VRULES[name] = _binary_vrule(name)
    return record(node_name(name), out, [a, b], rule, saved=[{"a": x, "b": y}[n] for n in kept],
                  shapes=(x._shape, y._shape), vrule=vrule)


# name: (forward with scalar s, backward); `x` is the input.
SCALAR_OPS = {
    "add_scalar": ("x + s", "g"),
    "sub_scalar": ("x - s", "g"),
    "rsub_scalar": ("s - x", "-g"),
    "mul_scalar": ("x * s", "g * s"),
    "div_scalar": ("x / s", "g / s"),
    "rdiv_scalar": ("s / x", "-g * s / (x * x)"),
    "rpow_scalar": ("pow(s, x)", "g * pow(s, x) * log(s)"),
}
# Over Variables (g, x, s), for create_graph=True.
SCALAR_VJPS = {
    "add_scalar": lambda g, x, s: g,
    "sub_scalar": lambda g, x, s: g,
    "rsub_scalar": lambda g, x, s: -g,
    "mul_scalar": lambda g, x, s: g * s,
    "div_scalar": lambda g, x, s: g / s,
    "rdiv_scalar": lambda g, x, s: g * -s / (x * x),
    "rpow_scalar": lambda g, x, s: g * (s ** x) * math.log(s),
}


def scalar(name, a, value):
    """``a <op> value`` with a Python number, passed to the kernel as an argument (no recompile)."""
    forward, backward, kept, node, vrule = _scalar_spec(name)
    x = a._data
    if x.dtype.kind != "f":   # integers: no gradient, the tensor op's dtype rules
        base, reverse = _TENSOR_SCALAR[name]
        # A whole Python int stays exact (int64 + 2**60 must not pass through a float).
        exact = int(value) if isinstance(value, numbers.Integral) else as_float(value, name)
        return record(node, tensor_ops.scalar_op(base, x, exact, reverse), [a], None)
    value = as_float(value, name)
    out = elementwise(forward, [x], names=("x",), scalars={"s": value}, op=name)
    return record(node, out, [a], _scalar_rule, saved=(x,) if kept else (), backward=backward, kept=kept,
                  value=value, vrule=vrule)


# The tensor-level op and operand order of each scalar op (used for integer tensors).
_TENSOR_SCALAR = {"add_scalar": ("add", False), "sub_scalar": ("sub", False), "rsub_scalar": ("sub", True),
                  "mul_scalar": ("mul", False), "div_scalar": ("div", False), "rdiv_scalar": ("div", True),
                  "rpow_scalar": ("pow", True)}


@lru_cache(maxsize=None)
def _scalar_spec(name):
    forward, backward = SCALAR_OPS[name]
    return forward, backward, reads(backward, ("x",)), node_name(name), _scalar_vrule(name)


@lru_cache(maxsize=None)
def _scalar_vrule(name):
    vjp = SCALAR_VJPS.get(name)
    if vjp is None:
        return None

    def vrule(ctx, g):
        attrs = ctx.attrs
        x = ctx.input(0, ctx.saved_tensors[0]) if attrs["kept"] else None
        return vjp(g, x, attrs["value"])

    return vrule


def _scalar_rule(ctx, g):
    # ctx.attrs rather than ctx.<name>: this runs once per op in backward, and an attribute that
    # falls through to __getattr__ costs ~1 us.
    attrs = ctx.attrs
    kept = attrs["kept"]
    return apply_rule(attrs["backward"], g, dict(zip(kept, ctx.saved_tensors)) if kept else _EMPTY,
                      {"s": attrs["value"]})


_EMPTY: dict = {}


# name: (forward, backward, scalar names); backward reads g, the input x and the output y.
UNARY_OPS = {
    "neg": ("-x", "-g", ()),
    "exp": ("exp(x)", "g * y", ()),
    "log": ("log(x)", "g / x", ()),
    "sqrt": ("sqrt(x)", "g * L(0.5) / y", ()),
    "abs": ("fabs(x)", "x > 0 ? g : (x < 0 ? -g : L(0.0))", ()),
    "pow": ("pow(x, p)", "p == 0 ? L(0.0) : g * p * pow(x, p - L(1.0))", ("p",)),
    "clamp": ("x != x ? x : fmin(fmax(x, lo), hi)", "(x >= lo && x <= hi) ? g : L(0.0)", ("lo", "hi")),
    # Maths, with torch's gradients (0 for the step functions; sign(0) = sign(NaN) = 0).
    "sin": ("sin(x)", "g * cos(x)", ()),
    "cos": ("cos(x)", "-g * sin(x)", ()),
    "tan": ("tan(x)", "g * (L(1.0) + y * y)", ()),
    "asin": ("asin(x)", "g / sqrt(L(1.0) - x * x)", ()),
    "acos": ("acos(x)", "-g / sqrt(L(1.0) - x * x)", ()),
    "atan": ("atan(x)", "g / (L(1.0) + x * x)", ()),
    "sinh": ("sinh(x)", "g * cosh(x)", ()),
    "cosh": ("cosh(x)", "g * sinh(x)", ()),
    "asinh": ("asinh(x)", "g / sqrt(x * x + L(1.0))", ()),
    "atanh": ("atanh(x)", "g / (L(1.0) - x * x)", ()),
    "erf": ("erf(x)", "g * L(1.1283791670955126) * exp(-x * x)", ()),
    "erfc": ("erfc(x)", "-g * L(1.1283791670955126) * exp(-x * x)", ()),
    "log1p": ("log1p(x)", "g / (L(1.0) + x)", ()),
    "expm1": ("expm1(x)", "g * (y + L(1.0))", ()),
    "log2": ("log2(x)", "g / (x * L(0.6931471805599453))", ()),
    "log10": ("log10(x)", "g / (x * L(2.302585092994046))", ()),
    "exp2": ("exp2(x)", "g * y * L(0.6931471805599453)", ()),
    "rsqrt": ("rsqrt(x)", "L(-0.5) * g * y * y * y", ()),
    "reciprocal": ("L(1.0) / x", "-g * y * y", ()),
    "square": ("x * x", "L(2.0) * g * x", ()),
    "sign": ("x > 0 ? L(1.0) : (x < 0 ? L(-1.0) : L(0.0))", "L(0.0)", ()),
    "floor": ("floor(x)", "L(0.0)", ()),
    "ceil": ("ceil(x)", "L(0.0)", ()),
    "round": ("rint(x)", "L(0.0)", ()),   # half to even, as torch.round
    "trunc": ("trunc(x)", "L(0.0)", ()),
}
# The same rules over Variables, for create_graph=True: vjp(g, x, y, scalars) with x the input and y the
# output as Variables (each only where the expression above reads it, else None); PIECEWISE marks g times
# a piecewise-constant factor, ZERO a step function's zero gradient.
ZERO = "zero"
_LN2, _LN10, _2_SQRT_PI = 0.6931471805599453, 2.302585092994046, 1.1283791670955126
UNARY_VJPS = {
    "neg": lambda g, x, y, s: -g,
    "exp": lambda g, x, y, s: g * y,
    "log": lambda g, x, y, s: g / x,
    "sqrt": lambda g, x, y, s: g / y * 0.5,
    "abs": PIECEWISE,
    "pow": lambda g, x, y, s: dv.zeros(g) if s["p"] == 0 else g * x.pow(s["p"] - 1.0) * s["p"],
    "clamp": PIECEWISE,
    "sin": lambda g, x, y, s: g * x.cos(),
    "cos": lambda g, x, y, s: -g * x.sin(),
    "tan": lambda g, x, y, s: g * (y * y + 1.0),
    "asin": lambda g, x, y, s: g * (1.0 - x * x).rsqrt(),
    "acos": lambda g, x, y, s: -g * (1.0 - x * x).rsqrt(),
    "atan": lambda g, x, y, s: g / (x * x + 1.0),
    "sinh": lambda g, x, y, s: g * x.cosh(),
    "cosh": lambda g, x, y, s: g * x.sinh(),
    "asinh": lambda g, x, y, s: g * (x * x + 1.0).rsqrt(),
    "atanh": lambda g, x, y, s: g / (1.0 - x * x),
    "erf": lambda g, x, y, s: g * (-(x * x)).exp() * _2_SQRT_PI,
    "erfc": lambda g, x, y, s: g * (-(x * x)).exp() * -_2_SQRT_PI,
    "log1p": lambda g, x, y, s: g / (x + 1.0),
    "expm1": lambda g, x, y, s: g * (y + 1.0),
    "log2": lambda g, x, y, s: g / (x * _LN2),
    "log10": lambda g, x, y, s: g / (x * _LN10),
    "exp2": lambda g, x, y, s: g * y * _LN2,
    "rsqrt": lambda g, x, y, s: g * y * y * y * -0.5,
    "reciprocal": lambda g, x, y, s: -g * y * y,
    "square": lambda g, x, y, s: g * x * 2.0,
    "sign": ZERO, "floor": ZERO, "ceil": ZERO, "round": ZERO, "trunc": ZERO,
}

# id(table) -> (table, its VJPS): unary() finds the differentiable rule of any registered table's row.
_VJP_TABLES: dict = {}


def register_vjps(table, vjps):
    """Declare ``vjps`` (same keys as ``table``) as the differentiable rules of a unary op table."""
    _VJP_TABLES[id(table)] = (table, vjps)
    _unary_vrule.cache_clear()


@lru_cache(maxsize=None)
def _unary_vrule(table_id, name):
    table, vjps = _VJP_TABLES.get(table_id, (None, {}))
    vjp = vjps.get(name)
    if vjp is None:
        return None
    backward = table[name][1]
    kept = reads(backward, ("x", "y"))

    def vrule(ctx, g):
        saved = ctx.saved_tensors
        if vjp is ZERO:
            return dv.zeros(g)
        if vjp is PIECEWISE:
            return g * dv.factor(backward, kept, saved, ctx.attrs["scalars"], like=g)
        x = y = None
        for n, t in zip(kept, saved):
            if n == "x":
                x = ctx.input(0, t)
            else:
                y = ctx.output(t)
        return vjp(g, x, y, ctx.attrs["scalars"])

    return vrule


MATHS = ("sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "atanh", "erf", "erfc", "log1p",
         "expm1", "log2", "log10", "exp2", "rsqrt", "reciprocal", "square", "sign", "floor", "ceil", "round", "trunc")


def unary(table, name, a, **scalars):
    """A one-input elementwise op from ``table`` (this module's or activation's)."""
    forward, backward, scalar_names = table[name]
    x = a.data()
    if x.dtype.kind != "f":
        if name in tensor_ops.INT_OPS and not scalar_names:   # neg, abs: integers stay integers
            return record(node_name(name), tensor_ops.unary(name, x), [a], None)
        x = x.astype("float32")   # like torch: a float function of integers promotes them to float32
    values = {s: as_float(scalars[s], f"{name} {s}") for s in scalar_names}
    y = elementwise(forward, [x], names=("x",), scalars=values, op=name)

    kept = reads(backward, ("x", "y"))

    def rule(ctx, g):
        return apply_rule(backward, g, dict(zip(kept, ctx.saved_tensors)), ctx.attrs["scalars"])

    return record(node_name(name), y, [a], rule, saved=[{"x": x, "y": y}[n] for n in kept], scalars=values,
                  vrule=_unary_vrule(id(table), name))


def pow(a, exponent):
    x = a.data()
    if x.dtype.kind != "f" and isinstance(exponent, numbers.Integral) and not isinstance(exponent, bool):
        # An integer to an integer power stays integer, exact (as torch); no gradient.
        return record(node_name("pow"), tensor_ops.scalar_op("pow", x, int(exponent)), [a], None)
    return unary(UNARY_OPS, "pow", a, p=exponent)


def clamp(a, min_value=None, max_value=None):
    x = a.data()
    if x.dtype.kind == "i" and all(v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool))
                                   for v in (min_value, max_value)):
        # Integers with integer bounds stay integers, as in torch (no gradient).
        info = np.iinfo(x.dtype)
        lo = info.min if min_value is None else max(int(min_value), info.min)
        hi = info.max if max_value is None else min(int(max_value), info.max)
        if lo > hi:
            raise ValueError(f"clamp: min {min_value} is greater than max {max_value}")
        key = "int_scalars" if x.dtype == np.int32 else "long_scalars"
        out = elementwise("a < lo ? lo : (a > hi ? hi : a)", [x], op="clamp", dtype=x.dtype,
                          **{key: {"lo": lo, "hi": hi}})
        return record(node_name("clamp"), out, [a], None)
    lo = float("-inf") if min_value is None else as_float(min_value, "clamp min")
    hi = float("inf") if max_value is None else as_float(max_value, "clamp max")
    if lo > hi:
        raise ValueError(f"clamp: min {min_value} is greater than max {max_value}")
    return unary(UNARY_OPS, "clamp", a, lo=lo, hi=hi)


def where(condition, a, b):
    """``a`` where ``condition`` is non-zero, else ``b``, broadcasting all three; the gradient goes to the
    side that was taken (the condition gets none)."""
    c = condition.data() if callable(getattr(condition, "data", None)) and not isinstance(condition, Tensor) \
        else condition
    if not isinstance(c, Tensor):
        raise TypeError(f"where: the condition must be a Tensor or Variable, got {type(condition).__name__}")
    x, y = a.data(), b.data()
    out = elementwise("c != 0 ? a : b", [c, x, y], names=("c", "a", "b"), op="where",
                      dtype=x.dtype if x.dtype.itemsize >= y.dtype.itemsize else y.dtype)

    def rule(ctx, g):
        (cs,) = ctx.saved_tensors
        shapes = ctx.attrs["shapes"]
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = sum_to_shape(elementwise("c != 0 ? g : L(0.0)", [g, cs], names=("g", "c")), shapes[0])
        if ctx.needs_input_grad[1]:
            gb = sum_to_shape(elementwise("c != 0 ? L(0.0) : g", [g, cs], names=("g", "c")), shapes[1])
        return ga, gb

    return record("WhereBackward", out, [a, b], rule, saved=(c,), shapes=(x._shape, y._shape), vrule=_where_vrule)


def _where_vrule(ctx, g):
    (cs,) = ctx.saved_tensors
    shapes = ctx.attrs["shapes"]
    ga = gb = None
    if ctx.needs_input_grad[0]:
        ga = dv.sum_to(dv.select(cs, g, 0.0), shapes[0])
    if ctx.needs_input_grad[1]:
        gb = dv.sum_to(dv.select(cs, 0.0, g), shapes[1])
    return ga, gb


register_vjps(UNARY_OPS, UNARY_VJPS)
