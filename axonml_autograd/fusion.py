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
    written = {}     # buffer index -> the step that last wrote it
    steps = []
    for i, (_cmd, (plan, args)) in enumerate(group):
        expr, names, scalar_names, _ctype, _vector = plan.fuse
        bufs = [a for a in args if a.__class__ is not bytes]
        packed = [a for a in args if a.__class__ is bytes]
        for b in bufs:
            if id(b) not in index:
                index[id(b)] = len(buffers)
                buffers.append(b)
        operands = []
        for name, b in zip(names, bufs[1:]):
            k = index[id(b)]
            operands.append((name, ("v", written[k]) if k in written else ("b", k)))
        scalar_map = []
        for name, value in zip(scalar_names, packed):
            scalar_map.append((name, len(scalars)))
            scalars.append(value)
        out = index[id(bufs[0])]
        steps.append((out, tuple(operands), tuple(scalar_map), expr))
        written[out] = i
    _expr, _names, _scalars, ctype, vector = first_plan.fuse
    params = dict(ctype=ctype, vector=vector, nbuf=len(buffers), nscal=len(scalars), steps=tuple(steps))
    try:
        # The only candidate: a fused kernel must take the vector path its ops took unfused (same
        # element order, same bits), so a group whose kernel does not build stays unfused.
        knl = kernels.first_that_builds(device, "fusion", [tuple(sorted(params.items()))], quiet=True,
                                        make=lambda _c: kernels.get_kernel(device, "fused.cl.mako", "fused", **params))
    except kernels.KernelBuildError:
        return None
    args = buffers + scalars + [first_plan.n_bytes, first_plan.chunk_bytes]
    return launch._ready((launch.KERNEL, device, knl, first_plan.global_size, first_plan.local_size, args), ())
