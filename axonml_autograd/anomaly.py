"""Anomaly detection: find the op whose gradient first turned NaN or Inf, and the line that made it.

``detect_anomaly()`` is off by default. While it is on (in the current thread), every recorded op
remembers the line of user code that created it, every leaf Variable an op reads is checked for
NaN/Inf (so bad values that came in through ``Tensor.from_vec`` are reported where they are first
used), and ``backward()`` reads back each gradient it produces and raises :class:`AnomalyError` at the
first one that is not finite. This is the only mode in which backward reads from the device, so it is
slow; use it to find a bug, then turn it off.

Works as a context manager and as a decorator::

    with detect_anomaly():
        loss.backward()

    @detect_anomaly()
    def train_step(): ...

>>> from axonml_autograd import Tensor, Variable, detect_anomaly
>>> x = Variable(Tensor.from_vec([0.0], [1]), requires_grad=True)
>>> with detect_anomaly():
...     y = x.sqrt().sum()
...     y.backward()                           # d sqrt(x)/dx at 0 is Inf  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
axonml_autograd.anomaly.AnomalyError: SqrtBackward produced Inf in its gradient for input 0; ...
"""

from __future__ import annotations

import functools
import linecache
import os
import sys
import threading

import numpy as np

__all__ = ["detect_anomaly", "is_anomaly_enabled", "AnomalyError"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_state = threading.local()

# How many threads have anomaly mode on right now. record() reads only this while it is 0, so the
# mode costs one attribute check per op when nobody uses it.
_active_threads = 0
_count_lock = threading.Lock()


class AnomalyError(RuntimeError):
    """A gradient (or a leaf's data) held NaN or Inf while ``detect_anomaly()`` was on."""


def is_anomaly_enabled() -> bool:
    """True inside ``detect_anomaly()`` in this thread."""
    return getattr(_state, "enabled", False)


def _set(enabled: bool):
    global _active_threads
    was = is_anomaly_enabled()
    if was == enabled:
        return
    _state.enabled = enabled
    with _count_lock:
        _active_threads += 1 if enabled else -1


class detect_anomaly:
    """Turn anomaly detection on for a block (``with``) or a function (``@detect_anomaly()``).

    ``detect_anomaly(False)`` turns it off inside an outer ``detect_anomaly()``. Nesting restores the
    outer setting on exit, in this thread only.
    """

    def __init__(self, enabled: bool = True):
        if not isinstance(enabled, bool):
            raise TypeError(f"detect_anomaly: enabled must be a bool, got {enabled!r}")
        self.enabled = enabled
        self._saved = []

    def __enter__(self):
        self._saved.append(is_anomaly_enabled())
        _set(self.enabled)
        return self

    def __exit__(self, *exc):
        _set(self._saved.pop())
        return False

    def __call__(self, fn):
        if not callable(fn):
            raise TypeError(f"detect_anomaly: expected a function to decorate, got {fn!r}")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.enabled):
                return fn(*args, **kwargs)
        return wrapper


def user_frame():
    """``(filename, lineno, source line)`` of the innermost caller outside this package, or None."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    filename, lineno = frame.f_code.co_filename, frame.f_lineno
    return filename, lineno, linecache.getline(filename, lineno).strip()


def describe_site(site) -> str:
    if site is None:
        return "the forward op was created at an unknown place (anomaly mode was off when it was recorded)"
    filename, lineno, code = site
    where = f"{os.path.basename(filename)}:{lineno}"
    return f"the forward op was created at {where}: `{code}`" if code else \
        f"the forward op was created at {where}"


def _bad_kind(tensor):
    """'NaN', 'Inf' or None for a floating-point tensor (reads it back; anomaly mode only)."""
    if tensor.dtype.kind != "f" or tensor.numel() == 0:
        return None
    values = tensor.numpy()
    if np.isnan(values).any():
        return "NaN"
    if np.isinf(values).any():
        return "Inf"
    return None


def check_inputs(name, inputs, site):
    """Forward side: raise if a leaf Variable an op reads holds NaN/Inf (e.g. from ``from_vec``)."""
    for k, v in enumerate(inputs):
        if v is None or v._grad_fn is not None:
            continue   # a NaN that an op makes shows up in backward, where its node is named
        kind = _bad_kind(v._data)
        if kind is not None:
            where = describe_site(site).replace("the forward op was created", "the op was called")
            raise AnomalyError(f"{name}: input {k} (a leaf Variable of shape {v.shape()}) holds {kind} in "
                               f"its data; {where}. NaN/Inf data is accepted by the constructors; "
                               f"check where this input came from")


def check_root(grad):
    kind = _bad_kind(grad)
    if kind is not None:
        raise AnomalyError(f"backward: the gradient passed to backward() holds {kind}")


def check_gradient(node, index, grad):
    """Backward side: raise if ``grad``, produced by ``node`` for its input ``index``, is not finite."""
    kind = _bad_kind(grad)
    if kind is not None:
        raise AnomalyError(f"{node.name()} produced {kind} in its gradient for input {index}; "
                           f"{describe_site(node.creation)}")
