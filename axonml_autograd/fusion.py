"""Fusing a capture's runs of elementwise launches into one kernel each.

A recorded step is a list of commands. Where several elementwise launches follow each other over
the same number of contiguous elements (a chain of activations and scalar ops, a backward's
gradient expressions), each element's whole run can be computed by one work-item: one launch
instead of many, and the intermediate values stay in registers. On a CPU device most of a small
op's time is the launch itself (~3-5 us on PoCL), so a replayed chain of tiny ops gets several
times faster.

Fusing never changes a result: each step keeps its expression, its operand values and its
element order, and every element goes through the same scalar or vector path as unfused (see
``cl_kernels/fused.cl.mako``). Every buffer a launch wrote still holds, after the group, the value
it held unfused, so nothing outside the group can tell. A group that fails to build is replayed
unfused. ``AXONML_FUSE=0`` turns fusion off.

Only launches whose operands are all whole contiguous buffers of one float type, with no integer
scalars and no use of the element index, take part (``tensor._Plan.fuse`` says which).
"""

from __future__ import annotations

import os

from . import kernels, launch

MAX_STEPS = 32    # launches per fused kernel
MAX_ARGS = 64     # buffers + scalars: well inside any device's parameter space (>= 1 KB)


def enabled() -> bool:
    return os.environ.get("AXONML_FUSE", "1") != "0"


def fuse(commands: list, metas: list) -> list:
    """``commands`` with each run of two or more fusable launches replaced by one fused launch.

    ``metas[i]`` describes command i when it is a fusable elementwise launch: ``(plan, args)``.
    """
    if not enabled():
        return commands
    out, group = [], []

    def close():
        if len(group) >= 2:
            fused = _fused_command(group)
            if fused is not None:
                out.append(fused)
                group.clear()
                return
        out.extend(cmd for cmd, _meta in group)
        group.clear()

    for cmd, meta in zip(commands, metas):
        if meta is None:
            close()
            out.append(cmd)
            continue
        if group and not _joins(group, cmd, meta):
            close()
        group.append((cmd, meta))
    close()
    return out


def _joins(group, cmd, meta) -> bool:
    first_cmd, (first_plan, _args) = group[0]
    plan, _ = meta
    if cmd[1] is not first_cmd[1] or len(group) >= MAX_STEPS:
        return False
    if (plan.n, plan.fuse[3], plan.fuse[4]) != (first_plan.n, first_plan.fuse[3], first_plan.fuse[4]):
        return False
    buffers = {id(b) for _c, (_p, args) in group + [(cmd, meta)] for b in args if b.__class__ is not bytes}
    scalars = sum(len(p.fuse[2]) for _c, (p, _a) in group) + len(plan.fuse[2])
    return len(buffers) + scalars <= MAX_ARGS


def _fused_command(group):
    """One READY command computing ``group``'s launches, or None if it does not build."""
    device = group[0][0][1]
    first_plan = group[0][1][0]
    buffers, index = [], {}
    scalars = []
    layout = []      # per launch: (plan, buffer indices: out first, then the inputs)
    for _cmd, (plan, args) in group:
        indices = []
        for a in args:
            if a.__class__ is bytes:
                scalars.append(a)
                continue
            k = index.get(id(a))
            if k is None:
                k = index[id(a)] = len(buffers)
                buffers.append(a)
            indices.append(k)
        layout.append((plan, tuple(indices)))
    knl = _build(device, layout, len(buffers), len(scalars))
    if knl is None:
        return None
    args = buffers + scalars + [first_plan.n_bytes, first_plan.chunk_bytes]
    return launch._ready((launch.KERNEL, device, knl, first_plan.global_size, first_plan.local_size, args), ())


def _build(device, layout, nbuf, nscal):
    """The fused kernel of ``layout`` (per launch: its plan and its buffers' indices, out first), or None.

    The one place both fusions (a capture's and eager flush-time) make their kernels, so the two
    compute the same expressions in the same order.
    """
    written = {}     # buffer index -> the step that last wrote it
    steps = []
    nscalars = 0
    for i, (plan, indices) in enumerate(layout):
        expr, names, scalar_names, _ctype, _vector = plan.fuse
        operands = []
        for name, k in zip(names, indices[1:]):
            operands.append((name, ("v", written[k]) if k in written else ("b", k)))
        scalar_map = []
        for name in scalar_names:
            scalar_map.append((name, nscalars))
            nscalars += 1
        out = indices[0]
        steps.append((out, tuple(operands), tuple(scalar_map), expr))
        written[out] = i
    _expr, _names, _scalars, ctype, vector = layout[0][0].fuse
    params = dict(ctype=ctype, vector=vector, nbuf=nbuf, nscal=nscal, steps=tuple(steps))
    from .elementwise_kernels import own_erf   # (that module imports this one's users)
    if any(own_erf(device, ctype, step[3]) for step in steps):   # as the unfused launches chose
        params["own_erf"] = True
    try:
        # The only candidate: a fused kernel must take the vector path its ops took unfused (same
        # element order, same bits), so a group whose kernel does not build stays unfused.
        return kernels.first_that_builds(device, "fusion", [tuple(sorted(params.items()))], quiet=True,
                                         make=lambda _c: kernels.get_kernel(device, "fused.cl.mako", "fused", **params))
    except kernels.KernelBuildError:
        return None


