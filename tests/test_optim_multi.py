"""SGD and Adam/AdamW update up to eight parameters per launch (torch's foreach): the same bits as one
launch per parameter, for every option, several groups, float64, under the gradient scaler's skipped
steps and through capture."""

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import GradScaler, Tensor, Variable, capture, launch
from axonml_autograd.optim import SGD, Adam, AdamW

SHAPES = [(1,), (3,), (17, 3), (65,), (129, 2), (9000,), (5,), (2, 2), (7,), (11,)]   # 10: two launches


def _params(dtype, seed):
    rng = np.random.default_rng(seed)
    return [Variable(Tensor.from_numpy(rng.standard_normal(s).astype(dtype)), requires_grad=True) for s in SHAPES]


def _run(make, dtype, multi, steps=3, scaler_infs=()):
    params = _params(dtype, 0)
    groups = [{"params": params[:6]}, {"params": params[6:], "lr": 0.05}]
    opt = make(groups)
    if not multi:
        opt._multi_kernel = None
    scaler = GradScaler(init_scale=4.0) if scaler_infs is not None and scaler_infs != () else None
    rng = np.random.default_rng(1)
    for k in range(steps):
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(Variable(Tensor.ones([], dtype=dtype)))   # (the loss: what makes the scale exist)
        for p in params:
            g = rng.standard_normal(p.shape).astype(dtype)
            if scaler is not None and k in scaler_infs and p is params[3]:
                g[0] = np.inf
            p.grad = Tensor.from_numpy(g * (scaler.get_scale() if scaler else 1.0))
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    state = [opt.state[p].get(k) for p in params for k in opt._state_keys if opt.state[p].get(k) is not None]
    return [p.data().numpy() for p in params], [t.numpy() for t in state]


OPTIMIZERS = {
    "sgd": lambda g: SGD(g, lr=0.1),
    "sgd_momentum": lambda g: SGD(g, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd_nesterov": lambda g: SGD(g, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda g: Adam(g, lr=0.01, weight_decay=0.1),
    "adamw_amsgrad": lambda g: AdamW(g, lr=0.01, amsgrad=True),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_parameters_per_launch_give_the_bits_of_one_launch_each(name, dtype, fp64):
    got, got_state = _run(OPTIMIZERS[name], dtype, True)
    want, want_state = _run(OPTIMIZERS[name], dtype, False)
    for a, b in zip(got + got_state, want + want_state):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(got[0], _params(dtype, 0)[0].data().numpy())   # the steps did move them


@pytest.mark.parametrize("name", ["sgd_momentum", "adam"])
def test_skipped_steps_of_the_gradient_scaler_are_skipped_in_every_slot(name):
    got, got_state = _run(OPTIMIZERS[name], np.float32, True, steps=4, scaler_infs=(0, 2))
    want, want_state = _run(OPTIMIZERS[name], np.float32, False, steps=4, scaler_infs=(0, 2))
    for a, b in zip(got + got_state, want + want_state):
        np.testing.assert_array_equal(a, b)


def test_ten_parameters_of_one_group_take_two_launches(monkeypatch):
    params = _params(np.float32, 2)
    opt = Adam(params, lr=0.01)
    for p in params:
        p.grad = Tensor.ones(p.shape())
    names = []
    real = launch.kernel
    monkeypatch.setattr(launch, "kernel", lambda *a, **k: (names.append(a[1].function_name), real(*a, **k))[1])
    opt.step()
    assert sorted(set(names) - {"advance_counters"}) == ["adam_step_multi"]
    assert names.count("adam_step_multi") == 2


def test_a_captured_multi_parameter_step_equals_eager():
    def make():
        params = _params(np.float32, 3)
        return params, SGD(params, lr=0.1, momentum=0.9)
    (pe, oe), (pc, oc) = make(), make()

    def step(params, opt):
        opt.zero_grad()
        loss = sum((p * p).sum() for p in params)
        loss.backward()
        opt.step()
    captured = capture(lambda: step(pc, oc))
    for _ in range(3):
        step(pe, oe)
        captured()
    assert captured.replays >= 1
    for a, b in zip(pe, pc):
        np.testing.assert_array_equal(a.data().numpy(), b.data().numpy())
