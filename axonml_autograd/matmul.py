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
blocking, operands packed into panels only where that pays; for CPU devices, where PoCL runs a
work-group's items as a loop on one core and local memory is just more cache traffic). The device
type picks one; ``AXONML_MATMUL=tiled|blocked`` or ``strategy=`` forces it. When the strategy is not
forced, the tuner (``tuning.py``) times the candidates once per device (tile sizes that fit the
device for "tiled", the macro-block target for "blocked") on a 512^3 problem and keeps the choice on
disk; ``AXONML_TUNE=0`` takes the static choice instead.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from typing import Optional

import numpy as np
import pyopencl as cl

from . import kernels, tuning
from .tensor import Tensor, _check_same_device, _collapse, broadcast_shapes, contiguous_strides, fill

STRATEGIES = ("tiled", "blocked")
TEMPLATE = "matmul.cl.mako"

# Tiled candidates, largest first, as (ts, tsk, wpt): a ts x ts block of C per work-group of
# (ts/wpt)^2 work-items, k staged tsk at a time. The first that fits the device's local memory, its
# work-group limit and the built kernel's own limit wins.
TILED_CANDIDATES = ((64, 16, 4), (32, 16, 4), (32, 16, 2), (16, 16, 2), (16, 16, 1), (8, 8, 1),
                    (4, 4, 1), (1, 1, 1))

# Blocked: MR rows x (2 vectors) columns of C per work-item. With 16 vector registers (AVX2) that is
# 12 accumulators + 2 B vectors + 1 broadcast A: the largest block that does not spill.
BLOCKED_MR = 6
BLOCKED_NV = 2
# Blocked macro blocks, see _blocked_config.
BLOCKED_SLICE_BYTES = 16 * 1024      # one k slice of an NR-column B panel: half of a 32 KB L1
BLOCKED_INPLACE_B_BYTES = 512 * 1024  # read B in place up to this size, pack it beyond
BLOCKED_MCP, BLOCKED_NCP = 16, 4     # largest macro block, in micro-tiles
BLOCKED_ITEMS_PER_CU = 16            # shrink macro blocks until there are this many per compute unit
BLOCKED_ITEMS_CANDIDATES = (16, 4, 64)   # what the tuner tries for it (the first is the static choice)
TUNE_N = 512                         # the square problem candidates are timed on
# k values one packing work-item copies: enough to amortise a work-item, few enough for parallelism.
PACK_K = 32
# A fixed local size: left to the driver, PoCL picks one from the global size and JIT-compiles a new
# work-group function for each, i.e. a hidden compile per new shape.
_PACK_LOCAL = (1, 1, 1)

_plans: dict = {}
_plans_lock = threading.Lock()
# (devices, dtypes, shapes, transposes, strategy choice, forced config) -> (result shape, launcher)
_calls: dict = {}


class _Plan:
    """Everything one (device, dtype, strategy, transposes) needs to launch, chosen once."""

    __slots__ = ("strategy", "params", "kernel", "pack", "local", "item", "compute_units", "items_per_cu")

    def __init__(self, strategy, params, kernel, pack, local, item=0, compute_units=1):
        self.strategy, self.params, self.kernel, self.pack, self.local = strategy, params, kernel, pack, local
        self.item, self.compute_units = item, max(1, int(compute_units))
        self.items_per_cu = BLOCKED_ITEMS_PER_CU


def _kernel_wg_size(kernel, device) -> int:
    return int(kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device.cl_device))


def _vector_width(device, dtype) -> int:
    cl_dev = device.cl_device
    width = (cl_dev.preferred_vector_width_double if dtype == np.float64
             else cl_dev.preferred_vector_width_float)
    # A power of two OpenCL has a vector type for; devices that report 0 or 1 still get 4-wide so the
    # compiler has something to work with.
    width = int(width or 1)
    return min(16, max(4, 1 << (width.bit_length() - 1)))


