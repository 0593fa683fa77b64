"""Sampling from the device Philox generator: multinomial (with and without replacement), bernoulli,
in-place uniform_/normal_: statistics with fixed seeds, fresh draws at every captured replay (the same as
eager calls from the same generator state), and torch's errors."""

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Tensor, Variable, capture, no_grad, random
from axonml_autograd.device import default_device

needs_fp64 = pytest.mark.skipif(not default_device().fp64, reason="device lacks cl_khr_fp64")
N = 20000


def _freq(idx, n):
    idx = np.asarray(idx).reshape(-1)
    return np.bincount(idx, minlength=n)[:n] / idx.size


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=needs_fp64)])
def test_with_replacement_frequencies_follow_unnormalised_weights(dtype):
    w = np.array([2.0, 0.0, 5.0, 1.0, 0.5], np.float64)
    idx = ag.multinomial(Tensor.from_numpy(w, dtype=dtype), N, replacement=True, seed=12)
    assert idx.shape() == [N] and idx.dtype == np.int32
    f = _freq(idx.numpy(), 5)
    assert f[1] == 0.0
    np.testing.assert_allclose(f, w / w.sum(), atol=0.02)


def test_with_replacement_2d_rows_are_independent_distributions():
    w = np.array([[1.0, 1.0, 2.0], [0.0, 0.0, 3.0], [9.0, 1.0, 0.0]], np.float32)
    idx = Variable(Tensor.from_numpy(w)).multinomial(N // 2, replacement=True, seed=4)
    assert isinstance(idx, Variable) and idx.shape() == [3, N // 2]
    got = idx.data().numpy()
    for r in range(3):
        np.testing.assert_allclose(_freq(got[r], 3), w[r] / w[r].sum(), atol=0.02)


def test_without_replacement_never_repeats_and_skips_zero_weights():
    w = np.array([0.0, 1.0, 3.0, 0.0, 2.0, 4.0, 0.0], np.float32)
    rows = 3000
    idx = ag.multinomial(Tensor.from_numpy(np.tile(w, (rows, 1))), 4, seed=9).numpy()
    assert idx.shape == (rows, 4)
    assert all(len(set(r)) == 4 for r in idx)            # no index twice in a row
    assert set(np.unique(idx)) == {1, 2, 4, 5}           # zero weights never drawn
    # The first pick is a plain draw from w / sum(w); the second one from what is left.
    np.testing.assert_allclose(_freq(idx[:, 0], 7), w / w.sum(), atol=0.02)
    p = w / w.sum()
    second = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(7) if i != j and p[i] > 0) for j in range(7)])
    np.testing.assert_allclose(_freq(idx[:, 1], 7), second, atol=0.025)


def test_without_replacement_all_categories_is_a_permutation_zeros_last():
    w = Tensor.from_vec([0.0, 1.0, 0.0, 2.0, 3.0], [5])
    for s in range(5):
        got = ag.multinomial(w, 5, seed=s).to_vec()
        assert sorted(got) == [0, 1, 2, 3, 4] and set(got[:3]) == {1, 3, 4}


def test_generators_seeds_and_fresh_draws():
    w = Tensor.from_vec([1.0] * 17, [17])
    assert ag.multinomial(w, 8, seed=3).to_vec() == ag.multinomial(w, 8, seed=3).to_vec()
    ag.manual_seed(5)
    a, b = ag.multinomial(w, 8).to_vec(), ag.multinomial(w, 8).to_vec()
    assert a != b                                        # the device generator moves on
    ag.manual_seed(5)
    assert ag.multinomial(w, 8).to_vec() == a
    g1, g2 = random.Generator(default_device(), 77), random.Generator(default_device(), 77)
    first = w.multinomial(8, generator=g1).to_vec()
    assert first == w.multinomial(8, generator=g2).to_vec() and g1.offset == g2.offset > 0
    assert w.multinomial(8, generator=g1).to_vec() != first           # g1 moved on
    dev_offset = random.generator().offset
    w.multinomial(8, generator=g1)
    assert random.generator().offset == dev_offset    # the device generator was not touched


