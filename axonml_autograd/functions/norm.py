"""Layer norm and batch norm: one fused kernel forward and one backward each (``cl_kernels/norm.cl.mako``).

layer_norm's backward writes dx and, per block of rows, the column sums that make dweight and dbias;
a column reduction over the blocks finishes them (no reduction at all when there is one block).
batch_norm's backward writes dx, dweight and dbias in one kernel (a channel per work-item or group).
"""

from __future__ import annotations

import math


from .. import amp
from .. import kernels
from . import differentiable as dv
from ..grad_fn import record
from ..tensor import Tensor, check_index32
from ..dtypes import compute_dtype
from ..rows import reduce
from .activation import _floats

_TEMPLATE = "norm.cl.mako"


def _kernel(device, dtype, which, cols=0, **params):
    """(kernel, strategy, local size): a work-item per row on CPUs, a work-group per row on GPUs."""
    t = device.target
    strategy = "local" if t.is_gpu else "serial"
    ct = kernels.ctype(dtype)
    # Every template parameter is named (the template is strict about undefined names).
    full = dict(has_weight=False, has_bias=False, affine=False, has_running=False, training=False,
                cumulative=False)
    full.update(params)
    # The target's vector width (16 floats with AVX-512, 8 with AVX2): measured 25 % quicker than a
    # fixed 8 on an AVX-512 Xeon for layer_norm forward + backward; narrower where it does not build.
    # Then fewer work-items, where the built kernel allows fewer than the target's work-group.
    local, knl = kernels.first_that_builds(
        device, f"norm {which} {ct}",
        [(vw, n) for n in (t.local_sizes(256) if t.is_gpu else [1]) for vw in t.vector_widths(dtype)],
        lambda c: (c[1], kernels.get_kernel(device, _TEMPLATE, which, ctype=ct, vw=c[0], strategy=strategy,
                                            local_size=c[1], local=c[1], aligned=_aligned(cols, c[0], strategy),
                                            **full)))
    return knl, strategy, local


def _aligned(cols, vw, strategy) -> bool:
    """Whether every row of a layer_norm starts on a vector boundary (rows of ``cols`` elements from the
    start of a buffer): then its vectors are plain pointer loads (on PoCL vloadn stays a call)."""
    return strategy == "serial" and vw > 1 and cols > 0 and cols % vw == 0


def _input(a, op) -> Tensor:
    """The input as floats; the norm kernels index in 32 bits, so larger inputs are refused here."""
    check_index32(op, a.data())
    return _floats(a.data())


def _same(t: Tensor, like: Tensor, what, op):
    if t.device is not like.device:
        raise ValueError(f"{op}: {what} is on another device than the input")
    return t if t.dtype == like.dtype else t.astype(like.dtype)


