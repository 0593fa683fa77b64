"""Comparisons and masks: elementwise, broadcasting, no gradient.

Every result is a ``bool`` tensor (one byte per element on the device). ``where``, ``masked_fill`` and
the logical ops take any mask: bool, or numbers where non-zero counts as true; in arithmetic a bool
counts as 0/1 beside numbers, and two bools stay bool (+ is or, * is and), as in torch. Comparisons with NaN are false (``!=`` true), as in IEEE and torch.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..pointwise import result_dtype
from ..tensor import Tensor
from ..shapes import as_float
from ..elementwise_kernels import elementwise
from ..rows import reduce

OPS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
DUNDERS = {op: f"__{op}__" for op in OPS}
TESTS = {"isnan": "x != x", "isinf": "isinf(x)", "isfinite": "isfinite(x)", "logical_not": "x == 0"}


def _tensor(x, like: Tensor, op) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if callable(getattr(x, "data", None)) and isinstance(x.data(), Tensor):
        return x.data()
    if isinstance(x, numbers.Integral) and not isinstance(x, bool) and like.dtype.kind != "f" \
            and -2**63 <= x < 2**63:
        return Tensor.full((), int(x), "int64", like.device)   # exact against int64 values
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Tensor.full((), as_float(x, op), like.dtype if like.dtype.kind == "f" else "float64"
                           if like.device.fp64 else "float32", like.device)
    raise TypeError(f"{op}: expected a Tensor, Variable or number, got {type(x).__name__}")


def compare(op: str, a: Tensor, b) -> Tensor:
    """``a <op> b`` elementwise as a bool mask (``op``: eq ne lt le gt ge)."""
    x = a
    y = _tensor(b, x, op)
    return elementwise(f"a {OPS[op]} b", [x, y], op=op, dtype=np.bool_)


def test(op: str, a) -> Tensor:
    """isnan / isinf / isfinite / logical_not as a bool mask."""
    x = _tensor(a, Tensor.scalar(0.0), op)
    if x.dtype.kind != "f" and op != "logical_not":
        return Tensor.full(x._shape, op == "isfinite", "bool", x.device)
    return elementwise(TESTS[op], [x], names=("x",), op=op, dtype=np.bool_)


def logical(op: str, a, b) -> Tensor:
    """logical_and / logical_or of two masks (non-zero is true) as a bool mask."""
    x = _tensor(a, Tensor.scalar(0.0), op)
    y = _tensor(b, x, op)
    sym = "&&" if op == "logical_and" else "||"
    return elementwise(f"(a != 0) {sym} (b != 0)", [x, y], op=op, dtype=np.bool_)


def any_all(op: str, a, dim=None, keepdim=False) -> Tensor:
    """any / all (non-zero is true) over everything or ``dim``, as a bool tensor on the device."""
    x = _tensor(a, Tensor.scalar(0.0), op)
    truth = elementwise("x != 0" if op == "any" else "x == 0", [x], names=("x",), op=op, dtype=np.int32)
    if x.numel() == 0:
        return Tensor.full(() if dim is None else reduce(truth, "sum", dim, keepdim)._shape,
                           op == "all", "bool", x.device)
    # all(x) is "no element is zero": the max of the zero tests, negated.
    found = reduce(truth, "max", dim, keepdim)
    return elementwise("f != 0" if op == "any" else "f == 0", [found], names=("f",), op=op, dtype=np.bool_)


def isclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=False) -> Tensor:
    """torch's ``isclose``: ``|a - b| <= atol + rtol * |b|`` (infinities equal only to themselves; NaN
    equal to NaN when ``equal_nan``), as a bool tensor."""
    x = _tensor(a, Tensor.scalar(0.0), "isclose")
    y = _tensor(b, x, "isclose")
    expr = ("(a == b) || (isfinite(a) && isfinite(b) && fabs(a - b) <= atol + rtol * fabs(b))"
            + (" || (a != a && b != b)" if equal_nan else ""))
    if x.dtype.kind != "f" and y.dtype.kind != "f":
        x = x.astype("float64" if x.device.fp64 else "float32")
    return elementwise(expr, [x, y], scalars={"rtol": as_float(rtol, "isclose rtol"), "atol": as_float(atol, "isclose atol")},
                       op="isclose", dtype=np.bool_)


_BITWISE = {"and": "&", "or": "|", "xor": "^"}


def bitwise(op: str, a, b=None) -> Tensor:
    """``a & b``, ``a | b``, ``a ^ b`` and ``~a`` of bool masks (logical, giving bool) or integers
    (bitwise, in the wider integer type); floats raise a TypeError as in torch."""
    x = _tensor(a, Tensor.scalar(0.0), op)
    if b is None:
        operands = [x]
    else:
        if isinstance(b, bool):
            b = Tensor.full((), b, "bool", x.device)
        operands = [x, _tensor(b, x, op)]
    for t in operands:
        if t.dtype.kind == "f":
            raise TypeError(f"bitwise_{op}: defined for bool and integer tensors, got {t.dtype}")
    if all(t.dtype.kind == "b" for t in operands):
        expr = "!a" if b is None else f"(a != 0) {_BITWISE[op]} (b != 0)"
        return elementwise(expr, operands, op=f"bitwise_{op}", dtype=np.bool_)
    dt = operands[0].dtype if b is None else result_dtype(*(t.dtype for t in operands))
    ctype = "int" if dt == np.int32 else "long"
    expr = f"~({ctype})a" if b is None else f"({ctype})a {_BITWISE[op]} ({ctype})b"
    return elementwise(expr, operands, op=f"bitwise_{op}", dtype=dt)
