"""The device-limits matrix: every kernel family under emulated targets that span real devices.

There is no GPU here, but the GPU paths (local-memory tiles, tree reductions, a work-item per
element, work-group sizes) are the target's choices, so a second Device object on the same hardware
with an emulated target runs them. Each family's results must equal the default target's: bit for bit
where the algorithm is the same (copies, gathers, sorts, Philox, elementwise maths), else to the
rounding of the dtype (sums in another order, other vector widths).

``make test`` runs the compact set below; ``make test-matrix`` runs the wider one
(``AXONML_MATRIX=full``), and the portability subset of the whole suite under each target.
"""

import os

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Tensor, Variable
from axonml_autograd.device import Device
from axonml_autograd.nn import functional as F
from axonml_autograd.rows import reduce, softmax_rows

# (name, AXONML_TARGET-style overrides): GPUs from small (work-group 64, 16 KB local memory, no
# vectors, no fp64: an older or mobile GPU) to large (1024 work-items, 64 KB), and CPU widths.
COMPACT = [
    ("gpu-wg64-lm16k-vw1-nofp64", dict(strategy="gpu", work_group=64, local_mem=16384, vw_float=1, fp64=False)),
    ("gpu-wg256-lm32k-vw4", dict(strategy="gpu", work_group=256, local_mem=32768, vw_float=4)),
    ("gpu-wg1024-lm64k-vw16", dict(strategy="gpu", work_group=1024, local_mem=65536, vw_float=16)),
    ("cpu-vw16", dict(strategy="cpu", vw_float=16)),
    ("cpu-vw1", dict(strategy="cpu", vw_float=1, vw_double=1)),
]
FULL = COMPACT + [
    (f"gpu-wg{wg}-lm{lm // 1024}k-vw{vw}", dict(strategy="gpu", work_group=wg, local_mem=lm, vw_float=vw))
    for wg in (64, 256, 1024) for lm in (16384, 32768, 65536) for vw in (1, 4, 16)
]
TARGETS = FULL if os.environ.get("AXONML_MATRIX") == "full" else COMPACT


@pytest.fixture(scope="module", params=TARGETS, ids=[name for name, _ in TARGETS])
def emulated(request, device):
    import warnings
    from axonml_autograd.kernels import KernelFallbackWarning
    name, overrides = request.param
    dev = Device(device.info.platform_index, device.info.device_index, target=overrides)
    with warnings.catch_warnings():
        # A width the hardware cannot build falls back with a warning: that is the point here.
        warnings.simplefilter("ignore", KernelFallbackWarning)
        yield dev


def _dtype(dev):
    return np.float64 if dev.fp64 else np.float32


def _close(got, want, dtype, exact=False):
    got, want = np.asarray(got), np.asarray(want)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        # Sums in another order round differently: a few ulps of the largest term, relative to the
        # result's scale (cancellation makes single elements' relative error meaningless).
        tol = 1e-11 if dtype == np.float64 else 1e-4
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def _both(fn, emulated, default, dtype):
    """fn(device, dtype) on the emulated and the default target."""
    return fn(emulated, dtype), fn(default, dtype)