@amp.op("layer_norm")
def layer_norm(a, normalized_shape, weight=None, bias=None, eps=1e-5):
    """torch's ``F.layer_norm``: normalise over the trailing ``normalized_shape`` axes, then
    ``* weight + bias`` (each optional, of shape ``normalized_shape``)."""
    x = _input(a, "layer_norm")
    shape = tuple(int(s) for s in normalized_shape)
    if not shape or x._shape[x.ndim() - len(shape):] != shape or x.ndim() < len(shape):
        raise ValueError(f"layer_norm: input of shape {x.shape()} does not end in normalized_shape "
                         f"{list(shape)}")
    for what, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape()) != shape:
            raise ValueError(f"layer_norm: {what} of shape {p.shape()} for normalized_shape {list(shape)}")
    cols = math.prod(shape)
    rows = x.numel() // cols if cols else 0
    dev = x.device
    w = _same(weight.data(), x, "weight", "layer_norm") if weight is not None else None
    b = _same(bias.data(), x, "bias", "layer_norm") if bias is not None else None
    y = Tensor._wrap(x._shape, x.dtype, dev)
    # The statistics in the compute type: float32 for a 16-bit input (whose kernel runs on float32 copies
    # and rounds y once), so the backward reads them unrounded.
    cdt = compute_dtype(x.dtype)
    mean = Tensor._wrap((rows,), cdt, dev)
    rstd = Tensor._wrap((rows,), cdt, dev)
    if rows and cols:
        knl, strategy, local = _kernel(dev, cdt, "forward", cols=cols, kind="layer_norm", has_weight=w is not None,
                                       has_bias=b is not None, affine=w is not None or b is not None)
        # CPUs: blocks of rows per work-item (as the backward); GPUs: a work-group per row.
        groups, per = _blocks(dev, rows, cols) if strategy == "serial" else (rows, 1)
        _, args, originals = kernels.float32_working_copies(x.dtype, dict(x=x, w=w, b=b, y=y))
        kernels.launch(dev, knl, (groups * local,), (local,), mean_out=mean, rstd_out=rstd,
                       eps=eps, rows=rows, cols=cols, per_block=per, **args)
        kernels.write_back(knl, args, originals)

    def rule(ctx, g):
        xs, ms, rs = ctx.saved_tensors[:3]
        ws = ctx.saved_tensors[3] if ctx.attrs["has_weight"] else None
        return layer_norm_backward(g, xs, ms, rs, ws, ctx.attrs["has_bias"], ctx.attrs["rows"], ctx.attrs["cols"],
                                   ctx.attrs["shape"])

    saved = (x, mean, rstd) + ((w,) if w is not None else ())
    return record("NativeLayerNormBackward", y, [a, weight, bias], rule, saved=saved, rows=rows, cols=cols,
                  shape=shape, has_weight=w is not None, has_bias=b is not None, eps=eps, vrule=_layer_norm_vrule)


def _normalized_grads(ctx, g, x, dims, wdims, wshape, stats=None, eps=None):
    """The gradients of ``y = xhat * w + b`` over Variables, ``xhat`` normalised over ``dims`` of ``x``
    with the statistics recomputed from ``x`` (so the rule is differentiable in ``x`` to any order), or
    with constant ``stats`` (mean, inverse std) when they were fixed (batch norm in eval mode); ``w`` and
    ``b`` (``wshape``, broadcast) are shared along ``wdims``."""
    saved = ctx.saved_tensors
    has_weight = len(saved) > 3
    if stats is None:
        xc = x - x.mean(dims, keepdim=True)
        rstd = ((xc * xc).mean(dims, keepdim=True) + eps).pow(-0.5)
    else:
        xc = x - dv.const(g, stats[0])
        rstd = dv.const(g, stats[1])
    xhat = xc * rstd
    gh = g * ctx.input(1, saved[3]).reshape(wshape) if has_weight else g
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        if stats is None:
            gx = rstd * (gh - gh.mean(dims, keepdim=True) - xhat * (gh * xhat).mean(dims, keepdim=True))
        else:
            gx = gh * rstd
    if ctx.needs_input_grad[1]:
        gw = (g * xhat).sum(wdims)
    if ctx.needs_input_grad[2]:
        gb = g.sum(wdims)
    return gx, gw, gb


def _layer_norm_vrule(ctx, g):
    xs = ctx.saved_tensors[0]
    rows, cols, shape = ctx.attrs["rows"], ctx.attrs["cols"], list(ctx.attrs["shape"])
    if not (rows and cols):
        return dv.zeros(ctx.input(0, xs)), *(dv.zeros(g.__class__(Tensor.zeros(shape, xs.dtype, xs.device))),) * 2
    x = ctx.input(0, xs).reshape([rows, cols])
    gx, gw, gb = _normalized_grads(ctx, g.reshape([rows, cols]), x, 1, 0, [1, cols], eps=ctx.attrs["eps"])
    return (gx.reshape(list(xs._shape)) if gx is not None else None, gw.reshape(shape) if gw is not None else None,
            gb.reshape(shape) if gb is not None else None)


