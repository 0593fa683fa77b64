"""Registry ops on Variables: forward kernel, graph node, and the row's one gradient rule run two ways.

First order renders the rule to OpenCL and runs it as one kernel over the incoming gradient and the
saved operands (the saved tensors are only those the rule reads). ``create_graph=True`` evaluates the
same rule on Variables (``expr.evaluate``), so the gradient is itself differentiable. A binary op's
gradient is summed over exactly the axes that broadcasting stretched, so a ``[3, 1] + [3, 4]`` sum sends
each ``[3, 1]`` element the sum of its row.

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.from_vec([0.0, 1.0], [2]), requires_grad=True)
>>> unary("sin", x).sum().backward()
>>> [round(v, 6) for v in x.grad().to_vec()]
[1.0, 0.540302]
"""

from __future__ import annotations

import numbers
from functools import lru_cache

import numpy as np

from .. import amp, expr, pointwise as P
from ..grad_fn import record
from ..registry import OPS
from ..tensor import Tensor
from ..shapes import as_float
from ..elementwise_kernels import Launcher, elementwise
from ..rows import sum_to_shape
from ..dtypes import float_result
from . import differentiable as dv


class _Form:
    """What forward and backward need of one way of calling a row, worked out once: the node's name, the
    names the forward kernel binds, the saved names and, per differentiable input, a launcher for its
    rendered rule (None where the rule is ``g`` itself) and which saved tensors that rule reads."""

    __slots__ = ("spec", "node", "names", "kept", "run", "rules", "reads", "scalar", "grad_of")

    def __init__(self, spec, node, names, scalar=None):
        self.spec, self.node, self.names, self.scalar = spec, node, names, scalar
        self.run = Launcher(spec.opencl, names, op=spec.name)
        # The inputs that get a gradient: the tensor operands (not the one a Python number fills).
        self.grad_of = [k for k, n in enumerate(spec.inputs) if n in names]
        rules = [spec.gradient[k] for k in self.grad_of]
        readable = tuple(names) + ("y",)
        self.kept = tuple(n for n in readable if any(n in expr.names(r) for r in rules))
        self.reads = [tuple(self.kept.index(n) for n in self.kept if n in expr.names(r)) for r in rules]
        self.rules = [None if expr.render(r) == "g" else
                      Launcher(expr.render(r), ("g",) + tuple(self.kept[i] for i in reads), op=spec.name)
                      for r, reads in zip(rules, self.reads)]


@lru_cache(maxsize=None)
def _form(name: str, scalar_side: int = -1) -> _Form:
    """Row ``name`` with all its inputs tensors, or with input ``scalar_side`` a Python number."""
    spec = OPS[name]
    if scalar_side < 0:
        return _Form(spec, spec.node_name(), spec.inputs)
    reverse = scalar_side == 0
    if name == "pow" and not reverse:
        node = "PowBackward"   # x ** p, the common case, keeps its plain name
    else:   # "MulScalarBackward"; reversed, "RsubScalarBackward" (2 - x)
        node = spec.node_name("_scalar")
        node = "R" + node[0].lower() + node[1:] if reverse else node
    names = tuple(n for k, n in enumerate(spec.inputs) if k != scalar_side)
    return _Form(spec, node, names, scalar=spec.inputs[scalar_side])


def _floats(t: Tensor) -> Tensor:
    return t if t.dtype.kind == "f" else t.astype("float32")


def unary(name: str, v, **scalars):
    """A one-input row on Variable ``v``; ``scalars`` by the row's kernel names (``lo``, ``beta``...)."""
    spec = OPS[name]
    form = _form(name)
    if amp.regions:
        v = amp.pointwise(name, v)
    x = v._data
    if x.dtype.kind != "f":
        if spec.int_form is not None and not spec.scalars:   # neg, abs, relu...: integers stay integers
            return record(form.node, P.unary(name, x), [v], None)
        x = x.astype("float32")   # like torch: a float function of integers promotes them to float32
    values = {k: as_float(scalars[k], f"{name} {k}") for k in spec.kernel_scalars}
    P.check_bounds(spec, values)
    y = form.run([x], values)
    return record(form.node, y, [v], _rule, saved=[x if n == "x" else y for n in form.kept], form=form,
                  scalars=values, vrule=_vrule)


