"""Grad mode: whether ops record a graph. Per thread, like PyTorch's grad_mode.

``no_grad``, ``enable_grad`` and ``inference_mode`` each work these ways::

    with no_grad():                     # a block
        y = x.relu()
    @no_grad                            # a decorator, bare (as torch >= 2.0) ...
    def predict(x): return x.relu()
    @no_grad()                          # ... or called
    def predict(x): return x.relu()
    y = no_grad(lambda: x.relu())       # the crate's closure: a lambda taking no arguments runs now
    y = no_grad.run(predict_all)        # any callable run now, its result returned
    guard = NoGradGuard()               # a guard, as in the crate: on until exit() (or `with`)
    guard.exit()

**The rule for** ``no_grad(f)``: it returns ``f`` wrapped to run without grad (the decorator, what
``@no_grad`` passes and what torch's ``no_grad(f)`` does), except when ``f`` is a lambda that takes no
arguments: that is the crate's ``no_grad(|| ...)`` closure, run at once and its result returned. A
lambda can never be the target of ``@``, so the two readings cannot meet; a named function, though,
is exactly what a decorator receives, so the crate's form for one is ``no_grad.run(f)``. Spelled out,
``no_grad()(f)`` always wraps and ``no_grad.run(f)`` always runs.

A wrapped generator function runs each of its steps in the mode (the code that consumes it does not),
as torch's decorators do. ``inference_mode`` is stricter than ``no_grad``: what it produces is marked,
and using such a result in an op that records a graph raises instead of silently producing a graph
without it.

>>> from axonml_autograd import Tensor, Variable, no_grad, is_grad_enabled
>>> x = Variable(Tensor.from_vec([1.0, -2.0], [2]), requires_grad=True)
>>> no_grad(lambda: x.relu()).requires_grad()
False
>>> @no_grad
... def double(v):
...     return v * 2.0
>>> double(x).requires_grad(), is_grad_enabled()
(False, True)
>>> with no_grad():
...     is_grad_enabled()
False
"""

from __future__ import annotations

import functools
import inspect
import threading
import types

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
        """Use as a decorator: ``fn`` runs in this mode (each step of it, for a generator function)."""
        if not callable(fn):
            raise TypeError(f"{type(self).__name__}: a decorator takes a function, got {fn!r}")
        mode = type(self)
        if inspect.isgeneratorfunction(fn):
            return _wrap_generator(mode, fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with mode():
                return fn(*args, **kwargs)
        return wrapper


def _wrap_generator(mode, fn):
    """``fn``'s generator with every resumption (send, throw, close) run in ``mode``.

    Entering the mode once around the whole generator would leak it into the consumer's code between
    two ``next()`` calls (and leave it on if the generator is abandoned); this is torch's scheme.
    """
    @functools.wraps(fn)
    def generator(*args, **kwargs):
        gen = fn(*args, **kwargs)
        try:
            with mode():
                response = gen.send(None)
            while True:
                try:
                    request = yield response
                except GeneratorExit:
                    with mode():
                        gen.close()
                    raise
                except BaseException as e:
                    with mode():
                        response = gen.throw(e)
                else:
                    with mode():
                        response = gen.send(request)
        except StopIteration as e:
            return e.value
    return generator


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


def _is_crate_closure(fn) -> bool:
    """A lambda callable with no arguments: the crate's ``no_grad(|| ...)``, never a decorator's target."""
    if not isinstance(fn, types.FunctionType) or fn.__name__ != "<lambda>":
        return False
    code = fn.__code__
    return (code.co_argcount == len(fn.__defaults__ or ())
            and code.co_kwonlyargcount == len(fn.__kwdefaults__ or {}))


def _mode_entry(guard_cls, name, doing):
    def unentered():
        # A guard enters when it is made (the crate's NoGradGuard::new); no_grad() must wait for `with`.
        g = guard_cls.__new__(guard_cls)
        _Mode.__init__(g)
        return g

    def entry(fn=None):
        if fn is None:
            return unentered()
        if not callable(fn):
            raise TypeError(f"{name}: expected a function (to decorate), a lambda (to run now) or nothing, "
                            f"got {fn!r}")
        if _is_crate_closure(fn):
            return run(fn)
        return unentered()(fn)

    def run(fn):
        if not callable(fn):
            raise TypeError(f"{name}.run: expected a callable, got {fn!r}")
        with guard_cls():
            return fn()

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"``{name}()``: a context manager and decorator {doing}; ``@{name}`` bare decorates "
                     f"too. ``{name}(f)`` decorates ``f``, except a lambda taking no arguments (the crate's "
                     f"closure), which runs at once and returns its result.")
    run.__name__, run.__qualname__ = "run", f"{name}.run"
    run.__doc__ = f"Run ``fn()`` {doing} and return its result (the crate's ``{name}(closure)`` for any callable)."
    entry.run = run
    return entry


no_grad = _mode_entry(NoGradGuard, "no_grad", "without recording a graph")
enable_grad = _mode_entry(EnableGradGuard, "enable_grad", "with graph recording on")
inference_mode = _mode_entry(InferenceModeGuard, "inference_mode", "in inference mode")
