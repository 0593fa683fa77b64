"""Hooks, retain_grad, post-accumulate hooks and grad(): against hand-derived gradients."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, grad


def _x():
    return Variable(Tensor.from_vec([1.0, -2.0, 3.0], [3], dtype="float64"), requires_grad=True)


def test_a_hook_sees_the_gradient_and_may_replace_it():
    x = _x()
    y = x * 3.0
    seen = []
    y.register_hook(lambda g: seen.append(g.to_vec()))
    handle = y.register_hook(lambda g: g * 2.0)     # doubles what flows on
    (y * y).sum().backward()
    want = 2 * 3.0 * np.array([1.0, -2.0, 3.0])     # d(y^2)/dy
    np.testing.assert_allclose(seen[0], want)
    np.testing.assert_allclose(x.grad().numpy(), 2 * 3.0 * want)
    handle.remove()
    handle.remove()                                   # twice is harmless
    x.zero_grad()
    y = x * 3.0
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad().numpy(), 3.0 * want)


def test_leaf_hooks_run_before_accumulation_and_post_hooks_after():
    x = _x()
    order = []
    x.register_hook(lambda g: order.append(("pre", x.grad)) or g * 0.5)
    x.register_post_accumulate_grad_hook(lambda v: order.append(("post", v.grad().to_vec())))
    (x * x).sum().backward()
    assert order[0] == ("pre", None)
    np.testing.assert_allclose(order[1][1], [1.0, -2.0, 3.0])     # 2x halved


def test_retain_grad_keeps_a_non_leafs_gradient_and_sums_over_backwards():
    x = _x()
    y = x * x
    y.retain_grad()
    out = (y * 2.0).sum()
    out.backward(retain_graph=True)
    np.testing.assert_allclose(y.grad().numpy(), [2.0, 2.0, 2.0])
    out.backward()
    np.testing.assert_allclose(y.grad().numpy(), [4.0, 4.0, 4.0])


def test_grad_returns_gradients_without_touching_grad_and_handles_unused_inputs():
    x, z = _x(), _x()
    y = x * x
    (gx, gy) = grad((y * x).sum(), [x, y], retain_graph=True)
    np.testing.assert_allclose(gx.numpy(), 3 * np.array([1.0, -2.0, 3.0]) ** 2)
    np.testing.assert_allclose(gy.numpy(), [1.0, -2.0, 3.0])
    assert x.grad is None
    with pytest.raises(RuntimeError, match=r"grad: input 1 \(shape \[3\]\) was not used"):
        grad((y * x).sum(), [x, z], retain_graph=True)
    assert grad((y * x).sum(), [x, z], allow_unused=True)[1] is None
    with pytest.raises(RuntimeError, match="grad: input 0 is not a Variable that requires grad"):
        grad(x.sum(), Variable(Tensor.zeros([3])))


def test_hooks_refuse_what_cannot_have_them():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Variable(Tensor.zeros([2])).register_hook(lambda g: None)
    with pytest.raises(RuntimeError, match="only a leaf"):
        (_x() * 2.0).register_post_accumulate_grad_hook(lambda v: None)
    x = _x()
    (x * 1.0).register_hook(lambda g: Tensor.zeros([5], dtype="float64"))
    with pytest.raises(RuntimeError, match="expected a tensor of shape"):
        y = x * 1.0
        y.register_hook(lambda g: Tensor.zeros([5], dtype="float64"))
        y.sum().backward()
