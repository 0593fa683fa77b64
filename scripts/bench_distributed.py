#!/usr/bin/env python3
"""What the gradient all-reduce costs per MLP step, and how much of it hides behind backward.

    mpiexec -n 2 python scripts/bench_distributed.py [--reps 30] [--batch 128] [--json]

A 784-256-10 relu MLP, batch ``--batch`` per rank, cross-entropy. For each bucket size, three ways
to finish a step's gradients are timed in turns (each after a forward pass, from a barrier until the
device has finished), and their medians printed by rank 0:

* ``backward``: backward alone, inside ``ddp.no_sync()`` (no communication);
* ``reduce``: ``ddp.reduce_gradients()`` after such a backward (read, MPI, upload; nothing to hide behind);
* ``backward+reduce``: a plain ``loss.backward()``, the buckets reduced as their gradients appear.

``hidden`` = (backward + reduce - backward+reduce) / reduce: the share of the reduction that
overlapped backward. ``mpi`` is a bare ``Allreduce`` of the same bytes between host arrays (the
transport alone). A model this small fits one 25 MB bucket, which can only start when backward
has produced its last gradient; the small-bucket row puts the first layer's weight in a bucket of
its own so that the rest is reduced while that gradient is computed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from axonml_autograd import Tensor, Variable, distributed, launch
from axonml_autograd.distributed import DistributedDataParallel
from axonml_autograd.nn import MLP


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=128, help="rows per rank")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    if world < 2:
        sys.exit("bench_distributed.py: run it under mpiexec -n 2 (or more): there is nothing to reduce alone")
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    model = MLP([784, 256, 10], seed=0)
    device = model.parameters()[0].device
    rng = np.random.default_rng(rank)
    x = Tensor.from_numpy(rng.standard_normal((args.batch, 784)).astype(np.float32))
    y = Tensor.from_numpy(rng.integers(0, 10, args.batch), dtype="int32")
    n_bytes = sum(p.numel() * 4 for p in model.parameters())

    def start():
        launch.synchronize(device)
        comm.Barrier()
        return time.perf_counter()

    def stop(t0):
        launch.synchronize(device)
        return time.perf_counter() - t0

    results = []
    for label, cap in (("one 25 MB bucket", 25.0), ("0.25 MB buckets", 0.25)):
        ddp = DistributedDataParallel(model, bucket_cap_mb=cap)
        times = {"backward": [], "reduce": [], "backward+reduce": [], "mpi": []}
        early = []
        send, recv = np.ones(n_bytes // 4, np.float32), np.empty(n_bytes // 4, np.float32)
        for rep in range(args.warmup + args.reps):
            model.zero_grad()
            loss = model(Variable(x)).cross_entropy(y)
            t0 = start()
            with ddp.no_sync():
                loss.backward()
            t_b = stop(t0)
            t0 = start()
            ddp.reduce_gradients()
            t_r = stop(t0)
            model.zero_grad()
            loss = model(Variable(x)).cross_entropy(y)
            t0 = start()
            loss.backward()
            t_br = stop(t0)
            t0 = start()
            comm.Allreduce(send, recv)
            t_mpi = time.perf_counter() - t0
            if rep >= args.warmup:
                for k, v in zip(times, (t_b, t_r, t_br, t_mpi)):
                    times[k].append(v)
                early.append(ddp.last_started_early)
        ddp.remove_hooks()
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        hidden = (med["backward"] + med["reduce"] - med["backward+reduce"]) / med["reduce"]
        results.append({"buckets": label, "n_buckets": len(ddp.buckets), **{f"{k}_ms": round(v, 3) for k, v in med.items()},
                        "hidden_fraction": round(hidden, 3), "buckets_started_during_backward": statistics.median(early)})

    if rank != 0:
        return 0
    head = {"ranks": world, "model": "MLP 784-256-10", "batch_per_rank": args.batch, "grad_bytes": n_bytes,
            "device": device.name, "reps": args.reps}
    if args.json:
        print(json.dumps({**head, "results": results}, indent=2))
        return 0
    print(f"{world} ranks, {head['model']}, batch {args.batch} per rank, {n_bytes / 1e6:.2f} MB of gradients "
          f"per step, device {device.name}; medians of {args.reps} steps (ms)")
    print(f"{'buckets':<18} {'n':>2} {'backward':>9} {'reduce':>8} {'bwd+reduce':>11} {'mpi only':>9} "
          f"{'hidden':>7} {'started early':>14}")
    for r in results:
        print(f"{r['buckets']:<18} {r['n_buckets']:>2} {r['backward_ms']:>9.2f} {r['reduce_ms']:>8.2f} "
              f"{r['backward+reduce_ms']:>11.2f} {r['mpi_ms']:>9.2f} {100 * r['hidden_fraction']:>6.0f}% "
              f"{r['buckets_started_during_backward']:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
