"""Parameter initialisers that fill tensors in place with the device's counter-based generator.

Every initialiser takes ``seed=``. Without one, the seed comes from a module-level sequence started
by :func:`manual_seed`, so successive calls draw different numbers while a whole program stays
reproducible: ``manual_seed(0)`` followed by the same calls gives the same parameters every run.

Fan-in and fan-out follow ``torch.nn.init._calculate_fan_in_and_fan_out``: a weight of shape
``[out, in, *kernel]``, the layout of every layer here (``nn.Linear`` included). For a crate-style
``[in, out]`` matrix (``y = x.matmul(w)``) pass ``layout="in_out"`` (the first two axes swap roles),
or ``fan_in=``/``fan_out=`` to override the computation entirely.

>>> from axonml_autograd import Tensor
>>> w = Tensor.empty([3, 5])
>>> calculate_fan_in_and_fan_out(w)             # PyTorch layout: [out=3, in=5]
(5, 3)
>>> calculate_fan_in_and_fan_out(w, layout="in_out")
(3, 5)
>>> _ = xavier_uniform_(w, seed=1)
>>> bool(abs(w.numpy()).max() <= (6 / 8) ** 0.5)
True
"""

from __future__ import annotations

import math
import numbers
import threading

from . import random as _random
from .tensor import Tensor
from .elementwise_kernels import fill

__all__ = ["manual_seed", "next_seed", "derive_seed", "calculate_gain", "calculate_fan_in_and_fan_out",
           "uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_", "xavier_normal_",
           "kaiming_uniform_", "kaiming_normal_"]

_MASK64 = (1 << 64) - 1
_lock = threading.Lock()
_base_seed = 0
_counter = 0


def _splitmix64(x: int) -> int:
    # Spreads nearby inputs (seed 0, 1, 2 ...) over the whole 64-bit key space of the generator.
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int, *path: int) -> int:
    """A seed for a sub-part (layer ``k``, its bias, ...) of something seeded with ``seed``."""
    x = _splitmix64(int(seed) & _MASK64)
    for p in path:
        x = _splitmix64(x ^ (int(p) & _MASK64))
    return x


def manual_seed(seed: int):
    """Restart the sequence that initialisers called without ``seed=`` draw from."""
    global _base_seed, _counter
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"manual_seed: expected an int, got {seed!r}")
    with _lock:
        _base_seed, _counter = int(seed) & _MASK64, 0


def next_seed() -> int:
    """The next seed of the sequence set by :func:`manual_seed` (0 until it is called)."""
    global _counter
    with _lock:
        _counter += 1
        return derive_seed(_base_seed, _counter)


def _seed(seed) -> int:
    if seed is None:
        return next_seed()
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    return int(seed)


def _tensor(x, op) -> Tensor:
    """The tensor behind a Variable or Tensor; writing it in place is what an initialiser does."""
    if isinstance(x, Tensor):
        return x
    data = getattr(x, "data", None)
    if callable(data) and isinstance(data(), Tensor):
        return data()
    raise TypeError(f"{op}: expected a Variable or Tensor, got {type(x).__name__}")


# ------------------------------------------------------------------------------------------------------
# Gains and fans
# ------------------------------------------------------------------------------------------------------

