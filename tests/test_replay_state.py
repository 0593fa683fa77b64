"""Replay state on the device: a captured step or draw replays from its recorded commands alone.

The optimisers' step counts and rates and the random generator's position live in device buffers
that the kernels read and advance; a host write of a rate is a fill on the stream. So the recorded
commands, enqueued again with no Python at all, must continue exactly as eager calls do.
"""

import copy
import pickle

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, launch
from axonml_autograd.nn import MLP
from axonml_autograd.optim import SGD, Adagrad, Adam, AdamW, RMSprop, lr_scheduler
from axonml_autograd.random import manual_seed

SIZES = [6, 8, 3]


def _data(seed=0, n=9):
    rng = np.random.default_rng(seed)
    return (Tensor.from_numpy(rng.standard_normal((n, SIZES[0])).astype(np.float32)),
            Tensor.from_numpy(rng.integers(0, SIZES[-1], n).astype(np.int32), dtype="int32"))


def _trainer(make_opt, dropout=False):
    model = MLP(SIZES, seed=4)
    opt = make_opt(model.parameters())

    def step(x, y):
        opt.zero_grad()
        h = Variable(x)
        if dropout:   # a fresh mask each call, from the device generator
            h = h * Variable(Tensor.rand([x.shape()[0], SIZES[0]]).add_scalar(0.5))
        loss = model(h).cross_entropy(y)
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def _params(model):
    return [p.data().numpy() for p in model.parameters()]


def _raw_replay(f, times):
    """Enqueue the one recording's commands ``times`` times: no guards, no Python of the library."""
    (rec,) = f._kept()
    for _ in range(times):
        for device in rec.devices:
            with device.launch_lock:
                launch.flush(device)
                for cmd in rec.commands:
                    launch.enqueue(cmd)


OPTIMISERS = {
    "adam": lambda ps: Adam(ps, lr=1e-2),
    "adamw-amsgrad": lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True),
    "sgd-nesterov": lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "sgd": lambda ps: SGD(ps, lr=0.05),
    "rmsprop": lambda ps: RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
    "adagrad": lambda ps: Adagrad(ps, lr=0.1, lr_decay=0.05),
}


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
def test_recorded_commands_alone_continue_like_eager_steps(name, dropout):
    x, y = _data()
    eager_model, eager_opt, eager_step = _trainer(OPTIMISERS[name], dropout)
    model, opt, step = _trainer(OPTIMISERS[name], dropout)
    manual_seed(11)
    for _ in range(7):
        eager_step(x, y)
    manual_seed(11)
    f = capture(step)
    f(x, y)
    f(x, y)                        # the first call made state: this one is the recording kept
    assert len(f._kept()) == 1
    _raw_replay(f, 5)
    for a, b in zip(_params(model), _params(eager_model)):
        np.testing.assert_array_equal(a, b)
    assert opt.state_dict()["state"][0]["step"] == eager_opt.state_dict()["state"][0]["step"] == 7


def test_a_recording_holds_no_patchable_launches_and_only_guards():
    x, y = _data()
    _model, _opt, step = _trainer(lambda ps: Adam(ps, lr=1e-2), dropout=True)
    f = capture(step)
    f(x, y)
    f(x, y)
    (rec,) = f._kept()
    assert not hasattr(rec, "on_replay") and not hasattr(rec, "hooks")
    assert {cmd[0] for cmd in rec.commands} <= {launch.READY, launch.FILL, launch.COPY}
    before = [tuple(cmd) for cmd in rec.commands]
    f(x, y)
    assert f.replays == 1 and [tuple(cmd) for cmd in rec.commands] == before


@pytest.mark.parametrize("name", ["adam", "sgd", "adagrad"])
def test_a_rate_set_on_the_host_reaches_the_next_replay(name):
    x, y = _data()
    eager_model, eager_opt, eager_step = _trainer(OPTIMISERS[name])
    model, opt, step = _trainer(OPTIMISERS[name])
    f = capture(step)
    for k, lr in enumerate([0.02, 0.02, 0.0, 0.3, 0.3, 0.001]):
        for o in (opt, eager_opt):
            if k % 2:
                o.lr = lr
            else:
                o.param_groups[0]["lr"] = lr
        before = _params(model)
        assert f(x, y).item() == eager_step(x, y).item()
        if lr == 0.0:
            for a, b in zip(_params(model), before):   # lr 0: nothing moves (no weight decay here)
                np.testing.assert_array_equal(a, b)
    for a, b in zip(_params(model), _params(eager_model)):
        np.testing.assert_array_equal(a, b)
    assert f.replays >= 4


