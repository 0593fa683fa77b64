"""copy.deepcopy and pickle of Tensors, Variables and Modules: device copies that are independent, shared
buffers and parameters that stay shared inside a copy, torch's leaf rule, the EMA-copy and best-model
snapshot patterns, and pickle round trips of every dtype."""

import copy
import pickle

import numpy as np
import pytest

import axonml_autograd.nn as nn
from axonml_autograd import Tensor, Variable, no_grad
from axonml_autograd.device import default_device
from axonml_autograd.optim import SGD

DTYPES = ["float32", "int32", "int64", "bool"] + (["float64"] if default_device().fp64 else [])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [[], [0], [1], [3, 17]])
def test_tensor_pickle_round_trip_every_dtype(dtype, shape):
    a = np.random.default_rng(1).integers(-5, 5, shape).astype(dtype)
    t = Tensor.from_numpy(a, dtype=dtype)
    back = pickle.loads(pickle.dumps(t))
    assert back.dtype == t.dtype and back.shape() == list(shape) and back.device is default_device()
    np.testing.assert_array_equal(back.numpy(), a)
    c = copy.deepcopy(t)
    assert c.dtype == t.dtype and c.device is t.device
    np.testing.assert_array_equal(c.numpy(), a)


def test_tensor_deepcopy_is_independent_and_keeps_views_shared():
    t = Tensor.from_vec([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])
    view = t.T                                   # a permuted view of the same buffer
    flat = t.reshape([6])                        # a reshape sharing it
    c, cview, cflat = copy.deepcopy([t, view, flat])
    np.testing.assert_array_equal(cview.numpy(), view.numpy())
    t.fill_(0.0)
    assert c.to_vec() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]   # independent of the original
    cflat.copy_(Tensor.from_vec([9.0] * 6, [6]))
    assert c.to_vec() == [9.0] * 6                        # shared inside the copy
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(view)).numpy(), view.numpy())


def test_variable_deepcopy_and_pickle_follow_torch():
    w = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    (w * w).sum().backward()
    c = copy.deepcopy(w)
    assert c is not w and c.requires_grad() and c.is_leaf()
    assert c.grad().to_vec() == [2.0, 4.0]
    with no_grad():
        w.add_(1.0)
    assert c.data().to_vec() == [1.0, 2.0]
    p = pickle.loads(pickle.dumps(w))
    assert p.requires_grad() and p.grad is None and p.data().to_vec() == [2.0, 3.0]
    y = w * 2.0
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(y)
    py = pickle.loads(pickle.dumps(y))            # pickle keeps the values and requires_grad, not the graph
    assert py.is_leaf() and py.requires_grad() and py.data().to_vec() == [4.0, 6.0]
    frozen = pickle.loads(pickle.dumps(Variable(Tensor.ones([2]))))
    assert not frozen.requires_grad()


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 3)
        self.dec = nn.Linear(3, 4)
        self.shared = self.enc                   # the same sub-module twice
        self.norm = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.dec(self.norm(self.enc(x)).relu())


def _params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_module_deepcopy_independent_with_sharing_kept():
    model = Tied()
    twin = copy.deepcopy(model)
    assert twin.shared is twin.enc and twin.enc is not model.enc
    assert len(list(twin.parameters())) == len(list(model.parameters()))
    before = _params(model)
    x = Variable(Tensor.from_numpy(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)))
    opt = SGD(twin.parameters(), lr=0.5)
    twin(x).pow(2).mean().backward()
    opt.step()
    for k, v in _params(model).items():            # training the copy leaves the original alone
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert any(not np.array_equal(v, before[k]) for k, v in _params(twin).items())
    assert all(p.grad is None for p in model.parameters())


def test_tied_parameter_stays_tied_in_the_copy():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    twin = copy.deepcopy(model)
    assert twin[1].weight is twin[0].weight and twin[0].weight is not a.weight
    assert len(list(twin.parameters())) == len(list(model.parameters()))


def test_ema_copy_pattern():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = SGD(model.parameters(), lr=0.1)
    x = Variable(Tensor.from_numpy(np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)))
    expected = [p.data().numpy().astype(np.float64) for p in ema.parameters()]
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        with no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.mul_(0.9).add_(p, alpha=0.1)
        expected = [0.9 * e + 0.1 * p.data().numpy() for e, p in zip(expected, model.parameters())]
    for e, pe in zip(expected, ema.parameters()):
        np.testing.assert_allclose(pe.data().numpy(), e, rtol=1e-5, atol=1e-6)
        assert not pe.requires_grad()


def test_best_model_snapshot_and_pickled_module():
    model = Tied()
    x = Variable(Tensor.from_numpy(np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)))
    best_state, best_model = copy.deepcopy(model.state_dict()), copy.deepcopy(model)
    model.eval()
    best_model.eval()
    out = model(x).numpy()
    opt = SGD(model.parameters(), lr=0.3)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    model.eval()
    assert not np.allclose(model(x).numpy(), out)
    np.testing.assert_array_equal(best_model(x).numpy(), out)
    model.load_state_dict(best_state)
    np.testing.assert_array_equal(model(x).numpy(), out)
    back = pickle.loads(pickle.dumps(model))
    assert back.shared is back.enc and not back.training
    np.testing.assert_array_equal(back(x).numpy(), out)
    assert [n for n, _ in back.named_parameters()] == [n for n, _ in model.named_parameters()]
