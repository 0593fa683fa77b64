"""RMSprop and Adagrad: each step against torch.optim (and numpy transcriptions of its update rules) in
float64, odd shapes, float32 on long vectors, capture/replay, and argument checks."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, kernels
from axonml_autograd.optim import Adagrad, RMSprop
from test_capture import _trainer  # noqa: E402  (the captured-training helper)
from test_optim import run_device  # noqa: E402  (the step-by-step runner)

SHAPES = [(1,), (3,), (17, 5), (65,)]


def problem(shape, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), [rng.normal(size=shape) for _ in range(steps)]


def run_torch(torch, make_opt, p0, grads):
    w = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = make_opt([w])
    out = []
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(w.detach().numpy().copy())
    return out


# -- numpy transcriptions of torch/optim/rmsprop.py and adagrad.py (single-tensor path) ---------------

def rmsprop_reference(p, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    p = p.copy()
    v, m, b, out = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            m = m + (1 - alpha) * (g - m)
            avg = np.sqrt(v - m * m) + eps
        else:
            avg = np.sqrt(v) + eps
        if momentum:
            b = momentum * b + g / avg
            p = p - lr * b
        else:
            p = p - lr * g / avg
        out.append(p.copy())
    return out


def adagrad_reference(p, grads, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    p = p.copy()
    s, out = np.full_like(p, initial_accumulator_value), []
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        s = s + g * g
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
        out.append(p.copy())
    return out


RMSPROP_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, alpha=0.9, eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, momentum=0.9),
    dict(lr=1e-2, centered=True),
    dict(lr=5e-3, centered=True, momentum=0.8, weight_decay=0.05, alpha=0.95),
]
ADAGRAD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, lr_decay=0.05),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, initial_accumulator_value=0.3, eps=1e-6),
    dict(lr=0.05, lr_decay=0.01, weight_decay=0.02, initial_accumulator_value=0.1),
]


def ids(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items())


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cfg", RMSPROP_CASES, ids=ids)
def test_rmsprop_matches_torch_each_step(fp64, cfg, shape):
    torch = pytest.importorskip("torch")
    p0, grads = problem(shape)
    got = run_device(lambda ps: RMSprop(ps, **cfg), p0, grads, fp64)
    want = run_torch(torch, lambda ps: torch.optim.RMSprop(ps, foreach=False, **cfg), p0, grads)
    for step, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cfg", ADAGRAD_CASES, ids=ids)
def test_adagrad_matches_torch_each_step(fp64, cfg, shape):
    torch = pytest.importorskip("torch")
    p0, grads = problem(shape)
    got = run_device(lambda ps: Adagrad(ps, **cfg), p0, grads, fp64)
    want = run_torch(torch, lambda ps: torch.optim.Adagrad(ps, foreach=False, **cfg), p0, grads)
    for step, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("cfg", RMSPROP_CASES, ids=ids)
def test_rmsprop_matches_numpy_reference(fp64, cfg):
    p0, grads = problem((17, 5), seed=1)
    got = run_device(lambda ps: RMSprop(ps, **cfg), p0, grads, fp64)
    for step, (a, b) in enumerate(zip(got, rmsprop_reference(p0, grads, **cfg))):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("cfg", ADAGRAD_CASES, ids=ids)
def test_adagrad_matches_numpy_reference(fp64, cfg):
    p0, grads = problem((17, 5), seed=1)
    got = run_device(lambda ps: Adagrad(ps, **cfg), p0, grads, fp64)
    for step, (a, b) in enumerate(zip(got, adagrad_reference(p0, grads, **cfg))):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13, err_msg=f"step {step + 1}")


def test_float32_long_vectors_close_to_float64_reference(device):
    # 10001 elements: several work-items on a CPU, a vector loop and a scalar tail each.
    p0, grads = problem((10001,), steps=4)
    f32 = [g.astype(np.float32) for g in grads]
    got = run_device(lambda ps: RMSprop(ps, lr=1e-2, momentum=0.9, centered=True), p0.astype(np.float32), f32,
                     np.float32)
    np.testing.assert_allclose(got[-1], rmsprop_reference(p0, grads, lr=1e-2, momentum=0.9, centered=True)[-1],
                               rtol=1e-4, atol=1e-4)
    got = run_device(lambda ps: Adagrad(ps, lr=0.1, lr_decay=0.1), p0.astype(np.float32), f32, np.float32)
    np.testing.assert_allclose(got[-1], adagrad_reference(p0, grads, lr=0.1, lr_decay=0.1)[-1], rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip_continues_identically(fp64):
    p0, grads = problem((4, 3))
    for make in (lambda ps: RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
                 lambda ps: Adagrad(ps, lr=0.1, lr_decay=0.1, initial_accumulator_value=0.2)):
        w1 = Variable(Tensor.from_numpy(p0), requires_grad=True)
        opt1 = make([w1])
        for g in grads[:3]:
            w1.set_grad(Tensor.from_numpy(g))
            opt1.step()
        sd = opt1.state_dict()
        w2 = Variable(Tensor.from_numpy(w1.numpy()), requires_grad=True)
        opt2 = make([w2])
        opt2.load_state_dict(sd)
        assert sorted(sd["state"][0]) == sorted(opt2.state[w2])
        for g in grads[3:]:
            for w, opt in ((w1, opt1), (w2, opt2)):
                w.set_grad(Tensor.from_numpy(g))
                opt.step()
        np.testing.assert_array_equal(w1.numpy(), w2.numpy())


def test_adagrad_state_names_and_step_count_match_torch(fp64):
    torch = pytest.importorskip("torch")
    p0, grads = problem((3,), steps=2)
    w = Variable(Tensor.from_numpy(p0), requires_grad=True)
    opt = Adagrad([w], lr=0.1, initial_accumulator_value=0.5)
    tw = torch.tensor(p0, requires_grad=True)
    topt = torch.optim.Adagrad([tw], lr=0.1, initial_accumulator_value=0.5)
    for g in grads:
        w.set_grad(Tensor.from_numpy(g))
        opt.step()
        tw.grad = torch.tensor(g)
        topt.step()
    mine, theirs = opt.state_dict()["state"][0], topt.state_dict()["state"][0]
    assert set(mine) == set(theirs) == {"step", "sum"}
    assert mine["step"] == int(theirs["step"]) == 2
    np.testing.assert_allclose(mine["sum"], theirs["sum"].numpy(), rtol=1e-13)


@pytest.mark.parametrize("make_opt", [
    lambda ps: RMSprop(ps, lr=1e-2),
    lambda ps: RMSprop(ps, lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-3),
    lambda ps: Adagrad(ps, lr=0.05, lr_decay=0.01),
], ids=["rmsprop", "rmsprop-centered-momentum", "adagrad"])
def test_captured_steps_with_changing_rates_equal_eager_bit_for_bit(device, make_opt):
    rng = np.random.default_rng(0)
    batches = [(Tensor.from_numpy(rng.standard_normal((9, 6)).astype(np.float32)),
                Tensor.from_numpy(rng.integers(0, 3, 9).astype(np.int32), dtype="int32")) for _ in range(12)]

    def trainer():
        return _trainer(make_opt, seed=1, sizes=[6, 8, 3])

    eager_model, eager_opt, eager_step = trainer()
    model, opt, step = trainer()
    step = capture(step)
    eager_losses, losses = [], []
    for k, (x, y) in enumerate(batches):
        for o in (eager_opt, opt):
            o.param_groups[0]["lr"] = 0.02 / (k + 1)     # edited between calls: a kernel argument
        eager_losses.append(eager_step(x, y).item())
        builds = kernels.build_count()
        losses.append(step(x, y).item())
        if k >= 2:
            assert kernels.build_count() == builds
    assert losses == eager_losses
    assert step.replays >= len(batches) - 2
    for a, b in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert opt.state_dict()["state"][0]["step"] == len(batches)


def test_argument_checks_name_the_optimizer_and_option():
    w = Variable(Tensor.zeros([2]), requires_grad=True)
    with pytest.raises(ValueError, match="RMSprop alpha"):
        RMSprop([w], alpha=1.5)
    with pytest.raises(ValueError, match="RMSprop momentum"):
        RMSprop([w], momentum=-0.1)
    with pytest.raises(TypeError, match="RMSprop eps"):
        RMSprop([w], eps="small")
    with pytest.raises(ValueError, match="Adagrad lr_decay"):
        Adagrad([w], lr_decay=-1)
    with pytest.raises(ValueError, match="Adagrad initial_accumulator_value"):
        Adagrad([w], initial_accumulator_value=-0.5)
    with pytest.raises(TypeError, match="unknown option"):
        Adagrad([{"params": [w], "momentum": 0.9}])
