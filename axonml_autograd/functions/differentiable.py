"""Helpers for the differentiable backward rules (``vrule``), which ``create_graph=True`` runs.

A differentiable rule gets the incoming gradient ``g`` as a Variable and builds the input gradients
with Variable ops, so that they are part of a graph and can be differentiated again. The helpers here
are the pieces that many rules share: constants, zeros and the sum of a broadcast gradient back to an
input's shape.

>>> from axonml_autograd import Tensor, Variable
>>> from axonml_autograd.functions.differentiable import sum_to
>>> g = Variable(Tensor.from_vec([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]), requires_grad=True)
>>> sum_to(g, (3,)).to_vec(), sum_to(g, (2, 1)).to_vec()
([5.0, 7.0, 9.0], [6.0, 15.0])
"""

from __future__ import annotations

from ..tensor import Tensor
from ..grad_fn import record
from ..rows import sum_to_shape


def const(like, tensor: Tensor):
    """``tensor`` as a constant Variable (``like`` is any Variable: its class is used, no import)."""
    return like.__class__(tensor)


def zeros(g):
    """A constant zero gradient of ``g``'s shape (the rule of a step function: floor, sign, ...)."""
    return g.__class__(Tensor.zeros(g._data._shape, g._data.dtype, g._data.device))


def number(like, value):
    """A 0-d constant Variable on ``like``'s device and dtype."""
    return like.__class__(Tensor.full((), value, like._data.dtype, like._data.device))


def select(mask: Tensor, a, b):
    """``a`` where ``mask`` is non-zero, else ``b`` (Variables or numbers; the gradient goes to the side
    taken, so a branch that is not taken may hold anything finite)."""
    from .pointwise import where
    like = a if not isinstance(a, (int, float)) else b
    return where(mask, a if not isinstance(a, (int, float)) else number(like, a),
                 b if not isinstance(b, (int, float)) else number(like, b))


def sum_to(v, shape):
    """``v`` summed over the axes broadcasting stretched to reach its shape from ``shape``: the kernels of
    ``rows.sum_to_shape``, as one op whose own gradient is the expansion back."""
    shape = tuple(shape)
    vs = tuple(v._data._shape)
    if vs == shape:
        return v
    return record("SumToBackward", sum_to_shape(v._data, shape), [v], vshape=vs, vrule=_expand_back)


def _expand_back(ctx, h):
    from .shape import expand   # shape.py imports this module
    return expand(h, ctx.attrs["vshape"])


def expand_to(g, kept, shape):
    """A reduction's gradient: ``g`` (reduced shape) reshaped to ``kept`` and expanded to ``shape``."""
    return g.reshape(list(kept)).expand(list(shape))
