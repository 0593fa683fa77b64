"""The 16-bit float dtypes: ``float16`` (numpy's own) and ``bfloat16`` (numpy has none: :data:`bfloat16`).

``float16`` is ``np.dtype("float16")``. ``bfloat16`` is :class:`BFloat16`, a small dtype object that
answers what the library asks of a numpy dtype (``kind`` "f", ``itemsize`` 2, ``name``, ``num``, ``str``)
and compares equal only to itself and the string ``"bfloat16"``. It is deliberately *not* convertible by
``np.dtype()`` (that raises TypeError): a path that would silently treat its raw bits as uint16 fails
loudly instead. On the device a bfloat16 element is its 16 raw bits (OpenCL ``ushort``), the upper half
of the float32 with the same sign and exponent; on the host, :func:`to_bf16_bits` and
:func:`from_bf16_bits` convert float32 arrays to and from those bits.

Conversions round to nearest, ties to even; a NaN stays a NaN (quiet), infinities stay infinite, and a
finite float32 from the midpoint between bfloat16's largest value and 2**128 up rounds to infinity, as torch's.

>>> import numpy as np
>>> from_bf16_bits(to_bf16_bits(np.array([1.0, 1.00390625, 1.01171875, np.inf], np.float32))).tolist()
[1.0, 1.0, 1.015625, inf]
>>> promote(np.dtype("float16"), bfloat16)
dtype('float32')
"""

from __future__ import annotations

import numpy as np

float16 = np.dtype(np.float16)


class BFloat16:
    """The bfloat16 dtype (a singleton, :data:`bfloat16`): 1 sign, 8 exponent and 7 mantissa bits.

    >>> bfloat16.kind, bfloat16.itemsize, str(bfloat16)
    ('f', 2, 'bfloat16')
    """

    __slots__ = ()
    kind = "f"
    itemsize = 2
    name = "bfloat16"
    str = "bfloat16"
    char = "B16"           # not a numpy type character: nothing packs a bfloat16 through struct
    num = 1016             # not a numpy type number: plan keys tell it apart from every numpy dtype
    storage = np.dtype(np.uint16)   # the raw bits, on the device and in checkpoints
    host = np.dtype(np.float32)     # what numpy() returns: every bfloat16 value is a float32 exactly

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __eq__(self, other):
        return other is self or (isinstance(other, str) and other == "bfloat16")

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash("bfloat16")

    def __repr__(self):
        return "bfloat16"

    __str__ = __repr__

    def __reduce__(self):
        return (BFloat16, ())

    @staticmethod
    def type(value):
        """One element's bits (a numpy uint16) for ``value``: the pattern a fill writes."""
        return np.uint16(to_bf16_bits(np.array(value, dtype=np.float32)))


bfloat16 = BFloat16()

def resolve(dtype):
    """``bfloat16`` for the ways of naming it (the object, ``"bfloat16"``, torch's spelling), else None."""
    if dtype is bfloat16 or (isinstance(dtype, str) and dtype in ("bfloat16", "bf16")):
        return bfloat16
    return None


def promote(a, b):
    """torch's promotion of two float dtypes: the wider wins; float16 with bfloat16 is float32."""
    if a == b:
        return a
    if a.itemsize != b.itemsize:
        return a if a.itemsize > b.itemsize else b
    return np.dtype(np.float32)   # float16 and bfloat16: neither holds the other


def float_result(dtypes, default=np.dtype(np.float32)):
    """The float type of an op over operands of ``dtypes`` (non-float ones ignored): torch's promotion."""
    out = None
    for d in dtypes:
        if d.kind == "f":
            out = d if out is None else promote(out, d)
    return default if out is None else out


def compute_dtype(dtype):
    """The type kernels compute in for a float ``dtype``: float32 for the 16-bit types."""
    return np.dtype(np.float32) if dtype.itemsize == 2 else dtype


def to_bf16_bits(a) -> np.ndarray:
    """float32 values (any array) as bfloat16 bits (uint16), rounded to nearest even; NaN stays NaN."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        rounded = np.where(nan, ((u >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16), rounded)
    return rounded


def from_bf16_bits(bits) -> np.ndarray:
    """bfloat16 bits (uint16) as the float32 values they stand for (exact)."""
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
