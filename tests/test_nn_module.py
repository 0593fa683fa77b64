"""Module: parameters found in attributes, lists, tuples and dicts; buffers; the tree; modes; state_dict
round trips (through save/load, with 0644-style permissions) that change nothing on failure; to();
hooks; repr; the containers."""

import os
import stat
from collections import OrderedDict

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, load, save
from axonml_autograd import serialization
import axonml_autograd.nn as nn
from axonml_autograd.optim import SGD


class Block(nn.Module):
    def __init__(self, seed):
        super().__init__()
        self.lin = nn.Linear(3, 3, seed=seed)
        self.norm = nn.BatchNorm1d(3)


class Holder(nn.Module):
    """Variables and modules in every kind of container, one of them twice."""

    def __init__(self):
        super().__init__()
        self.scale = Variable(Tensor.ones([1]), requires_grad=True)
        self.pair = (Variable(Tensor.zeros([2]), requires_grad=True), nn.Linear(2, 2, seed=1))
        self.blocks = [Block(2), Block(3)]
        self.heads = {"a": nn.Linear(3, 1, seed=4), "b": [Variable(Tensor.ones([3]), requires_grad=True)]}
        self.again = self.scale                  # the same Variable: listed once
        self.frozen = Variable(Tensor.ones([2]))  # a leaf that does not require grad: still a parameter
        self.note = "not a tensor"

    def forward(self, x):
        return x


def test_parameters_are_found_in_attributes_lists_tuples_and_dicts_once_in_order():
    names = [n for n, _ in Holder().named_parameters()]
    # torch's order: a module's own parameters (in attribute order), then each sub-module's.
    assert names == ["scale", "pair.0", "heads.b.0", "frozen", "pair.1.weight", "pair.1.bias", "blocks.0.lin.weight",
                     "blocks.0.lin.bias", "blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.1.lin.weight",
                     "blocks.1.lin.bias", "blocks.1.norm.weight", "blocks.1.norm.bias", "heads.a.weight", "heads.a.bias"]
    h = Holder()
    assert len(h.parameters()) == len({id(p) for p in h.parameters()}) == 16
    assert [n for n, _ in h.named_parameters(recurse=False)] == ["scale", "pair.0", "heads.b.0", "frozen"]


def test_children_modules_and_buffers():
    h = Holder()
    assert [n for n, _ in h.named_children()] == ["pair.1", "blocks.0", "blocks.1", "heads.a"]
    assert [n for n, _ in h.named_modules()] == ["", "pair.1", "blocks.0", "blocks.0.lin", "blocks.0.norm",
                                                 "blocks.1", "blocks.1.lin", "blocks.1.norm", "heads.a"]
    assert h.modules()[0] is h and len(h.children()) == 4
    assert [n for n, _ in h.named_buffers()] == [
        "blocks.0.norm.running_mean", "blocks.0.norm.running_var", "blocks.0.norm.num_batches_tracked",
        "blocks.1.norm.running_mean", "blocks.1.norm.running_var", "blocks.1.norm.num_batches_tracked"]


def test_register_buffer_is_saved_unless_not_persistent_and_refuses_bad_values():
    m = nn.Module()
    m.register_buffer("stats", Tensor.zeros([2]))
    m.register_buffer("scratch", Tensor.zeros([3]), persistent=False)
    assert list(m.state_dict()) == ["stats"] and m.stats.shape() == [2]
    m.stats = Tensor.ones([2])                    # assignment goes to the buffer table
    assert m.state_dict()["stats"].to_vec() == [1.0, 1.0] and "stats" not in vars(m)
    with pytest.raises(TypeError, match="buffer 'stats' must be a Tensor or None"):
        m.stats = 3
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("training", Tensor.zeros([1]))
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'missing'"):
        m.missing


def test_train_and_eval_reach_every_submodule():
    h = Holder()
    assert all(m.training for m in h.modules())
    assert h.eval() is h and not any(m.training for m in h.modules())
    h.train()
    assert all(m.training for m in h.modules())


def test_zero_grad_forgets_every_gradient():
    h = Holder()
    for p in h.parameters():
        if p.requires_grad():
            p.sum().backward()
    h.zero_grad()
    assert all(p.grad is None for p in h.parameters())


