"""The GPU launch strategies (one element per work-item, local-memory reductions, tiled matmul) give
numpy's answers too. They run here on whatever device is present, with the device marked as a GPU."""

import numpy as np
import pytest

from axonml_autograd import Tensor
from axonml_autograd.device import Device
from axonml_autograd.elementwise_kernels import ew_launch_shape, elementwise
from axonml_autograd.rows import _reduce_layout, reduce, softmax_rows, softmax_rows_backward
from axonml_autograd.tensor import cat


@pytest.fixture(scope="module", autouse=True)
def gpu_strategies_are_chosen(gpu_like):
    assert ew_launch_shape(gpu_like, 1000)[0] == 1 and _reduce_layout(gpu_like, 1, 1000, 1)[0] == "local"


@pytest.mark.parametrize("a_shape,b_shape", [((129,), (129,)), ((3, 1), (3, 4)), ((17, 65), (65,)),
                                             ((2, 1, 5), (3, 1)), ((), (5,))])
def test_one_element_per_work_item_broadcasting_matches_numpy(gpu_like, a_shape, b_shape):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape).astype(np.float32), rng.standard_normal(b_shape).astype(np.float32)
    got = elementwise("a * b - a", [Tensor.from_numpy(a, device=gpu_like), Tensor.from_numpy(b, device=gpu_like)])
    np.testing.assert_allclose(got.numpy(), a * b - a, rtol=1e-6, atol=1e-6)


def test_strided_copies_match_numpy(gpu_like):
    x = np.arange(3 * 17 * 5, dtype=np.float32).reshape(3, 17, 5)
    t = Tensor.from_numpy(x, device=gpu_like)
    np.testing.assert_array_equal(t.transpose(0, 2).numpy(), x.transpose(2, 1, 0))
    np.testing.assert_array_equal(t.narrow(1, 4, 9).numpy(), x[:, 4:13])
    np.testing.assert_array_equal(cat([t, t.narrow(2, 0, 2)], 2).numpy(), np.concatenate([x, x[:, :, :2]], 2))


@pytest.mark.parametrize("shape,axis", [((1000,), None), ((1_000_003,), None), ((3, 200_001), 1),
                                        ((129, 65), 0), ((17, 3, 65), 1), ((5, 7), 1)])
@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_local_memory_reductions_match_numpy(gpu_like, shape, axis, op):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    got = reduce(Tensor.from_numpy(x, device=gpu_like), op, axis).numpy()
    want = getattr(x.astype(np.float64), op)(axis=axis)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 if op != "max" else 0)


def test_local_memory_argmax_keeps_the_first_maximum(gpu_like):
    x = np.zeros((4, 3000), np.float32)
    x[:, [7, 2500]] = 5.0          # a tie: the first index wins, across the two passes too
    x[2, 2999] = 9.0
    values, index = reduce(Tensor.from_numpy(x, device=gpu_like), "argmax", 1)
    assert index.to_vec() == [7, 7, 2999, 7]
    assert values.to_vec() == [5.0, 5.0, 9.0, 5.0]


@pytest.mark.parametrize("cols", [1, 3, 65, 1000, 1025])
@pytest.mark.parametrize("log", [False, True])
def test_work_group_per_row_softmax_matches_numpy(gpu_like, device, cols, log):
    x = np.random.default_rng(cols).standard_normal((3, cols))
    g = np.random.default_rng(cols + 1).standard_normal((3, cols))
    dt = np.float64 if device.fp64 else np.float32
    x, g = x.astype(dt), g.astype(dt)
    shifted = x - x.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    want_y = logp if log else np.exp(logp)
    want_gx = g - np.exp(logp) * g.sum(axis=1, keepdims=True) if log else \
        want_y * (g - (g * want_y).sum(axis=1, keepdims=True))
    y = softmax_rows(Tensor.from_numpy(x, device=gpu_like), log=log)
    gx = softmax_rows_backward(Tensor.from_numpy(g, device=gpu_like), y, log=log)
    tol = 1e-12 if dt == np.float64 else 1e-5
    np.testing.assert_allclose(y.numpy(), want_y, rtol=tol, atol=tol)
    np.testing.assert_allclose(gx.numpy(), want_gx, rtol=tol, atol=tol)


