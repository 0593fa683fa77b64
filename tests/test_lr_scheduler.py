"""Learning-rate schedulers: the rate sequence against torch.optim.lr_scheduler over many steps (several
groups), closed forms without torch, state dicts, and argument checks."""

import math
import warnings

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable
from axonml_autograd.optim import SGD, Adam, RMSprop, lr_scheduler as ls


def mine(opt_cls=SGD, lrs=(0.1, 0.02), **kw):
    ps = [Variable(Tensor.zeros([2]), requires_grad=True) for _ in lrs]
    return opt_cls([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)], **kw)


def theirs(torch, opt_name="SGD", lrs=(0.1, 0.02), **kw):
    ps = [torch.zeros(2, requires_grad=True) for _ in lrs]
    return getattr(torch.optim, opt_name)([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)], **kw)


def sequence(opt, sched, steps, metrics=None):
    """[epoch 0's rates, epoch 1's, ...] for every group, stepping as a training loop does."""
    out = [list(sched.get_last_lr())]
    for k in range(steps):
        opt.step()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[k])
        out.append([float(g["lr"]) for g in opt.param_groups])
        assert [float(v) for v in sched.get_last_lr()] == out[-1]
    return out


CASES = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=7, gamma=0.3),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[5, 12, 12, 40], gamma=0.5),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0.97),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=25, eta_min=1e-3),
    "LinearLR": lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=30),
    "LambdaLR": lambda m, o: m.LambdaLR(o, [lambda e: 0.95 ** e, lambda e: 1.0 / (1 + e)]),
    "OneCycleLR-cos": lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 0.3], total_steps=80),
    "OneCycleLR-linear-3phase": lambda m, o: m.OneCycleLR(o, max_lr=0.5, epochs=4, steps_per_epoch=20, pct_start=0.25,
                                                          anneal_strategy="linear", three_phase=True,
                                                          div_factor=10.0, final_div_factor=100.0),
    "SequentialLR": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.01, total_iters=10),
                                                    m.CosineAnnealingLR(o, T_max=40)], milestones=[10]),
    "SequentialLR-3": lambda m, o: m.SequentialLR(o, [m.ExponentialLR(o, gamma=0.9), m.StepLR(o, 5, 0.5),
                                                      m.CosineAnnealingLR(o, T_max=8)], milestones=[6, 30]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rates_follow_torch_for_80_steps(name):
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler as tls
    o, to = mine(momentum=0.9), theirs(torch, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch's "step order" warnings are about its own wrapper
        want = sequence(to, CASES[name](tls, to), 80)
    got = sequence(o, CASES[name](ls, o), 80)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-16)
    if name.startswith("OneCycle"):     # the momentum moves against the rate, as torch's does
        assert [g["momentum"] for g in o.param_groups] == pytest.approx([g["momentum"] for g in to.param_groups])


def test_one_cycle_cycles_adam_beta1_like_torch():
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler as tls
    o, to = mine(Adam), theirs(torch, "Adam")
    s, ts = ls.OneCycleLR(o, max_lr=0.01, total_steps=30), tls.OneCycleLR(to, max_lr=0.01, total_steps=30)
    for _ in range(20):
        s.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts.step()
        assert [g["betas"][0] for g in o.param_groups] == pytest.approx([g["betas"][0] for g in to.param_groups],
                                                                         rel=1e-13)


def test_cosine_annealing_past_t_max_and_edited_rates_follow_torch():
    # The chainable form works from the current rate: a user's edit mid-way carries on as in torch.
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler as tls
    o, to = mine(), theirs(torch)
    s, ts = ls.CosineAnnealingLR(o, T_max=6, eta_min=0.001), tls.CosineAnnealingLR(to, T_max=6, eta_min=0.001)
    for k in range(30):
        if k == 9:
            o.param_groups[0]["lr"] = to.param_groups[0]["lr"] = 0.07
        s.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts.step()
        assert s.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-12, abs=1e-15)


def test_reduce_on_plateau_follows_torch_with_device_metrics():
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler as tls
    rng = np.random.default_rng(0)
    losses = np.concatenate([np.linspace(1.0, 0.5, 10), 0.5 + 0.01 * rng.random(40), np.linspace(0.5, 0.2, 10)])
    for kw in [dict(), dict(mode="max", factor=0.5, patience=2, cooldown=3, threshold=0.01, threshold_mode="abs"),
               dict(factor=0.3, patience=0, min_lr=[0.01, 0.005], eps=1e-4)]:
        o, to = mine(), theirs(torch)
        s, ts = ls.ReduceLROnPlateau(o, **kw), tls.ReduceLROnPlateau(to, **kw)
        metrics = [Tensor.from_numpy(np.array(v)) for v in losses]        # device scalars: one read each
        got = sequence(o, s, len(losses), metrics)
        want = sequence(to, ts, len(losses), [float(v) for v in losses])
        assert got == want
        assert got[-1] != got[0]


