"""sort / argsort / topk against torch's stable sort (ties keep their order, NaN is the largest),
on odd sizes, along every dim, for every dtype; gradients against finite differences; capture."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture
from axonml_autograd.backward import check_gradients

RNG = np.random.default_rng(5)


def _ref_sort(a, axis, descending):
    """numpy's stable argsort, with torch's descending order (unequal keys reversed, ties in order, NaN first)."""
    if not descending:
        idx = np.argsort(a, axis=axis, kind="stable")
    else:
        key = -a.astype(np.float64) if a.dtype.kind != "b" else -a.astype(np.int64)
        key = np.where(np.isnan(key), -np.inf, key)
        idx = np.argsort(key, axis=axis, kind="stable")
    return np.take_along_axis(a, idx, axis), idx


@pytest.mark.parametrize("shape", [(1,), (3,), (17,), (65, 3), (2, 129), (4, 3, 5)])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_matches_a_stable_reference_along_every_dim(shape, descending):
    a = np.round(RNG.standard_normal(shape) * 2) / 2          # many ties
    a.reshape(-1)[::7] = np.nan
    t = Variable(Tensor.from_numpy(a))
    for axis in range(len(shape)):
        values, indices = t.sort(axis, descending=descending)
        want_v, want_i = _ref_sort(a, axis, descending)
        np.testing.assert_array_equal(indices.numpy(), want_i)
        np.testing.assert_array_equal(values.numpy(), want_v)
        np.testing.assert_array_equal(t.argsort(axis, descending=descending).numpy(), want_i)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "float32"])
def test_sort_of_other_dtypes(dtype):
    a = RNG.integers(-5, 5, (3, 17)).astype(dtype)
    values, indices = Variable(Tensor.from_numpy(a)).sort(1, descending=True)
    want_v, want_i = _ref_sort(a, 1, True)
    assert values.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(values.numpy(), want_v)
    np.testing.assert_array_equal(indices.numpy(), want_i)


def test_against_torch_including_topk(fp64):
    torch = pytest.importorskip("torch")
    a = np.round(RNG.standard_normal((5, 33)) * 3) / 3
    t = Variable(Tensor.from_numpy(a))
    tv, ti = torch.sort(torch.from_numpy(a), stable=True, dim=1, descending=True)
    v, i = t.sort(1, descending=True)
    np.testing.assert_array_equal(v.numpy(), tv.numpy())
    np.testing.assert_array_equal(i.numpy(), ti.numpy())
    b = RNG.standard_normal((6, 40))                          # distinct values: topk is unambiguous
    for largest in (True, False):
        tk = torch.topk(torch.from_numpy(b), 5, dim=1, largest=largest)
        k = Variable(Tensor.from_numpy(b)).topk(5, 1, largest=largest)
        np.testing.assert_array_equal(k.values.numpy(), tk.values.numpy())
        np.testing.assert_array_equal(k.indices.numpy(), tk.indices.numpy())


@pytest.mark.parametrize("shape,dim", [((17,), 0), ((3, 5), 0), ((4, 65), 1)])
def test_sort_and_topk_gradients_match_finite_differences(shape, dim, fp64):
    a = RNG.permutation(np.prod(shape)).reshape(shape) * 0.1 + RNG.uniform(0, 0.01, shape)   # distinct
    x = Variable(Tensor.from_numpy(a), requires_grad=True)
    w = Variable(Tensor.from_numpy(RNG.standard_normal(shape)))
    check_gradients(lambda x: (x.sort(dim).values * w).sum() + x.topk(2, dim).values.pow(2.0).sum(), [x])


def test_bad_arguments_and_capture():
    x = Variable(Tensor.from_vec([3.0, 1.0, 2.0], [3]))
    with pytest.raises(ValueError, match=r"topk: k=4 is out of range for a dim of size 3"):
        x.topk(4)
    with pytest.raises(IndexError, match="sort dim"):
        x.sort(2)

    @capture
    def largest(t):
        return Variable(t).topk(2).values

    for _ in range(3):
        a = RNG.standard_normal(9).astype(np.float32)
        np.testing.assert_array_equal(largest(Tensor.from_numpy(a)).numpy(), np.sort(a)[::-1][:2])
    assert largest.replays >= 1
