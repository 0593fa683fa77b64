"""Device arrays without autograd, and the raw device ops that forward and backward both use.

A :class:`Tensor` is a contiguous block of an OpenCL buffer with a shape and a dtype. Its data stays on
the device; ``to_vec()`` and ``numpy()`` are the only reads back to the host.

>>> from axonml_autograd import Tensor
>>> a = Tensor.from_vec([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])
>>> b = Tensor.from_vec([10.0, 20.0, 30.0], [3])
>>> (a + b).to_vec()
[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]
>>> a.sum(axis=1).to_vec()
[6.0, 15.0]
>>> a.transpose(0, 1).shape()
[3, 2]
"""

from __future__ import annotations

import math
import numbers
import re
import struct
import warnings
from collections import namedtuple
from typing import Optional, Sequence

import numpy as np
import pyopencl as cl

from . import kernels, launch
from .device import Device, DeviceError, get_device

INT32_MAX = 2**31 - 1


def index_type(*extents) -> str:
    """The C type kernels index with: ``"int"`` while every element count, offset, stride and reach
    in ``extents`` (ints, or Tensors/Views, whose reach is their largest element position plus one)
    fits in 32 bits, ``"long"`` beyond. 32-bit stays the default: ordinary shapes render the same
    kernels as always, and only tensors (or views into buffers) past 2**31 - 1 elements pay for
    64-bit arithmetic.

    >>> index_type(1000, 2**31 - 1), index_type(2**31)
    ('int', 'long')
    """
    for e in extents:
        if e.__class__ is not int:
            e = _reach(e)
        if not -INT32_MAX <= e <= INT32_MAX:
            return "long"
    return "int"


def _reach(x) -> int:
    """One past the largest element position a Tensor or View touches in its buffer (or an int as is)."""
    if isinstance(x, View):
        if 0 in x.shape:
            return 0
        return abs(x.offset) + sum((s - 1) * abs(st) for s, st in zip(x.shape, x.strides)) + 1
    if isinstance(x, Tensor):
        if x._view is None:
            return math.prod(x._shape)
        return _reach(View(None, x._shape, *x._view))
    return int(x)


def check_index32(op: str, *extents) -> None:
    """Refuse, for a kernel family that indexes in 32 bits, operands past 2**31 - 1 elements (ints,
    Tensors or Views, as :func:`index_type`): a ValueError that names the op and the limit, never a
    wrapped index."""
    for e in extents:
        n = _reach(e)
        if n > INT32_MAX:
            raise ValueError(f"{op}: {n} elements are beyond what {op} supports ({INT32_MAX}, 32-bit "
                             "indexing); only elementwise ops, comparisons, where, copies, fills and sums "
                             "take larger tensors")


def _index_dtype(itype):
    """The numpy type of a kernel's index arguments for ``itype``."""
    return np.int64 if itype == "long" else np.int32


class _Storage:
    """Owns one pooled device buffer; returns it to the pool when the last tensor using it is gone.

    While this thread records a capture, the buffer comes from (and goes back to) the capture's own
    pool: a replay writes the same buffers again, so nothing outside the capture may be given them.
    """

    __slots__ = ("buffer", "pool", "version", "nbytes", "__weakref__")

    def __init__(self, device: Device, nbytes: int):
        cap = launch.active_capture() if launch.recording_threads else None
        self.pool = pool = device.pool if cap is None else cap.pool(device)
        self.buffer, self.nbytes = pool.allocate(nbytes)
        self.version = 0   # in-place writes through any tensor sharing this buffer (reshapes) bump it

    def __del__(self):
        try:
            self.pool.release(self.buffer, self.nbytes)
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass


