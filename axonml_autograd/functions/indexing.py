"""Indexing and selection: ``x[...]``, ``index_select``, ``gather`` and ``embedding``.

Basic indexing (ints, negative too, slices with positive steps, ``None``, ``...``) is one strided
copy, and its gradient is written back through the same window into zeros (each element is taken
at most once, so nothing needs adding). One axis may be indexed by a list or a 1-D int32/int64 Tensor
(advanced indexing): that is ``index_select``, whose gradient sums the repeated indices in a fixed
order (``cl_kernels/index.cl.mako``), so it is the same bit for bit at every run.

Index lists are checked on the host (``IndexError`` naming the index and the size); an index held
in a device tensor cannot be checked without a read: a negative one counts from the end (as in
torch), and one outside the axis reads nothing out of bounds and gives NaN there (0 for integer
tensors; int64 values beyond int32 stay out of range, never wrapped).

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.from_vec([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [2, 3]), requires_grad=True)
>>> x[1].to_vec(), x[:, -1].to_vec(), x[:, [2, 0, 2]].shape()
([3.0, 4.0, 5.0], [2.0, 5.0], [2, 3])
"""

from __future__ import annotations

import builtins
import math
import numbers

import numpy as np

from .. import kernels
from ..grad_fn import record
from ..tensor import Tensor, View, check_index32
from ..elementwise_kernels import as_index, copy_view
from ..shapes import as_int, contiguous_strides, normalize_axis
from .shape import _window_rule_vrule

_TEMPLATE = "index.cl.mako"


def _indices(index, size, op, device) -> Tensor:
    """An int32 device tensor of indices into an axis of ``size`` (lists range-checked, negatives wrapped)."""
    if isinstance(index, Tensor) or callable(getattr(index, "data", None)) and isinstance(index.data(), Tensor):
        t = index if isinstance(index, Tensor) else index.data()
        if t.dtype.kind == "b":
            raise TypeError(f"{op}: a bool mask cannot index (its result's shape would need a host read); "
                            "use where() or masked_fill(), or integer indices")
        if t.ndim() != 1:
            raise IndexError(f"{op}: an index tensor must be 1-D, got shape {t.shape()}")
        if t.device is not device:
            raise ValueError(f"{op}: the index tensor is on another device")
        return as_index(t, op)
    if isinstance(index, (str, bytes)) or not hasattr(index, "__len__"):
        raise TypeError(f"{op}: expected a list of ints or an int32/int64 Tensor, got {index!r}")
    arr = np.asarray(index)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be integers, got {list(arr.reshape(-1)[:5])}")
    arr = arr.astype(np.int64).reshape(-1)
    bad = (arr < -size) | (arr >= size)
    if bad.any():
        raise IndexError(f"{op}: index {int(arr[bad][0])} is out of range for an axis of size {size}")
    return Tensor.from_numpy(np.where(arr < 0, arr + size, arr).astype(np.int32), dtype="int32", device=device)


# Each kernel's input and output parameters (cl_kernels/index.cl.mako).
_OPERANDS = {"forward": ("x", "out"), "backward": ("g", "gx")}


def _launch(which, mode, src: Tensor, idx: Tensor, out_shape, R, K, inner):
    check_index32(f"index_{mode}", src, math.prod(out_shape))
    out = Tensor._wrap(tuple(out_shape), src.dtype, src.device)
    if out.numel():
        dev = src.device
        rows = not dev.target.is_gpu   # CPUs: a work-item per contiguous row; GPUs: per element
        n = out.numel() // inner if rows else out.numel()
        src_name, out_name = _OPERANDS[which]
        # 16-bit: on float32 copies, the result rounded once (exact for a select or gather, the index-add's
        # sums rounded once)
        dtype, args, originals = kernels.float32_working_copies(src.dtype, {src_name: src, out_name: out})
        knl = kernels.get_kernel(dev, _TEMPLATE, which, ctype=kernels.ctype(dtype), mode=mode, rows=rows)
        local = 1 if rows else kernels.fit_local(dev, knl, dev.target.local_size(256))
        kernels.launch(dev, knl, (kernels.round_up(n, local),), (local,), **args, idx=idx,
                       R=R, K=K, inner=inner, n=n)
        kernels.write_back(knl, args, originals)
    return out


