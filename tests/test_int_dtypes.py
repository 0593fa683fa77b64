"""int32 tensors: + - * stay int32 and exact (wrapping like numpy and torch), true division and
float functions promote to float32, and float32 op float64 is float64 in either order."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable

A = np.array([2**30 + 1, 7, -7, -2**31, 2**31 - 1, 0, 1, -1, 123456789], np.int32)
B = np.array([2, 2, 2, 1, 3, 5, -1, 9, 987654], np.int32)


def _wrap(x):
    return ((np.asarray(x, np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


@pytest.mark.parametrize("op,ref", [
    (lambda a, b: a + b, lambda a, b: _wrap(a.astype(np.int64) + b)),
    (lambda a, b: a - b, lambda a, b: _wrap(a.astype(np.int64) - b)),
    (lambda a, b: a * b, lambda a, b: _wrap(a.astype(np.int64) * b)),
    (lambda a, b: a + 3, lambda a, b: _wrap(a.astype(np.int64) + 3)),
    (lambda a, b: 5 - a, lambda a, b: _wrap(5 - a.astype(np.int64))),
    (lambda a, b: a * -4, lambda a, b: _wrap(a.astype(np.int64) * -4)),
    (lambda a, b: -a, lambda a, b: _wrap(-a.astype(np.int64))),
], ids=["add", "sub", "mul", "add_scalar", "rsub_scalar", "mul_scalar", "neg"])
@pytest.mark.parametrize("as_variable", [False, True], ids=["tensor", "variable"])
def test_integer_arithmetic_stays_int32_and_exact(op, ref, as_variable):
    a, b = Tensor.from_numpy(A), Tensor.from_numpy(B)
    if as_variable:
        a, b = Variable(a), Variable(b)
    got = op(a, b)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.numpy(), ref(A, B))


@pytest.mark.parametrize("as_variable", [False, True], ids=["tensor", "variable"])
def test_true_division_and_float_functions_of_integers_give_float32(as_variable):
    a, b = Tensor.from_numpy(A), Tensor.from_numpy(B)
    if as_variable:
        a, b = Variable(a), Variable(b)
    q = a / b
    assert q.dtype == np.float32
    np.testing.assert_allclose(q.numpy(), A.astype(np.float64) / B, rtol=1e-7)
    assert (Tensor.from_vec([7], [1], dtype="int32") / 2).to_vec() == [3.5]
    e = (Variable(Tensor.from_numpy(B[:3])).exp() if as_variable else Tensor.from_numpy(B[:3]).apply("exp"))
    assert e.dtype == np.float32
    np.testing.assert_allclose(e.numpy(), np.exp(B[:3].astype(np.float64)), rtol=1e-6)


def test_float32_with_float64_is_float64_in_either_order(fp64):
    f = Tensor.from_vec([1.5, 2.5], [2])
    d = Tensor.from_vec([0.1, 0.2], [2], dtype="float64")
    for r in (f + d, d + f, f * d, d * f, Variable(f) + Variable(d), Variable(d) + Variable(f)):
        assert r.dtype == np.float64
    np.testing.assert_allclose((f + d).numpy(), np.array([1.6, 2.7]), rtol=1e-15)
    np.testing.assert_allclose((d + f).numpy(), np.array([1.6, 2.7]), rtol=1e-15)


def test_float_valued_functions_of_integers_promote_instead_of_failing_to_build():
    a = Variable(Tensor.from_numpy(np.array([[1, 2, 3], [4, 5, 2**30 + 1]], np.int32)))
    x = np.array([[1, 2, 3], [4, 5, 2**30 + 1]], np.float64)
    sm = a.softmax(-1)
    assert sm.dtype == np.float32
    np.testing.assert_allclose(sm.numpy(), np.exp(x - x.max(1, keepdims=True)) /
                               np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True), rtol=1e-6, atol=1e-30)
    for r in (a.log_softmax(0), a.cross_entropy([0, 1]), a.sigmoid(), a.sqrt()):
        assert r.dtype == np.float32 and np.isfinite(r.numpy()).all()
    probs = Variable(Tensor.from_numpy(np.array([0, 1], np.int32)))
    assert probs.binary_cross_entropy(probs).item() == 0.0
    relu = (-a).relu()
    assert relu.dtype == np.int32 and relu.numpy().tolist() == [[0, 0, 0], [0, 0, 0]]
    assert a.relu().numpy()[1, 2] == 2**30 + 1
