"""Data-parallel training over MPI: several processes, each with its own device, one model.

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

from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import time
from typing import Optional

import numpy as np

from . import launch
from . import tensor as T
from .backward import _callback_stack, queue_callback
from .tensor import Tensor, View, contiguous_strides

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "local_world_size", "barrier",
           "all_reduce", "broadcast", "all_gather", "DistributedDataParallel", "DistributedSampler",
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
        from .device import all_device_infos
        infos = all_device_infos()
    gpus = [i for i in infos if i.type == "GPU"]
    pool = gpus or [i for i in infos if i.type == "CPU"] or list(infos)
    if len(pool) <= 1:
        return None
    return pool[local_rank_ % len(pool)].selector


def _pick_device(local_rank_: int):
    from . import device as D
    if os.environ.get("AXONML_DEVICE") or os.environ.get("PYOPENCL_CTX") or D._default is not None:
        return   # the user's choice (or a device already in use) wins
    selector = device_for_local_rank(local_rank_)
    if selector is not None:
        D.set_default_device(selector)


def barrier() -> None:
    """Wait until every rank has reached this call."""
    init()
    if _world.size > 1:
        _world.comm.Barrier()


# -- collectives on tensors -------------------------------------------------------------------------------

_OPS = ("sum", "mean", "max", "min")


def _tensor_of(x, op) -> Tensor:
    data = getattr(x, "_data", x)   # a Variable's tensor
    if not isinstance(data, Tensor):
        raise TypeError(f"{op}: expected a Tensor or Variable, got {type(x).__name__}")
    return data


def _write(t: Tensor, host: np.ndarray):
    """Overwrite ``t``'s values with ``host`` (an in-place write: bumps the version)."""
    host = np.ascontiguousarray(host, dtype=t.dtype)
    if host.size:
        launch.upload(t.device, t.buffer, host)   # non-blocking; `host` is ours and never changed
    t._version += 1


def all_reduce(tensor, op: str = "sum"):
    """Reduce ``tensor`` (a Tensor or a Variable's data) over all ranks, in place; returns it.

    ``op``: ``"sum"``, ``"mean"`` (floating point only), ``"max"`` or ``"min"``. A host round trip:
    use it between steps (metrics), not inside one.

    >>> all_reduce(Tensor.from_vec([1.0, 5.0], [2]), op="max").to_vec()
    [1.0, 5.0]
    """
    t = _tensor_of(tensor, "all_reduce")
    if op not in _OPS:
        raise ValueError(f"all_reduce: op must be one of {', '.join(_OPS)}; got {op!r}")
    if op == "mean" and t.dtype.kind != "f":
        raise TypeError(f"all_reduce: op='mean' needs a floating-point tensor, got {t.dtype}")
    init()
    if _world.size == 1:
        return tensor
    MPI = _world.MPI
    host = t.numpy()
    _world.comm.Allreduce(MPI.IN_PLACE, host, op={"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX,
                                                   "min": MPI.MIN}[op])
    if op == "mean":
        host /= _world.size
    _write(t, host)
    return tensor


def broadcast(tensor, root: int = 0):
    """Overwrite ``tensor`` (a Tensor or a Variable's data) on every rank with ``root``'s values; returns it.

    >>> broadcast(Tensor.from_vec([3.0], [1])).to_vec()
    [3.0]
    """
    t = _tensor_of(tensor, "broadcast")
    init()
    if isinstance(root, bool) or not isinstance(root, numbers.Integral) or not 0 <= root < _world.size:
        raise ValueError(f"broadcast: root must be a rank in [0, {_world.size}), got {root!r}")
    if _world.size == 1:
        return tensor
    host = t.numpy() if _world.rank == root else np.empty(t._shape, dtype=t.dtype)
    _world.comm.Bcast(host, root=int(root))
    if _world.rank != root:
        _write(t, host)
    return tensor


def all_gather(tensor, stack: bool = False):
    """Every rank's ``tensor`` (same shape and dtype on all ranks): a list of new Tensors in rank
    order, or with ``stack=True`` one Tensor with a new leading axis of size ``world_size()``.

    >>> [t.to_vec() for t in all_gather(Tensor.from_vec([7.0], [1]))]
    [[7.0]]
    >>> all_gather(Tensor.from_vec([7.0], [1]), stack=True).shape()
    [1, 1]
    """
    t = _tensor_of(tensor, "all_gather")
    init()
    host = t.numpy()
    if _world.size == 1:
        out = host[None]
    else:
        signatures = _world.comm.allgather((tuple(t._shape), t.dtype.str))
        if any(s != signatures[0] for s in signatures):
            raise ValueError("all_gather: the ranks' tensors differ in shape or dtype: " +
                             ", ".join(f"rank {r}: {list(s[0])} {np.dtype(s[1])}" for r, s in enumerate(signatures)))
        out = np.empty((_world.size,) + tuple(t._shape), dtype=t.dtype)
        _world.comm.Allgather(host, out)
    if stack:
        return Tensor.from_numpy(out, dtype=t.dtype, device=t.device)
    return [Tensor.from_numpy(part, dtype=t.dtype, device=t.device) for part in out]


