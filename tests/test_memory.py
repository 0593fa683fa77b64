"""Training keeps device memory and host memory flat: the buffer pool stops growing after warm-up."""

import gc
import resource

import numpy as np

from axonml_autograd import Tensor, Variable
from axonml_autograd.nn import MLP
from axonml_autograd.optim import Adam


def _rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_thousand_training_steps_keep_device_and_host_memory_flat(device):
    rng = np.random.default_rng(0)
    model = MLP([64, 128, 10], seed=0, device=device)
    opt = Adam(model.parameters(), lr=1e-3)
    x = Variable(Tensor.from_numpy(rng.standard_normal((32, 64)).astype(np.float32), device=device))
    targets = Tensor.from_numpy(rng.integers(0, 10, 32).astype(np.int32), dtype="int32", device=device)

    def step():
        loss = model(x).cross_entropy(targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    first = step().item()
    for _ in range(50):          # warm-up: kernels built, pool filled, optimiser state allocated
        loss = step()            # (the same pattern as below: the last loss lives while the next is made)
    device.synchronize()
    gc.collect()   # garbage left by earlier tests must not be counted, or freed, during the loop
    pool = device.pool
    held_after_warmup = pool.in_use_bytes + pool.held_bytes
    objects_after_warmup = len(gc.get_objects())
    rss_after_warmup = _rss_kib()
    for _ in range(1000):
        loss = step()
    device.synchronize()
    gc.collect()
    # The pool hands back the same buffers every step: not one byte more is held or allocated.
    assert pool.in_use_bytes + pool.held_bytes == held_after_warmup
    # No Python object survives a step: one leaked object per op would be ~40,000 here.
    assert len(gc.get_objects()) - objects_after_warmup < 200
    # Native memory (driver events, kernel arguments): 1 KB leaked per op would be ~40 MB.
    assert _rss_kib() - rss_after_warmup < 32 * 1024
    assert loss.item() < first   # and it was really training


def test_a_thousand_refused_calls_leave_device_and_host_memory_flat(device, tmp_path):
    import pytest

    from axonml_autograd import CaptureError, capture, serialization
    from axonml_autograd.serialization import CheckpointError

    x = Variable(Tensor.from_vec([1.0, 2.0, 3.0], [3], device=device), requires_grad=True)
    w = Variable(Tensor.from_vec([0.5, -1.0, 2.0], [3], device=device), requires_grad=True)
    opt = Adam([w], lr=1e-3)
    serialization.save(tmp_path / "ok.npz", {"w": w}, optimizer=opt)
    bad = tmp_path / "bad.npz"
    bad.write_bytes((tmp_path / "ok.npz").read_bytes()[:-40])   # truncated
    calls = [
        (lambda: x.matmul(Variable(Tensor.zeros([4, 2], device=device))), ValueError),
        (lambda: x.add_scalar(10**400), ValueError),
        (lambda: x.narrow(0, 0.5, 1), TypeError),
        (lambda: x.reshape([4]), ValueError),
        (lambda: (x * 2.0).backward(), RuntimeError),
        (lambda: x.sigmoid().binary_cross_entropy(x * 2.0), None),   # p fine, target 2-6: no error
        (lambda: capture(lambda t: (t * 2.0).sum().item())(Tensor.ones([3], device=device)), CaptureError),
        (lambda: serialization.load_into(bad, {"w": w}, optimizer=opt), CheckpointError),
    ]

    def round_of_errors():
        for call, exc in calls:
            if exc is None:
                call()
                continue
            with pytest.raises(exc):
                call()

    for _ in range(20):
        round_of_errors()
    device.synchronize()
    gc.collect()
    pool = device.pool
    held = pool.in_use_bytes + pool.held_bytes
    objects = len(gc.get_objects())
    rss = _rss_kib()
    for _ in range(1000 // len(calls)):
        round_of_errors()
    device.synchronize()
    gc.collect()
    assert pool.in_use_bytes + pool.held_bytes == held
    assert len(gc.get_objects()) - objects < 200
    assert _rss_kib() - rss < 32 * 1024
    assert w.to_vec() == [0.5, -1.0, 2.0]     # the refused loads changed nothing
