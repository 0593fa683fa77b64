"""Registry ops on Tensors (no autograd): the dtype rules and the one elementwise kernel per op.

As torch: integer operands of + - * // % max min (and neg, abs, square, sign, relu) stay integers,
computed exactly in the wider of the two integer types (wrapping on overflow); true division and every
other function promote integers to float32 first, so ``7 / 2`` is 3.5 and ``exp`` of an int32 tensor is
exp of its values. bool counts as an integer 0/1 beside an integer; bool op bool stays bool where the
row has a bool form (+ and max are or, * and min are and); - is refused with a hint, as in torch.

>>> from axonml_autograd import Tensor
>>> binary("maximum", Tensor.from_vec([1.0, 5.0], [2]), Tensor.from_vec([3.0, 2.0], [2])).to_vec()
[3.0, 5.0]
>>> scalar_op("floordiv", Tensor.from_vec([7, -7], [2], dtype="int64"), 2).to_vec()
[3, -4]
"""

from __future__ import annotations

import numbers
from functools import lru_cache

import numpy as np

from .dtypes import float_result
from .registry import OPS
from .tensor import Tensor
from .elementwise_kernels import elementwise


@lru_cache(maxsize=None)
def int_form(name: str, dtype: np.dtype):
    """The row's exact integer OpenCL for ``dtype`` (int32 or int64), or None."""
    form = OPS[name].int_form
    if form is None:
        return None
    c = "int" if dtype == np.int32 else "long"
    return form.format(I=c, U="u" + c)


def result_dtype(a: np.dtype, b: np.dtype) -> np.dtype:
    """torch's promotion of two tensor dtypes, whichever comes first: float beats integer beats bool,
    and within a kind the wider wins (bool with bool is handled by the caller)."""
    if a.kind == "f" or b.kind == "f":
        return float_result((a, b))
    ints = [d for d in (a, b) if d.kind == "i"]
    return max(ints, key=lambda d: d.itemsize) if ints else np.dtype(np.int64)


def _int_result(x: Tensor) -> np.dtype:
    return x.dtype if x.dtype.kind == "i" else np.dtype(np.int64)


def no_bool_subtraction(name, *tensors):
    if name == "sub" and any(t.dtype.kind == "b" for t in tensors):
        raise TypeError("sub: subtraction with a bool tensor is not supported (as in torch); to invert a mask "
                        "use ~ or logical_not(), or convert it with .astype('int64')")


def unary(name: str, x: Tensor, **scalars) -> Tensor:
    """A one-input registry op; ``scalars`` by kernel name (clamp's ``lo``/``hi``, ...)."""
    spec = OPS[name]
    if x.dtype.kind != "f":
        dt = _int_result(x)
        form = int_form(name, dt) if not spec.scalars else None
        if form is not None:
            return elementwise(form, [x], names=("x",), op=name, dtype=dt)
        x = x.astype("float32")
    check_bounds(spec, scalars)
    return elementwise(spec.opencl, [x], names=("x",), scalars=scalars, op=name)


def check_bounds(spec, values: dict):
    """clamp and hardtanh: the lower bound may not exceed the upper (torch raises too)."""
    if "lo" in values and values["lo"] > values["hi"]:
        (lo_name, *_), (hi_name, *_) = spec.scalars
        raise ValueError(f"{spec.name}: {lo_name} {values['lo']} is greater than {hi_name} {values['hi']}")


def binary(name: str, a: Tensor, b: Tensor) -> Tensor:
    spec = OPS[name]
    no_bool_subtraction(name, a, b)
    if a.dtype.kind == "b" and b.dtype.kind == "b" and spec.kind == "arithmetic" and name not in ("div", "pow"):
        if spec.bool_form is None:
            raise TypeError(f"{name}: not defined for two bool tensors (as in torch); convert one with "
                            ".astype('int64')")
        return elementwise(spec.bool_form, [a, b], op=name, dtype=np.bool_)
    if a.dtype.kind != "f" and b.dtype.kind != "f":
        dt = result_dtype(a.dtype, b.dtype)
        form = int_form(name, dt)
        if form is not None:
            return elementwise(form, [a, b], op=name, dtype=dt)
        a, b = a.astype("float32"), b.astype("float32")
    return elementwise(spec.opencl, [a, b], op=name)


def scalar_op(name: str, x: Tensor, value, reverse=False) -> Tensor:
    """``x <op> value`` (or ``value <op> x`` when ``reverse``), the number passed as a kernel argument.

    An integer ``x`` with a whole-number ``value`` its type can hold stays integer under the row's integer
    form (the number goes in as an int or long); otherwise an integer ``x`` is promoted to float32 first.
    """
    tensor_name, scalar_name = ("b", "a") if reverse else ("a", "b")
    no_bool_subtraction(name, x)
    if name == "pow" and not reverse and x.dtype.kind != "f" and isinstance(value, numbers.Integral) and value < 0:
        raise ValueError(f"pow: integers to negative integer powers are not allowed (as in torch), got "
                         f"exponent {value}; convert to float first")
    if x.dtype.kind != "f":
        dt = _int_result(x)
        bound = 2 ** (8 * dt.itemsize - 1)
        form = int_form(name, dt)
        if form is not None and float(value).is_integer() and -bound <= value < bound:
            key = "int_scalars" if dt == np.int32 else "long_scalars"
            return elementwise(form, [x], names=(tensor_name,), op=name, dtype=dt,
                               **{key: {scalar_name: int(value)}})
        x = x.astype("float32")
    return elementwise(OPS[name].opencl, [x], names=(tensor_name,), scalars={scalar_name: value}, op=name)