# -- data parallelism ---------------------------------------------------------------------------------

class _Bucket:
    """Parameters whose gradients travel together: one device buffer, one read, one MPI request."""

    __slots__ = ("params", "offsets", "numel", "dtype", "device", "index")

    def __init__(self, index, params):
        self.index, self.params = index, params
        self.offsets, n = [], 0
        for p in params:
            self.offsets.append(n)
            n += p._data.numel()
        self.numel = n
        self.dtype, self.device = params[0]._data.dtype, params[0]._data.device


def _current_backward():
    """An object that identifies the backward() running in this thread (None outside one)."""
    stack = _callback_stack()
    return stack[-1] if stack else None


class _Done:
    """Stands in for the read event of a bucket with nothing to read."""

    def wait(self):
        pass

    @property
    def command_execution_status(self):
        import pyopencl as cl
        return cl.command_execution_status.COMPLETE


class _Reduction:
    """One step's reduction in flight: which buckets are complete, their reads and MPI requests."""

    def __init__(self, n_buckets):
        self.arrived = [set() for _ in range(n_buckets)]
        self.packed = [None] * n_buckets      # the gradients being read, kept alive for their reads
        self.sent = [None] * n_buckets        # host array the read fills
        self.events = [None] * n_buckets      # the read's event
        self.received = [None] * n_buckets    # host array MPI fills with the sum
        self.requests = []
        self.next = 0                         # buckets [0, next) have their MPI reduction started
        self.backward = None                  # which backward() started it (its callback list)