def index_select(a, dim, index):
    """``x`` with axis ``dim`` replaced by the entries ``index`` names (a list or a 1-D int32/int64 Tensor)."""
    x = a.data()
    if x.ndim() == 0:
        raise IndexError("index_select: a 0-d tensor has no axis to select from")
    d = normalize_axis(dim, x.ndim(), "index_select dim")
    R = x._shape[d]
    idx = _indices(index, R, "index_select", x.device)
    K = idx.numel()
    outer, inner = math.prod(x._shape[:d]), math.prod(x._shape[d + 1:])
    shape = x._shape[:d] + (K,) + x._shape[d + 1:]
    out = _launch("forward", "select", x, idx, shape, R, K, inner)
    return record("IndexSelectBackward", out, [a], saved=(idx,), shape=x._shape, R=R, K=K, inner=inner,
                  outer=outer, mode="select", vrule=_indexed_vrule)


def indexed(which, mode, src, idx, out_shape, R, K, inner):
    """``_launch`` over Variables: select/gather (``which="forward"``) or their gradient, the ordered
    index-add (``"backward"``), each differentiable, its gradient being the other one."""
    out = _launch(which, mode, src.data(), idx, out_shape, R, K, inner)
    return record(_INDEXED_NAMES[which, mode], out, [src], saved=(idx,), which=which, mode=mode,
                  shape=src.data()._shape, R=R, K=K, inner=inner, vrule=_indexed_dual_vrule)


_INDEXED_NAMES = {("forward", "select"): "IndexSelectBackward", ("forward", "gather"): "GatherBackward",
                  ("backward", "select"): "IndexAddBackward", ("backward", "gather"): "ScatterAddBackward"}


def _indexed_dual_vrule(ctx, g):
    attrs = ctx.attrs
    other = "backward" if attrs["which"] == "forward" else "forward"
    return indexed(other, attrs["mode"], g, ctx.saved_tensors[0], attrs["shape"], attrs["R"], attrs["K"],
                   attrs["inner"])


def _indexed_vrule(ctx, g):
    """index_select's and gather's differentiable rule: the index-add of ``g``."""
    attrs = ctx.attrs
    return indexed("backward", attrs["mode"], g, ctx.saved_tensors[0], attrs["shape"], attrs["R"], attrs["K"],
                   attrs["inner"])


def gather(a, dim, index):
    """torch's ``gather``: ``out[..., k, ...] = x[..., index[..., k, ...], ...]`` along ``dim``; ``index`` is
    an int32/int64 Tensor of ``x``'s shape except along ``dim``."""
    x = a.data()
    t = index if isinstance(index, Tensor) else index.data() if callable(getattr(index, "data", None)) else None
    if t is None:
        arr = np.asarray(index)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"gather: indices must be integers, got {arr.dtype}")
        t = Tensor.from_numpy(arr.astype(np.int32), dtype="int32", device=x.device)
    t = as_index(t, "gather")
    d = normalize_axis(dim, x.ndim(), "gather dim")
    if t.ndim() != x.ndim() or any(t._shape[k] != x._shape[k] for k in range(x.ndim()) if k != d):
        raise ValueError(f"gather: index shape {t.shape()} must equal input shape {x.shape()} outside dim {d}")
    R, K = x._shape[d], t._shape[d]
    inner = math.prod(x._shape[d + 1:])
    out = _launch("forward", "gather", x, t, t._shape, R, K, inner)
    return record("GatherBackward", out, [a], saved=(t,), shape=x._shape, R=R, K=K, inner=inner,
                  mode="gather", vrule=_indexed_vrule)


