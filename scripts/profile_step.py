#!/usr/bin/env python3
"""Where a benchmark row's time goes, kernel by kernel: each launch waited for and timed on its own.

    .venv/bin/python scripts/profile_step.py transformer_step            # the eager step
    .venv/bin/python scripts/profile_step.py transformer_step --captured # its capture() replays
    .venv/bin/python scripts/profile_step.py mlp_captured --top 10

The row's own step function (``scripts/bench.py``) runs twice to warm up, then ``--calls`` more times
with every kernel launch followed by a wait, timed from enqueue to completion. Waiting serialises what
the driver would overlap and adds its wake-up latency to each launch, so the total is above the row's
own time; the split between kernels and the launch counts are what this is for. Elementwise and fused
kernels are named by the expression they compute (their sources are kept for this run: the kernel
binary cache is off, so the first call builds every program).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time

os.environ["AXONML_KERNEL_CACHE"] = "off"   # programs built from source, which then names the expressions

import numpy as np  # noqa: E402
import pyopencl as cl  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def _label(knl, names):
    """The kernel's name, and for elementwise/fused kernels the expression of the value they store."""
    key = (knl.program.int_ptr, knl.function_name)   # (a program holds several kernels: pool forward and backward)
    if key not in names:
        name = knl.function_name
        if name in ("ew", "fused"):
            try:
                src = knl.program.get_info(cl.program_info.SOURCE)
            except cl.Error:
                src = ""
            stores = [ln.strip() for ln in src.splitlines()
                      if re.match(r"\s*(out\[|\*\(__global TV \*\)\(out|v\d+ = )", ln)]
            walk = "strided" if "st_" in src else "contiguous"
            name = f"{name} ({walk}) {stores[-1][:90] if stores else ''}"
        names[key] = name
    return names[key]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("row", help="a bench.py row with a step function (e.g. transformer_step, cnn_step, mlp, "
                                    "mlp_captured, lstm)")
    parser.add_argument("--captured", action="store_true", help="time the row's captured step (rows with one)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls of the step function (default 3)")
    parser.add_argument("--top", type=int, default=25, help="kernels listed (default 25)")
    args = parser.parse_args(argv)

    stats = collections.defaultdict(lambda: [0, 0.0])
    names, timing = {}, [False]
    enqueue = cl.enqueue_nd_range_kernel

    def timed(queue, knl, gsize, lsize, *rest, **kw):
        if not timing[0]:
            return enqueue(queue, knl, gsize, lsize, *rest, **kw)
        start = time.perf_counter()
        event = enqueue(queue, knl, gsize, lsize, *rest, **kw)
        event.wait()
        s = stats[_label(knl, names)]
        s[0] += 1
        s[1] += time.perf_counter() - start
        return event
    cl.enqueue_nd_range_kernel = timed

    # The row builds its models and step functions, then hands them to measure(): take them there.
    steps = {}

    def take(fns, *_a, **_k):
        steps.update(fns)
        raise _Taken

    bench.measure = take
    from axonml_autograd import get_device
    runner = bench.Bench(bench.parse_args(["--rows", args.row, "--no-torch"]), get_device(None), None, np)
    try:
        getattr(runner, args.row)()
    except _Taken:
        pass
    key = "captured" if args.captured else "ours"
    if key not in steps:
        parser.error(f"row {args.row!r} has no {'captured ' if args.captured else ''}step function "
                     f"(it times: {', '.join(steps) or 'nothing'})")
    step = steps[key]
    step()
    step()
    timing[0] = True
    start = time.perf_counter()
    for _ in range(args.calls):
        step()
    wall = (time.perf_counter() - start) / args.calls
    timing[0] = False
    launches = sum(n for n, _t in stats.values()) / args.calls
    busy = sum(t for _n, t in stats.values()) / args.calls
    print(f"{args.row}{' (captured)' if args.captured else ''}: per call of the row's step function "
          f"{wall * 1e3:.2f} ms with every launch waited for, {busy * 1e3:.2f} ms of it in {launches:.0f} launches")
    print(f"{'ms/call':>9} {'share':>6} {'launches':>9}  kernel")
    for name, (n, t) in sorted(stats.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"{t / args.calls * 1e3:9.3f} {t / max(busy * args.calls, 1e-12):6.1%} {n / args.calls:9.1f}  {name}")
    return 0


class _Taken(Exception):
    """Raised by the stand-in for bench.measure once the row has handed over its step functions."""


if __name__ == "__main__":
    sys.exit(main())
