"""Matrix multiply on the device with numpy's ``matmul`` semantics, transposes folded into the kernel.

>>> from axonml_autograd import Tensor
>>> a = Tensor.from_vec([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])
>>> b = Tensor.from_vec([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [3, 2])
>>> matmul(a, b).to_vec()
[4.0, 5.0, 10.0, 11.0]
>>> matmul(a, a, trans_b=True).shape()        # a @ a^T without a transposed copy
[2, 2]

Two kernel strategies live in ``cl_kernels/matmul.cl.mako``: ``"tiled"`` (local-memory tiles, for
GPUs) and ``"blocked"`` (GotoBLAS-style macro blocks walked in L1-sized k slices, register
blocking, each B panel copied into a small k-major buffer by the work-item that uses it; for CPU
devices, where PoCL runs a work-group's items as a loop on one core). Both read transposed operands
in place, so a call is always one launch. The device type picks one; ``AXONML_MATMUL=tiled|blocked``
or ``strategy=`` forces it. Tile sizes ("tiled") and the work split ("blocked") have a static
choice from the device's limits; :func:`tune` (or ``AXONML_TUNE=1``) times the candidates once per
device on a 512^3 problem and keeps the winner on disk for later processes. A first call never
measures, so a cold process pays one compile for matmul and nothing more.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from typing import Optional

import numpy as np
import pyopencl as cl

from . import kernels, launch, tuning
from .tensor import Tensor, check_index32
from .elementwise_kernels import _check_same_device, fill
from .shapes import _collapse, broadcast_shapes, contiguous_strides

STRATEGIES = ("tiled", "blocked")
TEMPLATE = "matmul.cl.mako"

# Tiled candidates, largest first, as (ts, tsk, wpt): a ts x ts block of C per work-group of
# (ts/wpt)^2 work-items, k staged tsk at a time. The first that fits the device's local memory, its
# work-group limit and the built kernel's own limit wins.
TILED_CANDIDATES = ((64, 16, 4), (32, 16, 4), (32, 16, 2), (16, 16, 2), (16, 16, 1), (8, 8, 1),
                    (4, 4, 1), (1, 1, 1))

# Blocked: MR rows x NV vectors of C per work-item's micro-tile, accumulators in vector registers
# (plus NV B vectors and one broadcast A). OpenCL does not report a register count, so the vector
# width stands in for the instruction set: narrower vectors (AVX2/SSE, 16 registers on x86) get
# 6 x 2 = 12 accumulators, the largest block that does not spill; 16 floats (AVX-512, 32 registers)
# get 8 x 2, measured as fast as 10 x 2 to 14 x 2 on a 2-core Xeon and quicker to compile.
BLOCKED_NV = 2
BLOCKED_MR_WIDE, BLOCKED_MR = 8, 6
BLOCKED_SLICE_BYTES = 16 * 1024      # one k slice of an NR-column B panel: half of a 32 KB L1
# The MCP*MR x KC block of A that each column panel re-reads from L2 (half of a 512 KB L2, the smallest
# on current server cores). 64 KB split C into short row blocks that each copied every B panel again:
# on a 2-core EPYC (1 MB L2) 256 KB ran 512^3 in 1.32-1.36 ms against 1.57-1.60, 1024^3 in 10.7 against
# 11.9, the transformer step's [512, 256] x [256, 64] in 114 against 128 us; 256^3 the same.
BLOCKED_A_BLOCK_BYTES = 256 * 1024
BLOCKED_ITEMS_PER_CU = 4             # split C until there are this many work-items per compute unit
BLOCKED_ITEMS_CANDIDATES = (4, 16, 1)   # what the tuner tries for it (the first is the static choice)
TUNE_N = 512                         # the square problem candidates are timed on

_plans: dict = {}
_plans_lock = threading.Lock()
# (devices, dtypes, shapes, transposes, strategy choice, forced config) -> (result shape, launcher)
_calls: dict = {}


class _Plan:
    """Everything one (device, dtype, strategy, transposes) needs to launch, chosen once."""

    __slots__ = ("strategy", "params", "kernel", "local", "item", "compute_units", "items_per_cu")

    def __init__(self, strategy, params, kernel, local, item=0, compute_units=1):
        self.strategy, self.params, self.kernel, self.local = strategy, params, kernel, local
        self.item, self.compute_units = item, max(1, int(compute_units))
        self.items_per_cu = BLOCKED_ITEMS_PER_CU


def _plan(device, dtype, strategy, trans_a, trans_b, auto=False, rounded=False) -> _Plan:
    """The plan for these settings; ``auto`` (the strategy was not forced) lets the tuner choose;
    ``rounded`` (16-bit operands): the kernel writes the 16-bit C itself."""
    # Blocked kernels take the transposes as strides (one kernel serves all four combos), but a
    # blocked plan that falls back to tiled needs them.
    key = (id(device), dtype, strategy, auto, trans_a, trans_b, rounded)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    if dtype.itemsize == 2:
        plan = _plans[key] = _sixteen_bit_plan(device, dtype, strategy, trans_a, trans_b, auto, rounded)
        return plan
    with _plans_lock:
        plan = _plans.get(key)
        if plan is None:
            # Tuning launches are set-up, not part of a captured step that happens to come first.
            with launch.not_recording():
                plan = _make_plan(device, dtype, strategy, trans_a, trans_b, auto)
            _plans[key] = plan
    return plan


def _sixteen_bit_plan(device, dtype, strategy, trans_a, trans_b, auto, rounded) -> _Plan:
    """float16/bfloat16 operands: the float32 plan (its tuned blocking: the kernel computes in float32)
    with the operands read as 16-bit and converted as they are loaded (matmul.cl.mako ``intype``), and
    with ``rounded`` C written as 16 bits by the kernel (``outtype``)."""
    base = _plan(device, np.dtype(np.float32), strategy, trans_a, trans_b, auto)
    # float16 by the builtin on GPUs; "half_bits" (integer arithmetic) serves a CPU forced onto this path.
    intype = "bf16" if dtype == "bfloat16" else "half" if device.target.is_gpu else "half_bits"
    params = dict(base.params, intype=intype, **({"outtype": intype} if rounded else {}))
    name = "matmul_blocked" if base.strategy == "blocked" else "matmul_tiled"
    plan = _Plan(base.strategy, params, kernels.get_kernel(device, TEMPLATE, name, **params), base.local,
                 base.item, base.compute_units)
    plan.items_per_cu = base.items_per_cu
    return plan


def _rounded_once(run, dev):
    """A 16-bit product's launcher: the kernel accumulates into a float32 C, rounded once into ``c``."""
    def run16(a, b, c, _bias=None):   # (16-bit operands take no bias: matmul refuses one)
        c32 = Tensor(c._shape, "float32", dev)
        run(a, b, c32)
        c.copy_(c32)
    return run16


