"""Optimisers against numpy transcriptions of PyTorch's update rules, in float64, step by step."""

import math

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, kernels
from axonml_autograd.nn import MLP
from axonml_autograd.optim import SGD, Adam, AdamW


# -- references: torch/optim/sgd.py and adam.py (single-tensor path), written out in numpy ----------------

def sgd_reference(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    p, buf, out = p.copy(), None, []
    for g in grads:
        g = g + weight_decay * p if weight_decay else g.copy()
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        out.append(p.copy())
    return out


def adam_reference(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   decoupled=False):
    b1, b2 = betas
    p, m, v, vmax, out = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        if amsgrad:
            vmax = np.maximum(vmax, v)
            denom = np.sqrt(vmax) / math.sqrt(bc2) + eps
        else:
            denom = np.sqrt(v) / math.sqrt(bc2) + eps
        p = p - (lr / bc1) * m / denom
        out.append(p.copy())
    return out


def run_device(make_opt, p0, grads, dtype):
    w = Variable(Tensor.from_numpy(p0, dtype=dtype), requires_grad=True)
    opt = make_opt([w])
    out = []
    for g in grads:
        w.set_grad(Tensor.from_numpy(g, dtype=dtype))
        opt.step()
        out.append(w.numpy())
    return out


def problem(shape=(7, 5), steps=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), [rng.normal(size=shape) for _ in range(steps)]


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, weight_decay=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
]


@pytest.mark.parametrize("cfg", SGD_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_reference(fp64, cfg):
    p0, grads = problem()
    got = run_device(lambda ps: SGD(ps, **cfg), p0, grads, fp64)
    want = sgd_reference(p0, grads, **cfg)
    for step, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"step {step + 1}")


ADAM_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, amsgrad=True),
]


@pytest.mark.parametrize("cfg", ADAM_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_adam_matches_reference(fp64, cfg):
    p0, grads = problem()
    got = run_device(lambda ps: Adam(ps, **cfg), p0, grads, fp64)
    want = adam_reference(p0, grads, **cfg)
    for step, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("cfg", [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.3, amsgrad=True)],
                         ids=["default-wd", "wd+amsgrad"])
def test_adamw_matches_reference(fp64, cfg):
    p0, grads = problem()
    got = run_device(lambda ps: AdamW(ps, **cfg), p0, grads, fp64)
    want = adam_reference(p0, grads, decoupled=True, **{"weight_decay": 1e-2, **cfg})
    for step, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"step {step + 1}")


def test_float32_adam_close_to_reference(device):
    p0, grads = problem(shape=(300,))
    got = run_device(lambda ps: Adam(ps, lr=1e-2), p0.astype(np.float32),
                     [g.astype(np.float32) for g in grads], np.float32)
    want = adam_reference(p0, grads, lr=1e-2)
    np.testing.assert_allclose(got[-1], want[-1], rtol=1e-4, atol=1e-5)


def test_gradients_from_backward_and_param_groups(fp64):
    # loss = sum(c * w^2) -> grad 2 c w; two groups with their own learning rates.
    rng = np.random.default_rng(3)
    a0, b0, c = rng.normal(size=(4, 3)), rng.normal(size=(3,)), rng.normal(size=(4, 3))
    a = Variable(Tensor.from_numpy(a0), requires_grad=True)
    b = Variable(Tensor.from_numpy(b0), requires_grad=True)
    cv = Variable(Tensor.from_numpy(c))
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    ra, rb, ba, bb = a0.copy(), b0.copy(), None, None
    for _ in range(4):
        opt.zero_grad()
        ((a * a * cv).sum() + (b * b).sum()).backward()
        opt.step()
        ga, gb = 2 * c * ra, 2 * rb
        ba = ga if ba is None else 0.9 * ba + ga
        bb = gb if bb is None else 0.9 * bb + gb
        ra, rb = ra - 0.1 * ba, rb - 0.5 * bb
    np.testing.assert_allclose(a.numpy(), ra, rtol=1e-10)
    np.testing.assert_allclose(b.numpy(), rb, rtol=1e-10)


def test_in_place_update_skips_params_without_grad(fp64):
    w = Variable(Tensor.from_numpy(np.ones(3)), requires_grad=True)
    idle = Variable(Tensor.from_numpy(np.full(3, 5.0)), requires_grad=True)
    buffer, version = w.data().buffer, w.data().version
    opt = Adam([w, idle], lr=0.1)
    w.set_grad(Tensor.from_numpy(np.ones(3)))
    opt.step()
    assert w.data().buffer is buffer                 # updated through the same buffer
    assert w.data().version == version + 1           # saved-for-backward copies can see the change
    assert idle.numpy().tolist() == [5.0] * 3 and idle not in opt.state
    np.testing.assert_allclose(w.numpy(), 0.9)       # Adam's first step moves by lr * sign(g)


