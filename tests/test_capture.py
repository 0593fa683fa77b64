"""capture(fn): replays are bit-identical to eager calls, record again when the program's state no
longer matches the recording, raise when a replay could not repeat what fn did, and coexist."""

import importlib
import gc
import math
import threading

import numpy as np
import pytest

from axonml_autograd import CaptureError, Tensor, Variable, capture, detect_anomaly
from axonml_autograd import tensor as T
from axonml_autograd.elementwise_kernels import elementwise
from axonml_autograd.device import Device
from axonml_autograd.nn import MLP
from axonml_autograd.optim import SGD, Adam, AdamW

SIZES = [12, 17, 5]
BATCH = 9


def _batches(n, seed=0, device=None, batch=BATCH):
    rng = np.random.default_rng(seed)
    return [(Tensor.from_numpy(rng.standard_normal((batch, SIZES[0])).astype(np.float32), device=device),
             Tensor.from_numpy(rng.integers(0, SIZES[-1], batch).astype(np.int32), dtype="int32", device=device))
            for _ in range(n)]


def _trainer(make_opt, device=None, seed=3, sizes=SIZES):
    model = MLP(sizes, seed=seed, device=device)
    opt = make_opt(model.parameters())

    def step(x, y):
        opt.zero_grad()
        loss = model(Variable(x)).cross_entropy(y)
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def _cosine(step, total, lr):
    return lr * 0.5 * (1 + math.cos(math.pi * step / total))


def _params(model):
    return [p.data().numpy() for p in model.parameters()]


@pytest.mark.parametrize("make_opt", [
    lambda ps: Adam(ps, lr=1e-2),
    lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1),
    lambda ps: Adam(ps, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    lambda ps: SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
], ids=["adam", "adamw", "adam-amsgrad", "sgd-momentum", "sgd-nesterov"])
def test_sixty_captured_steps_with_a_cosine_schedule_equal_eager_bit_for_bit(make_opt):
    batches = _batches(60)
    eager_model, eager_opt, eager_step = _trainer(make_opt)
    model, opt, step = _trainer(make_opt)
    step = capture(step)
    eager_losses, losses = [], []
    for k, (x, y) in enumerate(batches):
        eager_opt.lr = opt.lr = _cosine(k, len(batches), 1e-2)   # set between calls: honoured at replay
        eager_losses.append(eager_step(x, y).item())
        losses.append(step(x, y).item())
    assert losses == eager_losses
    for a, b in zip(_params(model), _params(eager_model)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_array_equal(a.grad().numpy(), b.grad().numpy())
    assert step.replays >= 57, step            # a first step creates state: at most two recordings
    assert opt.state_dict()["state"][0]["step"] == 60
    assert losses[-1] < losses[0]


def test_replay_makes_no_host_reads_or_waits(host_traffic):
    batches = _batches(4)
    _model, _opt, step = _trainer(lambda ps: Adam(ps, lr=1e-3))
    step = capture(step)
    for x, y in batches[:2]:
        step(x, y)
    with host_traffic() as traffic:
        step(*batches[2])
        step(*batches[3])
    assert traffic.reads == 0 and traffic.waits == 0
    assert step.replays == 2


def test_results_of_successive_calls_do_not_alias_each_other():
    batches = _batches(5)
    _m, _o, eager = _trainer(lambda ps: SGD(ps, lr=0.1))
    _model, _opt, step = _trainer(lambda ps: SGD(ps, lr=0.1))
    step = capture(step)
    losses = [step(*b) for b in batches]                # kept, as `losses.append(step(x, y))` does
    want = [eager(*b).item() for b in batches]
    assert step.recordings == 1 and step.replays == 4
    assert len({id(v) for v in losses}) == 5
    assert [v.item() for v in losses] == want            # each still holds its own step's loss
    assert len(set(want)) == 5


def test_a_new_argument_signature_records_again_and_old_ones_still_replay():
    _m, _o, eager = _trainer(lambda ps: SGD(ps, lr=0.1))
    _m2, _o2, step = _trainer(lambda ps: SGD(ps, lr=0.1))
    step = capture(step)
    small, large = _batches(3, batch=4), _batches(3, seed=1, batch=7)
    for (xs, ys), (xl, yl) in zip(small, large):
        assert step(xs, ys).item() == eager(xs, ys).item()
        assert step(xl, yl).item() == eager(xl, yl).item()
    assert step.recordings == 2 and step.replays == 4


def test_plain_values_are_part_of_the_signature():
    w = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)

    def scaled(x, k):
        w.zero_grad()
        loss = (w * x).sum() * k
        loss.backward()
        return loss

    f = capture(scaled)
    x = Tensor.from_vec([1.0, 1.0], [2])
    assert [f(x, 2.0).item(), f(x, 3.0).item(), f(x, 2.0).item()] == [6.0, 9.0, 6.0]
    assert f.recordings == 2 and f.replays == 1


