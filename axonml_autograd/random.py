"""Reproducible random tensors generated on the device by a counter-based generator (Philox4x32-10).

Element ``i`` depends only on ``(seed, offset, i)``: there is no hidden generator state, so the same
seed gives the same numbers in any process, on any device, for any launch size. The generator works
in 32-bit integers only; uniform numbers are exact functions of its bits, normal numbers go through
``log``/``sqrt``/``sin``/``cos`` and may differ in the last bit between devices.

Layout (what a host-side reimplementation needs): the 64-bit seed is the key ``(seed & 0xffffffff,
seed >> 32)``; block ``b`` is the counter ``(offset + b)`` split the same way into the first two words,
the last two words zero. float32 takes the four output words of block ``b`` as elements ``4b..4b+3``
(24 high bits each); float64 takes two words per element (27 + 26 high bits), so elements ``2b, 2b+1``.
A normal pair comes from a uniform pair ``(u1, u2)`` by Box–Muller with ``u1`` in ``(0, 1]``.

``offset`` is a separate stream position: numbers drawn at ``offset=k`` continue those at ``offset=0``
for a tensor of ``k`` blocks, and disjoint offsets never overlap.

>>> from axonml_autograd.random import uniform
>>> a = uniform([2, 3], seed=7)
>>> a.to_vec() == uniform([2, 3], seed=7).to_vec()
True
>>> all(0.0 <= v < 1.0 for v in a.to_vec())
True
"""

from __future__ import annotations

import math
import numbers
import threading

import numpy as np

from . import kernels, launch
from .device import get_device
from .tensor import Tensor, check_index32
from .elementwise import _local_size
from .shapes import _parse_shape

_TEMPLATE = "philox.cl.mako"
_U64 = 2**64


def _check_u64(value, what) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{what}: expected a non-negative int below 2**64, got {value!r}")
    value = int(value)
    if not 0 <= value < _U64:
        raise ValueError(f"{what}: expected a non-negative int below 2**64, got {value}")
    return value


def _check_real(value, what) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what}: expected a finite number, got {value}")
    return value


def _check_float_dtype(t: Tensor, op) -> None:
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: random numbers need a float32 or float64 tensor, got {t.dtype}")


# -- the per-device generator: where calls without a seed draw from ---------------------------------------

DEFAULT_SEED = 67280421310721   # a fixed start (torch's), so a program without manual_seed repeats itself


class Generator:
    """A device's stream of fresh numbers: a seed and the next unused Philox block.

    Each call without ``seed=`` takes the next ``blocks`` blocks, so successive calls never repeat;
    the counter lives on the host (a draw needs no device read) and ``manual_seed`` resets it.
    """

    def __init__(self, seed=DEFAULT_SEED):
        self.seed, self.offset = seed, 0
        self._lock = threading.Lock()

    def draw(self, blocks: int):
        with self._lock:
            offset = self.offset
            self.offset = (offset + blocks) % _U64
            return self.seed, offset


def generator(device=None) -> Generator:
    dev = get_device(device)
    gen = dev.__dict__.get("_generator")
    if gen is None:
        gen = dev.__dict__.setdefault("_generator", Generator())
    return gen


def manual_seed(seed, device=None) -> Generator:
    """Restart the generator of ``device`` (default: the default device) at ``seed``."""
    gen = generator(device)
    with gen._lock:
        gen.seed, gen.offset = _check_u64(seed, "manual_seed seed"), 0
    return gen


def _words(value):
    return np.uint32(value & 0xFFFFFFFF).tobytes(), np.uint32(value >> 32).tobytes()


