"""Datasets and batches: :class:`TensorDataset`, :class:`DataLoader`, :func:`randperm`, and
:class:`DistributedSampler` (each rank's share of the indices when training over MPI).

Device-resident data (a TensorDataset of device Tensors or Variables) is uploaded once, by you; each
epoch the loader draws a permutation on the device (random keys from the device generator, sorted by
a bitonic network: ``cl_kernels/shuffle.cl.mako``) and gathers every batch on the device with
``index_select``. Nothing is read back and nothing is uploaded again, so the host runs ahead of
the device through a whole epoch.

Host data (a TensorDataset of numpy arrays, or any object with ``__len__`` and ``__getitem__``)
is batched on the host and each batch uploaded without waiting for the device (the queue's
non-blocking upload), so the next batch's copy overlaps the current step.

>>> import numpy as np
>>> from axonml_autograd import Tensor
>>> x = Tensor.from_numpy(np.arange(10, dtype=np.float32).reshape(5, 2))
>>> y = Tensor.from_numpy(np.array([0, 1, 0, 1, 1], dtype=np.int32))
>>> loader = DataLoader(TensorDataset(x, y), batch_size=2, shuffle=True, seed=0)
>>> len(loader), sorted(v for _xb, yb in loader for v in yb.to_vec())
(3, [0, 0, 1, 1, 1])
"""

from __future__ import annotations

import numbers
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import kernels, random
from .device import get_device
from .tensor import Tensor
from .elementwise_kernels import _local_size

__all__ = ["TensorDataset", "DataLoader", "DistributedSampler", "randperm", "default_collate"]

_TEMPLATE = "shuffle.cl.mako"


