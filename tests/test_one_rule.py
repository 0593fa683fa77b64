"""Structural ops record one gradient rule, written with Variable ops; first order runs it with grad
mode off (grad_fn._first_order). These tests hold it to that: it records no node, enqueues what the
hand-written Tensor rule it replaced enqueued, and behaves inside no_grad, anomaly mode and capture."""

import sys

import numpy as np
import pytest

from axonml_autograd import AnomalyError, Tensor, Variable, capture, detect_anomaly, is_grad_enabled, no_grad
from axonml_autograd import anomaly, grad_fn, launch
from axonml_autograd.backward import grad
from axonml_autograd.nn import functional as F


def _var(*shape, seed=0, requires_grad=True):
    rng = np.random.default_rng(seed)
    return Variable(Tensor.from_numpy(rng.standard_normal(shape).astype(np.float32)), requires_grad=requires_grad)


# op -> (the function of x [4, 8] and the extra inputs, the commands (kernels, fills, copies) its first-order
# backward enqueues: the counts of the Tensor rules these replaced, measured before the change).
CASES = {
    "reshape": (lambda x, e: x.reshape(8, 4), 0),
    "transpose": (lambda x, e: x.transpose(0, 1), 0),
    "permute": (lambda x, e: x.reshape(2, 2, 8).permute(2, 0, 1), 1),   # the reshape copies the permuted view
    "expand": (lambda x, e: x.reshape(4, 1, 8).expand([4, 3, 8]), 1),
    "expand_lead": (lambda x, e: x.expand([2, 3, 4, 8]), 1),
    "narrow": (lambda x, e: x.narrow(0, 1, 2), 2),
    "index": (lambda x, e: x[1:4:2, 3], 2),
    "diagonal": (lambda x, e: x.diagonal(1), 2),
    "flip": (lambda x, e: x.flip(0, 1), 1),
    "tril": (lambda x, e: x.tril(), 1),
    "cast": (lambda x, e: x.double(), 1),
    "clone": (lambda x, e: x.clone(), 0),
    "cat": (lambda x, e: Variable.cat([x, e[0]], 0), 2),
    "sum": (lambda x, e: x.sum(), 1),
    "mean": (lambda x, e: x.mean(), 1),
    "sum_dim": (lambda x, e: x.sum_dim(1), 1),
    "mean_dim": (lambda x, e: x.mean_dim(0, True), 1),
    "max_dim": (lambda x, e: x.max_dim(1), 1),
    "cumsum": (lambda x, e: x.cumsum(1), 1),
    "index_select": (lambda x, e: x.index_select(0, [3, 0, 0]), 1),
    "gather": (lambda x, e: x.gather(1, Tensor.from_numpy(np.array([[0, 7]] * 4, dtype=np.int32))), 1),
    "matmul": (lambda x, e: x @ e[2], 2),
    "matmul_broadcast": (lambda x, e: x.reshape(2, 2, 8) @ e[2], 3),
    "linear": (lambda x, e: F.linear(x.reshape(2, 2, 8), e[3]), 2),
}


@pytest.fixture
def commands(monkeypatch):
    """Counts what reaches launch (kernels, fills, copies, uploads), before flush-time fusion."""
    count = [0]
    kernel, submit = launch.kernel, launch._submit

    def counted(real):
        def f(*args, **kwargs):
            count[0] += 1
            return real(*args, **kwargs)
        return f

    monkeypatch.setattr(launch, "kernel", counted(kernel))
    monkeypatch.setattr(launch, "_submit", counted(submit))
    return count


@pytest.fixture
def nodes(monkeypatch):
    """Counts the graph nodes created."""
    count = [0]
    init = grad_fn.GradientFunction.__init__

    def counted(self, *args, **kwargs):
        count[0] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(grad_fn.GradientFunction, "__init__", counted)
    return count


