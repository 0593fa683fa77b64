"""softmax and log_softmax along a dim, and dropout (the elementwise activations are registry rows)."""

from __future__ import annotations

from .. import amp
from ..grad_fn import record
from ..elementwise_kernels import elementwise
from ..shapes import normalize_axis
from ..rows import reduce, softmax_rows, softmax_rows_backward
from . import differentiable as dv


def _floats(x):
    """Integers promoted to float32, as torch does for a float-valued function (they carry no gradient)."""
    return x if x.dtype.kind == "f" else x.astype("float32")


@amp.op("softmax")
def softmax(a, dim=-1):
    """exp(x - max) / sum(exp(x - max)) along ``dim``; backward y * (g - sum(g * y))."""
    return _normalise(a, dim, log=False)


@amp.op("log_softmax")
def log_softmax(a, dim=-1):
    """x - max - log(sum(exp(x - max))) along ``dim``; backward g - exp(y) * sum(g)."""
    return _normalise(a, dim, log=True)


def _normalise(a, dim, log):
    op = "log_softmax" if log else "softmax"
    name = "LogSoftmaxBackward" if log else "SoftmaxBackward"
    x = _floats(a.data())
    d = normalize_axis(dim, x.ndim(), f"{op} dim")
    if x.numel() == 0:   # nothing to normalise; the max pass would refuse an empty axis
        return record(name, x.clone(), [a], lambda ctx, g: g, vrule=lambda ctx, g: g)
    vrule = _log_softmax_vrule if log else _softmax_vrule
    if d == x.ndim() - 1:   # rows are contiguous: one kernel each way
        y = softmax_rows(x, log)
        return record(name, y, [a], lambda ctx, g: softmax_rows_backward(g, ctx.saved_tensors[0], log), saved=(y,),
                      dim=d, vrule=vrule)
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

    return record(name, y, [a], rule, saved=(y,), dim=d, vrule=vrule)


def _softmax_vrule(ctx, g):
    y = ctx.output(ctx.saved_tensors[0])
    return y * (g - (g * y).sum(ctx.attrs["dim"], keepdim=True))


def _log_softmax_vrule(ctx, g):
    y = ctx.output(ctx.saved_tensors[0])
    return g - y.exp() * g.sum(ctx.attrs["dim"], keepdim=True)


def dropout(a, p):
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    The mask comes from the device generator (``Tensor.rand`` without a seed), so every call (and
    every captured replay) draws a fresh one; forward and backward are one kernel each, the uniform
    numbers being the saved mask.
    """
    from ..tensor import Tensor
    x = _floats(a.data())
    if p >= 1.0:   # torch: everything dropped (and no division by zero)
        return record("DropoutBackward", elementwise("L(0.0) * a", [x], op="dropout"), [a],
                      lambda ctx, g: elementwise("L(0.0) * g", [g], names=("g",)), vrule=lambda ctx, g: g * 0.0)
    u = Tensor.rand(x._shape, dtype=x.dtype, device=x.device)
    scale = 1.0 / (1.0 - p)
    y = elementwise("u >= p ? x * s : L(0.0)", [x, u], names=("x", "u"), scalars={"p": p, "s": scale},
                    op="dropout")

    def rule(ctx, g):
        (us,) = ctx.saved_tensors
        return elementwise("u >= p ? g * s : L(0.0)", [g, us], names=("g", "u"),
                           scalars={"p": ctx.attrs["p"], "s": ctx.attrs["s"]})

    return record("DropoutBackward", y, [a], rule, saved=(u,), p=p, s=scale, vrule=_dropout_vrule)


def _dropout_vrule(ctx, g):
    # g times the constant mask-and-scale: linear in g, independent of the input.
    (us,) = ctx.saved_tensors
    kept = elementwise("u >= p ? s : L(0.0)", [us], names=("u",), scalars={"p": ctx.attrs["p"], "s": ctx.attrs["s"]})
    return g * dv.const(g, kept)
