"""A captured step is guarded by the state of the modules it ran (training flags, parameters'
requires_grad, the Python numbers of their attributes): a change records anew, and a replay is then
what an eager call gives. Each change is checked against an eager twin from the same weights."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, manual_seed
import axonml_autograd.nn as nn
import axonml_autograd.nn.functional as F
from axonml_autograd.optim import SGD


def _model(seed):
    return nn.Sequential(nn.Linear(6, 16, seed=seed), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(16, 3, seed=seed + 1))


def _pair():
    """Two identical models and optimisers, one to run eagerly and one captured."""
    out = []
    for _ in range(2):
        m = _model(0)
        opt = SGD(m.parameters(), lr=0.1)

        def step(x, y, m=m, opt=opt):
            opt.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            return loss
        out.append((m, opt, step))
    return out


def _batch(k):
    rng = np.random.default_rng(k)
    return (Tensor.from_numpy(rng.standard_normal((8, 6)).astype(np.float32)),
            Tensor.from_numpy(rng.integers(0, 3, 8).astype(np.int64)))


def _same(a, b):
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def _run(changes):
    """Steps, with `change(model)` applied to both models before some of them."""
    (me, _oe, eager), (mc, _oc, step) = _pair()
    step = capture(step)
    for k in range(8):
        if k in changes:
            changes[k](me), changes[k](mc)
        manual_seed(100 + k)                   # the same dropout masks for both
        want = eager(*_batch(k)).item()
        manual_seed(100 + k)
        got = step(*_batch(k)).item()
        assert got == want, (k, got, want)
    _same(me, mc)
    return step


def test_eval_after_recording_stops_dropout_and_batch_statistics():
    step = _run({3: lambda m: m.eval()})
    assert step.recordings == 2


def test_switching_back_to_train_replays_the_first_recording():
    step = _run({2: lambda m: m.eval(), 4: lambda m: m.train(), 6: lambda m: m.eval()})
    assert step.recordings == 2 and step.replays == 6


def test_freezing_a_layer_stops_the_captured_optimiser_training_it():
    def freeze(m):
        m[0].requires_grad_(False)
        m[0].weight.grad = m[0].bias.grad = None
    step = _run({3: freeze})
    assert step.recordings == 2


def test_changing_dropout_p_or_batchnorm_momentum_records_anew():
    def p0(m):
        m[3].p = 0.0
    def momentum(m):
        m[1].momentum = 0.5
    step = _run({2: p0, 5: momentum})
    assert step.recordings == 3


def test_a_counter_that_the_function_itself_advances_does_not_record_every_call():
    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.calls = nn.Linear(3, 2, seed=0), 0

        def forward(self, x):
            self.calls += 1
            return self.lin(x)
    m = Counting()
    f = capture(lambda x: m(x).sum())
    for _ in range(4):
        f(Tensor.ones([2, 3]))
    assert f.recordings == 1 and f.replays == 3


def test_results_stay_valid_after_the_recordings_are_dropped():
    m = nn.Linear(3, 2, seed=0)
    f = capture(lambda x: m(x))
    outs = [f(Tensor.full([1, 3], float(k))) for k in range(3)]
    f.reset()
    del f
    w, b = m.weight.numpy(), m.bias.numpy()
    for k, o in enumerate(outs):
        np.testing.assert_allclose(o.numpy(), np.full((1, 3), k, np.float32) @ w.T + b, rtol=1e-6)