def _extra():
    return [_var(3, 8, seed=1), _var(2, 8, seed=2), _var(8, 5, seed=3), _var(6, 8, seed=4)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_order_runs_the_one_rule_recording_nothing_with_the_hand_written_launches(name, commands, nodes):
    fn, expected = CASES[name]
    x = _var(4, 8)
    y = fn(x, _extra())
    node = y.grad_fn
    assert node._rule is grad_fn._first_order and node._vrule is not None, f"{node.name()} has two rules"
    go = Tensor.ones(y.data()._shape, y.dtype)
    made = nodes[0]
    commands[0] = 0
    (g,) = grad(y, [x], go, retain_graph=True)
    assert commands[0] == expected, f"{node.name()}: {commands[0]} commands, the Tensor rule enqueued {expected}"
    assert nodes[0] == made, "first order recorded graph nodes"
    assert isinstance(g, Tensor) and g.shape() == [4, 8]
    # The same values as the rule evaluated for create_graph (a graph, then its data).
    (gv,) = grad(y, [x], Variable(go), create_graph=True)
    np.testing.assert_array_equal(g.numpy(), gv.data().numpy())
    assert is_grad_enabled()


def test_backward_inside_no_grad_gives_the_same_gradients_and_leaves_the_mode_alone():
    x, w = _var(4, 8), _var(8, 5, seed=3)
    loss = (x.reshape(2, 16).transpose(0, 1).reshape(4, 8) @ w).max_dim(1).cumsum(0).mean()
    loss.backward(retain_graph=True)
    want = x.grad().numpy().copy()
    x.zero_grad()
    with no_grad():
        loss.backward()
        assert not is_grad_enabled()
    assert is_grad_enabled()
    np.testing.assert_array_equal(x.grad().numpy(), want)


def test_a_rule_that_raises_restores_grad_mode():
    def broken(ctx, g):
        assert not is_grad_enabled()
        raise ValueError("broken rule")

    node = grad_fn.GradientFunction("BrokenBackward", None, (None,), vrule=broken)
    with pytest.raises(ValueError, match="broken rule"):
        node.apply(Tensor.ones([2]))
    assert is_grad_enabled()
    with no_grad():
        with pytest.raises(ValueError):
            node.apply(Tensor.ones([2]))
        assert not is_grad_enabled()


def test_anomaly_mode_checks_each_gradient_not_the_rules_own_operands(monkeypatch):
    x, w = _var(4, 8), _var(8, 5, seed=3)
    checked = []
    real = anomaly.check_inputs
    monkeypatch.setattr(anomaly, "check_inputs", lambda *a: (checked.append(a[0]), real(*a)))
    with detect_anomaly():
        loss = (x.reshape(8, 4).transpose(0, 1) @ w[:, 1:4]).sum()
        forward = len(checked)
        loss.backward()
    assert len(checked) == forward, f"backward's rules checked their operands: {checked[forward:]}"
    # A one-rule node that makes Inf is named, as any node is.
    big = (w * 1000.0).exp()   # Inf, not a leaf: only backward can notice
    with detect_anomaly():
        y = (x @ big).sum()
        with pytest.raises(AnomalyError, match="MatmulBackward produced (Inf|NaN) in its gradient for input 0"):
            y.backward()


def test_a_captured_step_through_one_rule_ops_replays_as_eager_and_notes_no_rule_operand(monkeypatch):
    capture_module = sys.modules["axonml_autograd.capture"]   # the package's name is the function
    in_rules = []
    note = capture_module._Recording.note_leaf

    def noted(self, var, reset):
        if getattr(grad_fn._grad_state, "rule", False):
            in_rules.append(var.shape())   # a replay would check a temporary of backward's
        return note(self, var, reset)

    monkeypatch.setattr(capture_module._Recording, "note_leaf", noted)
    rows = Tensor.from_numpy(np.array([1, 1], dtype=np.int32))

    def make():
        x, w = _var(4, 8), _var(8, 5, seed=3)

        def step(t):
            x.zero_grad()
            w.zero_grad()
            h = (Variable(t).reshape(8, 4).transpose(0, 1) * x) @ w
            loss = h.max_dim(1).sum() + h[:, 1:3].mean() + h.index_select(0, rows).sum()
            loss.backward()
            return loss
        return x, w, step

    x, w, eager = make()
    cx, cw, step = make()
    step = capture(step)
    rng = np.random.default_rng(5)
    for _ in range(4):
        t = Tensor.from_numpy(rng.standard_normal((8, 4)).astype(np.float32))
        assert step(t).item() == eager(t).item()
        np.testing.assert_array_equal(cx.grad().numpy(), x.grad().numpy())
        np.testing.assert_array_equal(cw.grad().numpy(), w.grad().numpy())
    assert step.replays >= 2
    assert not in_rules, f"backward's rules noted their operands as leaves: {in_rules}"