@pytest.mark.parametrize("rows,cols", [(1, 1), (5, 3), (3, 17), (2, 65), (4, 129), (1, 1000)])
def test_fused_cross_entropy_rows_match_numpy_on_both_strategies(gpu_like, device, rows, cols):
    from axonml_autograd.rows import cross_entropy_rows, cross_entropy_rows_backward
    rng = np.random.default_rng(cols)
    dtype = np.float64 if device.fp64 else np.float32
    x = rng.standard_normal((rows, cols)) * 3
    t = rng.integers(0, cols, rows).astype(np.int32)
    t[0] = cols if rows > 1 else t[0]          # an invalid target: its row's loss is NaN, its gradient 0
    m = x.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    valid = (t >= 0) & (t < cols)
    want_loss = np.where(valid, lse - x[np.arange(rows), np.minimum(t, cols - 1)], np.nan)
    p = np.exp(x - lse[:, None])
    p[np.arange(rows)[valid], t[valid]] -= 1.0
    want_grad = np.where(valid[:, None], 2.5 * 0.5 * p, 0.0)
    for dev in (device, gpu_like):
        xt = Tensor.from_numpy(x, dtype=dtype, device=dev)
        tt = Tensor.from_numpy(t, dtype="int32", device=dev)
        loss, l = cross_entropy_rows(xt, tt)
        gx = cross_entropy_rows_backward(Tensor.from_numpy(np.array([2.5]), dtype=dtype, device=dev), xt, tt, l, 0.5)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(loss.numpy(), want_loss, rtol=tol, atol=tol)
        np.testing.assert_allclose(gx.numpy(), want_grad, rtol=tol, atol=tol)


def test_selection_per_element_matches_the_row_path_and_numpy(gpu_like, device):
    from axonml_autograd import Variable
    rng = np.random.default_rng(2)
    x = rng.standard_normal((17, 5)).astype(np.float32)
    idx = np.array([16, 0, 16, 3, 3, 3], np.int32)
    gidx = rng.integers(0, 5, (17, 3)).astype(np.int32)
    results = []
    for dev in (device, gpu_like):
        v = Variable(Tensor.from_numpy(x, device=dev), requires_grad=True)
        sel = v.index_select(0, Tensor.from_numpy(idx, dtype="int32", device=dev))
        gat = v.gather(1, Tensor.from_numpy(gidx, dtype="int32", device=dev))
        (sel.sum() + (gat * 2.0).sum()).backward()
        results.append((sel.numpy(), gat.numpy(), v.grad().numpy()))
    want_grad = np.zeros_like(x)
    np.add.at(want_grad, idx, 1.0)
    np.add.at(want_grad, (np.arange(17)[:, None].repeat(3, 1), gidx), 2.0)
    for sel, gat, grad in results:
        np.testing.assert_array_equal(sel, x[idx])
        np.testing.assert_array_equal(gat, np.take_along_axis(x, gidx, 1))
        np.testing.assert_array_equal(grad, want_grad)


def test_running_sums_and_products_match_numpy_on_both_strategies(gpu_like, device):
    from axonml_autograd import Variable
    x = np.random.default_rng(4).uniform(0.5, 1.5, (3, 17, 5))
    for dev in (device, gpu_like):
        v = Variable(Tensor.from_numpy(x, device=dev))
        np.testing.assert_allclose(v.cumsum(1).numpy(), np.cumsum(x, 1), rtol=1e-6)
        np.testing.assert_allclose(v.prod(2).numpy(), np.prod(x, 2), rtol=1e-6)
