"""Activations: one table row each for the elementwise ones; softmax and log_softmax along a dim."""

from __future__ import annotations

from ..grad_fn import record
from ..tensor import elementwise, normalize_axis, reduce, softmax_rows, softmax_rows_backward
from .arithmetic import unary

# GELU's tanh approximation: 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2 / pi).
_GELU_INNER = "L(0.7978845608028654) * (x + L(0.044715) * x * x * x)"

# name: (forward, backward, scalar names); backward reads g, the input x and the output y.
ACTIVATIONS = {
    "relu": ("x > 0 ? x : L(0.0)", "x > 0 ? g : L(0.0)", ()),
    "leaky_relu": ("x > 0 ? x : slope * x", "x > 0 ? g : slope * g", ("slope",)),
    "sigmoid": ("L(1.0) / (L(1.0) + exp(-x))", "g * y * (L(1.0) - y)", ()),
    "tanh": ("tanh(x)", "g * (L(1.0) - y * y)", ()),
    "gelu": (f"L(0.5) * x * (L(1.0) + tanh({_GELU_INNER}))",
             f"g * (L(0.5) * (L(1.0) + tanh({_GELU_INNER})) + L(0.5) * x * (L(1.0) - tanh({_GELU_INNER})"
             f" * tanh({_GELU_INNER})) * L(0.7978845608028654) * (L(1.0) + L(0.134145) * x * x))", ()),
    "silu": ("x / (L(1.0) + exp(-x))",
             "g * (L(1.0) / (L(1.0) + exp(-x))) * (L(1.0) + x * (L(1.0) - L(1.0) / (L(1.0) + exp(-x))))", ()),
}


def activation(name, a, **scalars):
    return unary(ACTIVATIONS, name, a, **scalars)


def softmax(a, dim=-1):
    """exp(x - max) / sum(exp(x - max)) along ``dim``; backward y * (g - sum(g * y))."""
    return _normalise(a, dim, log=False)


def log_softmax(a, dim=-1):
    """x - max - log(sum(exp(x - max))) along ``dim``; backward g - exp(y) * sum(g)."""
    return _normalise(a, dim, log=True)


def _normalise(a, dim, log):
    op = "log_softmax" if log else "softmax"
    name = "LogSoftmaxBackward" if log else "SoftmaxBackward"
    x = a.data()
    d = normalize_axis(dim, x.ndim(), f"{op} dim")
    if x.numel() == 0:   # nothing to normalise; the max pass would refuse an empty axis
        return record(name, x.clone(), [a], lambda ctx, g: g)
    if d == x.ndim() - 1:   # rows are contiguous: one kernel each way
        y = softmax_rows(x, log)
        return record(name, y, [a], lambda ctx, g: softmax_rows_backward(g, ctx.saved_tensors[0], log), saved=(y,))
    # Another axis: composed from reductions and elementwise kernels over that axis.
    m = reduce(x, "max", d, keepdim=True)
    e = elementwise("exp(x - m)", [x, m], names=("x", "m"), op=op)
    s = reduce(e, "sum", d, keepdim=True)
    if log:
        y = elementwise("x - m - log(s)", [x, m, s], names=("x", "m", "s"), op=op)
    else:
        y = elementwise("e / s", [e, s], names=("e", "s"), op=op)

    def rule(ctx, g):
        (ys,) = ctx.saved_tensors
        if log:
            return elementwise("g - exp(y) * s", [g, ys, reduce(g, "sum", ctx.dim, keepdim=True)],
                               names=("g", "y", "s"))
        gy = elementwise("g * y", [g, ys], names=("g", "y"))
        return elementwise("y * (g - s)", [ys, g, reduce(gy, "sum", ctx.dim, keepdim=True)], names=("y", "g", "s"))

    return record(name, y, [a], rule, saved=(y,), dim=d)