def test_captured_draws_are_fresh_each_replay_and_equal_eager():
    w = Tensor.from_vec([1.0, 2.0, 0.0, 3.0, 1.0, 1.0], [2, 3])

    def draw(p):
        return (ag.multinomial(p, 3, replacement=True), ag.multinomial(p, 2), ag.bernoulli(p * 0.25),
                Tensor.zeros([5]).uniform_(-1.0, 2.0), Tensor.zeros([3]).normal_(1.0, 0.5))

    ag.manual_seed(21)
    eager = [[t.numpy().copy() for t in draw(w)] for _ in range(4)]
    ag.manual_seed(21)
    f = capture(draw)
    replayed = [[t.numpy().copy() for t in f(w)] for _ in range(4)]
    assert f.replays == 3
    for e, r in zip(eager, replayed):
        for a, b in zip(e, r):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(eager[0][0], e[0]) for e in eager[1:])   # fresh draws each call


def test_bernoulli_frequencies_and_exact_ends():
    p = Tensor.from_numpy(np.repeat(np.array([0.0, 0.2, 0.7, 1.0], np.float32), N // 4))
    got = ag.bernoulli(p, seed=8).numpy().reshape(4, -1)
    assert set(np.unique(got)) <= {0.0, 1.0}
    assert got[0].sum() == 0 and got[3].min() == 1.0
    np.testing.assert_allclose(got.mean(1), [0.0, 0.2, 0.7, 1.0], atol=0.02)
    x = Tensor.zeros([N])
    assert x.bernoulli_(0.3, seed=2) is x and abs(x.numpy().mean() - 0.3) < 0.02
    v = Variable(Tensor.zeros([N // 4, 4]))
    v.bernoulli_(Tensor.from_vec([0.0, 0.5, 0.9, 1.0], [4]))
    np.testing.assert_allclose(v.data().numpy().mean(0), [0.0, 0.5, 0.9, 1.0], atol=0.03)
    assert ag.bernoulli(Tensor.zeros([3]), p=1.0).to_vec() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=needs_fp64)])
def test_uniform_and_normal_in_place(dtype):
    x = Tensor.zeros([N + 3], dtype)
    v0 = x.version
    assert x.uniform_(-2.0, 3.0, seed=1) is x and x.version > v0
    u = x.numpy()
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.05
    np.testing.assert_array_equal(u, random.uniform([N + 3], 1, dtype, low=-2.0, high=3.0).numpy())
    x.normal_(1.5, 0.5, seed=2)
    assert abs(x.numpy().mean() - 1.5) < 0.02 and abs(x.numpy().std() - 0.5) < 0.02
    w = Variable(Tensor.zeros([17], dtype), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.uniform_()
    with no_grad():
        assert w.normal_() is w
    assert np.all(w.data().numpy() != 0) and w.requires_grad()


def test_errors_are_torchs():
    p = Tensor.from_vec([0.2, 0.8], [2])
    with pytest.raises(ValueError, match="n_sample > prob_dist.size"):
        ag.multinomial(p, 3)
    with pytest.raises(ValueError, match="n_sample <= 0"):
        ag.multinomial(p, 0)
    with pytest.raises(ValueError, match="element < 0"):
        ag.multinomial(Tensor.from_vec([-1.0, 1.0], [2]), 1)
    with pytest.raises(ValueError, match="inf, nan"):
        ag.multinomial(Tensor.from_vec([float("nan"), 1.0], [2]), 1, True)
    with pytest.raises(ValueError, match="sum of probabilities <= 0"):
        ag.multinomial(Tensor.from_vec([1.0, 1.0, 0.0, 0.0], [2, 2]), 1, True)
    with pytest.raises(ValueError, match="1 or 2 dim"):
        ag.multinomial(Tensor.ones([2, 2, 2]), 1)
    with pytest.raises(TypeError, match="floating-point"):
        ag.multinomial(Tensor.ones([2], "int32"), 1)
    with pytest.raises(ValueError, match="generator or a seed"):
        ag.multinomial(p, 1, generator=random.generator(), seed=1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ag.bernoulli(Tensor.from_vec([1.5], [1]))
    with pytest.raises(ValueError, match="low must not exceed high"):
        Tensor.zeros([2]).uniform_(1.0, 0.0)
    with pytest.raises(ValueError, match="std must be non-negative"):
        Tensor.zeros([2]).normal_(0.0, -1.0)