def binary(name: str, a, b, **scalars):
    """A two-input row on Variables, broadcasting (a loss row promotes integers to float32)."""
    spec = OPS[name]
    form = _form(name)
    if amp.regions and name == "pow":
        a, b = amp.pointwise(name, a), amp.pointwise(name, b)
    x, y = a._data, b._data
    if spec.kind == "loss":
        x, y = _floats(x), _floats(y)
    P.no_bool_subtraction(name, x, y)
    if x.dtype.kind != "f" and y.dtype.kind != "f":   # integers: no gradient, the tensor op's dtype rules
        return record(form.node, P.binary(name, x, y), [a, b], None)
    out = form.run([x, y], scalars)
    by_name = {form.names[0]: x, form.names[1]: y, "y": out}
    return record(form.node, out, [a, b], _rule, saved=[by_name[n] for n in form.kept], form=form,
                  scalars=scalars, shapes=(x._shape, y._shape), vrule=_vrule)


def scalar(name: str, v, value, reverse=False):
    """``v <name> value`` (``value <name> v`` when ``reverse``) with a Python number as a kernel argument,
    so a new number needs no new kernel."""
    form = _form(name, 0 if reverse else 1)
    if amp.regions and name == "pow":
        v = amp.pointwise(name, v)
    x = v._data
    if x.dtype.kind != "f":   # integers: no gradient, the tensor op's dtype rules
        # A whole Python int stays exact (int64 + 2**60 must not pass through a float).
        exact = int(value) if isinstance(value, numbers.Integral) else as_float(value, name)
        return record(form.node, P.scalar_op(name, x, exact, reverse), [v], None)
    value = as_float(value, name)
    values = {form.scalar: value}
    y = form.run([x], values)
    return record(form.node, y, [v], _rule, saved=[x if n != "y" else y for n in form.kept], form=form,
                  scalars=values, vrule=_vrule)


def _rule(ctx, g):
    """First order: each needed input's rendered rule as one kernel over g and what it reads."""
    attrs = ctx.attrs
    form = attrs["form"]
    saved = ctx.saved_tensors
    rules = form.rules
    if len(rules) == 1:   # one input gets a gradient (unary ops, scalar forms): no broadcasting to undo
        run = rules[0]
        return g if run is None else run([g] + [saved[i] for i in form.reads[0]], attrs["scalars"])
    shapes = attrs["shapes"]
    out = []
    for run, reads, k in zip(rules, form.reads, form.grad_of):
        if not ctx.needs_input_grad[k]:
            out.append(None)
            continue
        grad = g if run is None else run([g] + [saved[i] for i in reads], attrs["scalars"])
        out.append(sum_to_shape(grad, shapes[k]))
    return tuple(out)


def _vrule(ctx, g):
    """create_graph: the same rules evaluated on Variables, so the gradient is part of a graph."""
    attrs = ctx.attrs
    form = attrs["form"]
    env = dict(attrs["scalars"])
    env["g"] = g
    for n, t in zip(form.kept, ctx.saved_tensors):
        env[n] = ctx.output(t) if n == "y" else ctx.input(form.names.index(n), t)
    shapes = attrs.get("shapes")
    out = []
    for k in form.grad_of:
        if not ctx.needs_input_grad[len(out)]:
            out.append(None)
            continue
        grad = expr.evaluate(form.spec.gradient[k], env, functions(), _select, _mask)
        if isinstance(grad, float):   # a constant rule (0 for the step functions)
            grad = dv.zeros(g) if grad == 0 else g * 0.0 + grad
        out.append(dv.sum_to(grad, shapes[k]) if shapes else grad)
    return tuple(out) if len(out) > 1 else out[0]


def _mask(v):
    return v._data if hasattr(v, "_data") else v