def test_a_scheduler_between_replays_matches_eager():
    x, y = _data()
    runs = []
    for captured in (False, True):
        model, opt, step = _trainer(lambda ps: AdamW(ps, lr=0.05, weight_decay=0.1))
        sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        run = capture(step) if captured else step
        losses = []
        for _ in range(8):
            losses.append(run(x, y).item())
            sched.step()
        runs.append((losses, _params(model), run))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)
    assert runs[1][2].replays >= 6


def test_counts_are_per_parameter_within_a_group():
    # w2 has no gradient at the first step: it does not count that step (as in PyTorch), so its bias
    # corrections follow its own count, as with an optimiser of its own.
    rng = np.random.default_rng(1)
    start = [rng.standard_normal(4).astype(np.float32) for _ in range(2)]
    grads = [rng.standard_normal(4).astype(np.float32) for _ in range(3)]
    w1, w2 = (Variable(Tensor.from_numpy(s), requires_grad=True) for s in start)
    opt = Adam([w1, w2], lr=0.1)
    a1, a2 = (Variable(Tensor.from_numpy(s), requires_grad=True) for s in start)
    alone1, alone2 = Adam([a1], lr=0.1), Adam([a2], lr=0.1)
    for k, g in enumerate(grads):
        for w, o in ((w1, opt), (a1, alone1)):
            w.set_grad(Tensor.from_numpy(g))
        if k > 0:
            for w in (w2, a2):
                w.set_grad(Tensor.from_numpy(g))
        opt.step()
        alone1.step()
        if k > 0:
            alone2.step()
        for w in (w1, w2, a1, a2):
            w.zero_grad()
            w._grad = None
    steps = opt.state_dict()["state"]
    assert (steps[0]["step"], steps[1]["step"]) == (3, 2)
    np.testing.assert_array_equal(w1.numpy(), a1.numpy())
    np.testing.assert_array_equal(w2.numpy(), a2.numpy())


def test_a_reloaded_count_continues_on_the_device():
    x, y = _data()
    model, opt, step = _trainer(lambda ps: Adam(ps, lr=1e-2))
    for _ in range(3):
        step(x, y)
    sd = opt.state_dict()
    sd["state"][0]["step"] = 2**33 - 1     # the advance carries into the high word
    opt.load_state_dict(sd)
    step(x, y)
    assert opt.state_dict()["state"][0]["step"] == 2**33
    assert int(opt.state[model.parameters()[0]]["step"]) == 2**33
    assert all(np.isfinite(p).all() for p in _params(model))


def test_beta1_zero_has_no_bias_correction_and_stays_finite():
    w = Variable(Tensor.from_vec([1.0, -2.0], [2]), requires_grad=True)
    opt = Adam([w], lr=0.1, betas=(0.0, 0.999))
    w.set_grad(Tensor.from_vec([0.5, 0.5], [2]))
    opt.step()
    # m = g, v = 0.001 g^2, bias-corrected v = g^2: the step is lr * g / (|g| + eps) = 0.1
    np.testing.assert_allclose(w.to_vec(), [0.9, -2.1], rtol=1e-5)


def test_an_eager_step_reads_nothing(host_traffic):
    x, y = _data()
    _model, _opt, step = _trainer(lambda ps: Adam(ps, lr=1e-2), dropout=True)
    step(x, y)
    with host_traffic() as traffic:
        step(x, y)
        _opt.lr = 0.5
        step(x, y)
    assert traffic.reads == 0 and traffic.waits == 0


def test_groups_copy_as_plain_dicts():
    # (A deep copy or pickle of a group fails on its Variables, as PyTorch's does on device tensors.)
    opt = SGD([Variable(Tensor.zeros([2]), requires_grad=True)], lr=0.1)
    clone = copy.copy(opt.param_groups[0])
    assert type(clone) is dict and clone["lr"] == 0.1
    del clone["params"]
    assert pickle.loads(pickle.dumps(clone)) == clone