def _blocks(device, rows, cols):
    """(blocks, rows per block) for layer_norm's backward: enough blocks to fill the device, each long
    enough that the partial column sums are a small part of the traffic."""
    t = device.target
    want = (16 if t.is_gpu else t.items_per_unit) * t.compute_units
    per = max(1, -(-rows // want))
    per = max(per, min(rows, 8))
    return -(-rows // per), per


def layer_norm_backward(g, x, mean, rstd, w, has_bias, rows, cols, shape):
    """dx, and (with a weight or a bias) dweight and dbias. The kernel is built with the forward's
    parameters, so both live in one program."""
    dev = x.device
    affine = w is not None or has_bias
    g = g if g.dtype == x.dtype else g.astype(x.dtype)
    if x.dtype.itemsize == 2:   # float16/bfloat16: the float32 path on float32 copies, each result rounded once
        up = lambda t: None if t is None else t.astype("float32")   # noqa: E731
        grads = layer_norm_backward(up(g), up(x), mean, rstd, up(w), has_bias, rows, cols, shape)
        return tuple(None if t is None else t.astype(x.dtype) for t in grads)
    dx = Tensor._wrap(x._shape, x.dtype, dev)
    gw = gb = None
    if not (rows and cols):
        zero = Tensor.zeros(shape, x.dtype, dev)
        return Tensor.zeros(x._shape, x.dtype, dev), zero, zero
    nblk, per = _blocks(dev, rows, cols)
    # The weight's and the bias's partial column sums in tensors of their own, each summed over the blocks
    # straight into its gradient (one [nblk, 2, cols] tensor needed two narrow copies after its sum).
    pw, pb = (Tensor._wrap((nblk, cols), x.dtype, dev) for _ in range(2)) if affine else (None, None)
    knl, strategy, local = _kernel(dev, x.dtype, "backward", cols=cols, kind="layer_norm", has_weight=w is not None,
                                   has_bias=has_bias, affine=affine)
    kernels.launch(dev, knl, (nblk * local,), (local,), g=g, x=x, mean_in=mean, rstd_in=rstd, w=w, partial_w=pw,
                   partial_b=pb, dx=dx, rows=rows, cols=cols, per_block=per)
    if affine:
        gw, gb = ((p if nblk == 1 else reduce(p, "sum", 0)).reshape(shape) for p in (pw, pb))
    return dx, gw, gb


def batch_norm(a, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               num_batches_tracked=None):
    """torch's ``F.batch_norm`` over ``[N, C]``, ``[N, C, L]`` or ``[N, C, H, W]`` (any ``[N, C, ...]``).

    ``training``: normalise with the batch's statistics and, when running buffers are given, update
    them in place on the device (``momentum``, or with ``momentum=None`` the cumulative average over
    ``num_batches_tracked``, which the caller has already advanced). Otherwise the running statistics.
    """
    x = _input(a, "batch_norm")
    if x.ndim() < 2:
        raise ValueError(f"batch_norm: expected input of shape [N, C, ...], got {x.shape()}")
    N, C = x._shape[0], x._shape[1]
    S = math.prod(x._shape[2:])
    dev = x.device
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var go together (both or neither)")
    if not training and running_mean is None:
        raise ValueError("batch_norm: eval mode needs running_mean and running_var")
    if training and N * S <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input "
                         f"of shape {x.shape()}")
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and list(t.shape()) != [C]:
            raise ValueError(f"batch_norm: {what} of shape {list(t.shape())} for an input with {C} channels "
                             f"(input shape {x.shape()})")
    rm = running_mean.data() if running_mean is not None and not isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data() if running_var is not None and not isinstance(running_var, Tensor) else running_var
    # (A 16-bit input may have float32 running statistics, as torch's: they are read and updated as they are.)
    if rm is not None and (rm.dtype not in (x.dtype, compute_dtype(x.dtype)) or rv.dtype != rm.dtype):
        raise TypeError(f"batch_norm: running statistics are {rm.dtype}, the input {x.dtype}")
    w = _same(weight.data(), x, "weight", "batch_norm") if weight is not None else None
    b = _same(bias.data(), x, "bias", "batch_norm") if bias is not None else None
    cumulative = training and rm is not None and momentum is None
    if cumulative and num_batches_tracked is None:
        raise ValueError("batch_norm: momentum=None (a cumulative average) needs num_batches_tracked")
    y = Tensor._wrap(x._shape, x.dtype, dev)
    # 16-bit input (and, as for a module converted with .half(), 16-bit running buffers): the kernel runs
    # on float32 copies; y and the updated buffers are rounded once, the batch statistics stay float32.
    cdt = compute_dtype(x.dtype)
    mean = Tensor._wrap((C,), cdt, dev)
    invstd = Tensor._wrap((C,), cdt, dev)
    has_running = rm is not None
    if x.numel():
        knl, strategy, local = _kernel(dev, cdt, "forward", kind="batch_norm", has_weight=w is not None,
                                       has_bias=b is not None, has_running=has_running, training=bool(training),
                                       cumulative=cumulative)
        _, args, originals = kernels.float32_working_copies(x.dtype, dict(x=x, w=w, b=b, running_mean=rm,
                                                                          running_var=rv, y=y))
        kernels.launch(dev, knl, (C * local,), (local,), batches=num_batches_tracked if cumulative else None,
                       mean_out=mean, invstd_out=invstd, eps=eps, momentum=0.0 if momentum is None else momentum,
                       N=N, C=C, S=S, **args)
        kernels.write_back(knl, args, originals)
        if training and has_running:
            rm._version += 1
            rv._version += 1

    flags = dict(has_weight=w is not None, has_bias=b is not None, has_running=has_running, training=bool(training),
                 cumulative=cumulative)

    def rule(ctx, g):
        xs, ms, ivs = ctx.saved_tensors[:3]
        ws = ctx.saved_tensors[3] if ctx.attrs["flags"]["has_weight"] else None
        return batch_norm_backward(g, xs, ms, ivs, ws, ctx.attrs["flags"])

    saved = (x, mean, invstd) + ((w,) if w is not None else ())
    return record("NativeBatchNormBackward", y, [a, weight, bias], rule, saved=saved, flags=flags, eps=eps,
                  vrule=_batch_norm_vrule)


def _batch_norm_vrule(ctx, g):
    """Training: the batch's statistics, recomputed from the input; eval: the running ones, constants."""
    xs, ms, ivs = ctx.saved_tensors[:3]
    N, C = xs._shape[0], xs._shape[1]
    S = math.prod(xs._shape[2:])
    if xs.numel() == 0:
        zero = g.__class__(Tensor.zeros((C,), xs.dtype, xs.device))
        return dv.zeros(ctx.input(0, xs)), zero, zero
    x = ctx.input(0, xs).reshape([N, C, S])
    stats = None if ctx.attrs["flags"]["training"] else (ms.astype(xs.dtype).reshape((1, C, 1)),
                                                         ivs.astype(xs.dtype).reshape((1, C, 1)))
    gx, gw, gb = _normalized_grads(ctx, g.reshape([N, C, S]), x, (0, 2), (0, 2), [1, C, 1], stats, ctx.attrs["eps"])
    return gx.reshape(list(xs._shape)) if gx is not None else None, gw, gb


def batch_norm_backward(g, x, mean, invstd, w, flags):
    """dx, dweight, dbias in one kernel, built with the forward's parameters (``flags``): one program."""
    dev = x.device
    g = g if g.dtype == x.dtype else g.astype(x.dtype)
    if x.dtype.itemsize == 2:   # float16/bfloat16: the float32 path on float32 copies, each result rounded once
        up = lambda t: None if t is None else t.astype("float32")   # noqa: E731
        return tuple(t.astype(x.dtype) for t in batch_norm_backward(up(g), up(x), mean, invstd, up(w), flags))
    N, C = x._shape[0], x._shape[1]
    S = math.prod(x._shape[2:])
    dx = Tensor._wrap(x._shape, x.dtype, dev)
    dw = Tensor._wrap((C,), x.dtype, dev)
    db = Tensor._wrap((C,), x.dtype, dev)
    if x.numel() == 0:
        return dx, Tensor.zeros((C,), x.dtype, dev), Tensor.zeros((C,), x.dtype, dev)
    knl, strategy, local = _kernel(dev, x.dtype, "backward", kind="batch_norm", **flags)
    kernels.launch(dev, knl, (C * local,), (local,), g=g, x=x, mean_in=mean, invstd_in=invstd, w=w, dx=dx, dw=dw,
                   db=db, N=N, C=C, S=S)
    return dx, dw, db
