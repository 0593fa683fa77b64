"""Every example of the crate's README, with the numbers it states, and the crate's in-module tests
ported by behaviour (backward.rs, variable.rs, no_grad.rs)."""

import numpy as np

from axonml_autograd import (EnableGradGuard, NoGradGuard, Tensor, Variable, enable_grad, inference_mode,
                             is_grad_enabled, is_inference_mode, no_grad)
from axonml_autograd.backward import gradcheck, numerical_gradient


def vec(values, shape, **kw):
    return Tensor.from_vec(values, shape, **kw)


# ------------------------------------------------------------------------------------------------------
# README examples
# ------------------------------------------------------------------------------------------------------

def test_readme_basic_example_gradient_of_x_squared_is_4_and_6():
    x = Variable.new(vec([2.0, 3.0], [2]), True)
    y = x.pow(2.0)
    loss = y.sum()
    loss.backward()
    grad = x.grad()
    assert grad is not None
    assert grad.shape() == [2]
    np.testing.assert_allclose(grad.to_vec(), [4.0, 6.0], rtol=1e-6)


def test_readme_chained_operations_give_36_and_24():
    a = Variable.new(vec([2.0], [1]), True)
    b = Variable.new(vec([3.0], [1]), True)
    c = a * b
    d = c.pow(2.0)
    loss = d.sum()
    loss.backward()
    np.testing.assert_allclose(a.grad().to_vec(), [36.0], rtol=1e-6)
    np.testing.assert_allclose(b.grad().to_vec(), [24.0], rtol=1e-6)


def test_readme_no_grad_closure_and_guard_do_not_track_and_restore_tracking():
    x = Variable.new(vec([1.0, 2.0], [2]), True)
    output = no_grad(lambda: x.relu())
    assert not output.requires_grad()
    assert output.grad_fn is None
    np.testing.assert_allclose(output.to_vec(), [1.0, 2.0])

    guard = NoGradGuard()
    try:
        y = x.sigmoid()
        assert not y.requires_grad()
        assert not is_grad_enabled()
    finally:
        guard.exit()
    assert is_grad_enabled()
    z = x.sigmoid()
    assert z.requires_grad() and z.grad_fn is not None


def test_readme_loss_functions_mse_backward_and_bce_value():
    predictions = Variable.new(vec([0.5, 1.5, 2.5], [3]), True)
    targets = Variable.new(vec([1.0, 2.0, 3.0], [3]), False)
    loss = predictions.mse_loss(targets)
    np.testing.assert_allclose(loss.item(), 0.25, rtol=1e-6)
    loss.backward()
    # d/dp mean((p - t)^2) = 2 (p - t) / n = -1/3 each
    np.testing.assert_allclose(predictions.grad().to_vec(), [-1 / 3] * 3, rtol=1e-5)
    assert targets.grad is None

    probs = Variable.new(vec([0.7, 0.3], [2]), True)
    labels = Variable.new(vec([1.0, 0.0], [2]), False)
    bce_loss = probs.binary_cross_entropy(labels)
    np.testing.assert_allclose(bce_loss.item(), -np.log(0.7), rtol=1e-5)
    assert bce_loss.requires_grad()


def test_readme_matrix_operations_grad_shapes_are_3x4_and_4():
    x = Variable.new(vec([1.0] * 6, [2, 3]), False)
    w = Variable.new(vec([0.1] * 12, [3, 4]), True)
    b = Variable.new(vec([0.0] * 4, [4]), True)
    y = x.matmul(w).add_var(b)
    np.testing.assert_allclose(y.to_vec(), [0.3] * 8, rtol=1e-5)
    loss = y.sum()
    loss.backward()
    assert w.grad().shape() == [3, 4]
    assert b.grad().shape() == [4]
    # dL/dW = x^T 1 = 2 everywhere, dL/db = 2 (batch of 2)
    np.testing.assert_allclose(w.grad().to_vec(), [2.0] * 12, rtol=1e-6)
    np.testing.assert_allclose(b.grad().to_vec(), [2.0] * 4, rtol=1e-6)
    assert x.grad is None