def test_changing_lr_and_steps_never_rebuilds(fp64):
    w = Variable(Tensor.from_numpy(np.zeros(10)), requires_grad=True)
    opt = Adam([w], lr=0.1)
    w.set_grad(Tensor.from_numpy(np.ones(10)))
    opt.step()
    builds = kernels.build_count()
    for k in range(5):
        opt.lr = 0.1 / (k + 2)
        opt.step()
    assert kernels.build_count() == builds
    assert all(g["lr"] == opt.lr for g in opt.param_groups)


def test_state_dict_round_trip_continues_identically(fp64):
    p0, grads = problem(steps=6)
    w1 = Variable(Tensor.from_numpy(p0), requires_grad=True)
    opt1 = Adam([w1], lr=0.02, amsgrad=True)
    for g in grads[:3]:
        w1.set_grad(Tensor.from_numpy(g))
        opt1.step()
    sd = opt1.state_dict()
    assert sd["state"][0]["step"] == 3 and isinstance(sd["state"][0]["exp_avg"], np.ndarray)
    assert sd["param_groups"][0]["params"] == [0] and sd["param_groups"][0]["lr"] == 0.02

    w2 = Variable(Tensor.from_numpy(w1.numpy()), requires_grad=True)
    opt2 = Adam([w2], lr=1.0)
    opt2.load_state_dict(sd)
    assert opt2.lr == 0.02 and opt2.param_groups[0]["amsgrad"] is True
    for g in grads[3:]:
        for w, opt in ((w1, opt1), (w2, opt2)):
            w.set_grad(Tensor.from_numpy(g))
            opt.step()
    np.testing.assert_array_equal(w1.numpy(), w2.numpy())


def test_load_state_dict_rejects_bad_state(fp64):
    w = Variable(Tensor.from_numpy(np.zeros((2, 3))), requires_grad=True)
    opt = SGD([w], lr=0.1, momentum=0.9)
    w.set_grad(Tensor.from_numpy(np.ones((2, 3))))
    opt.step()
    sd = opt.state_dict()
    good = sd["state"][0]["momentum_buffer"].copy()

    sd["state"][0]["momentum_buffer"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"momentum_buffer has shape \[3, 2\].*\[2, 3\]"):
        opt.load_state_dict(sd)
    np.testing.assert_array_equal(opt.state[w]["momentum_buffer"].numpy(), good)   # untouched

    with pytest.raises(ValueError, match="2 parameter group"):
        opt.load_state_dict({"state": {}, "param_groups": sd["param_groups"] * 2})
    sd["state"][0]["momentum_buffer"] = good
    sd["state"][0]["exp_avg"] = good
    with pytest.raises(ValueError, match="unknown state"):
        opt.load_state_dict(sd)


def test_argument_validation():
    w = Variable(Tensor.zeros([2]), requires_grad=True)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta1"):
        Adam([w], betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="lr"):
        SGD([w], lr=-1)
    with pytest.raises(ValueError, match="empty"):
        Adam([])
    with pytest.raises(ValueError, match="twice"):
        SGD([w, w], lr=0.1)
    with pytest.raises(TypeError, match="unknown option"):
        SGD([{"params": [w], "betas": (0.9, 0.9)}], lr=0.1)


@pytest.mark.parametrize("make_opt", [lambda ps: Adam(ps, lr=1e-3),
                                      lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True)],
                         ids=["adam", "sgd-nesterov"])
def test_training_step_makes_no_host_reads(device, host_traffic, make_opt):
    net = MLP([8, 16, 4], seed=0)
    opt = make_opt(net.parameters())
    rng = np.random.default_rng(0)
    x = Variable(Tensor.from_numpy(rng.normal(size=(32, 8)).astype(np.float32)))
    y = Tensor.from_numpy(rng.integers(0, 4, 32).astype(np.int32), dtype="int32")

    def train_step():
        opt.zero_grad()
        loss = net(x).cross_entropy(y)
        loss.backward()
        opt.step()
        return loss

    first = train_step().item()    # builds kernels and creates the optimiser state
    with host_traffic() as traffic:
        for _ in range(3):
            last = train_step()
    assert (traffic.reads, traffic.waits) == (0, 0)
    assert last.item() < first


def test_a_frozen_parameter_is_accepted_and_left_alone_until_unfrozen():
    frozen = Variable(Tensor.from_vec([1.0, 2.0], [2]))
    live = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    opt = SGD([frozen, live], lr=0.5)
    (live * 3.0).sum().backward()
    opt.step()
    assert frozen.to_vec() == [1.0, 2.0] and live.to_vec() == [-0.5, 0.5]
    frozen.requires_grad_(True)
    (frozen * 2.0).sum().backward()
    opt.step()
    assert frozen.to_vec() == [0.0, 1.0]