def test_accumulating_without_zero_grad_matches_eager():
    # fn never zeroes: the first call copies the gradient in, later calls add to it. A replay of the
    # first recording would copy again, so the changed starting gradient makes it record again.
    def make():
        w = Variable(Tensor.from_vec([0.5, -1.0, 2.0], [3]), requires_grad=True)

        def accumulate(x):
            loss = (w * x).pow(2.0).sum()
            loss.backward()
            return loss
        return w, accumulate

    w_eager, eager = make()
    w, f = make()
    f = capture(f)
    for k in range(5):
        x = Tensor.from_vec([1.0 + k, 2.0, 3.0], [3])
        eager(x)
        f(x)
        np.testing.assert_array_equal(w.grad().numpy(), w_eager.grad().numpy())
    assert f.replays >= 3


def test_zero_grad_outside_the_function_is_honoured():
    w = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)

    def accumulate(x):
        (w * x).sum().backward()

    f = capture(accumulate)
    x = Tensor.from_vec([1.0, 1.0], [2])
    for _ in range(3):
        f(x)
    assert w.grad().to_vec() == [3.0, 3.0]
    w.zero_grad()
    f(x)
    assert w.grad().to_vec() == [1.0, 1.0]


def test_reloaded_optimizer_state_records_again():
    batches = _batches(6)
    model, opt, step = _trainer(lambda ps: Adam(ps, lr=1e-2))
    eager_model, eager_opt, eager_step = _trainer(lambda ps: Adam(ps, lr=1e-2))
    step = capture(step)
    for x, y in batches[:3]:
        step(x, y)
        eager_step(x, y)
    saved = opt.state_dict()
    recordings = step.recordings
    opt.load_state_dict(saved)           # new state tensors: the recording's are stale
    eager_opt.load_state_dict(eager_opt.state_dict())
    for x, y in batches[3:]:
        assert step(x, y).item() == eager_step(x, y).item()
    assert step.recordings == recordings + 1


def test_a_replayed_step_still_invalidates_graphs_saved_outside():
    batches = _batches(3)
    model, _opt, step = _trainer(lambda ps: SGD(ps, lr=0.1))
    step = capture(step)
    step(*batches[0])
    step(*batches[1])
    saved = model(Variable(batches[2][0])).cross_entropy(batches[2][1])   # saves the weights
    step(*batches[2])                                                      # a replay updates them
    assert step.replays == 2
    with pytest.raises(RuntimeError, match="modified in place"):
        saved.backward()


def test_host_reads_and_uploads_inside_raise_capture_error():
    w = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    x = Tensor.from_vec([1.0, 1.0], [2])
    with pytest.raises(CaptureError, match="reads the device"):
        capture(lambda t: (w * t).sum().item())(x)
    with pytest.raises(CaptureError, match="uploads host data"):
        capture(lambda t: Variable(t).reshape([1, 2]).cross_entropy([1]))(x)
    with pytest.raises(CaptureError, match="anomaly"):
        with detect_anomaly():
            capture(lambda t: (w * t).sum())(x)
    inner = capture(lambda t: (w * t).sum())
    with pytest.raises(CaptureError, match="another one is recording"):
        capture(lambda t: inner(t))(x)
    # After each refusal, eager work and new captures go on normally.
    f = capture(lambda t: (w * t).sum())
    assert [f(x).item(), f(x).item()] == [3.0, 3.0]


