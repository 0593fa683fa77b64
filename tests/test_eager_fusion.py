"""Flush-time fusion of eager elementwise runs (fusion.enqueue_batch): the same bits as unfused, fewer launches."""

import numpy as np
import pyopencl as cl
import pytest

from axonml_autograd import Tensor, Variable, fusion, launch
from axonml_autograd.elementwise_kernels import elementwise

SHAPES = [1, 3, 17, 65, 129]


@pytest.fixture
def fuse_at_once(monkeypatch, device):
    """Every pattern is fused at its first sighting (the default waits for a loop), into a fused-kernel
    cache of the test's own (so earlier tests' patterns do not fill its cap)."""
    monkeypatch.setattr(fusion, "FUSE_AFTER", 1)
    monkeypatch.setattr(device, "_eager_fusion", fusion._EagerCache(), raising=False)
    monkeypatch.delenv("AXONML_FUSE", raising=False)
    monkeypatch.delenv("AXONML_EAGER_FUSE", raising=False)
    return monkeypatch


@pytest.fixture
def launches(monkeypatch):
    """Counts the kernels handed to the driver."""
    count = [0]
    real = cl.enqueue_nd_range_kernel

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(cl, "enqueue_nd_range_kernel", counting)
    return count


def _run(monkeypatch, fn, fused):
    monkeypatch.setenv("AXONML_EAGER_FUSE", "1" if fused else "0")
    out = fn()
    got = [t.numpy() for t in out]
    monkeypatch.delenv("AXONML_EAGER_FUSE")
    return got


def _same_bits(a_list, b_list):
    assert len(a_list) == len(b_list)
    for a, b in zip(a_list, b_list):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
        np.testing.assert_array_equal(a, b)