def test_closed_forms_without_torch():
    o = mine(lrs=(1.0,))
    s = ls.StepLR(o, step_size=3, gamma=0.5)
    assert sequence(o, s, 9) == [[0.5 ** (e // 3)] for e in range(10)]
    o = mine(lrs=(2.0,))
    s = ls.CosineAnnealingLR(o, T_max=10, eta_min=0.5)
    np.testing.assert_allclose(sequence(o, s, 10),
                               [[0.5 + 1.5 * (1 + math.cos(math.pi * e / 10)) / 2] for e in range(11)], rtol=1e-12)
    o = mine(lrs=(1.0,))
    s = ls.LinearLR(o, start_factor=0.2, end_factor=1.0, total_iters=4)
    np.testing.assert_allclose(sequence(o, s, 6), [[0.2], [0.4], [0.6], [0.8], [1.0], [1.0], [1.0]], rtol=1e-12)
    o = mine(lrs=(1.0,))
    s = ls.MultiStepLR(o, milestones=[2, 5], gamma=0.1)
    np.testing.assert_allclose(sequence(o, s, 6), [[1.0]] * 2 + [[0.1]] * 3 + [[0.01]] * 2, rtol=1e-12)
    o = mine(lrs=(0.1,))
    s = ls.OneCycleLR(o, max_lr=1.0, total_steps=10, pct_start=0.5, anneal_strategy="linear", div_factor=10.0,
                      final_div_factor=1.0, cycle_momentum=False)
    # Up from max_lr / 10 over steps 0..4 (pct_start * total - 1), down to it again at step 9.
    np.testing.assert_allclose([r[0] for r in sequence(o, s, 9)], [0.1, 0.325, 0.55, 0.775, 1.0] +
                               [1.0 - 0.9 * k / 5 for k in range(1, 6)], rtol=1e-12)


def test_state_dict_resumes_the_same_sequence():
    def build(o):
        return ls.SequentialLR(o, [ls.LinearLR(o, start_factor=0.1, total_iters=5),
                                   ls.CosineAnnealingLR(o, T_max=20, eta_min=0.01)], milestones=[5])
    o = mine(Adam)
    s = build(o)
    full = sequence(o, s, 30)
    o = mine(Adam)
    s = build(o)
    sequence(o, s, 12)
    saved_opt, saved_sched = o.state_dict(), s.state_dict()
    assert saved_sched["last_epoch"] == 12 and "optimizer" not in saved_sched

    o2 = mine(Adam, lrs=(9.0, 9.0))
    s2 = build(o2)           # made before loading, as PyTorch asks: then the loads win
    o2.load_state_dict(saved_opt)
    s2.load_state_dict(saved_sched)
    assert s2.get_last_lr() == full[12]
    rest = sequence(o2, s2, 18)
    np.testing.assert_allclose(rest, full[12:], rtol=1e-13)


def test_lambda_state_dict_keeps_callable_objects_state():
    class Decay:
        def __init__(self):
            self.rate = 0.5

        def __call__(self, epoch):
            return self.rate ** epoch

    o = mine(lrs=(1.0,))
    d = Decay()
    s = ls.LambdaLR(o, d)
    d.rate = 0.25
    saved = s.state_dict()
    d2 = Decay()
    s2 = ls.LambdaLR(mine(lrs=(1.0,)), d2)
    s2.load_state_dict(saved)
    assert d2.rate == 0.25 and s2.last_epoch == 0
    assert ls.LambdaLR(o, lambda e: 1.0).state_dict()["lr_lambdas"] == [None]


def test_changing_rates_never_rebuilds_a_kernel(device):
    from axonml_autograd import kernels
    w = Variable(Tensor.from_numpy(np.ones(5, dtype=np.float32)), requires_grad=True)
    opt = RMSprop([w], lr=0.01, momentum=0.9)
    sched = ls.OneCycleLR(opt, max_lr=0.1, total_steps=20)
    w.set_grad(Tensor.ones([5]))
    opt.step()
    builds = kernels.build_count()
    for _ in range(15):
        opt.step()
        sched.step()
    assert kernels.build_count() == builds


def test_bad_arguments_raise_clear_errors():
    o = mine()
    with pytest.raises(TypeError, match="StepLR: expected an Optimizer"):
        ls.StepLR("opt", step_size=1)
    with pytest.raises(ValueError, match="StepLR step_size"):
        ls.StepLR(o, step_size=0)
    with pytest.raises(TypeError, match="CosineAnnealingLR T_max"):
        ls.CosineAnnealingLR(o, T_max=2.5)
    with pytest.raises(ValueError, match="LinearLR start_factor"):
        ls.LinearLR(o, start_factor=0.0)
    with pytest.raises(ValueError, match="LambdaLR: expected 2 lr_lambdas"):
        ls.LambdaLR(o, [lambda e: 1.0])
    with pytest.raises(ValueError, match="OneCycleLR: give total_steps"):
        ls.OneCycleLR(o, max_lr=0.1)
    with pytest.raises(ValueError, match="OneCycleLR max_lr: expected 2 values"):
        ls.OneCycleLR(o, max_lr=[0.1], total_steps=3)
    one = ls.OneCycleLR(mine(), max_lr=0.1, total_steps=3)
    for _ in range(3):
        one.step()
    with pytest.raises(ValueError, match="OneCycleLR: stepped 4 times"):
        one.step()
    with pytest.raises(ValueError, match="ReduceLROnPlateau factor"):
        ls.ReduceLROnPlateau(mine(), factor=1.0)
    with pytest.raises(ValueError, match="ReduceLROnPlateau mode"):
        ls.ReduceLROnPlateau(mine(), mode="lowest")
    with pytest.raises(ValueError, match="one element"):
        ls.ReduceLROnPlateau(mine()).step(Tensor.zeros([2]))
    with pytest.raises(ValueError, match="SequentialLR: expected 1 milestone"):
        o = mine()
        ls.SequentialLR(o, [ls.StepLR(o, 2), ls.StepLR(o, 3)], milestones=[])
    with pytest.raises(ValueError, match="resuming at last_epoch=3 needs param_groups"):
        ls.StepLR(mine(), step_size=2, last_epoch=3)
