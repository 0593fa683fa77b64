"""Shape, axis and number helpers shared by the array layer: pure Python, no device and no Tensor.

>>> broadcast_shapes((3, 1), (4,))
(3, 4)
>>> infer_shape([-1, 4], 8)
(2, 4)
"""

from __future__ import annotations

import math
import numbers

import numpy as np



def as_float(value, what) -> float:
    """``value`` as a Python float; TypeError for a non-number, ValueError beyond float range (10**400)."""
    if value.__class__ is float:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: expected a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        text = str(value)
        raise ValueError(f"{what}: {text[:12] + '...' if len(text) > 15 else text} ({len(text)} digits) is "
                         "beyond the range of a float") from None


def _short(value) -> str:
    """A number for a message: a huge int as its first digits and its length."""
    text = str(value)
    return f"{text[:12]}... ({len(text)} digits)" if len(text) > 40 else text


def numbers_array(values, op, dtype=None) -> np.ndarray:
    """``np.asarray(values)`` for numbers. Python ints that no numpy integer holds (``10**400``,
    ``-2**63 - 1``) are kept only where the target is a float that holds them (float64's range); any
    other is refused with a ValueError naming ``op`` and the value, never an OverflowError. Ragged
    lists and the like are a TypeError naming ``op``."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{op}: expected numbers ({e})") from e
    if arr.dtype != object:
        return arr
    flat = arr.reshape(-1).tolist()
    if not all(isinstance(v, numbers.Real) for v in flat):
        return arr   # the caller's "expected numbers" error
    try:
        kind = np.dtype(dtype).kind if dtype is not None else None
    except TypeError:
        kind = None   # the caller's dtype check says what is wrong with it
    if kind is None:
        kind = "f" if any(not isinstance(v, numbers.Integral) for v in flat) else "i"
    if kind == "f":
        for v in flat:
            try:
                float(v)
            except OverflowError:
                target = np.dtype(dtype).name if dtype is not None else "a float"
                raise ValueError(f"{op}: value {_short(v)} cannot be converted to {target} without overflow "
                                 "(it is beyond the range of a float)") from None
        return np.array(flat, dtype=np.float64).reshape(arr.shape)
    target = np.dtype(dtype).name if dtype is not None and kind in "iu" else "int64"
    for v in flat:
        if isinstance(v, numbers.Integral) and not -2 ** 63 <= v < 2 ** 64:
            raise ValueError(f"{op}: value {_short(v)} is not an {target} (it cannot be converted without "
                             "overflow)")
    return np.array(flat, dtype=np.float64 if kind == "f" else None).reshape(arr.shape)


def as_int(value, what) -> int:
    """``value`` as a Python int; TypeError for anything but an integer (a float 2.0 included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return int(value)


def _parse_shape(shape, what="shape") -> tuple:
    if isinstance(shape, (numbers.Integral, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (list, tuple)):
        raise TypeError(f"{what}: expected a list or tuple of non-negative ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (numbers.Integral, np.integer)):
            raise TypeError(f"{what}: expected a list or tuple of non-negative ints, got {list(shape)!r}")
        if s < 0:
            raise ValueError(f"{what}: dimensions must be non-negative, got {list(shape)!r}")
        out.append(int(s))
    return tuple(out)


def contiguous_strides(shape) -> tuple:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return tuple(reversed(strides))


def broadcast_shapes(*shapes, op="broadcast") -> tuple:
    """numpy's broadcast of ``shapes``; a ValueError naming ``op`` and every shape when they clash."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(rank):
        dim = 1
        for s in shapes:
            d = s[k - rank + len(s)] if k - rank + len(s) >= 0 else 1
            if d != 1:
                if dim not in (1, d):
                    raise ValueError(f"{op}: shapes " + " and ".join(str(list(x)) for x in shapes)
                                     + " cannot be broadcast together")
                dim = d
        out.append(dim)
    return tuple(out)


def _axis_or_dim(axis, dim, op):
    """The reduced axes given as numpy's ``axis`` or torch's ``dim`` (not both)."""
    if dim is None:
        return axis
    if axis is not None:
        raise TypeError(f"{op}: give axis or dim, not both")
    return dim


def normalize_axis(axis: int, ndim: int, what="dim", shape=None) -> int:
    """``axis`` in ``0..ndim-1`` (a 0-d tensor takes 0 and -1, as in torch). Out of range is an
    IndexError naming ``what`` (the op and the argument), the tensor's ``shape`` when given, and the
    range, in torch's words."""
    if isinstance(axis, bool) or not isinstance(axis, (numbers.Integral, np.integer)):
        raise TypeError(f"{what}: expected an int, got {axis!r}")
    lo, hi = (-ndim, ndim - 1) if ndim > 0 else (-1, 0)
    if not lo <= axis <= hi:
        of = f"{ndim} dimension{'' if ndim == 1 else 's'}" + ("" if shape is None else f", shape {list(shape)}")
        raise IndexError(f"{what}: {axis} is out of range for a tensor of {of} "
                         f"(expected to be in range of [{lo}, {hi}], but got {axis})")
    return int(axis) % max(ndim, 1)


def narrow_arguments(shape, dim, start, length, op="narrow"):
    """``(dim, start, length)`` of a narrow checked against ``shape``; a negative ``start`` counts from
    the end, as in torch."""
    nd = len(shape)
    if nd == 0:
        raise IndexError(f"{op}: a 0-d tensor has no dimension to narrow")
    d = normalize_axis(dim, nd, f"{op} dim", shape)
    start, length = as_int(start, f"{op}: start"), as_int(length, f"{op}: length")
    size = shape[d]
    if -size <= start < 0:
        start += size
    if not (0 <= start <= size):
        raise IndexError(f"{op}: start {start} is out of range for dim {d} of size {size} in shape {list(shape)} "
                         f"(expected to be in range of [{-size}, {size}])")
    if not (0 <= length and start + length <= size):
        raise IndexError(f"{op}: start {start} + length {length} exceeds size {size} of dim {d} "
                         f"in shape {list(shape)}")
    return d, start, length


def permutation(shape, dims, op="permute") -> list:
    """``dims`` checked as a permutation of the axes of ``shape`` (negative ones counted from the end)."""
    nd = len(shape)
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__len__"):
        raise TypeError(f"{op}: expected a list of dims, got {dims!r}")
    if len(dims) != nd:
        raise ValueError(f"{op}: expected {nd} dims for shape {list(shape)}, got {list(dims)} "
                         "(a permutation of its dims)")
    perm = [normalize_axis(d, nd, f"{op} dim", shape) for d in dims]
    if sorted(perm) != list(range(nd)):
        raise ValueError(f"{op}: {list(dims)} is not a permutation of the {nd} dims of shape {list(shape)} "
                         "(a dim is repeated)")
    return perm


def infer_shape(shape, numel, old_shape=None) -> tuple:
    if shape.__class__ is tuple and all(s.__class__ is int and s >= 0 for s in shape) and math.prod(shape) == numel:
        return shape   # the common case, checked in one pass
    if isinstance(shape, (numbers.Integral, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (list, tuple)):
        raise TypeError(f"reshape: expected a list or tuple of ints, got {shape!r}")
    shape = list(shape)
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (numbers.Integral, np.integer)) or s < -1:
            raise ValueError(f"reshape: invalid shape {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or numel % known:
            raise ValueError(f"reshape: cannot reshape {list(old_shape or [numel])} ({numel} elements) to {shape}")
        shape[shape.index(-1)] = numel // known
    if math.prod(shape) != numel:
        raise ValueError(f"reshape: cannot reshape {list(old_shape or [numel])} ({numel} elements) to {shape}")
    return tuple(int(s) for s in shape)


def _collapse(shape, stride_sets):
    """Drop size-1 axes and merge neighbours that every operand walks contiguously."""
    dims = [k for k, s in enumerate(shape) if s != 1]
    new_shape, new_strides = [], [[] for _ in stride_sets]
    for k in dims:
        if new_shape and all(ns[-1] == st[k] * shape[k] for st, ns in zip(stride_sets, new_strides)):
            new_shape[-1] *= shape[k]
            for st, ns in zip(stride_sets, new_strides):
                ns[-1] = st[k]
        else:
            new_shape.append(shape[k])
            for st, ns in zip(stride_sets, new_strides):
                ns.append(st[k])
    return new_shape, new_strides


def varargs(args) -> list:
    """torch accepts ``f(2, 3)`` and ``f((2, 3))`` / ``f([2, 3])`` alike."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    return list(args)