def _model(seed):
    return nn.Sequential(nn.Linear(4, 5, seed=seed), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2, seed=seed + 1))


def test_state_dict_round_trip_through_save_and_load_in_torchs_argument_order(tmp_path):
    a, b = _model(0), _model(10)
    a(Variable(Tensor.rand([6, 4], seed=1)))      # running statistics move away from their start
    sd = a.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                        "1.num_batches_tracked", "3.weight", "3.bias"]
    path = tmp_path / "model.npz"
    save(sd, path)
    weight_before = b[0].weight
    result = b.load_state_dict(load(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert x.numpy().tolist() == y.numpy().tolist(), k
    assert b[0].weight is weight_before            # loaded in place: an optimiser's references stay valid


def test_checkpoint_files_get_the_permissions_the_umask_gives(tmp_path):
    old = os.umask(0o022)
    try:
        save(_model(0).state_dict(), tmp_path / "a.npz")
        serialization.save(tmp_path / "b.npz", dict(_model(0).named_parameters()))
        os.umask(0o027)
        save(_model(0).state_dict(), tmp_path / "c.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b.npz").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "c.npz").st_mode) == 0o640


def test_load_state_dict_reports_every_problem_and_changes_nothing():
    a = _model(0)
    before = {k: v.numpy().copy() for k, v in a.state_dict().items()}
    good = {k: v.numpy() + 1 for k, v in _model(5).state_dict().items()}
    bad = dict(good)
    del bad["0.bias"]
    bad["extra"] = np.zeros(3)
    bad["3.weight"] = np.zeros((5, 2))
    with pytest.raises(nn.StateDictError) as info:
        a.load_state_dict(bad)
    err = info.value
    assert err.missing == ["0.bias"] and err.unexpected == ["extra"]
    assert err.mismatched == {"3.weight": ((5, 2), (2, 5))}
    assert "size mismatch for 3.weight" in str(err) and "Nothing was loaded" in str(err)
    for k, v in a.state_dict().items():
        assert v.numpy().tolist() == before[k].tolist()
    # Not strict: missing and unexpected are reported, shapes still must fit.
    partial = {k: v for k, v in good.items() if k != "0.bias"}
    partial["extra"] = np.zeros(3)
    res = a.load_state_dict(partial, strict=False)
    assert res.missing_keys == ["0.bias"] and res.unexpected_keys == ["extra"]
    assert a[0].weight.numpy().tolist() == good["0.weight"].astype(np.float32).tolist()
    assert a[0].bias.numpy().tolist() == before["0.bias"].tolist()
    with pytest.raises(TypeError, match="load_state_dict: expected a mapping"):
        a.load_state_dict([1, 2])


def test_frozen_parameters_are_saved_and_loaded():
    a, b = _model(0), _model(3)
    a[0].weight.requires_grad_(False)
    assert "0.weight" in a.state_dict()
    b.load_state_dict(a.state_dict())
    assert b[0].weight.numpy().tolist() == a[0].weight.numpy().tolist()


def test_to_keeps_the_variables_and_casts_parameters_and_buffers(fp64):
    m = _model(0)
    w = m[0].weight
    opt = SGD(m.parameters(), lr=0.1)
    assert m.to(w.device) is m and m[0].weight is w
    m.double()
    assert m[0].weight is w and w.dtype == np.float64 and m[1].running_mean.dtype == np.float64
    assert m[1].num_batches_tracked.dtype == np.int64
    loss = m(Variable(Tensor.rand([3, 4], seed=2, dtype="float64"))).sum()
    loss.backward()
    opt.step()                                   # the optimiser made before still holds the parameters
    with pytest.raises(TypeError, match="to: expected a device, a dtype or both"):
        m.to()


def test_call_passes_args_and_kwargs_to_forward():
    class Add(nn.Module):
        def forward(self, x, y=None, *, scale=1.0):
            return (x + y) * scale

    x = Variable(Tensor.ones([2]))
    assert Add()(x, y=x, scale=3.0).to_vec() == [6.0, 6.0]