def _plan(device, dtype, strategy, trans_a, trans_b, auto=False) -> _Plan:
    """The plan for these settings; ``auto`` (the strategy was not forced) lets the tuner choose."""
    # Blocked kernels ignore the transposes (packing absorbs them), so all four combos share one plan.
    key = (id(device), dtype, strategy, auto) + ((trans_a, trans_b) if strategy == "tiled" else ())
    plan = _plans.get(key)
    if plan is not None:
        return plan
    with _plans_lock:
        plan = _plans.get(key)
        if plan is None:
            plan = _make_plan(device, dtype, strategy, trans_a, trans_b, auto)
            _plans[key] = plan
    return plan


def _tuning_name(kind, ctype, *extra) -> str:
    # The template's hash is part of the name, so a changed kernel is measured again.
    source = kernels._template(TEMPLATE).source
    return "/".join(["matmul", kind, ctype, *map(str, extra), hashlib.sha1(source.encode()).hexdigest()[:12]])


def _tuning_operands(device, dtype):
    a = Tensor.full((TUNE_N, TUNE_N), 0.5, dtype, device)
    return a, Tensor.full((TUNE_N, TUNE_N), 0.25, dtype, device), Tensor((TUNE_N, TUNE_N), dtype, device)


def _make_plan(device, dtype, strategy, trans_a, trans_b, auto=False) -> _Plan:
    ctype = kernels.ctype(dtype)
    item = np.dtype(dtype).itemsize
    if strategy == "blocked":
        vw = _vector_width(device, dtype)
        params = dict(ctype=ctype, strategy="blocked", trans_a=False, trans_b=False,
                      ts=0, tsk=0, wpt=0, mr=BLOCKED_MR, nr=BLOCKED_NV * vw, vw=vw, pack_k=PACK_K)
        knl = kernels.get_kernel(device, TEMPLATE, "matmul_blocked", **params)
        pack = (kernels.get_kernel(device, TEMPLATE, "pack_a", **params),
                kernels.get_kernel(device, TEMPLATE, "pack_b", **params))
        # One work-item per work-group: its macro block is already a loop, and a fixed local size
        # keeps PoCL from compiling a work-group function per global size.
        plan = _Plan("blocked", params, knl, pack, (1, 1, 1), item, device.compute_units)
        if auto:
            plan.items_per_cu = _tune_blocked(device, dtype, plan)
        return plan
    tried, fitting = [], []
    name = _tuning_name("tiled", ctype, int(trans_a), int(trans_b))
    stored = tuning.lookup(device, name) if auto else None
    measure = auto and stored is None and tuning.enabled()
    # A stored choice is tried first; without one (and without tuning) the largest tile that fits wins.
    order = sorted(TILED_CANDIDATES, key=lambda c: not tuning.same(c, stored)) if stored else TILED_CANDIDATES
    for ts, tsk, wpt in order:
        side = ts // wpt
        threads = side * side
        local_bytes = 2 * tsk * (ts + 1) * item
        if threads > device.max_work_group_size or local_bytes > device.local_mem:
            tried.append((ts, tsk, wpt, "device limits"))
            continue
        params = dict(ctype=ctype, strategy="tiled", trans_a=bool(trans_a), trans_b=bool(trans_b),
                      ts=ts, tsk=tsk, wpt=wpt, mr=0, nr=0, vw=1, pack_k=0)
        knl = kernels.get_kernel(device, TEMPLATE, "matmul_tiled", **params)
        # The compiled kernel may allow fewer work-items than the device (registers, local memory).
        if _kernel_wg_size(knl, device) < threads:
            tried.append((ts, tsk, wpt, f"kernel allows {_kernel_wg_size(knl, device)} work-items"))
            continue
        fitting.append(_Plan("tiled", params, knl, None, (side, side, 1)))
        if not measure:
            break
    if not fitting:
        raise RuntimeError(f"matmul: no tile size fits device {device.name}: tried {tried}")
    if len(fitting) == 1:
        return fitting[0]
    a, b, c = _tuning_operands(device, dtype)

    def run(candidate):
        _tiled_launcher(device, candidate, TUNE_N, TUNE_N, TUNE_N, [], [0, 0], [0, 0], [0, 0], 1, 1)(a, b, c)

    best = tuning.measure(fitting, run, device.queue.finish)
    tuning.store(device, name, [best.params["ts"], best.params["tsk"], best.params["wpt"]])
    return best


