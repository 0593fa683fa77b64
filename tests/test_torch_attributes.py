"""torch's attribute spellings (``p.grad``, ``p.requires_grad``, ``x.shape``, ``x.ndim``, ``is_leaf``,
``grad_fn``) read values, never bound methods, while the crate's calls keep working."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable
import axonml_autograd.nn as nn


def test_grad_is_none_until_backward_then_a_tensor_that_the_crate_call_also_returns():
    x = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    assert x.grad is None
    (x * x).sum().backward()
    assert isinstance(x.grad, Tensor) and x.grad() is x.grad
    assert x.grad.to_vec() == [2.0, 4.0] and x.grad().to_vec() == [2.0, 4.0]


def test_grad_is_assignable_with_a_tensor_a_variable_or_none():
    x = Variable(Tensor.zeros([3]), requires_grad=True)
    x.grad = Tensor.from_vec([1.0, 2.0, 3.0], [3])
    assert x.grad.to_vec() == [1.0, 2.0, 3.0]
    x.grad = Variable(Tensor.ones([3]))
    assert x.grad.to_vec() == [1.0, 1.0, 1.0]
    x.grad = None
    assert x.grad is None
    with pytest.raises(ValueError, match=r"gradient shape \[2\] differs from the variable's shape \[3\]"):
        x.grad = Tensor.zeros([2])


def test_requires_grad_reads_as_a_bool_and_filters_frozen_parameters():
    model = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Linear(4, 2, seed=1))
    model[0].requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [id(p) for p in trainable] == [id(model[1].weight), id(model[1].bias)]
    w = model[1].weight
    assert w.requires_grad == True and w.requires_grad() is True and repr(w.requires_grad) == "True"  # noqa: E712
    w.requires_grad = False
    assert not w.requires_grad and w.requires_grad() is False
    w.requires_grad = True
    assert w.requires_grad


def test_requires_grad_cannot_be_set_on_a_non_leaf_or_an_int_tensor():
    x = Variable(Tensor.zeros([2]), requires_grad=True)
    y = x * 2.0
    assert y.requires_grad and not y.is_leaf and x.is_leaf and x.is_leaf() is True
    with pytest.raises(RuntimeError, match="only a leaf"):
        y.requires_grad = False
    k = Variable(Tensor.zeros([2], "int32"))
    with pytest.raises(TypeError, match="floating-point"):
        k.requires_grad = True


def test_shape_is_a_tuple_like_size_and_the_call_gives_the_crate_list():
    x = Variable(Tensor.zeros([2, 3, 5]))
    assert x.shape == (2, 3, 5) and x.shape == [2, 3, 5] and x.shape[1] == 3 and len(x.shape) == 3
    assert x.shape() == [2, 3, 5] and isinstance(x.shape(), list)
    n, c, w = x.shape
    assert (n, c, w) == (2, 3, 5) and x.shape[1:] == (3, 5) and x.shape.numel() == 30
    assert x.size() == (2, 3, 5) and x.size(-1) == 5
    assert x.ndim == 3 and x.ndim() == 3 and x.dim() == 3
    t = x.data()
    assert t.shape == (2, 3, 5) and t.shape() == [2, 3, 5] and t.ndim == 3 and t.ndim() == 3
    assert {x.shape: "ok"}[(2, 3, 5)] == "ok"       # hashable as the tuple it equals
    assert repr(x.shape) == "Size([2, 3, 5])"
    assert Tensor.zeros([]).shape == () and Tensor.zeros([]).ndim == 0


def test_grad_fn_is_an_attribute_none_for_a_leaf():
    x = Variable(Tensor.zeros([2]), requires_grad=True)
    y = x.exp()
    assert x.grad_fn is None and y.grad_fn is not None and y.grad_fn() is y.grad_fn
    assert "Exp" in y.grad_fn.name()


def test_dtype_and_device_are_attributes():
    x = Variable(Tensor.zeros([2], "float64"))
    assert x.dtype == np.float64 and x.device is x.data().device
