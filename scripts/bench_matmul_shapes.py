#!/usr/bin/env python3
"""The matmuls of one MLP 784-256-10 training step at batch 128: ours against torch.mm, same process.

    .venv/bin/python scripts/bench_matmul_shapes.py                 # float32, torch on 2 threads
    .venv/bin/python scripts/bench_matmul_shapes.py --blocks 9 --reps 20

Forward: x @ W0, h @ W1. Backward: g1 @ W1^T (into the hidden layer), h^T @ g1 and x^T @ g0 (the
weight gradients), through matmul's transpose flags as the autograd functions call it; torch gets
the same operands as transposed views. Each of our repetitions ends in ``dev.synchronize()``.

Ours and torch's blocks alternate, so a machine shared with other work slows both alike; the table
shows the median over blocks of each block's mean time, as GFLOP/s, and the ratio of each side's best
block (on a machine that other work interrupts now and then, the best block is the closest to an
undisturbed one; OpenMP's threads suffer far more from a busy core than PoCL's). Every block starts with its own
warm-up of at least ``--warmup`` seconds: the other side's idle threads keep spinning for a while
after its last call (OpenMP and OpenBLAS spin before they sleep), and on 2 cores a block that
started at once would be timed against them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# (name, a shape, b shape, trans_a, trans_b): result op(a) @ op(b)
SHAPES = (
    ("x @ W0", (128, 784), (784, 256), False, False),
    ("h @ W1", (128, 256), (256, 10), False, False),
    ("g1 @ W1^T", (128, 10), (256, 10), False, True),
    ("h^T @ g1", (128, 256), (128, 10), True, False),
    ("x^T @ g0", (128, 784), (128, 256), True, False),
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=7, help="alternating blocks per shape and side")
    p.add_argument("--reps", type=int, default=0, help="calls per block (default: about 30 ms worth)")
    p.add_argument("--warmup", type=float, default=0.2, help="seconds of warm-up calls before each block")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default=None, help="AXONML_DEVICE-style selector")
    p.add_argument("--strategy", choices=["tiled", "blocked"], default=None)
    return p.parse_args()


def main():
    args = parse_args()
    import numpy as np
    import torch

    from bench import alternating_blocks   # this folder: the same block timing as bench.py

    from axonml_autograd import Tensor, get_device
    from axonml_autograd.matmul import matmul

    torch.set_num_threads(args.threads)
    dev = get_device(args.device)
    print(f"device: {dev.name} ({dev.type}, {dev.compute_units} compute units); torch {torch.__version__} "
          f"on {torch.get_num_threads()} threads")
    print(f"float32; median over {args.blocks} alternating blocks of each block's mean time, each block after "
          f"{args.warmup:g} s of warm-up")
    print(f"{'shape':<34} {'ours GFLOP/s':>12} {'torch GFLOP/s':>13} {'ratio':>7}   {'best: ours':>10} {'torch':>7} "
          f"{'ratio':>6}")
    rng = np.random.default_rng(0)
    ratios = []
    for name, a_shape, b_shape, ta, tb in SHAPES:
        a_h = rng.standard_normal(a_shape).astype(np.float32)
        b_h = rng.standard_normal(b_shape).astype(np.float32)
        a_op, b_op = (a_h.T if ta else a_h), (b_h.T if tb else b_h)
        m, k = a_op.shape
        n = b_op.shape[1]
        a, b = Tensor.from_numpy(a_h, device=dev), Tensor.from_numpy(b_h, device=dev)
        a_t, b_t = torch.from_numpy(a_h), torch.from_numpy(b_h)
        a_t, b_t = (a_t.t() if ta else a_t), (b_t.t() if tb else b_t)

        want = a_op.astype(np.float64) @ b_op.astype(np.float64)
        got = matmul(a, b, trans_a=ta, trans_b=tb, strategy=args.strategy).numpy()
        err = float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))

        def ours():
            matmul(a, b, trans_a=ta, trans_b=tb, strategy=args.strategy)
            dev.synchronize()

        def theirs():
            torch.mm(a_t, b_t)

        reps = args.reps
        if not reps:   # about 30 ms of our calls per block
            t0 = time.perf_counter()
            for _ in range(5):
                ours()
            reps = max(5, int(0.03 / ((time.perf_counter() - t0) / 5)))
        times = alternating_blocks({"ours": ours, "torch": theirs}, args.blocks, reps, args.warmup)
        t_ours, t_torch = times["ours"], times["torch"]
        flop = 2.0 * m * n * k
        go, gt = flop / statistics.median(t_ours) / 1e9, flop / statistics.median(t_torch) / 1e9
        bo, bt = flop / min(t_ours) / 1e9, flop / min(t_torch) / 1e9
        ratios.append(go / gt)
        label = f"{name} [{m}x{k}]@[{k}x{n}]"
        print(f"{label:<34} {go:>12.1f} {gt:>13.1f} {go / gt:>6.2f}x   {bo:>10.1f} {bt:>7.1f} {bo / bt:>5.2f}x"
              + (f"   max rel err {err:.1e}" if err > 1e-4 else ""))
    print(f"lowest median ratio {min(ratios):.2f}x; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
