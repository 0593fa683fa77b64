"""Indexing and selection against numpy: keys of every kind on odd shapes, device index tensors,
out-of-range indices, and errors that name the op."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable
import axonml_autograd.nn.functional as F

X = np.arange(3 * 17 * 5, dtype=np.float64).reshape(3, 17, 5) / 7


@pytest.mark.parametrize("key", [0, -1, (2, 16, 4), slice(1, None), (slice(None), slice(3, 16, 4)), (Ellipsis, 0),
                                 (None, Ellipsis, None), (1, None, slice(None, None, 2)), ([2, 0, 2],),
                                 (slice(None), [16, 0, 1, 16], -2), (Ellipsis, [4, 4]), (slice(5, 2),)],
                         ids=str)
def test_indexing_matches_numpy(key):
    got = Variable(Tensor.from_numpy(X))[key].numpy()
    want = X[key]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want.astype(got.dtype))
    np.testing.assert_array_equal(Tensor.from_numpy(X)[key].numpy(), want.astype(got.dtype))


def test_a_device_index_tensor_selects_and_its_gradient_sums_repeats_deterministically():
    w = Variable(Tensor.from_numpy(X[0]), requires_grad=True)
    idx = Tensor.from_numpy(np.array([3, 3, 16, 0, 3], np.int32), dtype="int32")
    grads = []
    for _ in range(3):
        w.zero_grad()
        (w[idx] * Variable(Tensor.from_numpy(np.arange(25.0).reshape(5, 5)))).sum().backward()
        grads.append(w.grad().numpy())
    want = np.zeros((17, 5))
    np.add.at(want, [3, 3, 16, 0, 3], np.arange(25.0).reshape(5, 5))
    np.testing.assert_allclose(grads[0], want, rtol=1e-6)
    assert all(np.array_equal(g, grads[0]) for g in grads)          # the same bits every time


def test_an_out_of_range_device_index_reads_nothing_out_of_bounds_and_gives_nan():
    w = Variable(Tensor.from_numpy(X[0]))
    rows = X[0].shape[0]
    got = w.index_select(0, Tensor.from_numpy(np.array([1, 17, -rows - 1, 2, -1], np.int32), dtype="int32")).numpy()
    np.testing.assert_array_equal(got[[0, 3, 4]], X[0][[1, 2, -1]].astype(got.dtype))   # -1: the last row
    assert np.isnan(got[[1, 2]]).all()


def test_embedding_looks_up_rows_for_indices_of_any_shape():
    w = Variable(Tensor.from_numpy(X[1]), requires_grad=True)
    ids = np.array([[[0, 16]], [[5, 5]]])
    np.testing.assert_array_equal(F.embedding(ids, w).numpy(), X[1][ids].astype(w.dtype))
    device_ids = Tensor.from_numpy(ids.astype(np.int32), dtype="int32")
    np.testing.assert_array_equal(F.embedding(device_ids, w).numpy(), X[1][ids].astype(w.dtype))


@pytest.mark.parametrize("call,exc,match", [
    (lambda x: x[3], IndexError, r"index: 3 is out of range for dim 0 of size 3"),
    (lambda x: x[0, 0, 0, 0], IndexError, r"index: too many indices \(4\) for a tensor of 3 dimensions"),
    (lambda x: x[::-1], ValueError, r"index: slice steps must be positive"),
    (lambda x: x[..., ...], IndexError, r"single ellipsis"),
    (lambda x: x[[0], [1]], IndexError, r"only one axis may be indexed by a list or tensor"),
    (lambda x: x[:, [17]], IndexError, r"index_select: index 17 is out of range for an axis of size 17"),
    (lambda x: x["a"], TypeError, r"index: expected ints, slices"),
    (lambda x: x[:, [0.5]], TypeError, r"index_select: indices must be integers"),
    (lambda x: x.index_select(0, Tensor.from_vec([0.0], [1])), TypeError, r"index tensor must be int32"),
    (lambda x: x.gather(1, np.zeros((2, 2), np.int32)), ValueError, r"gather: index shape \[2, 2\] must equal"),
    (lambda x: F.embedding([0], x), ValueError, r"embedding: weight must be \[num_embeddings, dim\]"),
])
def test_bad_keys_name_the_op(call, exc, match):
    with pytest.raises(exc, match=match):
        call(Variable(Tensor.from_numpy(X)))
