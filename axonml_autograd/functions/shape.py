"""Shape ops: reshape, transpose, narrow/slice, expand, (un)squeeze and cat.

Reshape shares the buffer; the others copy through a strided view in one kernel. A selection's backward
writes the gradient into the selected window of a zero tensor, again through a view.
"""

from __future__ import annotations

import builtins
import numbers

from . import differentiable as dv
from ..grad_fn import record
from ..tensor import Tensor, View, cat as cat_tensors
from ..shapes import as_int, contiguous_strides, narrow_arguments, normalize_axis, permutation
from ..elementwise_kernels import copy_view, elementwise


def reshape(a, shape):
    x = a.data()
    return record("ReshapeBackward", x.reshape(shape), [a], shape=x._shape, vrule=_reshape_vrule)


def _reshape_vrule(ctx, g):
    return reshape(g, ctx.attrs["shape"])   # a tuple of ints: infer_shape's one-pass check


def transpose(a, d0, d1):
    x = a.data()
    nd = x.ndim()
    d0 = normalize_axis(d0, nd, "transpose dim0", x._shape)
    d1 = normalize_axis(d1, nd, "transpose dim1", x._shape)
    if nd == 0:
        return reshape(a, [])   # torch: dims 0 and -1 of a 0-d tensor give the tensor as it is
    return record("TransposeBackward", x.transpose(d0, d1), [a], d0=d0, d1=d1,
                  vrule=lambda ctx, g: g.transpose(ctx.attrs["d0"], ctx.attrs["d1"]))


def into_zeros(g: Tensor, shape, strides, offset) -> Tensor:
    """A selection's gradient: ``g`` written through the window it was read from (``strides``,
    ``offset``) into zeros of the source's ``shape``. Each element was read at most once, so no adding."""
    whole = Tensor.zeros(shape, g.dtype, g.device)
    if g.numel():
        elementwise("g", [g], names=("g",), out=View(whole, g._shape, strides, offset))
    return whole


def window(a, shape, strides, offset, name="WindowBackward"):
    """The elements of ``a``'s data read through a strided window (``View(data, shape, strides,
    offset)``), as a differentiable op over Variables: its gradient writes back through the window."""
    x = a.data()
    out = copy_view(View(x, list(shape), list(strides), offset))
    return record(name, out, [a], source=x._shape, strides=tuple(strides), offset=offset, vrule=_window_vrule)


def _window_vrule(ctx, g):
    attrs = ctx.attrs
    return into_zeros_variable(g, attrs["source"], attrs["strides"], attrs["offset"])


def into_zeros_variable(g, shape, strides, offset):
    """``into_zeros`` over Variables (the gradient of a window, differentiable): its own gradient reads
    the window again."""
    return record("IntoZerosBackward", into_zeros(g.data(), shape, strides, offset), [g],
                  window=g.data()._shape, strides=tuple(strides), offset=offset, vrule=_into_zeros_vrule)


def _into_zeros_vrule(ctx, h):
    attrs = ctx.attrs
    return window(h, attrs["window"], attrs["strides"], attrs["offset"])


def _window_rule_vrule(ctx, g):
    """The differentiable rule of the ops that record ``into_zeros`` with ``shape``, ``strides``/``offset``
    or contiguous strides (narrow, slice, diagonal, basic indexing)."""
    attrs = ctx.attrs
    shape = attrs["shape"]
    strides = attrs.get("strides") or contiguous_strides(shape)
    offset = attrs["offset"] if "offset" in attrs else attrs["start"]
    return into_zeros_variable(g, shape, strides, offset)


def _window(a, starts, lengths, name):
    """The block ``[starts[k], starts[k] + lengths[k])`` on every axis, as a copy."""
    x = a.data()
    st = contiguous_strides(x._shape)
    offset = sum(s * k for s, k in zip(starts, st))
    out = copy_view(View(x, lengths, st, offset))
    return record(name, out, [a], shape=x._shape, offset=offset, vrule=_window_rule_vrule)


def narrow(a, dim, start, length):
    x = a.data()
    d, start, length = narrow_arguments(x._shape, dim, start, length)
    starts = [0] * x.ndim()
    lengths = list(x._shape)
    starts[d], lengths[d] = start, length
    return _window(a, starts, lengths, "NarrowBackward")


