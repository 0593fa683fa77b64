"""Reductions and row kernels: sum/mean/max/argmax over an axis, softmax and cross-entropy rows, and the
sum of a broadcast gradient back to an operand's shape.

A reduction views a tensor as ``[outer, reduced, inner]``; a work-group reduces in local memory and a
second pass finishes long reductions.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from . import kernels
from .elementwise_kernels import _MAX_WORK_ITEMS
from .shapes import normalize_axis
from .tensor import INT32_MAX, Tensor, check_index32, index_type




_INNER_BLOCK = 16   # inner positions per work-item in the serial (CPU) reduction


def _reduce_layout(device, outer, R, inner, cap=256):
    """(strategy, local size, parts P, chunk, work-items per part-row) for one reduction pass; ``cap``
    bounds the local size (a built kernel may allow fewer work-items than the target)."""
    t = device.target
    if not t.is_gpu:
        blocks = outer * -(-inner // _INNER_BLOCK)
        target = t.items_per_unit * t.compute_units
        P = 1
        if blocks < target and R >= 4096:
            P = min(-(-target // blocks), -(-R // 2048))
        chunk = -(-R // P)
        return "serial", 1, -(-R // chunk), chunk, blocks
    L = min(t.local_size(cap), 256 if R > 512 else 32)
    groups = outer * inner
    P = 1
    if groups < 64 and R > 4 * L:
        P = min(-(-R // (4 * L)), -(-64 // groups))
    chunk = -(-R // P)
    return "local", L, -(-R // chunk), chunk, groups


def _reduce_pass(x: Tensor, op, outer, R, inner, scale, idx=None, dtype=None, out_dtype=None):
    """One pass over [outer, R, inner]; returns (values [outer, P, inner], indices or None, P).

    ``dtype``: the accumulator's and the result's type when it is not ``x``'s (an integer sum in int64,
    a 16-bit float sum in float32). ``out_dtype``: the result's type if this pass finishes the reduction
    (P == 1), rounded once in the kernel (a 16-bit sum's); partial results stay in ``dtype``.
    """
    dev = x.device
    dtype = x.dtype if dtype is None else dtype
    strategy, L, P, chunk, rows = _reduce_layout(dev, outer, R, inner)
    itype = index_type(outer * R * inner, rows * P * L, outer * P * inner)
    with_index = op == "argmax"
    params = dict(ctype=kernels.ctype(dtype), strategy=strategy, op="sum" if op in ("sum", "mean") else "max",
                  with_index=with_index, has_in_idx=idx is not None, inner_block=_INNER_BLOCK)
    if itype == "long":
        params["itype"] = itype
    if dtype != x.dtype:
        params["in_ctype"] = kernels.ctype(x.dtype)
    half = x.dtype.itemsize == 2 and x.dtype.kind == "f" or out_dtype is not None
    if half and strategy == "serial":
        params["half_io"] = "bits"   # as elementwise.cl.mako: PoCL's vload_half/vstore_half are slow calls
    result_dtype = dtype

    def build(n, P):
        nonlocal result_dtype
        finish = out_dtype is not None and P == 1
        result_dtype = out_dtype if finish else dtype
        extra = dict(out_ctype=kernels.ctype(out_dtype)) if finish else {}
        return kernels.get_kernel(dev, "reduce.cl.mako", "reduce", local_size=n, local=n, **params, **extra)

    # The layout's work-group, or fewer work-items where the built kernel allows fewer.
    family = f"reduce {params['ctype']}" + (f" from {params['in_ctype']}" if "in_ctype" in params else "") \
        + (f" to {kernels.ctype(out_dtype)}" if out_dtype is not None else "")
    fit, knl = kernels.first_that_builds(
        dev, family, [L >> k for k in range(L.bit_length())], lambda n: (n, build(n, P)))
    if fit != L:
        strategy, L, P, chunk, rows = _reduce_layout(dev, outer, R, inner, cap=fit)
        knl = build(L, P)
    groups = rows * P
    out = Tensor._wrap((outer, P, inner), result_dtype, dev)
    out_idx = None
    if with_index:
        out_idx = Tensor._wrap((outer, P, inner), np.dtype(np.int32), dev)
    # The 64-bit form walks its rows in a loop (`groups` of them): at most _MAX_WORK_ITEMS work-items.
    launched = min(groups, _MAX_WORK_ITEMS // L) if itype == "long" else groups
    kernels.launch(dev, knl, (launched * L,), (L,), x=x, x_off=0, out=out,
                   # The first pass reads no indices; any buffer fills the slot.
                   in_idx=None if not with_index else idx if idx is not None else out_idx, out_idx=out_idx,
                   R=R, inner=inner, chunk=chunk, P=P, scale=dtype.type(scale if P == 1 else 1.0),
                   groups=groups if itype == "long" else None)
    return out, out_idx, P


def reduce(x: Tensor, op: str, axis=None, keepdim=False, scale=1.0):
    """Sum, mean or max over one axis (or all); ``op="argmax"`` returns ``(max, int32 indices)``.

    A sum or mean is multiplied by ``scale`` in the same kernel.

    Each output is folded in a fixed order, so results are the same bit for bit from run to run.
    """
    shape = x._shape
    if axis is None:
        if op == "argmax":
            raise ValueError("argmax: an axis is required")
        outer, R, inner = 1, max(x.numel(), 0), 1
        out_shape = (1,) * len(shape) if keepdim else ()
    else:
        ax = normalize_axis(axis, x.ndim(), f"{op} dim")
        if not shape:
            outer, R, inner = 1, 1, 1
            out_shape = ()
        else:
            outer, R, inner = math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])
            out_shape = shape[:ax] + ((1,) if keepdim else ()) + shape[ax + 1:]
    if R == 0:
        if op in ("max", "argmax"):
            raise ValueError(f"{op}: cannot reduce an empty dimension of shape {list(shape)}")
        return Tensor.full(out_shape, 0.0 if op == "sum" else float("nan"), x.dtype, x.device)
    if outer * inner == 0:
        res = Tensor(out_shape, x.dtype, x.device)
        return (res, Tensor(out_shape, "int32", x.device)) if op == "argmax" else res
    if op == "mean" and x.dtype.kind != "f":
        return reduce(x.astype("float32"), op, axis, keepdim, scale)
    half = x.dtype.itemsize == 2
    if half and op not in ("sum", "mean"):
        # float16/bfloat16 max/argmax: on a float32 copy, the result rounded back (exact).
        res = reduce(x.astype("float32"), op, axis, keepdim, scale)
        return (res[0].astype(x.dtype), res[1]) if op == "argmax" else res.astype(x.dtype)
    if op == "argmax" and R > INT32_MAX:
        raise ValueError(f"argmax: a dimension of {R} elements is beyond what argmax supports ({INT32_MAX}, "
                         "int32 positions)")
    # torch: integer sums are int64; a bool or int32 tensor is read as it is and summed in int64.
    acc_dtype = np.dtype(np.int64) if op == "sum" and x.dtype.kind != "f" else None
    if x.dtype.kind == "b" and acc_dtype is None:   # max of a mask: in int32, then back
        res = reduce(x.astype("int32"), op, axis, keepdim, scale)
        return (res[0].astype("bool"), res[1]) if op == "argmax" else res.astype("bool")
    scale = scale / R if op == "mean" else scale
    # float16/bfloat16 sums and means read the 16-bit tensor itself, accumulate in float32 and round
    # the result once, in the last pass (as torch).
    out_dtype = x.dtype if half else None
    if half:
        acc_dtype = np.dtype(np.float32)
    try:
        vals, idx, P = _reduce_pass(x, op, outer, R, inner, scale, dtype=acc_dtype, out_dtype=out_dtype)
        while P > 1:
            vals, idx, P = _reduce_pass(vals, op, outer, P, inner, scale, idx=idx, out_dtype=out_dtype)
    except kernels.KernelBuildError as e:
        if not half:
            raise
        # A device that cannot build the 16-bit reads: the float32 kernels on a float32 copy.
        kernels.warn_fallback(x.device, f"reduce from {kernels.ctype(x.dtype)}", "a float32 copy", e)
        return reduce(x.astype("float32"), op, axis, keepdim, scale * R if op == "mean" else scale).astype(x.dtype)
    vals = vals.reshape(out_shape)
    if op == "argmax":
        return vals, idx.reshape(out_shape)
    return vals


_CE_FLAGS = dict(weighted=False, smoothing=False, nll=False, count=False, g_rows=False, has_den=False)


def _softmax_launch(device, op, which, rows, cols, dtype, flags=None, xtype=None, **args) -> None:
    """Enqueue kernel ``which`` of softmax.cl.mako over ``rows`` rows of ``cols``, ``args`` by name;
    ``xtype``: cross_entropy's logits (and their gradient) in that 16-bit type, the rest in ``dtype``."""
    check_index32(op, rows * cols)
    if dtype.itemsize == 2:
        raise TypeError(f"{op}: {dtype} tensors are not supported by {op} yet; convert with .float() first")
    t = device.target
    strategy = "local" if t.is_gpu else "serial"
    locals_ = t.local_sizes(256 if cols > 512 else 64) if t.is_gpu else [1]
    params = dict(ctype=kernels.ctype(dtype), op=op, strategy=strategy, **(flags or _CE_FLAGS))
    if xtype is not None:   # 16-bit logits, read and written as they are
        params["xtype"] = kernels.ctype(xtype)
        if not t.is_gpu:
            params["half_io"] = "bits"   # as the reduce template: PoCL's vload_half/vstore_half are slow calls
    # The target's width and work-group, then narrower widths, then fewer work-items.
    local, knl = kernels.first_that_builds(
        device, f"softmax rows {which} {params['ctype']}" + (f" from {params['xtype']}" if xtype is not None else ""),
        [(vw, n) for n in locals_ for vw in t.vector_widths(dtype)],
        lambda c: (c[1], kernels.get_kernel(device, "softmax.cl.mako", which, vw=c[0], local_size=c[1], local=c[1],
                                            **params)))
    global_size = rows * local if t.is_gpu else rows
    kernels.launch(device, knl, (global_size,), (local,), rows=rows, cols=cols, **args)


def softmax_rows(x: Tensor, log: bool = False) -> Tensor:
    """Softmax (or log-softmax) along the last axis, one pass per row (a 16-bit ``x`` in float32, the
    result rounded once to its type)."""
    if x.dtype.itemsize == 2:
        return softmax_rows(x.astype("float32"), log).astype(x.dtype)
    y = Tensor._wrap(x._shape, x.dtype, x.device)
    cols = x._shape[-1]
    if x.numel():
        _softmax_launch(x.device, "log_softmax" if log else "softmax", "forward", x.numel() // cols, cols,
                        x.dtype, x=x, y=y)
    return y


def softmax_rows_backward(g: Tensor, y: Tensor, log: bool = False) -> Tensor:
    """The gradient of softmax_rows at output ``y`` for incoming gradient ``g`` (same shape)."""
    if y.dtype.itemsize == 2:
        return softmax_rows_backward(g.astype("float32"), y.astype("float32"), log).astype(y.dtype)
    gx = Tensor._wrap(y._shape, y.dtype, y.device)
    cols = y._shape[-1]
    if y.numel():
        _softmax_launch(y.device, "log_softmax" if log else "softmax", "backward", y.numel() // cols, cols,
                        y.dtype, g=g, y=y, gx=gx)
    return gx


def cross_entropy_rows(x: Tensor, targets: Tensor, weight: Optional[Tensor] = None, ignore_index: int = -100,
                       label_smoothing: float = 0.0, nll: bool = False, count: bool = False):
    """Per-row cross-entropy of logits ``x`` [rows, cols] against int32 class indices [rows].

    Returns ``(loss, lse)``: the rows' losses ([rows]; with ``count``, [2, rows]: first each row's
    weight, ``weight[target]`` or 1, 0 where the target is ``ignore_index``, then the losses) and each row's
    log-sum-exp, which the backward needs. A target outside [0, cols) other than ``ignore_index`` gives
    NaN. ``nll``: ``x`` holds log-probabilities already (no softmax; the lse is not written).
    One pass per row: log-softmax is never materialised.
    """
    # 16-bit logits are read as they are and computed in float32: loss and lse are float32.
    half = x.dtype.itemsize == 2
    dtype = np.dtype(np.float32) if half else x.dtype
    if half and weight is not None:
        weight = weight.astype(dtype)
    rows, cols = x._shape
    loss = Tensor._wrap((2, rows) if count else (rows,), dtype, x.device)
    lse = Tensor._wrap((rows,), dtype, x.device)
    if rows:
        # has_den follows count (a mean counts in forward and divides in backward): the backward's flags
        # are then the forward's and both kernels come from one program (one build less on a cold start).
        flags = dict(_CE_FLAGS, weighted=weight is not None, smoothing=label_smoothing > 0, nll=nll, count=count,
                     has_den=count)
        try:
            _softmax_launch(x.device, "cross_entropy", "forward", rows, cols, dtype, flags, x.dtype if half else None,
                            x=x, target=targets, weight=weight, lse=lse, loss=loss, ignore_index=ignore_index,
                            smooth=label_smoothing)
        except kernels.KernelBuildError as e:
            if not half:
                raise
            kernels.warn_fallback(x.device, f"cross_entropy rows from {kernels.ctype(x.dtype)}", "float32 copies", e)
            return cross_entropy_rows(x.astype("float32"), targets, weight, ignore_index, label_smoothing, nll, count)
    return loss, lse


def cross_entropy_rows_backward(g: Tensor, x: Tensor, targets: Tensor, lse: Tensor, scale: float,
                                weight: Optional[Tensor] = None, ignore_index: int = -100,
                                label_smoothing: float = 0.0, nll: bool = False, den: Optional[Tensor] = None
                                ) -> Tensor:
    """The gradient of :func:`cross_entropy_rows`: ``g * scale (/ den[0])`` times each row's derivative,
    ``g`` one element or one per row (0 on ignored and invalid rows)."""
    # 16-bit logits: computed in float32 from them as they are, the gradient written rounded once.
    half = x.dtype.itemsize == 2
    dtype = np.dtype(np.float32) if half else x.dtype
    g, weight = (None if t is None else t if t.dtype == dtype else t.astype(dtype) for t in (g, weight))
    gx = Tensor._wrap(x._shape, x.dtype, x.device)
    rows, cols = x._shape
    if x.numel():
        flags = dict(_CE_FLAGS, weighted=weight is not None, smoothing=label_smoothing > 0, nll=nll,
                     g_rows=g.numel() != 1 or (rows == 1 and g.ndim() == 1), has_den=den is not None,
                     count=den is not None)
        try:
            _softmax_launch(x.device, "cross_entropy", "backward", rows, cols, dtype, flags,
                            x.dtype if half else None, g=g, x=x, target=targets, weight=weight, lse=lse, den=den,
                            gx=gx, scale=scale, ignore_index=ignore_index, smooth=label_smoothing)
        except kernels.KernelBuildError as e:
            if not half:
                raise
            kernels.warn_fallback(x.device, f"cross_entropy rows from {kernels.ctype(x.dtype)}", "float32 copies", e)
            return cross_entropy_rows_backward(g, x.astype("float32"), targets, lse, scale, weight, ignore_index,
                                               label_smoothing, nll, den).astype(x.dtype)
    return gx


def sum_to_shape(g: Tensor, shape) -> Tensor:
    """Sum ``g`` over the axes that broadcasting added or stretched, giving a tensor of ``shape``.

    >>> g = Tensor.ones([3, 4])
    >>> sum_to_shape(g, [3, 1]).to_vec()
    [4.0, 4.0, 4.0]
    """
    shape = tuple(shape)
    if tuple(g._shape) == shape:
        return g
    lead = g.ndim() - len(shape)
    if lead > 0:
        g = reduce(g.reshape((math.prod(g._shape[:lead]),) + g._shape[lead:]), "sum", 0)
    for k, s in enumerate(shape):
        if s == 1 and g._shape[k] != 1:
            g = reduce(g, "sum", k, keepdim=True)
    return g.reshape(shape)