def test_readme_gradient_checking_example_passes_as_written():
    # float32 input, eps = 1e-5, tolerances 1e-3: exactly the README's numbers.
    x = Variable.new(vec([2.0, 3.0], [2]), True)
    numerical = numerical_gradient(lambda v: v.pow(2.0).sum(), x, 1e-5)
    y = x.pow(2.0).sum()
    y.backward()
    analytical = x.grad()
    assert gradcheck(analytical, numerical, 1e-3, 1e-3) is True


# ------------------------------------------------------------------------------------------------------
# backward.rs tests
# ------------------------------------------------------------------------------------------------------

def test_simple_backward_x_squared_at_3_is_6():
    x = Variable.new(vec([3.0], [1]), True)
    y = x.pow(2.0)
    y.backward()
    assert abs(x.grad().to_vec()[0] - 6.0) < 1e-5


def test_chain_backward_x_to_the_fourth_at_2_is_32():
    x = Variable.new(vec([2.0], [1]), True)
    y = x.pow(2.0).pow(2.0)
    y.backward()
    assert abs(x.grad().to_vec()[0] - 32.0) < 1e-4


def test_add_backward_gives_ones():
    a = Variable.new(vec([2.0], [1]), True)
    b = Variable.new(vec([3.0], [1]), True)
    (a + b).sum().backward()
    assert abs(a.grad().to_vec()[0] - 1.0) < 1e-6
    assert abs(b.grad().to_vec()[0] - 1.0) < 1e-6


def test_mul_backward_gives_the_other_operand():
    a = Variable.new(vec([2.0], [1]), True)
    b = Variable.new(vec([3.0], [1]), True)
    (a * b).sum().backward()
    assert abs(a.grad().to_vec()[0] - 3.0) < 1e-6
    assert abs(b.grad().to_vec()[0] - 2.0) < 1e-6


