"""Grad mode: whether ops record a graph. Per thread, like PyTorch's grad_mode.

Each mode works four ways::

    y = no_grad(lambda: x.relu())       # run a callable, return its result
    with no_grad():                     # a block
        y = x.relu()
    @no_grad()                          # a decorator
    def predict(x): return x.relu()
    guard = NoGradGuard()               # a guard, as in the crate: on until exit() (or `with`)
    guard.exit()

``inference_mode`` is stricter than ``no_grad``: what it produces is marked, and using such a result in
an op that records a graph raises instead of silently producing a graph without it.

>>> from axonml_autograd import Tensor, Variable, no_grad, is_grad_enabled
>>> x = Variable(Tensor.from_vec([1.0, -2.0], [2]), requires_grad=True)
>>> no_grad(lambda: x.relu()).requires_grad()
False
>>> with no_grad():
...     is_grad_enabled()
False
"""

from __future__ import annotations

import functools
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    """True when ops record a graph in this thread."""
    return getattr(_state, "grad", True)


def is_inference_mode() -> bool:
    """True inside ``inference_mode`` in this thread."""
    return getattr(_state, "inference", False)


class _Mode:
    """Sets grad mode (and inference mode) on entry and restores the previous one on exit."""

    _grad = True
    _inference = None  # None: leave inference mode as it is

    def __init__(self):
        self._saved = None

    def __enter__(self):
        self._saved = (is_grad_enabled(), is_inference_mode())
        _state.grad = self._grad
        if self._inference is not None:
            _state.inference = self._inference
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            _state.grad, _state.inference = self._saved
            self._saved = None
        return False

    def __call__(self, fn):
        """Use as a decorator: ``fn`` runs in this mode."""
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class NoGradGuard(_Mode):
    """Disables graph recording from construction until ``exit()`` or the end of a ``with`` block."""

    _grad = False

    def __init__(self):
        super().__init__()
        self.__enter__()

    def __enter__(self):
        if self._saved is None:
            super().__enter__()
        return self

    def exit(self):
        """Restore the mode that was in force when the guard was made."""
        self.__exit__(None, None, None)

    def __del__(self):
        self.exit()


class EnableGradGuard(NoGradGuard):
    """Re-enables graph recording (inside ``no_grad``) until ``exit()`` or the end of a ``with`` block."""

    _grad = True


class InferenceModeGuard(NoGradGuard):
    """No graph, and results are marked as inference tensors, until ``exit()``."""

    _grad = False
    _inference = True


def _mode_entry(guard_cls, doc):
    def entry(fn=None):
        if fn is None:
            g = guard_cls.__new__(guard_cls)
            _Mode.__init__(g)
            return g
        if not callable(fn):
            raise TypeError(f"{entry.__name__}: expected a callable or nothing, got {fn!r}")
        with guard_cls():
            return fn()
    entry.__doc__ = doc
    return entry


no_grad = _mode_entry(NoGradGuard, "Run ``fn()`` without recording a graph and return its result; "
                                   "``no_grad()`` is a context manager and decorator.")
no_grad.__name__ = "no_grad"
enable_grad = _mode_entry(EnableGradGuard, "Run ``fn()`` with graph recording on and return its result; "
                                           "``enable_grad()`` is a context manager and decorator.")
enable_grad.__name__ = "enable_grad"
inference_mode = _mode_entry(InferenceModeGuard, "Run ``fn()`` in inference mode and return its result; "
                                                 "``inference_mode()`` is a context manager and decorator.")
inference_mode.__name__ = "inference_mode"