def _blocks(n: int) -> int:
    """Philox blocks one permutation of n takes (2n float32 uniforms, four per block)."""
    return -(-2 * n // 4)


def randperm(n, seed=None, device=None, offset=0, generator=None) -> Tensor:
    """A random permutation of ``0 .. n-1`` as an int32 device Tensor, made on the device.

    Without ``seed`` the numbers come from the device generator (``manual_seed`` makes them
    repeatable; successive calls differ). With ``seed`` the permutation depends only on
    ``(seed, offset)``; ``offset`` in Philox blocks, one permutation of ``n`` using ``ceil(n / 2)``.
    No host read, no upload: it can be part of a captured function (each replay draws anew when
    ``seed`` is None). ``generator``: a :class:`random.Generator` of your own instead of the device's.

    >>> p = randperm(6, seed=3)
    >>> sorted(p.to_vec()), p.to_vec() == randperm(6, seed=3).to_vec()
    ([0, 1, 2, 3, 4, 5], True)
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise TypeError(f"randperm: n must be a non-negative int, got {n!r}")
    n = int(n)
    if n >= 2 ** 30:
        raise ValueError(f"randperm: n must be below 2**30, got {n}")
    dev = get_device(device)
    size = 1 << max(n - 1, 0).bit_length()          # the next power of two >= n
    idx = Tensor._wrap((size,), np.dtype(np.int32), dev)
    if n == 0:
        return Tensor((0,), "int32", dev)
    u = Tensor._wrap((2 * n,), np.dtype(np.float32), dev)
    if generator is not None and seed is not None:
        raise ValueError("randperm: give a generator or a seed, not both")
    if seed is None:
        random._fill(u, None, offset, "uniform", 0.0, 1.0, "randperm", gen=generator)
    else:
        random.uniform_(u, seed, offset=offset)
    hi = Tensor._wrap((size,), np.dtype(np.uint32), dev)
    lo = Tensor._wrap((size,), np.dtype(np.uint32), dev)
    local = _local_size(dev)
    kernels.launch(dev, kernels.get_kernel(dev, _TEMPLATE, "keys"), (kernels.round_up(size, local),), (local,),
                   u=u, hi=hi, lo=lo, idx=idx, n=n, size=size)
    step = kernels.get_kernel(dev, _TEMPLATE, "bitonic_step")
    pairs = size // 2
    gsize = (kernels.round_up(max(pairs, 1), local),)
    k = 2
    while k <= size:
        j = k // 2
        while j >= 1:
            kernels.launch(dev, step, gsize, (local,), hi=hi, lo=lo, idx=idx, j=j, k=k, pairs=pairs)
            j //= 2
        k *= 2
    # The first n entries are the permutation (the padding sorted last); the tensor shares the buffer.
    return Tensor((n,), "int32", dev, _storage=idx._storage)


def _as_tensor(x):
    """(Tensor, was it a Variable) for a device tensor, or None for anything else."""
    from .variable import Variable
    if isinstance(x, Variable):
        return x.data(), True
    if isinstance(x, Tensor):
        return x, False
    return None


class TensorDataset:
    """Samples made of rows of tensors that share their first dimension: ``dataset[i]`` is
    ``(t0[i], t1[i], ...)``.

    The tensors are all device Tensors/Variables (device-resident data: the :class:`DataLoader`
    gathers batches on the device) or all numpy arrays (host data: the loader uploads each batch).

    >>> import numpy as np
    >>> ds = TensorDataset(np.zeros((4, 3)), np.arange(4))
    >>> len(ds), [a.shape for a in ds[2]]
    (4, [(3,), ()])
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor")
        devs = [_as_tensor(t) for t in tensors]
        if all(d is not None for d in devs):
            self.on_device = True
            self.tensors = tuple(t for t, _ in devs)
            self._variables = tuple(v for _, v in devs)
            first_dev = self.tensors[0].device
            for k, t in enumerate(self.tensors):
                if t.device is not first_dev:
                    raise ValueError(f"TensorDataset: tensor {k} is on {t.device.name}, tensor 0 on {first_dev.name}")
        elif all(d is None for d in devs):
            self.on_device = False
            arrays = []
            for k, t in enumerate(tensors):
                if not isinstance(t, np.ndarray):
                    raise TypeError(f"TensorDataset: tensor {k} is a {type(t).__name__}; give device Tensors/"
                                    "Variables or numpy arrays")
                arrays.append(t)
            self.tensors = tuple(arrays)
            self._variables = (False,) * len(arrays)
        else:
            raise TypeError("TensorDataset: mix of device tensors and host arrays; give all of one kind")
        shapes = [list(t.shape()) if self.on_device else list(t.shape) for t in self.tensors]
        for k, s in enumerate(shapes):
            if not s:
                raise ValueError(f"TensorDataset: tensor {k} is 0-d; every tensor needs a first (sample) dimension")
            if s[0] != shapes[0][0]:
                raise ValueError(f"TensorDataset: tensors must share their first dimension, got shapes {shapes[0]} "
                                 f"(tensor 0) and {s} (tensor {k})")
        self._len = shapes[0][0]

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        return tuple(t[i] for t in self.tensors)


def default_collate(samples, device=None):
    """torch's ``default_collate``: a list of samples becomes one batch. Samples that are tuples or lists
    give a list with one batch per field, dicts a dict; numbers and numpy arrays are stacked on the host
    and uploaded (without waiting) as one Tensor on ``device``; device Tensors/Variables are stacked on
    the device.

    >>> [t.to_vec() for t in default_collate([(1.0, 0), (2.0, 1)])]
    [[1.0, 2.0], [0, 1]]
    """
    from .variable import Variable
    if not samples:
        raise ValueError("default_collate: expected a non-empty list of samples")
    first = samples[0]
    if isinstance(first, dict):
        return {k: default_collate([s[k] for s in samples], device) for k in first}
    if isinstance(first, (tuple, list)):
        if any(len(s) != len(first) for s in samples):
            raise ValueError("default_collate: every sample must have the same number of fields")
        return [default_collate([s[k] for s in samples], device) for k in range(len(first))]
    if isinstance(first, (Tensor, Variable)):
        from .variable_ops import VariableOps
        stacked = VariableOps.stack([s if isinstance(s, Variable) else Variable(s) for s in samples], 0)
        return stacked if isinstance(first, Variable) else stacked.data()
    return Tensor.from_numpy(np.stack([np.asarray(s) for s in samples]), device=device)


def _int(value, what, low) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what}: expected an int, got {value!r}")
    value = int(value)
    if value < low:
        raise ValueError(f"{what}: expected an int >= {low}, got {value}")
    return value