def slice(a, ranges):
    """``ranges`` is one ``(start, end)`` pair (or a Python ``range``/``slice`` with step 1) per leading axis."""
    x = a.data()
    if isinstance(ranges, (str, bytes)) or not hasattr(ranges, "__len__"):
        raise TypeError(f"slice: expected a list of (start, end) pairs, got {ranges!r}")
    if len(ranges) > x.ndim():
        raise IndexError(f"slice: {len(ranges)} ranges for a tensor of {x.ndim()} dimensions")
    starts, lengths = [0] * x.ndim(), list(x._shape)
    for k, r in enumerate(ranges):
        if isinstance(r, (range, builtins.slice)):
            lo, hi, step = r.start or 0, x._shape[k] if r.stop is None else r.stop, r.step or 1
        else:
            if isinstance(r, (str, bytes)) or not hasattr(r, "__len__") or len(r) != 2:
                raise TypeError(f"slice: range {k} must be a (start, end) pair, a range or a slice, got {r!r}")
            lo, hi = r
            step = 1
        lo, hi, step = as_int(lo, f"slice: range {k} start"), as_int(hi, f"slice: range {k} end"), \
            as_int(step, f"slice: range {k} step")
        if step != 1:
            raise ValueError(f"slice: only step 1 is supported, got {r!r}")
        if not (0 <= lo <= hi <= x._shape[k]):
            raise IndexError(f"slice: range {lo}..{hi} is out of bounds for dim {k} of size {x._shape[k]}")
        starts[k], lengths[k] = lo, hi - lo
    return _window(a, starts, lengths, "SliceBackward")


def expand(a, shape):
    x = a.data()
    out = x.expand(shape)
    return record("ExpandBackward", out, [a], shape=x._shape, vrule=lambda ctx, g: dv.sum_to(g, ctx.attrs["shape"]))


def unsqueeze(a, dim):
    x = a.data()
    nd = x.ndim()
    if isinstance(dim, numbers.Integral) and not isinstance(dim, bool) and not -nd - 1 <= dim <= nd:
        raise IndexError(f"unsqueeze dim: {dim} is out of range for a tensor of shape {x.shape()} (expected to be "
                         f"in range of [{-nd - 1}, {nd}], but got {dim})")
    d = normalize_axis(dim, nd + 1, "unsqueeze dim")
    shape = list(x._shape)
    shape.insert(d, 1)
    return reshape(a, shape)


def squeeze(a, dim=None):
    x = a.data()
    if dim is None:
        return reshape(a, [s for s in x._shape if s != 1])
    d = normalize_axis(dim, x.ndim(), "squeeze dim", x._shape)
    if x._shape and x._shape[d] != 1:
        return reshape(a, x._shape)  # like PyTorch: squeezing a non-1 axis leaves the shape alone
    shape = list(x._shape)
    if shape:
        shape.pop(d)
    return reshape(a, shape)


def cat(variables, dim=0):
    variables = list(variables)
    if not variables:
        raise ValueError("cat: expected a non-empty list of Variables")
    tensors = [v.data() for v in variables]
    out = cat_tensors(tensors, dim)
    d = normalize_axis(dim, tensors[0].ndim(), "cat dim")
    return record("CatBackward", out, variables, dim=d, sizes=[t._shape[d] for t in tensors], vrule=_cat_vrule)


def _cat_vrule(ctx, g):
    grads, start = [], 0
    for size, needed in zip(ctx.attrs["sizes"], ctx.needs_input_grad):
        grads.append(g.narrow(ctx.attrs["dim"], start, size) if needed else None)
        start += size
    return tuple(grads)


# -- torch's spellings, composed from the ops above or written as one strided copy ----------------------

def permute(a, dims):
    """The axes in the order ``dims`` (a copy); backward permutes back."""
    x = a.data()
    nd = x.ndim()
    perm = permutation(x._shape, dims)
    return _permuted(a, perm, [perm.index(k) for k in range(nd)])


def _permuted(a, perm, inverse):
    """``permute`` with ``perm`` already checked (the gradient's permute need not check it again)."""
    return record("PermuteBackward", a._data.permute(perm), [a], perm=perm, inverse=inverse,
                  vrule=lambda ctx, g: _permuted(g, ctx.attrs["inverse"], ctx.attrs["perm"]))


def movedim(a, source, destination, op="movedim"):
    """torch's ``movedim``/``moveaxis``: the axes ``source`` (an int or a list) moved to the positions
    ``destination``, the others keeping their order; a permute."""
    x = a.data()
    nd = x.ndim()
    src = [source] if not isinstance(source, (list, tuple)) else list(source)
    dst = [destination] if not isinstance(destination, (list, tuple)) else list(destination)
    if len(src) != len(dst):
        raise ValueError(f"{op}: source {src} ({len(src)} dims) and destination {dst} ({len(dst)} dims) must "
                         f"name as many dims, for shape {x.shape()}")
    src = [normalize_axis(d, nd, f"{op} source", x._shape) for d in src]
    dst = [normalize_axis(d, nd, f"{op} destination", x._shape) for d in dst]
    for name, given, dims in (("source", source, src), ("destination", destination, dst)):
        if len(set(dims)) != len(dims):
            raise ValueError(f"{op}: {name} {given!r} repeats a dim of shape {x.shape()}")
    order = [None] * nd
    for s_, d_ in zip(src, dst):
        order[d_] = s_
    rest = iter(k for k in range(nd) if k not in src)
    return permute(a, [k if k is not None else next(rest) for k in order])