def _float_chain(n, dtype, seed):
    """A forward + backward of many elementwise ops (some broadcast, some in place), keeping several
    intermediates alive: they must hold what they held unfused."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0.5, 2.0, n).astype(dtype)
    y0 = rng.uniform(-1.0, 1.0, n).astype(dtype)
    b0 = rng.uniform(0.5, 1.5, 1).astype(dtype)

    def fn():
        x = Variable(Tensor.from_numpy(x0), requires_grad=True)
        y = Variable(Tensor.from_numpy(y0), requires_grad=True)
        b = Variable(Tensor.from_numpy(b0), requires_grad=True)
        kept = []
        h = x
        for k in range(6):
            h = h.mul_scalar(0.999).add_scalar(0.001) * y + x
            h = h.tanh().exp() / (x + 1.0)
            h = (h - y).sigmoid() * 2.0 - 0.5
            kept.append(h._data)
            h = h.relu() + (h * b).sqrt().abs()      # broadcast [1] against [n]
            h = h.pow(2.0).log1p() + h.neg().leaky_relu(0.1)
        loss = (h * h).sum()
        loss.backward()
        acc = Tensor.zeros([n], dtype=dtype)
        for k in range(5):          # in-place writes between reads of the same buffer
            elementwise("a + b * s", [acc, x.grad()], scalars={"s": 0.5}, out=acc.view())
            elementwise("a * L(0.9) + b", [acc, y.grad()], out=acc.view())
        return [loss._data, x.grad(), y.grad(),
                b.grad(), acc, *kept]
    return fn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SHAPES)
def test_fused_eager_chains_equal_unfused_bit_for_bit(n, dtype, fuse_at_once, launches, device):
    if dtype == np.float64 and not device.fp64:
        pytest.skip("no fp64 on this device")
    fn = _float_chain(n, dtype, seed=n)
    built = fusion.eager_stats(device)["built"]
    launches[0] = 0
    unfused = _run(fuse_at_once, fn, fused=False)
    plain = launches[0]
    launches[0] = 0
    fused = _run(fuse_at_once, fn, fused=True)
    _same_bits(fused, unfused)
    again = _run(fuse_at_once, fn, fused=True)      # the built kernels, reused
    _same_bits(again, unfused)
    assert fusion.eager_stats(device)["built"] > built
    assert launches[0] < plain


@pytest.mark.parametrize("n", SHAPES)
def test_int_and_mixed_runs_stay_exact(n, fuse_at_once, device):
    rng = np.random.default_rng(100 + n)
    a0 = rng.integers(-50, 50, n).astype(np.int32)
    b0 = rng.integers(1, 9, n).astype(np.int32)
    f0 = rng.standard_normal(n).astype(np.float32)

    def fn():
        a, b = Tensor.from_numpy(a0, dtype="int32"), Tensor.from_numpy(b0, dtype="int32")
        f = Tensor.from_numpy(f0)
        outs = []
        for _ in range(4):
            a = (a * b + a) - b              # integer launches: never fused, interleaved with float runs
            f = (f * 1.5 + 0.25).tanh() * f - 0.125
            outs += [a, f]
            f = f + a.astype("float32")
        return outs

    _same_bits(_run(fuse_at_once, fn, fused=True), _run(fuse_at_once, fn, fused=False))


def test_a_thousand_op_chain_is_a_few_dozen_launches(fuse_at_once, launches, device):
    x = Variable(Tensor.from_vec([1.0], [1]), requires_grad=True)

    def chain():
        x.zero_grad()
        y = x
        for _ in range(500):
            y = y.mul_scalar(0.999).add_scalar(0.001)
        y.sum().backward()
        return [x.grad()]

    want = _run(fuse_at_once, chain, fused=False)
    _run(fuse_at_once, chain, fused=True)
    launch.synchronize(device)
    launches[0] = 0
    got = _run(fuse_at_once, chain, fused=True)
    _same_bits(got, want)
    # A GPU target hands commands over every 8 (to keep the device busy), so its runs are shorter.
    assert launches[0] < (120 if device.target.flush_every >= 64 else 1502 // 2)


def test_switches_turn_it_off(fuse_at_once, launches, device):
    x = Tensor.from_vec([1.0, 2.0, 3.0], [3])

    def run():
        y = x
        for _ in range(40):
            y = (y * 0.5).exp()
        return [y]

    for env in ("AXONML_FUSE", "AXONML_EAGER_FUSE"):
        fuse_at_once.setenv(env, "0")
        assert not fusion.eager_enabled()
        launches[0] = 0
        run()[0].numpy()
        assert launches[0] >= 80
        fuse_at_once.delenv(env)
    assert fusion.eager_enabled()


def test_a_pattern_is_built_only_once_it_repeats(monkeypatch, device):
    monkeypatch.delenv("AXONML_FUSE", raising=False)
    monkeypatch.delenv("AXONML_EAGER_FUSE", raising=False)
    monkeypatch.setattr(fusion, "FUSE_AFTER", 3)
    monkeypatch.setattr(device, "_eager_fusion", fusion._EagerCache(), raising=False)
    x = Tensor.from_vec([1.0, 2.0], [2])

    def run():
        y = x.sigmoid().mul_scalar(3.0).add_scalar(0.5).tanh()   # one run of four launches
        y.numpy()

    run()
    run()
    assert fusion.eager_stats(device)["built"] == 0
    run()
    assert fusion.eager_stats(device)["built"] == 1
    run()
    assert fusion.eager_stats(device)["built"] == 1


def test_the_number_of_fused_kernels_is_capped(monkeypatch, device):
    monkeypatch.delenv("AXONML_FUSE", raising=False)
    monkeypatch.delenv("AXONML_EAGER_FUSE", raising=False)
    monkeypatch.setattr(fusion, "FUSE_AFTER", 1)
    monkeypatch.setattr(fusion, "MAX_EAGER_KERNELS", 2)
    monkeypatch.setattr(device, "_eager_fusion", fusion._EagerCache(), raising=False)
    x = Tensor.from_vec([1.0, 2.0], [2])
    exprs = ["a * L(2.0)", "a + L(1.0)", "a - L(3.0)", "a * a"]
    for i in range(len(exprs)):
        y = x
        for e in exprs[i:] + exprs[:i]:     # four different patterns
            y = elementwise(e, [y])
        y.numpy()
    assert fusion.eager_stats(device)["built"] == 2
