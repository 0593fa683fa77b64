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
from .elementwise_kernels import _local_size
from .shapes import _parse_shape

_TEMPLATE = "philox.cl.mako"
_COUNTERS = "counters.cl.mako"
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
    """A device's stream of fresh numbers: a seed and the next unused Philox block, on the device.

    The state is four 32-bit words in a device buffer, ``(seed_lo, seed_hi, offset_lo, offset_hi)``.
    Each draw without ``seed=`` reads its key and position there and then advances the position by
    the blocks it used, with a small kernel (``advance_counters``) after the fill: successive draws
    never repeat, and a captured replay takes the next numbers by itself, as the eager calls would.
    A draw never reads the device; reading ``seed``/``offset`` (or :meth:`draw` for host code) does.
    """

    def __init__(self, device, seed=DEFAULT_SEED):
        self.device = device
        self._lock = threading.Lock()   # a fill and its advance are enqueued as a pair
        with launch.not_recording():    # the generator outlives any capture it is first used in
            self.state = Tensor.zeros([4], "int32", device)
            self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Set the key to ``seed`` and the position to 0 (a fill on the device's stream, recorded
        by a capture like any command: a replay of a function that reseeds reseeds too)."""
        words = np.array([seed & 0xFFFFFFFF, seed >> 32, 0, 0], np.uint32)
        launch.fill(self.device, self.state.buffer, words, words.nbytes)

    def advance(self, blocks: int) -> None:
        knl = kernels.get_kernel(self.device, _COUNTERS, "advance_counters")
        lo, hi = _words(blocks % _U64)
        # The offset is counter 1 of the state (the seed is counter 0).
        kernels.launch(self.device, knl, (1,), (1,), counters=self.state, first=1, count=1, add_lo=lo, add_hi=hi)

    def _read(self):
        words = self.state.numpy().view(np.uint32).astype(np.uint64)
        return int(words[0] | (words[1] << np.uint64(32))), int(words[2] | (words[3] << np.uint64(32)))

    @property
    def seed(self) -> int:
        """The key (reads the device)."""
        return self._read()[0]

    @property
    def offset(self) -> int:
        """The next unused block (reads the device)."""
        return self._read()[1]

    def draw(self, blocks: int):
        """``(seed, offset)`` for numbers made on the host, taking ``blocks`` blocks: reads the device."""
        with self._lock:
            seed, offset = self._read()
            self.advance(blocks)
        return seed, offset

    def get_state(self) -> Tensor:
        """A device copy of the state, for :meth:`set_state` (no host read)."""
        copy = Tensor._wrap((4,), self.state.dtype, self.device)
        launch.copy(self.device, copy.buffer, self.state.buffer, 16)
        return copy

    def set_state(self, saved: Tensor) -> None:
        launch.copy(self.device, self.state.buffer, saved.buffer, 16)


def generator(device=None) -> Generator:
    dev = get_device(device)
    gen = dev.__dict__.get("_generator")
    if gen is None:
        with _make_lock:
            gen = dev.__dict__.get("_generator")
            if gen is None:
                gen = dev.__dict__["_generator"] = Generator(dev)
    return gen


_make_lock = threading.Lock()


def manual_seed(seed, device=None) -> Generator:
    """Restart the generator of ``device`` (default: the default device) at ``seed``."""
    seed = _check_u64(seed, "manual_seed seed")
    gen = generator(device)
    with gen._lock:
        gen.reseed(seed)
    return gen


def _words(value):
    """A 64-bit count as its (low, high) 32-bit words: the kernels have no 64-bit integers."""
    return value & 0xFFFFFFFF, value >> 32


def _fill(t: Tensor, seed, offset, dist, a, b, op, gen=None) -> Tensor:
    """Fill ``t``: from ``seed`` when given, else from ``gen`` (default: the device's generator). A
    16-bit ``t`` gets the float32 numbers of the same draw, rounded to its type."""
    _check_float_dtype(t, op)
    if t.dtype.itemsize == 2:
        wide = _fill(Tensor._wrap(t._shape, np.dtype(np.float32), t.device), seed, offset, dist, a, b, op, gen)
        return t.copy_(wide)
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
        if gen is None:
            gen = generator(dev)
        elif gen.device is not dev:
            raise ValueError(f"{op}: the generator lives on {gen.device.name}, the tensor on {dev.name}")
        knl = kernels.get_kernel(dev, _TEMPLATE, "philox_fill", ctype=kernels.ctype(t.dtype), dist=dist,
                                 from_state=True)
        local = kernels.fit_local(dev, knl, _local_size(dev))
        with gen._lock:
            add_lo, add_hi = _words(offset)
            kernels.launch(dev, knl, (kernels.round_up(blocks, local),), (local,), out=t, n=n, state=gen.state,
                           add_lo=add_lo, add_hi=add_hi, a=a, b=b)
            gen.advance(blocks)
    else:
        knl = kernels.get_kernel(dev, _TEMPLATE, "philox_fill", ctype=kernels.ctype(t.dtype), dist=dist,
                                 from_state=False)
        local = kernels.fit_local(dev, knl, _local_size(dev))
        (seed_lo, seed_hi), (offset_lo, offset_hi) = _words(seed), _words(offset)
        kernels.launch(dev, knl, (kernels.round_up(blocks, local),), (local,), out=t, n=n, seed_lo=seed_lo,
                       seed_hi=seed_hi, offset_lo=offset_lo, offset_hi=offset_hi, a=a, b=b)
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