def test_arguments_that_require_grad_or_are_not_tensors_are_refused():
    f = capture(lambda t: t)
    with pytest.raises(TypeError, match="requires grad"):
        f(Variable(Tensor.ones([2]), requires_grad=True))
    with pytest.raises(TypeError, match="list"):
        f([1.0, 2.0])


def test_a_function_that_raises_keeps_no_recording():
    calls = []

    def flaky(x):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("boom")
        return x * 2.0

    f = capture(flaky)
    x = Tensor.from_vec([1.0, 2.0], [2])
    with pytest.raises(ValueError, match="boom"):
        f(x)
    assert f(x).to_vec() == [2.0, 4.0]
    assert f(Tensor.from_vec([3.0, 4.0], [2])).to_vec() == [6.0, 8.0] and f.replays == 1


def test_two_threads_capturing_their_own_models_match_running_them_in_turn():
    def run(seed, results):
        batches = _batches(15, seed=seed)
        model, _opt, step = _trainer(lambda ps: Adam(ps, lr=1e-2), seed=seed)
        step = capture(step)
        results[seed] = [step(x, y).item() for x, y in batches] + [p.sum() for p in _params(model)]

    alone, together = {}, {}
    for seed in (1, 2):
        run(seed, alone)
    threads = [threading.Thread(target=run, args=(seed, together)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert together == alone


def test_captures_on_two_devices_coexist(device):
    other = Device(device.info.platform_index, device.info.device_index)
    runs = {}
    for dev in (device, other):
        model, _opt, step = _trainer(lambda ps: SGD(ps, lr=0.1, momentum=0.9), device=dev)
        runs[dev] = (capture(step), _batches(6, device=dev), model)
    losses = {dev: [] for dev in runs}
    for k in range(6):
        for dev, (step, batches, _model) in runs.items():   # interleaved
            losses[dev].append(step(*batches[k]).item())
    assert losses[device] == losses[other]
    for a, b in zip(_params(runs[device][2]), _params(runs[other][2])):
        np.testing.assert_array_equal(a, b)
    assert runs[other][0].replays >= 4


def test_a_thousand_replays_keep_device_and_host_memory_flat(device):
    batches = _batches(2, device=device)
    _model, _opt, step = _trainer(lambda ps: Adam(ps, lr=1e-3), device=device)
    step = capture(step)
    for k in range(4):
        step(*batches[k % 2])
    device.synchronize()
    gc.collect()
    pool = device.pool
    held = pool.in_use_bytes + pool.held_bytes
    objects = len(gc.get_objects())
    for k in range(1000):
        step(*batches[k % 2])
    device.synchronize()
    gc.collect()
    assert pool.in_use_bytes + pool.held_bytes == held
    assert len(gc.get_objects()) - objects < 100
    assert step.replays >= 1000


def test_dropping_a_capture_returns_its_buffers_to_the_pool(device):
    batches = _batches(3, device=device)
    device.synchronize()
    gc.collect()
    in_use = device.pool.in_use_bytes
    _model, _opt, step = _trainer(lambda ps: Adam(ps, lr=0.1), device=device)
    f = capture(step)
    for x, y in batches:
        loss = f(x, y)
    assert f.replays == 1
    del loss, f, step, _opt, _model
    gc.collect()
    assert device.pool.in_use_bytes == in_use


# Every differentiable op under capture: loss and gradient of a replay equal an eager call's bit for
# bit. `a` is a [3, 4] parameter, `x` the [3, 4] argument (values in [0.5, 2), so log and sqrt are
# defined), `t` int32 class indices [3].
def _GATHER_INDEX():
    global _gather_index
    if "_gather_index" not in globals():   # made outside every capture (made inside, it is an upload)
        _gather_index = Tensor.from_numpy(np.array([[0, 0, 1], [3, 2, 1], [1, 1, 1]], np.int32), dtype="int32")
    return _gather_index


OPS = {
    "add": lambda a, x, t: a + x, "sub": lambda a, x, t: a - x, "mul": lambda a, x, t: a * x,
    "div": lambda a, x, t: a / x, "neg": lambda a, x, t: -a * x,
    "broadcast": lambda a, x, t: a * x.sum_dim(0, keepdim=True),
    "scalars": lambda a, x, t: (2.0 - (a + 1.0) * 3.0 / 2.0).div_scalar(1.5).sub_scalar(0.25) / x,
    "rdiv": lambda a, x, t: 1.0 / (a * a + x),
    "pow": lambda a, x, t: (a * x).pow(3.0), "exp": lambda a, x, t: (a * x).exp(),
    "log": lambda a, x, t: (a * a + x).log(), "sqrt": lambda a, x, t: (a * a + x).sqrt(),
    "abs": lambda a, x, t: (a - x).abs(), "clamp": lambda a, x, t: (a * x).clamp(-0.5, 0.5),
    "relu": lambda a, x, t: (a - x).relu(), "leaky_relu": lambda a, x, t: (a - x).leaky_relu(0.1),
    "sigmoid": lambda a, x, t: (a * x).sigmoid(), "tanh": lambda a, x, t: (a * x).tanh(),
    "gelu": lambda a, x, t: (a * x).gelu(), "silu": lambda a, x, t: (a * x).silu(),
    "softmax_rows": lambda a, x, t: (a * x).softmax(-1) * x,
    "softmax_cols": lambda a, x, t: (a * x).softmax(0) * x,
    "log_softmax": lambda a, x, t: (a * x).log_softmax(-1) * x,
    "mean": lambda a, x, t: (a * x).mean(), "sum_dim": lambda a, x, t: (a * x).sum_dim(1) * 2.0,
    "mean_dim": lambda a, x, t: (a * x).mean_dim(0, keepdim=True) * x,
    "var_dim": lambda a, x, t: (a * x).var_dim(1), "max_dim": lambda a, x, t: (a * x).max_dim(1),
    "matmul": lambda a, x, t: a.matmul(x.transpose(0, 1)).matmul(a),
    "reshape": lambda a, x, t: (a * x).reshape([4, 3]).transpose(0, 1) * x,
    "narrow_slice": lambda a, x, t: (a * x).narrow(1, 1, 2).slice([(0, 2)]),
    "expand": lambda a, x, t: a.sum_dim(0, keepdim=True).expand([3, 4]) * x,
    "squeeze": lambda a, x, t: (a * x).unsqueeze(0).squeeze(0),
    "cat": lambda a, x, t: Variable.cat([a * x, a], 0),
    "mse_loss": lambda a, x, t: a.mse_loss(x), "l1_loss": lambda a, x, t: a.l1_loss(x),
    "smooth_l1": lambda a, x, t: a.smooth_l1_loss(x, 0.5),
    "bce": lambda a, x, t: a.sigmoid().binary_cross_entropy(x * 0.4),
    "cross_entropy": lambda a, x, t: (a * x).cross_entropy(t),
    "nll_loss": lambda a, x, t: (a * x).log_softmax(1).nll_loss(t),
    "maths": lambda a, x, t: (a * x).sin() + (a * x).erf() + (a * a + x).log1p() + (a * x).atan() + (a * 0.3).atanh(),
    "activations": lambda a, x, t: (a * x).gelu() + (a * x).mish() + (a * x).softplus() + (a * x).elu() + a.logsigmoid(),
    "binary_maths": lambda a, x, t: a.maximum(x) + a.minimum(0.5) + a.atan2(x) + a.remainder(x) + (a * a + x).pow(a),
    "rpow": lambda a, x, t: 2.0 ** (a * x),
    # (an index list inside a captured function would be an upload: the indices come in as tensors)
    "indexing": lambda a, x, t: (a * x)[:, t] + a[1:, None, ::2].sum() + (a * x).gather(1, _GATHER_INDEX()),
    "index_by_tensor": lambda a, x, t: (a * x).index_select(1, t),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_replays_bit_for_bit(name):
    op = OPS[name]
    rng = np.random.default_rng(7)
    start = rng.standard_normal((3, 4)).astype(np.float32)

    def make():
        a = Variable(Tensor.from_numpy(start), requires_grad=True)

        def fn(x, t):
            a.zero_grad()
            loss = op(a, Variable(x), t).sum()
            loss.backward()
            return loss, a.grad()
        return fn

    eager, f = make(), capture(make())
    for _ in range(4):
        x = Tensor.from_numpy(rng.uniform(0.5, 2.0, (3, 4)).astype(np.float32))
        t = Tensor.from_numpy(rng.integers(0, 4, 3).astype(np.int32), dtype="int32")
        want_loss, want_grad = eager(x, t)
        got_loss, got_grad = f(x, t)
        assert got_loss.item() == want_loss.item()
        np.testing.assert_array_equal(got_grad.numpy(), want_grad.numpy())
    assert f.replays == 3


def _recorded_commands(f):
    (rec,) = f._kept()
    return len(rec.commands)


@pytest.mark.parametrize("n", [1, 3, 17, 65, 129, 5000])
def test_fused_elementwise_runs_replay_bit_for_bit_and_in_fewer_launches(n, monkeypatch):
    # Vector loop, tail and in-place writes: x is updated in place between reads of it.
    rng = np.random.default_rng(n)
    start = rng.standard_normal(n).astype(np.float32)

    def make():
        w = Variable(Tensor.from_numpy(start), requires_grad=True)
        acc = Tensor.zeros([n])

        def fn(x):
            w.zero_grad()
            y = (w * Variable(x)).tanh().exp().mul_scalar(0.5).add_scalar(0.25).sigmoid()
            loss = (y * y).sum()
            loss.backward()
            elementwise("a + b * s", [acc, w.grad()], scalars={"s": 0.5}, out=acc.view())   # in place
            elementwise("a * L(0.9) + b", [acc, x], out=acc.view())
            return loss, w.grad(), acc
        return fn

    eager, f = make(), capture(make())
    for _ in range(3):
        x = Tensor.from_numpy(rng.uniform(-2, 2, n).astype(np.float32))
        want = [t.numpy() if hasattr(t, "numpy") else t for t in eager(x)]
        got = [t.numpy() if hasattr(t, "numpy") else t for t in f(x)]
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    fused = _recorded_commands(f)
    monkeypatch.setenv("AXONML_FUSE", "0")
    unfused = capture(make())
    unfused(x)
    assert fused < _recorded_commands(unfused)


def test_a_chain_of_a_thousand_ops_replays_as_a_few_dozen_launches():
    x = Variable(Tensor.from_vec([1.0], [1]), requires_grad=True)

    def chain():
        x.zero_grad()
        y = x
        for _ in range(500):
            y = y.mul_scalar(0.999).add_scalar(0.001)
        y.sum().backward()
        return x.grad()

    f = capture(chain)
    g = f().item()
    assert f().item() == g and f.replays == 1
    assert _recorded_commands(f) < 100
    assert abs(g - 0.999 ** 500) < 1e-4


def test_matmul_tuning_inside_a_recording_is_not_replayed(monkeypatch, device):
    mm = importlib.import_module("axonml_autograd.matmul")   # ag.matmul is the function
    monkeypatch.setenv("AXONML_TUNE", "1")
    monkeypatch.setattr(mm, "_plans", {})
    monkeypatch.setattr(mm, "_calls", {})
    monkeypatch.setattr(mm.tuning, "_memory", {})
    monkeypatch.setattr(mm.tuning, "store_path", lambda: None)
    a = Tensor.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
    at = a.T
    f = capture(lambda x: x.matmul(at))
    x = Tensor.from_numpy(np.ones((4, 3), np.float32))
    np.testing.assert_allclose(f(x).numpy(), np.ones((4, 3)) @ a.numpy().T)
    assert _recorded_commands(f) == 1     # the product alone, no tuning run
    np.testing.assert_allclose(f(x * 2.0).numpy(), 2 * np.ones((4, 3)) @ a.numpy().T)


def test_switching_an_optimizer_option_that_changes_its_kernel_records_again():
    batches = _batches(6)
    model, opt, step = _trainer(lambda ps: SGD(ps, lr=0.05))
    eager_model, eager_opt, eager_step = _trainer(lambda ps: SGD(ps, lr=0.05))
    step = capture(step)
    for k, (x, y) in enumerate(batches):
        if k == 3:   # momentum on: a momentum buffer and another kernel from now on
            for o in (opt, eager_opt):
                o.param_groups[0]["momentum"] = 0.9
        assert step(x, y).item() == eager_step(x, y).item()
    for a, b in zip(_params(model), _params(eager_model)):
        np.testing.assert_array_equal(a, b)
    assert step.recordings >= 2
