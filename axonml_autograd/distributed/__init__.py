"""Data-parallel training over MPI: several processes, each with its own device, one model.

The modules: ``world`` (joining the MPI world: rank, world size, each local rank's device),
``collectives`` (``all_reduce``, ``broadcast``, ``all_gather``, ``barrier`` on tensors) and ``ddp``
(``DistributedDataParallel``). ``DistributedSampler`` lives beside the data loader in
``axonml_autograd.data``; every name is importable from here as well.

Every process (a *rank*) holds a copy of the model, takes its own share of each batch, and runs the
forward and backward pass on its own device. :class:`DistributedDataParallel` then averages the
gradients across the ranks during ``backward()``, so every rank's optimiser takes the same step and
the copies stay identical. The transport is MPI through ``mpi4py`` (the ``mpi`` extra installs it
and Open MPI from PyPI); launch the script with ``mpiexec``::

    mpiexec -n 2 python train.py                       # two ranks on this machine
    mpiexec --hostfile hosts -n 8 python train.py      # eight ranks over the machines in `hosts`

Without ``mpiexec`` (or without ``mpi4py``) everything here works as a world of one process: the
collectives return their input, the wrapper adds nothing, the sampler yields every index.

**Host transfers.** The library never reads the device inside forward, backward or an optimiser step,
with one sanctioned exception: the gradient all-reduce. Each bucket's gradients are copied into one
host array by non-blocking reads (events; the rest of backward keeps being enqueued meanwhile),
reduced by a non-blocking ``MPI_Iallreduce`` once those reads are done, and uploaded back at the
end of backward: one read per gradient and one upload per bucket per step.
Because of them a step with a :class:`DistributedDataParallel` cannot run inside ``capture()``
(which refuses host reads); reduce explicitly between captured pieces with
:meth:`DistributedDataParallel.reduce_gradients` if needed.

**Reproducibility.** Buckets are fixed at construction (parameters in reverse order, as backward
produces their gradients) and their reductions are started in that order on every rank, whatever
order their gradients arrive in; the same MPI and the same number of ranks then give the same bits
run after run. With two ranks the sum of two numbers is exact in either order, so every rank holds
bit-identical gradients.

>>> from axonml_autograd import Tensor, distributed
>>> distributed.init()                 # not under mpiexec: a world of one
>>> distributed.rank(), distributed.world_size(), distributed.local_rank()
(0, 1, 0)
>>> distributed.all_reduce(Tensor.from_vec([1.0, 2.0], [2]), op="mean").to_vec()
[1.0, 2.0]
>>> list(distributed.DistributedSampler(5, shuffle=False))
[0, 1, 2, 3, 4]
"""

from .world import (device_for_local_rank, init, is_initialized, local_rank, local_world_size, rank,
                    world_size)
from .collectives import all_gather, all_reduce, barrier, broadcast
from .ddp import DistributedDataParallel
from ..data import DistributedSampler

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "local_world_size", "barrier",
           "all_reduce", "broadcast", "all_gather", "DistributedDataParallel", "DistributedSampler",
           "device_for_local_rank"]
