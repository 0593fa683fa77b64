"""Comparisons and masks against numpy: bool results, broadcasting, NaN compares false, and
Tensors and Variables still work as dict keys."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable

A = np.array([[1.0, np.nan, -2.0, 3.0, np.inf], [0.0, -0.0, 5.0, -np.inf, 2.0]])
B = np.array([1.0, 1.0, -2.0, np.nan, 2.0])


@pytest.mark.parametrize("op,ref", [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                                    ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)])
@pytest.mark.parametrize("kind", ["tensor", "variable", "number"])
def test_comparisons_give_bool_masks_like_numpy(op, ref, kind):
    a = Tensor.from_numpy(A)
    left = a if kind == "tensor" else Variable(a)
    right = 2.0 if kind == "number" else Tensor.from_numpy(B)
    got = getattr(left, op)(right) if kind != "tensor" else {
        "eq": lambda: left == right, "ne": lambda: left != right, "lt": lambda: left < right,
        "le": lambda: left <= right, "gt": lambda: left > right, "ge": lambda: left >= right}[op]()
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got.numpy(), ref(A, 2.0 if kind == "number" else B))


def test_operators_on_variables_and_masks_feeding_where():
    v = Variable(Tensor.from_numpy(A), requires_grad=True)
    mask = (v > 0.5).logical_and(v.isfinite())
    np.testing.assert_array_equal(mask.numpy(), ((A > 0.5) & np.isfinite(A)))
    out = v.masked_fill(mask.logical_not(), 0.0)
    np.testing.assert_array_equal(out.numpy(), np.where((A > 0.5) & np.isfinite(A), A, 0.0))
    assert v.isnan().numpy().tolist() == np.isnan(A).tolist()
    assert v.isinf().numpy().tolist() == np.isinf(A).tolist()


@pytest.mark.parametrize("dim", [None, 0, 1])
def test_any_and_all_reduce_on_the_device_like_numpy(dim):
    m = np.array([[0, 1, 0], [0, 0, 0]], np.int32)
    t = Tensor.from_numpy(m)
    np.testing.assert_array_equal(Variable(t).any(dim).numpy(), np.any(m, axis=dim))
    np.testing.assert_array_equal(Variable(t).all(dim).numpy(), np.all(m != 0, axis=dim))
    assert Variable(Tensor.zeros([0])).all().item() == 1 and Variable(Tensor.zeros([0])).any().item() == 0


def test_tensors_and_variables_stay_dict_keys_and_refuse_truth_values():
    t, v = Tensor.zeros([2]), Variable(Tensor.zeros([2]), requires_grad=True)
    d = {t: 1, v: 2}
    assert d[t] == 1 and d[v] == 2
    with pytest.raises(TypeError, match="truth value of a Tensor is ambiguous"):
        bool(t == t)
    with pytest.raises(TypeError, match="eq: expected a Tensor, Variable or number"):
        t == "a"