def _arr(shape, seed, dtype, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def test_matmul_family(emulated, device):
    dt = _dtype(emulated)
    a, b = _arr((3, 65, 17), 1, dt), _arr((17, 129), 2, dt)

    def run(dev, dt):
        x = Variable(Tensor.from_numpy(a, device=dev), requires_grad=True)
        w = Variable(Tensor.from_numpy(b, device=dev), requires_grad=True)
        y = x.matmul(w)
        (y * y).sum().backward()
        return y.data().numpy(), x.grad().numpy(), w.grad().numpy()

    for got, want in zip(*_both(run, emulated, device, dt)):
        _close(got, want, dt)
    _close(run(emulated, dt)[0], a @ b, dt)


def test_elementwise_and_broadcast_family(emulated, device):
    dt = _dtype(emulated)
    a, b = _arr((17, 1, 65), 3, dt), _arr((3, 1), 4, dt, 0.5, 2.0)

    def run(dev, dt):
        x, y = Tensor.from_numpy(a, device=dev), Tensor.from_numpy(b, device=dev)
        return ag.elementwise_kernels.elementwise("exp(a) * tanh(b) + log(b) / (a + L(3.0))", [x, y]).numpy()

    got, want = _both(run, emulated, device, dt)
    _close(got, want, dt)
    _close(got, np.exp(a) * np.tanh(b) + np.log(b) / (a + 3.0), dt)


def test_reduce_family(emulated, device):
    dt = _dtype(emulated)
    x = _arr((17, 3001), 5, dt)
    for op, axis in (("sum", None), ("sum", 1), ("mean", 0), ("max", 1)):
        got = reduce(Tensor.from_numpy(x, device=emulated), op, axis).numpy()
        want = reduce(Tensor.from_numpy(x, device=device), op, axis).numpy()
        _close(got, want, dt, exact=(op == "max"))
    values, index = reduce(Tensor.from_numpy(x, device=emulated), "argmax", 1)
    np.testing.assert_array_equal(index.numpy(), x.argmax(1))


def test_scan_family(emulated, device):
    dt = _dtype(emulated)
    x = _arr((5, 129), 6, dt)
    got = Variable(Tensor.from_numpy(x, device=emulated)).cumsum(1).data().numpy()
    _close(got, np.cumsum(x, 1), dt)


def test_softmax_and_cross_entropy_rows(emulated, device):
    dt = _dtype(emulated)
    x = _arr((7, 1025), 7, dt, -5, 5)
    targets = np.random.default_rng(8).integers(0, 1025, 7)

    def run(dev, dt):
        v = Variable(Tensor.from_numpy(x, device=dev), requires_grad=True)
        sm = softmax_rows(Tensor.from_numpy(x, device=dev)).numpy()
        loss = F.cross_entropy(v, Tensor.from_numpy(targets.astype(np.int32), device=dev))
        loss.backward()
        return sm, loss.data().numpy(), v.grad().numpy()

    for got, want in zip(*_both(run, emulated, device, dt)):
        _close(got, want, dt)


@pytest.mark.parametrize("norm", ["layer", "batch", "group"])
def test_norm_family(emulated, device, norm):
    dt = _dtype(emulated)
    x = _arr((4, 6, 65), 9, dt)

    def run(dev, dt):
        v = Variable(Tensor.from_numpy(x, device=dev), requires_grad=True)
        w = Variable(Tensor.from_numpy(_arr((6,) if norm != "layer" else (65,), 10, dt), device=dev),
                     requires_grad=True)
        if norm == "layer":
            y = F.layer_norm(v, [65], w)
        elif norm == "batch":
            y = F.batch_norm(v, None, None, w, training=True)
        else:
            y = F.group_norm(v, 3, w)
        (y * y.sin()).sum().backward()
        return y.data().numpy(), v.grad().numpy(), w.grad().numpy()

    for got, want in zip(*_both(run, emulated, device, dt)):
        _close(got, want, dt)


def test_conv_and_pool_family(emulated, device):
    dt = _dtype(emulated)
    x, w = _arr((2, 3, 17, 13), 11, dt), _arr((5, 3, 3, 3), 12, dt)

    def run(dev, dt):
        v = Variable(Tensor.from_numpy(x, device=dev), requires_grad=True)
        k = Variable(Tensor.from_numpy(w, device=dev), requires_grad=True)
        y = F.max_pool2d(F.conv2d(v, k, padding=1), 2) + F.avg_pool2d(F.conv2d(v, k, padding=1), 2)
        (y * y).sum().backward()
        return y.data().numpy(), v.grad().numpy(), k.grad().numpy()

    for got, want in zip(*_both(run, emulated, device, dt)):
        _close(got, want, dt)


def test_resampling_family(emulated, device):
    """Transposed convolution, interpolation (a row per work-item on CPUs, an element on GPUs), the pad
    modes, adaptive max pooling and unfold/fold. The gathers that copy (nearest, pads, unfold) are exact."""
    dt = _dtype(emulated)
    x, w = _arr((2, 3, 9, 7), 13, dt), _arr((3, 2, 3, 3), 14, dt)

    def run(dev, dt):
        v = Variable(Tensor.from_numpy(x, device=dev), requires_grad=True)
        k = Variable(Tensor.from_numpy(w, device=dev), requires_grad=True)
        up = F.conv_transpose2d(v, k, stride=2, padding=1, output_padding=1)
        near = F.interpolate(F.pad(v, (2, 1, 1, 2), mode="reflect"), scale_factor=1.5)
        y = F.interpolate(up, size=(11, 23), mode="bilinear") + F.interpolate(up, scale_factor=(0.6, 1.3),
                                                                             mode="bilinear", align_corners=True).sum()
        z = F.adaptive_max_pool2d(F.pad(up, (1, 2, 0, 1), mode="circular"), (5, 4))
        cols = F.unfold(F.pad(v, (1, 1, 1, 1), mode="replicate"), 3, stride=2)
        ((y * y).sum() + (z * z).sum() + (near * near).sum() + F.fold(cols * cols, (11, 9), 3, stride=2).sum()).backward()
        return near.data().numpy(), cols.data().numpy(), y.data().numpy(), z.data().numpy(), v.grad().numpy(), \
            k.grad().numpy()

    got, want = _both(run, emulated, device, dt)
    for k, (a, b) in enumerate(zip(got, want)):
        _close(a, b, dt, exact=k < 2)


def test_index_and_sort_family_is_bit_identical(emulated, device):
    dt = _dtype(emulated)
    x = _arr((17, 65), 13, dt)
    idx = [64, 0, 3, 3, 17]

    def run(dev, dt):
        t = Variable(Tensor.from_numpy(x, device=dev))
        picked = t.index_select(1, idx).data().numpy()
        values, order = t.sort(1)
        return picked, values.data().numpy(), order.numpy() if hasattr(order, "numpy") else order.data().numpy()

    for got, want in zip(*_both(run, emulated, device, dt)):
        _close(got, want, dt, exact=True)
    np.testing.assert_array_equal(run(emulated, dt)[1], np.sort(x, 1))


def test_philox_random_is_bit_identical(emulated, device):
    got = Tensor.randn([3, 1001], seed=1234, device=emulated).numpy()
    want = Tensor.randn([3, 1001], seed=1234, device=device).numpy()
    np.testing.assert_array_equal(got, want)


def test_optimiser_family(emulated, device):
    dt = _dtype(emulated)
    start = _arr((129, 3), 14, dt)

    def run(dev, dt):
        p = Variable(Tensor.from_numpy(start, device=dev), requires_grad=True)
        opt = ag.optim.Adam([p], lr=0.01)
        for _ in range(3):
            opt.zero_grad()
            (p * p).sum().backward()
            opt.step()
        return p.data().numpy()

    got, want = _both(run, emulated, device, dt)
    _close(got, want, dt)


def test_captured_step_fuses_and_replays(emulated, device):
    dt = _dtype(emulated)
    x = _arr((33, 17), 15, dt)

    def run(dev, dt):
        step = ag.capture(lambda t: ((t * 2.0 + t.exp()) * t).tanh())
        a = Tensor.from_numpy(x, device=dev)
        first = step(a).numpy()
        return first, step(a).numpy()   # the replay, with the fused kernels

    got, want = _both(run, emulated, device, dt)
    for g, w in zip(got, want):
        _close(g, w, dt)
    _close(got[1], np.tanh((x * 2.0 + np.exp(x)) * x), dt)
