"""GradScaler: torch's scale sequence and skipped steps, decided on the device with no host reads."""

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import GradScaler, Tensor, Variable, capture
from axonml_autograd.nn import functional as F
from axonml_autograd.optim import SGD, Adam, Adagrad, RMSprop
from axonml_autograd.utils import clip_grad_norm_

INF_STEPS = {1, 2, 5}     # steps whose loss is made inf (torch's run gets the same)


def _data(steps=8):
    rng = np.random.default_rng(7)
    return [(rng.standard_normal((5, 4)).astype(np.float64), rng.standard_normal((5, 3)).astype(np.float64))
            for _ in range(steps)]


def _weights():
    rng = np.random.default_rng(3)
    return rng.standard_normal((3, 4)), rng.standard_normal(3)   # float64: torch and we agree to 1e-12


def _ours(make_opt, data, clip=None, scaler_kw=None):
    w0, b0 = _weights()
    w = Variable(Tensor.from_numpy(w0), requires_grad=True)
    b = Variable(Tensor.from_numpy(b0), requires_grad=True)
    opt = make_opt([w, b])
    scaler = GradScaler(**(scaler_kw or dict(init_scale=2.0 ** 10, growth_interval=2)))
    scales, params = [], []
    for k, (x, y) in enumerate(data):
        opt.zero_grad()
        loss = F.mse_loss(F.linear(Variable(Tensor.from_numpy(x)), w, b), Variable(Tensor.from_numpy(y)))
        if k in INF_STEPS:
            loss = loss * float("inf")
        scaler.scale(loss).backward()
        if clip is not None:
            scaler.unscale_(opt)
            clip_grad_norm_([w, b], clip)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append(np.concatenate([w.data().numpy().ravel(), b.data().numpy().ravel()]))
    return scales, params


def _torch(make_opt, data, clip=None):
    torch = pytest.importorskip("torch")
    w0, b0 = _weights()
    w = torch.tensor(w0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    opt = make_opt([w, b])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    scales, params = [], []
    for k, (x, y) in enumerate(data):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(torch.nn.functional.linear(torch.tensor(x), w, b), torch.tensor(y))
        if k in INF_STEPS:
            loss = loss * float("inf")
        scaler.scale(loss).backward()
        if clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([w, b], clip)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append(np.concatenate([w.detach().numpy().ravel(), b.detach().numpy().ravel()]))
    return scales, params


@pytest.mark.parametrize("name", ["sgd", "sgd_momentum_dampening", "adam", "adagrad_init", "rmsprop"])
def test_scale_sequence_and_skipped_steps_equal_torchs(name):
    torch = pytest.importorskip("torch")
    ours_opt, torch_opt = {
        "sgd": (lambda ps: SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
        # A first step that is skipped must leave the next one a first step (b = g, not the dampened form).
        "sgd_momentum_dampening": (lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.5),
                                   lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5)),
        "adam": (lambda ps: Adam(ps, lr=0.05), lambda ps: torch.optim.Adam(ps, lr=0.05)),
        "adagrad_init": (lambda ps: Adagrad(ps, lr=0.1, initial_accumulator_value=0.3),
                         lambda ps: torch.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.3)),
        "rmsprop": (lambda ps: RMSprop(ps, lr=0.01, momentum=0.5), lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5)),
    }[name]
    data = _data()
    # The first step is an inf step too for the momentum case: INF_STEPS holds 1, 2 (and step 0 is good),
    # so shift the data to put an inf step first.
    if name in ("sgd_momentum_dampening", "adagrad_init"):
        data = data[1:] + data[:1]
        global INF_STEPS
        saved, INF_STEPS = INF_STEPS, {0, 1, 4}
    try:
        s_ours, p_ours = _ours(ours_opt, data)
        s_torch, p_torch = _torch(torch_opt, data)
    finally:
        if name in ("sgd_momentum_dampening", "adagrad_init"):
            INF_STEPS = saved
    assert s_ours == s_torch
    for k, (a, b) in enumerate(zip(p_ours, p_torch)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"parameters after step {k}")


def test_unscale_then_clip_grad_norm_as_torch():
    torch = pytest.importorskip("torch")
    data = _data()
    s_ours, p_ours = _ours(lambda ps: SGD(ps, lr=0.1), data, clip=0.5)
    s_torch, p_torch = _torch(lambda ps: torch.optim.SGD(ps, lr=0.1), data, clip=0.5)
    assert s_ours == s_torch
    np.testing.assert_allclose(np.array(p_ours), np.array(p_torch), rtol=1e-10, atol=1e-12)


