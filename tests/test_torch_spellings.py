"""torch's spellings on Variable: indices and sizes against numpy, and errors that name the op."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable

X = np.array([[3.0, -1.0, 3.0, 0.5], [2.0, 7.0, -4.0, 7.0], [0.0, 0.0, -9.0, 1.0]])


def v():
    return Variable(Tensor.from_numpy(X.astype(np.float32)), requires_grad=True)


@pytest.mark.parametrize("dim,keepdim", [(None, False), (None, True), (0, False), (1, True), (-1, False)])
def test_argmax_and_argmin_give_the_first_extreme_as_numpy(dim, keepdim):
    for ours, ref in (("argmax", np.argmax), ("argmin", np.argmin)):
        got = getattr(v(), ours)(dim, keepdim)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got.numpy(), ref(X, axis=dim, keepdims=keepdim))


def test_max_and_min_along_a_dim_return_values_and_indices():
    values, indices = v().max(1)
    np.testing.assert_array_equal(values.numpy(), X.max(1))
    np.testing.assert_array_equal(indices.numpy(), X.argmax(1))
    values, indices = v().min(0, keepdim=True)
    np.testing.assert_array_equal(values.numpy(), X.min(0, keepdims=True))
    np.testing.assert_array_equal(indices.numpy(), X.argmin(0)[None])
    assert v().max().item() == 7.0 and v().min().item() == -9.0


def test_size_dim_and_shape_spellings():
    x = v()
    assert x.size() == [3, 4] and x.size(1) == 4 and x.size(-2) == 3 and x.dim() == 2
    assert x.view(4, 3).shape() == [4, 3] and x.reshape((2, 6)).shape() == [2, 6]


@pytest.mark.parametrize("call,exc,match", [
    (lambda: v().permute(0), ValueError, r"permute: expected 2 dims for shape \[3, 4\]"),
    (lambda: v().permute(0, 0), ValueError, r"permute: \[0, 0\] is not a permutation"),
    (lambda: v().sum((1, 1)), ValueError, r"sum: dim \[1, 1\] names an axis twice"),
    (lambda: v().mean(2), IndexError, r"mean dim: 2 is out of range"),
    (lambda: v().split([1, 1], 0), ValueError, r"split: sections \[1, 1\] do not add up to the size 3"),
    (lambda: v().split(0), ValueError, r"split: split_size must be positive"),
    (lambda: v().chunk(0), ValueError, r"chunk: chunks must be positive"),
    (lambda: v().repeat(2), ValueError, r"repeat: 1 sizes for a tensor of 2 dims"),
    (lambda: v().flatten(1, 0), ValueError, r"flatten: start_dim 1 comes after end_dim 0"),
    (lambda: Variable(Tensor.zeros([3])).tril(), ValueError, r"tril: expected at least 2 dims"),
    (lambda: v().tril(0.5), TypeError, r"tril: diagonal must be an int"),
    (lambda: Variable.stack([v(), v().T]), ValueError, r"stack: shapes \[3, 4\] and \[4, 3\] differ"),
    (lambda: Variable(Tensor.zeros([0, 2])).max(), ValueError, r"max: cannot reduce an empty tensor"),
    (lambda: Variable(Tensor.zeros([2, 5, 3])).cross_entropy([[0, 1, 2]]), ValueError,
     r"cross_entropy: targets of shape \[1, 3\] for logits \[2, 5, 3\]; expected \[2, 3\]"),
])
def test_bad_arguments_name_the_op(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
