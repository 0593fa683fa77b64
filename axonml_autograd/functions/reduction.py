"""Reductions. sum() and mean() give 0-d results; the *_dim forms reduce one axis (keepdim or not)."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from .. import amp
from .. import kernels
from . import differentiable as dv
from ..grad_fn import record
from ..tensor import Tensor, check_index32
from ..elementwise_kernels import broadcast_view, elementwise
from ..shapes import normalize_axis
from ..rows import reduce


def _spread_vrule(ctx, g):
    """sum/mean (all or one dim): ``g`` spread back over the input's shape, over ``n`` for a mean."""
    attrs = ctx.attrs
    return spread(g, attrs["shape"], attrs.get("dim"), attrs.get("keepdim", False), attrs.get("n"))


def spread(g, shape, dim, keepdim, n=None):
    """``g`` (a sum's or, with ``n``, a mean's result) broadcast back over ``shape`` and divided by ``n``,
    in one kernel. Differentiable: its gradient is that reduction again, so sum and mean have one
    gradient rule, and first order launches the one kernel."""
    t = g._data
    out = _spread(t, shape, dim, keepdim, None if n is None else 1.0 / n if n else float("nan"))
    return record("SpreadBackward", out, [g], dim=dim, n=n, gshape=t._shape, vrule=_reduce_vrule)


def _reduce_vrule(ctx, h):
    attrs = ctx.attrs
    dim, n = attrs["dim"], attrs["n"]
    # The mean over n = 0 elements has the gradient of nothing (h is empty): a sum, zeros.
    if dim is None:
        out = mean_all(h) if n else sum_all(h)
    else:
        out = (mean_dim if n else sum_dim)(h, dim, True)
    return out.reshape(list(attrs["gshape"]))


def _spread(g: Tensor, shape, dim, keepdim, scale=None):
    """``g`` (the reduced shape) broadcast back over ``shape``, optionally times ``scale``."""
    if dim is not None and not keepdim and shape:
        kept = list(shape)
        kept[dim] = 1
        g = g.reshape(kept)
    view = broadcast_view(g, shape)
    if scale is None:
        return elementwise("g", [view], names=("g",), shape=shape)
    return elementwise("g * s", [view], names=("g",), scalars={"s": scale}, shape=shape)


@amp.op("sum")
def sum_all(a):
    x = a.data()
    return record("SumBackward", reduce(x, "sum"), [a], shape=x._shape, vrule=_spread_vrule)


@amp.op("mean")
def mean_all(a):
    x = a.data()
    n = x.numel()
    return record("MeanBackward", reduce(x, "mean"), [a], shape=x._shape, n=n, vrule=_spread_vrule)


def sum_dim(a, dim, keepdim=False):
    x = a.data()
    d = normalize_axis(dim, x.ndim(), "sum_dim dim")
    return record("SumDimBackward", reduce(x, "sum", d, keepdim), [a], shape=x._shape, dim=d, keepdim=keepdim,
                  vrule=_spread_vrule)


def mean_dim(a, dim, keepdim=False):
    x = a.data()
    d = normalize_axis(dim, x.ndim(), "mean_dim dim")
    n = x._shape[d] if x._shape else 1
    return record("MeanDimBackward", reduce(x, "mean", d, keepdim), [a], shape=x._shape, dim=d, keepdim=keepdim,
                  n=n, vrule=_spread_vrule)


def var_dim(a, dim, keepdim=False):
    """Unbiased variance along ``dim``: sum((x - mean)^2) / (n - 1)."""
    x = a.data()
    d = normalize_axis(dim, x.ndim(), "var_dim dim")
    n = x._shape[d] if x._shape else 1
    centered = elementwise("x - m", [x, reduce(x, "mean", d, keepdim=True)], names=("x", "m"), op="var_dim")
    inv = 1.0 / (n - 1) if n > 1 else float("nan")
    v = reduce(elementwise("c * c * s", [centered], names=("c",), scalars={"s": inv}), "sum", d, keepdim)
    if n == 0:   # a sum over nothing is 0, but the variance of nothing is undefined
        v = Tensor.full(v._shape, float("nan"), v.dtype, v.device)

    def rule(ctx, g):
        (c,) = ctx.saved_tensors
        gk = g.reshape(_kept_shape(c._shape, ctx.dim)) if not ctx.keepdim else g
        return elementwise("L(2.0) * s * c * g", [c, gk], names=("c", "g"), scalars={"s": ctx.inv})

    return record("VarDimBackward", v, [a], rule, saved=(centered,), dim=d, keepdim=keepdim, inv=inv,
                  vrule=_var_dim_vrule)


