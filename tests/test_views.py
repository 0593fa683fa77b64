"""permute / transpose / .T / .mT are views: no copy until a kernel needs contiguous data.

Elementwise kernels read a view in place, matmul reads a transposed view through its transpose flag,
and everything else lays the view out once. Results are checked against numpy in float64."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, default_device
from axonml_autograd.backward import check_gradients
from axonml_autograd.elementwise_kernels import fill

RNG = np.random.default_rng(7)


def _in_use():
    dev = default_device()
    dev.synchronize()
    return dev.memory_stats()["in_use_bytes"]


def test_a_transpose_takes_no_memory_and_follows_writes_to_its_base():
    x = Tensor.from_numpy(RNG.standard_normal((65, 17)))
    before = _in_use()
    y = x.T
    z = x.permute([1, 0])
    assert _in_use() == before                      # no buffer was made
    assert not y.is_contiguous() and y.shape() == [17, 65]
    fill(x, 2.5)
    np.testing.assert_array_equal(z.numpy(), np.full((17, 65), 2.5))


@pytest.mark.parametrize("shape,perm", [((3, 17, 5), (2, 0, 1)), ((1, 65, 3), (1, 2, 0)), ((2, 3, 4, 5), (3, 1, 0, 2)),
                                        ((129, 1), (1, 0)), ((4, 1, 6), (0, 2, 1))])
def test_elementwise_ops_read_permuted_views_in_place(shape, perm):
    a = RNG.standard_normal(shape)
    b = RNG.standard_normal([shape[p] for p in perm])
    ta = Tensor.from_numpy(a)
    view = ta.permute(list(perm))
    before = _in_use()
    got = view * Tensor.from_numpy(b) + view.apply("exp")
    want = np.transpose(a, perm) * b + np.exp(np.transpose(a, perm))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13)
    assert view._view is not None or view.is_contiguous()   # still a view (or trivially contiguous)
    del got
    assert _in_use() <= before + 2 * b.nbytes                # no laid-out copy of the view was kept


def test_permutes_compose_and_undoing_one_is_contiguous_again():
    a = RNG.standard_normal((3, 4, 5))
    t = Tensor.from_numpy(a)
    twice = t.permute([2, 0, 1]).permute([1, 2, 0])
    np.testing.assert_array_equal(twice.numpy(), a)
    assert twice.is_contiguous()
    v = t.permute([1, 2, 0]).transpose(0, 2)
    np.testing.assert_array_equal(v.numpy(), np.transpose(a, (1, 2, 0)).swapaxes(0, 2))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 17, 5), (65, 3, 129), (17, 65, 33)])
def test_matmul_reads_transposed_views_in_place(m, k, n):
    a = RNG.standard_normal((k, m))
    b = RNG.standard_normal((n, k))
    ta, tb = Tensor.from_numpy(a), Tensor.from_numpy(b)
    got = ta.T @ tb.T
    np.testing.assert_allclose(got.numpy(), a.T @ b.T, rtol=1e-12, atol=1e-12)
    # Batched, through .mT on Variables.
    c = RNG.standard_normal((2, k, m))
    d = RNG.standard_normal((2, k, n))
    vc, vd = Variable(Tensor.from_numpy(c)), Variable(Tensor.from_numpy(d))
    np.testing.assert_allclose((vc.mT @ vd).numpy(), np.swapaxes(c, -1, -2) @ d, rtol=1e-12, atol=1e-12)
    if m > 1 and k > 1:
        assert ta.T._view is not None                  # the operands stayed views


def test_kernels_that_need_contiguous_data_lay_a_view_out_once():
    a = RNG.standard_normal((17, 3, 65))
    v = Tensor.from_numpy(a).permute([2, 0, 1])
    want = np.transpose(a, (2, 0, 1))
    np.testing.assert_allclose(v.sum(axis=1).numpy(), want.sum(axis=1), rtol=1e-13)
    np.testing.assert_allclose(v.max(axis=2).numpy(), want.max(axis=2))
    np.testing.assert_array_equal(v.reshape([65, -1]).numpy(), want.reshape(65, -1))
    np.testing.assert_array_equal(v.narrow(1, 2, 5).numpy(), want[:, 2:7])
    np.testing.assert_array_equal(v.clone().numpy(), want)
    np.testing.assert_array_equal(v.contiguous().numpy(), want)


@pytest.mark.parametrize("shape,perm", [((3, 5), (1, 0)), ((1, 17, 3), (2, 0, 1)), ((2, 3, 4), (1, 2, 0))])
def test_permute_and_transpose_gradients_match_finite_differences(shape, perm):
    x = Variable(Tensor.from_numpy(RNG.standard_normal(shape)), requires_grad=True)
    w = Variable(Tensor.from_numpy(RNG.standard_normal([shape[p] for p in perm])))
    check_gradients(lambda x: (x.permute(*perm) * w).tanh().sum(), [x])
    if len(shape) == 2:
        y = Variable(Tensor.from_numpy(RNG.standard_normal((shape[0], 4))), requires_grad=True)
        check_gradients(lambda x, y: (x.T @ y).sum(), [x, y])
        check_gradients(lambda x, y: (y.T @ x).pow(2.0).sum(), [x, y])


def test_an_in_place_write_to_the_base_of_a_saved_view_is_caught():
    x = Variable(Tensor.from_numpy(RNG.standard_normal((3, 4))), requires_grad=True)
    base = Tensor.from_numpy(RNG.standard_normal((4, 3)))
    y = (x * base.T).sum()
    fill(base, 0.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


def test_views_replay_under_capture():
    @capture
    def f(a, b):
        return (a.T * 2.0 + b).sum(axis=0), a.T @ a

    for k in range(3):
        a, b = RNG.standard_normal((5, 3)), RNG.standard_normal((3, 5))
        s, p = f(Tensor.from_numpy(a), Tensor.from_numpy(b))
        np.testing.assert_allclose(s.numpy(), (a.T * 2.0 + b).sum(axis=0), rtol=1e-13)
        np.testing.assert_allclose(p.numpy(), a.T @ a, rtol=1e-12)
    assert f.replays >= 1
