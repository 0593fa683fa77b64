"""Values that read as PyTorch's attributes and still answer the crate's method calls.

PyTorch writes ``x.shape[0]``, ``p.requires_grad`` and ``p.grad is None``; the crate writes
``x.shape()``, ``p.requires_grad()`` and ``p.grad()``. Both must work, and the torch spelling must not
silently read a bound method (always truthy, never None). So these attributes are properties whose
values are also callable, and a call gives what the crate's method gave:

- ``x.shape`` / ``x.size()``: a :class:`Size`, a tuple as ``torch.Size`` (indexable, unpackable,
  hashable, ``numel()``); ``x.shape()`` is the list the crate returns.
- ``x.ndim``, ``x.requires_grad``, ``x.is_leaf``: an int or a bool-like :class:`Flag`; calling gives
  the plain ``int`` or ``bool``.
- ``p.grad``: a ``Tensor`` or ``None``, and calling a ``Tensor`` returns it, so ``p.grad()`` is the
  crate's gradient.

The edges: ``p.requires_grad is True`` is False (compare with ``==`` or use truth, as PEP 8 asks);
``p.grad()`` on a parameter without a gradient raises ``TypeError: 'NoneType' object is not
callable`` (the crate's ``grad()`` gave None there, and ``.to_vec()`` on it failed the same way).

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.zeros([2, 3]), requires_grad=True)
>>> x.shape, x.shape(), x.shape[1], x.ndim, x.ndim() + 1
(Size([2, 3]), [2, 3], 3, 2, 3)
>>> bool(x.requires_grad), x.requires_grad(), x.grad is None
(True, True, True)
"""

from __future__ import annotations

import math

__all__ = ["Size", "Flag", "TRUE", "FALSE", "dim"]


class Size(tuple):
    """A shape: a tuple (``torch.Size``) that is also equal to the same dimensions as a list, and whose
    call gives the list (the crate's ``shape()``)."""

    __slots__ = ()

    def __call__(self) -> list:
        return list(self)

    def numel(self) -> int:
        return math.prod(self)

    def __eq__(self, other):
        if isinstance(other, list):
            other = tuple(other)
        return tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = tuple.__hash__

    def __getitem__(self, key):
        got = tuple.__getitem__(self, key)
        return Size(got) if isinstance(key, slice) else got

    def __repr__(self):
        return f"Size({list(self)})"


def as_size(shape) -> Size:
    return shape if type(shape) is Size else Size(shape)


class _Dim(int):
    """An int (``x.ndim``) whose call gives the plain int (the crate's ``ndim()``)."""

    __slots__ = ()

    def __call__(self) -> int:
        return int(self)


_DIMS = [_Dim(i) for i in range(65)]


def dim(n: int) -> int:
    return _DIMS[n] if n < 65 else _Dim(n)


class Flag(int):
    """``True`` or ``False`` for ``requires_grad`` and ``is_leaf``: truth, ``==``, ``if`` and ``repr``
    as a bool, and the call gives the bool (the crate's ``requires_grad()``)."""

    __slots__ = ()

    def __call__(self) -> bool:
        return bool(int(self))

    def __repr__(self):
        return "True" if self else "False"

    __str__ = __repr__


TRUE, FALSE = Flag(1), Flag(0)


def flag(value) -> Flag:
    return TRUE if value else FALSE