def _var_dim_vrule(ctx, g):
    (c,) = ctx.saved_tensors
    # x - mean(x) as a Variable of x, without x: the saved centred values, through a node whose gradient
    # is x's (the centring is linear: its gradient is h - mean(h)).
    centered = record("CenterBackward", c, [ctx.input(0, c)], dim=ctx.dim, vrule=_center_vrule)
    gk = g.reshape(_kept_shape(c._shape, ctx.dim)) if not ctx.keepdim else g
    return centered * gk * (2.0 * ctx.inv)


def _center_vrule(ctx, h):
    return h - h.mean_dim(ctx.dim, True)


def max_dim(a, dim, keepdim=False):
    """The maximum along ``dim``; the gradient goes to the first maximal element, as in PyTorch."""
    x = a.data()
    d = normalize_axis(dim, x.ndim(), "max_dim dim")
    values, index = reduce(x, "argmax", d, keepdim)
    return record("MaxDimBackward", values, [a], saved=(index,), shape=x._shape, dim=d, vrule=_max_dim_vrule)


def _along(shape, dim):
    """(kept shape, inner size, size of dim): an element's position along ``dim`` is
    ``(gid / inner) % size`` from its flat index ``gid`` in a contiguous tensor of ``shape``."""
    return _kept_shape(shape, dim), (math.prod(shape[dim + 1:]) if shape else 1), (shape[dim] if shape else 1)


def _max_dim_vrule(ctx, g):
    (idx,) = ctx.saved_tensors
    return at_indices(g, idx, ctx.attrs["shape"], ctx.attrs["dim"])


def at_indices(g, idx, shape, dim):
    """zeros of ``shape`` holding ``g`` at the positions ``idx`` along ``dim`` (max_dim's gradient), in one
    kernel. Differentiable: its gradient reads those positions back (a gather)."""
    t = g._data
    kept, inner, size = _along(shape, dim)
    out = elementwise("(gid / inner) % R == i ? g : L(0.0)",
                      [broadcast_view(t.reshape(kept), shape), broadcast_view(idx.reshape(kept), shape)],
                      names=("g", "i"), int_scalars={"inner": inner, "R": size}, shape=shape)
    return record("AtIndicesBackward", out, [g], saved=(idx,), dim=dim, kept=tuple(kept), gshape=t._shape,
                  vrule=_at_indices_vrule)


def _at_indices_vrule(ctx, h):
    (idx,) = ctx.saved_tensors
    attrs = ctx.attrs
    if not attrs["kept"]:   # a 0-d input is its own maximum
        return h.reshape(list(attrs["gshape"]))
    return h.gather(attrs["dim"], idx.reshape(attrs["kept"])).reshape(list(attrs["gshape"]))


def _kept_shape(shape, dim):
    kept = list(shape)
    if kept:
        kept[dim] = 1
    return kept


# -- torch's spellings: several dims at once, max/min over everything or one dim ------------------------

def _dims(x, dim, op):
    dims = [dim] if not isinstance(dim, (list, tuple)) else list(dim)
    ds = sorted({normalize_axis(d, x.ndim(), f"{op} dim") for d in dims}, reverse=True)
    if len(ds) != len(dims):
        raise ValueError(f"{op}: dim {list(dims)} names an axis twice")
    return ds


@amp.op(lambda a, dim, keepdim, op: op)
def reduce_dims(a, dim, keepdim, op):
    """sum or mean over ``dim`` (None: all, an int, or a tuple), keeping the axes when ``keepdim``."""
    x = a.data()
    if dim is None:
        out = sum_all(a) if op == "sum" else mean_all(a)
        return out.reshape([1] * x.ndim()) if keepdim else out
    one = sum_dim if op == "sum" else mean_dim
    out = a
    for d in _dims(x, dim, op):      # from the last axis down, so the others keep their numbers
        out = one(out, d, True)
    if keepdim:
        return out
    gone = set(_dims(x, dim, op))
    return out.reshape([s for k, s in enumerate(x._shape) if k not in gone])