def embedding(input, weight):
    """Rows of ``weight`` [V, D] for every index in ``input`` (any shape): the result is input's shape + [D]."""
    from ..variable import Variable
    w = weight if isinstance(weight, Variable) else Variable(weight)
    if w.ndim() != 2:
        raise ValueError(f"embedding: weight must be [num_embeddings, dim], got {w.shape()}")
    t = input if isinstance(input, Tensor) else input.data() if isinstance(input, Variable) else None
    if t is None:
        arr = np.asarray(input)
        shape = list(arr.shape)
        flat = arr.reshape(-1).tolist()
    else:
        shape, flat = t.shape(), t.reshape([t.numel()])
    rows = index_select(w, 0, flat)
    return rows.reshape(shape + [w.shape()[1]])


def _bool_mask(key):
    """``key`` as a numpy bool array when it is a boolean mask (a bool Tensor/Variable, array or list)."""
    t = key.data() if callable(getattr(key, "data", None)) and not isinstance(key, Tensor) else key
    if isinstance(t, Tensor):
        return t if t.dtype.kind == "b" else None
    if isinstance(t, np.ndarray) and t.dtype.kind == "b":
        return t
    if isinstance(t, list) and t and all(isinstance(v, (bool, np.bool_)) for v in np.asarray(t, dtype=object).reshape(-1)):
        return np.asarray(t, dtype=bool)
    return None


def masked_select(a, mask):
    """``x[mask]`` for a bool ``mask`` over x's leading dims (torch's boolean indexing): the selected rows,
    flattened, in order. The result's length depends on the data, so this reads the mask to the host
    (the one read, as in torch; a capture refuses it). Differentiable through ``index_select``."""
    x = a.data()
    m = mask.numpy() if isinstance(mask, Tensor) else np.asarray(mask, dtype=bool)
    if m.ndim > x.ndim() or tuple(m.shape) != tuple(x._shape[:m.ndim]):
        raise IndexError(f"index: a bool mask of shape {list(m.shape)} does not match the leading dims of "
                         f"shape {x.shape()}")
    rest = list(x._shape[m.ndim:])
    rows = a.reshape([math.prod(m.shape)] + rest) if m.ndim else a.reshape([1] + rest)
    picked = np.flatnonzero(m.reshape(-1))
    return index_select(rows, 0, picked.tolist()) if picked.size else \
        index_select(rows, 0, []).reshape([0] + rest)


def _plan(dims, key, consumed, st, offset):
    """Basic indexing of a tensor of shape ``dims`` whose axes step ``st`` elements from ``offset``:
    the window's shape, strides and offset, and the one (output axis, index) left for advanced
    indexing (or None)."""
    from ..variable import Variable
    nd = len(dims)
    full = []
    for k in key:
        if k is Ellipsis:
            full.extend([builtins.slice(None)] * (nd - consumed))
        else:
            full.append(k)
    full.extend([builtins.slice(None)] * (nd - sum(1 for k in full if k is not None)))
    shape, strides, d = [], [], 0
    advanced = None   # (output axis, index) of the one list/tensor index
    for k in full:
        if k is None:
            shape.append(1)
            strides.append(0)
            continue
        size = dims[d]
        if isinstance(k, builtins.slice):
            start, stop, step = k.indices(size) if k.step is None or as_int(k.step, "index: slice step") > 0 \
                else (None, None, None)
            if step is None:
                raise ValueError(f"index: slice steps must be positive, got {k.step}")
            length = len(range(start, stop, step))
            offset += start * st[d] if length else 0
            shape.append(length)
            strides.append(st[d] * step)
        elif isinstance(k, (numbers.Integral, np.integer)) and not isinstance(k, (bool, np.bool_)):
            i = int(k)
            if not -size <= i < size:
                raise IndexError(f"index: {i} is out of range for dim {d} of size {size}")
            offset += (i % size) * st[d]
        elif isinstance(k, (list, tuple, np.ndarray, Tensor, Variable)):
            if advanced is not None:
                raise IndexError("index: only one axis may be indexed by a list or tensor")
            advanced = (len(shape), k)
            shape.append(size)
            strides.append(st[d])
        else:
            raise TypeError(f"index: expected ints, slices, None, ..., a list or an int32/int64 Tensor, got {k!r}")
        d += 1
    return shape, strides, offset, advanced


