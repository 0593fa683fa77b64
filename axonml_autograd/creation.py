"""Tensors made on the device from a rule, as torch makes them: ranges, grids, identities, ``*_like``.

Each is one elementwise kernel over the element index (no host array is uploaded), so making them
inside a captured function is fine.

>>> from axonml_autograd import arange, eye, linspace
>>> arange(5).to_vec(), arange(1.0, 2.0, 0.25).to_vec()
([0, 1, 2, 3, 4], [1.0, 1.25, 1.5, 1.75])
>>> linspace(0.0, 1.0, 5).to_vec()
[0.0, 0.25, 0.5, 0.75, 1.0]
>>> eye(2, 3).to_vec()
[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import kernels
from . import random as _random
from .device import get_device
from .tensor import Tensor
from .shapes import _parse_shape, as_float, as_int
from .elementwise_kernels import elementwise

__all__ = ["arange", "linspace", "eye", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
           "randint"]


def _is_int(v) -> bool:
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool)


def arange(start, end=None, step=1, dtype=None, device=None) -> Tensor:
    """``[start, start + step, ...)`` up to ``end`` (exclusive); int64 when every bound is an int, as torch."""
    if end is None:
        start, end = 0, start
    ints = all(_is_int(v) for v in (start, end, step))
    dt = dtype or ("int64" if ints else "float32")
    s, e, d = (as_float(v, f"arange {w}") for v, w in ((start, "start"), (end, "end"), (step, "step")))
    if d == 0 or not all(math.isfinite(v) for v in (s, e, d)):
        raise ValueError(f"arange: start, end and step must be finite and step non-zero, got {start}, {end}, {step}")
    n = max(0, math.ceil((e - s) / d))
    dev = get_device(device)
    if np.dtype(dt).kind != "f":
        bounds = {"s": as_int(start, "arange start"), "d": as_int(step, "arange step")}
        if np.dtype(dt) == np.int64:
            return elementwise("s + (long)gid * d", [], names=(), long_scalars=bounds, shape=(n,), dtype=dt,
                               device=dev, op="arange")
        return elementwise("s + gid * d", [], names=(), int_scalars=bounds, shape=(n,), dtype=dt, device=dev,
                           op="arange")
    return elementwise("s + (T)gid * d", [], names=(), scalars={"s": s, "d": d}, shape=(n,), dtype=dt, device=dev,
                       op="arange")


def linspace(start, end, steps, dtype="float32", device=None) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive (each half from its own end,
    as torch does, so both ends are exact)."""
    s, e = as_float(start, "linspace start"), as_float(end, "linspace end")
    n = as_int(steps, "linspace: steps")
    if n < 0:
        raise ValueError(f"linspace: steps must be non-negative, got {n}")
    d = (e - s) / (n - 1) if n > 1 else 0.0
    return elementwise("gid < mid ? lo + (T)gid * step : hi - (T)(last - gid) * step", [], names=(),
                       scalars={"lo": s, "hi": e, "step": d}, int_scalars={"mid": (n + 1) // 2, "last": n - 1},
                       shape=(n,),
                       dtype=dtype, device=get_device(device), op="linspace")


def eye(n, m=None, dtype="float32", device=None) -> Tensor:
    """An ``n`` x ``m`` (default square) matrix with ones on the diagonal."""
    n = as_int(n, "eye: n")
    m = n if m is None else as_int(m, "eye: m")
    if n < 0 or m < 0:
        raise ValueError(f"eye: sizes must be non-negative, got {n} x {m}")
    return elementwise("(gid / m == gid % m) ? 1 : 0", [], names=(), int_scalars={"m": max(m, 1)}, shape=(n, m),
                       dtype=dtype, device=get_device(device), op="eye")


def _data(x):
    return x._data if hasattr(x, "_data") else x


def zeros_like(x, dtype=None) -> Tensor:
    t = _data(x)
    return Tensor.zeros(t._shape, dtype or t.dtype, t.device)


def ones_like(x, dtype=None) -> Tensor:
    t = _data(x)
    return Tensor.ones(t._shape, dtype or t.dtype, t.device)


def full_like(x, value, dtype=None) -> Tensor:
    t = _data(x)
    return Tensor.full(t._shape, value, dtype or t.dtype, t.device)


def rand_like(x, seed=None, dtype=None) -> Tensor:
    t = _data(x)
    return Tensor.rand(t._shape, seed, dtype or t.dtype, t.device)


def randn_like(x, seed=None, dtype=None) -> Tensor:
    t = _data(x)
    return Tensor.randn(t._shape, seed, dtype or t.dtype, t.device)


def randint(low, high, shape, seed=None, device=None, dtype="int64") -> Tensor:
    """Integers uniform in ``[low, high)`` (from the device's generator unless ``seed`` is given); int64
    like torch's, or ``dtype="int32"``. The span ``high - low`` is below 2**31."""
    low, high = as_int(low, "randint: low"), as_int(high, "randint: high")
    if not (-2**31 <= low < high <= 2**31 and high - low < 2**31):
        raise ValueError(f"randint: expected low < high within int32 (a span below 2**31), got {low} and {high}")
    u = _random.uniform(_parse_shape(shape, "randint shape"), seed, dtype="float64" if get_device(device).fp64
                        else "float32", device=device)
    # floor(u * span) < span for u < 1, whatever the rounding, by the min.
    dt = np.dtype(dtype)
    if dt.kind != "i":
        raise TypeError(f"randint: dtype must be int32 or int64, got {dt}")
    return elementwise(f"min((int)floor(u * ({kernels.ctype(u.dtype)})span), span - 1) + lo", [u], names=("u",),
                       int_scalars={"span": high - low, "lo": low}, dtype=dt, op="randint")