def _tune_blocked(device, dtype, plan) -> int:
    """The macro-block target (work-items per compute unit) this device runs fastest with."""
    operands = []

    def run(items_per_cu):
        if not operands:
            operands.extend(_tuning_operands(device, dtype))
        plan.items_per_cu = items_per_cu
        a, b, c = operands
        n = TUNE_N
        _blocked_launcher(device, plan, n * n, n * n, n, n, n, False, False, [], [0, 0], [0, 0], [0, 0],
                          1, 1)(a, b, c)

    return tuning.choose(device, _tuning_name("blocked", kernels.ctype(dtype)), BLOCKED_ITEMS_CANDIDATES,
                         run, device.queue.finish)


def _choose_strategy(device, strategy) -> str:
    if strategy is None:
        strategy = os.environ.get("AXONML_MATMUL") or ("blocked" if device.is_cpu else "tiled")
    strategy = str(strategy).strip().lower()
    if strategy not in STRATEGIES:
        raise ValueError(f"matmul: strategy must be one of {STRATEGIES}, got {strategy!r}")
    return strategy


def plan_info(device, dtype="float32", strategy=None, trans_a=False, trans_b=False) -> dict:
    """The kernel parameters matmul uses on ``device`` (for tools and benchmarks)."""
    dt = np.dtype(dtype)
    auto = strategy is None and not os.environ.get("AXONML_MATMUL")
    strategy = _choose_strategy(device, strategy)
    p = _plan(device, dt, strategy, bool(trans_a), bool(trans_b), auto)
    info = {"strategy": p.strategy, "local": p.local,
            **{k: v for k, v in p.params.items() if v and k not in ("strategy", "ctype")}}
    if p.strategy == "blocked":
        info["items_per_cu"] = p.items_per_cu
    return info


def _shape_text(t: Tensor) -> str:
    return str(tuple(t._shape))


