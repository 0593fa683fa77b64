"""Threads: two models trained at once on one device match the same two trained one after the other."""

import sys
import threading

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, enable_grad, is_grad_enabled, no_grad
from axonml_autograd.nn import MLP
from axonml_autograd.optim import SGD, Adam


@pytest.fixture
def busy_switching():
    # Switch threads as often as the interpreter allows, so the two loops interleave kernel launches,
    # allocations and pool releases op by op rather than in long slices.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _data(seed, n=48, dim=8, classes=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.int32)
    return x, y


def train(kind, seed, steps=12, start=None):
    """Train a small MLP; returns the losses and final parameters as host arrays."""
    x, y = _data(seed)
    model = MLP([8, 16, 4], activation="tanh" if kind == "adam" else "relu", seed=seed)
    opt = Adam(model.parameters(), lr=1e-2) if kind == "adam" else SGD(model.parameters(), lr=0.1, momentum=0.9)
    xd, yd = Variable(Tensor.from_numpy(x)), Tensor.from_numpy(y, dtype="int32")
    if start is not None:
        start.wait(30)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        batch = step % 3 * 16
        logits = model(Variable(xd.data().narrow(0, batch, 16)))
        loss = logits.cross_entropy(yd.narrow(0, batch, 16)) + logits.pow(2.0).mean() * 1e-3
        loss.backward()
        opt.step()
        losses.append(loss.data())
    return [l.item() for l in losses], [p.numpy() for p in model.parameters()]


def _in_threads(jobs):
    start = threading.Barrier(len(jobs))
    results, errors = [None] * len(jobs), []

    def run(k, job):
        try:
            results[k] = train(*job, start=start)
        except BaseException as e:      # surfaced below: an exception in a thread must fail the test
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=run, args=(k, job)) for k, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a training thread hung"
    if errors:
        raise errors[0]
    return results


def _assert_identical(a, b):
    losses_a, params_a = a
    losses_b, params_b = b
    assert losses_a == losses_b
    assert len(params_a) == len(params_b)
    for pa, pb in zip(params_a, params_b):
        assert pa.dtype == pb.dtype and np.array_equal(pa, pb)


def test_two_threads_training_separate_models_match_running_them_one_after_the_other(busy_switching):
    jobs = [("adam", 1), ("sgd", 2)]
    together = _in_threads(jobs)                 # first, so the threads also race to build kernels
    apart = [train(*job) for job in jobs]
    for t, a in zip(together, apart):
        _assert_identical(t, a)
    assert together[0][0] != together[1][0]     # genuinely different models, not one computed twice


def test_four_threads_with_the_same_model_all_agree(busy_switching):
    results = _in_threads([("adam", 7)] * 4)
    for r in results[1:]:
        _assert_identical(results[0], r)


def test_grad_mode_is_per_thread():
    x = Variable(Tensor.from_vec([1.0, -2.0], [2]), requires_grad=True)
    inside, outside = threading.Event(), threading.Event()
    seen = {}

    def in_no_grad():
        with no_grad():
            inside.set()
            outside.wait(10)                     # the main thread records while this one is in no_grad
            seen["worker_enabled"] = is_grad_enabled()
            seen["worker_requires_grad"] = x.relu().requires_grad()

    t = threading.Thread(target=in_no_grad)
    t.start()
    inside.wait(10)
    seen["main_enabled"] = is_grad_enabled()
    seen["main_requires_grad"] = x.relu().requires_grad()
    outside.set()
    t.join(30)
    assert seen == {"worker_enabled": False, "worker_requires_grad": False,
                    "main_enabled": True, "main_requires_grad": True}


def test_a_new_thread_starts_with_grad_enabled_whatever_its_parent_is_doing():
    seen = []
    with no_grad():
        t = threading.Thread(target=lambda: seen.append(is_grad_enabled()))
        t.start()
        t.join(10)
        assert not is_grad_enabled()
    with no_grad(), enable_grad():
        assert is_grad_enabled()
    assert seen == [True]