def _tuning_name(kind, ctype, *extra) -> str:
    # The template's hash is part of the name, so a changed kernel is measured again.
    source = kernels.template_source(TEMPLATE)
    return "/".join(["matmul", kind, ctype, *map(str, extra), hashlib.sha1(source.encode()).hexdigest()[:12]])


def _tuning_operands(device, dtype):
    a = Tensor.full((TUNE_N, TUNE_N), 0.5, dtype, device)
    return a, Tensor.full((TUNE_N, TUNE_N), 0.25, dtype, device), Tensor((TUNE_N, TUNE_N), dtype, device)


def _make_plan(device, dtype, strategy, trans_a, trans_b, auto=False, measure=None) -> _Plan:
    """The plan for these settings. ``auto``: the strategy was not forced, so a tuned choice may be
    used; ``measure``: time the candidates now (default: only under ``AXONML_TUNE=1``)."""
    if measure is None:
        measure = tuning.requested()
    ctype = kernels.ctype(dtype)
    item = np.dtype(dtype).itemsize
    if strategy == "blocked":
        # The target's vector width, then narrower ones, then the tiled kernel: the first that builds.
        def make(candidate):
            if candidate == "tiled":
                return _make_plan(device, dtype, "tiled", trans_a, trans_b, auto, measure)
            vw = candidate
            mr = BLOCKED_MR_WIDE if vw * item >= 64 else BLOCKED_MR   # 512-bit registers: 32 of them
            nr = BLOCKED_NV * vw
            params = dict(ctype=ctype, strategy="blocked", trans_a=False, trans_b=False, ts=0, tsk=0, wpt=0,
                          mr=mr, nr=nr, vw=vw, kc_max=max(16, BLOCKED_SLICE_BYTES // (nr * item)))
            knl = kernels.get_kernel(device, TEMPLATE, "matmul_blocked", **params)
            # One work-item per work-group: its macro block is already a loop, and a fixed local size
            # keeps PoCL from compiling a work-group function per global size.
            plan = _Plan("blocked", params, knl, (1, 1, 1), item, device.target.compute_units)
            if auto:
                plan.items_per_cu = _tune_blocked(device, dtype, plan, measure)
            return plan

        return kernels.first_that_builds(device, f"matmul {ctype}",
                                         device.target.vector_widths(dtype) + ["tiled"], make)
    tried, fitting = [], []
    name = _tuning_name("tiled", ctype, int(trans_a), int(trans_b))
    stored = tuning.lookup(device, name) if auto and not measure else None
    measure = auto and measure and not tuning.disabled()
    # A stored choice is tried first; without one (and without tuning) the largest tile that fits wins.
    order = sorted(TILED_CANDIDATES, key=lambda c: not tuning.same(c, stored)) if stored else TILED_CANDIDATES
    for ts, tsk, wpt in order:
        side = ts // wpt
        threads = side * side
        local_bytes = 2 * tsk * (ts + 1) * item
        if threads > device.target.work_group or local_bytes > device.target.local_mem:
            tried.append((ts, tsk, wpt, "device limits"))
            continue
        params = dict(ctype=ctype, strategy="tiled", trans_a=bool(trans_a), trans_b=bool(trans_b),
                      ts=ts, tsk=tsk, wpt=wpt, mr=0, nr=0, vw=1, kc_max=0)
        knl = kernels.get_kernel(device, TEMPLATE, "matmul_tiled", **params)
        # The compiled kernel may allow fewer work-items than the device (registers, local memory).
        if kernels.kernel_work_group_size(device, knl) < threads:
            tried.append((ts, tsk, wpt, f"kernel allows {kernels.kernel_work_group_size(device, knl)} work-items"))
            continue
        fitting.append(_Plan("tiled", params, knl, (side, side, 1)))
        if not measure:
            break
    if not fitting:
        raise RuntimeError(f"matmul: no tile size fits device {device.name}: tried {tried}")
    if len(fitting) == 1:
        return fitting[0]
    a, b, c = _tuning_operands(device, dtype)

    def run(candidate):
        _tiled_launcher(device, candidate, TUNE_N, TUNE_N, TUNE_N, [], [0, 0], [0, 0], [0, 0], 1, 1)(a, b, c)

    best = tuning.measure(fitting, run, device.synchronize)
    tuning.store(device, name, [best.params["ts"], best.params["tsk"], best.params["wpt"]])
    return best


def _tune_blocked(device, dtype, plan, measure) -> int:
    """The macro-block target (work-items per compute unit) this device runs fastest with."""
    operands = []

    def run(items_per_cu):
        if not operands:
            operands.extend(_tuning_operands(device, dtype))
        plan.items_per_cu = items_per_cu
        a, b, c = operands
        n = TUNE_N
        _blocked_launcher(device, plan, n, n, n, False, False, [], [0, 0], [0, 0], [0, 0], 1, 1)(a, b, c)

    return tuning.choose(device, _tuning_name("blocked", kernels.ctype(dtype)), BLOCKED_ITEMS_CANDIDATES,
                         run, device.synchronize, measure)


def tune(device=None, dtype="float32", strategy=None):
    """Time matmul's candidates on ``device`` now, store the winner for later processes and use it.

    The first call of a process never measures (unless ``AXONML_TUNE=1``): it takes a stored choice
    or the static one, so a cold start costs one compile. Call this once on a new machine, e.g. from
    a setup script, to let every later process start from the measured choice.
    """
    from .device import default_device
    device = device if device is not None else default_device()
    dt = np.dtype(dtype)
    strategy = _choose_strategy(device, strategy)
    with _plans_lock:
        plan = None
        for ta in (False, True):
            for tb in (False, True):
                # A blocked plan serves every transpose (they are strides): measured once.
                if plan is None or plan.strategy == "tiled":
                    plan = _make_plan(device, dt, strategy, ta, tb, auto=True, measure=True)
                _plans[(id(device), dt, strategy, True, ta, tb)] = plan
        _calls.clear()    # launchers built from the old plans
    return _info(plan)


def _choose_strategy(device, strategy) -> str:
    if strategy is None:
        strategy = os.environ.get("AXONML_MATMUL") or ("tiled" if device.target.is_gpu else "blocked")
    strategy = str(strategy).strip().lower()
    if strategy not in STRATEGIES:
        raise ValueError(f"matmul: strategy must be one of {STRATEGIES}, got {strategy!r}")
    return strategy


def plan_info(device, dtype="float32", strategy=None, trans_a=False, trans_b=False) -> dict:
    """The kernel parameters matmul uses on ``device`` (for tools and benchmarks)."""
    dt = np.dtype(dtype)
    auto = strategy is None and not os.environ.get("AXONML_MATMUL")
    strategy = _choose_strategy(device, strategy)
    return _info(_plan(device, dt, strategy, bool(trans_a), bool(trans_b), auto))


def _info(p) -> dict:
    info = {"strategy": p.strategy, "local": p.local,
            **{k: v for k, v in p.params.items() if v and k not in ("strategy", "ctype")}}
    if p.strategy == "blocked":
        info["items_per_cu"] = p.items_per_cu
    return info


def _shape_text(t: Tensor) -> str:
    return str(tuple(t._shape))


def _transposed_base(t: Tensor, trans: bool):
    """``x.T`` (a view: ``x`` with its last two axes swapped) is read as ``x`` with the transpose flag
    flipped, so the kernel reads it in place; any other view is laid out by the buffer property."""
    strides, offset = t._view
    shape = t._shape
    if len(shape) >= 2 and offset == 0:
        base_shape = shape[:-2] + (shape[-1], shape[-2])
        cs = contiguous_strides(base_shape)
        if tuple(strides) == cs[:-2] + (cs[-1], cs[-2]):
            return _over(t, base_shape), not trans
    return t, trans


def _over(t: Tensor, shape) -> Tensor:
    """A contiguous tensor of ``shape`` over the start of ``t``'s buffer."""
    base = Tensor.__new__(Tensor)
    base.device, base.dtype, base._shape, base._storage, base._view = t.device, t.dtype, tuple(shape), t._storage, None
    return base


def matmul(a: Tensor, b: Tensor, trans_a: bool = False, trans_b: bool = False,
           out: Optional[Tensor] = None, strategy: Optional[str] = None, offsets=(0, 0, 0),
           bias: Optional[Tensor] = None) -> Tensor:
    """``op(a) @ op(b)`` with numpy's ``matmul`` rules, ``op`` transposing the last two axes when asked.

    Operands of two or more dimensions are stacks of matrices whose leading (batch) dimensions
    broadcast; a 1-D ``a`` is a row vector and a 1-D ``b`` a column vector, and that axis is dropped
    from the result (vector @ vector gives a 0-d tensor). ``out``, if given, must have the result's
    shape and dtype and is written in place.

    float16/bfloat16 operands accumulate in float32 and the result is rounded once; a float32 ``out``
    takes the float32 result instead (torch's ``out_dtype``).

    ``bias`` (float32/float64, a contiguous ``[N]`` of the operands' dtype) is added to every row of the
    result by the product's own kernel, where it writes the finished sum: torch's ``addmm``, with the
    bits of a separate ``result + bias``.

    ``offsets`` (elements into the buffers of ``a``, ``b`` and ``out``) lets a caller multiply a window
    of a larger buffer: pass a Tensor sharing that buffer's storage with the window's shape (the
    convolution walks a batch in chunks this way). The caller keeps the windows inside the buffers.

    >>> v = Tensor.from_vec([1.0, 2.0], [2])
    >>> matmul(v, v).shape()
    []
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"matmul: expected two Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a._view is not None:
        a, trans_a = _transposed_base(a, trans_a)
    if b._view is not None:
        b, trans_b = _transposed_base(b, trans_b)
    # Repeated signatures (a training loop) skip the shape logic below: ~30 us of Python that, at
    # n = 256, is a tenth of the whole multiply. Everything the launches depend on is in the key.
    # A float32 ``out`` for 16-bit operands takes the float32 accumulators as they are (no rounding).
    wide = out is not None and a.dtype.itemsize == 2 and getattr(out, "dtype", None) == np.float32
    key = (a.device, b.device, a.dtype, b.dtype, a._shape, b._shape, bool(trans_a), bool(trans_b), strategy,
           os.environ.get("AXONML_MATMUL"), _forced_config, wide, bias is not None)
    if offsets != (0, 0, 0):
        key += tuple(int(o) for o in offsets)
    call = _calls.get(key)
    if call is not None and (bias is None or (bias.__class__ is Tensor and bias._shape == call[0][-1:]
                                              and bias._view is None and bias.dtype == a.dtype
                                              and bias.device is a.device)):
        if out is None:
            result = Tensor._wrap(call[0], a.dtype, a.device)
            call[1](a, b, result, bias)
            return result
        if out.__class__ is Tensor and out._shape == call[0] and (wide or out.dtype == a.dtype) \
                and out.device is a.device:
            out._version += 1
            call[1](a, b, out, bias)
            return out
    dev = _check_same_device("matmul", [a, b] + ([out] if out is not None else []))
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: dtypes differ: {a.dtype} and {b.dtype}; convert one with .astype()")
    if a.dtype.kind != "f":
        raise TypeError(f"matmul: {a.dtype} is not supported; use float32 or float64")
    if bias is not None and a.dtype.itemsize == 2:
        raise TypeError(f"matmul: a bias is added by the float32/float64 kernels only, not to {a.dtype} "
                        "operands; add it to the result")
    if a.dtype.itemsize == 2:
        # float16/bfloat16: float32 accumulation, as torch's CPU matmul, and the result rounded once.
        # The kernel reads bfloat16 (a shift), and float16 on GPUs (tiles convert once per load), as
        # they are (_sixteen_bit_plan); on CPUs float16 takes float32 copies of the operands, since the
        # blocked kernel reads each element of A many times and its integer conversion would cost more
        # than the copy (PoCL: 3-4x the float32 time, against ~1.1x with copies).
        if offsets != (0, 0, 0):
            raise TypeError(f"matmul: {a.dtype} operands cannot be windows of a larger buffer (offsets); "
                            "convert the windows to float32 first")
        if a.dtype == np.float16 and not dev.target.is_gpu:
            if wide:
                return matmul(a.astype("float32"), b.astype("float32"), trans_a, trans_b, out=out, strategy=strategy)
            res = matmul(a.astype("float32"), b.astype("float32"), trans_a, trans_b, strategy=strategy)
            if out is None:
                return res.astype(a.dtype)
            if out._shape != res._shape or out.dtype != a.dtype:
                raise ValueError(f"matmul: out has shape {list(out._shape)} and dtype {out.dtype}; the result "
                                 f"has shape {list(res._shape)} and dtype {a.dtype}")
            return out.copy_(res)
    if a.ndim() == 0 or b.ndim() == 0:
        raise ValueError(f"matmul: operands must have at least one dimension: {_shape_text(a)} @ {_shape_text(b)}")

    # Every operand as a stack of matrices; 1-D operands become [1, K] and [K, 1] (trans is moot).
    a_vec, b_vec = a.ndim() == 1, b.ndim() == 1
    a_shape = (1,) + a._shape if a_vec else a._shape
    b_shape = b._shape + (1,) if b_vec else b._shape
    ta, tb = bool(trans_a) and not a_vec, bool(trans_b) and not b_vec
    M, K = (a_shape[-1], a_shape[-2]) if ta else (a_shape[-2], a_shape[-1])
    Kb, N = (b_shape[-1], b_shape[-2]) if tb else (b_shape[-2], b_shape[-1])
    if K != Kb:
        flags = ", ".join(f"{n}=True" for n, f in (("trans_a", ta), ("trans_b", tb)) if f)
        flags = f" ({flags})" if flags else ""
        raise ValueError(f"matmul: inner dimensions differ: {_shape_text(a)} @ {_shape_text(b)}{flags}: "
                         f"{K} vs {Kb}")
    a_batch, b_batch = a_shape[:-2], b_shape[:-2]
    try:
        batch = broadcast_shapes(a_batch, b_batch, op="matmul")
    except ValueError:
        raise ValueError(f"matmul: batch dimensions {a_batch} and {b_batch} cannot be broadcast: "
                         f"{_shape_text(a)} @ {_shape_text(b)}") from None
    out_shape = batch + ((M,) if not a_vec else ()) + ((N,) if not b_vec else ())
    if bias is not None:
        if not isinstance(bias, Tensor) or bias._shape != (N,) or b_vec or bias.dtype != a.dtype:
            raise ValueError(f"matmul: bias must be a {a.dtype} tensor of shape [{N}] (one value per column of "
                             f"the result {list(out_shape)}), got " + (f"{bias.dtype} {list(bias._shape)}" if
                                                                       isinstance(bias, Tensor) else type(bias).__name__))
        _check_same_device("matmul", [a, bias])
        bias = bias.contiguous()
    check_index32("matmul", a.numel() + int(offsets[0]), b.numel() + int(offsets[1]),
                  math.prod(out_shape) + int(offsets[2]))
    if out is not None:
        if not isinstance(out, Tensor) or tuple(out._shape) != out_shape or not (wide or out.dtype == a.dtype):
            raise ValueError(f"matmul: out must be a {a.dtype} tensor of shape {out_shape}, got "
                             f"{out.dtype} {tuple(out._shape)}" if isinstance(out, Tensor) else
                             f"matmul: out must be a Tensor, got {type(out).__name__}")
        result = out
        result._version += 1
    else:
        result = Tensor(out_shape, a.dtype, dev)
    nbatch = math.prod(batch)
    if M == 0 or N == 0 or nbatch == 0:
        return result
    if K == 0:
        return fill(result, 0.0)

    auto = strategy is None and not os.environ.get("AXONML_MATMUL")
    plan = _plan(dev, a.dtype, _choose_strategy(dev, strategy), ta, tb, auto=auto)
    # 16-bit C written by the kernel where its accumulators cover all of K (tiled; blocked in one k
    # slice), else a float32 C rounded once afterwards (_rounded_once).
    direct = a.dtype.itemsize == 2 and not wide and (plan.strategy == "tiled" or K <= plan.params["kc_max"])
    if direct:
        plan = _plan(dev, a.dtype, _choose_strategy(dev, strategy), ta, tb, auto=auto, rounded=True)

    # Batch strides in matrices (0 where broadcast), merged where possible so that at most two
    # batch axes remain for the kernel's (hi, lo) split; rarer layouts loop over the leading axes.
    def matrix_strides(shape):
        st = contiguous_strides(shape)
        lead = len(batch) - len(shape)
        return [0] * lead + [0 if shape[k] == 1 and batch[lead + k] != 1 else st[k] for k in range(len(shape))]

    cshape, (sc, sa, sb) = _collapse(batch, [contiguous_strides(batch), matrix_strides(a_batch),
                                             matrix_strides(b_batch)])
    if len(cshape) < 2:
        pad = 2 - len(cshape)
        cshape, sc, sa, sb = [1] * pad + cshape, [0] * pad + sc, [0] * pad + sa, [0] * pad + sb
    outer = cshape[:-2]
    nb_hi, nb_lo = cshape[-2], cshape[-1]

    if plan.strategy == "blocked":
        run = _blocked_launcher(dev, plan, M, N, K, ta, tb, outer, sa, sb, sc, nb_hi, nb_lo, offsets, bias is not None)
    else:
        run = _tiled_launcher(dev, plan, M, N, K, outer, sa, sb, sc, nb_hi, nb_lo, offsets, bias is not None)
    if a.dtype.itemsize == 2 and not wide and not direct:
        run = _rounded_once(run, dev)
    run(a, b, result, bias)
    if len(_calls) > 4096:   # many distinct shapes: start over rather than grow without bound
        _calls.clear()
    _calls[key] = (out_shape, run)
    return result


def _outer_offsets(outer, sa, sb, sc):
    """(a, b, c) offsets in matrices for every index of the batch axes the kernel does not cover."""
    if not outer:
        yield 0, 0, 0
        return
    for idx in np.ndindex(*outer):
        yield (sum(i * s for i, s in zip(idx, sa)), sum(i * s for i, s in zip(idx, sb)),
               sum(i * s for i, s in zip(idx, sc)))


def _tiled_launcher(dev, plan, M, N, K, outer, sa, sb, sc, nb_hi, nb_lo, base=(0, 0, 0), bias=False):
    """A function (a, b, c, bias=None) that enqueues the tiled kernel(s) for this signature (``bias``:
    whether its calls pass one)."""
    p = plan.params
    ts, side = p["ts"], plan.local[0]
    mat_a, mat_b, mat_c = M * K, K * N, M * N
    gsize = (kernels.round_up(N, ts) // ts * side, kernels.round_up(M, ts) // ts * side, nb_hi * nb_lo)
    sig = kernels.signature(plan.kernel)
    fills = [sig.partial(dict(M=M, N=N, K=K, nb_lo=nb_lo, has_bias=int(bias),
                              sa_hi=sa[-2] * mat_a, sa_lo=sa[-1] * mat_a, sb_hi=sb[-2] * mat_b, sb_lo=sb[-1] * mat_b,
                              off_a=oa * mat_a + base[0], off_b=ob * mat_b + base[1], off_c=oc * mat_c + base[2]),
                         _OPERANDS)
             for oa, ob, oc in _outer_offsets(outer, sa[:-2], sb[:-2], sc[:-2])]
    return _runner(dev, plan, gsize, fills)


# The operands' parameters, bound at each call (the rest when the call's launcher is made).
_OPERANDS = ("a_base", "b_base", "c_base", "bias")


def _runner(dev, plan, gsize, fills):
    knl, local, enqueue = plan.kernel, plan.local, launch.kernel

    def run(a, b, c, bias=None):
        # Without a bias, C's buffer fills the bias slot (has_bias, bound with the launcher, is 0).
        for bound in fills:
            enqueue(dev, knl, gsize, local, bound(a, b, c, c if bias is None else bias), packed=True)
    return run


class BlockedConfig(tuple):
    """How one blocked matmul is split: ``mcp`` x ``ncp`` micro-tiles per work-item (its macro block
    of C), walked ``kc`` values of k at a time. All are launch arguments, so choosing never compiles.
    """

    __slots__ = ()
    _fields = ("mcp", "ncp", "kc")

    def __new__(cls, mcp, ncp, kc):
        return tuple.__new__(cls, (int(mcp), int(ncp), int(kc)))

    mcp = property(lambda self: self[0])
    ncp = property(lambda self: self[1])
    kc = property(lambda self: self[2])

    def __repr__(self):
        return "BlockedConfig(" + ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self)) + ")"


# Tests and the tuner force a configuration through this (None: choose).
_forced_config: Optional[BlockedConfig] = None


def _blocked_config(plan, M, N, K, nmat) -> BlockedConfig:
    """Block sizes for one call (all launch arguments, so choosing never compiles)."""
    p = plan.params
    mr, nr, item, kc_max = p["mr"], p["nr"], plan.item, p["kc_max"]
    forced = _forced_config
    if forced is not None:
        return BlockedConfig(forced.mcp, forced.ncp, min(forced.kc, kc_max))
    # k slice: its NR-column panel of B fills about half of L1. Split K into equal slices so a K just
    # past KC does not end in a sliver.
    slices = -(-K // kc_max)
    kc = -(-K // slices)
    # Work-items: enough for every compute unit to get a few (PoCL hands work-groups to its per-core
    # threads; a few per core keeps the tail short). Split N first: a work-item copies each B panel
    # it uses once per row block, so splitting M copies B again, while splitting N only re-reads A.
    # Row blocks stay as tall as the A block allows (it is re-read from L2 for every column panel).
    pm, pn = -(-M // mr), -(-N // nr)
    want = plan.items_per_cu * plan.compute_units
    mcp = max(1, min(pm, BLOCKED_A_BLOCK_BYTES // (mr * kc * item)))
    mcp = -(-pm // -(-pm // mcp))   # that many row blocks, made equal (86 micro-rows as 43 + 43, not 42 + 42 + 2)
    mcp, ncp = split_blocks(pm, pn, mcp, nmat, want)
    return BlockedConfig(mcp, ncp, kc)


def split_blocks(pm, pn, mcp, batch, want):
    """(mcp, ncp): ``pm`` x ``pn`` micro-tiles in blocks of ``mcp`` rows by ncp columns, starting from all
    ``pn`` columns, halving the columns and then the rows until ``batch`` times the block count reaches
    ``want`` work-items (the convolution's implicit products split the same way)."""
    ncp = pn

    def items():
        return -(-pm // mcp) * -(-pn // ncp) * batch

    while ncp > 1 and items() < want:
        ncp = -(-ncp // 2)
    while mcp > 1 and items() < want:
        mcp = -(-mcp // 2)
    return mcp, ncp



def _blocked_launcher(dev, plan, M, N, K, ta, tb, outer, sa, sb, sc, nb_hi, nb_lo, base=(0, 0, 0), bias=False):
    """A function (a, b, c, bias=None) that enqueues the blocked kernel for this signature (``bias``:
    whether its calls pass one)."""
    p = plan.params
    mr, nr = p["mr"], p["nr"]
    pm, pn = -(-M // mr), -(-N // nr)
    nmat = nb_hi * nb_lo * max(1, math.prod(outer))
    mcp, ncp, kc = _blocked_config(plan, M, N, K, nmat)
    if p.get("outtype"):
        kc = K   # a 16-bit C is written once, from accumulators that saw all of K (the caller: K <= kc_max)
    # Element strides of A(m, k) and B(k, n): a transpose is just the other order.
    a_row, a_k = (1, M) if ta else (K, 1)
    b_k, b_n = (1, K) if tb else (N, 1)
    mat_a, mat_b, mat_c = M * K, K * N, M * N
    gsize = (-(-pm // mcp), -(-pn // ncp), nb_hi * nb_lo)
    sig = kernels.signature(plan.kernel)
    fills = [sig.partial(dict(M=M, N=N, K=K, a_row=a_row, a_k=a_k, b_k=b_k, b_n=b_n, mcp=mcp, ncp=ncp, kc=kc,
                              has_bias=int(bias),
                              nb_lo=nb_lo,
                              sa_hi=sa[-2] * mat_a, sa_lo=sa[-1] * mat_a, sb_hi=sb[-2] * mat_b, sb_lo=sb[-1] * mat_b,
                              off_a=oa * mat_a + base[0], off_b=ob * mat_b + base[1], off_c=oc * mat_c + base[2]),
                         _OPERANDS)
             for oa, ob, oc in _outer_offsets(outer, sa[:-2], sb[:-2], sc[:-2])]
    return _runner(dev, plan, gsize, fills)