class DataLoader:
    """Batches of a dataset, in order or shuffled, as PyTorch's ``DataLoader`` (no worker processes).

    ``dataset``: a :class:`TensorDataset` (device tensors or numpy arrays), or any object with
    ``__len__`` and ``__getitem__`` returning a tuple of array-likes (host data, stacked per batch).
    Each batch is a list with one tensor per dataset field, of the fields' kind (Variables without
    grad for Variables, Tensors otherwise; host data becomes Tensors on ``device``).

    ``shuffle=True`` draws a new order each epoch (each ``iter(loader)``): on the device for device
    data (see :func:`randperm`), with numpy for host data. ``seed`` makes the sequence of orders
    repeatable (epoch ``e`` uses its own part of the seed's stream; ``loader.epoch`` says which is
    next); without it the orders come from the device generator (``manual_seed``). ``drop_last``
    drops a last, smaller batch. ``sampler``: an iterable of sample indices, read afresh each epoch
    (e.g. a distributed sampler's share); its indices are uploaded once per epoch, without blocking,
    and the batches gathered from them; it excludes ``shuffle``.

    Batches are data, not part of any graph. Device batches are gathered copies: the dataset's
    tensors are never changed.

    torch's options: ``collate_fn(samples)`` makes each batch from the list of samples
    ``[dataset[i] for i in batch]`` (device data is then indexed sample by sample, and a device order
    read once per epoch); ``generator`` (a :class:`random.Generator`) draws the orders instead of
    the device's generator (it excludes ``seed``); ``num_workers`` > 0 prepares host batches
    (gathering, collating, uploading) in that many background threads, ``prefetch_factor`` batches
    ahead per thread, and hands them out in order: the same batches as ``num_workers=0``. Device data
    needs no workers (its batches are gathered on the device without waiting) and ignores them.
    ``pin_memory`` is accepted and does nothing (uploads already do not wait for the device).

    >>> import numpy as np
    >>> loader = DataLoader(TensorDataset(np.arange(5.0)), batch_size=2)
    >>> [b.to_vec() for (b,) in loader]
    [[0.0, 1.0], [2.0, 3.0], [4.0]]
    >>> len(DataLoader(TensorDataset(np.arange(5.0)), batch_size=2, drop_last=True))
    2
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, sampler=None, device=None,
                 *, collate_fn=None, generator=None, num_workers=0, pin_memory=False, prefetch_factor=2):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = _int(batch_size, "DataLoader batch_size", 1)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if sampler is not None and self.shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True exclude each other (the sampler picks the order)")
        if sampler is not None and not hasattr(sampler, "__iter__"):
            raise TypeError(f"DataLoader: sampler must be an iterable of indices, got {type(sampler).__name__}")
        self.sampler = sampler
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 64:
                raise ValueError(f"DataLoader seed: expected an int in [0, 2**64), got {seed!r}")
            seed = int(seed)
        self.seed = seed
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {collate_fn!r}")
        self.collate_fn = collate_fn
        if generator is not None and not isinstance(generator, random.Generator):
            raise TypeError(f"DataLoader: generator must be an axonml_autograd.random.Generator, got {generator!r}")
        if generator is not None and seed is not None:
            raise ValueError("DataLoader: give a generator or a seed, not both")
        self.generator = generator
        self.num_workers = _int(num_workers, "DataLoader num_workers", 0)
        self.prefetch_factor = _int(prefetch_factor, "DataLoader prefetch_factor", 1)
        self.pin_memory = bool(pin_memory)   # accepted for torch's signature; uploads never wait anyway
        self.epoch = 0
        self.on_device = isinstance(dataset, TensorDataset) and dataset.on_device
        self.device = dataset.tensors[0].device if self.on_device else get_device(device)

    def _count(self) -> int:
        if self.sampler is None:
            return len(self.dataset)
        if not hasattr(self.sampler, "__len__"):
            raise TypeError("DataLoader: len() needs a sampler with __len__")
        return len(self.sampler)

    def __len__(self):
        n = self._count()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        n = len(self.dataset)
        order = None       # None: 0 .. n-1 in turn; else a device int32 Tensor or a host int array
        if self.sampler is not None:
            order = self._sampled(n)
            count = len(order) if not isinstance(order, Tensor) else order.numel()
        else:
            count = n
            if self.shuffle:
                order = self._permutation(n, epoch)
        b = self.batch_size
        stop = count - count % b if self.drop_last else count
        return self._batches(order, count, stop, b)

    def _batches(self, order, count, stop, b):
        if self.collate_fn is not None and isinstance(order, Tensor):
            order = order.numpy()   # samples are picked one by one: the device order comes to the host once
        make = self._device_batch if self.on_device and self.collate_fn is None else self._host_batch
        starts = range(0, stop, b)
        if self.num_workers == 0 or (self.on_device and self.collate_fn is None):
            for start in starts:
                yield make(order, start, min(b, count - start))
            return
        yield from self._threaded(make, order, count, starts, b)

    def _threaded(self, make, order, count, starts, b):
        """Batches made by ``num_workers`` threads, at most ``num_workers * prefetch_factor`` ahead,
        handed out in order (a worker's exception is raised at its batch)."""
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="DataLoader")
        pending = deque()
        todo = iter(starts)
        try:
            for start in todo:
                pending.append(pool.submit(make, order, start, min(b, count - start)))
                if len(pending) >= self.num_workers * self.prefetch_factor:
                    break
            while pending:
                batch = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(make, order, nxt, min(b, count - nxt)))
                yield batch
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)

    # -- orders ---------------------------------------------------------------------------------------
    def _permutation(self, n, epoch):
        if self.on_device:
            if self.generator is not None:
                return randperm(n, device=self.device, generator=self.generator)
            if self.seed is None:
                return randperm(n, device=self.device)
            return randperm(n, seed=self.seed, device=self.device, offset=epoch * _blocks(n))
        if self.seed is None:
            # A host order still follows the device generator, so manual_seed repeats it too (its
            # position is on the device: one small read per epoch, for an order made on the host).
            gen = self.generator if self.generator is not None else random.generator(self.device)
            gen_seed, offset = gen.draw(1)
            rng = np.random.default_rng([gen_seed, offset])
        else:
            rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(n)

    def _sampled(self, n):
        indices = np.fromiter((_int(i, "DataLoader sampler index", -n) for i in self.sampler), dtype=np.int64)
        bad = (indices < -n) | (indices >= n)
        if bad.any():
            raise IndexError(f"DataLoader: sampler index {int(indices[bad][0])} is out of range for a dataset of {n}")
        indices = np.where(indices < 0, indices + n, indices)
        if self.on_device:   # one upload per epoch, not waited for; batches index into it on the device
            return Tensor.from_numpy(indices.astype(np.int32), dtype="int32", device=self.device)
        return indices

    # -- batches --------------------------------------------------------------------------------------
    def _device_batch(self, order, start, size):
        from .functions.indexing import index_select
        from .variable import Variable
        ds = self.dataset
        out = []
        if order is None:
            rows = [t.narrow(0, start, size) for t in ds.tensors]
        else:
            ids = order.narrow(0, start, size)
            rows = [index_select(Variable(t), 0, ids).data() for t in ds.tensors]
        for t, was_variable in zip(rows, ds._variables):
            out.append(Variable(t) if was_variable else t)
        return out

    def _host_batch(self, order, start, size):
        ids = np.arange(start, start + size) if order is None else order[start:start + size]
        ds = self.dataset
        if self.collate_fn is not None:
            return self.collate_fn([ds[int(i)] for i in ids])
        if isinstance(ds, TensorDataset):
            fields = [a[ids] for a in ds.tensors]
        else:
            samples = [ds[int(i)] for i in ids]
            if samples and isinstance(samples[0], dict):   # torch's default collation of dict samples
                return default_collate(samples, self.device)
            if not all(isinstance(s, (tuple, list)) for s in samples):
                samples = [(s,) for s in samples]
            fields = [np.stack([np.asarray(s[k]) for s in samples]) for k in range(len(samples[0]))]
        # from_numpy keeps a private copy and uploads it without waiting for the device.
        return [Tensor.from_numpy(f, device=self.device) for f in fields]

    def __repr__(self):
        kind = "device" if self.on_device else "host"
        return (f"DataLoader({kind} data of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed})")


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
            from .distributed import world    # not at the top: the distributed package imports this module
            num_replicas = world.world_size() if num_replicas is None else num_replicas
            rank = world.rank() if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, numbers.Integral) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive integer, got {num_replicas!r}")
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