def test_forward_pre_hook_and_forward_hook_can_replace_inputs_and_outputs():
    m = nn.Identity()
    seen = []
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 2.0,))
    h2 = m.register_forward_hook(lambda mod, args, out: seen.append(out.to_vec()) or out + 1.0)
    x = Variable(Tensor.ones([2]))
    assert m(x).to_vec() == [3.0, 3.0] and seen == [[2.0, 2.0]]
    h1.remove()
    h2.remove()
    h2.remove()   # twice is harmless
    assert m(x).to_vec() == [1.0, 1.0]


def test_full_backward_hook_sees_grad_output_and_grad_input_and_may_replace_it():
    lin = nn.Linear(3, 2, seed=0)
    calls = []

    def hook(mod, grad_input, grad_output):
        calls.append((grad_input[0].numpy().copy(), grad_output[0].numpy().copy()))
        return (grad_input[0] * 0.0,)

    handle = lin.register_full_backward_hook(hook)
    x = Variable(Tensor.rand([4, 3], seed=3), requires_grad=True)
    lin(x).sum().backward()
    (gi, go), = calls
    np.testing.assert_array_equal(go, np.ones((4, 2), np.float32))
    np.testing.assert_allclose(gi, np.ones((4, 2)) @ lin.weight.numpy(), rtol=1e-6)
    assert x.grad().numpy().tolist() == np.zeros((4, 3)).tolist()     # replaced by the hook
    assert lin.weight.grad is not None                              # parameters still get theirs
    handle.remove()
    x.zero_grad()
    lin(x).sum().backward()
    assert len(calls) == 1 and x.grad().numpy().any()


def test_full_backward_hook_runs_with_none_grad_input_when_no_input_needs_a_gradient():
    lin = nn.Linear(3, 2, seed=0)
    calls = []
    lin.register_full_backward_hook(lambda m, gi, go: calls.append((gi, go[0].shape())))
    lin(Variable(Tensor.rand([4, 3], seed=3))).sum().backward()
    assert calls == [((None,), [4, 2])]


def test_repr_is_torch_like():
    m = nn.Sequential(nn.Linear(4, 8, seed=0), nn.Dropout(0.1), nn.Sequential(nn.LayerNorm(8), nn.GELU()))
    assert repr(m) == ("Sequential(\n"
                       "  (0): Linear(in_features=4, out_features=8, bias=True)\n"
                       "  (1): Dropout(p=0.1)\n"
                       "  (2): Sequential(\n"
                       "    (0): LayerNorm((8,), eps=1e-05, elementwise_affine=True)\n"
                       "    (1): GELU(approximate='none')\n"
                       "  )\n"
                       ")")


def test_sequential_module_list_and_module_dict():
    seq = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 3, seed=0)), ("act", nn.Tanh())]))
    assert [n for n, _ in seq.named_parameters()] == ["fc.weight", "fc.bias"]
    assert isinstance(seq[1], nn.Tanh) and len(seq) == 2 and isinstance(seq[:1], nn.Sequential)
    layers = nn.ModuleList([nn.Linear(2, 2, seed=k) for k in range(3)])
    layers.insert(1, nn.Linear(2, 2, seed=9))
    del layers[0]
    layers.append(nn.ReLU())
    assert [n for n, _ in layers.named_children()] == ["0", "1", "2", "3"]
    assert len(layers.parameters()) == 6 and isinstance(layers[-1], nn.ReLU)
    d = nn.ModuleDict({"enc": nn.Linear(2, 4, seed=1)})
    d["dec"] = nn.Linear(4, 2, seed=2)
    assert list(d) == ["enc", "dec"] and "enc" in d
    assert [n for n, _ in d.named_parameters()] == ["enc.weight", "enc.bias", "dec.weight", "dec.bias"]
    with pytest.raises(TypeError, match="ModuleList: expected a Module, got int"):
        layers.append(3)
    with pytest.raises(KeyError):
        d["a.b"] = nn.ReLU()


def test_module_without_super_init_still_works():
    class Bare(nn.Module):
        def __init__(self):
            self.w = Variable(Tensor.ones([2]), requires_grad=True)

        def forward(self, x):
            return x * self.w

    b = Bare()
    assert [n for n, _ in b.named_parameters()] == ["w"] and b.eval().training is False
    assert b(Variable(Tensor.ones([2]))).to_vec() == [1.0, 1.0]