def test_relu_backward_gradient_is_zero_at_zero_like_pytorch():
    x = Variable.new(vec([-2.0, -0.5, 0.0, 0.5, 3.0], [5]), True)
    x.relu().sum().backward()
    assert x.grad().to_vec() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_accumulate_grad_sums_across_backward_calls_until_zero_grad():
    x = Variable.new(vec([1.0, 2.0], [2]), True)
    x.mul_scalar(3.0).sum().backward()
    np.testing.assert_allclose(x.grad().to_vec(), [3.0, 3.0])
    x.mul_scalar(3.0).sum().backward()
    np.testing.assert_allclose(x.grad().to_vec(), [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None
    x.pow(2.0).sum().backward()
    np.testing.assert_allclose(x.grad().to_vec(), [2.0, 4.0])


def test_accumulate_grad_method_adds_on_the_device():
    x = Variable.new(vec([1.0, 2.0], [2]), True)
    x.accumulate_grad(vec([1.0, 1.0], [2]))
    x.accumulate_grad(vec([0.5, 2.0], [2]))
    np.testing.assert_allclose(x.grad().to_vec(), [1.5, 3.0])
    x.set_grad(vec([7.0, 8.0], [2]))
    np.testing.assert_allclose(x.grad().to_vec(), [7.0, 8.0])


def test_accumulate_grad_does_not_alias_the_incoming_tensor():
    x = Variable.new(vec([1.0, 2.0], [2]), True)
    g = vec([1.0, 1.0], [2])
    x.accumulate_grad(g)
    x.accumulate_grad(g)
    assert g.to_vec() == [1.0, 1.0]
    assert x.grad().to_vec() == [2.0, 2.0]


def test_numerical_gradient_of_x_squared_is_4_and_6():
    x = Variable.new(vec([2.0, 3.0], [2]), False)
    numerical = numerical_gradient(lambda v: v.pow(2.0).sum(), x, 1e-5)
    assert numerical.shape() == [2]
    for n, e in zip(numerical.to_vec(), [4.0, 6.0]):
        assert abs(n - e) < 1e-2


def test_gradcheck_tolerances_decide():
    a = vec([1.0, 2.0, 3.0], [3])
    b = vec([1.001, 2.001, 3.001], [3])
    assert gradcheck(a, b, 0.01, 0.01)
    assert not gradcheck(a, b, 0.0001, 0.0001)


def test_gradcheck_shape_mismatch_is_false():
    assert not gradcheck(vec([1.0, 2.0], [2]), vec([1.0, 2.0], [1, 2]), 1.0, 1.0)


# ------------------------------------------------------------------------------------------------------
# variable.rs tests
# ------------------------------------------------------------------------------------------------------

def test_variable_creation():
    v = Variable(Tensor.zeros([2, 3]), requires_grad=True)
    assert v.requires_grad()
    assert v.is_leaf
    assert v.shape() == [2, 3]
    assert v.ndim() == 2
    assert v.numel() == 6
    assert v.grad is None
    assert v.grad_fn is None
    positional = Variable(Tensor.zeros([2]), True)
    assert positional.requires_grad()
    assert not Variable(Tensor.zeros([2])).requires_grad()


def test_variable_no_grad_from_tensor():
    v = Variable.from_tensor(Tensor.zeros([2, 3]))
    assert not v.requires_grad()
    assert v.is_leaf


def test_variable_add_values_and_tracking():
    a = Variable.new(vec([1.0, 2.0, 3.0], [3]), True)
    b = Variable.new(vec([4.0, 5.0, 6.0], [3]), True)
    c = a + b
    assert c.data().to_vec() == [5.0, 7.0, 9.0]
    assert c.requires_grad()
    assert not c.is_leaf
    assert c.grad_fn.name() == "AddBackward"


def test_variable_detach():
    a = Variable.new(vec([1.0, 2.0, 3.0], [3]), True)
    b = a.detach()
    assert not b.requires_grad()
    assert b.is_leaf
    assert b.to_vec() == [1.0, 2.0, 3.0]


def test_mse_loss_of_equal_tensors_is_zero():
    pred = Variable.new(vec([1.0, 2.0, 3.0], [3]), True)
    target = Variable.from_tensor(vec([1.0, 2.0, 3.0], [3]))
    loss = pred.mse_loss(target)
    assert loss.numel() == 1
    assert abs(loss.data().to_vec()[0]) < 1e-6


# ------------------------------------------------------------------------------------------------------
# no_grad.rs tests
# ------------------------------------------------------------------------------------------------------

def test_grad_enabled_by_default():
    assert is_grad_enabled()
    assert not is_inference_mode()


def test_no_grad_guard_restores_on_exit():
    assert is_grad_enabled()
    with NoGradGuard():
        assert not is_grad_enabled()
    assert is_grad_enabled()


def test_nested_no_grad_stays_off_until_the_outer_guard_ends():
    with NoGradGuard():
        assert not is_grad_enabled()
        with NoGradGuard():
            assert not is_grad_enabled()
        assert not is_grad_enabled()
    assert is_grad_enabled()


def test_no_grad_function_returns_the_closure_result():
    def body():
        assert not is_grad_enabled()
        return 42

    assert no_grad.run(body) == 42   # a named function given to no_grad() is decorated, not run
    assert is_grad_enabled()


def test_enable_grad_inside_no_grad():
    def inner():
        assert is_grad_enabled()
        return "on"

    def outer():
        assert not is_grad_enabled()
        assert enable_grad.run(inner) == "on"
        assert not is_grad_enabled()
        with EnableGradGuard():
            assert is_grad_enabled()
        assert not is_grad_enabled()
        return "done"

    assert no_grad.run(outer) == "done"
    assert is_grad_enabled()


def test_inference_mode_turns_grad_off_and_restores_both_flags():
    assert not is_inference_mode()

    def body():
        assert not is_grad_enabled()
        assert is_inference_mode()
        return 7

    assert inference_mode.run(body) == 7
    assert is_grad_enabled()
    assert not is_inference_mode()
