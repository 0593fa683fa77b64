"""Sorting: ``sort``, ``argsort`` and ``topk`` along a dim, as torch (NaN sorts as the largest value,
equal values keep their order, indices are int32 like ``argmax``'s).

Each row of the sorted dim is merge-sorted by one work-item (``cl_kernels/sort.cl.mako``), which also
writes the inverse permutation. The values are a gather along the permutation, and their gradient is
the gather of ``g`` along the inverse: one read per element, where a general gather's backward would
read the whole row for each element.

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.from_vec([3.0, 1.0, 2.0, 1.0], [4]), requires_grad=True)
>>> values, indices = x.sort()
>>> values.to_vec(), indices.to_vec()
([1.0, 1.0, 2.0, 3.0], [1, 3, 2, 0])
>>> x.topk(2).values.to_vec()
[3.0, 2.0]
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..grad_fn import record
from ..tensor import Tensor, check_index32
from ..shapes import as_int, normalize_axis
from .indexing import _launch
from .reduction import ValuesIndices


def _rows(x: Tensor, d: int):
    """``x`` with dim ``d`` moved last, as contiguous [rows, n], and what undoes it."""
    nd = x.ndim()
    perm = [k for k in range(nd) if k != d] + [d]
    moved = x if d == nd - 1 else x.permute(perm)
    n = x._shape[d]
    back = [perm.index(k) for k in range(nd)]
    return moved.reshape([-1, n]) if n else moved.contiguous().reshape([0, 0]), moved._shape, back


def _unrows(t: Tensor, moved_shape, back) -> Tensor:
    return t.reshape(moved_shape).permute(back).contiguous()


def _argsort_rows(x2: Tensor, descending: bool):
    rows, n = x2._shape
    check_index32("sort", x2)
    dev = x2.device
    idx = Tensor._wrap((rows, n), np.dtype(np.int32), dev)
    inv = Tensor._wrap((rows, n), np.dtype(np.int32), dev)
    if rows and n:
        tmp = Tensor._wrap((rows, n), np.dtype(np.int32), dev)
        if x2.dtype.itemsize == 2:   # 16-bit: ordered by their (exact) float32 values
            x2 = x2.astype("float32")
        knl = kernels.get_kernel(dev, "sort.cl.mako", "argsort", ctype=kernels.ctype(x2.dtype),
                                 descending=bool(descending))
        kernels.launch(dev, knl, (rows,), None, x=x2, idx=idx, tmp=tmp, inv=inv, rows=rows, n=n)
    return idx, inv


def sort(a, dim=-1, descending=False, stable=True):
    """``(values, indices)`` along ``dim``; always stable (``stable`` is accepted for torch's signature)."""
    x = a.data()
    if x.ndim() == 0:
        return ValuesIndices(a * 1.0 if x.dtype.kind == "f" else a, Tensor.zeros((), "int32", x.device))
    d = normalize_axis(dim, x.ndim(), "sort dim")
    x2, moved_shape, back = _rows(x, d)
    idx2, inv2 = _argsort_rows(x2, descending)
    rows, n = x2._shape
    values2 = _launch("forward", "gather", x2, idx2, (rows, n), n, n, 1)

    def rule(ctx, g):
        (inv,) = ctx.saved_tensors
        g2, shape, bk = _rows(g.contiguous(), ctx.attrs["dim"])
        r, m = g2._shape
        return _unrows(_launch("forward", "gather", g2, inv, (r, m), m, m, 1), shape, bk)

    values = record("SortBackward", _unrows(values2, moved_shape, back), [a], rule, saved=(inv2,), dim=d,
                    vrule=_sort_vrule)
    return ValuesIndices(values, _unrows(idx2, moved_shape, back))


def _sort_vrule(ctx, g):
    """The gradient is ``g`` gathered along the inverse permutation: the differentiable gather."""
    (inv,) = ctx.saved_tensors
    from ..variable import Variable
    d = ctx.attrs["dim"]
    nd = g.ndim()
    perm = [k for k in range(nd) if k != d] + [d]
    back = [perm.index(k) for k in range(nd)]
    moved = g.permute(*perm)
    n = g.shape()[d]
    return moved.reshape(-1, n).gather(1, Variable(inv)).reshape(moved.shape()).permute(*back)


def argsort(a, dim=-1, descending=False, stable=True) -> Tensor:
    """The int32 indices that sort ``a`` along ``dim`` (stable)."""
    x = a.data()
    if x.ndim() == 0:
        return Tensor.zeros((), "int32", x.device)
    d = normalize_axis(dim, x.ndim(), "argsort dim")
    x2, moved_shape, back = _rows(x, d)
    return _unrows(_argsort_rows(x2, descending)[0], moved_shape, back)


def topk(a, k, dim=-1, largest=True, sorted=True):
    """The ``k`` largest (``largest=False``: smallest) along ``dim``, as ``(values, indices)``, in order."""
    x = a.data()
    d = normalize_axis(dim, max(x.ndim(), 1), "topk dim") if x.ndim() else 0
    n = x._shape[d] if x.ndim() else 1
    k = as_int(k, "topk: k")
    if not 0 <= k <= n:
        raise ValueError(f"topk: k={k} is out of range for a dim of size {n} (shape {x.shape()})")
    values, indices = sort(a, d, descending=largest)
    if x.ndim() == 0:
        return ValuesIndices(values, indices)
    return ValuesIndices(values.narrow(d, 0, k), indices.narrow(d, 0, k))