def _select(mask, a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a if a == b else _constant_where(mask, a, b)
    return dv.select(mask, a, b)


def _constant_where(mask, a, b):
    from ..variable import Variable
    return Variable(elementwise("c != 0 ? p : q", [mask], names=("c",), scalars={"p": a, "q": b}, dtype="float32"))


@lru_cache(maxsize=None)
def functions() -> dict:
    """The functions a rule may call, on Variables (numbers become 0-d constants beside them)."""
    table = {"isnan": lambda v: _mask(v).isnan(),
             "min": lambda v, m: v.clamp(max=m), "max": lambda v, m: v.clamp(min=m)}
    for spec in OPS.values():
        if spec.kind == "loss":
            continue
        table[spec.name] = (lambda n: lambda v: unary(n, v))(spec.name) if spec.arity == 1 else \
            (lambda n: lambda p, q: _binary_any(n, p, q))(spec.name)
    return table


def _binary_any(name, p, q):
    if isinstance(q, float):
        return scalar(name, p, q) if name in SCALAR_FORMS else binary(name, p, _like(p, q))
    if isinstance(p, float):
        return scalar(name, q, p, reverse=True) if name in SCALAR_FORMS else binary(name, _like(q, p), q)
    return binary(name, p, q)


def _like(v, value):
    return v.__class__(Tensor.full((), value, v._data.dtype, v._data.device))


# The rows whose Python-number operand goes into the kernel as an argument (others take a 0-d tensor).
SCALAR_FORMS = frozenset({"add", "sub", "mul", "div", "pow"})


def pow(v, exponent):
    if amp.regions:
        v = amp.pointwise("pow", v)
    x = v._data
    if x.dtype.kind != "f" and isinstance(exponent, numbers.Integral) and not isinstance(exponent, bool):
        # An integer to an integer power stays integer, exact (as torch); no gradient.
        return record("PowBackward", P.scalar_op("pow", x, int(exponent)), [v], None)
    if exponent == 2 and x.dtype.kind == "f":
        # torch's choice too: x * x, the same value as pow(x, 2) and a fraction of the cost of the
        # pow() kernels both ways (PoCL: 0.6 ms and ~4 ms against 0.03 ms on 65536 floats).
        out = binary("mul", v, v)
        if out._grad_fn is not None:
            out._grad_fn._name = "PowBackward"   # what the user wrote (torch: PowBackward0)
        return out
    return scalar("pow", v, exponent)


def clamp(v, min_value=None, max_value=None):
    x = v._data
    if x.dtype.kind == "i" and all(m is None or (isinstance(m, numbers.Integral) and not isinstance(m, bool))
                                   for m in (min_value, max_value)):
        # Integers with integer bounds stay integers, as in torch (no gradient).
        info = np.iinfo(x.dtype)
        lo = info.min if min_value is None else max(int(min_value), info.min)
        hi = info.max if max_value is None else min(int(max_value), info.max)
        if lo > hi:
            raise ValueError(f"clamp: min {min_value} is greater than max {max_value}")
        key = "int_scalars" if x.dtype == np.int32 else "long_scalars"
        out = elementwise("x < lo ? lo : (x > hi ? hi : x)", [x], names=("x",), op="clamp", dtype=x.dtype,
                          **{key: {"lo": lo, "hi": hi}})
        return record("ClampBackward", out, [v], None)
    lo = float("-inf") if min_value is None else as_float(min_value, "clamp min")
    hi = float("inf") if max_value is None else as_float(max_value, "clamp max")
    if lo > hi:
        raise ValueError(f"clamp: min {min_value} is greater than max {max_value}")
    return unary("clamp", v, lo=lo, hi=hi)


def where(condition, a, b):
    """``a`` where ``condition`` is non-zero, else ``b``, broadcasting all three; the gradient goes to the
    side that was taken (the condition gets none)."""
    c = condition.data() if callable(getattr(condition, "data", None)) and not isinstance(condition, Tensor) \
        else condition
    if not isinstance(c, Tensor):
        raise TypeError(f"where: the condition must be a Tensor or Variable, got {type(condition).__name__}")
    x, y = a.data(), b.data()
    out = elementwise("c != 0 ? a : b", [c, x, y], names=("c", "a", "b"), op="where",
                      dtype=_where_dtype(x.dtype, y.dtype))
    return record("WhereBackward", out, [a, b], _where_rule, saved=(c,), shapes=(x._shape, y._shape),
                  vrule=_where_vrule)


def _where_dtype(a, b):
    """where's result type: the wider operand's; with a 16-bit float, torch's promotion (float16 with
    bfloat16 is float32, a 16-bit float with an integer the 16-bit float)."""
    if a.itemsize == 2 or b.itemsize == 2:
        return float_result((a, b), default=a)
    return a if a.itemsize >= b.itemsize else b


def _where_rule(ctx, g):
    (cs,) = ctx.saved_tensors
    shapes = ctx.attrs["shapes"]
    ga = gb = None
    if ctx.needs_input_grad[0]:
        ga = sum_to_shape(elementwise("c != 0 ? g : L(0.0)", [g, cs], names=("g", "c")), shapes[0])
    if ctx.needs_input_grad[1]:
        gb = sum_to_shape(elementwise("c != 0 ? L(0.0) : g", [g, cs], names=("g", "c")), shapes[1])
    return ga, gb


def _where_vrule(ctx, g):
    (cs,) = ctx.saved_tensors
    shapes = ctx.attrs["shapes"]
    ga = gb = None
    if ctx.needs_input_grad[0]:
        ga = dv.sum_to(dv.select(cs, g, 0.0), shapes[0])
    if ctx.needs_input_grad[1]:
        gb = dv.sum_to(dv.select(cs, 0.0, g), shapes[1])
    return ga, gb