# torch's ``torch.return_types.max``: unpacks as a pair, and has ``.values`` / ``.indices``.
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def extreme(a, dim, keepdim, op):
    """max or min: over everything (a 0-d Variable) or along ``dim`` (``(values, int32 indices)``).

    The gradient goes to the first extreme element, as max_dim does (torch spreads it over ties).
    """
    x = a.data()
    if x.numel() == 0 and dim is None:
        raise ValueError(f"{op}: cannot reduce an empty tensor of shape {x.shape()}")
    src = a if op == "max" else -a
    if dim is None:
        flat = src.reshape([x.numel()]) if x.ndim() else src.reshape([1])
        values = max_dim(flat, 0)
        if keepdim:
            values = values.reshape([1] * x.ndim())
        return values if op == "max" else -values
    d = normalize_axis(dim, x.ndim(), f"{op} dim")
    values = max_dim(src, d, keepdim)
    indices = src.data().argmax(d, keepdim)
    return ValuesIndices(values if op == "max" else -values, indices)


def arg_extreme(x: Tensor, dim, keepdim, op) -> Tensor:
    """argmax/argmin as an int32 Tensor (the first one), over the flattened tensor when dim is None."""
    src = x if op == "argmax" else -x
    if dim is None:
        idx = src.reshape([x.numel()]).argmax(0)
        return idx.reshape([1] * x.ndim()) if keepdim else idx
    return src.argmax(normalize_axis(dim, x.ndim(), f"{op} dim"), keepdim)


def variance(a, dim, correction, keepdim):
    """torch's ``var``: squared deviations from the mean over ``dim`` (None, an int or a tuple), divided
    by the count minus ``correction`` (1: unbiased, 0: the population variance).

    The value is the corrected two-pass sum, ``(sum d^2 - (sum d)^2 / n) / (n - correction)`` with
    ``d = x - mean``: the second term is zero in exact arithmetic and takes out, to first order, the
    error of the rounded mean (float32 at mean 1e4, std 0.1: the plain sum of squares was 10^4 times
    torch's error). The sums are blocked and compensated (``reduce.cl.mako``), and float32 on a device
    with fp64 is computed in float64 and rounded once at the end, as torch's CPU sums accumulate float32
    in double (without fp64, a GPU: float32 throughout). The gradient is ``2 d / (n - correction)``.
    """
    from ..variable import Variable
    x = a.data()
    dims = list(range(x.ndim())) if dim is None else _dims(x, dim, "var")
    count = math.prod(x._shape[d] for d in dims) if x.ndim() else 1
    denom = count - correction
    over = dims if x.ndim() else None
    wide = x.dtype == np.float32 and x.device.target.fp64
    c = Variable(x.astype(np.float64) if wide else x)  # values only: the rule below is the gradient
    centered = c - reduce_dims(c, over, True, "mean")
    total = reduce_dims(centered * centered, over, keepdim, "sum")._data
    s = reduce_dims(centered, over, keepdim, "sum")._data
    out = elementwise("(t - s * s * inv_n) * inv_d", [total, s], names=("t", "s"), dtype=x.dtype, op="var",
                      scalars={"inv_n": 1.0 / count if count else 0.0,
                               "inv_d": 1.0 / denom if denom > 0 else float("nan")})
    return record("VarBackward", out, [a], saved=(x,), over=over, keep=keepdim, denom=denom, vrule=_var_vrule)


def _var_vrule(ctx, g):
    (xs,) = ctx.saved_tensors
    xv = ctx.input(0, xs)
    over, denom = ctx.attrs["over"], ctx.attrs["denom"]
    if not ctx.attrs["keep"] and over is not None:
        g = g.reshape([1 if k in over else n for k, n in enumerate(xs._shape)])
    d = xv - reduce_dims(xv, over, True, "mean")
    return (d * g * (2.0 / denom if denom > 0 else float("nan")),)


def amax(a, dim, keepdim, op):
    """amax/amin over ``dim`` (an int or a tuple; None: everything) without indices."""
    x = a.data()
    if dim is None:
        return extreme(a, None, keepdim, "max" if op == "amax" else "min")
    out = a
    for d in _dims(x, dim, op):
        out = extreme(out, d, True, "max" if op == "amax" else "min")[0]
    if keepdim:
        return out
    gone = set(_dims(x, dim, op))
    return out.reshape([s for k, s in enumerate(x._shape) if k not in gone])


def logsumexp(a, dim, keepdim):
    """log(sum(exp(x))) over ``dim``, shifted by the (constant) maximum so nothing overflows."""
    x = a.data()
    m = reduce(x, "max", normalize_axis(dim, x.ndim(), "logsumexp dim"), keepdim=True) if x.ndim() else x
    # An infinite maximum would turn x - m into NaN; shifting by 0 there gives torch's answer.
    m = elementwise("isinf(m) ? L(0.0) : m", [m], names=("m",))
    from ..variable import Variable
    mv = Variable(m)
    s = (a - mv).exp().sum(dim, keepdim=True).log() + mv
    return s if keepdim else s.reshape([n for k, n in enumerate(x._shape) if k != normalize_axis(dim, x.ndim())])


