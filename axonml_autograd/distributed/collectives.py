"""Collectives on tensors across the MPI world: ``all_reduce``, ``broadcast``, ``all_gather``, ``barrier``.

Each is a host round trip (read, MPI, upload): meant between steps (metrics, set-up), not inside one.
In a world of one they return their input unchanged.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import launch
from ..tensor import Tensor
from . import world

__all__ = ["barrier", "all_reduce", "broadcast", "all_gather"]


def barrier() -> None:
    """Wait until every rank has reached this call."""
    w = world.current()
    if w.size > 1:
        w.comm.Barrier()


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
    w = world.current()
    if w.size == 1:
        return tensor
    MPI = w.MPI
    host = t.numpy()
    w.comm.Allreduce(MPI.IN_PLACE, host, op={"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op])
    if op == "mean":
        host /= w.size
    _write(t, host)
    return tensor


def broadcast(tensor, root: int = 0):
    """Overwrite ``tensor`` (a Tensor or a Variable's data) on every rank with ``root``'s values; returns it.

    >>> broadcast(Tensor.from_vec([3.0], [1])).to_vec()
    [3.0]
    """
    t = _tensor_of(tensor, "broadcast")
    w = world.current()
    if isinstance(root, bool) or not isinstance(root, numbers.Integral) or not 0 <= root < w.size:
        raise ValueError(f"broadcast: root must be a rank in [0, {w.size}), got {root!r}")
    if w.size == 1:
        return tensor
    host = t.numpy() if w.rank == root else np.empty(t._shape, dtype=t.dtype)
    w.comm.Bcast(host, root=int(root))
    if w.rank != root:
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
    w = world.current()
    host = t.numpy()
    if w.size == 1:
        out = host[None]
    else:
        signatures = w.comm.allgather((tuple(t._shape), t.dtype.str))
        if any(s != signatures[0] for s in signatures):
            raise ValueError("all_gather: the ranks' tensors differ in shape or dtype: " +
                             ", ".join(f"rank {r}: {list(s[0])} {np.dtype(s[1])}" for r, s in enumerate(signatures)))
        out = np.empty((w.size,) + tuple(t._shape), dtype=t.dtype)
        w.comm.Allgather(host, out)
    if stack:
        return Tensor.from_numpy(out, dtype=t.dtype, device=t.device)
    return [Tensor.from_numpy(part, dtype=t.dtype, device=t.device) for part in out]