def test_all_finite_steps_equal_the_unscaled_steps():
    data = _data(4)
    global INF_STEPS
    saved, INF_STEPS = INF_STEPS, set()
    try:
        _scales, scaled = _ours(lambda ps: Adam(ps, lr=0.05), data)
        _scales, plain = _ours(lambda ps: Adam(ps, lr=0.05), data, scaler_kw=dict(enabled=False))
    finally:
        INF_STEPS = saved
    # The scale is a power of two: scaling and unscaling are exact, so the steps are the same bits.
    np.testing.assert_array_equal(np.array(scaled), np.array(plain))


def _captured_trainer():
    w0, b0 = _weights()
    w = Variable(Tensor.from_numpy(w0), requires_grad=True)
    b = Variable(Tensor.from_numpy(b0), requires_grad=True)
    opt = Adam([w, b], lr=0.05)
    scaler = GradScaler(init_scale=2.0 ** 10, growth_interval=2)

    def step(x, y, boost):
        opt.zero_grad()
        loss = F.mse_loss(F.linear(x, w, b), y) * boost
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss
    return w, scaler, step


def test_captured_scaled_step_reads_nothing_and_equals_eager(host_traffic):
    data = _data(8)
    boosts = [Tensor.full([], float("inf") if k in INF_STEPS else 1.0) for k in range(8)]
    batches = [(Variable(Tensor.from_numpy(x)), Variable(Tensor.from_numpy(y))) for x, y in data]
    w_e, scaler_e, eager = _captured_trainer()
    w_c, scaler_c, step = _captured_trainer()
    step = capture(step)
    for k in range(3):
        eager(*batches[k], boosts[k])
        step(*batches[k], boosts[k])
    with host_traffic() as traffic:
        for k in range(3, 8):
            eager_loss = eager(*batches[k], boosts[k])
            step(*batches[k], boosts[k])
    assert traffic.reads == 0 and traffic.waits == 0
    assert step.replays >= 5
    np.testing.assert_array_equal(w_c.data().numpy(), w_e.data().numpy())
    assert scaler_c.get_scale() == scaler_e.get_scale()
    assert scaler_c.state_dict() == scaler_e.state_dict()
    del eager_loss


def test_state_dict_round_trip_has_torchs_keys():
    torch = pytest.importorskip("torch")
    _s, _p = _ours(lambda ps: SGD(ps, lr=0.1), _data(3))
    ours = GradScaler(init_scale=8.0, growth_interval=3)
    w = Variable(Tensor.ones([2]), requires_grad=True)
    opt = SGD([w], lr=0.1)
    ours.scale(w.sum()).backward()
    ours.step(opt)
    ours.update()
    sd = ours.state_dict()
    assert set(sd) == set(torch.amp.GradScaler("cpu").state_dict())
    assert sd["scale"] == 8.0 and sd["_growth_tracker"] == 1
    other = GradScaler()
    other.load_state_dict(sd)
    assert other.state_dict() == sd


def test_misuse_raises_as_torch():
    w = Variable(Tensor.ones([2]), requires_grad=True)
    opt = SGD([w], lr=0.1)
    scaler = GradScaler()
    with pytest.raises(RuntimeError, match="no inf checks"):
        scaler.update()
    scaler.scale(w.sum()).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="already been called since the last update"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    scaler.update()
    with pytest.raises(RuntimeError, match="closure"):
        scaler.step(opt, closure=lambda: None)
    with pytest.raises(ValueError, match="growth_factor"):
        GradScaler(growth_factor=0.5)
    h = Variable(Tensor.ones([2], "float16"), requires_grad=True)
    hopt = SGD([h], lr=0.1)
    scaler.scale(h.float().sum()).backward()
    with pytest.raises(ValueError, match="float16 gradients"):
        scaler.unscale_(hopt)


def test_disabled_scaler_passes_through():
    w = Variable(Tensor.ones([2]), requires_grad=True)
    opt = SGD([w], lr=0.5)
    scaler = GradScaler(enabled=False)
    loss = w.sum()
    assert scaler.scale(loss) is loss
    loss.backward()
    scaler.step(opt)
    scaler.update()
    assert w.data().to_vec() == [0.5, 0.5] and scaler.get_scale() == 1.0 and scaler.state_dict() == {}
