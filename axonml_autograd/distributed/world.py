"""The MPI world: which process this is (rank, local rank), how many train together, and its device.

Not under ``mpiexec`` (or without ``mpi4py`` in a single-process launch) the world is one process and
MPI is never initialised. The state lives in one object, ``_world``, that the collectives and
``DistributedDataParallel`` read through this module (so replacing it, as a test does, reaches them).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "local_world_size",
           "device_for_local_rank"]


# Environment variables a launcher sets in each process it starts: Open MPI, PMIx (Open MPI 5, Slurm
# with PMIx), MPICH/Hydra and Intel MPI (PMI), MVAPICH. Their absence means "not launched by mpiexec":
# we then stay a world of one without initialising MPI (a singleton MPI_Init costs ~1 s).
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS",
                  "MV2_COMM_WORLD_SIZE")
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


class _World:
    initialized = False
    comm = None          # mpi4py's COMM_WORLD, or None for a world of one
    MPI = None           # the mpi4py.MPI module when in use
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1


_world = _World()


def _launched_by_mpi() -> bool:
    return any(os.environ.get(name) for name in _LAUNCHER_VARS)


def _launcher_size() -> int:
    for name in _SIZE_VARS:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def init(pick_device: bool = True) -> None:
    """Join the MPI world if this process was started by ``mpiexec`` (idempotent).

    Sets up the rank, the world size and the local rank (the rank among the processes of this
    machine), installs an exception hook that aborts the whole job when one rank raises (instead of
    leaving the others waiting in a collective), and, with ``pick_device``, gives each local rank its
    own OpenCL device (:func:`device_for_local_rank`) unless ``AXONML_DEVICE``/``PYOPENCL_CTX`` name
    one or a default device is already in use. Not under ``mpiexec``: a world of one, MPI untouched.
    Raises RuntimeError when launched as one of several ranks but ``mpi4py`` is missing.

    >>> init(); init(); world_size()
    1
    """
    if _world.initialized:
        return
    if _launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError as e:
            if _launcher_size() > 1:
                raise RuntimeError("distributed.init: started by mpiexec as one of several ranks, but mpi4py "
                                   "is not installed; pip install 'axonml-autograd[mpi]' (mpi4py and Open MPI)"
                                   ) from e
            MPI = None
        if MPI is not None:
            comm = MPI.COMM_WORLD
            _world.MPI, _world.comm = MPI, comm
            _world.rank, _world.size = comm.Get_rank(), comm.Get_size()
            # The ranks sharing this machine's memory, numbered by their world rank.
            local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=_world.rank)
            _world.local_rank, _world.local_size = local.Get_rank(), local.Get_size()
            local.Free()
            if _world.size > 1:
                _install_abort_hook(comm)
    _world.initialized = True
    if pick_device and _world.local_size > 1:
        _pick_device(_world.local_rank)


def current() -> _World:
    """The world this process belongs to (joined first if need be): what the collectives read."""
    init()
    return _world


def is_initialized() -> bool:
    """Whether :func:`init` has run."""
    return _world.initialized


def rank() -> int:
    """This process's rank in ``[0, world_size())`` (0 without mpiexec)."""
    init()
    return _world.rank


def world_size() -> int:
    """How many processes train together (1 without mpiexec)."""
    init()
    return _world.size


def local_rank() -> int:
    """This process's rank among those on the same machine (shared memory), from 0."""
    init()
    return _world.local_rank


def local_world_size() -> int:
    """How many ranks run on this machine."""
    init()
    return _world.local_size


def _install_abort_hook(comm):
    """An uncaught exception on one rank aborts every rank (MPI_Abort) after printing its traceback.

    Without it the failed rank exits while the others wait forever in the next collective.
    """
    previous = sys.excepthook

    def abort(kind, value, tb):
        try:
            previous(kind, value, tb)
            sys.stderr.write(f"axonml_autograd.distributed: rank {comm.Get_rank()} raised "
                             f"{kind.__name__}; aborting all {comm.Get_size()} ranks\n")
            sys.stderr.flush()
        finally:
            comm.Abort(1)

    sys.excepthook = abort


def device_for_local_rank(local_rank_: int, infos=None) -> Optional[str]:
    """The ``AXONML_DEVICE`` selector for a local rank: the machine's GPUs (else its CPU devices)
    dealt out round-robin. None when there is at most one such device (the default rules then apply).

    >>> from types import SimpleNamespace as D
    >>> gpus = [D(type="GPU", selector="0:0"), D(type="GPU", selector="0:1"), D(type="CPU", selector="1:0")]
    >>> [device_for_local_rank(k, gpus) for k in range(3)]
    ['0:0', '0:1', '0:0']
    >>> device_for_local_rank(1, gpus[2:]) is None
    True
    """
    if infos is None:
        from ..device import all_device_infos
        infos = all_device_infos()
    gpus = [i for i in infos if i.type == "GPU"]
    pool = gpus or [i for i in infos if i.type == "CPU"] or list(infos)
    if len(pool) <= 1:
        return None
    return pool[local_rank_ % len(pool)].selector


def _pick_device(local_rank_: int):
    from .. import device as D
    if os.environ.get("AXONML_DEVICE") or os.environ.get("PYOPENCL_CTX") or D._default is not None:
        return   # the user's choice (or a device already in use) wins
    selector = device_for_local_rank(local_rank_)
    if selector is not None:
        D.set_default_device(selector)