def matmul(a: Tensor, b: Tensor, trans_a: bool = False, trans_b: bool = False,
           out: Optional[Tensor] = None, strategy: Optional[str] = None) -> Tensor:
    """``op(a) @ op(b)`` with numpy's ``matmul`` rules, ``op`` transposing the last two axes when asked.

    Operands of two or more dimensions are stacks of matrices whose leading (batch) dimensions
    broadcast; a 1-D ``a`` is a row vector and a 1-D ``b`` a column vector, and that axis is dropped
    from the result (vector @ vector gives a 0-d tensor). ``out``, if given, must have the result's
    shape and dtype and is written in place.

    >>> v = Tensor.from_vec([1.0, 2.0], [2])
    >>> matmul(v, v).shape()
    []
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"matmul: expected two Tensors, got {type(a).__name__} and {type(b).__name__}")
    # Repeated signatures (a training loop) skip the shape logic below: ~30 us of Python that, at
    # n = 256, is a tenth of the whole multiply. Everything the launches depend on is in the key.
    key = (a.device, b.device, a.dtype, b.dtype, a._shape, b._shape, bool(trans_a), bool(trans_b), strategy,
           os.environ.get("AXONML_MATMUL"), _forced_config)
    if out is None:
        call = _calls.get(key)
        if call is not None:
            result = Tensor._wrap(call[0], a.dtype, a.device)
            call[1](a, b, result)
            return result
    dev = _check_same_device("matmul", [a, b] + ([out] if out is not None else []))
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: dtypes differ: {a.dtype} and {b.dtype}; convert one with .astype()")
    if a.dtype.kind != "f":
        raise TypeError(f"matmul: {a.dtype} is not supported; use float32 or float64")
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
    if out is not None:
        if not isinstance(out, Tensor) or tuple(out._shape) != out_shape or out.dtype != a.dtype:
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

    plan = _plan(dev, a.dtype, _choose_strategy(dev, strategy), ta, tb,
                 auto=strategy is None and not os.environ.get("AXONML_MATMUL"))

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
        run = _blocked_launcher(dev, plan, a.numel(), b.numel(), M, N, K, ta, tb, outer, sa, sb, sc, nb_hi, nb_lo)
    else:
        run = _tiled_launcher(dev, plan, M, N, K, outer, sa, sb, sc, nb_hi, nb_lo)
    run(a, b, result)
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


def _tiled_launcher(dev, plan, M, N, K, outer, sa, sb, sc, nb_hi, nb_lo):
    """A function (a, b, c) that enqueues the tiled kernel(s) for this signature."""
    p = plan.params
    ts, side = p["ts"], plan.local[0]
    mat_a, mat_b, mat_c = M * K, K * N, M * N
    gsize = (kernels.round_up(N, ts) // ts * side, kernels.round_up(M, ts) // ts * side, nb_hi * nb_lo)
    i32, i64 = np.int32, np.int64
    arg_sets = [(i32(M), i32(N), i32(K), i32(nb_lo),
                 i64(sa[-2] * mat_a), i64(sa[-1] * mat_a), i64(sb[-2] * mat_b), i64(sb[-1] * mat_b),
                 i64(oa * mat_a), i64(ob * mat_b), i64(oc * mat_c))
                for oa, ob, oc in _outer_offsets(outer, sa[:-2], sb[:-2], sc[:-2])]
    knl, local, launch = plan.kernel, plan.local, kernels.launch

    def run(a, b, c):
        for args in arg_sets:
            launch(dev, knl, gsize, local, a.buffer, b.buffer, c.buffer, *args)
    return run


class BlockedConfig(tuple):
    """How one blocked matmul runs: which operands are packed and the macro block sizes.

    ``pack_a`` / ``pack_b``: copy the operand into k-major panels first (needed for a transposed
    operand; optional otherwise). ``mcp`` x ``ncp``: micro-tiles per work-item (its macro block of
    C). ``kc``: the k slice it walks at a time. All are launch arguments, so none costs a compile.
    """

    __slots__ = ()
    _fields = ("pack_a", "pack_b", "mcp", "ncp", "kc")

    def __new__(cls, pack_a, pack_b, mcp, ncp, kc):
        return tuple.__new__(cls, (bool(pack_a), bool(pack_b), int(mcp), int(ncp), int(kc)))

    pack_a = property(lambda self: self[0])
    pack_b = property(lambda self: self[1])
    mcp = property(lambda self: self[2])
    ncp = property(lambda self: self[3])
    kc = property(lambda self: self[4])

    def __repr__(self):
        return "BlockedConfig(" + ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self)) + ")"


# Tests and the tuner force a configuration through this (None: choose).
_forced_config: Optional[BlockedConfig] = None


def _blocked_config(plan, M, N, K, ta, tb, nmat, b_inplace_ok) -> BlockedConfig:
    """Packing and block sizes for one call (all launch arguments, so choosing never compiles)."""
    forced = _forced_config
    if forced is not None:
        # A transposed operand, or a B that cannot be read in place, is packed whatever was forced.
        return BlockedConfig(forced.pack_a or ta, forced.pack_b or not b_inplace_ok,
                             forced.mcp, forced.ncp, forced.kc)
    p = plan.params
    mr, nr, item = p["mr"], p["nr"], plan.item
    # k slice: its NR-column slice of B should fill about half of L1 (16 KB: 256 floats x 16 or
    # 256 doubles x 8). Split K into equal slices so a K just past KC does not end in a sliver.
    slices = -(-K // max(16, BLOCKED_SLICE_BYTES // (nr * item)))
    kc = -(-K // slices)
    # B in place saves a launch and a pass over B, which pays while B is small; a large B, read in
    # place, strides by a whole row per k (for power-of-two N, all into the same few L1 sets), so
    # it is packed into contiguous panels.
    pack_b = not b_inplace_ok or K * N * item > BLOCKED_INPLACE_B_BYTES
    # Macro blocks: MCP row panels share each B slice, NCP column panels each A block (16 x 6 rows x
    # KC floats = 96 KB, in L2). Shrink them until there are enough work-items for every compute
    # unit to get several (PoCL hands work-groups to its per-core threads; a few per core keeps the
    # tail short).
    pm, pn = -(-M // mr), -(-N // nr)
    mcp, ncp = BLOCKED_MCP, BLOCKED_NCP
    want = plan.items_per_cu * plan.compute_units
    while mcp > 1 and -(-pm // mcp) * -(-pn // ncp) * nmat < want:
        mcp //= 2
    while ncp > 1 and -(-pm // mcp) * -(-pn // ncp) * nmat < want:
        ncp //= 2
    return BlockedConfig(ta, pack_b, mcp, ncp, kc)


def _blocked_launcher(dev, plan, a_numel, b_numel, M, N, K, ta, tb, outer, sa, sb, sc, nb_hi, nb_lo):
    """A function (a, b, c) that enqueues the packing and blocked kernels for this signature."""
    p = plan.params
    mr, nr = p["mr"], p["nr"]
    pm, pn = -(-M // mr), -(-N // nr)
    i32, i64 = np.int32, np.int64
    nmat = nb_hi * nb_lo * max(1, math.prod(outer))
    # B is read in place only as whole aligned vectors: rows a whole number of NR-column panels
    # (so no panel runs past a row), which also keeps every matrix of a batch vector aligned.
    cfg = _blocked_config(plan, M, N, K, ta, tb, nmat, not tb and N % nr == 0)
    launch, pack_a, pack_b = kernels.launch, plan.pack[0], plan.pack[1]
    if cfg.pack_b:
        pb_size = pn * nr * K        # one packed B, zero padded to whole panels
        batch_b = max(1, b_numel // (K * N))
        b_row, b_k = (K, 1) if tb else (1, N)      # element (n, k) of B, i.e. of B^T
        b_pack_gsize = (pn, -(-K // PACK_K), batch_b)
        b_pack_args = (i32(N), i32(K), i32(b_row), i32(b_k), i32(K * N))
        b_panel, b_kstride = nr * K, nr
    else:
        pb_size, b_panel, b_kstride = K * N, nr, N
    if cfg.pack_a:
        a_row, a_k = (1, M) if ta else (K, 1)      # element (m, k) of A
        batch_a = max(1, a_numel // (M * K))
        pa_size = pm * mr * K
        a_pack_gsize = (pm, -(-K // PACK_K), batch_a)
        a_pack_args = (i32(M), i32(K), i32(a_row), i32(a_k), i32(M * K))
        a_panel, a_row, a_k = mr * K, 1, mr
    else:
        pa_size, a_panel, a_row, a_k = M * K, mr * K, K, 1
    mcp, ncp, kc = cfg.mcp, cfg.ncp, cfg.kc
    gsize = (-(-pm // mcp), -(-pn // ncp), nb_hi * nb_lo)
    arg_sets = [(i32(M), i32(N), i32(K), i32(a_panel), i32(a_row), i32(a_k),
                 i32(b_panel), i32(b_kstride), i32(mcp), i32(ncp), i32(kc), i32(nb_lo),
                 i64(sa[-2] * pa_size), i64(sa[-1] * pa_size),
                 i64(sb[-2] * pb_size), i64(sb[-1] * pb_size),
                 i64(oa * pa_size), i64(ob * pb_size), i64(oc * M * N))
                for oa, ob, oc in _outer_offsets(outer, sa[:-2], sb[:-2], sc[:-2])]
    knl, local = plan.kernel, plan.local

    def run(a, b, c):
        # Scratch from the device pool: the in-order queue guarantees the pack and multiply kernels
        # are done with it before anything allocated later can write it.
        b_src = a_src = None
        if cfg.pack_b:
            b_src = Tensor._wrap((batch_b * pb_size,), b.dtype, dev)
            launch(dev, pack_b, b_pack_gsize, _PACK_LOCAL, b.buffer, b_src.buffer, *b_pack_args)
        if cfg.pack_a:
            a_src = Tensor._wrap((batch_a * pa_size,), a.dtype, dev)
            launch(dev, pack_a, a_pack_gsize, _PACK_LOCAL, a.buffer, a_src.buffer, *a_pack_args)
        a_buf = (a if a_src is None else a_src).buffer
        b_buf = (b if b_src is None else b_src).buffer
        for args in arg_sets:
            launch(dev, knl, gsize, local, a_buf, b_buf, c.buffer, *args)
    return run