def _checked_key(key, nd):
    key = key if isinstance(key, tuple) else (key,)
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    if sum(1 for k in key if k is Ellipsis) > 1:
        raise IndexError("index: an index can only have a single ellipsis ('...')")
    if consumed > nd:
        raise IndexError(f"index: too many indices ({consumed}) for a tensor of {nd} dimensions")
    return key, consumed


def _value_tensor(value, like: Tensor, op) -> Tensor:
    from ..variable import Variable
    if isinstance(value, Variable):
        value = value._data
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numbers.Number) or isinstance(value, (list, np.ndarray)):
        arr = np.asarray(value)
        if arr.ndim == 0:
            return Tensor.full([], arr.item(), dtype=like.dtype, device=like.device)
        return Tensor.from_numpy(arr.astype(like.dtype), dtype=like.dtype, device=like.device)
    raise TypeError(f"{op}: expected a number, a list, a Tensor or a Variable as the value, got {value!r}")


def _positions(shape, key, device) -> Tensor:
    """The flat (row-major) positions of ``x[key]`` in a tensor of ``shape``: an int32 tensor of the
    indexed shape, through getitem itself, so every kind of index means what it means there."""
    from ..variable import Variable
    n = math.prod(shape)
    check_index32("index assignment", Tensor.zeros([0], device=device), n)
    from ..creation import arange
    address = arange(n, dtype="int32", device=device).reshape(list(shape))
    return Variable(address)[key]._data