def _fill(t: Tensor, seed, offset, dist, a, b, op) -> Tensor:
    _check_float_dtype(t, op)
    fresh = seed is None
    if not fresh:
        seed = _check_u64(seed, f"{op} seed")
    offset = _check_u64(offset, f"{op} offset")
    n = t.numel()
    if n == 0:
        return t
    check_index32(op, n)
    dev = t.device
    per_block = 4 if t.dtype == np.float32 else 2
    blocks = -(-n // per_block)
    if fresh:
        gen = generator(dev)
        seed, drawn = gen.draw(blocks)
        offset = (offset + drawn) % _U64
    knl = kernels.get_kernel(dev, _TEMPLATE, "philox_fill", ctype=kernels.ctype(t.dtype), dist=dist)
    local = kernels.fit_local(dev, knl, _local_size(dev))
    T = t.dtype.type
    args = kernels.launch(dev, knl, (kernels.round_up(blocks, local),), (local,),
                          t.buffer, np.int32(n),
                          np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32),
                          np.uint32(offset & 0xFFFFFFFF), np.uint32(offset >> 32),
                          T(a), T(b), dynamic=fresh)
    cap = launch.active_capture() if fresh else None
    if cap is not None:
        # A replay must draw fresh numbers too (a dropout mask that never changes would be wrong):
        # each replay takes the next blocks of the generator and writes their offset into the launch.
        base = offset - drawn

        def redraw():
            seed_now, start = gen.draw(blocks)
            args[2:4] = _words(seed_now)
            args[4:6] = _words((base + start) % _U64)

        cap.on_replay(redraw)
    t._version += 1
    return t


def _check_range(low, high, op):
    low, high = _check_real(low, f"{op} low"), _check_real(high, f"{op} high")
    if low > high:
        raise ValueError(f"{op}: low must not exceed high, got low={low}, high={high}")
    return low, high


def _check_normal(mean, std, op):
    mean, std = _check_real(mean, f"{op} mean"), _check_real(std, f"{op} std")
    if std < 0:
        raise ValueError(f"{op}: std must be non-negative, got {std}")
    return mean, std


def _new(shape, dtype, device, op) -> Tensor:
    shape = _parse_shape(shape, f"{op} shape")
    check_index32(op, math.prod(shape))   # as _fill does, but before allocating
    t = Tensor(shape, dtype, get_device(device))
    _check_float_dtype(t, op)
    return t


def uniform_(t: Tensor, seed, low=0.0, high=1.0, offset=0) -> Tensor:
    """Fill ``t`` in place with uniform numbers in ``[low, high)``; returns ``t``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"uniform_: expected a Tensor, got {type(t).__name__}")
    low, high = _check_range(low, high, "uniform_")
    return _fill(t, seed, offset, "uniform", low, high, "uniform_")


def normal_(t: Tensor, seed, mean=0.0, std=1.0, offset=0) -> Tensor:
    """Fill ``t`` in place with normal numbers of the given mean and standard deviation; returns ``t``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"normal_: expected a Tensor, got {type(t).__name__}")
    mean, std = _check_normal(mean, std, "normal_")
    return _fill(t, seed, offset, "normal", mean, std, "normal_")


def uniform(shape, seed, dtype="float32", device=None, low=0.0, high=1.0, offset=0) -> Tensor:
    """A new tensor of uniform numbers in ``[low, high)``.

    >>> [2.0 <= v < 3.0 for v in uniform([3], seed=1, low=2.0, high=3.0).to_vec()]
    [True, True, True]
    """
    low, high = _check_range(low, high, "uniform")
    seed = None if seed is None else _check_u64(seed, "uniform seed")
    offset = _check_u64(offset, "uniform offset")
    t = _new(shape, dtype, device, "uniform")
    t = _fill(t, seed, offset, "uniform", low, high, "uniform")
    t._version = 0  # a fresh tensor, not one that was changed in place
    return t


def normal(shape, seed, dtype="float32", device=None, mean=0.0, std=1.0, offset=0) -> Tensor:
    """A new tensor of normal numbers (Box–Muller on Philox uniforms).

    >>> normal([4], seed=3, dtype="float32").shape()
    [4]
    """
    mean, std = _check_normal(mean, std, "normal")
    seed = None if seed is None else _check_u64(seed, "normal seed")
    offset = _check_u64(offset, "normal offset")
    t = _new(shape, dtype, device, "normal")
    t = _fill(t, seed, offset, "normal", mean, std, "normal")
    t._version = 0
    return t
