"""Saved-tensor safety: an in-place write after the forward pass makes backward refuse, never lie."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, init
from axonml_autograd import tensor as T
from axonml_autograd.elementwise_kernels import elementwise, fill
from axonml_autograd.serialization import load_into, save
from axonml_autograd.optim import SGD, Adam

MODIFIED = r"modified in place after the forward pass"


def param(values, shape=None):
    return Variable(Tensor.from_vec(values, shape or [len(values)]), requires_grad=True)


def test_set_data_writes_into_the_same_buffer_and_bumps_the_version():
    w = param([1.0, 2.0])
    t = w.data()
    before, buf = t.version, t.buffer
    assert w.set_data(Tensor.from_vec([5.0, 6.0], [2])) is w
    assert w.data() is t and t.buffer is buf
    assert t.version == before + 1
    assert w.to_vec() == [5.0, 6.0]
    w.set_data(Variable(Tensor.from_vec([7.0, 8.0], [2])))
    assert w.to_vec() == [7.0, 8.0] and t.version == before + 2


@pytest.mark.parametrize("bad, exc, match", [
    (Tensor.from_vec([1.0, 2.0, 3.0], [3]), ValueError, r"set_data: tensor has shape \[3\], the variable has shape \[2\]"),
    (Tensor.from_numpy(np.array([1, 2], dtype=np.int32)), TypeError, r"set_data: tensor has dtype int32"),
    ([1.0, 2.0], TypeError, r"set_data: tensor must be a Tensor or Variable, got list"),
])
def test_set_data_refuses_a_mismatched_tensor_and_changes_nothing(bad, exc, match):
    w = param([1.0, 2.0])
    v = w.data().version
    with pytest.raises(exc, match=match):
        w.set_data(bad)
    assert w.to_vec() == [1.0, 2.0] and w.data().version == v


def test_set_data_on_a_saved_tensor_makes_backward_raise():
    w = param([1.0, 2.0])
    x = param([3.0, 4.0])
    y = (w * x).sum()
    w.set_data(Tensor.from_vec([10.0, 20.0], [2]))
    with pytest.raises(RuntimeError, match="MulBackward: a tensor it saved for backward was " + MODIFIED):
        y.backward()


@pytest.mark.parametrize("make_opt", [lambda ps: SGD(ps, lr=0.1), lambda ps: SGD(ps, lr=0.1, momentum=0.9),
                                      lambda ps: Adam(ps, lr=0.1)], ids=["sgd", "sgd-momentum", "adam"])
def test_optimizer_step_between_forward_and_backward_raises(make_opt):
    w = param([1.0, 2.0, 3.0, 4.0], [2, 2])
    x = Variable(Tensor.from_vec([1.0, 0.5, -1.0, 2.0], [2, 2]))
    opt = make_opt([w])
    (w * w).sum().backward()
    loss = x.matmul(w).tanh().sum()          # MatmulBackward saved w
    opt.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_a_graph_that_saved_nothing_modified_still_backpropagates_after_a_step():
    w = param([1.0, 2.0])
    x = Variable(Tensor.from_vec([3.0, 4.0], [2]))
    opt = SGD([w], lr=0.1)
    (w * w).sum().backward()
    y = (x + w).sum()                         # AddBackward saves neither input
    opt.step()
    w.zero_grad()
    y.backward()
    assert w.grad().to_vec() == [1.0, 1.0]


def test_raw_in_place_tensor_op_on_a_saved_tensor_makes_backward_raise():
    w = param([1.0, 2.0])
    y = w.exp().sum()                          # ExpBackward saves its output, not w
    out = y.grad_fn.next_functions()[0]
    saved = out.saved_tensors[0]
    elementwise("a * L(2.0)", [saved], out=saved.view())
    with pytest.raises(RuntimeError, match="ExpBackward: .*" + MODIFIED):
        y.backward()


def test_init_fill_on_a_saved_parameter_makes_backward_raise():
    w = param([1.0, 2.0])
    y = (w * w).sum()
    init.constant_(w, 0.5)
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward()


def test_loading_a_checkpoint_into_a_saved_parameter_makes_backward_raise(tmp_path):
    w = param([1.0, 2.0])
    save(tmp_path / "c.npz", {"w": w})
    y = (w * w).sum()
    load_into(tmp_path / "c.npz", {"w": w})
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward()


def test_error_tells_the_saved_and_current_versions():
    w = param([1.0])
    y = (w * 3.0).pow(2.0).sum()               # PowBackward saved w * 3, which is not a leaf
    x3 = y.grad_fn.next_functions()[0].saved_tensors[0]
    fill(x3, 0.0)
    with pytest.raises(RuntimeError, match=r"PowBackward: .*version 1, saved at version 0"):
        y.backward()


def test_retained_graph_refuses_a_second_backward_after_an_update():
    w = param([1.0, 2.0])
    y = (w * w).sum()
    y.backward(retain_graph=True)
    assert w.grad().to_vec() == [2.0, 4.0]
    SGD([w], lr=0.5).step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward()


# A reshape shares its buffer with the original tensor. The version has to follow the buffer, or a
# graph that saved the reshaped tensor silently uses the updated values. These two tests pin that.

def test_step_after_a_forward_that_saved_a_reshape_of_the_parameter_raises():
    w = param([1.0, 2.0, 3.0])
    x = Variable(Tensor.from_vec([1.0] * 6, [2, 3]), requires_grad=True)
    y = x.matmul(w)                            # w (1-D) is reshaped to [3, 1] and saved that way
    opt = SGD([w], lr=0.5)
    (w * w).sum().backward()
    opt.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.sum().backward()


def test_set_data_after_a_forward_that_saved_a_user_reshape_raises():
    w = param([1.0, 2.0, 3.0, 4.0])
    y = (w.reshape([2, 2]) * w.reshape([2, 2])).sum()
    w.set_data(Tensor.from_vec([0.0] * 4, [4]))
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward()
