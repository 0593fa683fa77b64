"""Resampling, torch's semantics: ``interpolate`` (nearest, nearest-exact, linear, bilinear, area), the
non-constant modes of ``pad`` (reflect, replicate, circular), ``adaptive_max_pool2d``, 1-D pooling, pixel
(un)shuffle and ``unfold``/``fold``.

Interpolation (``cl_kernels/interp.cl.mako``) and padding (``cl_kernels/pad.cl.mako``) are one kernel
each way; both are linear maps P of the input, so their gradient is the adjoint P^T (a gather with a
fixed order of summation: no atomics) and the adjoint's gradient is P again: each direction is a
recorded op whose rules record the other, exact to every order, as the pools in ``conv.py``. 1-D
pooling runs the 2-D pools over a unit axis; ``unfold``/``fold`` are the convolution's im2col/col2im
(each the other's gradient); pixel (un)shuffle is a reshape and a permute.

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2]), requires_grad=True)
>>> interpolate(x, scale_factor=2, mode="nearest").shape()
[1, 1, 4, 4]
>>> interpolate(x, size=(3, 3), mode="bilinear", align_corners=True).to_vec()
[1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]
>>> pad(x, (1, 1, 0, 0), mode="reflect").to_vec()
[2.0, 1.0, 2.0, 1.0, 4.0, 3.0, 4.0, 3.0]
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import kernels
from ..grad_fn import record
from ..tensor import Tensor, check_index32
from . import conv as _conv

_INTERP = "interp.cl.mako"
_PAD = "pad.cl.mako"


def _launch(template, name, dtype, n, args: dict, rows_of=None, **params):
    """Enqueue ``name`` over ``n`` elements; with ``rows_of`` (a row's length) on a CPU, one work-item per
    row (the template's ``rows`` form)."""
    tensors = [a for a in args.values() if isinstance(a, Tensor)]
    dev = tensors[0].device
    check_index32(name, n, *tensors)
    rows = rows_of is not None and not dev.target.is_gpu
    if rows_of is not None:
        params["rows"] = rows
        if rows:
            n //= rows_of
    dtype, args, originals = kernels.float32_working_copies(dtype, args)   # 16-bit: in float32, rounded once
    knl = kernels.get_kernel(dev, template, name, ctype=kernels.ctype(dtype), **params)
    local = 1 if rows else kernels.fit_local(dev, knl, dev.target.local_size(256 if dev.target.is_gpu else 64))
    kernels.launch(dev, knl, (kernels.round_up(n, local),), (local,), n=n, **args)
    kernels.write_back(knl, args, originals)


def _is_int(v):
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v):
    return isinstance(v, (numbers.Real, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_))


# ------------------------------------------------------------------------------------------------------
# Linear maps recorded both ways
# ------------------------------------------------------------------------------------------------------
# A kind's forward map P (direction 0) and its adjoint P^T (direction 1), each as a function of a Tensor
# and the kind's parameters, with the node names of the two directions.

def _interp_apply(direction, t: Tensor, p) -> Tensor:
    NC, H, W, OH, OW, sh, sw, align, mh, mw, x_shape, y_shape = p
    out = Tensor._wrap(x_shape if direction else y_shape, t.dtype, t.device)   # [N, C, *spatial]
    if out.numel():
        name, src, dst = ("interp_backward", "g", "dx") if direction else ("interp_forward", "x", "y")
        _launch(_INTERP, name, t.dtype, out.numel(), {src: t, dst: out, "H": H, "W": W, "OH": OH, "OW": OW,
                                                      "scale_h": sh, "scale_w": sw, "align": align},
                rows_of=W if direction else OW, mh=mh, mw=mw)
    return out


def _pad_apply(direction, t: Tensor, p) -> Tensor:
    """Pad (direction 0) or its adjoint over the axes in ``p``'s list, one launch per axis; the adjoint
    runs them in the reverse order."""
    if t.dtype.itemsize == 2:   # float16/bfloat16: every axis' pass in float32, the result rounded once
        return _pad_apply(direction, t.astype("float32"), p).astype(t.dtype)
    mode, in_shape, axes = p
    shape = list(in_shape)
    shapes = []                      # the shape before each axis' pass
    for axis, before, after in axes:
        shapes.append(tuple(shape))
        shape[axis] += before + after
    steps = list(zip(axes, shapes))
    for (axis, before, after), before_shape in (reversed(steps) if direction else steps):
        N, Q = before_shape[axis], math.prod(before_shape[axis + 1:])   # the axis, and the elements after it
        OUT = N + before + after
        C0, M = 0, N
        if mode == "circular":   # torch crops the negative pads first and wraps what is left
            C0, M = max(-before, 0), N + min(before, 0) + min(after, 0)
            before = max(before, 0)
        out_shape = list(before_shape)
        out_shape[axis] = OUT
        out = Tensor._wrap(tuple(before_shape) if direction else tuple(out_shape), t.dtype, t.device)
        if out.numel():
            name, src, dst = ("pad_backward", "g", "dx") if direction else ("pad_forward", "x", "y")
            _launch(_PAD, name, t.dtype, out.numel(), {src: t, dst: out, "N": N, "Q": Q, "OUT": OUT,
                                                       "before": before, "C0": C0, "M": M}, mode=mode)
        t = out
    return t


def _fold_apply(direction, t: Tensor, p) -> Tensor:
    """unfold (direction 0, im2col) or fold (1, col2im): [N, C, H, W] <-> [N, C*kh*kw, L]."""
    x_shape, geom = p
    N, C, H, W = x_shape
    K, L = C * geom[4] * geom[5], geom[2] * geom[3]
    if direction:
        return _conv._col2im(t.contiguous(), geom, Tensor._wrap(x_shape, t.dtype, t.device), 0, N)
    return _conv._im2col(t.contiguous(), geom, Tensor._wrap((N, 1, K, L), t.dtype, t.device)).reshape((N, K, L))


_KINDS = {
    "nearest1d": (_interp_apply, ("UpsampleNearest1DBackward", "UpsampleNearest1DGradBackward")),
    "linear1d": (_interp_apply, ("UpsampleLinear1DBackward", "UpsampleLinear1DGradBackward")),
    "nearest2d": (_interp_apply, ("UpsampleNearest2DBackward", "UpsampleNearest2DGradBackward")),
    "nearest_exact1d": (_interp_apply, ("UpsampleNearestExact1DBackward", "UpsampleNearestExact1DGradBackward")),
    "nearest_exact2d": (_interp_apply, ("UpsampleNearestExact2DBackward", "UpsampleNearestExact2DGradBackward")),
    "bilinear2d": (_interp_apply, ("UpsampleBilinear2DBackward", "UpsampleBilinear2DGradBackward")),
    "reflect": (_pad_apply, ("ReflectionPadBackward", "ReflectionPadGradBackward")),
    "replicate": (_pad_apply, ("ReplicationPadBackward", "ReplicationPadGradBackward")),
    "circular": (_pad_apply, ("CircularPadBackward", "CircularPadGradBackward")),
    "unfold": (_fold_apply, ("Im2ColBackward", "Col2ImBackward")),
}


def _linear_op(kind, direction, v, t: Tensor, params):
    """Record direction ``direction`` of ``kind`` applied to Variable ``v`` (whose data is ``t``)."""
    apply, names = _KINDS[kind]
    out = apply(direction, t, params)
    return record(names[direction], out, [v], _linear_rule, kind=kind, direction=direction, params=params,
                  vrule=_linear_vrule)


def _linear_rule(ctx, g):
    return _KINDS[ctx.kind][0](1 - ctx.direction, g.contiguous(), ctx.params)


def _linear_vrule(ctx, g):
    return _linear_op(ctx.kind, 1 - ctx.direction, g, g.data().contiguous(), ctx.params)


def _variable(x, op, what="input"):
    from ..variable import as_variable
    return as_variable(x, op, what)


# ------------------------------------------------------------------------------------------------------
# Interpolation
# ------------------------------------------------------------------------------------------------------

_MODES = {"nearest": (1, 2), "nearest-exact": (1, 2), "area": (1, 2), "linear": (1,), "bilinear": (2,)}


def _output_sizes(op, sizes, size, scale_factor):
    n = len(sizes)
    if size is not None and scale_factor is not None:
        raise ValueError(f"{op}: only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError(f"{op}: either size or scale_factor should be defined")
    if size is not None:
        out = list(size) if isinstance(size, (tuple, list)) else [size] * n
        if len(out) != n or not all(_is_int(s) for s in out):
            raise ValueError(f"{op}: size must be an int or a tuple of {n} ints for an input with {n} spatial "
                             f"dimensions, got {size!r}")
        if any(s < 1 for s in out):
            raise ValueError(f"{op}: size must be positive, got {size!r}")
        return [int(s) for s in out], None
    scales = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * n
    if len(scales) != n or not all(_is_number(s) for s in scales):
        raise ValueError(f"{op}: scale_factor must be a number or a tuple of {n} numbers for an input with {n} "
                         f"spatial dimensions, got {scale_factor!r}")
    scales = [float(s) for s in scales]
    if any(not s > 0 or math.isinf(s) for s in scales):
        raise ValueError(f"{op}: scale_factor must be positive and finite, got {scale_factor!r}")
    out = [math.floor(float(i) * s) for i, s in zip(sizes, scales)]
    if any(o < 1 for o in out):
        raise ValueError(f"{op}: the output size {out} of input size {list(sizes)} and scale_factor "
                         f"{scale_factor!r} is empty")
    return out, scales


def _nearest_scale(n_in, n_out, scale):
    """torch's nearest source scale, in float32 for every dtype (its kernels compute indices in float;
    they take no shortcut for equal or doubled sizes: a scale_factor of 1.1 that keeps a size moves pixels)."""
    if scale is not None:
        return float(np.float32(1.0 / scale))
    return float(np.float32(n_in) / np.float32(n_out))


def _linear_scale(n_in, n_out, scale, align, dtype):
    """torch's linear source scale, computed in the input's precision (float32 for float32)."""
    f = np.float32 if dtype == np.float32 else float
    if align:
        return float(f(n_in - 1) / f(n_out - 1)) if n_out > 1 else 0.0
    if scale is not None:
        return float(f(1.0 / scale))
    return float(f(n_in) / f(n_out))


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """torch's ``F.interpolate`` for [N, C, L] (modes ``"nearest"``, ``"nearest-exact"``, ``"linear"``,
    ``"area"``) and [N, C, H, W] (``"nearest"``, ``"nearest-exact"``, ``"bilinear"``, ``"area"``) input: to
    ``size`` (an int or one per spatial axis) or by
    ``scale_factor`` (the output is ``floor(size * scale_factor)``; the kernel uses ``1/scale_factor`` as
    torch does unless ``recompute_scale_factor``). ``align_corners`` (linear modes only) maps the corner
    pixels' centres onto each other.

    >>> from axonml_autograd import Tensor
    >>> x = Tensor.from_vec([1.0, 2.0, 4.0], [1, 1, 3])
    >>> interpolate(x, scale_factor=2, mode="linear").to_vec()
    [1.0, 1.25, 1.75, 2.5, 3.5, 4.0]
    """
    op = "interpolate"
    x = _variable(input, op)
    if mode not in _MODES:
        raise ValueError(f"{op}: mode {mode!r} is not supported (supported: 'nearest', 'nearest-exact', 'linear', "
                         f"'bilinear', 'area')")
    nd = x.ndim()
    if nd not in (3, 4):
        raise ValueError(f"{op}: expected a 3-D [N, C, L] or 4-D [N, C, H, W] input, got shape {x.shape()}")
    if nd - 2 not in _MODES[mode]:
        need = {"linear": "3D", "bilinear": "4D"}[mode]
        raise ValueError(f"{op}: got {nd}D input, but {mode} mode needs {need} input")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: input must be float32 or float64, got {x.dtype}")
    if mode in ("nearest", "nearest-exact", "area"):
        if align_corners is not None:
            raise ValueError(f"{op}: align_corners option can only be set with the interpolating modes: "
                             f"linear | bilinear")
    if antialias:
        raise ValueError(f"{op}: antialias=True is not supported")
    align = bool(align_corners)
    sizes = x.shape()[2:]
    out, scales = _output_sizes(op, sizes, size, scale_factor)
    if recompute_scale_factor and scales is not None:
        scales = None
    scales = scales or [None] * len(sizes)
    N, C = x.shape()[:2]
    if mode == "area":      # torch's area mode is adaptive average pooling to the output size
        if nd == 3:
            return _conv.adaptive_avg_pool2d(x.reshape([N, C, 1, sizes[0]]), (1, out[0])).reshape([N, C, out[0]])
        return _conv.adaptive_avg_pool2d(x, tuple(out))
    if nd == 3:
        H, W, OH, OW = 1, sizes[0], 1, out[0]
        hs, ws = 1.0, scales[0]
    else:
        (H, W), (OH, OW) = sizes, out
        hs, ws = scales
    if mode in ("nearest", "nearest-exact"):
        sh, sw = _nearest_scale(H, OH, hs if nd == 4 else None), _nearest_scale(W, OW, ws)
        mw = "nearest" if mode == "nearest" else "exact"
        mh = mw if nd == 4 else "nearest"
        kind = ("nearest" if mode == "nearest" else "nearest_exact") + ("1d" if nd == 3 else "2d")
    else:
        dtype = x.dtype
        sw = _linear_scale(W, OW, ws, align, dtype)
        if nd == 3:
            sh, mh, kind = 1.0, "nearest", "linear1d"
        else:
            sh, mh, kind = _linear_scale(H, OH, hs, align, dtype), "linear", "bilinear2d"
        mw = "linear"
    params = (N * C, H, W, OH, OW, sh, sw, int(align), mh, mw, tuple(x.shape()), (N, C, *out))
    return _linear_op(kind, 0, x, x.data().contiguous(), params)


# ------------------------------------------------------------------------------------------------------
# Padding
# ------------------------------------------------------------------------------------------------------

def pad(input, pad, mode):
    """``F.pad`` in ``mode`` 'reflect', 'replicate' or 'circular' (pads may be negative: a crop), for
    torch's shapes: 2 pads on 2-D/3-D input, 4 on 3-D/4-D, 6 on 4-D/5-D. Reflect pads must be smaller than
    their axis, circular ones at most what the negative pads leave of it (which they wrap).

    >>> from axonml_autograd import Tensor
    >>> pad(Tensor.from_vec([1.0, 2.0, 3.0], [1, 3]), (2, 1), "replicate").to_vec()
    [1.0, 1.0, 1.0, 2.0, 3.0, 3.0]
    """
    op = "pad"
    x = _variable(input, op)
    if not isinstance(pad, (list, tuple)) or len(pad) % 2 or not all(_is_int(p) for p in pad):
        raise ValueError(f"{op}: pad must be a tuple of an even number of ints, got {pad!r}")
    k = len(pad) // 2
    nd = x.ndim()
    if k not in (1, 2, 3) or nd not in (k + 1, k + 2):
        raise NotImplementedError(
            f"{op}: padding size {len(pad)} is not supported for {nd}D input tensor {x.shape()} in mode {mode!r}; "
            f"supported: 2D or 3D input with 2 pads (the last dimension), 3D or 4D with 4 (the last 2), "
            f"4D or 5D with 6 (the last 3)")
    shape = x.shape()
    axes = []
    for j in range(k):
        axis = nd - 1 - j
        before, after = int(pad[2 * j]), int(pad[2 * j + 1])
        n = shape[axis]
        if mode == "reflect" and (before >= n or after >= n):
            raise ValueError(f"{op}: padding size should be less than the corresponding input dimension, but got "
                             f"padding ({before}, {after}) at dimension {axis} of input {shape}")
        if n == 0:
            raise ValueError(f"{op}: mode {mode!r} cannot pad the empty dimension {axis} of input {shape}")
        # torch: an axis may be cropped away (an empty result), except by reflect or replicate's 1-D form.
        if n + before + after < (1 if mode != "circular" and k == 1 else 0):
            raise ValueError(f"{op}: input {shape} is too small at dimension {axis} for padding ({before}, {after}): "
                             f"the output would have {n + before + after} elements there")
        kept = n + min(before, 0) + min(after, 0)      # what circular mode wraps: the axis less its crops
        # (torch checks the pads against the whole axis; past what is kept, its forward and backward disagree.)
        if mode == "circular" and (before > kept or after > kept) and n + before + after > 0:
            raise ValueError(f"{op}: padding ({before}, {after}) at dimension {axis} of input {shape} would wrap "
                             f"around more than once")
        if before or after:
            axes.append((axis, before, after))
    params = (mode, tuple(shape), tuple(axes))
    return _linear_op(mode, 0, x, x.data().contiguous(), params)


# ------------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------------

def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max over the windows that split [N, C, H, W] (or [C, H, W]) into ``output_size`` (an int, or an
    (h, w) pair where None keeps that input size) as torch does; ties go to the first maximum, NaN wins.
    With ``return_indices`` also the int32 position ``h * W + w`` of each maximum in its plane.

    >>> from axonml_autograd import Tensor
    >>> x = Tensor.from_vec([1.0, 5.0, 2.0, 4.0, 3.0, 6.0], [1, 1, 2, 3])
    >>> y, i = adaptive_max_pool2d(x, (1, 2), return_indices=True)
    >>> y.to_vec(), i.to_vec()
    ([5.0, 6.0], [1, 5])
    """
    op = "adaptive_max_pool2d"
    x, batched = _conv._check_input(_variable(input, op), op, 2)
    xt = x.data().contiguous()
    N, C, H, W = xt._shape
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(s if s is not None else (H, W)[k] for k, s in enumerate(output_size))
    OH, OW = _conv._ints(output_size, 2, op, "output_size", 1)
    if H < 1 or W < 1:
        raise ValueError(f"{op}: input {xt.shape()} has an empty spatial dimension")
    y = Tensor._wrap((N, C, OH, OW), xt.dtype, xt.device)
    idx = Tensor._wrap((N, C, OH, OW), np.dtype(np.int32), xt.device)
    if y.numel():
        _conv._launch(_conv._POOL, "adaptive_max_forward", xt.dtype, y.numel(),
                      dict(x=xt, y=y, idx=idx, H=H, W=W, OH=OH, OW=OW))
    geom = _conv._geometry(H, W, OH, OW, 1, 1, (1, 1), (0, 0), (1, 1))
    out = record("AdaptiveMaxPool2DBackward", y, [x], _conv._pool_rule, saved=(idx,), kind="adaptive_max",
                 direction=0, params=geom, x_shape=xt._shape, y_shape=y._shape, vrule=_conv._pool_vrule)
    if not batched:
        out, idx = out.reshape(out.shape()[1:]), idx.reshape(idx._shape[1:])
    return (out, idx) if return_indices else out


def _one_d(op, input):
    """[N, C, L] or [C, L] as [N, C, 1, L] (Variable, batched?)."""
    x, batched = _conv._check_input(_variable(input, op), op, 1)
    N, C, L = x.shape()
    return x.reshape([N, C, 1, L]), batched


def _int1(value, op, what, minimum):
    if value is None:
        return None
    return _conv._ints(value, 1, op, what, minimum)[0]


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over ``kernel_size`` windows of [N, C, L] (or [C, L]), as torch (``max_pool2d`` over a unit
    height); the indices are positions along L.

    >>> from axonml_autograd import Tensor
    >>> max_pool1d(Tensor.from_vec([1.0, 3.0, 2.0, 5.0, 4.0], [1, 1, 5]), 2).to_vec()
    [3.0, 5.0]
    """
    op = "max_pool1d"
    x4, batched = _one_d(op, input)
    k, d, p = _int1(kernel_size, op, "kernel_size", 1), _int1(dilation, op, "dilation", 1), \
        _int1(padding, op, "padding", 0)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else \
        _int1(stride, op, "stride", 1)
    res = _conv.max_pool2d(x4, (1, k), (1, s), (0, p), (1, d), ceil_mode, return_indices)
    y, idx = res if return_indices else (res, None)
    N, C, _, OL = y.shape()
    y = y.reshape([N, C, OL] if batched else [C, OL])
    if return_indices:
        return y, idx.reshape((N, C, OL) if batched else (C, OL))
    return y


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over ``kernel_size`` windows of [N, C, L] (or [C, L]), as torch.

    >>> from axonml_autograd import Tensor
    >>> avg_pool1d(Tensor.from_vec([1.0, 3.0, 2.0, 5.0, 4.0], [1, 1, 5]), 2).to_vec()
    [2.0, 3.5]
    """
    op = "avg_pool1d"
    x4, batched = _one_d(op, input)
    k, p = _int1(kernel_size, op, "kernel_size", 1), _int1(padding, op, "padding", 0)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else \
        _int1(stride, op, "stride", 1)
    y = _conv.avg_pool2d(x4, (1, k), (1, s), (0, p), ceil_mode, count_include_pad)
    N, C, _, OL = y.shape()
    return y.reshape([N, C, OL] if batched else [C, OL])


# ------------------------------------------------------------------------------------------------------
# Pixel shuffle, unfold and fold
# ------------------------------------------------------------------------------------------------------

def pixel_shuffle(input, upscale_factor):
    """[*, C * r * r, H, W] -> [*, C, H * r, W * r], as torch.

    >>> from axonml_autograd import Tensor
    >>> pixel_shuffle(Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [1, 4, 1, 1]), 2).to_vec()
    [1.0, 2.0, 3.0, 4.0]
    """
    op = "pixel_shuffle"
    x = _variable(input, op)
    r = _conv._ints(upscale_factor, 1, op, "upscale_factor", 1)[0]
    if x.ndim() < 3:
        raise ValueError(f"{op}: expected an input of at least 3 dimensions [*, C, H, W], got shape {x.shape()}")
    *lead, C, H, W = x.shape()
    if C % (r * r):
        raise ValueError(f"{op}: the channels ({C}, input {x.shape()}) must be divisible by upscale_factor "
                         f"squared ({r * r})")
    c = C // (r * r)
    b = len(lead)
    y = x.reshape(lead + [c, r, r, H, W]).permute(list(range(b)) + [b, b + 3, b + 1, b + 4, b + 2])
    return y.reshape(lead + [c, H * r, W * r])


def pixel_unshuffle(input, downscale_factor):
    """[*, C, H * r, W * r] -> [*, C * r * r, H, W], the inverse of ``pixel_shuffle``, as torch.

    >>> from axonml_autograd import Tensor
    >>> pixel_unshuffle(Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2]), 2).shape()
    [1, 4, 1, 1]
    """
    op = "pixel_unshuffle"
    x = _variable(input, op)
    r = _conv._ints(downscale_factor, 1, op, "downscale_factor", 1)[0]
    if x.ndim() < 3:
        raise ValueError(f"{op}: expected an input of at least 3 dimensions [*, C, H, W], got shape {x.shape()}")
    *lead, C, H, W = x.shape()
    if H % r or W % r:
        raise ValueError(f"{op}: the height and width ({H}, {W}; input {x.shape()}) must be divisible by "
                         f"downscale_factor ({r})")
    b = len(lead)
    y = x.reshape(lead + [C, H // r, r, W // r, r]).permute(list(range(b)) + [b, b + 2, b + 4, b + 1, b + 3])
    return y.reshape(lead + [C * r * r, H // r, W // r])


def _fold_geometry(op, H, W, kernel_size, dilation, padding, stride):
    k = _conv._ints(kernel_size, 2, op, "kernel_size", 1)
    d = _conv._ints(dilation, 2, op, "dilation", 1)
    p = _conv._ints(padding, 2, op, "padding", 0)
    s = _conv._ints(stride, 2, op, "stride", 1)
    out = [(n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, pp, dd, kk, ss in zip((H, W), p, d, k, s)]
    return k, out, _conv._geometry(H, W, out[0], out[1], k[0], k[1], s, p, d)


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """The sliding blocks of [N, C, H, W] (or [C, H, W]) as columns: [N, C * kh * kw, L], L the number of
    block positions (torch's ``F.unfold``; the convolution's im2col).

    >>> from axonml_autograd import Tensor
    >>> unfold(Tensor.from_vec([float(k) for k in range(9)], [1, 1, 3, 3]), 2).shape()
    [1, 4, 4]
    """
    op = "unfold"
    x, batched = _conv._check_input(_variable(input, op), op, 2)
    N, C, H, W = x.shape()
    k, out, geom = _fold_geometry(op, H, W, kernel_size, dilation, padding, stride)
    if out[0] < 1 or out[1] < 1:
        raise ValueError(f"{op}: input {x.shape()} is too small for kernel_size {list(k)} (dilation, padding, "
                         f"stride as given): {out[0]} x {out[1]} blocks")
    y = _linear_op("unfold", 0, x, x.data().contiguous(), ((N, C, H, W), geom))
    return y if batched else y.reshape(y.shape()[1:])


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """The columns [N, C * kh * kw, L] (or [C * kh * kw, L]) summed back into [N, C, *output_size] (torch's
    ``F.fold``; the convolution's col2im, the adjoint of ``unfold``).

    >>> from axonml_autograd import Tensor
    >>> fold(Tensor.ones([1, 4, 4]), (3, 3), 2).to_vec()
    [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]
    """
    op = "fold"
    x = _variable(input, op)
    if x.ndim() not in (2, 3):
        raise ValueError(f"{op}: expected a 2-D or 3-D input [N, C * kh * kw, L] (the batch optional), got shape "
                         f"{x.shape()}")
    batched = x.ndim() == 3
    if not batched:
        x = x.reshape([1] + x.shape())
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: input must be float32 or float64, got {x.dtype}")
    N, CK, L = x.shape()
    H, W = _conv._ints(output_size, 2, op, "output_size", 1)
    k, out, geom = _fold_geometry(op, H, W, kernel_size, dilation, padding, stride)
    if CK % (k[0] * k[1]):
        raise ValueError(f"{op}: the input's dimension 1 ({CK}, input {x.shape()}) must be divisible by the "
                         f"kernel's size {k[0] * k[1]} (kernel_size {list(k)})")
    if out[0] < 1 or out[1] < 1 or out[0] * out[1] != L:
        raise ValueError(f"{op}: expected {max(out[0], 0) * max(out[1], 0)} blocks (L) for output_size {[H, W]}, "
                         f"kernel_size {list(k)} (dilation, padding, stride as given), got input {x.shape()}")
    C = CK // (k[0] * k[1])
    y = _linear_op("unfold", 1, x, x.data().contiguous(), ((N, C, H, W), geom))
    return y if batched else y.reshape(y.shape()[1:])