class DistributedDataParallel:
    """Average gradients across ranks during ``backward()`` (PyTorch's ``DistributedDataParallel``).

    ``module_or_parameters``: anything with ``.parameters()`` (calls go to it: ``ddp(x)`` is
    ``module(x)``) or an iterable of leaf Variables. At construction the parameters are checked to
    have the same shapes on every rank and overwritten with rank 0's values. Then every ``backward()``
    that reaches them returns with each ``.grad()`` averaged over the ranks:

    * The parameters are split, in reverse order, into buckets of about ``bucket_cap_mb`` megabytes.
    * When a bucket's last gradient has been accumulated (a post-accumulate hook), non-blocking reads
      of its gradients into one host array start; once they are done, a
      non-blocking ``MPI_Iallreduce`` of it starts, while backward goes on with the earlier layers.
    * When backward finishes (a :func:`~axonml_autograd.backward.queue_callback`), the remaining
      reads and reductions are waited for, and each sum is uploaded and divided by the world size
      into the gradients, on the device.

    A parameter that got no gradient on a rank counts as zeros there; after the reduction it holds
    the average (zeros if it was unused everywhere). Inside :meth:`no_sync` gradients only accumulate
    locally (gradient accumulation); :meth:`reduce_gradients` averages the current gradients at once.
    In a world of one the wrapper does nothing.

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.nn import MLP
    >>> model = MLP([3, 4, 2], seed=0)
    >>> ddp = DistributedDataParallel(model)
    >>> loss = ddp(Variable(Tensor.ones([5, 3]))).sum()
    >>> loss.backward()
    >>> model.parameters()[0].grad().shape()
    [3, 4]
    """

    def __init__(self, module_or_parameters, bucket_cap_mb: float = 25, broadcast_parameters: bool = True):
        from .variable import Variable

        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, numbers.Real) \
                or not bucket_cap_mb > 0 or not math.isfinite(bucket_cap_mb):
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        source = module_or_parameters
        if hasattr(source, "parameters") and callable(source.parameters):
            self.module = source
            params = list(source.parameters())
        else:
            self.module = None
            try:
                params = list(source)
            except TypeError:
                raise TypeError("DistributedDataParallel: expected a module (with .parameters()) or an iterable "
                                f"of Variables, got {type(source).__name__}") from None
        unique, seen = [], set()
        for k, p in enumerate(params):
            if not isinstance(p, Variable):
                raise TypeError(f"DistributedDataParallel: parameter {k} is a {type(p).__name__}, not a Variable")
            if id(p) in seen or not p.requires_grad():
                continue   # a shared parameter counts once; a frozen one gets no gradient to average
            if not p.is_leaf():
                raise ValueError(f"DistributedDataParallel: parameter {k} (shape {p.shape()}) is not a leaf")
            seen.add(id(p))
            unique.append(p)
        self._params = unique
        self.bucket_cap_mb = float(bucket_cap_mb)
        self._sync = True
        self._reduction: Optional[_Reduction] = None
        self._handles = []
        self.reductions = 0              # completed gradient reductions (for tests and tools)
        self.last_wait_seconds = 0.0     # time the last reduction spent waiting after backward's end
        self.last_started_early = 0
        init()
        self.world_size = _world.size
        self.rank = _world.rank
        self._buckets = self._make_buckets(unique, int(self.bucket_cap_mb * 2**20))
        self._bucket_of = {}
        for b in self._buckets:
            for p in b.params:
                self._bucket_of[id(p)] = b.index
        if self.world_size > 1:
            self._check_same_parameters()
            if broadcast_parameters:
                for p in unique:
                    broadcast(p._data, root=0)
            for p in unique:
                self._handles.append(p.register_post_accumulate_grad_hook(self._on_gradient))

    # -- the module's face ------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if self.module is None:
            raise TypeError("DistributedDataParallel: made from a list of parameters, so there is no module to call")
        return self.module(*args, **kwargs)

    def parameters(self) -> list:
        return list(self._params)

    def named_parameters(self, *args, **kwargs):
        if self.module is None or not hasattr(self.module, "named_parameters"):
            return iter((str(k), p) for k, p in enumerate(self._params))
        return self.module.named_parameters(*args, **kwargs)

    @property
    def buckets(self) -> list:
        """The parameters of each bucket, in reduction order."""
        return [list(b.params) for b in self._buckets]

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes in this block accumulate gradients locally without reducing them."""
        previous, self._sync = self._sync, False
        try:
            yield self
        finally:
            self._sync = previous

    def remove_hooks(self):
        """Stop reducing (the parameters keep their values and gradients)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- set-up ------------------------------------------------------------------------------------------
    @staticmethod
    def _make_buckets(params, cap_bytes):
        buckets, current, size = [], [], 0
        for p in reversed(params):   # backward produces the last layers' gradients first
            t = p._data
            if current and (size + t.numel() * t.dtype.itemsize > cap_bytes or t.dtype != current[0]._data.dtype
                            or t.device is not current[0]._data.device):
                buckets.append(_Bucket(len(buckets), current))
                current, size = [], 0
            current.append(p)
            size += t.numel() * t.dtype.itemsize
        if current:
            buckets.append(_Bucket(len(buckets), current))
        return buckets

    def _check_same_parameters(self):
        mine = [(tuple(p._data._shape), p._data.dtype.str) for p in self._params]
        everyone = _world.comm.allgather(mine)
        for r, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                def show(sig):
                    return f"{len(sig)} parameters " + ", ".join(f"{list(s)} {np.dtype(d)}" for s, d in sig[:6]) + \
                        (", ..." if len(sig) > 6 else "")
                raise ValueError(f"DistributedDataParallel: rank {r} has {show(theirs)}, but rank 0 has "
                                 f"{show(everyone[0])}; every rank must build the same model")

    # -- during backward -----------------------------------------------------------------------------------
    def _on_gradient(self, p):
        if not self._sync:
            return
        red = self._reduction
        running = _current_backward()
        if red is not None and red.backward is not running:
            red = None   # left over from a backward that raised before it finished: start afresh
        if red is None:
            red = self._reduction = _Reduction(len(self._buckets))
            red.backward = running
            queue_callback(self._finish)
        index = self._bucket_of[id(p)]
        arrived = red.arrived[index]
        arrived.add(id(p))
        bucket = self._buckets[index]
        if len(arrived) == len(bucket.params) and red.events[index] is None:
            self._read(red, bucket)
        self._progress(red, block=False)

    def _read(self, red, bucket):
        """Start the non-blocking reads of the bucket's gradients into one host array.

        One read per gradient, each into its slice of the array (no packing kernel): the queue is in
        order, so the last read's event completing means the whole bucket has arrived.
        """
        host = np.empty(bucket.numel, dtype=bucket.dtype)
        kept, event = [], None
        for p, offset in zip(bucket.params, bucket.offsets):
            g = p._grad
            if g is None:   # no gradient reached it on this rank: zeros stand in
                host[offset:offset + p._data.numel()] = 0
                continue
            if g.dtype != bucket.dtype:
                g = g.astype(bucket.dtype)
            kept.append(g)   # alive until the read is done
            if g.numel():
                event = launch.read_async(bucket.device, host[offset:offset + g.numel()], g.buffer)
        red.packed[bucket.index], red.sent[bucket.index] = kept, host
        red.events[bucket.index] = event if event is not None else _Done()

    def _progress(self, red, block):
        """Start the MPI reductions of the buckets whose reads are done, strictly in bucket order
        (every rank must start its collectives in the same order); ``block`` waits for each read."""
        import pyopencl as cl

        MPI = _world.MPI
        while red.next < len(self._buckets):
            k = red.next
            event = red.events[k]
            if event is None:
                if not block:
                    break
                self._read(red, self._buckets[k])   # a bucket with a gradient missing: zeros stand in
                event = red.events[k]
            if block:
                event.wait()
            elif event.command_execution_status != cl.command_execution_status.COMPLETE:
                break
            out = np.empty_like(red.sent[k])
            red.received[k] = out
            red.requests.append(_world.comm.Iallreduce(red.sent[k], out, op=MPI.SUM))
            red.next += 1
        if red.requests and not block:
            MPI.Request.Testall(red.requests)   # MPI progresses non-blocking collectives inside its calls

    def _finish(self):
        """At the end of backward: wait for every bucket's reduction and write the averages back."""
        red, self._reduction = self._reduction, None
        if red is None:
            return
        t0 = time.perf_counter()
        self.last_started_early = red.next   # buckets whose MPI reduction began while backward ran
        self._progress(red, block=True)
        _world.MPI.Request.Waitall(red.requests)
        self.last_wait_seconds = time.perf_counter() - t0
        size = float(self.world_size)
        for bucket in self._buckets:
            total = Tensor.empty([bucket.numel], bucket.dtype, bucket.device)
            launch.upload(bucket.device, total.buffer, red.received[bucket.index])   # a fresh array: never changed
            for p, offset in zip(bucket.params, bucket.offsets):
                shape = p._data._shape
                part = View(total, shape, contiguous_strides(shape), offset)
                g = p._grad
                if g is not None and g.dtype == bucket.dtype:
                    T.elementwise("a / s", [part], scalars={"s": size}, out=g.view(), op="all_reduce")
                else:
                    p.set_grad(T.elementwise("a / s", [part], scalars={"s": size}, op="all_reduce"))
        if self._buckets:
            launch.flush(self._buckets[0].device)   # the updated gradients go to the device now
        self.reductions += 1

    def reduce_gradients(self):
        """Average the parameters' current gradients across ranks now (after backward passes run
        under :meth:`no_sync`, or outside ``capture()`` between captured pieces of a step)."""
        if self.world_size == 1 or not self._buckets:
            return
        if self._reduction is not None:
            raise RuntimeError("reduce_gradients: a reduction started by backward is still in flight")
        self._reduction = _Reduction(len(self._buckets))
        self._finish()