@amp.op("norm")
def norm(a, p, dim, keepdim):
    """The p-norm over ``dim`` (None: everything): p = 2 (default), 1, inf, -inf or any positive number."""
    if p in ("fro", 2, 2.0):
        return reduce_dims(a * a, dim, keepdim, "sum").sqrt()
    if p in (1, 1.0):
        return reduce_dims(a.abs(), dim, keepdim, "sum")
    if p == float("inf"):
        return amax(a.abs(), dim, keepdim, "amax")
    if p == float("-inf"):
        return amax(a.abs(), dim, keepdim, "amin")
    if not isinstance(p, (int, float)) or isinstance(p, bool) or p <= 0:
        raise ValueError(f"norm: p must be a positive number, inf, -inf or 'fro', got {p!r}")
    return reduce_dims(a.abs().pow(float(p)), dim, keepdim, "sum").pow(1.0 / p)


def _scan(x: Tensor, d: int, op: str, reverse=False, exclusive=False, kernel="scan", inputs=None) -> Tensor:
    """Running sums/products of ``x`` along axis ``d`` (``cl_kernels/scan.cl.mako``): a work-item per
    column. ``kernel``/``inputs`` run another walk of that template over the same columns (cumprod's
    gradient reads ``g`` and ``x``: ``inputs`` by parameter name)."""
    check_index32(f"cum{op}", x)
    out = Tensor._wrap(x._shape, x.dtype, x.device)
    R = x._shape[d]
    if x.numel() and R:
        dev = x.device
        inner = math.prod(x._shape[d + 1:])
        n = x.numel() // R
        # 16-bit: the running sums/products in float32 on float32 copies, each rounded once
        dtype, args, originals = kernels.float32_working_copies(x.dtype, dict(inputs or dict(x=x), out=out))
        knl = kernels.get_kernel(dev, "scan.cl.mako", kernel, ctype=kernels.ctype(dtype), op=op,
                                 reverse=bool(reverse), exclusive=bool(exclusive))
        local = kernels.fit_local(dev, knl, dev.target.local_size(64)) if dev.target.is_gpu else 1
        kernels.launch(dev, knl, (kernels.round_up(n, local),), (local,), **args, R=R, inner=inner, n=n)
        kernels.write_back(knl, args, originals)
    return out


@amp.op("cumsum")
def cumsum(a, dim):
    """Running sums along ``dim``; the gradient is the running sum of ``g`` taken backwards."""
    x = a.data()
    if x.ndim() == 0:
        return a * 1.0
    d = normalize_axis(dim, x.ndim(), "cumsum dim")
    return record("CumsumBackward", _scan(x, d, "sum"), [a], dim=d, vrule=_cumsum_vrule)


def _cumsum_vrule(ctx, g):
    return cumsum_reversed(g, ctx.attrs["dim"])


def cumsum_reversed(g, d):
    """Running sums of ``g`` along ``d`` taken from the end (cumsum's gradient), in one kernel.
    Differentiable: its gradient is cumsum."""
    return record("CumsumReversedBackward", _scan(g._data, d, "sum", reverse=True), [g], dim=d,
                  vrule=lambda ctx, h: cumsum(h, ctx.attrs["dim"]))


@amp.op("cumprod")
def cumprod(a, dim):
    """Running products along ``dim``. The gradient comes from a backward recurrence with no division,
    so it is exact where elements are 0 (``cl_kernels/scan.cl.mako``)."""
    x = a.data()
    if x.ndim() == 0:
        return a * 1.0
    if x.dtype.kind != "f":   # integers: no gradient, torch's dtype (sums and products of ints are int64)
        return record("CumprodBackward", _scan(x.astype("int64"), normalize_axis(dim, x.ndim(), "cumprod dim"),
                                               "prod"), [a], None)
    d = normalize_axis(dim, x.ndim(), "cumprod dim")

    def rule(ctx, g):
        (xs,) = ctx.saved_tensors
        return _scan(xs, ctx.attrs["dim"], "prod", kernel="cumprod_grad", inputs=dict(g=g.contiguous(), x=xs))

    return record("CumprodBackward", _scan(x, d, "prod"), [a], rule, saved=(x,), dim=d, vrule=_cumprod_vrule)


