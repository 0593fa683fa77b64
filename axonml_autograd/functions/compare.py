"""Comparisons and masks: elementwise, broadcasting, no gradient.

Until a bool dtype exists, a mask is an int32 tensor of 0 and 1 (``where``, ``masked_fill``, indexing
and arithmetic all take it; any non-zero value counts as true). Comparisons with NaN are false
(``!=`` true), as in IEEE and torch.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..tensor import Tensor, as_float, elementwise, reduce

OPS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
DUNDERS = {op: f"__{op}__" for op in OPS}
TESTS = {"isnan": "x != x", "isinf": "isinf(x)", "isfinite": "isfinite(x)", "logical_not": "x == 0"}


def _tensor(x, like: Tensor, op) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if callable(getattr(x, "data", None)) and isinstance(x.data(), Tensor):
        return x.data()
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Tensor.full((), as_float(x, op), like.dtype if like.dtype.kind == "f" else "float64"
                           if like.device.fp64 else "float32", like.device)
    raise TypeError(f"{op}: expected a Tensor, Variable or number, got {type(x).__name__}")


def compare(op: str, a: Tensor, b) -> Tensor:
    """``a <op> b`` elementwise as an int32 mask (``op``: eq ne lt le gt ge)."""
    x = a
    y = _tensor(b, x, op)
    return elementwise(f"(int)(a {OPS[op]} b)", [x, y], op=op, dtype=np.int32)


def test(op: str, a) -> Tensor:
    """isnan / isinf / isfinite / logical_not as an int32 mask."""
    x = _tensor(a, Tensor.scalar(0.0), op)
    if x.dtype.kind != "f" and op != "logical_not":
        return elementwise("(int)(x != x) * 0 + " + ("1" if op == "isfinite" else "0"), [x], names=("x",),
                           op=op, dtype=np.int32)
    return elementwise(f"(int)({TESTS[op]})", [x], names=("x",), op=op, dtype=np.int32)


def logical(op: str, a, b) -> Tensor:
    """logical_and / logical_or of two masks (non-zero is true) as an int32 mask."""
    x = _tensor(a, Tensor.scalar(0.0), op)
    y = _tensor(b, x, op)
    sym = "&&" if op == "logical_and" else "||"
    return elementwise(f"(int)((a != 0) {sym} (b != 0))", [x, y], op=op, dtype=np.int32)


def any_all(op: str, a, dim=None, keepdim=False) -> Tensor:
    """any / all (non-zero is true) over everything or ``dim``, as int32 0/1 on the device."""
    x = _tensor(a, Tensor.scalar(0.0), op)
    truth = elementwise("(int)(x != 0)", [x], names=("x",), op=op, dtype=np.int32)
    if x.numel() == 0:
        return Tensor.full(() if dim is None else reduce(truth, "sum", dim, keepdim)._shape,
                           1 if op == "all" else 0, "int32", x.device)
    if op == "any":
        return reduce(truth, "max", dim, keepdim)
    return elementwise("(int)(s == count)", [reduce(truth, "sum", dim, keepdim)], names=("s",),
                       int_scalars={"count": x.numel() if dim is None else x._shape[dim]}, dtype=np.int32, op="all")


def _attach():
    """The mask operations as Tensor methods too (a comparison's result is a Tensor)."""
    def method(fn, op, *fixed):
        return lambda self, *args, **kwargs: fn(op, self, *args, **kwargs)
    for op in ("isnan", "isinf", "isfinite", "logical_not"):
        setattr(Tensor, op, method(test, op))
    for op in ("logical_and", "logical_or"):
        setattr(Tensor, op, method(logical, op))
    for op in ("any", "all"):
        setattr(Tensor, op, method(any_all, op))
    for op, dunder in DUNDERS.items():
        setattr(Tensor, op, method(compare, op))
        setattr(Tensor, dunder, method(compare, op))


_attach()
