"""Activations: one table row each for the elementwise ones; softmax and log_softmax along a dim."""

from __future__ import annotations

from ..grad_fn import record
from ..tensor import elementwise, normalize_axis, reduce, softmax_rows, softmax_rows_backward
from .arithmetic import unary

# GELU's tanh approximation: 0.5 x (1 + tanh(u)), u = k (x + 0.044715 x^3), k = sqrt(2 / pi), written as
# x * sigmoid(2u). The curves' derivatives use sech^2 and sigmoid' in the form a / (1 + a)^2 with
# a = exp(-2|u|) (or exp(-|x|)), which never overflows and goes to exactly 0 where the curve saturates:
# 1 - tanh(u)^2 instead leaves PoCL's last-bit rounding of tanh (0.99999994), times x^2 for gelu.
_GELU_INNER = "L(0.7978845608028654) * (x + L(0.044715) * x * x * x)"
_GELU_A = f"exp(L(-2.0) * fabs({_GELU_INNER}))"


def _bell(a):
    """a / (1 + a)^2: sigmoid'(t) for a = exp(-|t|)."""
    return f"{a} / ((L(1.0) + {a}) * (L(1.0) + {a}))"


_SP = "(x > L(20.0) ? x : log1p(exp(x)))"   # softplus(x) with torch's threshold


# name: (forward, backward, scalar names); backward reads g, the input x and the output y.
# At NaN every forward gives NaN, as torch's do, and the gradients at NaN are torch's (relu's passes g).
ACTIVATIONS = {
    "relu": ("(x > 0 || x != x) ? x : L(0.0)", "x <= 0 ? L(0.0) : g", ()),
    "leaky_relu": ("x > 0 ? x : slope * x", "x > 0 ? g : slope * g", ("slope",)),
    "sigmoid": ("L(1.0) / (L(1.0) + exp(-x))", f"g * {_bell('exp(-fabs(x))')}", ()),
    "tanh": ("tanh(x)", f"g * L(4.0) * {_bell('exp(L(-2.0) * fabs(x))')}", ()),
    # The product x * a(...) * u' is 0 where a is: at |x| large, u' alone overflows.
    # gelu with erf (torch's default): x * Phi(x), Phi written with erfc so its left tail keeps its digits.
    "gelu": ("L(0.5) * x * erfc(-x * L(0.7071067811865476))",
             "g * (L(0.5) * erfc(-x * L(0.7071067811865476)) + x * L(0.3989422804014327) * exp(L(-0.5) * x * x))",
             ()),
    "gelu_tanh": (f"x / (L(1.0) + exp(L(-2.0) * ({_GELU_INNER})))",
             f"g * (L(1.0) / (L(1.0) + exp(L(-2.0) * ({_GELU_INNER}))) + ({_GELU_A} > L(0.0) ? "
             f"L(2.0) * x * {_bell(_GELU_A)} * L(0.7978845608028654) * (L(1.0) + L(0.134145) * x * x) : L(0.0)))",
             ()),
    "silu": ("x / (L(1.0) + exp(-x))",
             "g * (L(1.0) / (L(1.0) + exp(-x))) * (L(1.0) + x * (L(1.0) - L(1.0) / (L(1.0) + exp(-x))))", ()),
    # softplus: linear above threshold / beta, as torch.
    "softplus": ("x * beta > threshold ? x : log1p(exp(x * beta)) / beta",
                 "x * beta > threshold ? g : g / (L(1.0) + exp(-x * beta))", ("beta", "threshold")),
    "elu": ("x > 0 ? x : alpha * expm1(x)", "x <= 0 ? g * alpha * exp(x) : g", ("alpha",)),
    "selu": ("x > 0 ? L(1.0507009873554805) * x : L(1.7580993408473766) * expm1(x)",
             "x <= 0 ? L(1.7580993408473766) * g * exp(x) : L(1.0507009873554805) * g", ()),
    # mish = x tanh(softplus(x)); sech^2 of softplus in the a / (1 + a)^2 form, exactly 0 when saturated.
    "mish": (f"x * tanh({_SP})",
             f"g * (tanh({_SP}) + x / (L(1.0) + exp(-x)) * L(4.0) * {_bell(f'exp(L(-2.0) * {_SP})')})", ()),
    "hardtanh": ("x != x ? x : fmin(fmax(x, lo), hi)", "(x <= lo || x >= hi) ? L(0.0) : g", ("lo", "hi")),
    "logsigmoid": ("fmin(x, L(0.0)) - log1p(exp(-fabs(x)))", "g / (L(1.0) + exp(x))", ()),
}


def _floats(x):
    """Integers promoted to float32, as torch does for a float-valued function (they carry no gradient)."""
    return x if x.dtype.kind == "f" else x.astype("float32")


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
    x = _floats(a.data())
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
                      lambda ctx, g: elementwise("L(0.0) * g", [g], names=("g",)))
    u = Tensor.rand(x._shape, dtype=x.dtype, device=x.device)
    scale = 1.0 / (1.0 - p)
    y = elementwise("u >= p ? x * s : L(0.0)", [x, u], names=("x", "u"), scalars={"p": p, "s": scale},
                    op="dropout")

    def rule(ctx, g):
        (us,) = ctx.saved_tensors
        return elementwise("u >= p ? g * s : L(0.0)", [g, us], names=("g", "u"),
                           scalars={"p": ctx.attrs["p"], "s": ctx.attrs["s"]})

    return record("DropoutBackward", y, [a], rule, saved=(u,), p=p, s=scale)