def _cumprod_vrule(ctx, g):
    """dL/dx_i = sum_{k >= i} g_k prod_{j <= k, j != i} x_j, written with differentiable ops: for each i, the
    running product of x with x_i set to 1, masked to k >= i (O(R^2) memory: for higher orders only)."""
    (xs,) = ctx.saved_tensors
    d = ctx.attrs["dim"]
    x = ctx.input(0, xs)
    nd = x.ndim()
    R = xs._shape[d]
    xm = x.unsqueeze(d)                                    # [..., 1(i), R(j), ...]
    shape = list(xm.shape())
    shape[d] = R
    eye = elementwise("(gid / R) == (gid % R)", [], names=(), int_scalars={"R": R}, shape=(R, R),
                      dtype=np.bool_, device=xs.device, op="cumprod eye")
    later = elementwise("(gid % R) >= (gid / R)", [], names=(), int_scalars={"R": R}, shape=(R, R),
                        dtype=np.bool_, device=xs.device, op="cumprod mask")
    lead = [1] * d
    trail = [1] * (nd - d - 1)
    eye_b = eye.reshape(lead + [R, R] + trail)
    later_b = later.reshape(lead + [R, R] + trail)
    from ..variable import Variable
    ones = Variable(Tensor.ones([1], xs.dtype, xs.device))
    replaced = ones.where(eye_b, xm.expand(shape))         # x with x_i := 1 in row i
    running = replaced.cumprod(d + 1)                      # [..., i, k, ...]
    contrib = running.where(later_b, Variable(Tensor.zeros([1], xs.dtype, xs.device)))
    return (contrib * g.unsqueeze(d)).sum(d + 1)


@amp.op("prod")
def prod(a, dim=None, keepdim=False):
    """The product over ``dim`` (None: everything). The gradient of each element is the product of all
    the others (prefix times suffix products), exact when some elements are 0."""
    x = a.data()
    if dim is None:
        flat = a.reshape([x.numel()]) if x.ndim() else a.reshape([1])
        out = prod(flat, 0)
        return out.reshape([1] * x.ndim()) if keepdim else out
    d = normalize_axis(dim, x.ndim(), "prod dim") if x.ndim() else 0
    if x.ndim() == 0:
        return a * 1.0
    R = x._shape[d]
    kept = list(x._shape)
    kept[d] = 1
    if R == 0:
        ones = Tensor.ones(kept if keepdim else [s for k, s in enumerate(x._shape) if k != d], x.dtype, x.device)
        return record("ProdBackward", ones, [a], shape=x._shape,
                      vrule=lambda ctx, g: dv.const(g, Tensor.zeros(ctx.attrs["shape"], g.dtype, g.device)))
    running = _scan(x, d, "prod")
    out = running.narrow(d, R - 1, 1)
    if not keepdim:
        out = out.reshape([s for k, s in enumerate(x._shape) if k != d])

    def rule(ctx, g):
        (xs,) = ctx.saved_tensors
        dd = ctx.attrs["dim"]
        before = _scan(xs, dd, "prod", exclusive=True)
        after = _scan(xs, dd, "prod", reverse=True, exclusive=True)
        spread = broadcast_view(g.reshape(ctx.attrs["kept"]), xs._shape)
        return elementwise("g * p * q", [spread, before, after], names=("g", "p", "q"))

    return record("ProdBackward", out, [a], rule, saved=(x,), dim=d, kept=kept, vrule=_prod_vrule)


def _prod_vrule(ctx, g):
    (xs,) = ctx.saved_tensors
    d = ctx.attrs["dim"]
    x = ctx.input(0, xs)
    shape = list(xs._shape)
    R = shape[d]
    # The product of the others, exact with zeros and differentiable: x along a new axis (j) next to d
    # (i), with the diagonal i == j set to 1, multiplied over j. Each order of differentiation adds such
    # an axis, so the k-th derivative holds R^k times x's elements.
    spread = x.unsqueeze(d).expand(shape[:d] + [R] + shape[d:])
    diagonal = elementwise("(gid / inner) % R == (gid / (inner * R)) % R ? 1 : 0", [], names=(),
                           int_scalars={"inner": math.prod(shape[d + 1:]), "R": R},
                           shape=tuple(shape[:d] + [R] + shape[d:]), dtype="int32", device=xs.device)
    others = spread.masked_fill(diagonal, 1.0).prod(d + 1)
    return dv.expand_to(g, ctx.attrs["kept"], shape) * others
