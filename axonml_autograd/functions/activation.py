"""Activations: one table row each for the elementwise ones; softmax and log_softmax along a dim."""

from __future__ import annotations

from ..grad_fn import record
from ..tensor import elementwise, normalize_axis, reduce, softmax_rows, softmax_rows_backward
from . import differentiable as dv
from .arithmetic import PIECEWISE, register_vjps, unary

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


def _sigmoid_grad(g, x):
    s = x.sigmoid()
    return g * s * (1.0 - s)


def _tanh_grad(g, x):
    t = x.tanh()
    return g * (1.0 - t * t)


def _gelu_grad(g, x):
    cdf = (x * -0.7071067811865476).erfc() * 0.5
    pdf = (x * x * -0.5).exp() * 0.3989422804014327
    return g * (cdf + x * pdf)


def _gelu_tanh_grad(g, x):
    # d/dx of x * sigmoid(2u), u = k (x + 0.044715 x^3): sigmoid(2u) + x sigmoid'(2u) 2k (1 + 0.134145 x^2)
    s = ((x + x * x * x * 0.044715) * (2.0 * 0.7978845608028654)).sigmoid()
    return g * (s + x * s * (1.0 - s) * (x * x * 0.134145 + 1.0) * (2.0 * 0.7978845608028654))


def _silu_grad(g, x):
    s = x.sigmoid()
    return g * s * (x * (1.0 - s) + 1.0)


def _softplus_grad(g, x, beta, threshold):
    linear = elementwise("x * beta > threshold ? 1 : 0", [x.data()], names=("x",),
                         scalars={"beta": beta, "threshold": threshold}, dtype="int32")
    return dv.select(linear, g, g * (x * beta).sigmoid())


def _exp_left(g, x, scale, right):
    """elu/selu: ``g * scale * exp(x)`` for x <= 0, ``g * right`` above (exp of min(x, 0), so the side not
    taken stays finite for the next order)."""
    left = x.data() <= 0
    return dv.select(left, g * x.clamp(max=0.0).exp() * scale, g * right if right != 1.0 else g)


def _mish_grad(g, x):
    t = x.softplus().tanh()
    return g * (t + x * x.sigmoid() * (1.0 - t * t))


# The same rules over Variables (g, x, y, scalars), for create_graph=True (see arithmetic.UNARY_VJPS).
ACTIVATION_VJPS = {
    "relu": PIECEWISE,
    "leaky_relu": PIECEWISE,
    "sigmoid": lambda g, x, y, s: _sigmoid_grad(g, x),
    "tanh": lambda g, x, y, s: _tanh_grad(g, x),
    "gelu": lambda g, x, y, s: _gelu_grad(g, x),
    "gelu_tanh": lambda g, x, y, s: _gelu_tanh_grad(g, x),
    "silu": lambda g, x, y, s: _silu_grad(g, x),
    "softplus": lambda g, x, y, s: _softplus_grad(g, x, s["beta"], s["threshold"]),
    "elu": lambda g, x, y, s: _exp_left(g, x, s["alpha"], 1.0),
    "selu": lambda g, x, y, s: _exp_left(g, x, 1.7580993408473766, 1.0507009873554805),
    "mish": lambda g, x, y, s: _mish_grad(g, x),
    "hardtanh": PIECEWISE,
    "logsigmoid": lambda g, x, y, s: g * (-x).sigmoid(),
}
register_vjps(ACTIVATIONS, ACTIVATION_VJPS)


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
    return g * dv.factor("u >= p ? g * s : L(0.0)", ("u",), ctx.saved_tensors,
                         {"p": ctx.attrs["p"], "s": ctx.attrs["s"]}, like=g)
