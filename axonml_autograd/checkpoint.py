"""Gradient checkpointing (PyTorch's ``torch.utils.checkpoint``): keep a segment's inputs, recompute
the rest in backward.

Saving and loading ``.npz`` checkpoint files is :mod:`axonml_autograd.serialization`. Those functions
lived here until the modules were split by job; their names stay importable from here
(``checkpoint.save``, ``checkpoint.load_into``, ``checkpoint.CheckpointError``, ...) so code written
against the old layout keeps working.
"""

from __future__ import annotations

from .serialization import (Checkpoint, CheckpointError, CheckpointMismatchError, load, load_into,  # noqa: F401
                            read, save)
from .tensor import Tensor

__all__ = ["checkpoint"]

_anchors: dict = {}   # device -> a leaf that makes every checkpointed segment part of the graph


def checkpoint(fn, *args):
    """``fn(*args)``, keeping only the inputs: backward runs ``fn`` again with grad on and differentiates it.

    Memory for the segment's intermediates is freed after the forward pass (the price is a second
    forward in backward). Parameters ``fn`` uses get their gradients as usual, also when no input
    requires grad; random numbers drawn in ``fn`` without a seed (a dropout mask) are the same at the
    recomputation, because the device generator's position is restored for it. ``fn`` returns one
    Variable.

    >>> from axonml_autograd import Tensor, Variable
    >>> w = Variable(Tensor.from_vec([2.0], [1]), requires_grad=True)
    >>> x = Variable(Tensor.from_vec([3.0], [1]))
    >>> checkpoint(lambda v: (v * w).exp() * w, x).sum().backward()
    >>> round(w.grad().item(), 1)            # d/dw of w exp(3w) = exp(3w) (1 + 3w), at w = 2
    2824.0
    """
    from . import random as rnd
    from .grad_fn import record
    from .no_grad import enable_grad, is_grad_enabled, no_grad
    from .variable import Variable

    if not callable(fn):
        raise TypeError(f"checkpoint: expected a callable, got {type(fn).__name__}")
    if not is_grad_enabled():
        return fn(*args)
    device = next((a.device for a in args if isinstance(a, (Variable, Tensor))), None)
    gen = rnd.generator(device)
    rng_state = gen.get_state()   # a device copy: no read, and a capture records it like the draws
    with no_grad():
        out = fn(*args)
    if not isinstance(out, Variable):
        raise TypeError(f"checkpoint: the function must return a Variable, got {type(out).__name__}")
    anchor = _anchors.get(out.device)
    if anchor is None:
        anchor = _anchors[out.device] = Variable(Tensor.zeros([1], device=out.device), requires_grad=True)
    inputs = [a if isinstance(a, Variable) else None for a in args]

    def rule(ctx, g):
        from .backward import run
        with enable_grad():
            again = [Variable(a._data, requires_grad=a._requires_grad) if isinstance(a, Variable) else a
                     for a in args]
            now = gen.get_state()
            gen.set_state(rng_state)              # the same random numbers as the forward drew
            try:
                recomputed = fn(*again)
            finally:
                gen.set_state(now)
        if recomputed._requires_grad:
            run(recomputed._node(), g)            # parameters inside fn accumulate as usual
        grads = tuple(v._grad if isinstance(v, Variable) and v._requires_grad else None for v in again)
        return grads + (None,)                    # nothing for the anchor

    return record("CheckpointBackward", out._data, inputs + [anchor], rule)