def setitem_tensor(x: Tensor, key, value):
    """``x[key] = value`` into ``x``'s own buffer (a view writes through to the tensor it views), the
    version bumped as any in-place write. Basic indexing writes through a strided window; a list,
    tensor or mask index scatters to the positions it names (a position named twice gets one of
    the values, as torch leaves it unspecified: here their mean)."""
    v = _value_tensor(value, x, "index assignment")
    mask = _bool_mask(key) if not isinstance(key, tuple) else None
    if mask is None:
        key, consumed = _checked_key(key, x.ndim())
        base = x.view()
        shape, strides, offset, advanced = _plan(x._shape, key, consumed, base.strides, base.offset)
        if advanced is None:
            window = Tensor.__new__(Tensor)
            window.device, window.dtype, window._shape, window._storage = x.device, x.dtype, tuple(shape), x._storage
            window._view = (tuple(strides), offset)
            window.copy_(v)
            return x
    # Scatter: the new values where a position is named, the old ones elsewhere.
    pos = _positions(x._shape, key, x.device)
    pos_flat = pos.reshape([-1])
    vals = v.astype(x.dtype).expand(list(pos._shape)).reshape([-1]) if pos.numel() else None
    if vals is None:
        return x
    n = x.numel()
    flat = x.reshape([-1]) if x._view is None else x.contiguous().reshape([-1])
    ones = Tensor.ones([pos_flat.numel()], dtype=x.dtype, device=x.device)
    count = _launch("backward", "gather", ones, as_index(pos_flat, "index assignment"), (n,), n, pos_flat.numel(), 1)
    total = _launch("backward", "gather", vals, as_index(pos_flat, "index assignment"), (n,), n, pos_flat.numel(), 1)
    from .. import where
    new = where(count > 0, total / count.clamp_min(1) if x.dtype.kind == "f" else total // count.clamp_min(1), flat)
    new = new._data if not isinstance(new, Tensor) else new
    x.copy_(new.reshape(list(x._shape)).astype(x.dtype))
    return x


def setitem(a, key, value):
    """``a[key] = value`` for a Variable, with torch's in-place rules: a leaf that requires grad refuses
    in grad mode; without a graph to keep (no_grad, or nothing requires grad) the values are written
    into ``a``'s buffer; inside a graph the assignment is differentiable (for ``a`` outside the
    assigned positions and for ``value`` at them) and ``a`` becomes its result."""
    from ..no_grad import is_grad_enabled
    from ..variable import Variable
    needs_graph = is_grad_enabled() and (a._requires_grad or (isinstance(value, Variable) and value._requires_grad))
    if a._requires_grad and is_grad_enabled() and a._grad_fn is None:
        raise RuntimeError("index assignment: a leaf Variable that requires grad is being used in an in-place "
                           "operation; wrap it in `with no_grad():` (as in torch)")
    if not needs_graph:
        setitem_tensor(a._data, key, value)
        return
    x = a._data
    pos = _positions(x._shape, key, x.device)
    n = x.numel()
    if not pos.numel():
        return
    pos_flat = as_index(pos.reshape([-1]), "index assignment")
    val = value if isinstance(value, Variable) else Variable(_value_tensor(value, x, "index assignment"))
    vals = val.expand(list(pos._shape)).reshape([-1])
    count = _launch("backward", "gather", Tensor.ones([pos_flat.numel()], dtype=x.dtype, device=x.device),
                    pos_flat, (n,), n, pos_flat.numel(), 1)
    zeros = Variable(Tensor.zeros([n], dtype=x.dtype, device=x.device))
    spread = scatter_add(zeros, 0, pos_flat, vals) / Variable(count.clamp_min(1))
    from .. import where
    out = where(Variable(count > 0), spread, a.reshape([-1])).reshape(list(x._shape))
    a._data, a._grad_fn, a._requires_grad = out._data, out._grad_fn, True


def getitem(a, key):
    """``x[key]``: basic indexing as one strided copy, then at most one advanced (list/tensor) axis; a
    bool mask over the leading dims selects rows (``masked_select``, which reads the mask)."""
    from ..variable import Variable
    x = a.data()
    if not isinstance(key, tuple):
        mask = _bool_mask(key)
        if mask is not None:
            return masked_select(a, mask)
    key, consumed = _checked_key(key, x.ndim())
    shape, strides, offset, advanced = _plan(x._shape, key, consumed, contiguous_strides(x._shape), 0)
    out = copy_view(View(x, shape, strides, offset))
    picked = record("IndexBackward", out, [a], shape=x._shape, strides=tuple(strides), offset=offset,
                    vrule=_window_rule_vrule)
    if advanced is None:
        return picked
    return index_select(picked, advanced[0], advanced[1])


def scatter_add(a, dim, index, src):
    """torch's ``scatter_add``: ``a`` plus, at ``index`` along ``dim``, the values of ``src`` (index and src of
    one shape, equal to ``a``'s outside ``dim``); repeats add up in index order, deterministically."""
    from ..variable import Variable
    x = a.data()
    s = src if isinstance(src, Variable) else Variable(src)
    t = index if isinstance(index, Tensor) else index.data() if callable(getattr(index, "data", None)) else \
        Tensor.from_numpy(np.asarray(index).astype(np.int32), dtype="int32", device=x.device)
    t = as_index(t, "scatter_add")
    d = normalize_axis(dim, x.ndim(), "scatter_add dim")
    if t._shape != s.data()._shape or t.ndim() != x.ndim() or \
            any(t._shape[k] != x._shape[k] for k in range(x.ndim()) if k != d):
        raise ValueError(f"scatter_add: index {t.shape()} and src {s.shape()} must have one shape, equal to "
                         f"the input's {x.shape()} outside dim {d}")
    R, K, inner = x._shape[d], t._shape[d], math.prod(x._shape[d + 1:])
    # The sums are gather's gradient: each target element adds, in index order, the sources aimed at it.
    added = _launch("backward", "gather", s.data(), t, x._shape, R, K, inner)
    spread = record("ScatterAddBackward", added, [s], saved=(t,), shape=t._shape, R=R, K=K, inner=inner,
                    vrule=lambda ctx, g: indexed("forward", "gather", g, ctx.saved_tensors[0], ctx.attrs["shape"],
                                                 ctx.attrs["R"], ctx.attrs["K"], ctx.attrs["inner"]))
    return a + spread
