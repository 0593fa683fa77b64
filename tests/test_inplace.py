"""In-place ops as torch has them: writes into the same buffer under no_grad (the manual SGD idiom),
a refusal on a leaf that requires grad in grad mode, out-of-place rebinding inside a graph, views
written through, version counters bumped so saved tensors stay honest."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, no_grad


def test_manual_sgd_under_no_grad_updates_the_parameter_itself():
    w0 = np.array([1.0, -2.0, 3.0])
    w = Variable(Tensor.from_numpy(w0), requires_grad=True)
    params = [w]
    for _ in range(3):
        w.zero_grad()
        (w * w).sum().backward()
        with no_grad():
            for p in params:
                p -= 0.25 * Variable(p.grad())
    assert params[0] is w and w.is_leaf() and w.requires_grad()
    np.testing.assert_allclose(w.numpy(), w0 * 0.5 ** 3, rtol=1e-15)   # each step halves w


def test_a_leaf_that_requires_grad_refuses_in_place_in_grad_mode():
    w = Variable(Tensor.zeros([2]), requires_grad=True)
    for op in (lambda: w.__iadd__(1.0), lambda: w.mul_(2.0), lambda: w.zero_(), lambda: w.copy_(Tensor.ones([2]))):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad.*in-place"):
            op()


def test_in_place_inside_a_graph_keeps_the_gradients_right():
    x = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    h = x * 3.0
    h += x           # rebinds h to h + x
    h *= x           # (3x + x) * x = 4x^2
    h.sum().backward()
    np.testing.assert_allclose(x.grad().numpy(), [8.0, 16.0])
    with pytest.raises(NotImplementedError, match="fill_: overwriting a result that is part of a graph"):
        h.fill_(0.0)


@pytest.mark.parametrize("shape", [(1,), (3,), (17, 65)])
def test_tensor_in_place_ops_match_numpy_and_bump_the_version(shape):
    rng = np.random.default_rng(len(shape))
    a, b = rng.standard_normal(shape), rng.standard_normal(shape[-1:])
    t = Tensor.from_numpy(a)
    v0 = t.version
    t += Tensor.from_numpy(b)
    t *= 2.0
    t -= 1.0
    t /= Tensor.from_numpy(np.abs(b) + 1)
    np.testing.assert_allclose(t.numpy(), ((a + b) * 2.0 - 1.0) / (np.abs(b) + 1), rtol=1e-13)
    assert t.version >= v0 + 4


def test_in_place_through_a_view_writes_into_the_tensor_it_views():
    base = Tensor.from_numpy(np.arange(6.0).reshape(2, 3))
    view = base.T
    view += Tensor.from_vec([10.0, 20.0], [2])      # [3, 2] + [2]: column k of the view gets +10, +20
    np.testing.assert_array_equal(base.numpy(), np.arange(6.0).reshape(2, 3) + np.array([[10.0], [20.0]]))
    view.zero_()
    assert base.to_vec() == [0.0] * 6


def test_in_place_refuses_a_result_of_another_kind_or_shape():
    i = Tensor.from_numpy(np.arange(3))
    with pytest.raises(TypeError, match="float32 result cannot be written into a int64 tensor"):
        i += 0.5
    i *= 3
    assert i.dtype == np.int64 and i.to_vec() == [0, 3, 6]
    with pytest.raises(ValueError, match=r"shape \[2, 3\] does not fit shape \[3\]"):
        Tensor.zeros([3]).copy_(Tensor.zeros([2, 3]))


def test_writing_a_saved_tensor_in_place_is_caught_at_backward():
    x = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    c = Variable(Tensor.from_vec([3.0, 4.0], [2]))
    y = (x * c).sum()
    with no_grad():
        c += 1.0
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


def test_a_manual_sgd_step_replays_under_capture_like_its_eager_twin():
    from axonml_autograd import capture

    def make():
        w = Variable(Tensor.from_vec([1.0, -2.0, 3.0], [3], dtype="float64"), requires_grad=True)

        def step(x):
            nonlocal w   # `w -= ...` rebinds the name (to the same Variable: it is updated in place)
            w.zero_grad()
            ((w * Variable(x)).sum() ** 2).backward()
            with no_grad():
                w -= 0.01 * Variable(w.grad())
            return w.data()
        return w, step

    w_eager, eager = make()
    w_cap, step = make()
    captured = capture(step)
    for k in range(4):
        x = Tensor.from_vec([1.0, 0.5 * k, -1.0], [3], dtype="float64")
        eager(x)
        captured(x)
        np.testing.assert_array_equal(w_cap.numpy(), w_eager.numpy())
    assert captured.replays >= 1