# -- sharding indices -----------------------------------------------------------------------------------

class DistributedSampler:
    """This rank's share of the indices ``0 .. n-1`` (PyTorch's ``DistributedSampler`` semantics).

    Each epoch the indices are shuffled by ``(seed, epoch)`` (the same order on every rank), padded by
    repeating the first ones until they divide evenly (or, with ``drop_last``, cut to a multiple of
    the number of replicas), and dealt out: rank ``r`` gets positions ``r, r + R, r + 2R, ...``. So
    every rank has ``len(sampler)`` indices and the ranks' shares are disjoint (but for the padding)
    and together cover every index. Call :meth:`set_epoch` at the start of each epoch for a new order.

    >>> s = DistributedSampler(10, num_replicas=3, rank=0, shuffle=False)
    >>> list(s), len(s)
    ([0, 3, 6, 9], 4)
    >>> list(DistributedSampler(10, num_replicas=3, rank=2, shuffle=False))
    [2, 5, 8, 1]
    >>> list(DistributedSampler(10, num_replicas=3, rank=2, shuffle=False, drop_last=True))
    [2, 5, 8]
    """

    def __init__(self, n, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if hasattr(n, "__len__") and not isinstance(n, numbers.Integral):
            n = len(n)   # a data set
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"DistributedSampler: n must be a non-negative integer (or a sized data set), got {n!r}")
        if num_replicas is None or rank is None:
            init()
        if num_replicas is None:
            num_replicas = _world.size
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, numbers.Integral) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive integer, got {num_replicas!r}")
        if rank is None:
            rank = _world.rank
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in [0, {num_replicas}), got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"DistributedSampler: seed must be an integer, got {seed!r}")
        self.n, self.num_replicas, self.rank = int(n), int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        if self.drop_last and self.n % self.num_replicas:
            self.num_samples = (self.n - self.num_replicas) // self.num_replicas + 1 if self.n >= self.num_replicas \
                else 0
        else:
            self.num_samples = -(-self.n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int):
        """Use the order of ``epoch`` (every rank must call it with the same number)."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"DistributedSampler.set_epoch: epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle \
            else np.arange(self.n)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.total_size > self.n and self.n:
            order = np.resize(order, self.total_size)   # repeats from the start, as many times as needed
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(n={self.n}, num_replicas={self.num_replicas}, rank={self.rank}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch})")
