"""The elementwise planner: one kernel per expression over broadcast operands, planned once per layout.

``elementwise(expr, inputs)`` is the array layer's workhorse: the registry's ops, casts, copies of views
and fills all come here. A plan (the built kernel, its launch geometry and the preset shape arguments)
is cached by everything it depends on, so a repeated op costs a dictionary look-up and one launch.
"""

from __future__ import annotations

import math
import numbers
import re
import struct
from typing import Optional, Sequence

import numpy as np
import pyopencl as cl

from . import kernels, launch
from .device import get_device
from .dtypes import bfloat16, compute_dtype, float_result
from .shapes import _collapse, _short, as_float, broadcast_shapes, contiguous_strides
from .tensor import Tensor, View, _index_dtype, _Storage, index_type

_ERF = re.compile(r"(?<![A-Za-z0-9_])erfc?\s*\(")


def own_erf(device, ctype, expr) -> bool:
    """Whether a kernel computing ``expr`` in ``ctype`` takes the written-out float32 erf/erfc
    (cl_kernels/erf.mako): where the device target chose them, for float kernels that call them."""
    return ctype == "float" and device.target.own_erf and _ERF.search(expr) is not None


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
BFLOAT16_MAX = 3.3895313892515355e+38   # (2 - 2**-7) * 2**127


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


_NONE: dict = {}   # never written: the default for absent scalars


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
    return _run(plan, inputs, scalars, int_scalars, long_scalars, out)


def _run(plan, inputs, scalars, int_scalars=_NONE, long_scalars=_NONE, out=None) -> Tensor:
    """Launch ``plan`` on ``inputs``: the part of an elementwise op that runs on every call."""
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
    if launch.recording_threads:   # the buffer property tells a capture which buffers it reads
        args = [result.buffer]
        for x in inputs:
            if x.__class__ is not View and x._view is not None:
                x = x.view()   # read in place, not laid out
            args.append(x.tensor.buffer if x.__class__ is View else x.buffer)
    else:
        args = [result._storage.buffer]
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


_plans: dict = {}


class Launcher:
    """``elementwise(expr, ...)`` for whole Tensors and float scalars, with everything that does not
    depend on the operands (the expression, names, scalar names) fixed once: a call keys its plan on the
    launcher and the operands' layouts only. The registry's ops hold one per kernel they run.

    >>> add = Launcher("a + b", ("a", "b"), op="add")
    >>> add([Tensor.from_vec([1.0], [1]), Tensor.from_vec([2.0], [1])]).to_vec()
    [3.0]
    """

    __slots__ = ("expr", "names", "op", "__weakref__")

    def __init__(self, expr: str, names: tuple, op: str = "elementwise"):
        self.expr, self.names, self.op = expr, tuple(names), op

    def __call__(self, inputs, scalars=_NONE) -> Tensor:
        if len(inputs) == 1:
            x = inputs[0]
            if x.__class__ is View:
                return elementwise(self.expr, inputs, self.names, scalars, op=self.op)
            key = (self, tuple(scalars), x.device, x.dtype.num, x._shape, x._view)
        else:
            key = [self, tuple(scalars)]
            for x in inputs:
                if x.__class__ is View:
                    return elementwise(self.expr, inputs, self.names, scalars, op=self.op)
                key += (x.device, x.dtype.num, x._shape, x._view)
            key = tuple(key)
        plan = _plans.get(key)
        if plan is None:
            if len(_plans) > 20000:
                _plans.clear()
            plan = _plans[key] = _make_plan(self.expr, inputs, self.names, scalars, _NONE, _NONE, None, None, None,
                                            self.op, None)
        return _run(plan, inputs, scalars)

    def __repr__(self):
        return f"Launcher({self.expr!r}, {self.names})"


def _make_plan(expr, inputs, names, scalars, int_scalars, long_scalars, shape, dtype, out, op, device) -> _Plan:
    views = [x if isinstance(x, View) else x.view() for x in inputs]
    tensors = [v.tensor for v in views]
    operands = tensors + ([out.tensor] if out is not None else [])
    dev = _check_same_device(op, operands) if operands else get_device(device)
    names = tuple(names[:len(views)])
    # The widest float among the operands (float32 op float64 is float64 whichever comes first; float16
    # op bfloat16 is float32, as torch). 16-bit operands are computed on in float32 (compute_dtype).
    float_dtype = float_result(t.dtype for t in tensors)
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
    ctype = kernels.ctype(compute_dtype(float_dtype))
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
    if "half" in types and not dev.target.is_gpu:
        params["half_io"] = "bits"   # see elementwise.cl.mako: PoCL's vload_half/vstore_half are slow calls
    if own_erf(dev, ctype, expr):
        params["own_erf"] = True
    widths = [0]   # 0: the scalar loop, which every device builds
    # One 16-bit type throughout (float16 or bfloat16 in and out) takes the vector loop too: its
    # loads and stores convert whole vectors (elementwise.cl.mako).
    one_half = params["types"] != () and len(set(types)) == 1 and types[0] in ("half", "bf16")
    if not dev.target.is_gpu and "strided" not in kinds and names and not int_scalars and not long_scalars \
            and (params["types"] == () or one_half) and _vector_safe(expr):
        bits = 8 * np.dtype(compute_dtype(float_dtype)).itemsize
        widths = [w for w in dev.target.vector_widths(compute_dtype(float_dtype), 4) if w * bits <= _EW_VECTOR_BITS][:1] + widths
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
    plan.scalar_dtype = float_dtype = compute_dtype(float_dtype)
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
        if math.isfinite(value) and abs(value) > (BFLOAT16_MAX if t.dtype is bfloat16 else float(np.finfo(t.dtype).max)):
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
