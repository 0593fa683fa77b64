#!/usr/bin/env python3
"""Quick matmul benchmark: our kernel against numpy (OpenBLAS) in the same process.

    .venv/bin/python scripts/bench_matmul.py            # sgemm at 256, 512, 1024
    .venv/bin/python scripts/bench_matmul.py --big      # ... and 2048
    .venv/bin/python scripts/bench_matmul.py --strategy tiled --dtype float64 --sizes 128 256

Our time covers the whole call up to ``dev.synchronize()``. Ours and numpy's runs alternate in
blocks, so a machine shared with other work slows both alike; the medians are what to compare. Each
block starts with at least 0.2 s of warm-up calls: OpenBLAS's idle threads spin for ~0.1 s after its
last call, and on 2 cores a block timed right after numpy's would share the cores with them.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set, can make OpenBLAS pick slower kernels. OpenBLAS reads
them when numpy loads, so the script re-executes itself without them (before importing numpy) unless
``--keep-openblas-env`` is given, and says which it did.
"""

from __future__ import annotations

import argparse
import os
import sys

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="square sizes n (n x n x n)")
    p.add_argument("--big", action="store_true", help="add 2048")
    p.add_argument("--repeats", type=int, default=9, help="timed blocks per size and side")
    p.add_argument("--warmup", type=float, default=0.2, help="seconds of warm-up calls before each block")
    p.add_argument("--strategy", choices=["tiled", "blocked"], default=None, help="default: by device type")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default=None, help="AXONML_DEVICE-style selector")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="leave OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as the environment set them")
    return p.parse_args()


def main():
    args = parse_args()
    removed = [v for v in OPENBLAS_VARS if v in os.environ]
    if removed and not args.keep_openblas_env and not os.environ.get("_AXONML_BENCH_REEXEC"):
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
        env["_AXONML_BENCH_REEXEC"] = ",".join(removed)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)

    import statistics
    import time

    from bench import alternating_blocks   # this folder: the same block timing as bench.py

    import numpy as np

    from axonml_autograd import Tensor, get_device
    from axonml_autograd.matmul import matmul, plan_info

    dev = get_device(args.device)
    dtype = np.dtype(args.dtype)
    unset = os.environ.get("_AXONML_BENCH_REEXEC")
    if unset:
        blas_note = f"numpy run with {unset.replace(',', ', ')} unset (re-executed without them)"
    elif args.keep_openblas_env and removed:
        blas_note = "numpy run with " + ", ".join(f"{v}={os.environ[v]}" for v in removed) + " (kept on request)"
    else:
        blas_note = "numpy run with no OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment"
    print(f"device: {dev.name} ({dev.type}, {dev.compute_units} compute units, {dev.info.platform})")
    print(f"matmul plan: {plan_info(dev, dtype, args.strategy)}")
    print(blas_note)
    print(f"{args.dtype}, median (best) of {args.repeats} alternating blocks (about 0.1 s each), each after "
          f"{args.warmup:g} s of warm-up")
    print(f"{'n':>6} {'ours GFLOP/s':>18} {'numpy GFLOP/s':>18} {'ours/numpy':>11}")

    sizes = list(args.sizes) + ([2048] if args.big and 2048 not in args.sizes else [])
    rng = np.random.default_rng(0)
    for n in sizes:
        a_host = rng.standard_normal((n, n)).astype(dtype)
        b_host = rng.standard_normal((n, n)).astype(dtype)
        a, b = Tensor.from_numpy(a_host, device=dev), Tensor.from_numpy(b_host, device=dev)

        def ours():
            c = matmul(a, b, strategy=args.strategy)
            dev.synchronize()
            return c

        def theirs():
            return a_host @ b_host

        err = np.abs(ours().numpy() - theirs()).max() / max(1.0, np.abs(theirs()).max())
        t0 = time.perf_counter()
        theirs()
        reps = max(1, int(0.1 / max(time.perf_counter() - t0, 1e-6)))   # about 0.1 s of numpy per block
        times = alternating_blocks({"ours": ours, "numpy": theirs}, args.repeats, reps, args.warmup)
        t_ours, t_np = times["ours"], times["numpy"]
        flop = 2.0 * n ** 3
        go, gn = flop / statistics.median(t_ours) / 1e9, flop / statistics.median(t_np) / 1e9
        bo, bn = flop / min(t_ours) / 1e9, flop / min(t_np) / 1e9
        print(f"{n:>6} {go:>9.1f} ({bo:>6.1f}) {gn:>9.1f} ({bn:>6.1f}) {go / gn:>10.2f}x"
              + (f"   max rel err {err:.1e}" if err > (1e-4 if dtype == np.float32 else 1e-10) else ""))


if __name__ == "__main__":
    main()
