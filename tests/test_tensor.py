"""The device tensor layer against numpy: construction, elementwise ops, reductions and copies."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

from axonml_autograd import Variable, Tensor
from axonml_autograd.device import Device, DeviceError, default_device
from axonml_autograd.pointwise import binary, unary
from axonml_autograd.registry import OPS
from axonml_autograd.tensor import cat
from axonml_autograd.rows import reduce, sum_to_shape

DEV = default_device()
needs_fp64 = pytest.mark.skipif(not DEV.fp64, reason=f"device {DEV.name} lacks cl_khr_fp64")
DTYPES = ["float32", pytest.param("float64", marks=needs_fp64)]
# Awkward sizes: none a multiple of a work-group, plus 0-d and empty axes.
SHAPES = [(), (1,), (3,), (17,), (65,), (129,), (1000,), (0,), (3, 0, 2), (17, 65)]
# Every op, rank and operand layout is its own OpenCL build (~0.4 s of CPU on PoCL when not cached), so
# the per-op sweeps use shapes that all collapse to one rank-1 kernel; 0-d and [1] (both collapse to
# rank 0) and broadcasting get their own, smaller sweeps.
FLAT_SHAPES = [s for s in SHAPES if math.prod(s) != 1]
RTOL = {"float32": 2e-5, "float64": 1e-12}


def rng(seed=0):
    return np.random.default_rng(seed)


def data(shape, dtype, seed=0, positive=False):
    r = rng(seed)
    x = r.uniform(0.25, 2.0, size=shape) if positive else r.standard_normal(shape)
    return np.asarray(x, dtype=dtype)


def close(got, expected, dtype, rtol=None, atol=None):
    rtol = RTOL[str(np.dtype(dtype))] if rtol is None else rtol
    assert got.shape == np.shape(expected), (got.shape, np.shape(expected))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol if atol is None else atol)


@pytest.fixture(scope="module")
def other_device():
    # A second Device object for the same hardware: its own context, so buffers must not mix.
    return Device(DEV.info.platform_index, DEV.info.device_index)


# ======================================================================================================
# construction
# ======================================================================================================

@pytest.mark.parametrize("dtype", DTYPES + ["int32"])
@pytest.mark.parametrize("shape", SHAPES)
def test_from_vec_round_trips(shape, dtype):
    values = data(shape, "float64").reshape(-1).tolist()
    if dtype == "int32":
        values = [float(int(v * 10)) for v in values]
    t = Tensor.from_vec(values, list(shape), dtype=dtype)
    assert t.shape() == list(shape)
    assert t.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(t.numpy(), np.asarray(values, dtype=dtype).reshape(shape))
    assert t.to_vec() == np.asarray(values, dtype=dtype).tolist()


def test_from_vec_length_mismatch_names_both():
    with pytest.raises(ValueError, match=r"5 values.*\[2, 3\].*6 elements"):
        Tensor.from_vec([1.0] * 5, [2, 3])


@pytest.mark.parametrize("values, exc", [([[1.0, 2.0]], ValueError), ("ab", TypeError), (3.0, TypeError),
                                         (["x", "y"], TypeError)])
def test_from_vec_rejects_non_flat_numbers(values, exc):
    with pytest.raises(exc, match="from_vec"):
        Tensor.from_vec(values, [2])


@pytest.mark.parametrize("dtype", ["int16", "int8", "uint32", "complex64", "not-a-dtype", object])
def test_unsupported_dtype_raises_type_error(dtype):
    with pytest.raises(TypeError, match="dtype"):
        Tensor.from_vec([1.0], [1], dtype=dtype)
    with pytest.raises(TypeError, match="dtype"):
        Tensor.zeros([2], dtype=dtype)


@pytest.mark.parametrize("shape, exc", [([-1, 2], ValueError), ([2.0], TypeError), ("3", TypeError),
                                        ([True], TypeError)])
def test_bad_shape_raises(shape, exc):
    with pytest.raises(exc, match="shape"):
        Tensor.zeros(shape)


def test_from_numpy_keeps_the_arrays_dtype_widening_only_what_the_device_lacks():
    # int64 keeps every bit (as float32 it lost those beyond 2**24); a value int32 cannot hold is refused.
    with pytest.raises(ValueError, match="is not an int32"):
        Tensor.from_numpy(np.array([2**40], dtype=np.int64), dtype="int32")
    with pytest.raises(ValueError, match="is not an int64"):
        Tensor.from_numpy(np.array([2**63], dtype=np.uint64))
    for arr, want in [(np.arange(6, dtype=np.float64).reshape(2, 3), np.float64),
                      (np.arange(4, dtype=np.int32), np.int32),
                      (np.array([0, 2**40 + 1, -2**63, 2**63 - 1], dtype=np.int64), np.int64),
                      (np.arange(4, dtype=np.uint8), np.int32),
                      (np.array([0, 2**32 - 1], dtype=np.uint32), np.int64),
                      (np.array([True, False]), np.bool_),
                      (np.float16(1.5), np.float16),
                      (np.float32(2.5), np.float32)]:
        if want == np.float64 and not DEV.fp64:
            continue
        t = Tensor.from_numpy(arr)
        assert t.dtype == want
        np.testing.assert_array_equal(t.numpy(), np.asarray(arr, dtype=want))
    with pytest.raises(TypeError, match="from_numpy"):
        Tensor.from_numpy(np.array(["a"]))


def test_from_numpy_copies_non_contiguous_input():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[::2, 1::2].T
    np.testing.assert_array_equal(Tensor.from_numpy(view).numpy(), view)


def test_from_numpy_does_not_alias_the_host_array():
    host = np.ones(5, dtype=np.float32)
    t = Tensor.from_numpy(host)
    host[:] = 7
    np.testing.assert_array_equal(t.numpy(), np.ones(5))


@pytest.mark.parametrize("dtype", DTYPES + ["int32"])
@pytest.mark.parametrize("shape", [(), (1,), (17,), (3, 0), (4, 65)])
def test_zeros_ones_full(shape, dtype):
    np.testing.assert_array_equal(Tensor.zeros(shape, dtype).numpy(), np.zeros(shape, dtype))
    np.testing.assert_array_equal(Tensor.ones(shape, dtype).numpy(), np.ones(shape, dtype))
    np.testing.assert_array_equal(Tensor.full(shape, -3.0, dtype).numpy(), np.full(shape, -3, dtype))
    assert Tensor.zeros(shape, dtype).dtype == np.dtype(dtype)


def test_scalar_is_zero_d():
    s = Tensor.scalar(2.5)
    assert s.shape() == [] and s.ndim() == 0 and s.numel() == 1 and s.item() == 2.5
    with pytest.raises(TypeError):
        len(s)


def test_facts():
    t = Tensor.zeros([2, 3, 5])
    assert t.shape() == [2, 3, 5]
    assert t.ndim() == 3 and t.numel() == 30 and len(t) == 2
    assert t.size() == [2, 3, 5] and t.size(-1) == 5
    assert t.dtype == np.float32
    assert t.device is DEV
    assert Tensor.zeros([3, 0]).numel() == 0
    with pytest.raises(ValueError, match="item"):
        t.item()


def test_numpy_returns_a_fresh_array_of_the_dtype():
    t = Tensor.from_vec([1, 2, 3], [3])
    a = t.numpy()
    a[0] = 99
    assert t.numpy()[0] == 1
    assert isinstance(t.to_vec()[0], float)


def test_repr_shows_values_shape_dtype_and_device():
    r = repr(Tensor.from_vec([1.5, 2.0], [2]))
    assert "1.5" in r and "shape=[2]" in r and "float32" in r and DEV.selector in r
    big = repr(Tensor.zeros([100, 100]))
    assert "..." in big and big.count("0.") < 80 and "shape=[100, 100]" in big   # summarised as numpy
    assert "shape=[0]" in repr(Tensor.zeros([0]))
    assert "shape=[]" in repr(Tensor.scalar(1.0))


def test_float64_on_a_device_without_fp64_raises_naming_the_device(monkeypatch):
    dev = Device(DEV.info.platform_index, DEV.info.device_index)
    monkeypatch.setattr(dev, "info", dataclasses.replace(dev.info, fp64=False, name="NoDoubles GPU 9000"))
    with pytest.raises(DeviceError, match="NoDoubles GPU 9000") as exc:
        Tensor.zeros([3], dtype="float64", device=dev)
    assert "float64" in str(exc.value) and "cl_khr_fp64" in str(exc.value)
    with pytest.raises(DeviceError, match="NoDoubles GPU 9000"):
        Tensor.from_vec([1.0], [1], dtype="float64", device=dev)
    assert Tensor.zeros([3], device=dev).dtype == np.float32


def test_fresh_tensors_start_at_version_zero():
    # _version counts in-place writes so saved tensors can detect them; a constructor's own fill is not
    # one (cat and from_numpy already start at 0).
    assert Tensor.from_vec([1.0], [1]).version == 0
    assert cat([Tensor.ones([1]), Tensor.ones([1])]).version == 0
    assert Tensor.zeros([3]).version == 0
    assert Tensor.full([3], 2.0).version == 0


# ======================================================================================================
# elementwise
# ======================================================================================================

NP_UNARY = {
    "neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "sign": np.sign,
    "relu": lambda a: np.maximum(a, 0), "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "tanh": np.tanh,
    "square": np.square, "reciprocal": np.reciprocal,
}
NP_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum, "floordiv": np.floor_divide, "remainder": np.mod,
}
POSITIVE = {"log", "sqrt", "pow", "reciprocal", "div"}


def test_every_registry_row_has_a_numpy_reference():
    assert [name for name, spec in OPS.items() if spec.reference is None] == []
    assert set(NP_UNARY) | set(NP_BINARY) <= set(OPS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(NP_UNARY))
def test_unary_matches_numpy(name, dtype):
    for shape in FLAT_SHAPES:
        x = data(shape, dtype, seed=len(shape), positive=name in POSITIVE)
        got = unary(name, Tensor.from_numpy(x)).numpy()
        assert got.dtype == np.dtype(dtype)
        close(got, NP_UNARY[name](x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(NP_BINARY))
def test_binary_matches_numpy_on_equal_shapes(name, dtype):
    for shape in FLAT_SHAPES:
        a = data(shape, dtype, seed=1, positive=name in POSITIVE)
        b = data(shape, dtype, seed=2, positive=name in POSITIVE)
        if name in ("maximum", "minimum") and a.size:
            b.reshape(-1)[::2] = a.reshape(-1)[::2]  # some ties
        got = binary(name, Tensor.from_numpy(a), Tensor.from_numpy(b)).numpy()
        close(got, NP_BINARY[name](a, b), dtype)


BROADCAST_PAIRS = [((3, 1), (3, 4)), ((4,), (3, 4)), ((2, 1, 5), (3, 1)), ((), (5,)), ((5,), ()),
                   ((17, 1), (1, 65)), ((1,), (129,)), ((3, 0), (3, 1)), ((2, 1, 3, 1), (4, 1, 5))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_d_and_single_element_operands(dtype):
    for shape in [(), (1,), (1, 1)]:
        x = np.full(shape, 0.75, dtype)
        t = Tensor.from_numpy(x)
        close(unary("exp", t).numpy(), np.exp(x), dtype)
        close(binary("sub", t, t * 3).numpy(), x - x * 3, dtype)


@pytest.mark.parametrize("sa, sb, dtype", [(sa, sb, "float32") for sa, sb in BROADCAST_PAIRS]
                         + [pytest.param(sa, sb, "float64", marks=needs_fp64) for sa, sb in BROADCAST_PAIRS[:4]])
def test_broadcasting_matches_numpy(sa, sb, dtype):
    # sub is not symmetric, so both operand orders check that each operand keeps its own strides.
    a, b = data(sa, dtype, 3, positive=True), data(sb, dtype, 4, positive=True)
    ta, tb = Tensor.from_numpy(a), Tensor.from_numpy(b)
    close(binary("sub", ta, tb).numpy(), a - b, dtype)
    close(binary("sub", tb, ta).numpy(), b - a, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcasting_with_other_ops(dtype):
    a, b = data((3, 1), dtype, 5, positive=True), data((3, 4), dtype, 6, positive=True)
    ta, tb = Tensor.from_numpy(a), Tensor.from_numpy(b)
    for name in ("div", "pow", "maximum", "remainder"):
        close(binary(name, ta, tb).numpy(), NP_BINARY[name](a, b), dtype)


def test_incompatible_broadcast_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add.*\[3, 2\].*\[3\]"):
        Tensor.zeros([3, 2]) + Tensor.zeros([3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_operands_on_both_sides(dtype):
    x = data((3, 17), dtype, 5, positive=True)
    t = Tensor.from_numpy(x)
    cases = [(t + 2, x + 2), (2 + t, 2 + x), (t - 2, x - 2), (2 - t, 2 - x), (t * 3, x * 3),
             (3 * t, 3 * x), (t / 3, x / 3), (3 / t, 3 / x), (t ** 2, x ** 2), (t ** 0.5, x ** 0.5),
             (-t, -x), (t - 2.5, x - 2.5)]
    for got, want in cases:
        assert got.dtype == np.dtype(dtype)
        close(got.numpy(), want.astype(dtype), dtype)


def test_scalar_base_to_tensor_power():
    # Python only tries Tensor.__rpow__ for `2 ** t`; the registry's pow has a reversed scalar form.
    x = np.array([0.0, 1.0, 2.5], np.float32)
    close((2 ** Tensor.from_numpy(x)).numpy(), 2 ** x, "float32")


def test_scalar_with_numpy_scalar_and_int_tensor():
    t = Tensor.from_vec([1.0, 2.0], [2])
    close((t * np.float32(2)).numpy(), np.array([2.0, 4.0], np.float32), "float32")
    i = Tensor.from_vec([1, 2, 3], [3], dtype="int32")
    np.testing.assert_array_equal((i + 1).numpy(), [2.0, 3.0, 4.0])


def test_unsupported_operand_type_is_a_type_error():
    with pytest.raises(TypeError):
        Tensor.zeros([2]) + "a"
    with pytest.raises(TypeError):
        Tensor.zeros([2]) + [1, 2]


def test_tensors_from_different_devices_raise(other_device):
    a = Tensor.ones([3])
    b = Tensor.ones([3], device=other_device)
    for f in (lambda: a + b, lambda: b - a, lambda: binary("maximum", a, b), lambda: cat([a, b])):
        with pytest.raises(ValueError, match="different devices"):
            f()
    np.testing.assert_array_equal(b.to(DEV).numpy() + a.numpy(), [2.0] * 3)


def test_astype_converts_like_numpy():
    x = np.array([1.7, -1.7, 3.0], np.float32)
    t = Tensor.from_numpy(x)
    np.testing.assert_array_equal(t.astype("int32").numpy(), x.astype(np.int32))
    assert t.astype("float32") is t
    if DEV.fp64:
        np.testing.assert_array_equal(t.astype("float64").numpy(), x.astype(np.float64))


def test_sign_of_nan_is_zero_like_torch_on_tensors_and_variables_alike():
    # torch.sign(nan) is 0 (numpy's is nan); the registry defines sign once, so every path agrees.
    x = np.array([np.nan, -0.0, 0.0, -3.0, 2.0], np.float32)
    want = np.array([0.0, 0.0, 0.0, -1.0, 1.0], np.float32)
    t = Tensor.from_numpy(x)
    for got in (unary("sign", t), t.sign(), t.apply("sign"), Variable(t).sign().data()):
        np.testing.assert_array_equal(got.numpy(), want)


# ======================================================================================================
# reductions
# ======================================================================================================

RED_SHAPES = [(1,), (3,), (1000,), (17, 65), (129, 3), (2, 3, 17), (3, 1, 5), (65, 2, 1)]


def red_tol(x, dtype):
    # A float32 sum of n terms of size |x| is good to about eps * sqrt(n) * sum|x|; be generous.
    eps = np.finfo(dtype).eps
    return eps * 16 * max(1.0, math.sqrt(x.size))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", RED_SHAPES)
def test_sum_mean_max_full_and_every_axis(shape, dtype):
    x = data(shape, dtype, seed=sum(shape))
    t = Tensor.from_numpy(x)
    x64 = x.astype(np.float64)
    tol = red_tol(x, dtype)
    for keepdim in (False, True):
        for axis in [None] + list(range(-len(shape), len(shape))):
            for op, ref in (("sum", np.sum), ("mean", np.mean), ("max", np.max)):
                got = reduce(t, op, axis, keepdim)
                want = ref(x64, axis=axis, keepdims=keepdim)
                assert got.dtype == np.dtype(dtype)
                scale = np.sum(np.abs(x64), axis=axis, keepdims=keepdim) if op == "sum" else 1.0
                close(got.numpy(), want, dtype, rtol=tol, atol=tol * np.max(scale))


def test_method_forms_of_reductions():
    x = data((4, 5), "float32")
    t = Tensor.from_numpy(x)
    close(t.sum().numpy(), x.sum(), "float32")
    close(t.mean(axis=0).numpy(), x.mean(axis=0), "float32")
    close(t.max(axis=1, keepdim=True).numpy(), x.max(axis=1, keepdims=True), "float32")
    np.testing.assert_array_equal(t.argmax(1).numpy(), x.argmax(1))


def test_reductions_of_a_zero_d_tensor():
    t = Tensor.scalar(4.0)
    for op in ("sum", "mean", "max"):
        assert reduce(t, op).numpy().shape == ()
        assert reduce(t, op).item() == 4.0
        assert reduce(t, op, 0).item() == 4.0
    assert reduce(t, "sum", keepdim=True).shape() == []


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_sum_of_a_million_elements_takes_the_two_pass_path(dtype):
    x = data((1_000_003,), dtype, 7)
    t = Tensor.from_numpy(x)
    s = t.sum()
    tol = np.finfo(dtype).eps * 64 * np.abs(x.astype(np.float64)).sum()
    assert abs(s.item() - x.astype(np.float64).sum()) < tol
    m = t.mean()
    assert abs(m.item() - x.astype(np.float64).mean()) < tol / x.size
    assert t.max().item() == x.max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_along_axis_1_take_the_two_pass_path(dtype):
    x = data((3, 200_001), dtype, 8)
    t = Tensor.from_numpy(x)
    x64 = x.astype(np.float64)
    tol = np.finfo(dtype).eps * 64 * np.abs(x64).sum(axis=1)
    assert np.all(np.abs(t.sum(1).numpy() - x64.sum(1)) < tol)
    assert np.all(np.abs(t.mean(1, keepdim=True).numpy()[:, 0] - x64.mean(1)) < tol / x.shape[1])
    np.testing.assert_array_equal(t.max(axis=1).numpy(), x.max(1))
    np.testing.assert_array_equal(t.argmax(1).numpy(), x.argmax(1))


def test_long_columns_along_axis_0():
    x = data((200_001, 3), "float32", 9)
    t = Tensor.from_numpy(x)
    x64 = x.astype(np.float64)
    assert np.all(np.abs(t.sum(0).numpy() - x64.sum(0)) < 1e-5 * np.abs(x64).sum(0))
    np.testing.assert_array_equal(t.argmax(0).numpy(), x.argmax(0))


def test_reductions_are_bit_identical_across_calls():
    x = data((1_000_003,), "float32", 10)
    t = Tensor.from_numpy(x)
    rows = Tensor.from_numpy(data((3, 200_001), "float32", 11))
    first = (t.sum().numpy(), t.mean().numpy(), rows.sum(1).numpy(), rows.mean(0).numpy())
    for _ in range(3):
        again = (t.sum().numpy(), t.mean().numpy(), rows.sum(1).numpy(), rows.mean(0).numpy())
        for a, b in zip(first, again):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_picks_the_first_of_tied_maxima(dtype):
    x = np.array([[1, 3, 3, 2], [5, 5, 5, 5], [0, -1, 0, -1]], dtype)
    t = Tensor.from_numpy(x)
    np.testing.assert_array_equal(t.argmax(1).numpy(), [1, 0, 0])
    np.testing.assert_array_equal(t.argmax(0).numpy(), x.argmax(0))
    assert t.argmax(1).dtype == np.int32
    # Ties spread over work-items and over the parts of a two-pass reduction.
    for n, at in [(1000, (700, 300, 999)), (300_001, (250_000, 170_001, 170_000, 299_999)),
                  (5000, tuple(range(5000)))]:
        y = np.zeros(n, dtype)
        y[list(at)] = 1
        assert Tensor.from_numpy(y).argmax(0).item() == min(at)
    assert Tensor.from_numpy(np.full(5, -np.inf, dtype)).argmax(0).item() == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_handling_matches_numpy(dtype):
    x = np.array([[1, np.nan, 3, np.nan], [2, 7, 1, 0], [np.nan, 9, 9, 1]], dtype)
    t = Tensor.from_numpy(x)
    np.testing.assert_array_equal(t.argmax(1).numpy(), np.argmax(x, 1))
    np.testing.assert_array_equal(t.argmax(0).numpy(), np.argmax(x, 0))
    np.testing.assert_array_equal(t.max(1).values.numpy(), np.max(x, 1))
    assert np.isnan(t.max().item()) and np.isnan(t.sum().item())
    big = data((300_001,), dtype, 12)
    big[[290_000, 123_456]] = np.nan
    tb = Tensor.from_numpy(big)
    assert tb.argmax(0).item() == np.argmax(big) == 123_456
    assert np.isnan(tb.max().item())


def test_argmax_needs_an_axis():
    with pytest.raises(ValueError, match="axis"):
        reduce(Tensor.zeros([3]), "argmax")


@pytest.mark.parametrize("shape, axis", [((0,), None), ((0,), 0), ((2, 0, 3), 1), ((2, 0, 3), None)])
def test_reducing_an_empty_dimension(shape, axis):
    x = np.zeros(shape, np.float32)
    t = Tensor.from_numpy(x)
    np.testing.assert_array_equal(t.sum(axis).numpy(), np.sum(x, axis=axis))
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        want = np.mean(x, axis=axis)
    np.testing.assert_array_equal(t.mean(axis).numpy(), want)
    # numpy refuses max of an empty axis; so do we.
    with pytest.raises(ValueError, match="empty"):
        t.max(axis)
    if axis is not None:
        with pytest.raises(ValueError, match="empty"):
            t.argmax(axis)


def test_reducing_a_non_empty_axis_of_an_empty_tensor():
    t = Tensor.zeros([2, 0, 3])
    assert t.sum(0).shape() == [0, 3]
    assert t.max(2, keepdim=True).values.shape() == [2, 0, 1]
    assert t.argmax(0).shape() == [0, 3]


def test_bad_axis_raises_index_error():
    with pytest.raises(IndexError, match="out of range"):
        Tensor.zeros([2, 3]).sum(2)
    with pytest.raises(IndexError):
        Tensor.zeros([2, 3]).max(-3)
    with pytest.raises(TypeError):
        Tensor.zeros([2, 3]).sum(1.0)


def test_int32_max_and_argmax_reduce():
    x = np.array([[3, -7, 9], [4, 4, -1]], np.int32)
    t = Tensor.from_numpy(x)
    np.testing.assert_array_equal(t.max(1).values.numpy(), x.max(1))
    np.testing.assert_array_equal(t.argmax(1).numpy(), x.argmax(1))
    np.testing.assert_array_equal(t.sum(0).numpy(), x.sum(0))


def test_int32_mean_is_not_truncated_to_zero():
    t = Tensor.from_vec([1, 2, 4], [3], dtype="int32")
    assert t.mean().item() == pytest.approx(7 / 3, rel=1e-6)


# ======================================================================================================
# copies and shape ops
# ======================================================================================================

def test_reshape_shares_the_buffer_and_infers_minus_one():
    x = np.arange(24, dtype=np.float32)
    t = Tensor.from_numpy(x)
    for shape in ([2, 3, 4], [-1, 4], [4, -1, 2], [24], [-1], [1, 24, 1]):
        r = t.reshape(shape)
        np.testing.assert_array_equal(r.numpy(), x.reshape(shape))
        assert r.buffer is t.buffer
    assert Tensor.scalar(1.0).reshape([1, 1]).shape() == [1, 1]
    assert Tensor.zeros([3, 0]).reshape([0, 5]).shape() == [0, 5]
    assert Tensor.zeros([3, 0]).reshape([-1]).shape() == [0]


@pytest.mark.parametrize("shape", [[5, 5], [-1, 5], [-1, -1], [7, -1], [2.0, 12], [-2, 12]])
def test_bad_reshape_raises(shape):
    with pytest.raises((ValueError, TypeError), match="reshape"):
        Tensor.zeros([24]).reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES + ["int32"])
def test_transpose_and_permute_match_numpy(dtype):
    x = (data((2, 3, 17), "float64", 13) * 10).astype(dtype)
    t = Tensor.from_numpy(x)
    for perm in itertools.permutations(range(3)):
        np.testing.assert_array_equal(t.permute(list(perm)).numpy(), x.transpose(perm))
    np.testing.assert_array_equal(t.transpose(0, 2).numpy(), np.swapaxes(x, 0, 2))
    np.testing.assert_array_equal(t.transpose(-1, -2).numpy(), np.swapaxes(x, -1, -2))
    np.testing.assert_array_equal(t.permute([-1, 0, 1]).numpy(), x.transpose(2, 0, 1))
    m = Tensor.from_numpy(x[0])
    np.testing.assert_array_equal(m.T.numpy(), x[0].T)
    big = data((65, 129), dtype, 14)
    np.testing.assert_array_equal(Tensor.from_numpy(big).T.numpy(), big.T)
    assert Tensor.zeros([3, 0]).T.shape() == [0, 3]


def test_bad_permute_raises():
    t = Tensor.zeros([2, 3, 4])
    with pytest.raises(ValueError, match="permutation"):
        t.permute([0, 0, 1])
    with pytest.raises(ValueError, match="permutation"):
        t.permute([0, 1])
    with pytest.raises(IndexError):
        t.transpose(0, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_narrow_matches_slicing(dtype):
    x = data((5, 17, 3), dtype, 15)
    t = Tensor.from_numpy(x)
    for dim in range(3):
        size = x.shape[dim]
        for start, length in [(0, size), (1, size - 2), (size - 1, 1), (2, 0), (size, 0)]:
            index = [slice(None)] * 3
            index[dim] = slice(start, start + length)
            np.testing.assert_array_equal(t.narrow(dim, start, length).numpy(), x[tuple(index)])
    np.testing.assert_array_equal(t.narrow(-1, 1, 2).numpy(), x[..., 1:3])


@pytest.mark.parametrize("dim, start, length", [(0, -1, 2), (0, 4, 2), (0, 6, 0), (1, 0, 18), (1, 3, -1),
                                                (2, 0, 4)])
def test_narrow_out_of_range_raises_index_error(dim, start, length):
    with pytest.raises(IndexError, match="narrow"):
        Tensor.zeros([5, 17, 3]).narrow(dim, start, length)


@pytest.mark.parametrize("src, target", [((3, 1), (3, 4)), ((4,), (2, 3, 4)), ((1,), (129,)), ((), (2, 2)),
                                         ((1, 5), (17, 5)), ((2, 1, 3), (4, 2, 5, 3)), ((3, 1), (3, 1))])
def test_expand_matches_broadcast_to(src, target):
    x = data(src, "float32", 16)
    got = Tensor.from_numpy(x).expand(list(target))
    np.testing.assert_array_equal(got.numpy(), np.broadcast_to(x, target))


def test_expand_minus_one_keeps_a_size():
    x = data((3, 1), "float32", 17)
    np.testing.assert_array_equal(Tensor.from_numpy(x).expand([2, -1, 4]).numpy(), np.broadcast_to(x, (2, 3, 4)))


@pytest.mark.parametrize("src, target", [((3,), (4,)), ((3, 4), (4,)), ((2, 3), (3, 3))])
def test_bad_expand_raises(src, target):
    with pytest.raises(ValueError, match="expand"):
        Tensor.zeros(list(src)).expand(list(target))


def test_expand_to_an_explicit_zero_size():
    # numpy.broadcast_to and torch.expand both allow stretching a size-1 axis to 0.
    assert Tensor.ones([1]).expand([0]).shape() == [0]
    assert Tensor.ones([3, 1]).expand([3, 0]).shape() == [3, 0]


def test_expand_refuses_minus_one_for_a_new_leading_dim():
    # -1 means "keep the size", which a new axis does not have (torch raises too).
    with pytest.raises(ValueError, match="expand"):
        Tensor.ones([3]).expand([-1, 3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cat_along_each_axis(dtype):
    for dim in range(3):
        parts = []
        for k, n in enumerate((1, 3, 0, 17)):
            shape = [2, 5, 3]
            shape[dim] = n
            parts.append(data(tuple(shape), dtype, 20 + k))
        got = cat([Tensor.from_numpy(p) for p in parts], dim)
        np.testing.assert_array_equal(got.numpy(), np.concatenate(parts, dim))
    a, b = data((4,), dtype, 1), data((129,), dtype, 2)
    np.testing.assert_array_equal(cat([Tensor.from_numpy(a), Tensor.from_numpy(b)], -1).numpy(),
                                  np.concatenate([a, b]))


def test_cat_errors():
    with pytest.raises(ValueError, match=r"\[2, 3\].*\[2, 4\]"):
        cat([Tensor.zeros([2, 3]), Tensor.zeros([2, 4])], 0)
    with pytest.raises(ValueError):
        cat([Tensor.zeros([2, 3]), Tensor.zeros([2, 3, 1])], 0)
    with pytest.raises(ValueError, match="non-empty"):
        cat([])
    with pytest.raises(ValueError, match="zero-dimensional"):
        cat([Tensor.scalar(1.0), Tensor.scalar(2.0)])
    with pytest.raises(IndexError):
        cat([Tensor.zeros([2])], 1)
    with pytest.raises(TypeError, match="dtype"):
        cat([Tensor.zeros([2]), Tensor.zeros([2], "int32")])


def test_clone_is_a_separate_buffer():
    t = Tensor.from_vec([1.0, 2.0], [2])
    c = t.clone()
    assert c.buffer is not t.buffer
    np.testing.assert_array_equal(c.numpy(), t.numpy())


@pytest.mark.parametrize("gshape, shape", [((3, 4), (3, 1)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)),
                                           ((2, 3, 4), (1, 3, 1)), ((5,), ()), ((17, 65), (1, 65)),
                                           ((2, 0, 3), (3,)), ((4, 1), (1, 1))])
def test_sum_to_shape_reduces_exactly_the_broadcast_axes(gshape, shape):
    g = data(gshape, "float32", 30)
    got = sum_to_shape(Tensor.from_numpy(g), list(shape)).numpy()
    lead = len(gshape) - len(shape)
    want = g.sum(axis=tuple(range(lead))) if lead else g
    want = want.sum(axis=tuple(k for k, s in enumerate(shape) if s == 1 and want.shape[k] != 1), keepdims=True)
    close(got, want.reshape(shape), "float32", rtol=1e-5, atol=1e-5)


def test_sum_to_shape_of_the_same_shape_is_a_no_op():
    g = Tensor.zeros([3, 4])
    assert sum_to_shape(g, [3, 4]) is g


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_to_shape_inverts_broadcasting_of_an_op(dtype):
    # The gradient of a + b w.r.t. b of shape [4] when a is [2, 3, 4] is 6 everywhere.
    got = sum_to_shape(Tensor.ones([2, 3, 4], dtype), [4]).numpy()
    np.testing.assert_array_equal(got, np.full(4, 6, dtype))


def test_variable_ops_work_on_plain_tensors_and_give_tensors():
    a = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -2.5]])
    t = Tensor.from_numpy(a)
    np.testing.assert_allclose(t.sin().numpy(), np.sin(a), rtol=1e-15)
    assert isinstance(t.softmax(1), Tensor)
    np.testing.assert_array_equal(t.index_select(0, [1, 1]).numpy(), a[[1, 1]])
    vals, idx = t.max(axis=1), t.argmax(1)
    np.testing.assert_array_equal(vals.numpy(), a.max(1))
    parts = t.chunk(3, 1)
    assert isinstance(parts, tuple) and all(isinstance(p, Tensor) for p in parts)
    np.testing.assert_array_equal(t.mT.numpy(), a.T)
    for name in ("backward", "grad", "requires_grad", "data", "no_such_op"):
        with pytest.raises(AttributeError, match=name):
            getattr(t, name)