# -- eager: fusing the pending list at flush time ----------------------------------------------------------
#
# Eager commands wait in the device's pending list until a flush (launch.py). A run of fusable
# launches there (FUSABLE commands: the elementwise planner's, with their plan) is handed to the
# driver as one fused kernel, the same kernel a capture would make of that run (``_build``), so a
# chain of tiny ops costs a few launches. Every buffer a launch of the run wrote is still stored,
# with the value it held unfused: in eager mode any of them may be read later (a live tensor, a
# saved value of the graph), so none is treated as dead.
#
# A run is described by its *pattern*: per launch its plan, and which buffer of the run each of its
# operands is (numbered by first appearance), so the same code over other buffers has the same
# pattern. A pattern's kernel is built only once the pattern has been seen FUSE_AFTER times (a loop,
# not a one-off), at most MAX_EAGER_KERNELS per device; until then, and beyond, its runs go unfused.
# Results are the same either way.

FUSE_AFTER = 16            # sightings of a pattern before its kernel is built
MAX_EAGER_KERNELS = 256    # fused kernels per device; past this new patterns stay unfused
MAX_PATTERNS = 4096        # patterns counted per device before the counts start over


def eager_enabled() -> bool:
    """Flush-time fusion of eager commands: on unless ``AXONML_FUSE=0`` (all fusion) or
    ``AXONML_EAGER_FUSE=0`` (this one only)."""
    env = os.environ
    return env.get("AXONML_FUSE", "1") != "0" and env.get("AXONML_EAGER_FUSE", "1") != "0"


class _EagerCache:
    """A device's fused kernels by pattern, and how often unbuilt patterns were seen."""

    __slots__ = ("entries", "built")

    def __init__(self):
        # pattern -> an int (sightings so far), a cl.Kernel of the cache's own (built, its n and
        # chunk arguments set), or None (will not be built: it failed, or the cap was reached)
        self.entries: dict = {}
        self.built = 0


def eager_stats(device) -> dict:
    """How many fused kernels ``device`` has built for eager runs, and patterns it is counting."""
    cache = getattr(device, "_eager_fusion", None)
    if cache is None:
        return {"built": 0, "patterns": 0}
    return {"built": cache.built, "patterns": len(cache.entries)}


def enqueue_batch(device, batch):
    """Hand ``batch`` (commands taken from ``device``'s pending list, in order) to the driver, each run
    of fusable launches whose pattern has a built kernel as one launch. Callers hold the launch lock."""
    cache = device.__dict__.get("_eager_fusion")
    if cache is None:
        cache = device._eager_fusion = _EagerCache()
    entries = cache.entries
    enqueue = launch.enqueue
    FUS = launch.FUSABLE
    n = len(batch)
    i = 0
    while i < n:
        cmd = batch[i]
        k = i + 1
        if cmd[0] != FUS or k == n or batch[k][0] != FUS:
            enqueue(cmd)
            i = k
            continue
        # A run from i: launches over the same element count, float type and vector path.
        plan = cmd[6]
        count, ctype, vector = plan.n, plan.fuse[3], plan.fuse[4]
        index: dict = {}
        buffers: list = []
        scalars: list = []
        pattern: list = []
        k = i
        end = min(n, i + MAX_STEPS)
        while k < end:
            c = batch[k]
            if c[0] != FUS:
                break
            p = c[6]
            if p is not plan:
                f = p.fuse
                if p.n != count or f[3] != ctype or f[4] != vector:
                    break
            args = c[5]
            if len(buffers) + len(scalars) + len(args) > MAX_ARGS:
                break
            pattern.append(p)
            for a in args:
                if a.__class__ is bytes:
                    scalars.append(a)
                else:
                    j = index.get(id(a))
                    if j is None:
                        j = index[id(a)] = len(buffers)
                        buffers.append(a)
                    pattern.append(j)
            k += 1
        if k - i < 2:
            enqueue(cmd)
            i += 1
            continue
        pattern = tuple(pattern)
        knl = entries.get(pattern, 0)
        if knl.__class__ is int:
            knl = _sighted(device, cache, pattern, knl, len(buffers), len(scalars), plan)
        if knl is None:
            for j in range(i, k):
                enqueue(batch[j])
        else:
            set_arg = knl.set_arg
            for j, b in enumerate(buffers):
                set_arg(j, b)
            set_bytes = getattr(knl, "_set_arg_buf", None) or launch._bytes_setter(knl)
            for j, s in enumerate(scalars, len(buffers)):
                set_bytes(j, s)
            launch.cl.enqueue_nd_range_kernel(device._queue, knl, plan.global_size, plan.local_size)
        i = k


def _sighted(device, cache, pattern, seen, nbuf, nscal, plan):
    """Count a sighting of an unbuilt ``pattern``; its kernel once it has been seen often enough."""
    entries = cache.entries
    seen += 1
    if seen < FUSE_AFTER:
        if seen == 1 and len(entries) >= MAX_PATTERNS:
            # Many one-off patterns: forget the counts and refusals (built kernels stay; a failed
            # build is not tried again: first_that_builds remembers it).
            for key in [key for key, v in entries.items() if v is None or v.__class__ is int]:
                del entries[key]
        entries[pattern] = seen
        return None
    if cache.built >= MAX_EAGER_KERNELS:
        entries[pattern] = None
        return None
    layout, pos = [], 0
    while pos < len(pattern):
        p = pattern[pos]
        width = 1 + len(p.fuse[1])
        layout.append((p, pattern[pos + 1:pos + 1 + width]))
        pos += 1 + width
    try:
        shared = _build(device, layout, nbuf, nscal)
    except Exception:   # whatever the driver says, the run goes unfused: a flush must not lose commands
        shared = None
    if shared is None:
        entries[pattern] = None
        return None
    knl = launch.cl.Kernel(shared.program, shared.function_name)   # arguments of its own
    set_bytes = getattr(knl, "_set_arg_buf", None) or launch._bytes_setter(knl)
    set_bytes(nbuf + nscal, plan.n_bytes)
    set_bytes(nbuf + nscal + 1, plan.chunk_bytes)
    entries[pattern] = knl
    cache.built += 1
    return knl