def _flip_tensor(x: Tensor, dims) -> Tensor:
    st = contiguous_strides(x._shape)
    strides = [-s if k in dims else s for k, s in enumerate(st)]
    offset = sum((x._shape[k] - 1) * st[k] for k in dims if x._shape[k] > 0)
    return copy_view(View(x, x._shape, strides, offset))


def flip(a, dims):
    """The order of the elements reversed along each of ``dims``; backward flips back."""
    x = a.data()
    dims = [dims] if isinstance(dims, int) else list(dims)
    ds = sorted({normalize_axis(d, x.ndim(), "flip dim") for d in dims})
    if not x.ndim():
        return reshape(a, [])
    return _flipped(a, ds)


def _flipped(a, dims):
    """``flip`` with ``dims`` already checked and sorted."""
    return record("FlipBackward", _flip_tensor(a._data, dims), [a], dims=dims,
                  vrule=lambda ctx, g: _flipped(g, ctx.attrs["dims"]))


def _triangle(x: Tensor, k: int, upper: bool) -> Tensor:
    rows, cols = x._shape[-2], x._shape[-1]
    keep = "(gid % C) - ((gid / C) % R) >= k" if upper else "(gid % C) - ((gid / C) % R) <= k"
    return elementwise(f"({keep}) ? x : L(0.0)", [x], names=("x",), int_scalars={"C": cols, "R": rows, "k": k},
                       op="triu" if upper else "tril")


def triangle(a, diagonal, upper):
    """tril/triu over the last two axes: zero above (below) the ``diagonal``-th diagonal."""
    x = a.data()
    if x.ndim() < 2:
        raise ValueError(f"{'triu' if upper else 'tril'}: expected at least 2 dims, got shape {x.shape()}")
    k = as_int(diagonal, f"{'triu' if upper else 'tril'}: diagonal")
    return record("TriuBackward" if upper else "TrilBackward", _triangle(x, k, upper), [a], k=k, upper=upper,
                  vrule=_triangle_vrule)


def _triangle_vrule(ctx, g):
    return triangle(g, ctx.attrs["k"], ctx.attrs["upper"])


def diagonal(a, offset=0, dim1=0, dim2=1):
    """torch's ``diagonal``: the elements ``[i, i + offset]`` of axes ``dim1``, ``dim2``, as a last axis."""
    x = a.data()
    nd = x.ndim()
    if nd < 2:
        raise ValueError(f"diagonal: expected at least 2 dims, got shape {x.shape()}")
    d1, d2 = normalize_axis(dim1, nd, "diagonal dim1"), normalize_axis(dim2, nd, "diagonal dim2")
    if d1 == d2:
        raise ValueError(f"diagonal: dim1 and dim2 must differ, got {dim1} and {dim2}")
    k = as_int(offset, "diagonal: offset")
    st = contiguous_strides(x._shape)
    rows, cols = x._shape[d1], x._shape[d2]
    length = max(0, min(rows, cols - k) if k >= 0 else min(rows + k, cols))
    start = (k * st[d2] if k >= 0 else -k * st[d1]) if length else 0
    keep = [i for i in range(nd) if i not in (d1, d2)]
    shape = [x._shape[i] for i in keep] + [length]
    strides = [st[i] for i in keep] + [st[d1] + st[d2]]
    out = copy_view(View(x, shape, strides, start))
    return record("DiagonalBackward", out, [a], shape=x._shape, strides=tuple(strides), start=start,
                  vrule=_window_rule_vrule)


def cast(a, dtype, op="to"):
    """``a`` in another dtype (torch's ``to(dtype)``/``float()``/``long()``...).

    Float to float is differentiable (the gradient cast back); a cast to or from an integer or bool
    dtype gives a Variable without a graph, as torch only lets float tensors require grad.
    """
    from ..variable import Variable
    x = a.data()
    try:
        dt = x.device.check_dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{op}: {e}") from None
    if dt == x.dtype:
        return a
    out = x.astype(dt)
    if dt.kind != "f" or x.dtype.kind != "f":
        return Variable(out)
    return record("ToCopyBackward", out, [a], src=x.dtype, vrule=lambda ctx, g: cast(g, ctx.attrs["src"]))


def move(a, device):
    """``a`` on ``device`` (a :class:`Device`), differentiable as torch's ``to(device)``: the gradient is
    copied back to ``a``'s device. ``a`` itself when it is there already."""
    x = a.data()
    if device is None or device is x.device:
        return a
    return record("ToCopyBackward", x.to(device), [a], device=x.device,
                  vrule=lambda ctx, g: move(g, ctx.attrs["device"]))


def clone(a):
    """A differentiable copy (torch's ``clone``): the gradient passes through unchanged."""
    return record("CloneBackward", a.data().clone(), [a], vrule=lambda ctx, g: g)