def native_dtype(dtype) -> np.dtype:
    """The device dtype that holds a numpy dtype's values: float32, float64, int32, int64 and bool as they
    are; float16 widens to float32, narrower integers to int32, unsigned 32/64-bit ones to int64 (values
    that int64 cannot hold are refused when copied)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return dt if dt in (np.float32, np.float64) else np.dtype(np.float32 if dt.itemsize < 8 else np.float64)
    if dt.kind == "b":
        return dt
    if dt.kind in "iu":
        return np.dtype(np.int32) if dt.itemsize < 4 or (dt.kind == "i" and dt.itemsize == 4) else np.dtype(np.int64)
    raise TypeError(f"expected numbers, got {dt}")


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


def _is_dtype(value) -> bool:
    """Whether ``value`` names a dtype (``np.float64``, ``"float32"``, ``np.dtype("i8")``) rather than a
    device. A string numpy cannot read as a dtype is a device selector (``"0:0"`` makes numpy raise
    ValueError, ``"pocl"`` TypeError)."""
    if isinstance(value, np.dtype):
        return True
    if isinstance(value, (str, type)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # numpy's deprecated aliases ("a") warn
                np.dtype(value)
            return True
        except Exception:   # TypeError, ValueError, SyntaxError: whatever numpy's parser raises
            return False
    return False


def to_arguments(x, args, device=None, dtype=None, op="to"):
    """torch's ``to`` overloads as ``(Device or None, dtype or None)`` for ``x``: ``to(device)``,
    ``to(dtype)``, ``to(device, dtype)``, ``to(other)`` (other's device and dtype) and the keywords.

    A device is a :class:`Device` or a selector (``"0:0"``, ``"pocl"``, ``"pocl:epyc"``, ``0``); a dtype
    a numpy dtype or its name."""
    if len(args) > 2:
        raise TypeError(f"{op}: expected at most a device and a dtype, got {len(args)} arguments")
    for k, arg in enumerate(args):
        if hasattr(arg, "_data") and isinstance(getattr(arg, "_data"), Tensor):
            arg = arg._data   # a Variable: its tensor's device and dtype
        if isinstance(arg, Tensor):
            if len(args) != 1 or device is not None or dtype is not None:
                raise TypeError(f"{op}: a tensor argument takes the place of both the device and the dtype")
            device, dtype = arg.device, arg.dtype
        elif _is_dtype(arg):
            if dtype is not None:
                raise TypeError(f"{op}: two dtypes given ({dtype!r} and {arg!r})")
            dtype = arg
        elif isinstance(arg, (Device, str)) or (isinstance(arg, (numbers.Integral, np.integer))
                                                 and not isinstance(arg, (bool, np.bool_))):
            if device is not None or (k == 1 and dtype is None):
                raise TypeError(f"{op}: expected to(device, dtype), got the arguments {list(args)!r}")
            device = arg
        else:
            raise TypeError(f"{op}: expected a device (a Device or a selector such as '0:0'), a dtype "
                            f"or a tensor, got {arg!r}")
    dev = None
    if device is not None:
        try:
            dev = get_device(device)
        except DeviceError as e:
            raise DeviceError(f"{op}: {e}") from None
    dt = None
    if dtype is not None:
        try:
            dt = (dev or x.device).check_dtype(dtype)
        except TypeError as e:
            raise TypeError(f"{op}: {e}") from None
    return dev, dt


def _reduce_dims(x, op, axis, keepdim):
    """sum/mean over None, one axis, or (as torch) a tuple of axes."""
    if not isinstance(axis, (tuple, list)):
        return reduce(x, op, axis, keepdim)
    dims = sorted({normalize_axis(d, x.ndim(), f"{op} dim") for d in axis}, reverse=True)
    out = x
    for d in dims:   # from the last axis down, so the others keep their numbers
        out = reduce(out, op, d, keepdim=True)
    return out if keepdim else out.reshape([s for k, s in enumerate(x._shape) if k not in dims])


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


class View:
    """A strided window onto a tensor's buffer, used as a kernel operand without copying."""

    __slots__ = ("tensor", "shape", "strides", "offset")

    def __init__(self, tensor: "Tensor", shape, strides, offset=0):
        # Windows are written in the coordinates of a contiguous tensor: a permuted one is laid out
        # contiguously first (once; see Tensor._materialize). Tensor.view() builds its own.
        if tensor is not None and tensor._view is not None:
            tensor._materialize()
        self.tensor, self.shape, self.strides, self.offset = tensor, tuple(shape), tuple(strides), offset


class Tensor:
    """A device array: an OpenCL buffer, a shape and a dtype.

    Most tensors are contiguous. ``permute``, ``transpose`` and ``.T`` give views instead: the same
    buffer read with other strides (``_view`` holds them), no copy. Elementwise kernels read a view in
    place and matmul reads a transposed one in place; any other kernel that needs contiguous data
    lays the view out contiguously at its first use (``_materialize``), after which it no longer
    follows writes to the tensor it came from.
    """

    __slots__ = ("_storage", "_shape", "dtype", "device", "_view", "__weakref__")

    def __init__(self, shape, dtype="float32", device=None, _storage=None):
        dev = get_device(device)
        self.device = dev
        self.dtype = dev.check_dtype(dtype)
        self._shape = _parse_shape(shape)
        n = math.prod(self._shape)
        self._storage = _storage if _storage is not None else _Storage(dev, n * self.dtype.itemsize)
        self._view = None   # (strides, offset) in elements for a permuted view; None when contiguous

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def _wrap(cls, shape: tuple, dtype: np.dtype, device: Device) -> "Tensor":
        """A new tensor from values the caller has already checked (the ops' fast path)."""
        t = cls.__new__(cls)
        t.device, t.dtype, t._shape = device, dtype, shape
        t._storage = _Storage(device, math.prod(shape) * dtype.itemsize)
        t._view = None
        return t

    @classmethod
    def empty(cls, shape, dtype="float32", device=None) -> "Tensor":
        """An uninitialised tensor."""
        return cls(shape, dtype, device)

    @classmethod
    def from_numpy(cls, array, dtype=None, device=None, _op="from_numpy") -> "Tensor":
        """Copy a numpy array (or anything ``np.asarray`` takes) to the device.

        >>> import numpy as np
        >>> Tensor.from_numpy(np.eye(2)).shape()
        [2, 2]
        """
        arr = numbers_array(array, _op, dtype)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"{_op}: expected numbers, got an array of {arr.dtype}")
        if dtype is None:
            dtype = native_dtype(arr.dtype)
        t = cls(arr.shape, dtype, device)
        if t.dtype.kind == "i" and arr.dtype.kind in "fiu" and arr.size:
            # As Tensor.full: a value the integer type cannot hold exactly is refused, never wrapped or
            # truncated.
            lo, hi = -2 ** (8 * t.dtype.itemsize - 1), 2 ** (8 * t.dtype.itemsize - 1)
            if arr.dtype.kind == "f":
                wide = arr.astype(np.float64)
                bad = ~np.isfinite(wide) | (wide != np.floor(wide)) | (wide < lo) | (wide >= hi)
            else:
                bad = (arr < lo) | (arr >= hi)
            if bad.any():
                value = arr.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]].item()
                raise ValueError(f"{_op}: value {_short(value)} is not an {t.dtype}")
        # A private copy: the upload does not wait, so the caller may change `array` right after.
        # A finite float beyond float32's range becomes inf there, as in torch.tensor (no warning).
        with np.errstate(over="ignore"):
            host = np.array(arr, dtype=t.dtype, order="C", copy=True)
        if host.size:
            launch.upload(t.device, t.buffer, host)
        return t

    @classmethod
    def from_vec(cls, values, shape, dtype="float32", device=None) -> "Tensor":
        """A tensor from a flat list of numbers and a shape, like the crate's ``Tensor::from_vec``.

        >>> Tensor.from_vec([1, 2, 3, 4], [2, 2]).to_vec()
        [1.0, 2.0, 3.0, 4.0]
        """
        shape = _parse_shape(shape)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(f"from_vec: values must be a flat list of numbers, got {type(values).__name__}")
        try:
            arr = numbers_array(values, "from_vec", dtype)   # its ValueErrors (too large) name from_vec already
        except TypeError as e:
            raise TypeError(f"from_vec: values must be a flat list of numbers ({e.__cause__ or e})") from e
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"from_vec: values must be a flat list of numbers, got an array of {arr.dtype}")
        if arr.dtype.kind in "iu" and _is_dtype(dtype) and np.dtype(dtype).kind == "i":
            pass   # ints to an integer dtype stay exact (through float64, 2**62 + 1 lost its last bit)
        elif arr.dtype.kind in "iub" or dtype is None:
            arr = arr.astype(np.float64)   # as the crate's Vec<f32>: numbers, float64 unless a dtype says
        if arr.ndim != 1:
            raise ValueError(f"from_vec: values must be a flat list, got an array of shape {list(arr.shape)}")
        if arr.size != math.prod(shape):
            raise ValueError(f"from_vec: {arr.size} values do not fill shape {list(shape)} "
                             f"({math.prod(shape)} elements)")
        return cls.from_numpy(arr.reshape(shape), dtype=dtype, device=device, _op="from_vec")

    @classmethod
    def full(cls, shape, value, dtype="float32", device=None) -> "Tensor":
        """A tensor with every element ``value``."""
        t = cls(shape, dtype, device)
        fill(t, value, "full")   # checks the value even when there are no elements
        t._version = 0  # the constructor's own write is not an in-place change
        return t

    @classmethod
    def zeros(cls, shape, dtype="float32", device=None) -> "Tensor":
        return cls.full(shape, 0.0, dtype, device)

    @classmethod
    def ones(cls, shape, dtype="float32", device=None) -> "Tensor":
        return cls.full(shape, 1.0, dtype, device)

    @classmethod
    def scalar(cls, value, dtype="float32", device=None) -> "Tensor":
        """A 0-d tensor."""
        return cls.full((), value, dtype, device)

    @classmethod
    def rand(cls, shape, seed=None, dtype="float32", device=None) -> "Tensor":
        """Uniform numbers in [0, 1): fresh ones from the device's generator (``random.manual_seed``),
        or with ``seed=`` the same numbers anywhere, every time."""
        from .random import uniform
        return uniform(shape, seed, dtype=dtype, device=device)

    @classmethod
    def randn(cls, shape, seed=None, dtype="float32", device=None) -> "Tensor":
        """Standard normal numbers: fresh from the device's generator, or reproducible with ``seed=``."""
        from .random import normal
        return normal(shape, seed, dtype=dtype, device=device)

    # -- facts --------------------------------------------------------------------------------------
    @property
    def buffer(self) -> cl.Buffer:
        """The device buffer, laid out contiguously (a permuted view is copied once, here)."""
        if self._view is not None:
            self._materialize()
        storage = self._storage
        if launch.recording_threads:
            cap = launch.active_capture()
            if cap is not None:   # a recorded command will name this buffer: keep it from the pool
                cap.keep_storage(storage)
        return storage.buffer

    def shape(self) -> list:
        return list(self._shape)

    def ndim(self) -> int:
        return len(self._shape)

    def numel(self) -> int:
        return math.prod(self._shape)

    def size(self, dim=None):
        return list(self._shape) if dim is None else self._shape[normalize_axis(dim, self.ndim())]

    @property
    def _version(self) -> int:
        # Kept on the buffer, so a reshape (which shares it) sees the writes made through the original.
        return self._storage.version

    @_version.setter
    def _version(self, value: int):
        storage = self._storage
        if launch.recording_threads:
            cap = launch.active_capture()
            if cap is not None:   # a replay must make the same bumps (see capture.py)
                cap.note_version(storage)
        storage.version = value

    @property
    def version(self) -> int:
        return self._version

    def __len__(self):
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    # -- reads to the host (the only ones) ------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """Copy to a new numpy array (waits for the kernels that write this tensor)."""
        host = np.empty(self._shape, dtype=self.dtype)
        if host.size:
            launch.read(self.device, host, self.buffer)
        return host

    def to_vec(self) -> list:
        """The elements in row-major order as a Python list."""
        return self.numpy().reshape(-1).tolist()

    def item(self) -> float:
        if self.numel() != 1:
            raise ValueError(f"item: only a one-element tensor converts to a number, shape is {self.shape()}")
        return self.numpy().reshape(-1)[0].item()

    def __float__(self): return float(self.item())
    def __int__(self): return int(self.item())

    def tolist(self):
        """torch's ``tolist``: nested lists of Python numbers (a number for a 0-d tensor)."""
        return self.numpy().tolist()

    def __repr__(self):
        n = self.numel()
        if n <= 20:
            body = np.array2string(self.numpy(), separator=", ", precision=4)
        else:
            body = f"<{n} elements>"
        return f"Tensor({body}, shape={self.shape()}, dtype={self.dtype}, device={self.device.selector})"

    # -- views and copies ---------------------------------------------------------------------------
    def view(self) -> View:
        """This tensor as a kernel operand: its buffer with its strides (a permuted view stays one)."""
        if self._view is None:
            return View(self, self._shape, contiguous_strides(self._shape), 0)
        strides, offset = self._view
        return View(self._raw(), self._shape, strides, offset)

    def _raw(self) -> "Tensor":
        """A contiguous, flat tensor over the whole of this one's buffer (the base of its view)."""
        t = Tensor.__new__(Tensor)
        t.device, t.dtype, t._view, t._storage = self.device, self.dtype, None, self._storage
        t._shape = (self._storage.nbytes // self.dtype.itemsize,)
        return t

    def _materialize(self):
        """Lay a permuted view out contiguously in a buffer of its own, in place. The version carries
        over, so a saved tensor's in-place check still sees writes made before this."""
        copy = copy_view(self.view())
        copy._storage.version = self._storage.version
        self._storage, self._view = copy._storage, None

    def is_contiguous(self) -> bool:
        return self._view is None

    def reshape(self, shape) -> "Tensor":
        """The same data with another shape (shares the buffer; one axis may be -1). A permuted view is
        copied first, as torch's reshape does when it must."""
        shape = infer_shape(shape, self.numel(), self._shape)
        base = self if self._view is None else self.contiguous()
        # Built directly: the dtype, device and element count are this tensor's, already checked
        # (this runs several times per op in backward's sum_to_shape).
        t = Tensor.__new__(Tensor)
        t.device, t.dtype, t._shape, t._storage, t._view = self.device, self.dtype, shape, base._storage, None
        return t

    def transpose(self, d0=0, d1=1) -> "Tensor":
        """A view with axes ``d0`` and ``d1`` swapped (no copy)."""
        nd = self.ndim()
        a = normalize_axis(d0, nd, "transpose dim0", self._shape)
        b = normalize_axis(d1, nd, "transpose dim1", self._shape)
        if nd == 0:
            return self   # torch: dims 0 and -1 of a 0-d tensor, a no-op
        perm = list(range(nd))
        perm[a], perm[b] = perm[b], perm[a]
        return self.permute(perm)

    def permute(self, perm) -> "Tensor":
        nd = self.ndim()
        perm = permutation(self._shape, perm)
        strides, offset = self._view if self._view is not None else (contiguous_strides(self._shape), 0)
        shape = tuple(self._shape[p] for p in perm)
        strides = tuple(strides[p] for p in perm)
        t = Tensor.__new__(Tensor)
        t.device, t.dtype, t._shape, t._storage = self.device, self.dtype, shape, self._storage
        # Size-1 axes do not move anything: such a permute (or undoing one) is contiguous again.
        walk = tuple(st for st, n in zip(strides, shape) if n != 1)
        dense = tuple(st for st, n in zip(contiguous_strides(shape), shape) if n != 1)
        t._view = None if (walk == dense and offset == 0) else (strides, offset)
        return t

    @property
    def T(self) -> "Tensor":
        return self.transpose(-2, -1) if self.ndim() >= 2 else self

    def narrow(self, dim, start, length) -> "Tensor":
        """A copy of ``length`` elements along ``dim`` starting at ``start``."""
        d, start, length = narrow_arguments(self._shape, dim, start, length)
        st = contiguous_strides(self._shape)
        shape = list(self._shape)
        shape[d] = length
        return copy_view(View(self, shape, st, start * st[d]))

    def expand(self, shape) -> "Tensor":
        """A copy broadcast to ``shape`` (numpy rules; -1 keeps a size)."""
        shape = [shape] if isinstance(shape, (numbers.Integral, np.integer)) else list(shape)
        src = self._shape
        if len(shape) < len(src):
            raise ValueError(f"expand: cannot expand shape {list(src)} to {shape}: fewer dimensions")
        lead = len(shape) - len(src)
        for k, s in enumerate(shape):
            if isinstance(s, (numbers.Integral, np.integer)) and not isinstance(s, bool) and s == -1:
                if k < lead:
                    raise ValueError(f"expand: -1 is not allowed for the new leading dimension {k} in {shape}")
                shape[k] = src[k - lead]
        shape = list(_parse_shape(shape, "expand shape"))
        target = tuple(shape)
        if broadcast_shapes(src, target, op="expand") != target:
            raise ValueError(f"expand: cannot expand shape {list(src)} to {list(target)}")
        return copy_view(broadcast_view(self, target))

    def contiguous(self) -> "Tensor":
        """This tensor if it is contiguous, else a contiguous copy."""
        return self if self._view is None else copy_view(self.view())

    def clone(self) -> "Tensor":
        """A copy in a new buffer (the driver's buffer copy: no kernel to build)."""
        if self._view is not None:
            return copy_view(self.view())
        t = Tensor._wrap(self._shape, self.dtype, self.device)
        nbytes = self.numel() * self.dtype.itemsize
        if nbytes:
            launch.copy(self.device, t.buffer, self.buffer, nbytes)
        return t

    def astype(self, dtype) -> "Tensor":
        dt = self.device.check_dtype(dtype)
        if dt == self.dtype:
            return self
        return elementwise("a", [self], dtype=dt)

    def to(self, *args, device=None, dtype=None, copy=False) -> "Tensor":
        """This tensor on another device and/or in another dtype, as torch's ``to``: ``to(device)``,
        ``to(dtype)``, ``to(device, dtype)``, ``to(other)``. A device is a :class:`Device` or a selector
        (``"0:0"``, ``"pocl"``); the data goes through the host only when the device differs. Returns
        this tensor itself when nothing changes (unless ``copy=True``).

        >>> t = Tensor.from_vec([1.5, 2.5], [2])
        >>> t.to(t.device.selector) is t
        True
        >>> t.to("int32").to_vec()
        [1, 2]
        """
        dev, dt = to_arguments(self, args, device, dtype)
        out = self
        if dev is not None and dev is not self.device:
            out = Tensor.from_numpy(self.numpy(), self.dtype, dev)
        if dt is not None:
            out = out.astype(dt)
        return self.clone() if copy and out is self else out

    # Arithmetic dunders and the registry's ops (t.exp(), t.relu()...) are attached by surface.py.
    # In place, as torch: the result is written into this tensor's own buffer (a view writes through to
    # the tensor it views), its version goes up, and a result of another kind (int += float) is refused.
    __iadd__ = lambda self, o: self.copy_(self + o)
    __isub__ = lambda self, o: self.copy_(self - o)
    __imul__ = lambda self, o: self.copy_(self * o)
    __itruediv__ = lambda self, o: self.copy_(self / o)

    def copy_(self, src) -> "Tensor":
        """Write ``src`` (a Tensor, broadcast to this shape, or a number) into this tensor, in place.

        >>> t = Tensor.zeros([2, 2])
        >>> t += Tensor.from_vec([1.0, 2.0], [2])
        >>> t.to_vec()
        [1.0, 2.0, 1.0, 2.0]
        """
        if not isinstance(src, Tensor):
            return self.fill_(src)
        if src.dtype.kind == "f" and self.dtype.kind != "f" or (src.dtype.kind in "iu" and self.dtype.kind == "b"):
            raise TypeError(f"in-place: a {src.dtype} result cannot be written into a {self.dtype} tensor "
                            "(as in torch); convert with .astype() and assign")
        if broadcast_shapes(src._shape, self._shape, op="in-place") != self._shape:
            raise ValueError(f"in-place: a result of shape {src.shape()} does not fit shape {self.shape()}")
        if src is self:
            return self
        nbytes = self.numel() * self.dtype.itemsize
        if self._view is None and src._view is None and src.dtype == self.dtype and src._shape == self._shape:
            if nbytes:
                launch.copy(self.device, self.buffer, src.buffer, nbytes)   # the driver's copy: no kernel to build
            self._version += 1
            return self
        if self.numel():
            elementwise("a", [src], out=self.view(), op="copy_")   # casts, broadcasts, writes through a view
        return self

    def fill_(self, value) -> "Tensor":
        """Set every element to ``value``, in place (through a view, into the tensor it views)."""
        if self._view is None:
            return fill(self, value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"fill_: value must be a number, got {value!r}")
        if self.numel():
            elementwise("s", [], names=(), scalars={"s": as_float(value, "fill_")}, out=self.view(),
                        op="fill_", device=self.device)
        return self

    def zero_(self) -> "Tensor":
        return self.fill_(0)

    def __matmul__(self, other):
        if not isinstance(other, Tensor):
            return NotImplemented  # lets Variable.__rmatmul__ take Tensor @ Variable
        return self.matmul(other)

    def matmul(self, other, trans_a=False, trans_b=False) -> "Tensor":
        from .matmul import matmul
        return matmul(self, other, trans_a=trans_a, trans_b=trans_b)

    # ``dim`` is torch's name for ``axis``; both are accepted by keyword.
    def sum(self, axis=None, keepdim=False, *, dim=None) -> "Tensor":
        return _reduce_dims(self, "sum", _axis_or_dim(axis, dim, "sum"), keepdim)

    def mean(self, axis=None, keepdim=False, *, dim=None) -> "Tensor":
        return _reduce_dims(self, "mean", _axis_or_dim(axis, dim, "mean"), keepdim)

    def max(self, dim=None, keepdim=False, *, axis=None):
        """torch's ``max``: over everything a 0-d Tensor; along ``dim`` ``(values, indices)`` as Variable's.

        numpy's keyword ``axis=`` gives the values alone, as numpy's ``max``.
        """
        if dim is None:
            return reduce(self, "max", axis, keepdim)
        if axis is not None:
            raise TypeError("max: give axis or dim, not both")
        values, indices = reduce(self, "argmax", normalize_axis(dim, self.ndim(), "max dim"), keepdim)
        return ValuesIndices(values, indices)

    def argmax(self, axis=None, keepdim=False, *, dim=None) -> "Tensor":
        axis = _axis_or_dim(axis, dim, "argmax")
        if axis is None:   # over the flattened tensor, as torch
            idx = reduce(self.reshape([self.numel()]), "argmax", 0, False)[1]
            return idx.reshape([1] * self.ndim()) if keepdim else idx
        return reduce(self, "argmax", axis, keepdim)[1]

    # Comparisons (== != < <= > >=, attached by functions/compare.py) give bool masks; Tensors
    # stay usable as dict keys.
    __hash__ = object.__hash__

    def __bool__(self):
        raise TypeError("the truth value of a Tensor is ambiguous; read it with item(), or use any()/all()")



# torch's ``torch.return_types.max``: unpacks as a pair, and has ``.values`` / ``.indices``.
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


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


def broadcast_view(t: Tensor, shape) -> View:
    """``t`` read as ``shape`` with stride 0 on the broadcast axes."""
    shape = tuple(shape)
    lead = len(shape) - t.ndim()
    v = t.view()
    strides = [0] * lead + [0 if (t._shape[k] == 1 and shape[lead + k] != 1) else v.strides[k]
                            for k in range(t.ndim())]
    return View(v.tensor, shape, strides, v.offset)


def _check_same_device(op, tensors):
    dev = tensors[0].device
    for t in tensors[1:]:
        if t.device is not dev:
            raise ValueError(f"{op}: tensors are on different devices ({dev.selector} {dev.name} and "
                             f"{t.device.selector} {t.device.name}); move one with .to(device)")
    return dev


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


def _local_size(device) -> int:
    return device.target.local_size(256)


def ew_launch_shape(device, n):
    """(chunk, global size, local size) for n elements: see the comment in elementwise.cl.mako."""
    t = device.target
    if not t.is_gpu:
        # A few chunks per core so the pthread scheduler can balance, each long enough to vectorise.
        chunk = max(t.chunk, -(-n // (t.items_per_unit * t.compute_units)))
        chunk = (chunk + 63) & ~63
        return chunk, -(-n // chunk), 1
    local = _local_size(device)
    if n > _MAX_WORK_ITEMS:   # keep the global size well inside 32 bits: a few elements per work-item
        chunk = -(-n // _MAX_WORK_ITEMS)
        return chunk, kernels.round_up(-(-n // chunk), local), local
    return 1, kernels.round_up(n, local), local


_MAX_WORK_ITEMS = 2**30


class _Plan:
    """Everything a launch needs that depends only on the call's signature, worked out once.

    Each plan has its own kernel object with the shape arguments (strides, sizes, counts) set when the
    plan is made, so a call sets only its buffers and scalars, the scalars as pre-packed bytes:
    pyopencl's general set_args inspected every argument and cost ~5 us of a ~20 us op on PoCL.
    """

    __slots__ = ("kernel", "kernel_device", "int_args", "global_size", "local_size", "shape", "dtype",
                 "scalar_dtype", "pack_scalar", "vector", "preset", "nbytes", "fuse", "n", "n_bytes",
                 "chunk_bytes")


# The elementwise loop's vectors stay within 256 bits: wider ones were measured no faster there.
_EW_VECTOR_BITS = 256
# Comparisons, selects, integer maths and casts mean something else on vectors (true is -1, ?: is
# a per-lane select, casts between vector types are illegal), so only plain arithmetic and math
# builtins take the vector loop.
_NOT_VECTOR_SAFE = re.compile(r"[?<>=!%&|^~]|\bgid\b|\(\s*(T|int|float|double)\s*\)")


def _vector_safe(expr: str) -> bool:
    return _NOT_VECTOR_SAFE.search(expr) is None


def _descriptor(x):
    # dtype.num rather than the dtype: hashing a numpy dtype costs more than the rest of the key.
    if isinstance(x, View):
        t = x.tensor
        return (t.device, t.dtype.num, x.shape, x.strides, x.offset)
    return (x.device, x.dtype.num, x._shape, x._view)


def elementwise(expr: str, inputs: Sequence, names: Sequence[str] = ("a", "b", "c", "d"),
                scalars: Optional[dict] = None, shape=None, dtype=None, out=None, op="elementwise",
                device=None, int_scalars: Optional[dict] = None, long_scalars: Optional[dict] = None) -> Tensor:
    """``out = expr(inputs, scalars)`` in one kernel, broadcasting the inputs (Tensors or Views).

    ``expr`` is OpenCL C over the input names, the scalar names (``scalars`` in the tensor's float
    type, ``int_scalars`` as int, ``long_scalars`` as long) and ``gid`` (the output element's flat index, so ``gid % C`` is the
    column of a contiguous [N, C] output); ``L(0.5)`` writes a literal of the tensor's float type. ``out`` may be a View into an
    existing tensor (used by ``cat``); ``device`` is needed only when there are no inputs.

    >>> x = Tensor.from_vec([1.0, -2.0], [2])
    >>> elementwise("a > 0 ? a : L(0.1) * a", [x]).to_vec()
    [1.0, -0.20000000298023224]
    """
    scalars = scalars or _NONE
    int_scalars = int_scalars or _NONE
    long_scalars = long_scalars or _NONE
    # The key: everything the plan depends on. Built inline, once per op: a Tensor operand is
    # described by (device, dtype number, shape), a View by its tensor's and its own layout.
    n_in = len(inputs)
    key = [expr, names if names.__class__ is tuple and len(names) == n_in else tuple(names[:n_in]),
           tuple(scalars), tuple(int_scalars), tuple(long_scalars), shape if shape is None else tuple(shape), dtype,
           None if out is None else _descriptor(out), device]
    for x in inputs:
        if x.__class__ is View:
            key.append(_descriptor(x))
        else:
            key += (x.device, x.dtype.num, x._shape, x._view)
    key = tuple(key)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) > 20000:  # many distinct shapes: start over rather than grow without bound
            _plans.clear()
        plan = _plans[key] = _make_plan(expr, inputs, names, scalars, int_scalars, long_scalars, shape, dtype,
                                             out, op, device)
    if out is not None:
        result = out.tensor
        result._version += 1
    else:
        result = Tensor.__new__(Tensor)
        result.device, result.dtype, result._shape = plan.kernel_device, plan.dtype, plan.shape
        result._storage = _Storage(plan.kernel_device, plan.nbytes)
        result._view = None
    knl = plan.kernel
    if knl is None:  # nothing to compute
        return result
    # The plan's own kernel object already holds the shape arguments; only the buffers and the
    # scalars change from call to call (see _Plan), the scalars as packed bytes.
    args = [result.buffer]
    if launch.recording_threads:   # the buffer property tells a capture which buffers it reads
        for x in inputs:
            if x.__class__ is not View and x._view is not None:
                x = x.view()   # read in place, not laid out
            args.append(x.tensor.buffer if x.__class__ is View else x.buffer)
    else:
        for x in inputs:
            args.append((x.tensor if x.__class__ is View else x)._storage.buffer)
    if scalars:
        pack = plan.pack_scalar
        for v in scalars.values():
            try:
                args.append(pack(v))
            except OverflowError:   # beyond float32's range: numpy's conversion gives +-inf
                args.append(np.array(v, dtype=plan.scalar_dtype).tobytes())
    for v in int_scalars.values():
        args.append(_pack_int(v))
    for v in long_scalars.values():
        args.append(_pack_long(v))
    launch.kernel(plan.kernel_device, knl, plan.global_size, plan.local_size, args, packed=True,
                  preset=plan.preset, fusable=plan if plan.fuse else None)
    return result


_pack_int = struct.Struct("=i").pack
_pack_long = struct.Struct("=q").pack
_NONE: dict = {}   # never written: the default for absent scalars


_plans: dict = {}


def _make_plan(expr, inputs, names, scalars, int_scalars, long_scalars, shape, dtype, out, op, device) -> _Plan:
    views = [x if isinstance(x, View) else x.view() for x in inputs]
    tensors = [v.tensor for v in views]
    operands = tensors + ([out.tensor] if out is not None else [])
    dev = _check_same_device(op, operands) if operands else get_device(device)
    names = tuple(names[:len(views)])
    # The widest float among the operands (float32 op float64 is float64 whichever comes first).
    float_dtype = max((t.dtype for t in tensors if t.dtype.kind == "f"), key=lambda d: d.itemsize,
                      default=np.dtype(np.float32))
    plan = _Plan()
    plan.kernel_device = dev
    if out is not None:
        out_view = out
        out_shape = out.shape
        plan.dtype = out.tensor.dtype
    else:
        out_shape = tuple(shape) if shape is not None else broadcast_shapes(*[v.shape for v in views], op=op)
        plan.dtype = dev.check_dtype(dtype or float_dtype)
        out_view = View(None, out_shape, contiguous_strides(out_shape), 0)
    plan.shape = out_shape
    n = math.prod(out_shape)
    plan.nbytes = n * plan.dtype.itemsize
    if n == 0:
        plan.kernel, plan.preset, plan.fuse = None, (), None
        return plan
    # Every operand as (shape aligned to the output, strides, offset); broadcast axes get stride 0.
    rank = len(out_shape)
    stride_sets = [out_view.strides]
    for v in views:
        lead = rank - len(v.shape)
        if lead < 0 or any(v.shape[k] not in (1, out_shape[lead + k]) for k in range(len(v.shape))):
            raise ValueError(f"{op}: shape {list(v.shape)} cannot be broadcast to {list(out_shape)}")
        stride_sets.append([0] * lead + [0 if (v.shape[k] == 1 and out_shape[lead + k] != 1) else v.strides[k]
                                         for k in range(len(v.shape))])
    cshape, cstrides = _collapse(out_shape, stride_sets)
    if not cshape:   # a single element: one axis of size 1, so an operand with an offset has an axis to walk
        cshape, cstrides = [1], [[1] for _ in stride_sets]
    contiguous = contiguous_strides(cshape)
    offsets = [out_view.offset] + [v.offset for v in views]
    kinds = tuple("flat" if (list(st) == list(contiguous) and off == 0) else "strided"
                  for st, off in zip(cstrides, offsets))
    if "strided" not in kinds:
        cshape = []  # flat operands ignore the shape: one kernel serves every rank
    # How each operand moves along the last axis: "1" contiguous, "0" broadcast, "s" any other stride.
    inner = tuple("1" if st[-1] == 1 else "0" if st[-1] == 0 else "s" for st in cstrides) if cshape else ()
    ctype = kernels.ctype(float_dtype)
    types = tuple(kernels.ctype(t) for t in [plan.dtype] + [t.dtype for t in tensors])
    chunk, global_size, local_size = ew_launch_shape(dev, n)
    # Every index the kernel forms: the element count, the last work-item's run, and each strided
    # operand's offsets and strides (its reach); flat operands stay within n.
    itype = index_type(n, global_size * chunk,
                       *[View(None, cshape, st, off) for kind, st, off in zip(kinds, cstrides, offsets)
                         if kind == "strided"])
    params = dict(ctype=ctype, rank=len(cshape), kinds=kinds, names=names, scalars=tuple(scalars),
                  int_scalars=tuple(int_scalars), long_scalars=tuple(long_scalars), expr=expr, inner=inner,
                  types=types if any(t != ctype for t in types) else (), itype=itype)
    widths = [0]   # 0: the scalar loop, which every device builds
    if not dev.target.is_gpu and "strided" not in kinds and names and not int_scalars and not long_scalars \
            and params["types"] == () and _vector_safe(expr):
        bits = 8 * np.dtype(float_dtype).itemsize
        widths = [w for w in dev.target.vector_widths(float_dtype, 4) if w * bits <= _EW_VECTOR_BITS][:1] + widths
    # An expression with no vector form (e.g. pow of a vector by a scalar) takes the scalar loop.
    plan.vector, plan.kernel = kernels.first_that_builds(
        dev, f"elementwise {expr}", widths, quiet=True,
        make=lambda w: (w, kernels.get_kernel(dev, "elementwise.cl.mako", "ew",
                                              **(dict(vector=w) if w else {}), **params)))
    ints = []
    for kind, st, off in zip(kinds, cstrides, offsets):
        if kind == "strided":
            ints.append(off)
            ints.extend(st)
    ints.extend(cshape)
    ints += [n, chunk]
    plan.int_args = ints
    plan.global_size, plan.local_size = (global_size,), (local_size,)
    shared = plan.kernel
    plan.kernel = cl.Kernel(shared.program, shared.function_name)
    first_int = 1 + len(views) + len(scalars) + len(int_scalars) + len(long_scalars)
    pack_index = _pack_int if itype == "int" else _pack_long
    plan.preset = tuple((first_int + k, pack_index(value)) for k, value in enumerate(ints))
    for index, value in plan.preset:
        plan.kernel.set_arg(index, np.frombuffer(value, dtype=_index_dtype(itype))[0])
    plan.scalar_dtype = float_dtype
    plan.pack_scalar = struct.Struct("=" + float_dtype.char).pack
    # What a capture needs to fuse this launch with its neighbours (fusion.py): only whole contiguous
    # float operands of one type, no integer scalars, no use of the element index.
    plan.n, plan.n_bytes, plan.chunk_bytes = n, pack_index(n), pack_index(chunk)
    fusable = (itype == "int" and "strided" not in kinds and names and not int_scalars and not long_scalars and params["types"] == ()
               and plan.dtype.kind == "f" and not re.search(r"\bgid\b", expr))
    plan.fuse = (expr, names, tuple(scalars), ctype, plan.vector) if fusable else None
    return plan


def copy_view(v: View) -> Tensor:
    """Materialise a view as a new contiguous tensor."""
    return elementwise("a", [v], shape=v.shape, dtype=v.tensor.dtype, op="copy")


def fill(t: Tensor, value, op="fill") -> Tensor:
    """Set every element of ``t`` to ``value`` in place. As torch's fill: a finite value beyond the
    dtype's range is refused (ValueError naming ``op``), never wrapped or made infinite."""
    if (isinstance(value, (bool, np.bool_)) and t.dtype.kind != "b") or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: value must be a number, got {value!r}")
    if t.dtype.kind == "f":
        value = as_float(value, op)
        if math.isfinite(value) and abs(value) > float(np.finfo(t.dtype).max):
            raise ValueError(f"{op}: value {value!r} cannot be converted to {t.dtype} without overflow")
    elif t.dtype.kind == "b":
        value = bool(value)
    else:
        bound = 2 ** (8 * t.dtype.itemsize - 1)
        if isinstance(value, (numbers.Integral, np.integer)):
            ok = -bound <= value < bound
        else:
            ok = math.isfinite(value) and -bound <= value < bound and value == int(value)
        if not ok:
            more = " (it cannot be converted without overflow)" if isinstance(value, numbers.Integral) else ""
            raise ValueError(f"{op}: value {_short(value)} is not an {t.dtype}{more}")
        value = int(value)
    if t.numel():
        # The driver's own fill: no kernel to build. The pattern is one element of the tensor's type.
        launch.fill(t.device, t.buffer, t.dtype.type(value), t.numel() * t.dtype.itemsize)
        t._version += 1
    return t


def as_index(t: Tensor, op: str) -> Tensor:
    """An int32 or int64 index tensor as int32 for the index kernels. int64 values beyond int32 are
    clamped to its ends, which are out of range for any axis, so they are still caught (never wrapped)."""
    if t.dtype == np.int32:
        return t
    if t.dtype == np.int64:
        return elementwise("(int)clamp(a, (long)INT_MIN, (long)INT_MAX)", [t], op=op, dtype=np.int32)
    raise TypeError(f"{op}: an index tensor must be int32 or int64, got {t.dtype}")


# ------------------------------------------------------------------------------------------------------
# Reductions
# ------------------------------------------------------------------------------------------------------

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


def _reduce_pass(x: Tensor, op, outer, R, inner, scale, idx=None, dtype=None):
    """One pass over [outer, R, inner]; returns (values [outer, P, inner], indices or None, P).

    ``dtype``: the accumulator's and the result's type when it is not ``x``'s (an integer sum in int64).
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
    # The layout's work-group, or fewer work-items where the built kernel allows fewer.
    fit, knl = kernels.first_that_builds(
        dev, f"reduce {params['ctype']}", [L >> k for k in range(L.bit_length())],
        lambda n: (n, kernels.get_kernel(dev, "reduce.cl.mako", "reduce", local_size=n, local=n, **params)))
    if fit != L:
        strategy, L, P, chunk, rows = _reduce_layout(dev, outer, R, inner, cap=fit)
    groups = rows * P
    I = _index_dtype(itype)
    out = Tensor._wrap((outer, P, inner), dtype, dev)
    args = [x.buffer, I(0), out.buffer]
    out_idx = None
    if with_index:
        out_idx = Tensor._wrap((outer, P, inner), np.dtype(np.int32), dev)
        # The first pass reads no indices; any buffer fills the slot.
        args += [idx.buffer if idx is not None else out_idx.buffer, out_idx.buffer]
    args += [I(R), I(inner), I(chunk), I(P), dtype.type(scale if P == 1 else 1.0)]
    if itype == "long":
        # The 64-bit form walks its rows in a loop: launch at most _MAX_WORK_ITEMS work-items.
        args.append(np.int64(groups))
        groups = min(groups, _MAX_WORK_ITEMS // L)
    kernels.launch(dev, knl, (groups * L,), (L,), *args)
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
    if op == "argmax" and R > INT32_MAX:
        raise ValueError(f"argmax: a dimension of {R} elements is beyond what argmax supports ({INT32_MAX}, "
                         "int32 positions)")
    # torch: integer sums are int64; a bool or int32 tensor is read as it is and summed in int64.
    acc_dtype = np.dtype(np.int64) if op == "sum" and x.dtype.kind != "f" else None
    if x.dtype.kind == "b" and acc_dtype is None:   # max of a mask: in int32, then back
        res = reduce(x.astype("int32"), op, axis, keepdim, scale)
        return (res[0].astype("bool"), res[1]) if op == "argmax" else res.astype("bool")
    scale = scale / R if op == "mean" else scale
    vals, idx, P = _reduce_pass(x, op, outer, R, inner, scale, dtype=acc_dtype)
    while P > 1:
        vals, idx, P = _reduce_pass(vals, op, outer, P, inner, scale, idx=idx)
    vals = vals.reshape(out_shape)
    if op == "argmax":
        return vals, idx.reshape(out_shape)
    return vals


_CE_FLAGS = dict(weighted=False, smoothing=False, nll=False, count=False, g_rows=False, has_den=False)


def _softmax_launch(device, op, which, rows, cols, dtype, *buffers, scalars=(), flags=None) -> None:
    check_index32(op, rows * cols)
    t = device.target
    strategy = "local" if t.is_gpu else "serial"
    locals_ = t.local_sizes(256 if cols > 512 else 64) if t.is_gpu else [1]
    params = dict(ctype=kernels.ctype(dtype), op=op, strategy=strategy, **(flags or _CE_FLAGS))
    # The target's width and work-group, then narrower widths, then fewer work-items.
    local, knl = kernels.first_that_builds(
        device, f"softmax rows {which} {params['ctype']}",
        [(vw, n) for n in locals_ for vw in t.vector_widths(dtype)],
        lambda c: (c[1], kernels.get_kernel(device, "softmax.cl.mako", which, vw=c[0], local_size=c[1], local=c[1],
                                            **params)))
    global_size = rows * local if t.is_gpu else rows
    kernels.launch(device, knl, (global_size,), (local,), *buffers, *scalars, np.int32(rows), np.int32(cols))


def softmax_rows(x: Tensor, log: bool = False) -> Tensor:
    """Softmax (or log-softmax) along the last axis, one pass per row."""
    y = Tensor._wrap(x._shape, x.dtype, x.device)
    cols = x._shape[-1]
    if x.numel():
        _softmax_launch(x.device, "log_softmax" if log else "softmax", "forward", x.numel() // cols, cols,
                        x.dtype, x.buffer, y.buffer)
    return y


def softmax_rows_backward(g: Tensor, y: Tensor, log: bool = False) -> Tensor:
    """The gradient of softmax_rows at output ``y`` for incoming gradient ``g`` (same shape)."""
    gx = Tensor._wrap(y._shape, y.dtype, y.device)
    cols = y._shape[-1]
    if y.numel():
        _softmax_launch(y.device, "log_softmax" if log else "softmax", "backward", y.numel() // cols, cols,
                        y.dtype, g.buffer, y.buffer, gx.buffer)
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
    rows, cols = x._shape
    loss = Tensor._wrap((2, rows) if count else (rows,), x.dtype, x.device)
    lse = Tensor._wrap((rows,), x.dtype, x.device)
    if rows:
        # has_den follows count (a mean counts in forward and divides in backward): the backward's flags
        # are then the forward's and both kernels come from one program (one build less on a cold start).
        flags = dict(_CE_FLAGS, weighted=weight is not None, smoothing=label_smoothing > 0, nll=nll, count=count,
                     has_den=count)
        _softmax_launch(x.device, "cross_entropy", "forward", rows, cols, x.dtype, x.buffer, targets.buffer,
                        *([weight.buffer] if weight is not None else []), lse.buffer, loss.buffer,
                        scalars=(np.int32(ignore_index), x.dtype.type(label_smoothing)), flags=flags)
    return loss, lse


def cross_entropy_rows_backward(g: Tensor, x: Tensor, targets: Tensor, lse: Tensor, scale: float,
                                weight: Optional[Tensor] = None, ignore_index: int = -100,
                                label_smoothing: float = 0.0, nll: bool = False, den: Optional[Tensor] = None
                                ) -> Tensor:
    """The gradient of :func:`cross_entropy_rows`: ``g * scale (/ den[0])`` times each row's derivative,
    ``g`` one element or one per row (0 on ignored and invalid rows)."""
    gx = Tensor._wrap(x._shape, x.dtype, x.device)
    rows, cols = x._shape
    if x.numel():
        flags = dict(_CE_FLAGS, weighted=weight is not None, smoothing=label_smoothing > 0, nll=nll,
                     g_rows=g.numel() != 1 or (rows == 1 and g.ndim() == 1), has_den=den is not None,
                     count=den is not None)
        _softmax_launch(x.device, "cross_entropy", "backward", rows, cols, x.dtype, g.buffer, x.buffer,
                        targets.buffer, *([weight.buffer] if weight is not None else []), lse.buffer,
                        *([den.buffer] if den is not None else []), gx.buffer,
                        scalars=(x.dtype.type(scale), np.int32(ignore_index), x.dtype.type(label_smoothing)),
                        flags=flags)
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


# ------------------------------------------------------------------------------------------------------
# Joins
# ------------------------------------------------------------------------------------------------------

def cat(tensors: Sequence[Tensor], dim=0) -> Tensor:
    """Concatenate along ``dim`` (every other size must match)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    first = tensors[0]
    nd = first.ndim()
    if nd == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated")
    d = normalize_axis(dim, nd, "cat dim")
    dev = _check_same_device("cat", tensors)
    for t in tensors[1:]:
        if t.ndim() != nd or any(t._shape[k] != first._shape[k] for k in range(nd) if k != d):
            raise ValueError(f"cat: shapes {first.shape()} and {t.shape()} differ outside dim {d}")
        if t.dtype != first.dtype:
            raise TypeError(f"cat: dtypes {first.dtype} and {t.dtype} differ")
    out_shape = list(first._shape)
    out_shape[d] = sum(t._shape[d] for t in tensors)
    out = Tensor(out_shape, first.dtype, dev)
    st = contiguous_strides(out_shape)
    start = 0
    for t in tensors:
        if t.numel():
            elementwise("a", [t], out=View(out, t._shape, st, start * st[d]), op="cat")
        start += t._shape[d]
    out._version = 0
    return out