_LINEAR_LIKE = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``."""
    if nonlinearity in _LINEAR_LIKE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, bool) or not isinstance(param, numbers.Real):
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        else:
            slope = float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def calculate_fan_in_and_fan_out(x, layout: str = "torch"):
    """``(fan_in, fan_out)`` of a weight of two or more dimensions.

    ``layout="torch"``: shape ``[out, in, *kernel]``, fan_in = in * prod(kernel), fan_out = out *
    prod(kernel), exactly as PyTorch. ``layout="in_out"``: shape ``[in, out, *kernel]`` (this
    package's ``Linear`` weight).
    """
    shape = x if isinstance(x, (list, tuple)) else _tensor(x, "calculate_fan_in_and_fan_out").shape()
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out can not be computed for a tensor with fewer than 2 "
                         f"dimensions (shape {list(shape)})")
    if layout not in ("torch", "in_out"):
        raise ValueError(f"layout must be 'torch' ([out, in, ...]) or 'in_out' ([in, out, ...]), got {layout!r}")
    receptive = math.prod(shape[2:])
    n_out, n_in = (shape[0], shape[1]) if layout == "torch" else (shape[1], shape[0])
    return n_in * receptive, n_out * receptive


def _fans(x, layout, fan_in, fan_out):
    if fan_in is not None and fan_out is not None:
        return int(fan_in), int(fan_out)
    fi, fo = calculate_fan_in_and_fan_out(x, layout)
    return (fi if fan_in is None else int(fan_in)), (fo if fan_out is None else int(fan_out))


# ------------------------------------------------------------------------------------------------------
# Initialisers (all in place; each returns its argument)
# ------------------------------------------------------------------------------------------------------

def uniform_(x, low=0.0, high=1.0, seed=None):
    """Fill with uniform numbers in ``[low, high)``."""
    _random.uniform_(_tensor(x, "uniform_"), _seed(seed), low, high)
    return x


def normal_(x, mean=0.0, std=1.0, seed=None):
    """Fill with normal numbers of mean ``mean`` and standard deviation ``std``."""
    _random.normal_(_tensor(x, "normal_"), _seed(seed), mean, std)
    return x


def constant_(x, value):
    t = _tensor(x, "constant_")
    before = t._version
    fill(t, value, "constant_")
    if t._version == before:   # the float fill bumps it already; the integer fill does not
        t._version += 1
    return x


def zeros_(x):
    return constant_(x, 0.0)


def ones_(x):
    return constant_(x, 1.0)


def xavier_uniform_(x, gain=1.0, seed=None, layout="torch", fan_in=None, fan_out=None):
    """Glorot uniform: ``U(-a, a)`` with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    fi, fo = _fans(x, layout, fan_in, fan_out)
    bound = gain * math.sqrt(6.0 / (fi + fo))
    return uniform_(x, -bound, bound, seed)


def xavier_normal_(x, gain=1.0, seed=None, layout="torch", fan_in=None, fan_out=None):
    """Glorot normal: ``N(0, std^2)`` with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fi, fo = _fans(x, layout, fan_in, fan_out)
    return normal_(x, 0.0, gain * math.sqrt(2.0 / (fi + fo)), seed)


def _kaiming_std(x, a, mode, nonlinearity, layout, fan_in, fan_out):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fi, fo = _fans(x, layout, fan_in, fan_out)
    fan = fi if mode == "fan_in" else fo
    if fan == 0:
        raise ValueError(f"kaiming init: {mode} is 0 for a tensor of shape {_tensor(x, 'kaiming').shape()}")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(x, a=0.0, mode="fan_in", nonlinearity="leaky_relu", seed=None, layout="torch",
                     fan_in=None, fan_out=None):
    """He uniform: ``U(-b, b)`` with ``b = sqrt(3) * gain / sqrt(fan)``, defaults as PyTorch.

    ``a`` is the negative slope of the leaky ReLU that follows; ``a=math.sqrt(5)`` is what
    ``torch.nn.Linear`` uses and gives ``b = 1 / sqrt(fan_in)``.
    """
    bound = math.sqrt(3.0) * _kaiming_std(x, a, mode, nonlinearity, layout, fan_in, fan_out)
    return uniform_(x, -bound, bound, seed)


def kaiming_normal_(x, a=0.0, mode="fan_in", nonlinearity="leaky_relu", seed=None, layout="torch",
                    fan_in=None, fan_out=None):
    """He normal: ``N(0, std^2)`` with ``std = gain / sqrt(fan)``."""
    return normal_(x, 0.0, _kaiming_std(x, a, mode, nonlinearity, layout, fan_in, fan_out), seed)
