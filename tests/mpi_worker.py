"""The program tests/test_distributed.py starts under ``mpiexec -n 2`` (and once without it).

    python tests/mpi_worker.py MODE OUTDIR [options]

Modes:
  train       a few SGD steps of a small MLP through DistributedDataParallel, batch --batch per rank,
              on the rows of a global batch that belong to this rank; writes OUTDIR/<tag>-rank<r>.npz.
              Without mpiexec the one process takes the whole global batch: the reference.
  raise       rank 1 raises before a collective that rank 0 waits in; the job must abort, not hang.
  collectives all_reduce (each op), broadcast, all_gather against numpy; mismatched shapes raise on all ranks;
              a parameter one rank leaves unused, gradient accumulation, no_sync and reduce_gradients.
  checkpoint  --phase full: 5 Adam steps, rank 0 saving a checkpoint after step 3;
              --phase resume: fresh (differently seeded) model, load that checkpoint on every rank, 2 steps.

Everything runs under ``main()``: importing this file (pytest's doctest collection does) does nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

SIZES = [8, 16, 4]


def global_batch(step, rows):
    """The global batch of a step: the same on every rank, whatever the world size."""
    rng = np.random.default_rng([1234, step])
    return rng.standard_normal((rows, SIZES[0])).astype(np.float32), \
        rng.integers(0, SIZES[-1], rows).astype(np.int32)


def my_rows(x, y, rank, per_rank):
    return x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]


def step_data(step, args, rank, world):
    from axonml_autograd import Tensor, Variable
    rows = args.batch * args.replicas
    x, y = global_batch(step, rows)
    per_rank = rows // world
    x, y = my_rows(x, y, rank, per_rank)
    return Variable(Tensor.from_numpy(x)), Tensor.from_numpy(y, dtype="int32")


def save_params(path, model):
    np.savez(path, **{name: p.numpy() for name, p in model.named_parameters()})


def run_train(args):
    from axonml_autograd import distributed
    from axonml_autograd.distributed import DistributedDataParallel
    from axonml_autograd.nn import MLP
    from axonml_autograd.optim import SGD

    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    for tag, cap in (("default", 25), ("small-buckets", 0.0003)):
        # Each rank starts from other weights: the wrapper must broadcast rank 0's.
        model = MLP(SIZES, seed=rank)
        ddp = DistributedDataParallel(model, bucket_cap_mb=cap)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(args.steps):
            x, y = step_data(step, args, rank, world)
            opt.zero_grad()
            loss = model(x).cross_entropy(y)     # the model called directly, backward() by the user
            loss.backward()
            opt.step()
        if world > 1:
            assert ddp.reductions == args.steps, ddp.reductions
            assert len(ddp.buckets) == (1 if cap == 25 else 3), [len(b) for b in ddp.buckets]
        save_params(os.path.join(args.out, f"{tag}-rank{rank}.npz"), model)


def run_raise(args):
    from axonml_autograd import Tensor, distributed

    distributed.init()
    if distributed.rank() == 1:
        raise RuntimeError("rank 1 fails on purpose")
    distributed.all_reduce(Tensor.ones([4]))   # rank 0 waits here for a partner that is gone
    print("rank 0 got past the collective", flush=True)


def run_collectives(args):
    from axonml_autograd import Tensor, Variable, distributed
    from axonml_autograd.distributed import DistributedDataParallel

    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    assert world == 2 and distributed.local_rank() == rank and distributed.local_world_size() == 2

    def mine(r):
        return np.array([r + 1.0, -3.0 * r, 0.5, 7.0 - r], dtype=np.float32)

    everyone = np.stack([mine(r) for r in range(world)])
    for op, expected in (("sum", everyone.sum(0)), ("mean", everyone.mean(0)), ("max", everyone.max(0)),
                         ("min", everyone.min(0))):
        t = Tensor.from_numpy(mine(rank))
        assert distributed.all_reduce(t, op=op) is t
        np.testing.assert_array_equal(t.numpy(), expected, err_msg=op)
    v = Variable(Tensor.from_numpy(mine(rank)), requires_grad=True)
    distributed.all_reduce(v)
    np.testing.assert_array_equal(v.numpy(), everyone.sum(0))
    ints = Tensor.from_numpy(np.array([rank, 10 * rank], dtype=np.int32), dtype="int32")
    np.testing.assert_array_equal(distributed.all_reduce(ints).numpy(), [1, 10])

    t = Tensor.from_numpy(mine(rank).reshape(2, 2))
    distributed.broadcast(t, root=1)
    np.testing.assert_array_equal(t.numpy(), mine(1).reshape(2, 2))

    parts = distributed.all_gather(Tensor.from_numpy(mine(rank)))
    assert len(parts) == world
    for r, part in enumerate(parts):
        np.testing.assert_array_equal(part.numpy(), mine(r))
    np.testing.assert_array_equal(distributed.all_gather(Tensor.from_numpy(mine(rank)), stack=True).numpy(), everyone)

    try:   # shapes that differ between ranks: every rank raises, none waits
        distributed.all_gather(Tensor.zeros([rank + 1]))
        raise AssertionError("all_gather accepted different shapes")
    except ValueError as e:
        assert "rank 0: [1]" in str(e) and "rank 1: [2]" in str(e), e
    try:
        DistributedDataParallel([Variable(Tensor.zeros([3 + rank]), requires_grad=True)])
        raise AssertionError("DistributedDataParallel accepted different models")
    except ValueError as e:
        assert "rank 1 has 1 parameters [4]" in str(e), e

    # A parameter only rank 0 uses: rank 1 contributes zeros, both end with the average.
    a = Variable(Tensor.ones([3]), requires_grad=True)
    b = Variable(Tensor.ones([2]), requires_grad=True)
    ddp = DistributedDataParallel([a, b])

    def loss():
        out = (a * float(rank + 1)).sum()
        return out + (b * 3.0).sum() if rank == 0 else out

    loss().backward()
    assert a.grad().to_vec() == [1.5] * 3 and b.grad().to_vec() == [1.5] * 2, (a.grad(), b.grad())
    loss().backward()   # accumulating without zero_grad: the average of the sums is the sum of averages
    assert a.grad().to_vec() == [3.0] * 3 and b.grad().to_vec() == [3.0] * 2
    a.zero_grad(), b.zero_grad()
    with ddp.no_sync():   # local accumulation only, then one explicit reduction
        loss().backward()
        loss().backward()
    assert a.grad().to_vec() == [2.0 * (rank + 1)] * 3
    ddp.reduce_gradients()
    assert a.grad().to_vec() == [3.0] * 3 and b.grad().to_vec() == [3.0] * 2
    assert ddp.reductions == 3

    # Inside capture() the gradient read is refused on every rank; the next eager backward still works.
    from axonml_autograd import CaptureError, capture
    try:
        capture(lambda t: loss().backward())(Tensor.ones([1]))
        raise AssertionError("a captured data-parallel backward was accepted")
    except CaptureError as e:
        assert "data-parallel" in str(e), e
    a.zero_grad(), b.zero_grad()
    loss().backward()
    assert a.grad().to_vec() == [1.5] * 3 and b.grad().to_vec() == [1.5] * 2
    distributed.barrier()
    print(f"rank {rank}: collectives ok", flush=True)


def run_checkpoint(args):
    from axonml_autograd import distributed, save
    from axonml_autograd.serialization import load_into
    from axonml_autograd.distributed import DistributedDataParallel
    from axonml_autograd.nn import MLP
    from axonml_autograd.optim import Adam

    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    ckpt = os.path.join(args.out, "checkpoint.npz")
    model = MLP(SIZES, seed=0 if args.phase == "full" else 100 + rank)
    opt = Adam(model.parameters(), lr=0.01)
    first = 0
    if args.phase == "resume":
        load_into(ckpt, dict(model.named_parameters()), optimizer=opt)
        first = 3
    DistributedDataParallel(model)
    for step in range(first, 5):
        x, y = step_data(step, args, rank, world)
        opt.zero_grad()
        model(x).cross_entropy(y).backward()
        opt.step()
        if args.phase == "full" and step == 2:
            if rank == 0:
                save(ckpt, dict(model.named_parameters()), optimizer=opt)
            distributed.barrier()
    save_params(os.path.join(args.out, f"{args.phase}-rank{rank}.npz"), model)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train", "raise", "checkpoint", "collectives"])
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=5, help="rows per rank")
    p.add_argument("--replicas", type=int, default=2, help="the world size the global batch is made for")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--phase", choices=["full", "resume"], default="full")
    args = p.parse_args(argv)
    {"train": run_train, "raise": run_raise, "checkpoint": run_checkpoint,
     "collectives": run_collectives}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
