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
import warnings
from collections import namedtuple
from typing import Sequence

import numpy as np
import pyopencl as cl

from . import launch
from .device import Device, DeviceError, get_device, kind_device
from .attribute_values import Size, as_size, dim
from .dtypes import bfloat16, float16, from_bf16_bits, resolve, to_bf16_bits

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
    """The device dtype that holds a numpy dtype's values: float16, float32, float64, int32, int64 and bool
    as they are (bfloat16 too); wider floats (longdouble) become float64, narrower integers int32,
    unsigned 32/64-bit ones int64 (values that int64 cannot hold are refused when copied)."""
    if dtype is bfloat16:
        return dtype
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return dt if dt in (np.float16, np.float32, np.float64) else np.dtype(np.float64)
    if dt.kind == "b":
        return dt
    if dt.kind in "iu":
        return np.dtype(np.int32) if dt.itemsize < 4 or (dt.kind == "i" and dt.itemsize == 4) else np.dtype(np.int64)
    raise TypeError(f"expected numbers, got {dt}")


def _is_dtype(value) -> bool:
    """Whether ``value`` names a dtype (``np.float64``, ``"float32"``, ``np.dtype("i8")``) rather than a
    device. A string numpy cannot read as a dtype is a device selector (``"0:0"`` makes numpy raise
    ValueError, ``"pocl"`` TypeError)."""
    if isinstance(value, np.dtype) or value is bfloat16 or resolve(value) is not None:
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
        if t.dtype is bfloat16:
            # Numbers (any dtype) rounded to bfloat16 on the host: float32 first, then to nearest even.
            # A float64 goes through float32 (two roundings, as torch's conversion does).
            with np.errstate(over="ignore", invalid="ignore"):
                host = to_bf16_bits(arr.astype(np.float32))
            if host.size:
                launch.upload(t.device, t.buffer, host)
            return t
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
        if t.dtype == float16 and arr.dtype != float16:
            # Through float32, as torch converts to float16 (and as the kernels do): a float64 half-way
            # case of float16 that float32 rounds onto the tie goes to even, as torch's does.
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr.astype(np.float32)
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
        if arr.dtype.kind in "iu" and _is_dtype(dtype) and resolve(dtype) is None and np.dtype(dtype).kind == "i":
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

    @property
    def shape(self) -> Size:
        """torch's ``x.shape`` (a tuple-like :class:`Size`); ``x.shape()`` is the crate's list."""
        return as_size(self._shape)

    @property
    def ndim(self) -> int:
        """torch's ``x.ndim``; ``x.ndim()`` as the crate."""
        return dim(len(self._shape))

    def __array__(self, dtype=None, copy=None):
        # numpy's view of a tensor (np.asarray(t), np.testing on tensors): its values, read to the host.
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __call__(self) -> "Tensor":
        # So that ``p.grad()`` (the crate) and ``p.grad`` (torch) are both this Tensor.
        return self

    def numel(self) -> int:
        return math.prod(self._shape)

    def size(self, dim=None):
        return as_size(self._shape) if dim is None else self._shape[normalize_axis(dim, len(self._shape))]

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
        """Copy to a new numpy array (waits for the kernels that write this tensor). A bfloat16 tensor
        comes back as float32 (numpy has no bfloat16; every bfloat16 value is a float32 exactly), a
        float16 one as float16."""
        if self.dtype is bfloat16:
            bits = np.empty(self._shape, dtype=np.uint16)
            if bits.size:
                launch.read(self.device, bits, self.buffer)
            return from_bf16_bits(bits).reshape(self._shape)
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
        # Values at any size, summarised past 1000 elements as numpy and torch do (a read of the tensor).
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=1000, edgeitems=3)
        return f"Tensor({body}, shape={self.shape()}, dtype={self.dtype}, device={self.device.selector})"

    # -- views and copies ---------------------------------------------------------------------------
    def view(self, *shape):
        """torch's ``view(*shape)`` (a reshape); without arguments, this tensor as a kernel operand: its
        buffer with its strides (a permuted view stays one)."""
        if shape:
            return self.reshape(varargs(shape))
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

    def reshape(self, *shape) -> "Tensor":
        """The same data with another shape (shares the buffer; one axis may be -1), ``reshape(3, 2)`` or
        ``reshape([3, 2])``. A permuted view is copied first, as torch's reshape does when it must."""
        if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
            shape = shape[0]
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

    def permute(self, *perm) -> "Tensor":
        """A view with the axes in the order ``perm`` (``permute(1, 0)`` or ``permute([1, 0])``)."""
        perm = permutation(self._shape, varargs(perm))
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

    def expand(self, *shape) -> "Tensor":
        """A copy broadcast to ``shape`` (numpy rules; -1 keeps a size): ``expand(-1, 4)`` or ``expand([-1, 4])``."""
        shape = varargs(shape)
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

    def half(self) -> "Tensor":
        """torch's ``half()``: this tensor as float16 (rounded to nearest even; beyond 65504 is inf)."""
        return self.astype(float16)

    def bfloat16(self) -> "Tensor":
        """torch's ``bfloat16()``: this tensor as bfloat16 (rounded to nearest even, NaN stays NaN).

        >>> Tensor.from_vec([1.0, 1.00390625, 3.0], [3]).bfloat16().to_vec()
        [1.0, 1.0, 3.0]
        """
        return self.astype(bfloat16)

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

    def cpu(self) -> "Tensor":
        """torch's ``cpu()``: this tensor on the CPU's OpenCL device (an error naming the problem if there
        is none; ``numpy()`` reads values on the host)."""
        return self.to(kind_device("cpu", "cpu()"))

    def cuda(self, device=None) -> "Tensor":
        """torch's ``cuda()``: this tensor on the first GPU OpenCL device, or on ``device``."""
        return self.to(kind_device("gpu", "cuda()") if device is None else device)

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

    # -- copy and pickle ----------------------------------------------------------------------------
    def __deepcopy__(self, memo) -> "Tensor":
        """A device-side copy on the same device (no host round trip). Tensors that share a buffer
        (reshapes, views) still share one copy of it, so views stay views of the copy."""
        storage = memo.get(id(self._storage))
        if storage is None:
            old = self._storage
            storage = _Storage(self.device, old.nbytes)
            if launch.recording_threads and launch.active_capture() is not None:   # the copy is recorded
                launch.active_capture().keep_storage(old)
                launch.active_capture().keep_storage(storage)
            if old.nbytes:
                launch.copy(self.device, storage.buffer, old.buffer, old.nbytes)
            memo[id(old)] = storage
            memo.setdefault(id(memo), []).append(old)   # keep the id alive while memo is (as copy does)
        t = Tensor.__new__(Tensor)
        t.device, t.dtype, t._shape, t._view, t._storage = self.device, self.dtype, self._shape, self._view, storage
        memo[id(self)] = t
        return t

    def __reduce__(self):
        """Pickles as its values and dtype (a numpy array: reads the device) and unpickles onto the
        default device: a device buffer cannot travel between processes."""
        return _rebuild_tensor, (self.numpy(), self.dtype.str)

    # Comparisons (== != < <= > >=, attached by functions/compare.py) give bool masks; Tensors
    # stay usable as dict keys.
    __hash__ = object.__hash__

    def __bool__(self):
        raise TypeError("the truth value of a Tensor is ambiguous; read it with item(), or use any()/all()")



def _rebuild_tensor(values, dtype) -> Tensor:
    """Unpickling: ``values`` onto the default device."""
    return Tensor.from_numpy(np.array(values, order="C"), dtype=dtype if dtype == "bfloat16" else np.dtype(dtype))


# torch's ``torch.return_types.max``: unpacks as a pair, and has ``.values`` / ``.indices``.
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


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


# The planners build Tensors, so they come after the class; a few callers reach them through this
# module (``T.launch`` and the names below), the rest import them from their own modules.
from .elementwise_kernels import _check_same_device, broadcast_view, copy_view, elementwise, fill  # noqa: E402,F401
from .rows import reduce  # noqa: E402
from .shapes import (_axis_or_dim, _parse_shape, _short, as_float, broadcast_shapes, contiguous_strides,  # noqa: E402
                     infer_shape, narrow_arguments, normalize_axis, numbers_array, permutation, varargs)
