"""detect_anomaly(): backward names the op and the user's line that made the first non-finite gradient."""

import sys
import threading

import numpy as np
import pytest

from axonml_autograd import AnomalyError, Tensor, Variable, detect_anomaly, no_grad
from axonml_autograd.anomaly import is_anomaly_enabled
from axonml_autograd.nn import Linear


def _here():
    """The caller's previous line number: the line a test just wrote its forward op on."""
    return sys._getframe(1).f_lineno - 1


def var(values, requires_grad=True, dtype="float32"):
    return Variable(Tensor.from_vec(values, [len(values)], dtype=dtype), requires_grad)


def test_anomaly_mode_is_off_by_default_and_nan_gradients_pass_silently():
    assert not is_anomaly_enabled()
    x = var([-1.0])
    x.pow(0.5).sum().backward()
    assert np.isnan(x.grad().to_vec()[0])


def test_backward_without_anomaly_mode_never_reads_the_device(host_traffic):
    x = var([0.0, 1.0])
    y = x.sqrt().sum()
    assert y.grad_fn.creation is None
    with host_traffic() as t:
        y.backward()
    assert t.reads == 0 and t.waits == 0


def test_inf_gradient_names_the_backward_function_input_and_user_line():
    x = var([0.0])
    with detect_anomaly():
        y = x.sqrt()
        line = _here()
        with pytest.raises(AnomalyError) as err:
            y.sum().backward()
    msg = str(err.value)
    assert msg.startswith("SqrtBackward produced Inf in its gradient for input 0")
    assert f"test_anomaly.py:{line}: `y = x.sqrt()`" in msg


def test_nan_gradient_is_reported_as_nan():
    x = var([-1.0])
    with detect_anomaly():
        y = x.pow(0.5)
        line = _here()
        with pytest.raises(AnomalyError, match=r"PowBackward produced NaN in its gradient for input 0") as err:
            y.sum().backward()
    assert f"test_anomaly.py:{line}" in str(err.value)


def test_the_first_bad_gradient_in_backward_order_is_the_one_reported():
    # log(0) = -inf is fine going forward; MulBackward's gradient for its second input is g * log(0).
    x = var([0.0])
    with detect_anomaly():
        c = x.log()
        y = c * x
        line = _here()
        with pytest.raises(AnomalyError) as err:
            y.sum().backward()
    assert str(err.value).startswith("MulBackward produced Inf in its gradient for input 1")
    assert f":{line}: `y = c * x`" in str(err.value)


def test_anomaly_error_is_a_runtime_error():
    assert issubclass(AnomalyError, RuntimeError)


def test_decorator_turns_the_mode_on_only_inside_the_function():
    seen = []

    @detect_anomaly()
    def step(x):
        seen.append(is_anomaly_enabled())
        x.sqrt().sum().backward()

    with pytest.raises(AnomalyError, match="SqrtBackward"):
        step(var([0.0]))
    assert seen == [True]
    assert not is_anomaly_enabled()


def test_mode_is_restored_after_an_exception_and_nesting_restores_the_outer_setting():
    with pytest.raises(ZeroDivisionError):
        with detect_anomaly():
            1 / 0
    assert not is_anomaly_enabled()
    with detect_anomaly():
        with detect_anomaly(False):
            assert not is_anomaly_enabled()
            x = var([0.0])
            x.sqrt().sum().backward()     # off inside: no error
        assert is_anomaly_enabled()
    assert not is_anomaly_enabled()


def test_detect_anomaly_rejects_a_non_bool_flag():
    with pytest.raises(TypeError, match="enabled"):
        detect_anomaly("yes")


def test_finite_graph_gives_the_same_gradients_with_and_without_anomaly_mode():
    def run():
        w = Variable(Tensor.from_vec([0.5, -1.0, 2.0, 0.25, 1.5, -0.75], [2, 3]), True)
        x = Variable(Tensor.from_vec([1.0, 2.0, -1.0, 0.5], [2, 2]))
        loss = x.matmul(w).tanh().log_softmax(1).mean()
        loss.backward()
        return loss.to_vec(), w.grad().to_vec()

    plain = run()
    with detect_anomaly():
        checked = run()
    assert plain == checked


def test_nan_given_to_from_vec_is_accepted_but_reported_where_first_used():
    bad = Tensor.from_vec([1.0, float("nan")], [2])     # the constructor itself does not refuse it
    w = var([1.0, 1.0])
    assert np.isnan(bad.to_vec()[1])
    with detect_anomaly():
        x = Variable(bad)
        with pytest.raises(AnomalyError) as err:
            w * x
        line = _here()
    msg = str(err.value)
    assert msg.startswith("MulBackward: input 1 (a leaf Variable of shape [2]) holds NaN")
    assert f"test_anomaly.py:{line}: `w * x`" in msg


def test_inf_in_a_leaf_that_requires_grad_is_reported_even_under_no_grad():
    x = var([float("inf"), 0.0])
    with detect_anomaly(), no_grad():
        with pytest.raises(AnomalyError, match=r"ReluBackward: input 0 .* holds Inf"):
            x.relu()


def test_nan_in_the_gradient_passed_to_backward_is_reported():
    x = var([1.0, 2.0])
    y = x * 2.0
    with detect_anomaly():
        with pytest.raises(AnomalyError, match=r"gradient passed to backward\(\) holds NaN"):
            y.backward(Tensor.from_vec([1.0, float("nan")], [2]))


def test_the_reported_line_is_the_users_not_the_library_internals():
    # The op is recorded inside nn.Linear.forward; the site must be the caller's line here.
    layer = Linear(2, 1, seed=0)
    x = Variable(Tensor.from_vec([float("inf"), 1.0], [1, 2]))
    with detect_anomaly():
        with pytest.raises(AnomalyError) as err:
            layer(x)
        line = _here()
    assert f"test_anomaly.py:{line}: `layer(x)`" in str(err.value)


def test_anomaly_mode_is_per_thread():
    results = {}
    started, release = threading.Event(), threading.Event()

    def other():
        started.set()
        release.wait(10)
        results["other"] = is_anomaly_enabled()
        x = var([0.0])
        x.sqrt().sum().backward()          # would raise if this thread saw the mode
        results["grad"] = x.grad().to_vec()

    t = threading.Thread(target=other)
    t.start()
    started.wait(10)
    with detect_anomaly():
        release.set()
        t.join(30)
        assert is_anomaly_enabled()
    assert results == {"other": False, "grad": [float("inf")]}


def test_float64_gradients_are_checked_too(fp64):
    x = var([0.0, 4.0], dtype="float64")
    with detect_anomaly():
        y = x.sqrt()
        with pytest.raises(AnomalyError, match="SqrtBackward produced Inf"):
            y.sum().backward()
