"""arange, linspace, eye, *_like and randint against numpy, on odd sizes; bad sizes name the op."""

import numpy as np
import pytest

from axonml_autograd import (Tensor, Variable, arange, eye, full_like, linspace, manual_seed, ones_like, rand_like,
                             randint, randn_like, zeros_like)


@pytest.mark.parametrize("args", [(5,), (0,), (1,), (-3, 14, 4), (17, 3, -2), (65,), (7, 7)])
def test_integer_arange_is_int64_like_torchs(args):
    got = arange(*args)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got.numpy(), np.arange(*args))


@pytest.mark.parametrize("args", [(1.0, 2.0, 0.25), (0.0, 1.0, 0.1), (-1.5, 2.0, 0.5), (3.0,), (0, 1, 0.3)])
def test_float_arange_matches_numpy(args):
    got = arange(*args)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.numpy(), np.arange(*args, dtype=np.float64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("start,end,steps", [(0.0, 1.0, 5), (-2.0, 3.0, 17), (1.0, 1.0, 3), (0.0, 1.0, 1),
                                             (0.0, 1.0, 0), (2.5, -1.0, 129)])
def test_linspace_hits_both_ends_and_matches_numpy(start, end, steps):
    got = linspace(start, end, steps).numpy()
    want = np.linspace(start, end, steps)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    if steps > 1:
        assert got[0] == np.float32(start) and got[-1] == np.float32(end)


@pytest.mark.parametrize("n,m", [(1, None), (3, None), (17, 5), (2, 65), (0, 3)])
def test_eye_matches_numpy(n, m):
    np.testing.assert_array_equal(eye(n, m).numpy(), np.eye(n, m, dtype=np.float32))


def test_like_constructors_keep_shape_dtype_and_device(device):
    x = Variable(Tensor.from_vec([1.0, 2.0, 3.0], [3, 1], device=device))
    for t, fill in ((zeros_like(x), 0.0), (ones_like(x), 1.0), (full_like(x, 2.5), 2.5)):
        assert t.shape() == [3, 1] and t.dtype == np.float32 and t.device is device
        assert t.to_vec() == [fill] * 3
    assert zeros_like(x, dtype="int32").dtype == np.int32
    manual_seed(3, device)
    a, b = rand_like(x), randn_like(x)
    assert a.shape() == b.shape() == [3, 1] and not np.array_equal(a.numpy(), rand_like(x).numpy())
    np.testing.assert_array_equal(rand_like(x, seed=4).numpy(), Tensor.rand([3, 1], seed=4).numpy())


def test_randint_covers_its_range_and_nothing_else():
    r = randint(-3, 4, [4000], seed=1).numpy()
    assert r.dtype == np.int64 and set(np.unique(r)) == set(range(-3, 4))
    assert abs(np.bincount(r + 3).min() - 4000 / 7) < 120      # roughly uniform


@pytest.mark.parametrize("call,exc,match", [
    (lambda: arange(0, 5, 0), ValueError, r"arange: .* step non-zero"),
    (lambda: arange(0, float("inf")), ValueError, r"arange: start, end and step must be finite"),
    (lambda: linspace(0, 1, -1), ValueError, r"linspace: steps must be non-negative"),
    (lambda: linspace(0, 1, 2.5), TypeError, r"linspace: steps must be an int"),
    (lambda: eye(-1), ValueError, r"eye: sizes must be non-negative"),
    (lambda: randint(5, 5, [3]), ValueError, r"randint: expected low < high"),
])
def test_bad_arguments_name_the_constructor(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_torch_style_top_level_constructors_and_joins():
    import axonml_autograd as ag
    from axonml_autograd import Variable
    assert ag.zeros(2, 3).numpy().tolist() == np.zeros((2, 3)).tolist()
    assert ag.ones([4], dtype="int64").numpy().tolist() == [1, 1, 1, 1]
    assert ag.full([2], 7.5).to_vec() == [7.5, 7.5]
    np.testing.assert_array_equal(ag.rand(5, seed=3).numpy(), ag.rand([5], seed=3).numpy())
    assert ag.from_numpy(np.arange(3)).dtype == np.int64
    a, b = np.arange(6.0).reshape(2, 3), -np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(ag.cat([ag.from_numpy(a), ag.from_numpy(b)], 1).numpy(), np.concatenate([a, b], 1))
    np.testing.assert_array_equal(ag.stack([ag.from_numpy(a), ag.from_numpy(b)], 2).numpy(), np.stack([a, b], 2))
    v = Variable(ag.from_numpy(a), requires_grad=True)
    ag.stack([v, v * 2.0]).sum().backward()
    np.testing.assert_array_equal(v.grad().numpy(), np.full((2, 3), 3.0))


def test_new_zeros_and_friends_take_the_dtype_and_device_of_their_source():
    from axonml_autograd import Variable
    v = Variable(Tensor.from_vec([1, 2], [2], dtype="int64"))
    z = v.new_zeros(2, 3)
    assert z.dtype == np.int64 and z.numpy().tolist() == np.zeros((2, 3)).tolist()
    assert v.new_ones([2]).to_vec() == [1, 1] and v.new_full([2], 7).to_vec() == [7, 7]
    assert v.new_zeros(3, dtype="float64").dtype == np.float64
    t = Tensor.ones([2], dtype="float64")
    assert isinstance(t.new_zeros(4), Tensor) and t.new_zeros(4).dtype == np.float64
