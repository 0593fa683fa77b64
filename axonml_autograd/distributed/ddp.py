"""``DistributedDataParallel``: gradients averaged across ranks in buckets while backward goes on.

See the class's docstring for the schedule (post-accumulate hooks start each bucket's read and its
non-blocking ``MPI_Iallreduce``; a backward callback waits for the rest and writes the averages).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from typing import Optional

import numpy as np

from .. import launch
from ..elementwise_kernels import elementwise
from ..backward import _callback_stack, queue_callback
from ..tensor import Tensor, View
from ..shapes import contiguous_strides
from . import world
from .collectives import broadcast

__all__ = ["DistributedDataParallel"]


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
    [4, 3]
    """

    def __init__(self, module_or_parameters, bucket_cap_mb: float = 25, broadcast_parameters: bool = True):
        from ..variable import Variable

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
        w = world.current()
        self.world_size = w.size
        self.rank = w.rank
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
        everyone = world.current().comm.allgather(mine)
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

        MPI = world.current().MPI
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
            red.requests.append(world.current().comm.Iallreduce(red.sent[k], out, op=MPI.SUM))
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
        world.current().MPI.Request.Waitall(red.requests)
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
                    elementwise("a / s", [part], scalars={"s": size}, out=g.view(), op="all_reduce")
                else:
                    p.set_grad(elementwise("a / s", [part], scalars={"s": size}, op="all_reduce"))
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

