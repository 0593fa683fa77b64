"""Softmax, log-softmax and cross-entropy rows on either side of the vector width (CPUs run the rows
a vector at a time, then a scalar tail): values and gradients against numpy in float64, NaN rows."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable

COLS = [1, 3, 15, 16, 17, 31, 33, 65, 1000]


def _log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("cols", COLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_match_numpy_on_both_sides_of_the_vector_width(cols, dtype, fp64):
    rng = np.random.default_rng(cols)
    x = rng.standard_normal((5, cols)) * 4
    x[2, cols // 2] = np.nan                                  # a NaN row stays NaN
    g = rng.standard_normal((5, cols))
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)
    for log in (False, True):
        v = Variable(Tensor.from_numpy(x, dtype=dtype), requires_grad=True)
        y = v.log_softmax(1) if log else v.softmax(1)
        want = _log_softmax(x) if log else np.exp(_log_softmax(x))
        np.testing.assert_allclose(y.numpy(), want, **tol)
        y.backward(Tensor.from_numpy(g, dtype=dtype))
        s = np.exp(_log_softmax(x))
        want_g = g - s * g.sum(1, keepdims=True) if log else s * (g - (g * s).sum(1, keepdims=True))
        np.testing.assert_allclose(v.grad().numpy(), want_g, **tol)
    targets = rng.integers(0, cols, 5)
    v = Variable(Tensor.from_numpy(x, dtype=dtype), requires_grad=True)
    loss = v.cross_entropy(targets.tolist())
    lp = _log_softmax(x)
    assert np.isnan(loss.item())                               # the NaN row reaches the mean
    keep = [0, 1, 3, 4]
    v2 = Variable(Tensor.from_numpy(x[keep], dtype=dtype), requires_grad=True)
    loss2 = v2.cross_entropy(targets[keep].tolist())
    np.testing.assert_allclose(loss2.item(), -lp[keep, targets[keep]].mean(), **tol)
    loss2.backward()
    onehot = np.eye(cols)[targets[keep]]
    np.testing.assert_allclose(v2.grad().numpy(), (np.exp(lp[keep]) - onehot) / 4, **tol)
