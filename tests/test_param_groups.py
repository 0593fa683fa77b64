"""param_groups with PyTorch's semantics: editable dicts whose rates take effect at the next step (eager
and captured), never rebuild a kernel, and no attribute that silently overwrites every group."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, kernels
from axonml_autograd.optim import SGD, Adam, RMSprop
from axonml_autograd.optim.lr_scheduler import StepLR


def two_params(dtype=np.float64):
    rng = np.random.default_rng(5)
    a0, b0 = rng.normal(size=(4, 3)), rng.normal(size=(17,))
    a = Variable(Tensor.from_numpy(a0, dtype=dtype), requires_grad=True)
    b = Variable(Tensor.from_numpy(b0, dtype=dtype), requires_grad=True)
    return a0, b0, a, b


def test_editing_one_group_rate_changes_only_that_group(fp64):
    a0, b0, a, b = two_params()
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    ra, rb = a0.copy(), b0.copy()
    for k in range(4):
        opt.param_groups[1]["lr"] = 0.5 / (k + 1)
        opt.zero_grad()
        ((a * a).sum() + (b * b).sum()).backward()
        opt.step()
        ra, rb = ra - 0.1 * 2 * ra, rb - 0.5 / (k + 1) * 2 * rb
    np.testing.assert_allclose(a.numpy(), ra, rtol=1e-12)
    np.testing.assert_allclose(b.numpy(), rb, rtol=1e-12)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.125]


def test_groups_follow_torch_with_per_group_options(fp64):
    torch = pytest.importorskip("torch")
    a0, b0, a, b = two_params()
    ta, tb = (torch.tensor(x, requires_grad=True) for x in (a0, b0))
    groups = lambda p, q: [{"params": [p], "weight_decay": 0.1}, {"params": [q], "lr": 0.02, "momentum": 0.5}]
    opt = RMSprop(groups(a, b), lr=0.01)
    topt = torch.optim.RMSprop(groups(ta, tb), lr=0.01, foreach=False)
    rng = np.random.default_rng(0)
    for k in range(5):
        ga, gb = rng.normal(size=a0.shape), rng.normal(size=b0.shape)
        a.set_grad(Tensor.from_numpy(ga))
        b.set_grad(Tensor.from_numpy(gb))
        ta.grad, tb.grad = torch.tensor(ga), torch.tensor(gb)
        for o in (opt, topt):
            o.param_groups[0]["lr"] = 0.01 * (k + 1)
        opt.step()
        topt.step()
        np.testing.assert_allclose(a.numpy(), ta.detach().numpy(), rtol=1e-11, err_msg=f"step {k + 1}")
        np.testing.assert_allclose(b.numpy(), tb.detach().numpy(), rtol=1e-11, err_msg=f"step {k + 1}")


def test_lr_attribute_refuses_when_groups_differ():
    _a0, _b0, a, b = two_params(np.float32)
    opt = Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    with pytest.raises(ValueError, match=r"Adam.lr: the 2 parameter groups have different learning rates \[0.1, 0.5\]"):
        opt.lr
    with pytest.raises(ValueError, match="param_groups"):
        opt.lr = 0.01
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]    # nothing overwritten

    same = Adam([{"params": [a]}, {"params": [b]}], lr=0.1)
    same.lr = 0.3                                               # one shared rate: still a shorthand
    assert same.lr == 0.3 and [g["lr"] for g in same.param_groups] == [0.3, 0.3]
    with pytest.raises(ValueError, match="Adam.lr"):
        same.lr = -1.0


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1", None, True])
def test_a_bad_rate_written_into_a_group_is_refused_before_any_update(bad):
    _a0, _b0, a, b = two_params(np.float32)
    opt = SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.set_grad(Tensor.ones([4, 3]))
    b.set_grad(Tensor.ones([17]))
    before = a.numpy()
    opt.param_groups[1]["lr"] = bad
    with pytest.raises(ValueError, match=r"SGD.step: param_groups\[1\]\['lr'\] must be a finite number >= 0"):
        opt.step()
    np.testing.assert_array_equal(a.numpy(), before)
    opt.param_groups[1]["lr"] = 0.1
    opt.step()                                                  # nothing was left half-done
    np.testing.assert_allclose(a.numpy(), before - 0.1, rtol=1e-6)


def test_per_group_rates_take_effect_in_replays_without_rebuilds(device):
    def make():
        _a0, _b0, a, b = two_params(np.float32)
        opt = Adam([{"params": [a]}, {"params": [b], "lr": 0.05}], lr=0.01)

        def step(x):
            opt.zero_grad()
            loss = (a * a).sum() * x.sum() + (b * b * x.sum()).sum()
            loss.backward()
            opt.step()
            return loss
        return a, b, opt, step

    a, b, opt, step = make()
    ea, eb, eopt, estep = make()
    step = capture(step)
    sched, esched = StepLR(opt, step_size=2, gamma=0.5), StepLR(eopt, step_size=2, gamma=0.5)
    x = Tensor.from_numpy(np.array([0.5, 0.25], dtype=np.float32))
    for k in range(8):
        for o in (opt, eopt):
            o.param_groups[1]["lr"] = 0.05 / (k + 1)    # by hand on one group, StepLR on both
        builds = kernels.build_count()
        assert step(x).item() == estep(x).item()
        if k >= 2:
            assert kernels.build_count() == builds
        sched.step()
        esched.step()
    assert step.replays >= 6
    np.testing.assert_array_equal(a.numpy(), ea.numpy())
    np.testing.assert_array_equal(b.numpy(), eb.numpy())


def test_state_dict_keeps_scheduler_entries_of_groups(fp64):
    _a0, _b0, a, b = two_params()
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    StepLR(opt, step_size=1, gamma=0.5).step()
    saved = opt.state_dict()
    assert [g["initial_lr"] for g in saved["param_groups"]] == [0.1, 0.5]
    fresh = SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    fresh.load_state_dict(saved)
    assert [(g["lr"], g["initial_lr"]) for g in fresh.param_groups] == [(0.05, 0.1), (0.25, 0.5)]
    # A scheduler resumed at its epoch finds the base rates there.
    resumed = StepLR(fresh, step_size=1, gamma=0.5, last_epoch=1)
    assert resumed.base_lrs == [0.1, 0.5]
